"""Repositories and the unit of work over one AsyncConnection transaction.

Maps rows to core's aggregates by hand (no ORM identity map to surprise us), translates unique
violations into RenewalInProgressError and lost updates into ConcurrencyError, and encrypts the
device-flow state. Database failures become StorageError at this boundary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.database import READ_ONLY, gate_for, upsert, write_gate
from adapters.storage.emails import SqlChaseLog, SqlEmailOutbox
from adapters.storage.outbox import SqlOutbox
from adapters.storage.tables import (
    audit_events,
    job_runs,
    msal_errors,
    renewals,
    tenants,
    token_caches,
)
from adapters.storage.webhooks import SqlWebhookOutbox
from core.batching import Coalescer
from core.errors import (
    ConcurrencyError,
    RenewalInProgressError,
    StorageError,
    TokenCacheUnreadableError,
)
from core.model import (
    ACTIVE_STATES,
    Actor,
    AuthState,
    BrowserSignIn,
    DeviceCode,
    Origin,
    Renewal,
    RenewalState,
    Tenant,
    ThreadRef,
)
from core.ports import AuditEntry, HealthRecord, IdentityErrorRecord

_ACTIVE = [s.value for s in ACTIVE_STATES]
_IN_FLIGHT = [RenewalState.CODE_ISSUED.value, RenewalState.TOKENS_ACQUIRED.value]
_CODE_STATES = [RenewalState.INVITED.value, RenewalState.CODE_ISSUED.value]

# Statements on the busiest paths (a chat command, a poll) are built once: building one costs
# more CPU than running it (SQLAlchemy caches the compiled form, not the construction). Values
# go in as execute() parameters for the same reason: .values(**row) coerces every value anew.
_FIND_TENANT = (
    select(tenants)
    .where(
        or_(
            *(
                func.lower(c) == bindparam("b_ref")
                for c in (
                    tenants.c.slug,
                    tenants.c.display_name,
                    tenants.c.primary_domain,
                    tenants.c.tenant_id,
                )
            )
        )
    )
    .limit(1)
)
_NEWEST_RENEWAL = select(renewals).order_by(renewals.c.created_at.desc()).limit(1)
_ACTIVE_RENEWAL = _NEWEST_RENEWAL.where(
    renewals.c.tenant_key == bindparam("b_key"), renewals.c.state.in_(_ACTIVE)
)
_RENEWAL_BY_INVITATION = _NEWEST_RENEWAL.where(renewals.c.invitation_hash == bindparam("b_hash"))
_SAVE_RENEWAL = update(renewals).where(
    renewals.c.id == bindparam("b_id"), renewals.c.version == bindparam("b_version")
)
_RECORD_HEALTH = (  # a failed refresh (b_refreshed None) keeps the last successful one
    update(tenants)
    .where(tenants.c.key == bindparam("b_key"))
    .values(
        auth_state=bindparam("b_state"),
        next_check_at=bindparam("b_next"),
        check_owner=None,
        check_lease_until=None,
        last_refresh_at=func.coalesce(
            bindparam("b_refreshed", type_=tenants.c.last_refresh_at.type),
            tenants.c.last_refresh_at,
        ),
    )
)


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(
        row.key,
        row.slug,
        row.display_name,
        row.tenant_id,
        row.primary_domain,
        row.admin_upn,
        row.last_validated_at,
        AuthState(row.auth_state),
        row.last_refresh_at,
        row.snoozed_until,
        row.initial_domain or "",
    )


class SqlTenantRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def add(self, tenant: Tenant, now: datetime | None = None) -> None:
        values = {
            "key": tenant.key,
            "slug": tenant.slug,
            "display_name": tenant.display_name,
            "tenant_id": tenant.tenant_id,
            "primary_domain": tenant.primary_domain,
            "admin_upn": tenant.admin_upn,
            "created_at": now or datetime.now(UTC),
            "last_validated_at": tenant.last_validated_at,
            "auth_state": tenant.auth_state.value,
            "last_refresh_at": tenant.last_refresh_at,
            "snoozed_until": tenant.snoozed_until,
            "next_check_at": now or datetime.now(UTC),
            "initial_domain": tenant.initial_domain,
        }
        await self.c.execute(insert(tenants), values)

    async def get(self, key: str) -> Tenant | None:
        row = (await self.c.execute(select(tenants).where(tenants.c.key == key))).first()
        return _tenant(row) if row else None

    async def find_exact(self, ref: str) -> Tenant | None:
        row = (await self.c.execute(_FIND_TENANT, {"b_ref": ref.lower()})).first()
        return _tenant(row) if row else None

    async def names(self) -> list[str]:
        rows = await self.c.execute(select(tenants.c.slug, tenants.c.display_name))
        return [n for row in rows for n in row]

    async def all(self) -> list[Tenant]:
        rows = await self.c.execute(select(tenants).order_by(tenants.c.slug))
        return [_tenant(r) for r in rows]

    async def mark_validated(self, key: str, at: datetime) -> None:
        """New tokens work: the tenant is healthy and its inactivity clock restarts."""
        await self.c.execute(
            update(tenants)
            .where(tenants.c.key == key)
            .values(last_validated_at=at, last_refresh_at=at, auth_state=AuthState.HEALTHY.value)
        )

    async def set_initial_domain(self, key: str, domain: str) -> None:
        await self.c.execute(
            update(tenants).where(tenants.c.key == key).values(initial_domain=domain)
        )

    async def record_health(self, records: Sequence[HealthRecord]) -> None:
        """One statement for all records (executemany); a failed refresh keeps the last one."""
        if not records:
            return
        rows = [
            {
                "b_key": r.key,
                "b_state": r.state.value,
                "b_next": r.next_check,
                "b_refreshed": r.refreshed_at,
            }
            for r in records
        ]
        await self.c.execute(_RECORD_HEALTH, rows)

    async def snooze(self, key: str, until: datetime | None) -> None:
        await self.c.execute(
            update(tenants).where(tenants.c.key == key).values(snoozed_until=until)
        )

    async def claim_due(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[Tenant]:
        """Lease up to ``limit`` tenants whose check is due (SKIP LOCKED on PostgreSQL)."""
        due = (
            select(tenants.c.key)
            .where(
                or_(tenants.c.next_check_at.is_(None), tenants.c.next_check_at <= now),
                or_(tenants.c.check_lease_until.is_(None), tenants.c.check_lease_until < now),
            )
            .order_by(tenants.c.next_check_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        keys = [row.key for row in await self.c.execute(due)]
        if not keys:
            return []
        await self.c.execute(
            update(tenants)
            .where(tenants.c.key.in_(keys))
            .values(check_owner=owner, check_lease_until=until)
        )
        rows = await self.c.execute(select(tenants).where(tenants.c.key.in_(keys)))
        return [_tenant(r) for r in rows]

    async def counts_by_state(self) -> dict[AuthState, int]:
        rows = await self.c.execute(
            select(tenants.c.auth_state, func.count()).group_by(tenants.c.auth_state)
        )
        return {AuthState(state): int(n) for state, n in rows}

    async def needing_action(self, limit: int = 20) -> list[Tenant]:
        """Expired first, then expiring; oldest refresh first."""
        states = [AuthState.EXPIRED.value, AuthState.EXPIRING.value]
        rows = await self.c.execute(
            select(tenants)
            .where(tenants.c.auth_state.in_(states))
            .order_by(tenants.c.auth_state, tenants.c.last_refresh_at)
            .limit(limit)
        )
        return [_tenant(r) for r in rows]

    async def in_state(self, state: AuthState, limit: int = 500) -> list[Tenant]:
        rows = await self.c.execute(
            select(tenants)
            .where(tenants.c.auth_state == state.value)
            .order_by(tenants.c.display_name)
            .limit(limit)
        )
        return [_tenant(r) for r in rows]


class SqlRenewalRepository:
    def __init__(self, conn: AsyncConnection, box: SecretBox) -> None:
        self.c = conn
        self.box = box

    def _values(self, r: Renewal) -> dict[str, Any]:
        code = r.device_code
        browser = r.browser_sign_in if r.is_active else None
        return {
            "id": r.id,
            "tenant_key": r.tenant_key,
            "state": r.state.value,
            "requested_by_platform": r.requested_by.platform,
            "requested_by_id": r.requested_by.user_id,
            "requested_by_name": r.requested_by.name,
            "invitation_email": r.invitation_email,
            "expected_account": r.expected_account,
            "origin_platform": r.origin.platform,
            "origin_channel": r.origin.channel,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "invitation_hash": r.invitation_hash,
            "invitation_expires_at": r.invitation_expires_at,
            "user_code": code.user_code if code else None,
            "verification_uri": code.verification_uri if code else None,
            "code_expires_at": code.expires_at if code else None,
            "poll_interval": code.interval if code else None,
            "flow_state": self.box.seal(code.flow_state) if code else None,
            "code_issued_at": r.code_issued_at,
            "tokens_acquired": r.tokens_acquired,
            "tokens_total": r.tokens_total,
            "signed_in_account": r.signed_in_account,
            "signed_in_is_global_admin": r.signed_in_is_global_admin,
            "failure_code": r.failure_code,
            "warnings": json.dumps(r.warnings),
            "thread_platform": r.thread.platform if r.thread else None,
            "thread_key": r.thread.key if r.thread else None,
            "batch_id": r.batch,
            "version": r.version,
            "staged_tokens": self.box.seal(r.staged_tokens) if r.staged_tokens else None,
            "awaiting_thread": r.awaiting_thread,
            # kept only while the renewal is open: an ended renewal holds no verifier
            "signin_state_hash": browser.state_hash if browser else None,
            "signin_expires_at": browser.expires_at if browser else None,
            "signin_flow": self.box.seal(browser.flow_state) if browser else None,
            "invited_at": r.invited_at,
            "link_opened_at": r.link_opened_at,
            "codes_lapsed": r.codes_lapsed,
        }

    def _renewal(self, row: Row[Any]) -> Renewal:
        code = None
        if row.flow_state is not None:
            code = DeviceCode(
                row.user_code,
                row.verification_uri,
                row.code_expires_at,
                row.poll_interval,
                self.box.open(row.flow_state),
            )
        thread = ThreadRef(row.thread_platform, row.thread_key) if row.thread_platform else None
        return Renewal(
            id=row.id,
            tenant_key=row.tenant_key,
            state=RenewalState(row.state),
            requested_by=Actor(
                row.requested_by_platform, row.requested_by_id, row.requested_by_name
            ),
            invitation_email=row.invitation_email,
            expected_account=row.expected_account,
            origin=Origin(row.origin_platform, row.origin_channel),
            created_at=row.created_at,
            updated_at=row.updated_at,
            invitation_hash=row.invitation_hash,
            invitation_expires_at=row.invitation_expires_at,
            device_code=code,
            code_issued_at=row.code_issued_at,
            tokens_acquired=row.tokens_acquired,
            tokens_total=row.tokens_total,
            signed_in_account=row.signed_in_account,
            signed_in_is_global_admin=row.signed_in_is_global_admin,
            failure_code=row.failure_code,
            warnings=json.loads(row.warnings),
            thread=thread,
            batch=row.batch_id,
            version=row.version,
            staged_tokens=self.box.open(row.staged_tokens) if row.staged_tokens else None,
            awaiting_thread=bool(row.awaiting_thread),
            browser_sign_in=BrowserSignIn(
                row.signin_state_hash, row.signin_expires_at, self.box.open(row.signin_flow)
            )
            if row.signin_flow is not None
            else None,
            invited_at=row.invited_at,
            link_opened_at=row.link_opened_at,
            codes_lapsed=row.codes_lapsed or 0,
        )

    async def _many(self, *where: Any, limit: int | None = None) -> list[Renewal]:
        query = select(renewals).where(*where).order_by(renewals.c.created_at.desc())
        if limit:
            query = query.limit(limit)
        return [self._renewal(r) for r in await self.c.execute(query)]

    async def _one(self, *where: Any) -> Renewal | None:
        found = await self._many(*where, limit=1)
        return found[0] if found else None

    async def add(self, renewal: Renewal) -> None:
        try:
            async with self.c.begin_nested():
                await self.c.execute(insert(renewals), self._values(renewal))
        except IntegrityError as exc:
            raise RenewalInProgressError(await self.active_for(renewal.tenant_key)) from exc

    async def get(self, renewal_id: str) -> Renewal | None:
        return await self._one(renewals.c.id == renewal_id)

    async def save(self, renewal: Renewal) -> None:
        values = self._values(renewal)
        values.update(version=renewal.version + 1, b_id=renewal.id, b_version=renewal.version)
        result = await self.c.execute(_SAVE_RENEWAL, values)
        if result.rowcount != 1:
            raise ConcurrencyError
        renewal.version += 1

    async def in_batch(self, batch: str) -> list[Renewal]:
        return list(reversed(await self._many(renewals.c.batch_id == batch)))

    async def active_for(self, tenant_key: str) -> Renewal | None:
        return await self._first(_ACTIVE_RENEWAL, {"b_key": tenant_key})

    async def by_invitation(self, token_hash: str) -> Renewal | None:
        return await self._first(_RENEWAL_BY_INVITATION, {"b_hash": token_hash})

    async def _first(self, query: Any, params: dict[str, Any]) -> Renewal | None:
        row = (await self.c.execute(query, params)).first()
        return self._renewal(row) if row else None

    async def resumable(self) -> list[Renewal]:
        return await self._many(renewals.c.state.in_(_IN_FLIGHT))

    async def awaiting_thread(self, before: datetime) -> list[Renewal]:
        return await self._many(
            renewals.c.state == RenewalState.INVITED.value,
            renewals.c.awaiting_thread.is_(True),
            renewals.c.updated_at < before,
        )

    async def claim_work(self, renewal_id: str, owner: str, until: datetime, now: datetime) -> bool:
        result = await self.c.execute(
            update(renewals)
            .where(
                renewals.c.id == renewal_id,
                renewals.c.state.in_(_ACTIVE),
                or_(
                    renewals.c.poll_owner.is_(None),
                    renewals.c.poll_owner == owner,
                    renewals.c.poll_lease_until < now,
                ),
            )
            .values(poll_owner=owner, poll_lease_until=until)
        )
        return result.rowcount == 1

    async def claim_code(self, renewal_id: str, owner: str, until: datetime, now: datetime) -> bool:
        result = await self.c.execute(
            update(renewals)
            .where(
                renewals.c.id == renewal_id,
                renewals.c.state.in_(_CODE_STATES),
                or_(renewals.c.code_owner.is_(None), renewals.c.code_claim_until < now),
            )
            .values(code_owner=owner, code_claim_until=until)
        )
        return result.rowcount == 1

    async def release_code(self, renewal_id: str, owner: str) -> None:
        await self.c.execute(
            update(renewals)
            .where(renewals.c.id == renewal_id, renewals.c.code_owner == owner)
            .values(code_owner=None, code_claim_until=None)
        )

    async def open(self) -> list[Renewal]:
        return await self._many(renewals.c.state.in_(_ACTIVE))

    async def for_tenant(self, tenant_key: str, limit: int = 10) -> list[Renewal]:
        return await self._many(renewals.c.tenant_key == tenant_key, limit=limit)

    async def count_by_state(self) -> dict[RenewalState, int]:
        rows = await self.c.execute(
            select(renewals.c.state, func.count()).group_by(renewals.c.state)
        )
        return {RenewalState(state): int(n) for state, n in rows}

    async def validation_times(self) -> list[float]:
        rows = await self.c.execute(
            select(renewals.c.created_at, renewals.c.updated_at).where(
                renewals.c.state == RenewalState.VALIDATED.value
            )
        )
        return [(done - start).total_seconds() for start, done in rows if done and start]


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def add(self, entry: AuditEntry) -> None:
        await self.c.execute(
            insert(audit_events),
            {
                "at": entry.at,
                "kind": entry.kind,
                "actor": entry.actor,
                "renewal_id": entry.renewal_id,
                "tenant_key": entry.tenant_key,
                "detail": entry.detail,
            },
        )

    async def for_tenant(self, tenant_key: str, limit: int = 20) -> list[AuditEntry]:
        rows = await self.c.execute(
            select(audit_events)
            .where(audit_events.c.tenant_key == tenant_key)
            .order_by(audit_events.c.at.desc(), audit_events.c.id.desc())
            .limit(limit)
        )
        return [
            AuditEntry(r.at, r.kind, r.actor, r.renewal_id, r.tenant_key, r.detail) for r in rows
        ]


async def audit_since(conn: AsyncConnection, since: datetime) -> list[AuditEntry]:
    """Every audit entry from ``since`` on, oldest first (for exports)."""
    rows = await conn.execute(
        select(audit_events)
        .where(audit_events.c.at >= since)
        .order_by(audit_events.c.at, audit_events.c.id)
    )
    return [AuditEntry(r.at, r.kind, r.actor, r.renewal_id, r.tenant_key, r.detail) for r in rows]


class SqlIdentityErrorLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def add(self, record: IdentityErrorRecord) -> bool:
        """Store one error. False when (source, client_ref) was already reported."""
        values = {
            "at": record.at,
            "tenant_key": record.tenant_key,
            "code": record.code,
            "error": record.error,
            "description": record.description,
            "correlation_id": record.correlation_id,
            "source": record.source,
            "client_ref": record.client_ref,
        }
        try:
            async with self.c.begin_nested():
                await self.c.execute(insert(msal_errors), values)
        except IntegrityError:
            return False
        return True

    async def newest(
        self, tenant_key: str | None = None, limit: int = 10
    ) -> list[IdentityErrorRecord]:
        query = select(msal_errors).order_by(msal_errors.c.at.desc(), msal_errors.c.id.desc())
        if tenant_key:
            query = query.where(msal_errors.c.tenant_key == tenant_key)
        rows = await self.c.execute(query.limit(limit))
        return [
            IdentityErrorRecord(
                r.at, r.tenant_key, r.code, r.error, r.description, r.correlation_id, r.source
            )
            for r in rows
        ]


class SqlJobRuns:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def claim(self, name: str, now: datetime, every: timedelta) -> bool:
        """An UPDATE guarded by the last run time: only one replica's claim matches."""
        result = await self.c.execute(
            update(job_runs)
            .where(job_runs.c.name == name, job_runs.c.last_run_at <= now - every)
            .values(last_run_at=now)
        )
        if result.rowcount == 1:
            return True
        try:
            async with self.c.begin_nested():
                await self.c.execute(insert(job_runs).values(name=name, last_run_at=now))
        except IntegrityError:
            return False  # it exists and ran recently
        return True


