"""Per-thread locks serialise posts in one thread and are gone once nobody uses them (a bot that
posted in a million threads keeps no million locks)."""

from __future__ import annotations

import asyncio

from core.locks import KeyedLocks


async def test_one_key_at_a_time_and_nothing_kept_after() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()
    t2_done = asyncio.Event()

    async def first() -> None:
        async with locks.hold("t1"):
            order.append("first in")
            inside.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        await inside.wait()
        async with locks.hold("t1"):
            order.append("second in")

    async def other_thread() -> None:
        await inside.wait()
        async with locks.hold("t2"):  # another thread does not wait
            order.append("t2")
        t2_done.set()

    tasks = [asyncio.create_task(f()) for f in (first, second, other_thread)]
    await inside.wait()
    await t2_done.wait()
    assert len(locks) == 1  # t1 held and awaited; t2 gone already
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "t2", "first out", "second in"]
    assert len(locks) == 0


async def test_a_failing_holder_frees_its_key() -> None:
    locks = KeyedLocks()
    try:
        async with locks.hold("t1"):
            raise RuntimeError("chat refused")
    except RuntimeError:
        pass
    assert len(locks) == 0
    async with locks.hold("t1"):
        assert len(locks) == 1
