"""In-memory stand-ins for core's ports: storage, identity, chat and clock. Unit tests only."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core import webhooks
from core.errors import (
    ChatDeliveryError,
    ConcurrencyError,
    EmailDeliveryError,
    EmailRejectedError,
    IdentityProviderError,
    RenewalError,
    RenewalInProgressError,
)
from core.model import AuthState, DeviceCode, Origin, Renewal, RenewalState, Tenant, ThreadRef
from core.ports import (
    AccessToken,
    AuditEntry,
    BrowserSignInStart,
    DirectoryCheck,
    DurationHistogram,
    Email,
    EmailRecord,
    FirstPost,
    HealthRecord,
    IdentityErrorRecord,
    Lease,
    Message,
    Outgoing,
    OutgoingEmail,
    PollPending,
    SignedIn,
    StagedTokens,
    UnitOfWorkFactory,
)


class FrozenClock:
    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += timedelta(**kw)


@dataclass
class Store:
    tenants: dict[str, Tenant] = field(default_factory=dict)
    renewals: dict[str, Renewal] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    errors: list[IdentityErrorRecord] = field(default_factory=list)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    code_claims: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    next_check: dict[str, datetime] = field(default_factory=dict)
    check_leases: dict[str, datetime] = field(default_factory=dict)
    job_runs: dict[str, datetime] = field(default_factory=dict)
    outbox: list[Outgoing] = field(default_factory=list)
    outbox_failed: list[tuple[Outgoing, str]] = field(default_factory=list)
    # conversation -> (owner, lease until, not before)
    outbox_leases: dict[str, tuple[str | None, datetime | None, datetime | None]] = field(
        default_factory=dict
    )
    outbox_ids: int = 0
    webhook_events: list[tuple[str, str, str]] = field(default_factory=list)  # kind, key, body
    # the email outbox: id -> (item, state, owner, lease until, sent at, error)
    emails: dict[int, list[Any]] = field(default_factory=dict)
    email_ids: int = 0
    chases: dict[tuple[str, str], datetime] = field(default_factory=dict)


class _Tenants:
    def __init__(self, store: Store) -> None:
        self.s = store

    async def add(self, tenant: Tenant) -> None:
        self.s.tenants[tenant.key] = tenant

    async def get(self, key: str) -> Tenant | None:
        t = self.s.tenants.get(key)
        return copy.copy(t) if t else None

    async def find_exact(self, ref: str) -> Tenant | None:
        low = ref.lower()
        for t in self.s.tenants.values():
            if low in {
                t.slug.lower(),
                t.display_name.lower(),
                t.primary_domain.lower(),
                t.tenant_id.lower(),
            }:
                return copy.copy(t)
        return None

    async def names(self) -> list[str]:
        return [n for t in self.s.tenants.values() for n in (t.slug, t.display_name)]

    async def all(self) -> list[Tenant]:
        return [copy.copy(t) for t in self.s.tenants.values()]

    async def set_initial_domain(self, key: str, domain: str) -> None:
        self.s.tenants[key].initial_domain = domain

    async def mark_validated(self, key: str, at: datetime) -> None:
        t = self.s.tenants[key]
        t.last_validated_at = t.last_refresh_at = at
        t.auth_state = AuthState.HEALTHY

    async def record_health(self, records: Sequence[HealthRecord]) -> None:
        for r in records:
            t = self.s.tenants[r.key]
            t.auth_state = r.state
            if r.refreshed_at is not None:
                t.last_refresh_at = r.refreshed_at
            self.s.next_check[r.key] = r.next_check
            self.s.check_leases.pop(r.key, None)

    async def snooze(self, key: str, until: datetime | None) -> None:
        self.s.tenants[key].snoozed_until = until

    async def claim_due(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[Tenant]:
        due = []
        for key, t in self.s.tenants.items():
            lease = self.s.check_leases.get(key)
            if self.s.next_check.get(key, now) <= now and (lease is None or lease < now):
                due.append(t)
        for t in due[:limit]:
            self.s.check_leases[t.key] = until
        return [copy.copy(t) for t in due[:limit]]

    async def counts_by_state(self) -> dict[AuthState, int]:
        counts: dict[AuthState, int] = {}
        for t in self.s.tenants.values():
            counts[t.auth_state] = counts.get(t.auth_state, 0) + 1
        return counts

    async def needing_action(self, limit: int = 20) -> list[Tenant]:
        urgent = [
            t
            for t in self.s.tenants.values()
            if t.auth_state in (AuthState.EXPIRED, AuthState.EXPIRING)
        ]
        return [copy.copy(t) for t in sorted(urgent, key=lambda t: t.auth_state.value)][:limit]

    async def in_state(self, state: AuthState, limit: int = 500) -> list[Tenant]:
        found = [t for t in self.s.tenants.values() if t.auth_state is state]
        return [copy.copy(t) for t in sorted(found, key=lambda t: t.display_name)][:limit]


class _Renewals:
    def __init__(self, store: Store, staged: dict[str, Renewal], outbox: _Outbox) -> None:
        self.s = store
        self.staged = staged
        self.outbox = outbox

    def _all(self) -> dict[str, Renewal]:
        return {**self.s.renewals, **self.staged}

    async def add(self, renewal: Renewal, audit: AuditEntry | None = None) -> None:
        for r in self._all().values():
            if r.tenant_key == renewal.tenant_key and r.is_active:  # as the partial index does
                raise RenewalInProgressError(copy.deepcopy(r))
        self.staged[renewal.id] = copy.deepcopy(renewal)
        if audit is not None:
            self.s.audit.append(audit)

    async def add_for(self, ref: str, renewal: Renewal, audit: AuditEntry) -> Tenant | None:
        tenant = await _Tenants(self.s).find_exact(ref)
        if tenant is not None:
            renewal.assign(tenant)
            await self.add(renewal, replace(audit, tenant_key=tenant.key))
        return tenant

    async def get(self, renewal_id: str) -> Renewal | None:
        r = self._all().get(renewal_id)
        return copy.deepcopy(r) if r else None

    async def save(self, renewal: Renewal, first: FirstPost | None = None) -> Outgoing | None:
        current = self._all()[renewal.id]
        if current.version != renewal.version:
            raise ConcurrencyError
        renewal.version += 1
        self.staged[renewal.id] = renewal
        if first is None:
            return None
        return await self.outbox.add(first.item, first.at, first.hold)

    async def active_for(self, tenant_key: str) -> Renewal | None:
        for r in self._all().values():
            if r.tenant_key == tenant_key and r.is_active:
                return copy.deepcopy(r)
        return None

    async def by_invitation(self, token_hash: str) -> Renewal | None:
        for r in self._all().values():
            if r.invitation_hash == token_hash:
                return copy.deepcopy(r)
        return None

    async def resumable(self) -> list[Renewal]:
        in_flight = {"code_issued", "tokens_acquired"}
        return [copy.deepcopy(r) for r in self._all().values() if r.state in in_flight]

    async def awaiting_thread(self, before: datetime) -> list[Renewal]:
        return [
            copy.deepcopy(r)
            for r in self._all().values()
            if r.state == "invited" and r.awaiting_thread and r.updated_at and r.updated_at < before
        ]

    async def claim_work(self, renewal_id: str, owner: str, until: datetime, now: datetime) -> bool:
        return self._claim(self.s.leases, renewal_id, owner, until, now, allow_same=True)

    async def claim_code(self, renewal_id: str, owner: str, until: datetime, now: datetime) -> bool:
        return self._claim(self.s.code_claims, renewal_id, owner, until, now, allow_same=False)

    async def release_code(self, renewal_id: str, owner: str) -> None:
        if self.s.code_claims.get(renewal_id, (None, None))[0] == owner:
            del self.s.code_claims[renewal_id]

    @staticmethod
    def _claim(
        leases: dict[str, tuple[str, datetime]],
        renewal_id: str,
        owner: str,
        until: datetime,
        now: datetime,
        allow_same: bool,
    ) -> bool:
        holder, expires = leases.get(renewal_id, (None, now))
        if holder is None or (allow_same and holder == owner) or expires < now:
            leases[renewal_id] = (owner, until)
            return True
        return False

    async def open(self) -> list[Renewal]:
        return [copy.deepcopy(r) for r in self._all().values() if r.is_active]

    async def for_tenant(self, tenant_key: str, limit: int = 10) -> list[Renewal]:
        return [copy.deepcopy(r) for r in self._all().values() if r.tenant_key == tenant_key]

    async def count_by_state(self, open_only: bool = False) -> dict[RenewalState, int]:
        counts: dict[RenewalState, int] = {}
        for r in self._all().values():
            if open_only and not r.is_active:
                continue
            counts[r.state] = counts.get(r.state, 0) + 1
        return counts

    async def validation_histogram(self, bounds: Sequence[float]) -> DurationHistogram:
        took = [
            (r.updated_at - r.created_at).total_seconds()
            for r in self._all().values()
            if r.state is RenewalState.VALIDATED and r.updated_at
        ]
        at_most = tuple(sum(t <= b for t in took) for b in bounds)
        return DurationHistogram(tuple(bounds), at_most, sum(took), len(took))

    async def in_batch(self, batch: str) -> list[Renewal]:
        found = [r for r in self._all().values() if r.batch == batch]
        return [copy.deepcopy(r) for r in sorted(found, key=lambda r: r.created_at)]


class _Audit:
    def __init__(self, store: Store) -> None:
        self.s = store

    async def add(self, entry: AuditEntry) -> None:
        self.s.audit.append(entry)

    async def for_tenant(self, tenant_key: str, limit: int = 20) -> list[AuditEntry]:
        return [e for e in reversed(self.s.audit) if e.tenant_key == tenant_key][:limit]


class _Errors:
    def __init__(self, store: Store) -> None:
        self.s = store

    async def add(self, record: IdentityErrorRecord) -> bool:
        if record.client_ref and any(
            (e.source, e.client_ref) == (record.source, record.client_ref) for e in self.s.errors
        ):
            return False
        self.s.errors.append(record)
        return True

    async def newest(
        self, tenant_key: str | None = None, limit: int = 10
    ) -> list[IdentityErrorRecord]:
        rows = [e for e in reversed(self.s.errors) if tenant_key in (None, e.tenant_key)]
        return rows[:limit]


class _Jobs:
    def __init__(self, store: Store) -> None:
        self.s = store

    async def claim(self, name: str, now: datetime, every: timedelta) -> bool:
        last = self.s.job_runs.get(name)
        if last is not None and last > now - every:
            return False
        self.s.job_runs[name] = now
        return True


class _Outbox:
    """Adds are staged until commit, like a transaction; the dispatcher's steps are immediate."""

    def __init__(self, store: Store) -> None:
        self.s = store
        self.staged: list[Outgoing] = []
        self.holds: dict[str, Lease] = {}

    async def add(
        self, item: Outgoing, now: datetime, hold: Lease | None = None
    ) -> Outgoing | None:
        taken = item.conversation in self.s.outbox_leases or item.conversation in self.holds
        if hold is None or taken:
            self.staged.append(replace(item, created_at=now))
            return None
        self.holds[item.conversation] = hold
        self.s.outbox_ids += 1  # the id is known before the commit, as a database's would be
        message = item.message and replace(item.message, ref=str(self.s.outbox_ids))
        held = replace(item, id=self.s.outbox_ids, message=message, created_at=now)
        self.staged.append(replace(held, attempts=1))
        return held

    def commit(self) -> None:
        for item in self.staged:
            if item.kind == "status":
                self.s.outbox = [
                    o
                    for o in self.s.outbox
                    if not (o.conversation == item.conversation and o.kind == "status")
                ]
            if not item.id:
                self.s.outbox_ids += 1
                message = item.message and replace(item.message, ref=str(self.s.outbox_ids))
                item = replace(item, id=self.s.outbox_ids, message=message)
            self.s.outbox.append(item)
        for conversation, lease in self.holds.items():
            self.s.outbox_leases[conversation] = (lease.owner, lease.until, None)
        self.staged.clear()
        self.holds.clear()

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> dict[str, Outgoing | None]:
        taken: dict[str, Outgoing | None] = {}
        for conversation in dict.fromkeys(o.conversation for o in self.s.outbox):
            holder, lease, not_before = self.s.outbox_leases.get(conversation, (None, None, None))
            free = holder is None or (lease is not None and lease < now)
            if free and (not_before is None or not_before <= now) and len(taken) < limit:
                self.s.outbox_leases[conversation] = (owner, until, None)
                taken[conversation] = self._mark(conversation)
        return taken

    def _mark(self, conversation: str) -> Outgoing | None:
        """The oldest message, counted as tried (returned with the count from before)."""
        first = next((o for o in self.s.outbox if o.conversation == conversation), None)
        if first is not None:
            self._store(first.id, first.attempts + 1)
        return first

    def _store(self, item_id: int, attempts: int) -> None:
        self.s.outbox = [
            replace(o, attempts=attempts) if o.id == item_id else o for o in self.s.outbox
        ]

    async def head(self, conversation: str, limit: int) -> list[Outgoing]:
        return [o for o in self.s.outbox if o.conversation == conversation][:limit]

    async def advance(
        self,
        conversation: str,
        owner: str,
        now: datetime,
        done: int | None = None,
        failed: str = "",
        until: datetime | None = None,
    ) -> Outgoing | None:
        if failed:
            self.s.outbox_failed += [(o, failed) for o in self.s.outbox if o.id == done]
        self.s.outbox = [o for o in self.s.outbox if o.id != done]
        holder, _, not_before = self.s.outbox_leases.get(conversation, (None, None, None))
        if holder != owner:
            return None
        if until is not None:
            self.s.outbox_leases[conversation] = (owner, until, not_before)
        nxt = self._mark(conversation)
        if nxt is None:
            del self.s.outbox_leases[conversation]
        return nxt

    async def finish(self, owner: str, done: dict[str, int]) -> dict[str, Outgoing | None]:
        return {c: await self.advance(c, owner, datetime.now(UTC), done=d) for c, d in done.items()}

    async def renew(self, conversation: str, owner: str, until: datetime) -> bool:
        holder, _, not_before = self.s.outbox_leases.get(conversation, (None, None, None))
        if holder != owner:
            return False
        self.s.outbox_leases[conversation] = (owner, until, not_before)
        return True

    async def release(
        self,
        conversation: str,
        owner: str,
        not_before: datetime | None = None,
        error: str = "",
        unsent: Outgoing | None = None,
    ) -> None:
        if self.s.outbox_leases.get(conversation, (None,))[0] == owner:
            self.s.outbox_leases[conversation] = (None, None, not_before)
            if unsent is not None:
                self._store(unsent.id, unsent.attempts)

    async def stats(self) -> dict[str, int]:
        return {"pending": len(self.s.outbox), "failed": len(self.s.outbox_failed)}


