"""The outbox dispatcher: delivers stored chat messages per conversation, in order, paced.

Every post, status update and announcement is a row in the outbox (core.notifications puts it
there). One task per conversation this process holds the lease of sends the conversation's rows
oldest first, waiting for the platform's pace (a token bucket per pacing key, e.g. one per Slack
channel), and removes each row once the platform took it. A rate limit (429) waits Retry-After and
tries the same row again; a transient failure backs off exponentially (the row stays, the lease is
given up, any replica may retry later); a permanent refusal keeps the row as failed and reports it
in the alert channel(s) of the other conversations and in /metrics, never only in the log.

Transactions, the hot path's cost: one claim for every conversation claimed at once hands out each
one's oldest row; then one transaction per row sent removes it and hands out the next (the last
one's drops the lease as well). A conversation with one message costs that one transaction beyond
the shared claim; a new thread's first message, stored already leased to this process
(``lease_new``, ``take``), costs no claim at all: it is in hand when its transaction commits (if
this process dies first, any replica claims it once the lease runs out). The lease is renewed only
when less than half of it is left (in the transaction that hands out the next row, or just before a
send after a long wait for the pace); until then no other process may take the conversation, so a
send needs no database check.

Guarantee: at least once, in order per conversation. A row is deleted only after the platform
accepted it, so a crash or restart loses nothing. A row is counted as tried (its ``attempts``) in
the very transaction that hands it out, before it is sent, and a row given back unsent gets its
true count back (release). So a crash between the platform's acceptance and the delete leaves a
tried row, and the next owner asks the adapter whether it arrived before sending it again (Slack:
the row id travels as message metadata, see ``DeliveryCheck``); Teams has no such lookup, so there
a crash in that window can show one message twice. Status updates are "latest wins": a newer
status replaces an older one still waiting. Must not know any chat platform's API: pacing keys
and limits come from the composition root.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from core.batching import Coalescer
from core.chat import ChatRouter
from core.errors import ChatDeliveryError, ChatRateLimitedError, ChatRejectedError, StorageError
from core.lru import BoundedCache
from core.model import ThreadRef
from core.ports import ChatThreads, Clock, Lease, Message, Outgoing, UnitOfWorkFactory

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
class _Hand:
    """A conversation this process holds the lease of, and the message in hand with the tries
    it has had (what is stored as its count if it goes back unsent)."""

    conversation: str
    until: datetime
    item: Outgoing | None = None
    tries: int = 0

    def hold(self, item: Outgoing | None) -> None:
        self.item, self.tries = item, item.attempts if item else 0


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
        gather: float = 0.02,
        owner: str | None = None,
    ) -> None:
        self.uow, self.threads, self.clock = uow, threads, clock
        self.summarize = summarize
        self.memo = memo or StatusMemo()
        self.pacing = dict(pacing or {})
        self.lease, self.poll_every, self.max_backoff = lease, poll_every, max_backoff
        self.concurrency = concurrency  # conversations this process serves at once
        self.gather = gather  # seconds a wake-up waits for more rows before claiming
        self.owner = owner or uuid.uuid4().hex
        self.totals = DeliveryTotals()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._reported: BoundedCache[tuple[str, str], bool] = BoundedCache(1000)
        # sent messages of many conversations removed in one transaction (a group commit)
        self._finished: Coalescer[tuple[str, int], Outgoing | None] = Coalescer(self._finish)
        self._full = False  # the last claim took as many conversations as it could
        self._running = False

    def wake(self) -> None:
        """New rows were committed: claim them now rather than at the next poll."""
        self._wake.set()

    def lease_new(self) -> Lease | None:
        """A lease on a conversation this process has just begun (a thread it opened), for its
        first message: stored with it (``Outbox.add(hold=...)``) and, once committed, given to
        ``take``, it is sent without a claim (a write transaction saved per thread). None when
        this dispatcher is not running or serves as many conversations as it may."""
        if not self._running or self._stopping or len(self._active) >= self.concurrency:
            return None
        return Lease(self.owner, self.clock.now() + self.lease)

    def take(self, item: Outgoing, lease: Lease) -> None:
        """Serve ``item``, committed and held for this process (``lease_new``), now. Stopping,
        it is left to its lease running out (then any replica's claim finds it)."""
        if not self._stopping:
            self._start(_Hand(item.conversation, lease.until, item))

    def _start(self, hand: _Hand) -> None:
        """Serve the conversation in a task of its own, unless one serves it already."""
        if hand.conversation in self._active:
            return
        task = asyncio.create_task(self._serve(hand), name=f"outbox:{hand.conversation}")
        self._active[hand.conversation] = task
        task.add_done_callback(self._done)

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Claim and serve conversations until ``stopping`` is set (or cancelled)."""
        stopping = stopping or asyncio.Event()
        self._running = True
        try:
            while not stopping.is_set():
                self._wake.clear()
                try:
                    for hand in await self._claim():
                        self._start(hand)
                except StorageError:
                    log.warning("outbox.claim_failed")
                await _first(self._wake, stopping, self.poll_every)
                if self._wake.is_set() and self.gather:
                    # Every commit wakes this loop: under load, let the next few commits join
                    # one claim rather than pay a claim each (a claim is a write transaction).
                    await asyncio.sleep(self.gather)
        finally:
            # Stop gracefully: each conversation finishes the message in hand and gives its
            # lease up (a task cancelled inside a database call can wedge aiosqlite at exit).
            self._stopping, self._running = True, False
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
        if self._full and not self._stopping:
            # The last claim took all it could: others may be waiting for a free place now,
            # not for the next poll (a backlog drained at `concurrency` conversations a poll).
            self._full = False
            self._wake.set()

    async def drain(self) -> None:
        """Deliver everything deliverable now, in this task (one-shot runs and the unit tests)."""
        while fresh := [h for h in await self._claim() if h.conversation not in self._active]:
            for hand in fresh:
                await self._serve(hand)

    async def _claim(self) -> list[_Hand]:
        """One transaction for every conversation claimed at once, their first messages in it."""
        limit = max(0, self.concurrency - len(self._active))
        if not limit:
            return []
        now = self.clock.now()
        async with self.uow() as uow:
            claimed = await uow.outbox.claim(self.owner, now, now + self.lease, limit)
            await uow.commit()
        self._full = len(claimed) >= limit
        return [_Hand(c, now + self.lease, first) for c, first in claimed.items()]

    async def _serve(self, hand: _Hand) -> None:
        """Send the conversation's messages until it is empty, or must wait; then give it up.

        One transaction per message: it removes the message sent and hands out the next one
        (the last one's drops the lease too)."""
        wait: float | None = None
        error = ""
        try:
            item = hand.item or await self._advance(hand)
            hand.hold(item)
            while item is not None:
                if self._stopping:
                    wait = 0.0
                    break
                wait, error, refused = await self._one(hand, item)
                if wait is not None:
                    break
                if refused or self._renew_due(hand):
                    hand.hold(await self._advance(hand, item.id, refused))
                else:  # with other conversations' in one transaction
                    hand.hold(await self._finished((hand.conversation, item.id)))
                if refused:
                    await self._report(item, refused)
                item = hand.item
        finally:
            if hand.item is not None:  # still ours: stopping, backing off, or a failure
                not_before = None if wait is None else self.clock.now() + timedelta(seconds=wait)
                unsent = replace(hand.item, attempts=hand.tries)
                async with self.uow() as uow:
                    await uow.outbox.release(
                        hand.conversation, self.owner, not_before, error, unsent
                    )
                    await uow.commit()

    async def _one(self, hand: _Hand, item: Outgoing) -> tuple[float | None, str, str]:
        """Deliver one message. Returns (seconds to back off, why, "") or, to go on, (None, "",
        the platform's reason when it refused the message for good)."""
        maybe_sent = item.attempts > 0  # an earlier try may have reached the platform (a crash)
        while True:
            if item.kind == "status" and item.thread and item.message:
                if self.memo.shown(item.thread, item.message):
                    return None, "", ""
            await self._bucket(item).take()
            if self._stopping:
                return 0.0, "", ""
            if not await self._keep(hand):
                return 0.0, "lease lost", ""  # another process serves it now: stop here
            hand.tries += 1
            sending = False
            try:
                if not (maybe_sent and await self._arrived(item)):
                    sending = True
                    await self._send(item)
            except ChatRateLimitedError as exc:
                self.totals.rate_limited += 1
                if not sending:  # the check's limit (its own method's, not the channel's posts'):
                    return exc.retry_after, str(exc), ""  # this message alone waits, then asks
                maybe_sent = False  # a 429 to the send took nothing
                self._bucket(item).hold_until = asyncio.get_running_loop().time() + exc.retry_after
                if exc.retry_after > self.lease.total_seconds() / 3:
                    return exc.retry_after, str(exc), ""
                continue  # the bucket waits out Retry-After; the lease is renewed if need be
            except ChatRejectedError as exc:
                return None, "", exc.reason
            except ChatDeliveryError as exc:
                self.totals.retried += 1
                if hand.tries >= REPORT_AFTER:  # (a 429 on the REPORT_AFTER-th try skips none)
                    await self._report(item, str(exc), stuck=True)
                backoff = min(self.max_backoff, 2 ** min(hand.tries, 16))
                return random.uniform(backoff / 2, backoff), str(exc), ""
            self.totals.delivered += 1
            return None, "", ""

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

    def _renew_due(self, hand: _Hand) -> datetime | None:
        """The new end of the lease when less than half of it is left, else None."""
        now = self.clock.now()
        return now + self.lease if hand.until - now < self.lease / 2 else None

    async def _keep(self, hand: _Hand) -> bool:
        """Before a send: is the lease still ours? Asked of the database only when it is due
        for renewal; until then nobody else may take the conversation."""
        until = self._renew_due(hand)
        if until is None:
            return True
        async with self.uow() as uow:
            mine = await uow.outbox.renew(hand.conversation, self.owner, until)
            await uow.commit()
        hand.until = until
        return mine

    async def _advance(
        self, hand: _Hand, done: int | None = None, refused: str = ""
    ) -> Outgoing | None:
        until = self._renew_due(hand)
        async with self.uow() as uow:
            item = await uow.outbox.advance(
                hand.conversation, self.owner, self.clock.now(), done, refused, until
            )
            await uow.commit()
        hand.until = until or hand.until
        return item

    async def _finish(self, done: list[tuple[str, int]]) -> list[Outgoing | None]:
        """``advance`` for the conversations whose messages were sent about together: each
        sent one removed, each next one handed out, or the lease dropped. Under load a fraction
        of a transaction per message. A crash before the commit leaves the messages counted as
        tried, so the next owner asks the platform before sending any of them again."""
        async with self.uow() as uow:
            handed = await uow.outbox.finish(self.owner, dict(done))
            await uow.commit()
        return [handed.get(conversation) for conversation, _ in done]

    def _adapter(self, platform: str) -> ChatThreads:
        if isinstance(self.threads, ChatRouter) and platform:
            found = self.threads.platforms.get(platform)
            if found is None:
                raise ChatRejectedError("no_adapter", f"({platform} is not configured)")
            return found
        return self.threads

    async def _arrived(self, item: Outgoing) -> bool:
        """Before a resend: did the earlier attempt reach the platform after all? Asking may
        fail like a send (ChatDeliveryError: unreachable, rate limited): then it is asked again
        later, never sent unchecked, which could show the message twice. Only a platform that
        will not answer (ChatRejectedError: say, a permission the bot lacks) gets it unchecked."""
        check = getattr(self._adapter(item.platform), "was_delivered", None)
        if check is None or item.kind == "status" or item.message is None:
            return False  # a status update is idempotent: sending it again is harmless
        try:
            return bool(await check(item.thread, item.message.ref))
        except ChatRejectedError:
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
