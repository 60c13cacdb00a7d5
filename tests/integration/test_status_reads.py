"""What `status` reads stays small however many tenants, errors and renewals there are.

`status` counts the open renewals (not every renewal ever made, and without loading them) and
asks for the newest identity error of each tenant it lists as expired; issue 18 wants it under
100 ms p99 over 50,000 tenants (bench/status.py). SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.tables import msal_errors, renewals
from adapters.storage.unit_of_work import SqlUnitOfWork
from core.model import Actor, Origin, Renewal, RenewalState
from tests.fakes.refs import random_tenant

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


async def test_open_renewals_are_counted_without_finished_ones(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """`Open renewals: N` counts the renewals in progress, not the validated history."""
    tenant, other = random_tenant(), random_tenant()
    async with SqlUnitOfWork(own_engine, box) as uow:
        await uow.tenants.add(tenant, NOW)
        await uow.tenants.add(other, NOW)
        r = Renewal(
            id=uuid.uuid4().hex,
            tenant_key=tenant.key,
            requested_by=Actor("slack", "U1", "Sam"),
            invitation_email="admin@x.example",
            origin=Origin("slack", "C1"),
            created_at=NOW,
            expected_account="admin@x.example",
        )
        r.invite(uuid.uuid4().hex * 2, NOW + timedelta(days=7), "https://x", NOW)
        await uow.renewals.add(r)
        await uow.commit()
    finished = {
        "tenant_key": other.key,
        "state": "validated",
        "requested_by_platform": "slack",
        "requested_by_id": "U1",
        "requested_by_name": "Sam",
        "invitation_email": "a@x.example",
        "expected_account": "a@x.example",
        "origin_platform": "slack",
        "origin_channel": "C1",
        "created_at": NOW,
        "tokens_acquired": 1,
        "tokens_total": 1,
        "warnings": "",
        "version": 3,
    }
    async with own_engine.begin() as conn:
        await conn.execute(insert(renewals), [{**finished, "id": uuid.uuid4().hex}])
        await conn.execute(insert(renewals), [{**finished, "id": uuid.uuid4().hex}])
    async with SqlUnitOfWork(own_engine, box, read_only=True) as uow:
        assert await uow.renewals.count_by_state(open_only=True) == {RenewalState.INVITED: 1}
        everything = await uow.renewals.count_by_state()
    assert everything == {RenewalState.INVITED: 1, RenewalState.VALIDATED: 2}


async def test_newest_error_of_a_tenant_is_read_through_an_index(own_engine: AsyncEngine) -> None:
    """A tenant's newest identity error is found by an index on (tenant_key, at), not by reading
    every error the monitor ever recorded."""
    rows = [
        {
            "at": NOW - timedelta(minutes=i),
            "tenant_key": f"t{i % 500}",
            "code": "AADSTS700082",
            "error": "invalid_grant",
            "description": "expired",
            "correlation_id": "c",
            "source": "monitor",
        }
        for i in range(5000)
    ]
    async with own_engine.begin() as conn:
        await conn.execute(insert(msal_errors), rows)
    async with own_engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
    sql = "SELECT * FROM msal_errors WHERE tenant_key = 't7' ORDER BY at DESC, id DESC LIMIT 1"
    async with own_engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = [str(r[-1]) for r in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
        else:
            plan = [str(r[0]) for r in await conn.exec_driver_sql(f"EXPLAIN {sql}")]
    text = "\n".join(plan)
    assert "ix_msal_errors_tenant_at" in text, text
    assert "SCAN msal_errors" not in text and "Seq Scan" not in text, text
