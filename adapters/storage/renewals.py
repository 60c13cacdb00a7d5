"""SqlRenewalRepository: the Renewal aggregate over the ``renewals`` table.

Maps rows to core's Renewal by hand (no ORM identity map to surprise us), translates unique
violations into RenewalInProgressError and lost updates into ConcurrencyError, and encrypts the
device-flow state, the staged tokens and a browser sign-in's verifier. Leases: claim_work,
claim_code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage.crypto import SecretBox
from adapters.storage.database import dialect_insert, direct, fetchrow
from adapters.storage.outbox import SqlOutbox, add_held_after, handed_out, held_params
from adapters.storage.records import SqlAuditLog
from adapters.storage.tables import audit_events, renewals
from adapters.storage.tenants import FIND_TENANT, SqlTenantRepository, tenant_of
from core.errors import (
    ConcurrencyError,
    RenewalInProgressError,
)
from core.model import (
    ACTIVE_STATES,
    Actor,
    BrowserSignIn,
    DeviceCode,
    Origin,
    Renewal,
    RenewalState,
    Tenant,
    ThreadRef,
)
from core.ports import AuditEntry, DurationHistogram, FirstPost, Outgoing

_ACTIVE = [s.value for s in ACTIVE_STATES]
_IN_FLIGHT = [RenewalState.CODE_ISSUED.value, RenewalState.TOKENS_ACQUIRED.value]
_CODE_STATES = [RenewalState.INVITED.value, RenewalState.CODE_ISSUED.value]

# Statements on the busiest paths (a chat command, a poll) are built once: building one costs
# more CPU than running it (SQLAlchemy caches the compiled form, not the construction). Values
# go in as execute() parameters for the same reason: .values(**row) coerces every value anew.
_NEWEST_RENEWAL = select(renewals).order_by(renewals.c.created_at.desc()).limit(1)
_ACTIVE_RENEWAL = _NEWEST_RENEWAL.where(
    renewals.c.tenant_key == bindparam("b_key"), renewals.c.state.in_(_ACTIVE)
)
_RENEWAL_BY_INVITATION = _NEWEST_RENEWAL.where(renewals.c.invitation_hash == bindparam("b_hash"))
_SAVE_RENEWAL = update(renewals).where(
    renewals.c.id == bindparam("b_id"), renewals.c.version == bindparam("b_version")
)
# A second open renewal for a tenant violates the partial unique index: the insert then does
# nothing and returns no row (one round trip; a savepoint around a plain insert took three).
_ADD_RENEWAL = {
    dialect: dialect_insert(dialect, renewals).on_conflict_do_nothing().returning(renewals.c.id)
    for dialect in ("postgresql", "sqlite")
}
_AUDIT_COLUMNS = ("at", "kind", "actor", "detail")


def _entry(audit: AuditEntry) -> dict[str, Any]:
    """The audit entry's values for ``_audited``."""
    return {f"a_{c}": getattr(audit, c) for c in _AUDIT_COLUMNS}


def _audited(added: Any) -> Any:
    """The audit entry's insert after ``added`` (a CTE returning the renewal's id and tenant
    key): the entry is written only when the renewal is (a data-modifying WITH)."""
    entry = [bindparam(f"a_{c}", type_=audit_events.c[c].type) for c in _AUDIT_COLUMNS]
    return (
        insert(audit_events)
        .from_select(
            [*_AUDIT_COLUMNS, "renewal_id", "tenant_key"],
            select(*entry, added.c.id, added.c.tenant_key),
        )
        .returning(audit_events.c.renewal_id)
    )


