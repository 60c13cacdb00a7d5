"""Group commit: many callers' small database calls served by one statement.

A caller awaits its own item; items that arrive while a batch is in flight wait for the next one,
so a lone call goes out at once and a crowd shares a round trip (the way databases group their
commits). The health sweep is the crowd: hundreds of checks each loading and saving one token
cache and recording one result, where a statement per item cost more CPU than the check itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
R = TypeVar("R")


class Coalescer(Generic[K, R]):
    """``await coalescer(item)`` runs ``run(items)`` over every item waiting at the time.

    ``run`` returns one result per item, in order; a result that is an exception is raised to its
    own caller only (one bad item need not fail the others). When ``run`` raises, every caller of
    that batch gets the exception; the next batch is unaffected. A caller cancelled before its
    batch went out drops nothing: the item still goes (as a request already sent would), only
    the answer is not awaited.
    """

    def __init__(
        self, run: Callable[[list[K]], Awaitable[Sequence[R | Exception]]], limit: int = 500
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._run = run
        self._limit = limit
        self._waiting: list[tuple[K, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0

    async def __call__(self, item: K) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._limit]
            del self._waiting[: self._limit]
            self.batches += 1
            try:
                results = await self._run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} items")
            except Exception as exc:  # every caller of the batch hears of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutdown): the callers are told, then stop
                for _, future in batch + self._waiting:
                    future.cancel()
                self._waiting.clear()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
