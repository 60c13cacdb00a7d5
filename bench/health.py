"""Token health at scale (issue 18, item 6): a sweep of N tenants against a distant identity
provider, and `status` over many tenants (bench/status.py), both on PostgreSQL.

Sweep: the sandbox runs in its own process with ``--latency`` added to every request; each tenant
gets a real refresh token (the sandbox's load-test grant, stored through MSAL's cache) before the
clock starts. The monitor then sweeps them as deployed: MSAL over HTTPS, the deployed pools,
concurrency and batch. Between repeats every tenant is made due again. The anchor, in the same run
and against the same sandbox: the same number of token answers fetched by a bare aiohttp client
at the same concurrency (the load-test grant: a signed token response like a refresh's), the
floor no sweep can beat. Must not be imported by the product.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import statistics
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msal
import requests
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox, generate_key
from adapters.storage.database import make_engine, upgrade
from adapters.storage.tables import tenants as tenants_table
from adapters.storage.token_cache import SqlTokenCacheStore
from adapters.storage.unit_of_work import SqlUnitOfWork
from bench import status as status_bench
from bench.flows import CLIENT_ID, SandboxProcess, SystemClock, load_tenant
from bench.local import spread
from bot.bootstrap import Core, compose
from bot.settings import IdentitySettings, MonitorSettings
from core.chat import ChatRouter
from core.health import MonitorConfig
from core.services import ServiceConfig

GRAPH = ["https://graph.microsoft.com/.default"]
SWEEP_GOAL_S = 45.0
STATUS_GOAL_MS = 100.0


def _seed_cache(sb: SandboxProcess, session: requests.Session, i: int) -> tuple[str, str]:
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
    return tenant.tenant_id, cache.serialize()


@dataclass
class Sweeper:
    """N seeded tenants, the sandbox, and the monitor composed as deployed."""

    n: int
    sb: SandboxProcess
    engine: AsyncEngine
    box: SecretBox
    concurrency: int = field(default_factory=lambda: MonitorSettings().concurrency)

    def compose(self) -> tuple[Core, Any]:
        """The monitor as a freshly started process has it: its identity adapter's metadata
        cache is empty, as after a restart (each tenant's authority is fetched once)."""
        from adapters.identity.msal_provider import MsalIdentityProvider

        identity = MsalIdentityProvider(
            authority_host=self.sb.authority,
            client_id=CLIENT_ID,
            token_sets={"graph": GRAPH},
            graph_url=self.sb.authority,
            cache_store=SqlTokenCacheStore(self.engine, self.box),
            clock=SystemClock(),
            ca_bundle=self.sb.ca,
            pool_size=IdentitySettings().pool_size,  # as deployed
            check_pool_size=MonitorSettings().pool_size,
        )
        core = compose(
            uow=functools.partial(SqlUnitOfWork, self.engine, self.box),
            identity=identity,
            threads=ChatRouter(),
            clock=SystemClock(),
            config=ServiceConfig(public_url="https://bench.invalid"),
            monitor=MonitorConfig(concurrency=self.concurrency),  # batch as deployed
        )
        return core, identity

    async def sweep(self) -> float:
        """Every tenant due and unknown again, then one sweep; its seconds."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(tenants_table).values(
                    next_check_at=None, check_lease_until=None, auth_state="unknown"
                )
            )
        core, identity = self.compose()
        try:
            started = time.perf_counter()
            result = await core.monitor.sweep()
            elapsed = time.perf_counter() - started
        finally:
            await identity.close()
        assert result.checked == self.n and result.failures == 0, result
        return elapsed

    async def floor(self) -> float:
        """N token answers to a bare aiohttp client, ``concurrency`` at a time; its seconds."""
        gate = asyncio.Semaphore(self.concurrency)
        tls = ssl.create_default_context(cafile=self.sb.ca)
        connector = aiohttp.TCPConnector(ssl=tls, limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:

            async def one(i: int) -> None:
                url = f"{self.sb.authority}/{load_tenant(i).tenant_id}/_sandbox/grant"
                async with gate, http.post(url, data={"client_id": CLIENT_ID}) as resp:
                    assert "refresh_token" in await resp.json()

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(1, self.n + 1)))
            return time.perf_counter() - started


@asynccontextmanager
async def sweeper(n: int, latency: float, database_url: str) -> AsyncIterator[Sweeper]:
    sb = SandboxProcess(5, n, latency)
    engine = make_engine(database_url)
    box = SecretBox([generate_key()])
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            now = SystemClock().now()
            rows = [
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
            ]
            for start in range(0, n, 5000):
                await conn.execute(insert(tenants_table), rows[start : start + 5000])
        session = requests.Session()
        session.trust_env = False
        session.verify = sb.ca
        store = SqlTokenCacheStore(engine, box)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(16) as pool:
            seeded = await asyncio.gather(
                *(loop.run_in_executor(pool, _seed_cache, sb, session, i) for i in range(1, n + 1))
            )
        for tid, blob in seeded:
            await store.save(tid, blob)
        yield Sweeper(n, sb, engine, box)
    finally:
        await engine.dispose()
        sb.stop()


async def main(
    tenants: int, status_tenants: int, latency: float, repeats: int = 3
) -> list[tuple[str, ...]]:
    """Both scale rows of the goals table (path, anchor, renewbot, ratio, goal, met) on a
    PostgreSQL server started for the bench; anchor and renewbot alternate in each repeat."""
    from tests.servers.postgres import fresh_database, postgres_server

    with postgres_server() as server:
        floors: list[float] = []
        sweeps: list[float] = []
        async with sweeper(tenants, latency, await fresh_database(server)) as s:
            for _ in range(repeats):
                floors.append(await s.floor())
                sweeps.append(await s.sweep())
        answered = await status_bench.measure(status_tenants, await fresh_database(server), repeats)
    f_med, s_med = statistics.median(floors), statistics.median(sweeps)
    sweep_row = (
        f"sweep of {tenants:,} tenants, IdP +{latency * 1000:.0f} ms per request, s "
        f"(min / median / max; {tenants / s_med:.0f} tenants/s)",
        f"bare aiohttp, {s.concurrency} at a time {spread(floors)}",
        spread(sweeps),
        f"{s_med / f_med:.2f}x",
        f"<= {SWEEP_GOAL_S:.0f} s",
        "yes" if s_med <= SWEEP_GOAL_S else "no",
    )
    return [sweep_row, status_bench.row(status_tenants, answered, STATUS_GOAL_MS)]


if __name__ == "__main__":  # the two rows alone: python -m bench.health --repeats 3
    import argparse
    import logging

    p = argparse.ArgumentParser(prog="python -m bench.health")
    p.add_argument("--tenants", type=int, default=10_000)
    p.add_argument("--status-tenants", type=int, default=50_000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    logging.disable(logging.WARNING)
    print("| path | anchor | renewbot | ratio | goal | met |\n|---|---|---|---|---|---|")
    for r in asyncio.run(main(a.tenants, a.status_tenants, a.latency, a.repeats)):
        print("| " + " | ".join(r) + " |")
