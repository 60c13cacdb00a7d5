"""Storage of webhooks: the outbox written in core's transactions, and the delivery queue.

``SqlWebhookOutbox`` stores an event in the unit of work that changed the tenant, so an event
exists exactly when the change was committed (a crash loses neither). ``SqlWebhookQueue`` fans
events out to the receivers and leases due deliveries with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (each delivery is sent by one replica; a dead sender's lease runs out and another takes
it). SQLite ignores ``FOR UPDATE``; there the write gate serializes the claims of one process.
Must not sign or send anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.storage.database import upsert, write_gate
from adapters.storage.tables import tenants, webhook_deliveries, webhook_events, webhook_tenants
from core import webhooks
from core.errors import StorageError
from core.model import AuthState, Tenant
from core.ports import HealthRecord

E, D = webhook_events.c, webhook_deliveries.c


class SqlWebhookOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def emit(self, kind: str, tenant: Tenant, at: datetime, reason: str = "") -> None:
        body = webhooks.body(kind, tenant, at, webhooks.state_after(kind), reason)
        await self._store(kind, tenant.key, body, at)

    async def _store(self, kind: str, tenant_key: str, body: str, at: datetime) -> None:
        await self.c.execute(
            insert(webhook_events).values(
                id=webhooks.new_event_id(), kind=kind, tenant_key=tenant_key, body=body,
                created_at=at, fanned_out=False,
            )
        )  # fmt: skip
        last = upsert(self.c.engine, webhook_tenants, ["tenant_key"])
        await self.c.execute(last, [{"tenant_key": tenant_key, "last_kind": kind, "at": at}])

    async def health(self, records: Sequence[HealthRecord], at: datetime) -> None:
        """Events for the checks that change something a receiver cares about."""
        keys = [r.key for r in records]
        if not keys:
            return
        rows = {
            r.key: r for r in await self.c.execute(select(tenants).where(tenants.c.key.in_(keys)))
        }
        last = dict(
            (
                await self.c.execute(
                    select(webhook_tenants.c.tenant_key, webhook_tenants.c.last_kind).where(
                        webhook_tenants.c.tenant_key.in_(keys)
                    )
                )
            ).all()
        )
        for record in records:
            row = rows.get(record.key)
            if row is None:
                continue
            kind = webhooks.health_event(AuthState(row.auth_state), record, last.get(record.key))
            if kind is None:
                continue
            tenant = Tenant(
                row.key, row.slug, row.display_name, row.tenant_id, row.primary_domain,
                row.admin_upn,
            )  # fmt: skip
            body = webhooks.body(kind, tenant, at, record.state)
            await self._store(kind, record.key, body, at)
            last[record.key] = kind


class SqlWebhookQueue:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def fan_out(self, endpoints: Sequence[str], now: datetime, limit: int) -> int:
        new = (
            select(E.id)
            .where(E.fanned_out.is_(False))
            .order_by(E.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        try:
            async with write_gate(self.engine), self.engine.begin() as conn:
                ids = [row.id for row in await conn.execute(new)]
                if not ids:
                    return 0
                rows = [
                    {"event_id": i, "endpoint": e, "attempts": 0, "next_attempt_at": now}
                    for i in ids
                    for e in endpoints
                ]
                if rows:
                    await conn.execute(insert(webhook_deliveries), rows)
                await conn.execute(
                    update(webhook_events).where(E.id.in_(ids)).values(fanned_out=True)
                )
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to fan out webhooks") from exc
        return len(ids)

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[webhooks.Delivery]:
        due = (
            select(D.id)
            .where(
                D.delivered_at.is_(None),
                D.next_attempt_at <= now,
                or_(D.lease_until.is_(None), D.lease_until < now),
            )
            .order_by(D.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        try:
            async with write_gate(self.engine), self.engine.begin() as conn:
                ids = [row.id for row in await conn.execute(due)]
                if not ids:
                    return []
                await conn.execute(
                    update(webhook_deliveries)
                    .where(D.id.in_(ids))
                    .values(lease_owner=owner, lease_until=until)
                )
                rows = await conn.execute(
                    select(D.id, D.event_id, D.endpoint, D.attempts, E.kind, E.body)
                    .select_from(webhook_deliveries.join(webhook_events, and_(E.id == D.event_id)))
                    .where(D.id.in_(ids))
                )
                return [
                    webhooks.Delivery(r.id, r.event_id, r.endpoint, r.kind, r.body, r.attempts)
                    for r in rows
                ]
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to claim webhook deliveries") from exc

    async def delivered(self, delivery_id: int, at: datetime, status: int) -> None:
        await self._update(delivery_id, delivered_at=at, last_status=status, lease_until=None)

    async def retry(self, delivery_id: int, at: datetime, attempt: webhooks.Attempt) -> None:
        await self._update(
            delivery_id,
            attempts=D.attempts + 1,
            next_attempt_at=at,
            last_status=attempt.status,
            last_error=attempt.error[:200],
            lease_owner=None,
            lease_until=None,
        )

    async def _update(self, delivery_id: int, **values: object) -> None:
        async with write_gate(self.engine), self.engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries).where(D.id == delivery_id).values(**values)
            )

    async def waiting(self, endpoint: str) -> int:
        async with self.engine.connect() as conn:
            query = select(func.count()).where(D.endpoint == endpoint, D.delivered_at.is_(None))
            return int((await conn.execute(query)).scalar_one())