class _Webhooks:
    """The webhook outbox: events appended at once (the fake has no transactions for them)."""

    def __init__(self, store: Store) -> None:
        self.s = store

    async def emit(self, kind: str, tenant: Tenant, at: datetime, reason: str = "") -> None:
        state = webhooks.state_after(kind)
        self.s.webhook_events.append((kind, tenant.key, webhooks.body(kind, tenant, at, state)))

    async def health(self, records: Sequence[HealthRecord], at: datetime) -> None:
        for r in records:
            last = next((k for k, key, _ in reversed(self.s.webhook_events) if key == r.key), None)
            tenant = self.s.tenants[r.key]
            kind = webhooks.health_event(tenant.auth_state, r, last)
            if kind is not None:
                body = webhooks.body(kind, tenant, at, r.state)
                self.s.webhook_events.append((kind, r.key, body))


class _Emails:
    """Adds are staged until commit; claims and outcomes are immediate (like the outbox)."""

    def __init__(self, store: Store) -> None:
        self.s = store
        self.staged: list[tuple[OutgoingEmail, datetime]] = []

    async def add(self, item: OutgoingEmail, now: datetime) -> None:
        self.staged.append((item, now))

    def commit(self) -> None:
        for item, now in self.staged:
            self.s.email_ids += 1
            stored = replace(item, id=self.s.email_ids, created_at=now)
            self.s.emails[self.s.email_ids] = [stored, "pending", None, None, None, ""]
        self.staged.clear()

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[OutgoingEmail]:
        taken = []
        for row in self.s.emails.values():
            item, state, _, lease, _, _ = row
            due = item.not_before is None or item.not_before <= now
            if state == "pending" and due and (lease is None or lease < now):
                row[0] = item = replace(item, attempts=item.attempts + 1)
                row[2], row[3] = owner, until
                taken.append(item)
        return taken[:limit]

    def _end(self, item_id: int, state: str, **values: Any) -> None:
        row = self.s.emails[item_id]
        row[1], row[2], row[3] = state, None, None
        row[4] = values.get("sent_at", row[4])
        row[5] = values.get("error", row[5])

    async def sent(self, item_id: int, now: datetime) -> None:
        self._end(item_id, "sent", sent_at=now)

    async def failed(self, item_id: int, error: str, now: datetime) -> None:
        self._end(item_id, "failed", error=error)

    async def dropped(self, item_id: int, why: str, now: datetime) -> None:
        self._end(item_id, "dropped", error=why)

    async def retry(self, item_id: int, owner: str, not_before: datetime, error: str) -> None:
        row = self.s.emails[item_id]
        if row[2] == owner:
            row[0] = replace(row[0], not_before=not_before)
            row[2], row[3], row[5] = None, None, error

    async def history(self, renewal_ids: Sequence[str]) -> list[EmailRecord]:
        return [
            EmailRecord(
                item.renewal_id,
                item.kind,
                item.email.to,
                state,
                item.created_at or datetime.min,
                item.not_before,
                sent_at,
                error,
            )
            for item, state, _, _, sent_at, error in self.s.emails.values()
            if item.renewal_id in renewal_ids
        ]


