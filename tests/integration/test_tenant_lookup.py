"""The tenant lookup of every `/renew-token <ref>` uses indexes, on SQLite and PostgreSQL.

A command names a tenant by slug, display name, primary domain or tenant id, in any case; the
repository compares lower(column) with the lower-cased reference. Without an index on each of
those expressions, every command read the whole tenants table (issue 18: 30,000 tenants).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.tenants import _FIND_TENANT


async def plan(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        compiled = _FIND_TENANT.compile(dialect=conn.dialect)
        values = {**compiled.params, "b_ref": "contoso"}
        args = tuple(values[name] for name in compiled.positiontup or ())
        if conn.dialect.name == "sqlite":
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)
            return "\n".join(str(r[-1]) for r in rows)
        # a small table may be cheaper to scan: ask whether the indexes can serve the query
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        rows = await conn.exec_driver_sql(f"EXPLAIN {compiled}", args)
        return "\n".join(str(r[0]) for r in rows)


async def test_tenant_lookup_probes_an_index_for_each_name(engine: AsyncEngine) -> None:
    """Slug, name, domain and tenant id each reach the tenant through an index, not a scan."""
    found = await plan(engine)
    for column in ("slug", "display_name", "primary_domain", "tenant_id"):
        assert f"ix_tenants_lower_{column}" in found, found
    assert "SCAN tenants" not in found and "Seq Scan" not in found, found
