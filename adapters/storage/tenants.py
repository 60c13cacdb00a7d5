"""SqlTenantRepository: core's tenants over the ``tenants`` table (lookup, health, leases).

Maps rows to core's Tenant by hand. Must not know renewals or chat.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage.tables import (
    tenants,
)
from core.model import (
    AuthState,
    Tenant,
)
from core.ports import HealthRecord

# Statements on the busiest paths (a chat command, a poll) are built once: building one costs
# more CPU than running it (SQLAlchemy caches the compiled form, not the construction). Values
# go in as execute() parameters for the same reason: .values(**row) coerces every value anew.
FIND_TENANT = (
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


def tenant_of(row: Row[Any]) -> Tenant:
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

    async def update_details(self, tenant: Tenant) -> None:
        """Write what an operator may change (slug, names, domains, admin); the tenant id
        and the token health stay as they are."""
        await self.c.execute(
            update(tenants)
            .where(tenants.c.key == tenant.key)
            .values(
                slug=tenant.slug,
                display_name=tenant.display_name,
                primary_domain=tenant.primary_domain,
                admin_upn=tenant.admin_upn,
                initial_domain=tenant.initial_domain,
            )
        )

    async def get(self, key: str) -> Tenant | None:
        row = (await self.c.execute(select(tenants).where(tenants.c.key == key))).first()
        return tenant_of(row) if row else None

    async def find_exact(self, ref: str) -> Tenant | None:
        row = (await self.c.execute(FIND_TENANT, {"b_ref": ref.lower()})).first()
        return tenant_of(row) if row else None

    async def names(self) -> list[str]:
        rows = await self.c.execute(select(tenants.c.slug, tenants.c.display_name))
        return [n for row in rows for n in row]

    async def all(self) -> list[Tenant]:
        rows = await self.c.execute(select(tenants).order_by(tenants.c.slug))
        return [tenant_of(r) for r in rows]

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
        return [tenant_of(r) for r in rows]

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
        return [tenant_of(r) for r in rows]

    async def in_state(self, state: AuthState, limit: int = 500) -> list[Tenant]:
        rows = await self.c.execute(
            select(tenants)
            .where(tenants.c.auth_state == state.value)
            .order_by(tenants.c.display_name)
            .limit(limit)
        )
        return [tenant_of(r) for r in rows]
