"""Group commit: callers who arrive together share one run, and each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from core.batching import Coalescer


class Recorder:
    def __init__(self) -> None:
        self.runs: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def run(self, items: list[int]) -> list[int | Exception]:
        self.runs.append(items)
        self.started.set()
        await self.gate.wait()
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_a_lone_call_goes_at_once() -> None:
    rec = Recorder()
    assert await Coalescer(rec.run)(4) == 40
    assert rec.runs == [[4]]


async def test_callers_arriving_while_a_batch_is_out_share_the_next_one() -> None:
    rec = Recorder()
    rec.gate.clear()
    batch = Coalescer(rec.run)
    first = asyncio.create_task(batch(1))
    await rec.started.wait()  # the first batch is out, held at the gate
    rest = [asyncio.create_task(batch(i)) for i in range(2, 7)]
    rec.gate.set()  # the waiting callers get in line before the first batch returns
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert rec.runs == [[1], [2, 3, 4, 5, 6]]


async def test_limit_splits_a_crowd() -> None:
    rec = Recorder()
    batch = Coalescer(rec.run, limit=2)
    assert await asyncio.gather(*(batch(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert [len(r) for r in rec.runs] == [2, 2, 1]


async def test_one_bad_item_fails_only_its_caller() -> None:
    rec = Recorder()
    batch = Coalescer(rec.run)
    results = await asyncio.gather(batch(1), batch(-1), batch(2), return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -1"


async def test_a_failed_batch_reaches_every_caller_and_the_next_batch_works() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return list[int | Exception](items)

    batch = Coalescer(flaky)
    results = await asyncio.gather(batch(1), batch(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await batch(3) == 3


async def test_a_run_that_loses_answers_is_an_error_not_a_hang() -> None:
    async def short(items: list[int]) -> list[int | Exception]:
        return list[int | Exception](items[:-1])

    batch = Coalescer(short)
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        await asyncio.gather(batch(1), batch(2), batch(3))
