"""The tenant lookup of every `/renew-token <ref>` uses indexes, on SQLite and PostgreSQL.

A command names a tenant by slug, display name, primary domain or tenant id, in any case; the
repository compares lower(column) with the lower-cased reference. Without an index on each of
those expressions, every command read the whole tenants table (issue 18: 30,000 tenants).

The plans are the databases' own (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN) for the
statement the repository runs, over a table of a few thousand tenants with fresh statistics, so
each planner picks what it would pick in production: a tiny table is cheaper to scan, and a plan
forced with ``enable_seqscan = off`` would not say what production does.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.tables import tenants
from adapters.storage.tenants import FIND_TENANT
from adapters.storage.unit_of_work import SqlUnitOfWork

TENANTS = 3000
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def row(i: int) -> dict[str, object]:
    return {
        "key": f"key-{i}",
        "slug": f"contoso-{i}",
        "display_name": f"Contoso Branch {i} GmbH",
        "tenant_id": f"7d3f0c2e-0000-4000-a000-{i:012d}",
        "primary_domain": f"branch{i}.contoso.example",
        "admin_upn": f"admin@branch{i}.contoso.example",
        "created_at": NOW,
        "auth_state": "healthy",
    }


# What a person types for tenant 1234, in the case they happen to type it.
REFERENCES = {
    "slug": "Contoso-1234",
    "display_name": "CONTOSO branch 1234 gmbh",
    "primary_domain": "Branch1234.Contoso.EXAMPLE",
    "tenant_id": "7D3F0C2E-0000-4000-A000-000000001234",
}


async def plan(conn: AsyncConnection, ref: str) -> str:
    """The database's own plan for the repository's lookup statement with this reference."""
    compiled = FIND_TENANT.compile(dialect=conn.dialect)
    values = {**compiled.params, "b_ref": ref.lower()}  # as find_exact binds it
    args = tuple(values[name] for name in compiled.positiontup or ())
    if conn.dialect.name == "sqlite":
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)
        return "\n".join(str(r[-1]) for r in rows)
    rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", args)
    return "\n".join(str(r[0]) for r in rows)


async def seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(tenants), [row(i) for i in range(TENANTS)])
    async with engine.begin() as conn:  # statistics, as autovacuum / a maintained db has them
        await conn.exec_driver_sql("ANALYZE")


@pytest.mark.parametrize("kind", list(REFERENCES))
async def test_each_kind_of_tenant_reference_is_found_through_an_index(
    own_engine: AsyncEngine, box: SecretBox, kind: str
) -> None:
    """A slug, name, domain or tenant id typed in any case finds its tenant by an index probe,
    never by reading every tenant."""
    await seed(own_engine)
    ref = REFERENCES[kind]
    async with SqlUnitOfWork(own_engine, box, read_only=True) as uow:
        found = await uow.tenants.find_exact(ref)
    assert found is not None and found.slug == "contoso-1234", (ref, found)
    async with own_engine.connect() as conn:
        found_plan = await plan(conn, ref)
    assert f"ix_tenants_lower_{kind}" in found_plan, found_plan
    assert "SCAN tenants" not in found_plan and "Seq Scan" not in found_plan, found_plan


async def test_lookup_plan_shows_a_scan_when_an_index_is_missing(
    own_engine: AsyncEngine,
) -> None:
    """The plan reading above can fail: without the display-name index the same statement
    reads the whole table on both databases."""
    await seed(own_engine)
    async with own_engine.begin() as conn:
        await conn.exec_driver_sql("DROP INDEX ix_tenants_lower_display_name")
    async with own_engine.connect() as conn:
        found_plan = await plan(conn, REFERENCES["display_name"])
    assert "SCAN tenants" in found_plan or "Seq Scan" in found_plan, found_plan