@cache
def _add_audited(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: the renewal and its audit entry in one statement (one round trip, not two)."""
    added = (
        dialect_insert("postgresql", renewals)
        .values({c: bindparam(c, type_=renewals.c[c].type) for c in columns})
        .on_conflict_do_nothing()
        .returning(renewals.c.id, renewals.c.tenant_key)
        .cte("added")
    )
    return _audited(added).add_cte(added)


@cache
def _add_for_ref(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: the tenant lookup (``FIND_TENANT``), then the renewal and its audit entry for
    the tenant found, in one statement: the tenant's row, and whether the renewal was added.
    The columns a renewal takes from its tenant are ``Renewal.assign``'s rule."""
    found = FIND_TENANT.cte("found")
    given = func.nullif(bindparam("invitation_email", type_=renewals.c.invitation_email.type), "")
    assigned = {
        "tenant_key": found.c.key,
        "expected_account": found.c.admin_upn,
        "invitation_email": func.coalesce(given, found.c.admin_upn),
    }
    row = [assigned.get(c, bindparam(c, type_=renewals.c[c].type)) for c in columns]
    added = (
        dialect_insert("postgresql", renewals)
        .from_select(list(columns), select(*row))
        .on_conflict_do_nothing()
        .returning(renewals.c.id, renewals.c.tenant_key)
        .cte("added")
    )
    entry = _audited(added).cte("entry")
    return select(found, exists(entry.select()).label("claimed"))


@cache
def _save_with_first(params: tuple[str, ...]) -> Any:
    """PostgreSQL: the version-checked save, then a new thread's first message (held) only if
    it saved (``SqlOutbox.add(hold=)`` after it in one data-modifying WITH)."""
    columns = [c for c in params if c in renewals.c]
    saved = (
        update(renewals)
        .where(renewals.c.id == bindparam("b_id"), renewals.c.version == bindparam("b_version"))
        .values({c: bindparam(c, type_=renewals.c[c].type) for c in columns})
        .returning(renewals.c.id)
        .cte("saved")
    )
    return add_held_after(saved)


def _row(r: Renewal, box: SecretBox) -> dict[str, Any]:
    """A renewal's row (its secrets sealed by ``box``)."""
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
        "flow_state": box.seal(code.flow_state) if code else None,
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
        "staged_tokens": box.seal(r.staged_tokens) if r.staged_tokens else None,
        "awaiting_thread": r.awaiting_thread,
        # kept only while the renewal is open: an ended renewal holds no verifier
        "signin_state_hash": browser.state_hash if browser else None,
        "signin_expires_at": browser.expires_at if browser else None,
        "signin_flow": box.seal(browser.flow_state) if browser else None,
        "invited_at": r.invited_at,
        "link_opened_at": r.link_opened_at,
        "codes_lapsed": r.codes_lapsed,
    }


def _claim(
    ref: str, renewal: Renewal, audit: AuditEntry, box: SecretBox
) -> tuple[Any, dict[str, Any]]:
    """``add_for``'s one statement on PostgreSQL, and its values."""
    values = _row(renewal, box)
    statement = _add_for_ref(tuple(values))
    values.update(_entry(audit), b_ref=ref.lower())
    return statement, values


def claim_statement(
    ref: str, renewal: Renewal, audit: AuditEntry, box: SecretBox
) -> tuple[str, list[Any]]:
    """``add_for``'s one statement on PostgreSQL as asyncpg takes it, its SQL and arguments: for
    a caller with a connection of its own (bench/anchors.py's claim-first floor)."""
    statement, values = _claim(ref, renewal, audit, box)
    made = direct(statement)
    return made.sql, made.args(values)


