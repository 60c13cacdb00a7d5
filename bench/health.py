"""Token health at scale: a sweep of N tenants against a distant identity provider, and `status`
over many tenants on PostgreSQL.

Sweep: the sandbox runs in its own process with ``--latency`` added to every request; each tenant
gets a real refresh token (the sandbox's load-test grant, stored through MSAL's cache) before the
clock starts. Status: N tenants inserted into the suite's own PostgreSQL, `status` answered
repeatedly through the desk.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msal
import requests
from sqlalchemy import insert

from adapters.storage.crypto import SecretBox, generate_key
from adapters.storage.database import make_engine, upgrade
from adapters.storage.tables import tenants as tenants_table
from adapters.storage.token_cache import SqlTokenCacheStore
from adapters.storage.unit_of_work import SqlUnitOfWork
from bench.flows import CLIENT_ID, SandboxProcess, SystemClock, load_tenant
from bot.bootstrap import compose
from bot.settings import IdentitySettings, MonitorSettings
from core.chat import ChatRouter
from core.health import MonitorConfig
from core.model import Actor, Origin
from core.services import ServiceConfig

GRAPH = ["https://graph.microsoft.com/.default"]


def _seed_cache(
    sb: SandboxProcess, session: requests.Session, http_cache: dict[Any, Any], i: int
) -> tuple[str, str]:
    tenant = load_tenant(i)
    token_url = f"{sb.authority}/{tenant.tenant_id}/oauth2/v2.0/token"
    resp = session.post(
        f"{sb.authority}/{tenant.tenant_id}/_sandbox/grant",
        data={"client_id": CLIENT_ID},
        timeout=30,
    )
    cache = msal.SerializableTokenCache()
    cache.add(
        {
            "client_id": CLIENT_ID,
            "scope": GRAPH,
            "token_endpoint": token_url,
            "response": resp.json(),
            "params": {},
            "data": {},
            "grant_type": "refresh_token",
        }
    )
    del http_cache
    return tenant.tenant_id, cache.serialize()


async def sweep(
    n: int, latency: float, concurrency: int, database_url: str | None = None
) -> dict[str, float]:
    sb = SandboxProcess(5, n, latency)
    workdir = Path(tempfile.mkdtemp(prefix="renewbot-health-"))
    engine = make_engine(database_url or f"sqlite+aiosqlite:///{workdir}/health.db")
    box = SecretBox([generate_key()])
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            now = SystemClock().now()
            await conn.execute(
                insert(tenants_table),
                [
                    {
                        "key": t.key,
                        "slug": t.slug,
                        "display_name": t.display_name,
                        "tenant_id": t.tenant_id,
                        "primary_domain": t.primary_domain,
                        "admin_upn": t.admin_upn,
                        "created_at": now,
                        "auth_state": "unknown",
                    }
                    for t in (load_tenant(i) for i in range(1, n + 1))
                ],
            )
        session = requests.Session()
        session.trust_env = False
        session.verify = sb.ca
        store = SqlTokenCacheStore(engine, box)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(16) as pool:
            seeded = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, _seed_cache, sb, session, {}, i)
                    for i in range(1, n + 1)
                )
            )
        for tid, blob in seeded:
            await store.save(tid, blob)
        from adapters.identity.msal_provider import MsalIdentityProvider

        identity = MsalIdentityProvider(
            authority_host=sb.authority,
            client_id=CLIENT_ID,
            token_sets={"graph": GRAPH},
            graph_url=sb.authority,
            cache_store=store,
            clock=SystemClock(),
            ca_bundle=sb.ca,
            pool_size=IdentitySettings().pool_size,  # as deployed
            check_pool_size=MonitorSettings().pool_size,
        )
        core = compose(
            uow=functools.partial(SqlUnitOfWork, engine, box),
            identity=identity,
            threads=ChatRouter(),
            clock=SystemClock(),
            config=ServiceConfig(public_url="https://bench.invalid"),
            monitor=MonitorConfig(concurrency=concurrency, batch=500),
        )
        started = time.perf_counter()
        result = await core.monitor.sweep()
        elapsed = time.perf_counter() - started
        await identity.close()
        return {
            "seconds": elapsed,
            "checked": result.checked,
            "healthy": result.states.get(next(iter(result.states)), 0) if result.states else 0,
            "failures": result.failures,
        }
    finally:
        await engine.dispose()
        sb.stop()


async def status(n: int, postgres_url: str, repeats: int = 30) -> dict[str, float]:
    engine = make_engine(postgres_url)
    box = SecretBox([generate_key()])
    try:
        await upgrade(engine)
        now = SystemClock().now()
        states = ["healthy"] * 18 + ["expiring", "expired"]
        rows = [
            {
                "key": f"s{i}",
                "slug": f"scale-{i}",
                "display_name": f"Scale {i}",
                "tenant_id": f"00000000-0000-4000-a000-{i:012d}",
                "primary_domain": f"scale-{i}.example",
                "admin_upn": f"admin@scale-{i}.example",
                "created_at": now,
                "auth_state": states[i % len(states)],
                "last_refresh_at": now,
            }
            for i in range(1, n + 1)
        ]
        async with engine.begin() as conn:
            for start in range(0, n, 5000):
                await conn.execute(insert(tenants_table), rows[start : start + 5000])
        core = compose(
            uow=functools.partial(SqlUnitOfWork, engine, box),
            identity=None,  # type: ignore[arg-type]
            threads=ChatRouter(),
            clock=SystemClock(),
            config=ServiceConfig(public_url="https://bench.invalid"),
        )
        here, who = Origin("bench", "c"), Actor("bench", "u")
        timings = []
        reply = ""
        for _ in range(repeats):
            t0 = time.perf_counter()
            reply = (await core.desk.handle("status", here, who)).text
            timings.append((time.perf_counter() - t0) * 1000)
        assert f"{n} tenants" in reply, reply[:200]
        return {
            "p50_ms": statistics.median(timings),
            "p99_ms": statistics.quantiles(timings, n=100)[98],
            "tenants": n,
        }
    finally:
        await engine.dispose()


async def main(tenants: int, status_tenants: int, latency: float) -> list[tuple[str, ...]]:
    """Both scale rows on a PostgreSQL server started for the bench."""
    from tests.servers.postgres import fresh_database, postgres_server

    with postgres_server() as server:
        concurrency = MonitorSettings().concurrency  # as deployed
        swept = await sweep(tenants, latency, concurrency, await fresh_database(server))
        answered = await status(status_tenants, await fresh_database(server))
    per_s = swept["checked"] / swept["seconds"]
    return [
        (
            f"sweep of {tenants:,} tenants, IdP +{latency * 1000:.0f} ms per request",
            "<= 60 s",
            f"{swept['seconds']:.1f} s ({per_s:.0f} tenants/s, {swept['failures']:.0f} failures)",
            "yes" if swept["seconds"] <= 60 else "no",
        ),
        (
            f"`status` over {status_tenants:,} tenants, p50 / p99",
            "< 200 ms",
            f"{answered['p50_ms']:.1f} / {answered['p99_ms']:.1f} ms",
            "yes" if answered["p99_ms"] < 200 else "no",
        ),
    ]
