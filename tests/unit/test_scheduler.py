"""The device-flow scheduler: one task serves every pending flow, each at its own pace."""

from __future__ import annotations

import asyncio

from core.scheduler import DeviceFlowScheduler


async def test_each_flow_polled_at_its_interval_until_done() -> None:
    """Flows are polled again after the delay they asked for, and dropped when done."""
    loop = asyncio.get_running_loop()
    seen: dict[str, list[float]] = {"a": [], "b": []}
    finished = asyncio.Event()

    async def poll(rid: str) -> float | None:
        seen[rid].append(loop.time())
        if len(seen["a"]) >= 3 and len(seen["b"]) >= 2:
            finished.set()
        if rid == "b" and len(seen["b"]) >= 2:
            return None
        return 0.02 if rid == "a" else 0.05

    scheduler = DeviceFlowScheduler(poll, jitter=0.0)
    task = asyncio.create_task(scheduler.run())
    scheduler.watch("a", 0.0)
    scheduler.watch("b", 0.0)
    await asyncio.wait_for(finished.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    gaps_a = [y - x for x, y in zip(seen["a"], seen["a"][1:], strict=False)]
    assert min(gaps_a) >= 0.02
    assert seen["b"][1] - seen["b"][0] >= 0.05
    assert len(seen["b"]) == 2  # done flows are not polled again


async def test_failing_poll_does_not_stop_other_flows() -> None:
    """One broken flow is retried later; the others keep going."""
    ok = asyncio.Event()

    async def poll(rid: str) -> float | None:
        if rid == "bad":
            raise RuntimeError("boom")
        ok.set()
        return None

    scheduler = DeviceFlowScheduler(poll, jitter=0.0)
    task = asyncio.create_task(scheduler.run())
    scheduler.watch("bad", 0.0)
    scheduler.watch("good", 0.01)
    await asyncio.wait_for(ok.wait(), 5)
    assert scheduler.pending >= 1  # "bad" is scheduled again
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_run_stops_when_cancelled_just_as_it_is_woken() -> None:
    """A stop that arrives in the same turn as a new flow must still stop the scheduler.

    On Python 3.11, ``asyncio.wait_for`` returns the inner result instead of raising when the
    cancel and the wake-up land together, and the scheduler then ran on forever (seen at 5,000
    flows in bench/flows.py)."""

    async def poll(renewal_id: str) -> float | None:
        return None

    scheduler = DeviceFlowScheduler(poll, jitter=0.0)
    scheduler.watch("later", 60.0)  # a due time ahead: run() waits with a timeout
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0)  # one turn of the loop: run() parks on its wait
    scheduler.watch("new", 60.0)  # wakes run() ...
    task.cancel()  # ... in the same turn as the stop
    async with asyncio.timeout(5):  # a deadline, not a wait: without the fix this hangs
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