class SqlUnitOfWork:
    """One transaction. Leaving the block without commit() rolls back."""

    conn: AsyncConnection
    tenants: SqlTenantRepository
    renewals: SqlRenewalRepository
    audit: SqlAuditLog
    identity_errors: SqlIdentityErrorLog
    jobs: SqlJobRuns
    outbox: SqlOutbox
    webhooks: SqlWebhookOutbox
    emails: SqlEmailOutbox
    chases: SqlChaseLog

    def __init__(self, engine: AsyncEngine, box: SecretBox, read_only: bool = False) -> None:
        self.engine = engine
        self.box = box
        self.read_only = read_only

    async def __aenter__(self) -> SqlUnitOfWork:
        # SQLite: writers queue on the gate; a reader reads its WAL snapshot beside them.
        self._gate = None if self.read_only else gate_for(self.engine)
        if self._gate is not None:
            await self._gate.acquire()
        try:
            self.conn = await self.engine.connect()
            if self.read_only:
                await self.conn.execution_options(**{READ_ONLY: True})
            await self.conn.begin()
        except (OperationalError, DBAPIError, OSError) as exc:
            self._release()
            raise StorageError("the database is not reachable") from exc
        except BaseException:
            self._release()
            raise
        self.tenants = SqlTenantRepository(self.conn)
        self.renewals = SqlRenewalRepository(self.conn, self.box)
        self.audit = SqlAuditLog(self.conn)
        self.identity_errors = SqlIdentityErrorLog(self.conn)
        self.jobs = SqlJobRuns(self.conn)
        self.outbox = SqlOutbox(self.conn, self.box)
        self.webhooks = SqlWebhookOutbox(self.conn)
        self.emails = SqlEmailOutbox(self.conn, self.box)
        self.chases = SqlChaseLog(self.conn)
        return self

    def _release(self) -> None:
        if self._gate is not None and self._gate.locked():
            self._gate.release()
        self._gate = None

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self.conn.in_transaction():
                await self.conn.rollback()
        finally:
            try:
                await self.conn.close()
            finally:
                self._release()
        if isinstance(exc, (OperationalError, DBAPIError)) and not isinstance(exc, IntegrityError):
            raise StorageError("the database failed") from exc

    async def commit(self) -> None:
        try:
            await self.conn.commit()
        except (OperationalError, DBAPIError) as exc:
            raise StorageError("the database failed to commit") from exc

    async def rollback(self) -> None:
        await self.conn.rollback()


