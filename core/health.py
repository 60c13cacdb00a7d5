"""Token health: the monitor that refreshes every tenant's tokens on a schedule, and the alerts.

A check redeems the tenant's refresh token. Success: healthy, and the 90-day inactivity clock
restarts. A refusal that means the refresh token is dead: expired. The identity service being
unreachable: the state is judged by age (expiring within ``warn_before`` of the limit) and the
check is retried sooner. Alerts go out on a change of state only, unless the tenant is snoozed.
Checks are leased, so several bot processes split the tenants between them. A tenant whose stored
tokens cannot be read (no configured key opens them, or they were altered) needs a new sign-in:
expired, with that reason recorded and announced; the other tenants are checked as usual.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core import identity_codes, logcontext, messages, registration
from core.batching import Coalescer
from core.commands import ALL
from core.errors import IdentityProviderError, TokenCacheUnreadableError
from core.model import AuthState, Tenant
from core.notifications import Notifier
from core.ports import (
    Action,
    Clock,
    HealthRecord,
    IdentityErrorRecord,
    IdentityProvider,
    Message,
    UnitOfWorkFactory,
)

log = logging.getLogger("renewbot.health")

# Codes after which the stored refresh token cannot be redeemed: only a renewal helps.
DEAD_REFRESH_CODES = frozenset(c for c, e in identity_codes.CODES.items() if e.kills_refresh_token)


@dataclass(frozen=True)
class MonitorConfig:
    check_every: timedelta = timedelta(hours=24)
    retry_after: timedelta = timedelta(minutes=15)
    inactivity_limit: timedelta = timedelta(days=90)
    warn_before: timedelta = timedelta(days=14)
    batch: int = 200
    concurrency: int = 16
    lease: timedelta = timedelta(minutes=5)
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)


GROUP_AT = 5
"""More changes than this to one state in one batch are announced as one alert."""


@dataclass(frozen=True)
class Change:
    tenant: Tenant
    state: AuthState
    reason: str = ""


UNREADABLE = TokenCacheUnreadableError.code


def grouped_alert(state: AuthState, tenants: list[Tenant], reason: str = "") -> Message | None:
    names = [f"{t.display_name} ({t.slug})" for t in tenants]
    if state is AuthState.EXPIRED:
        renew_all = (Action("renew_all", ALL, "Renew all expired"),)
        if reason == UNREADABLE:
            return Message(messages.tenants_tokens_unreadable(names), "error", renew_all)
        return Message(messages.tenants_expired(names), "error", renew_all)
    if state is AuthState.EXPIRING:
        return Message(messages.tenants_expiring(names), "warning")
    if state is AuthState.HEALTHY:
        return Message(messages.tenants_recovered(names), "success")
    return None


@dataclass
class SweepResult:
    checked: int = 0
    failures: int = 0
    alerts: int = 0
    states: dict[AuthState, int] = field(default_factory=dict)


def state_by_age(last_refresh: datetime | None, now: datetime, config: MonitorConfig) -> AuthState:
    """Health judged only by the time since the last successful refresh."""
    if last_refresh is None:
        return AuthState.UNKNOWN
    age = now - last_refresh
    if age >= config.inactivity_limit:
        return AuthState.EXPIRED
    if age >= config.inactivity_limit - config.warn_before:
        return AuthState.EXPIRING
    return AuthState.HEALTHY


class HealthMonitor:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        identity: IdentityProvider,
        notifier: Notifier,
        clock: Clock,
        config: MonitorConfig | None = None,
    ) -> None:
        self.uow = uow
        self.identity = identity
        self.notifier = notifier
        self.clock = clock
        self.config = config or MonitorConfig()
        self.totals = SweepResult()
        # A sweep's checks finish together: their outcomes share a transaction (group commit).
        self._record_health = Coalescer(self._store_health)

    async def _store_health(self, records: list[HealthRecord]) -> list[None]:
        async with self.uow() as uow:
            await uow.webhooks.health(records, self.clock.now())  # before: it reads the old states
            await uow.tenants.record_health(records)
            await uow.commit()
        return [None] * len(records)

    async def sweep(self, stop: asyncio.Event | None = None) -> SweepResult:
        """Check every tenant that is due, in leased batches, until none is left.

        With ``stop`` set, the batches in hand are finished and no further batch is claimed. The
        changes a batch finds are announced together (see ``announce_changes``). The next batch
        is claimed as soon as every check of the last one has begun: both share one gate of
        ``concurrency`` checks, so the identity threads do not idle while a batch's last checks
        finish, its outcomes are stored and the next batch is claimed (about a tenth of a
        10,000-tenant sweep, bench/health.py).
        """
        result = SweepResult()
        gate = asyncio.Semaphore(self.config.concurrency)
        running: set[asyncio.Task[SweepResult]] = set()
        try:
            while not (stop and stop.is_set()):
                now = self.clock.now()
                async with self.uow() as uow:
                    batch = await uow.tenants.claim_due(
                        self.config.worker_id, now, now + self.config.lease, self.config.batch
                    )
                    await uow.commit()
                if not batch:
                    break
                begun = asyncio.Event()
                task = asyncio.create_task(self.check_all(batch, result, gate, begun))
                running.add(task)
                waiting = asyncio.create_task(begun.wait())
                await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                for done in [t for t in running if t.done()]:
                    running.discard(done)
                    done.result()  # a failed batch ends the sweep, as it always did
            for task in list(running):
                running.discard(task)
                await task
        finally:
            for task in running:  # the sweep failed or was cancelled: no batch left behind
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return result

    async def check_all(
        self,
        tenants: Sequence[Tenant],
        result: SweepResult | None = None,
        gate: asyncio.Semaphore | None = None,
        begun: asyncio.Event | None = None,
    ) -> SweepResult:
        """Check these tenants now, ``concurrency`` at a time (or as ``gate`` lets them);
        announce their changes together. ``begun`` is set once every check has begun."""
        result = result or SweepResult()
        gate = gate or asyncio.Semaphore(self.config.concurrency)
        begun = begun or asyncio.Event()
        changes: list[Change] = []
        records: list[HealthRecord] = []
        waiting = len(tenants)

        async def one(tenant: Tenant) -> None:
            nonlocal waiting
            async with gate:
                waiting -= 1
                if not waiting:
                    begun.set()
                await self.check(tenant, result, changes, records)

        if not tenants:
            begun.set()
        # The batch's outcomes go in one transaction once every check has ended (a statement
        # group per check cost about a third of the sweep's database CPU). A crash before it
        # loses only outcomes: the leases run out and the tenants are checked again, while a
        # rotated refresh token is saved by its own check before that check ends.
        outcomes = await asyncio.gather(*(one(t) for t in tenants), return_exceptions=True)
        if records:
            await self._store_health(records)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        result.alerts += await self.announce_changes(changes)
        return result

    async def check(
        self,
        tenant: Tenant,
        result: SweepResult | None = None,
        changes: list[Change] | None = None,
        records: list[HealthRecord] | None = None,
    ) -> AuthState:
        """Refresh one tenant's tokens and record what that says (see ``_check``)."""
        with logcontext.bound(tenant=tenant.slug):
            return await self._check(tenant, result, changes, records)

    async def _check(
        self,
        tenant: Tenant,
        result: SweepResult | None = None,
        changes: list[Change] | None = None,
        records: list[HealthRecord] | None = None,
    ) -> AuthState:
        """Refresh one tenant's tokens and record what that says.

        A change of state is announced at once, or collected in ``changes`` (a sweep announces
        a batch's changes together). The outcome is stored at once, or collected in ``records``
        (a sweep stores a batch's outcomes together).
        """
        result = result or SweepResult()
        now = self.clock.now()
        refreshed: datetime | None = None
        next_check = now + self.config.check_every
        reason = ""
        try:
            await self.identity.refresh(tenant)
            state, refreshed = AuthState.HEALTHY, now
        except IdentityProviderError as exc:
            result.failures += 1
            self.totals.failures += 1
            await self.record(tenant, exc, "monitor")
            reason = exc.code
            if identity_codes.is_app_wide(exc.code):
                # The app registration, not this tenant: its state stays what its age says, it
                # is looked at again soon, and one alert names the registration problem.
                reason = ""
                state = state_by_age(tenant.last_refresh_at, now, self.config)
                next_check = now + self.config.retry_after
                await registration.report(self.uow, self.notifier, self.clock, exc.code)
            elif exc.code in DEAD_REFRESH_CODES or exc.error == "invalid_grant":
                state = AuthState.EXPIRED
            else:  # unreachable or unclear: judge by age, look again soon
                state = state_by_age(tenant.last_refresh_at, now, self.config)
                next_check = now + self.config.retry_after
        except TokenCacheUnreadableError:  # only this tenant's tokens: it needs a new sign-in
            result.failures += 1
            self.totals.failures += 1
            why = "no configured encryption key opens the stored token cache, or it was altered"
            await self.record(tenant, IdentityProviderError(UNREADABLE, UNREADABLE, why), "monitor")
            state, reason = AuthState.EXPIRED, UNREADABLE
        record = HealthRecord(tenant.key, state, refreshed, next_check)
        if records is not None:
            records.append(record)
        else:
            await self._record_health(record)
        result.checked += 1
        self.totals.checked += 1
        result.states[state] = result.states.get(state, 0) + 1
        if state is not tenant.auth_state:
            if changes is not None:
                changes.append(Change(tenant, state, reason))
            elif await self.alert(tenant, state, reason):
                result.alerts += 1
        return state

    async def announce_changes(self, changes: list[Change]) -> int:
        """One alert per change, or, when many tenants moved to the same state at once (the
        first sweep after an import, an outage), one alert listing them. Returns alerts sent."""
        now = self.clock.now()
        sent = 0
        by_state: dict[tuple[AuthState, str], list[Change]] = {}
        for change in changes:  # unreadable tokens are told apart: the fix is not the same
            if not change.tenant.is_snoozed(now):
                why = UNREADABLE if change.reason == UNREADABLE else ""
                by_state.setdefault((change.state, why), []).append(change)
        for (state, why), group in by_state.items():
            if len(group) <= GROUP_AT:
                for c in group:
                    sent += int(await self.alert(c.tenant, c.state, c.reason))
                continue
            sent += int(await self._send(grouped_alert(state, [c.tenant for c in group], why)))
        return sent

    async def record(self, tenant: Tenant | None, exc: IdentityProviderError, source: str) -> None:
        async with self.uow() as uow:
            key = tenant.key if tenant else None
            await uow.identity_errors.add(
                IdentityErrorRecord.of(self.clock.now(), key, exc, source)
            )
            await uow.commit()

    async def alert(self, tenant: Tenant, state: AuthState, reason: str = "") -> bool:
        """Announce a change of state (with a Renew button when action is needed)."""
        if tenant.is_snoozed(self.clock.now()):
            return False
        renew = (Action("renew", tenant.slug, "Renew"),)
        message: Message | None = None
        if state is AuthState.EXPIRED and reason == UNREADABLE:
            message = Message(messages.tenant_tokens_unreadable(tenant), "error", renew)
        elif state is AuthState.EXPIRED:
            message = Message(messages.tenant_expired(tenant, reason), "error", renew)
        elif state is AuthState.EXPIRING:
            days = self.days_left(tenant)
            message = Message(messages.tenant_expiring(tenant, days), "warning", renew)
        elif state is AuthState.HEALTHY and tenant.auth_state in (
            AuthState.EXPIRED,
            AuthState.EXPIRING,
        ):
            message = Message(messages.tenant_recovered(tenant), "success")
        return await self._send(message)

    async def _send(self, message: Message | None) -> bool:
        """Announce an alert and count it; None is nothing to say."""
        if message is None:
            return False
        await self.notifier.announce(message)
        self.totals.alerts += 1
        return True

    async def digest(self, every: timedelta = timedelta(hours=24)) -> Message | None:
        """Once per ``every`` across all replicas: what is expiring or expired, in one post."""
        now = self.clock.now()
        async with self.uow() as uow:
            if not await uow.jobs.claim("health-digest", now, every):
                await uow.commit()
                return None
            counts = await uow.tenants.counts_by_state()
            urgent = await uow.tenants.needing_action(limit=25)
            await uow.commit()
        if not urgent:
            return None
        lines = [
            f"{t.display_name} ({t.slug}): {t.auth_state.value}"
            + (f", {self.days_left(t)} days left" if t.auth_state is AuthState.EXPIRING else "")
            for t in urgent
        ]
        text = messages.digest(
            counts.get(AuthState.EXPIRING, 0), counts.get(AuthState.EXPIRED, 0), lines
        )
        message = Message(text, "warning")
        await self.notifier.announce(message)
        return message

    def days_left(self, tenant: Tenant) -> int:
        if tenant.last_refresh_at is None:
            return 0
        left = tenant.last_refresh_at + self.config.inactivity_limit - self.clock.now()
        return max(0, left.days)

    async def mark_expired(self, tenant: Tenant, reason: str) -> None:
        """Another service reported a dead refresh token: expired now, announce if new."""
        now = self.clock.now()
        await self._record_health(
            HealthRecord(tenant.key, AuthState.EXPIRED, None, now + self.config.check_every)
        )
        if tenant.auth_state is not AuthState.EXPIRED:
            await self.alert(tenant, AuthState.EXPIRED, reason)
