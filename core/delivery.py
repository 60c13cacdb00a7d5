"""The outbox dispatcher: delivers stored chat messages per conversation, in order, paced.

Every post, status update and announcement is a row in the outbox (core.notifications puts it
there). One task per conversation this process holds the lease of sends the conversation's rows
oldest first, waiting for the platform's pace (a token bucket per pacing key, e.g. one per Slack
channel), and removes each row once the platform took it. A rate limit (429) waits Retry-After and
tries the same row again; a transient failure backs off exponentially (the row stays, the lease is
given up, any replica may retry later); a permanent refusal keeps the row as failed and reports it
in the alert channel(s) of the other conversations and in /metrics, never only in the log.

Guarantee: at least once, in order per conversation. A row is deleted only after the platform
accepted it, so a crash or restart loses nothing. A crash between the platform's acceptance and
the delete sends that one message again, unless the adapter can tell it arrived (Slack: the row id
travels as message metadata and is looked up before a resend, see ``DeliveryCheck``); Teams has no
such lookup, so there a crash in that window can show one message twice. Status updates are
"latest wins": a newer status replaces an older one still waiting. Must not know any chat
platform's API: pacing keys and limits come from the composition root.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from core.chat import ChatRouter
from core.errors import ChatDeliveryError, ChatRateLimitedError, ChatRejectedError, StorageError
from core.lru import BoundedCache
from core.model import ThreadRef
from core.ports import ChatThreads, Clock, Message, Outgoing, UnitOfWorkFactory

log = logging.getLogger("renewbot.outbox")

BatchSummary = Callable[[str], Awaitable[Message | None]]
REPORT_AFTER = 8  # transient failures of one message before a person is told it is stuck


def thread_conversation(thread: ThreadRef) -> str:
    return f"{thread.platform}:{thread.key}"


def alerts_conversation(platform: str) -> str:
    return f"{platform}!alerts"


def undeliverable(item: Outgoing, reason: str, stuck: bool = False) -> str:
    where = "the alert channel" if item.kind == "announce" else "a renewal thread"
    platform = item.platform.capitalize() or "The chat platform"
    if stuck:
        return (
            f"Messages to {where} on {platform} are not getting through ({reason}); renewbot "
            "keeps trying. Check the platform's status and the bot's credentials."
        )
    return (
        f"A message to {where} on {platform} could not be delivered: {reason}. Check that the "
        "bot is still a member of that channel or conversation."
    )


class StatusMemo:
    """The status message last shown per thread, so an unchanged status is not sent again."""

    def __init__(self, size: int = 10_000) -> None:
        self._shown: BoundedCache[ThreadRef, Message] = BoundedCache(size)

    def shown(self, thread: ThreadRef, message: Message) -> bool:
        return self._shown.get(thread) == message

    def remember(self, thread: ThreadRef, message: Message) -> None:
        self._shown.put(thread, message)


@dataclass(frozen=True)
class Pace:
    """A platform's documented sending limit: ``rate`` messages a second, bursts of ``burst``,
    counted per ``key`` of a message (e.g. its channel; the conversation by default)."""

    rate: float
    burst: int = 1
    key: Callable[[Outgoing], str] = field(default=lambda item: item.conversation)


UNPACED = Pace(rate=1e6, burst=1_000_000)


class _Bucket:
    def __init__(self, pace: Pace, now: float) -> None:
        self.pace, self.tokens, self.at = pace, float(pace.burst), now
        self.lock = asyncio.Lock()
        self.hold_until = 0.0

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        async with self.lock:
            while True:
                now = loop.time()
                self.tokens = min(self.pace.burst, self.tokens + (now - self.at) * self.pace.rate)
                self.at = now
                wait = max(self.hold_until - now, (1 - self.tokens) / self.pace.rate)
                if wait <= 0:
                    self.tokens -= 1
                    return
                await asyncio.sleep(wait)


@dataclass
class DeliveryTotals:
    delivered: int = 0
    rate_limited: int = 0
    retried: int = 0
    failed: int = 0


class Dispatcher:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        threads: ChatThreads,
        clock: Clock,
        *,
        summarize: BatchSummary | None = None,
        memo: StatusMemo | None = None,
        pacing: dict[str, Pace] | None = None,
        lease: timedelta = timedelta(seconds=30),
        poll_every: float = 1.0,
        max_backoff: float = 300.0,
        concurrency: int = 50,
        owner: str | None = None,
    ) -> None:
        self.uow, self.threads, self.clock = uow, threads, clock
        self.summarize = summarize
        self.memo = memo or StatusMemo()
        self.pacing = dict(pacing or {})
        self.lease, self.poll_every, self.max_backoff = lease, poll_every, max_backoff
        self.concurrency = concurrency  # conversations this process serves at once
        self.owner = owner or uuid.uuid4().hex
        self.totals = DeliveryTotals()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._reported: BoundedCache[tuple[str, str], bool] = BoundedCache(1000)

    def wake(self) -> None:
        """New rows were committed: claim them now rather than at the next poll."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Claim and serve conversations until ``stopping`` is set (or cancelled)."""
        stopping = stopping or asyncio.Event()
        try:
            while not stopping.is_set():
                self._wake.clear()
                try:
                    for conversation in await self._claim():
                        if conversation not in self._active:
                            self._active[conversation] = asyncio.create_task(
                                self._serve(conversation), name=f"outbox:{conversation}"
                            )
                            self._active[conversation].add_done_callback(self._done)
                except StorageError:
                    log.warning("outbox.claim_failed")
                await _first(self._wake, stopping, self.poll_every)
        finally:
            # Stop gracefully: each conversation finishes the message in hand and gives its
            # lease up (a task cancelled inside a database call can wedge aiosqlite at exit).
            self._stopping = True
            tasks = list(self._active.values())
            if tasks and stopping.is_set():  # a stop, not a cancellation: finish gracefully
                await asyncio.wait(tasks, timeout=5.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active = {c: t for c, t in self._active.items() if t is not task}
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox.serve_failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Deliver everything deliverable now, in this task (one-shot runs and the unit tests)."""
        while fresh := [c for c in await self._claim() if c not in self._active]:
            for conversation in fresh:
                await self._serve(conversation)

    async def _claim(self) -> list[str]:
        now = self.clock.now()
        async with self.uow() as uow:
            limit = max(0, self.concurrency - len(self._active))
            if not limit:
                return []
            taken = await uow.outbox.claim(self.owner, now, now + self.lease, limit)
            await uow.commit()
        return taken

    async def _serve(self, conversation: str) -> None:
        """Send the conversation's rows until it is empty, or must wait; then give it up."""
        wait: float | None = None
        error = ""
        try:
            while not self._stopping and wait is None:
                async with self.uow(read_only=True) as uow:
                    items = await uow.outbox.head(conversation, 20)
                if not items:
                    break
                for item in items:
                    wait, error = await self._one(item)
                    if wait is not None:
                        break
        finally:
            not_before = None if wait is None else self.clock.now() + timedelta(seconds=wait)
            async with self.uow() as uow:
                await uow.outbox.release(conversation, self.owner, not_before, error)
                await uow.commit()

    async def _one(self, item: Outgoing) -> tuple[float | None, str]:
        """Deliver one row. Returns (seconds to back off, why) or (None, "") to go on."""
        attempts = item.attempts
        maybe_sent = attempts > 0  # an earlier try may have reached the platform (a crash)
        while True:
            if item.kind == "status" and item.thread and item.message:
                if self.memo.shown(item.thread, item.message):
                    await self._delivered(item.id)
                    return None, ""
            await self._bucket(item).take()
            if self._stopping:
                return 0.0, ""
            if not await self._attempt(item):
                return 0.0, "lease lost"  # another process serves it now: stop here
            attempts += 1
            try:
                if not (maybe_sent and await self._arrived(item)):
                    await self._send(item)
            except ChatRateLimitedError as exc:
                maybe_sent = False  # a 429 took nothing
                self.totals.rate_limited += 1
                self._bucket(item).hold_until = asyncio.get_running_loop().time() + exc.retry_after
                if exc.retry_after > self.lease.total_seconds() / 3:
                    return exc.retry_after, str(exc)
                continue  # the bucket waits out Retry-After; the lease is renewed on retry
            except ChatRejectedError as exc:
                await self._failed(item.id, exc.reason)
                await self._report(item, exc.reason)
                return None, ""
            except ChatDeliveryError as exc:
                self.totals.retried += 1
                if attempts == REPORT_AFTER:
                    await self._report(item, str(exc), stuck=True)
                backoff = min(self.max_backoff, 2 ** min(attempts, 16))
                return random.uniform(backoff / 2, backoff), str(exc)
            await self._delivered(item.id)
            self.totals.delivered += 1
            return None, ""

    def _bucket(self, item: Outgoing) -> _Bucket:
        pace = self.pacing.get(item.platform)
        if pace is None or item.kind == "status":  # updates are not posts: not paced as posts
            pace, key = UNPACED, ""
        else:
            key = pace.key(item)
        found = self._buckets.get((item.platform, key))
        if found is None or found.pace is not pace:
            found = _Bucket(pace, asyncio.get_running_loop().time())
            self._buckets[(item.platform, key)] = found
        return found

    async def _attempt(self, item: Outgoing) -> bool:
        until = self.clock.now() + self.lease
        async with self.uow() as uow:
            mine = await uow.outbox.attempt(item.id, item.conversation, self.owner, until)
            await uow.commit()
        return mine

    async def _delivered(self, item_id: int) -> None:
        async with self.uow() as uow:
            await uow.outbox.delivered(item_id)
            await uow.commit()

    async def _failed(self, item_id: int, reason: str) -> None:
        async with self.uow() as uow:
            await uow.outbox.failed(item_id, reason, self.clock.now())
            await uow.commit()

    def _adapter(self, platform: str) -> ChatThreads:
        if isinstance(self.threads, ChatRouter) and platform:
            found = self.threads.platforms.get(platform)
            if found is None:
                raise ChatRejectedError("no_adapter", f"({platform} is not configured)")
            return found
        return self.threads

    async def _arrived(self, item: Outgoing) -> bool:
        """Before a resend: did the earlier attempt reach the platform after all?"""
        check = getattr(self._adapter(item.platform), "was_delivered", None)
        if check is None or item.kind == "status" or item.message is None:
            return False  # a status update is idempotent: sending it again is harmless
        try:
            return bool(await check(item.thread, item.message.ref))
        except ChatDeliveryError:
            return False

    async def _send(self, item: Outgoing) -> None:
        message = item.message
        if message is None and item.batch and self.summarize is not None:
            message = await self.summarize(item.batch)
        if message is None:
            return
        adapter = self._adapter(item.platform)
        if item.kind == "announce":
            await adapter.announce(replace(message, ref=str(item.id)))
            return
        if item.thread is None:
            raise ChatRejectedError("no_thread")
        if item.kind == "post":
            await adapter.post(item.thread, replace(message, ref=str(item.id)))
        else:
            await adapter.update_status(item.thread, message)
            self.memo.remember(item.thread, message)

    async def _report(self, item: Outgoing, reason: str, stuck: bool = False) -> None:
        """Tell people: the alert channel(s) of every other conversation, and /metrics."""
        self.totals.failed += 0 if stuck else 1
        log.error("outbox.undeliverable", extra={"platform": item.platform, "reason": reason})
        if (item.conversation, reason) in self._reported:
            return  # one report per conversation and reason is enough (a dead channel)
        self._reported.put((item.conversation, reason), True)
        platforms = list(self.threads.platforms) if isinstance(self.threads, ChatRouter) else [""]
        text = undeliverable(item, reason, stuck)
        now = self.clock.now()
        async with self.uow() as uow:
            for platform in platforms:
                conversation = alerts_conversation(platform)
                if conversation != item.conversation:
                    report = Message(text, "error")
                    await uow.outbox.add(
                        Outgoing(conversation, "announce", platform, None, report), now
                    )
            await uow.commit()
        self.wake()


async def _first(event: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
    """Return when ``event`` or ``stopping`` is set, or after ``timeout`` seconds."""
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