class SqlTokenCacheStore:
    """The MSAL token cache per tenant, encrypted.

    Loads and saves that arrive together share one statement and one short transaction (see
    ``core.batching``): a health sweep loads and saves hundreds of caches at once. A cache that no
    configured key opens, or that does not open to a token cache, fails that tenant's load alone
    with TokenCacheUnreadableError; a database failure is a StorageError.
    """

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box
        self._load = Coalescer(self._load_many)
        self._save = Coalescer(self._save_many)
        self._upsert = upsert(engine, token_caches, ["tenant_id"])  # built once: costly to build

    async def load(self, tenant_id: str) -> str | None:
        return await self._load(tenant_id)

    async def save(self, tenant_id: str, serialized: str) -> None:
        await self._save((tenant_id, serialized))

    async def _load_many(self, tenant_ids: list[str]) -> list[str | Exception | None]:
        query = select(token_caches.c.tenant_id, token_caches.c.ciphertext).where(
            token_caches.c.tenant_id.in_(set(tenant_ids))
        )
        try:
            async with write_gate(self.engine), self.engine.connect() as conn:
                found = {row.tenant_id: row.ciphertext for row in await conn.execute(query)}
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to load token caches") from exc
        return [self._open(tid, found[tid]) if tid in found else None for tid in tenant_ids]

    def _open(self, tenant_id: str, sealed: bytes) -> str | Exception:
        """The cache's text, or the error of this tenant alone (the batch's others still load)."""
        try:
            body = self.box.open(sealed).decode()
            if isinstance(json.loads(body), dict):  # what MSAL's deserialize expects
                return body
        except (StorageError, ValueError, TypeError):  # undecryptable, not UTF-8, not JSON
            pass
        return TokenCacheUnreadableError(tenant_id)

    async def unreadable(self, page: int = 1000) -> tuple[int, list[str]]:
        """Every stored cache opened once (the start-up key check): how many there are, and the
        tenant ids of those that do not open. Reads in pages; opens them off the event loop."""
        checked, after = 0, ""
        bad: list[str] = []
        query = (
            select(token_caches.c.tenant_id, token_caches.c.ciphertext)
            .where(token_caches.c.tenant_id > bindparam("b_after"))
            .order_by(token_caches.c.tenant_id)
            .limit(page)
        )
        while True:
            try:
                async with self.engine.connect() as conn:
                    result = await conn.execute(query, {"b_after": after})
                    rows = [(str(r.tenant_id), bytes(r.ciphertext)) for r in result]
            except (DBAPIError, OSError) as exc:
                raise StorageError("the database failed to read token caches") from exc
            if not rows:
                return checked, bad
            bad += await asyncio.to_thread(self._unopened, rows)
            checked += len(rows)
            after = rows[-1][0]

    def _unopened(self, rows: Sequence[tuple[str, bytes]]) -> list[str]:
        return [tid for tid, sealed in rows if isinstance(self._open(tid, sealed), Exception)]

    async def _save_many(self, items: list[tuple[str, str]]) -> list[None]:
        now = datetime.now(UTC)
        latest = dict(items)  # one row per tenant: the last save asked for wins
        rows = [
            {"tenant_id": tid, "ciphertext": self.box.seal(body.encode()), "updated_at": now}
            for tid, body in latest.items()
        ]
        try:
            async with write_gate(self.engine), self.engine.begin() as conn:
                await conn.execute(self._upsert, rows)
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to save token caches") from exc
        return [None] * len(items)