class _Chases:
    def __init__(self, store: Store) -> None:
        self.s = store
        self.staged: dict[tuple[str, str], datetime] = {}

    async def claim(self, renewal_id: str, step: str, at: datetime) -> bool:
        key = (renewal_id, step)
        if key in self.s.chases or key in self.staged:
            return False
        self.staged[key] = at
        return True

    async def taken(self, renewal_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        found: dict[str, dict[str, datetime]] = {}
        for (rid, step), at in self.s.chases.items():
            if rid in renewal_ids:
                found.setdefault(rid, {})[step] = at
        return found


class RecordingMailer:
    """Records what would be emailed; ``refuse`` / ``fail`` make the next sends fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[Email, str]] = []
        self.refuse: str | None = None  # a 5xx reason: refused for good
        self.fail: str | None = None  # a 4xx reason: try later

    async def send(self, email: Email, message_id: str) -> None:
        if self.refuse:
            raise EmailRejectedError(self.refuse)
        if self.fail:
            raise EmailDeliveryError(self.fail)
        self.sent.append((email, message_id))

    @property
    def subjects(self) -> list[str]:
        return [e.subject for e, _ in self.sent]


class InMemoryUnitOfWork:
    """Renewals are staged until commit, like a transaction; audit writes are immediate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.staged: dict[str, Renewal] = {}
        self.tenants = _Tenants(store)
        self.outbox = _Outbox(store)
        self.renewals = _Renewals(store, self.staged, self.outbox)
        self.audit = _Audit(store)
        self.identity_errors = _Errors(store)
        self.jobs = _Jobs(store)
        self.webhooks = _Webhooks(store)

        self.emails = _Emails(store)
        self.chases = _Chases(store)
        self.committed = False

    async def __aenter__(self) -> InMemoryUnitOfWork:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.staged.clear()
        self.outbox.staged.clear()
        self.outbox.holds.clear()
        self.emails.staged.clear()
        self.chases.staged.clear()

    async def commit(self) -> None:
        self.outbox.commit()
        self.emails.commit()
        self.store.chases.update(self.chases.staged)
        self.chases.staged.clear()
        for r in self.staged.values():
            stored = copy.deepcopy(r)
            stored.events = []
            self.store.renewals[r.id] = stored
        self.staged.clear()
        self.committed = True

    async def rollback(self) -> None:
        self.staged.clear()
        self.outbox.staged.clear()
        self.outbox.holds.clear()
        self.emails.staged.clear()
        self.chases.staged.clear()


class RecordingChatThreads:
    """Records what the bot would show, per thread, with tones and buttons."""

    def __init__(self) -> None:
        self.threads: dict[str, list[Message]] = {}
        self.status: dict[str, Message] = {}
        self.announced: list[Message] = []
        self.fail = False

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        key = f"t{len(self.threads) + 1}"
        self.threads[key] = [message]
        self.status[key] = message  # the first message is the thread's status
        return ThreadRef("test", key)

    async def post(self, thread: ThreadRef, message: Message) -> None:
        if self.fail:
            raise ChatDeliveryError("down")
        self.threads[thread.key].append(message)

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        self.status[thread.key] = message

    async def announce(self, message: Message) -> None:
        self.announced.append(message)

    @property
    def announcements(self) -> list[str]:
        return [m.text for m in self.announced]

    def texts(self) -> list[str]:
        return [m.text for msgs in self.threads.values() for m in msgs]


class FakeIdentityProvider:
    """Scripted identity: queue poll results or errors; checks answer for a chosen tenant."""

    def __init__(
        self, clock: FrozenClock, sets: Sequence[str] = ("graph", "exchange", "sharepoint")
    ) -> None:
        self.clock = clock
        self.sets = list(sets)
        self.polls: list[PollPending | SignedIn | IdentityProviderError] = []
        self.start_error: IdentityProviderError | None = None
        self.silent_error: IdentityProviderError | None = None
        self.directory: DirectoryCheck | IdentityProviderError | None = None
        self.started = 0
        self.silent: list[str] = []
        self.refresh_errors: dict[str, RenewalError] = {}  # stored tokens unreadable, too
        self.refreshed: list[str] = []
        self.stored: dict[str, bytes] = {}  # tenant id -> its promoted tokens
        self.directory_checked_with: list[bytes | None] = []
        self.tokens: dict[tuple[str, str], AccessToken] = {}  # (tenant id, set): stored token
        self.token_refreshes: list[tuple[str, str]] = []
        self.browser_starts: list[tuple[str, str, str, str]] = []
        self.browser_finishes: list[dict[str, str]] = []
        self.browser_results: list[SignedIn | IdentityProviderError] = []

    def token_set_names(self) -> Sequence[str]:
        return self.sets

    async def start_device_flow(self, tenant: Tenant) -> DeviceCode:
        if self.start_error:
            raise self.start_error
        self.started += 1
        return DeviceCode(
            f"CODE{self.started:04d}",
            "https://sandbox.test/devicelogin",
            self.clock.now() + timedelta(minutes=15),
            5,
            uuid.uuid4().bytes,
        )

    async def poll(self, tenant: Tenant, code: DeviceCode) -> PollPending | SignedIn:
        result = self.polls.pop(0) if self.polls else PollPending(code)
        if isinstance(result, IdentityProviderError):
            raise result
        return result

    async def acquire_silently(self, tenant: Tenant, token_set: str, staged: StagedTokens) -> None:
        if self.silent_error:
            raise self.silent_error
        self.silent.append(token_set)
        staged.blob += f"+{token_set}".encode()

    async def promote(self, tenant: Tenant, staged: StagedTokens) -> None:
        self.stored[tenant.tenant_id] = staged.blob

    def admin_consent_url(self, tenant: Tenant) -> str:
        return f"https://sandbox.test/{tenant.tenant_id}/v2.0/adminconsent?client_id=app"

    async def refresh(self, tenant: Tenant) -> None:
        error = self.refresh_errors.get(tenant.slug)
        if error:
            raise error
        self.refreshed.append(tenant.slug)

    async def check_directory(
        self, tenant: Tenant, staged: StagedTokens | None = None, *, full: bool = True
    ) -> DirectoryCheck:
        self.directory_checked_with.append(staged.blob if staged else None)
        d = self.directory
        if isinstance(d, IdentityProviderError):
            raise d
        return d or DirectoryCheck(
            tenant.tenant_id,
            tenant.display_name,
            user_type="Member",
            is_global_admin=True,
            tenant_wide_consent=True,
        )

    async def cached_access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken | None:
        error = self.refresh_errors.get(tenant.slug)
        held = self.tokens.get((tenant.tenant_id, token_set))
        if held is not None and held.expires_at - self.clock.now() > min_left:
            return held
        if error and not isinstance(error, IdentityProviderError):
            raise error  # unreadable stored tokens fail the read as well
        return None

    async def access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken:
        held = await self.cached_access_token(tenant, token_set, min_left)
        if held is not None:
            return held
        error = self.refresh_errors.get(tenant.slug)
        if error:
            raise error
        self.token_refreshes.append((tenant.slug, token_set))
        token = AccessToken(
            f"at-{uuid.uuid4().hex}",
            self.clock.now() + timedelta(hours=1),
            (f"{token_set}/.default",),
            tenant.tenant_id,
            tenant.admin_upn,
            refreshed=True,
        )
        self.tokens[(tenant.tenant_id, token_set)] = token
        return token

    # -- the browser sign-in: scripted like ``polls`` -------------------------------------------

    async def begin_browser_sign_in(
        self, tenant: Tenant, *, login_hint: str, redirect_uri: str, state: str
    ) -> BrowserSignInStart:
        if self.start_error:
            raise self.start_error
        self.browser_starts.append((tenant.tenant_id, login_hint, redirect_uri, state))
        url = f"https://login.test/{tenant.tenant_id}/oauth2/v2.0/authorize?state={state}"
        return BrowserSignInStart(url, json.dumps({"state": state}).encode())

    async def finish_browser_sign_in(
        self, tenant: Tenant, flow_state: bytes, response: Mapping[str, str]
    ) -> SignedIn:
        """The next scripted result, after the checks MSAL makes (the state must match)."""
        if json.loads(flow_state)["state"] != response.get("state"):
            raise IdentityProviderError("state_mismatch", "state_mismatch")
        self.browser_finishes.append(dict(response))
        if response.get("error"):
            code = str(response.get("error_description", "")).split(":")[0]
            raise IdentityProviderError(code or response["error"], response["error"])
        result = self.browser_results.pop(0) if self.browser_results else None
        if isinstance(result, IdentityProviderError):
            raise result
        return result or SignedIn(
            tenant.admin_upn, tenant.tenant_id, "oid-browser", staged=StagedTokens(b"browser")
        )


def slow_down(code: DeviceCode) -> PollPending:
    return PollPending(replace(code, interval=code.interval + 5))


def in_memory(store: Store) -> UnitOfWorkFactory:
    """A unit-of-work factory over ``store``, typed as the port the services take."""

    def factory(read_only: bool = False, one_write: bool = False) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(store)

    return factory