class SqlRenewalRepository:
    def __init__(self, conn: AsyncConnection, box: SecretBox, driver: Any = None) -> None:
        self.c = conn
        self.box = box
        self.driver = driver  # asyncpg's connection, in autocommit (database.Direct)
        self._postgres = conn.dialect.name == "postgresql"

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

    async def add(self, renewal: Renewal, audit: AuditEntry | None = None) -> None:
        values = _row(renewal, self.box)
        if audit is not None and self._postgres:  # with its entry, in one statement
            statement = _add_audited(tuple(values))
            values.update(_entry(audit))
        else:
            statement = _ADD_RENEWAL[self.c.dialect.name]
        if await fetchrow(self.c, self.driver, statement, values) is None:
            raise RenewalInProgressError(await self.active_for(renewal.tenant_key))
        if audit is not None and not self._postgres:  # SQLite: the entry on its own
            await SqlAuditLog(self.c).add(audit)

    async def add_for(self, ref: str, renewal: Renewal, audit: AuditEntry) -> Tenant | None:
        if not self._postgres:  # SQLite: the lookup, then the insert
            tenant = await SqlTenantRepository(self.c).find_exact(ref)
            if tenant is not None:
                renewal.assign(tenant)
                await self.add(renewal, replace(audit, tenant_key=tenant.key))
            return tenant
        statement, values = _claim(ref, renewal, audit, self.box)
        row = await fetchrow(self.c, self.driver, statement, values)
        if row is None:
            return None
        tenant = tenant_of(row)
        renewal.assign(tenant)
        if not row.claimed:
            raise RenewalInProgressError(await self.active_for(tenant.key))
        return tenant

    async def get(self, renewal_id: str) -> Renewal | None:
        return await self._one(renewals.c.id == renewal_id)

    async def save(self, renewal: Renewal, first: FirstPost | None = None) -> Outgoing | None:
        values = _row(renewal, self.box)
        values.update(version=renewal.version + 1, b_id=renewal.id, b_version=renewal.version)
        held = None
        if first is not None and first.item.kind != "status" and self._postgres:
            # the renewal and its thread's first message in one statement: the message is
            # stored only when the renewal is (a version that changed meanwhile stores neither)
            values.update(held_params(first.item, first.at, first.hold, self.box))
            added = await fetchrow(self.c, self.driver, _save_with_first(tuple(values)), values)
            if added is None:
                raise ConcurrencyError
            held = handed_out(first.item, added, first.at)
        else:
            result = await self.c.execute(_SAVE_RENEWAL, values)
            if result.rowcount != 1:
                raise ConcurrencyError
            if first is not None:
                held = await SqlOutbox(self.c, self.box).add(first.item, first.at, first.hold)
        renewal.version += 1
        return held

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

    async def count_by_state(self, open_only: bool = False) -> dict[RenewalState, int]:
        query = select(renewals.c.state, func.count()).group_by(renewals.c.state)
        if open_only:  # the one-active-per-tenant index holds exactly these rows
            query = query.where(renewals.c.state.in_(_ACTIVE))
        rows = await self.c.execute(query)
        return {RenewalState(state): int(n) for state, n in rows}

    async def validation_histogram(self, bounds: Sequence[float]) -> DurationHistogram:
        # One aggregate row (a sum per bucket), not a row per renewal: /metrics reads this at
        # every scrape, and validated renewals only accumulate.
        took = _seconds(self.c.dialect.name)
        validated = renewals.c.state == RenewalState.VALIDATED.value
        # SQLite's julianday arithmetic is exact to about 0.1 ms: a renewal of exactly a bound
        # still counts in that bound's bucket (Prometheus' le is inclusive).
        columns = [
            func.coalesce(func.sum(case((took <= b + 0.001, 1), else_=0)), 0) for b in bounds
        ]
        query = select(func.count(), func.coalesce(func.sum(took), 0.0), *columns).where(
            validated, renewals.c.updated_at.is_not(None)
        )
        count, total, *at_most = (await self.c.execute(query)).one()
        return DurationHistogram(
            tuple(bounds), tuple(int(n) for n in at_most), float(total), int(count)
        )


def _seconds(dialect: str) -> ColumnElement[Any]:
    """updated_at - created_at in seconds, in this database's own arithmetic."""
    start, done = renewals.c.created_at, renewals.c.updated_at
    if dialect == "postgresql":
        return func.extract("epoch", done - start)
    return (func.julianday(done) - func.julianday(start)) * 86400.0  # SQLite stores text
