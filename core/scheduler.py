"""The device-flow scheduler: polls every pending flow once per interval from one task.

A heap of due times is served by a single loop task; each due poll runs as a short task bounded by
a semaphore. Thousands of pending flows cost heap entries, not threads (the identity adapter's own
small pool does the blocking part). Only standard-library asyncio here.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections.abc import Awaitable, Callable

from core import logcontext

log = logging.getLogger("renewbot.scheduler")

Poll = Callable[[str], Awaitable[float | None]]


class DeviceFlowScheduler:
    """Calls ``poll(renewal_id)`` when due; ``poll`` returns the next delay or None (done)."""

    def __init__(self, poll: Poll, concurrency: int = 32, jitter: float = 0.2) -> None:
        self._poll = poll
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._jitter = jitter
        self._stopping = False

    def stop(self) -> None:
        """Finish the polls in flight, start no new ones, and let run() return."""
        self._stopping = True
        self._wake.set()

    def watch(self, renewal_id: str, delay: float) -> None:
        """Schedule the first (or next) poll in ``delay`` seconds, never sooner."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay + random.uniform(0, self._jitter)
        self._due[renewal_id] = due
        heapq.heappush(self._heap, (due, renewal_id))
        self._wake.set()

    def is_watching(self, renewal_id: str) -> bool:
        return renewal_id in self._due or renewal_id in self._running

    @property
    def pending(self) -> int:
        return len(self._due) + len(self._running)

    async def run(self) -> None:
        """Serve polls until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                self._wake.clear()
                now = loop.time()
                while self._heap and self._heap[0][0] <= now:
                    due, rid = heapq.heappop(self._heap)
                    if self._due.get(rid) != due or rid in self._running:
                        continue  # superseded by a later watch()
                    del self._due[rid]
                    self._running.add(rid)
                    task = asyncio.create_task(self._one(rid))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                timeout = self._heap[0][0] - loop.time() if self._heap else None
                # Not wait_for: on Python 3.11 it can swallow a cancel that arrives as the wait
                # ends, and run() then never stops (seen under load in bench/flows.py).
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self, renewal_id: str) -> None:
        delay: float | None = None
        logcontext.bind(renewal_id=renewal_id)  # this task's own context: every line of the step
        try:
            async with self._limit:
                delay = await self._poll(renewal_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # One broken flow must not stop the others; try again a little later.
            log.exception("scheduler.poll_failed", extra={"renewal_id": renewal_id})
            delay = 5.0
        finally:
            self._running.discard(renewal_id)
        if delay is not None and renewal_id not in self._due:
            self.watch(renewal_id, delay)
