"""CPU per renewal of renewbot's core and storage, on PostgreSQL, chat answered at once.

Run from a checkout (its code is what is measured: the checkout's directory comes first on the
path), by ``python -m bench.ab`` for a before/after of two commits. Each round: ``--renewals``
renewals requested ``--concurrency`` at a time through the desk, as a chat adapter would, until
every thread has its Auth URL and the outbox is empty again, with the outbox's dispatcher running
as in ``renewbot serve``. Prints one JSON line: CPU ms per renewal of each round after a warm-up
round. No HTTP and no Slack client: this isolates what the storage and the core cost, the part a
change of either moves; ``bench.wrk`` measures the whole path from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime

sys.path.insert(0, os.getcwd())  # the checkout under measurement, before this file's own


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


async def measure(renewals: int, concurrency: int, rounds: int) -> list[float]:
    from adapters.storage.crypto import SecretBox, generate_key
    from adapters.storage.database import make_engine, upgrade
    from adapters.storage.unit_of_work import SqlUnitOfWork
    from bot.bootstrap import compose
    from core.services import ServiceConfig
    from tests.fakes.core import FakeIdentityProvider, FrozenClock, RecordingChatThreads
    from tests.fakes.refs import random_tenant
    from tests.integration.live import HERE, SUPPORT
    from tests.servers.postgres import fresh_database, postgres_server

    with postgres_server() as server:
        url = await fresh_database(server)
        os.sched_setaffinity(0, {0})  # PostgreSQL (started above) keeps the other core
        engine = make_engine(url)
        await upgrade(engine)
        box = SecretBox([generate_key()])

        def uow(read_only: bool = False, one_write: bool = False) -> SqlUnitOfWork:
            return SqlUnitOfWork(engine, box, read_only, one_write)

        tenants = [random_tenant(f"t{i}") for i in range(renewals * (rounds + 1))]
        async with uow() as u:
            for t in tenants:
                await u.tenants.add(t)
            await u.commit()
        async with engine.begin() as conn:  # statistics, as a database in service has
            await conn.exec_driver_sql("ANALYZE")
        chat = RecordingChatThreads()
        core = compose(
            uow=uow,
            identity=FakeIdentityProvider(FrozenClock()),
            threads=chat,
            clock=_Clock(),
            config=ServiceConfig(public_url="https://bot.test"),
        )
        stopping = asyncio.Event()
        runner = asyncio.create_task(core.dispatcher.run(stopping))
        while core.dispatcher.lease_new() is None:  # running
            await asyncio.sleep(0.01)
        gate = asyncio.Semaphore(concurrency)

        async def one(slug: str) -> None:
            async with gate:
                await core.desk.handle(slug, HERE, SUPPORT)

        def posted() -> int:
            return sum("/onboard/" in text for text in chat.texts())

        async def emptied() -> bool:
            async with SqlUnitOfWork(engine, box, read_only=True) as u:
                return (await u.outbox.stats())["pending"] == 0

        results = []
        for r in range(rounds + 1):  # the first warms the pool and the statement caches
            batch = tenants[r * renewals : (r + 1) * renewals]
            before = posted()
            cpu = time.process_time()
            await asyncio.gather(*(one(t.slug) for t in batch))
            deadline = time.monotonic() + 120
            while (posted() < before + renewals or not await emptied()) and (
                time.monotonic() < deadline
            ):
                await asyncio.sleep(0.002)
            if posted() < before + renewals:
                raise SystemExit("Auth URLs missing after 120 s")
            if r:
                results.append(1000 * (time.process_time() - cpu) / renewals)
        stopping.set()
        await runner
        await engine.dispose()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--renewals", type=int, default=300, help="renewals per round")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    ms = asyncio.run(measure(a.renewals, a.concurrency, a.rounds))
    print(json.dumps({"cpu_ms": ms}), flush=True)


if __name__ == "__main__":
    main()
