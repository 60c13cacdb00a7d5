"""`status` over many tenants on PostgreSQL (issue 18, item 6): the reply as a Slack user gets it.

N tenants (default 50,000) with the health a large MSP has: most healthy, some expiring, some
expired; each expired tenant with the monitor's errors of the last days (one of them "tokens
unreadable"), transient errors on others, a few hundred open renewals and years of finished
ones. `status` is answered through the desk (core.desk, core.views) on a read-only unit of work,
as the Slack and Teams adapters call it. The anchor, alternating with it in the same run: the
one statement any such answer needs, the count of tenants per state, sent raw over asyncpg.
Must not be imported by the product.
"""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import insert

from adapters.storage.crypto import SecretBox, generate_key
from adapters.storage.database import make_engine, upgrade
from adapters.storage.tables import msal_errors, renewals, tenants
from adapters.storage.unit_of_work import SqlUnitOfWork
from bench.flows import SystemClock
from bot.bootstrap import compose
from core.chat import ChatRouter
from core.model import Actor, Origin, Renewal
from core.services import ServiceConfig

CALLS = 200  # `status` answers per repeat: p99 of 200 is the second slowest
STATES = ["healthy"] * 18 + ["expiring", "expired"]


def _tenant(i: int, now: Any) -> dict[str, Any]:
    return {
        "key": f"s{i}",
        "slug": f"scale-{i}",
        "display_name": f"Scale {i}",
        "tenant_id": f"00000000-0000-4000-a000-{i:012d}",
        "primary_domain": f"scale-{i}.example",
        "admin_upn": f"admin@scale-{i}.example",
        "created_at": now,
        "auth_state": STATES[i % len(STATES)],
        "last_refresh_at": now - timedelta(days=i % 90),
    }


def _error(i: int, at: Any, code: str) -> dict[str, Any]:
    return {
        "at": at,
        "tenant_key": f"s{i}",
        "code": code,
        "error": "invalid_grant",
        "description": "AADSTS700082: The refresh token has expired due to inactivity.",
        "correlation_id": uuid.uuid4().hex,
        "source": "monitor",
    }


def _finished(i: int, now: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "tenant_key": f"s{i}",
        "state": "validated" if i % 7 else "cancelled",
        "requested_by_platform": "slack",
        "requested_by_id": "U-bench",
        "requested_by_name": "Bench",
        "invitation_email": f"admin@scale-{i}.example",
        "expected_account": f"admin@scale-{i}.example",
        "origin_platform": "slack",
        "origin_channel": "C-bench",
        "created_at": now - timedelta(days=i % 700),
        "tokens_acquired": 3,
        "tokens_total": 3,
        "warnings": "",
        "version": 5,
    }


async def seed(engine: Any, box: SecretBox, n: int) -> None:
    now = SystemClock().now()
    rows = [_tenant(i, now) for i in range(1, n + 1)]
    expired = [i for i in range(1, n + 1) if rows[i - 1]["auth_state"] == "expired"]
    errors = [
        _error(i, now - timedelta(days=d, minutes=i % 60), "AADSTS700082")
        for i in expired
        for d in range(3)
    ]
    errors += [_error(i, now, "token_cache_unreadable") for i in expired[::50]]
    errors += [_error(i, now - timedelta(hours=i % 48), "AADSTS50076") for i in range(3, n, 10)]
    finished = [_finished(i, now) for i in range(1, n + 1, 2)]
    async with engine.begin() as conn:
        for table, batch in ((tenants, rows), (msal_errors, errors), (renewals, finished)):
            for start in range(0, len(batch), 5000):
                await conn.execute(insert(table), batch[start : start + 5000])
    async with SqlUnitOfWork(engine, box) as uow:  # open renewals, as the service writes them
        for i in expired[:300]:
            r = Renewal(
                id=uuid.uuid4().hex,
                tenant_key=f"s{i}",
                requested_by=Actor("slack", "U-bench", "Bench"),
                invitation_email=f"admin@scale-{i}.example",
                origin=Origin("slack", "C-bench"),
                created_at=now,
                expected_account=f"admin@scale-{i}.example",
            )
            r.invite(uuid.uuid4().hex * 2, now + timedelta(days=7), "https://bench.invalid", now)
            await uow.renewals.add(r)
        await uow.commit()
    async with engine.begin() as conn:  # statistics, as autovacuum keeps them
        await conn.exec_driver_sql("ANALYZE")


async def measure(n: int, postgres_url: str, repeats: int = 3) -> dict[str, list[float]]:
    """p50 and p99 (ms) of ``CALLS`` `status` answers per repeat, and of the anchor's."""
    engine = make_engine(postgres_url)
    box = SecretBox([generate_key()])
    raw = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await upgrade(engine)
        await seed(engine, box, n)
        core = compose(
            uow=functools.partial(SqlUnitOfWork, engine, box),
            identity=None,  # type: ignore[arg-type]
            threads=ChatRouter(),
            clock=SystemClock(),
            config=ServiceConfig(public_url="https://bench.invalid"),
        )
        here, who = Origin("slack", "C-bench"), Actor("slack", "U-bench", "Bench")
        out: dict[str, list[float]] = {"p50": [], "p99": [], "anchor_p50": [], "anchor_p99": []}
        reply = (await core.desk.handle("status", here, who)).text  # warm: pool, statements
        assert f"{n:,} tenants" in reply or f"{n} tenants" in reply, reply[:200]
        count = "SELECT auth_state, count(*) FROM tenants GROUP BY auth_state"
        for _ in range(repeats):
            anchor, ours = [], []
            for _ in range(CALLS):
                t0 = time.perf_counter()
                await raw.fetch(count)
                anchor.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await core.desk.handle("status", here, who)
                ours.append((time.perf_counter() - t0) * 1000)
            for key, values in (("", ours), ("anchor_", anchor)):
                out[key + "p50"].append(statistics.median(values))
                out[key + "p99"].append(statistics.quantiles(values, n=100)[98])
        return out
    finally:
        await raw.close()
        await engine.dispose()


def row(n: int, m: dict[str, list[float]], goal_ms: float) -> tuple[str, ...]:
    """The goals-table row: p99 min / median / max over the repeats, and the p50s."""
    from bench.local import spread

    ours, anchor = statistics.median(m["p99"]), statistics.median(m["anchor_p99"])
    return (
        f"`status` over {n:,} tenants through the desk, p99 ms (min / median / max; "
        f"p50 {statistics.median(m['p50']):.1f})",
        f"count per state, raw asyncpg {spread(m['anchor_p99'])}",
        spread(m["p99"]),
        f"{ours / anchor:.2f}x",
        f"< {goal_ms:.0f} ms",
        "yes" if ours < goal_ms else "no",
    )
