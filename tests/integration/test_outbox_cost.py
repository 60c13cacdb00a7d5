"""What delivering the outbox costs the database, counted on the real engines (SQLite, PostgreSQL).

The hot path is a new thread's Auth URL post: one conversation with one message. Each transaction
is a round trip (two with its commit) plus the pool and, on SQLite, the write queue; at hundreds
of renewals a second they were a third of the process's CPU. These tests count them with
SQLAlchemy's own events, so a change that adds a transaction per message shows up here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.outbox import SqlOutbox
from adapters.storage.tables import outbox_leases
from adapters.storage.unit_of_work import SqlUnitOfWork
from bot.bootstrap import compose
from core.delivery import Dispatcher, thread_conversation
from core.errors import StorageError
from core.model import ThreadRef
from core.ports import Lease, Message, Outgoing, UnitOfWork
from core.services import ServiceConfig
from tests.fakes.core import FakeIdentityProvider, FrozenClock, RecordingChatThreads
from tests.fakes.refs import random_tenant
from tests.integration.live import HERE, SUPPORT, until

LEASE = timedelta(seconds=30)


@dataclass
class Counted:
    transactions: int = 0
    statements: list[str] = field(default_factory=list)


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Counted]:
    """Transactions begun and statements sent (SQLite's own BEGIN is not counted twice)."""
    counted = Counted()

    def began(conn: Any) -> None:
        counted.transactions += 1

    def sent(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("BEGIN"):
            counted.statements.append(" ".join(statement.split()[:4]))

    event.listen(engine.sync_engine, "begin", began)
    event.listen(engine.sync_engine, "before_cursor_execute", sent)
    try:
        yield counted
    finally:
        event.remove(engine.sync_engine, "begin", began)
        event.remove(engine.sync_engine, "before_cursor_execute", sent)


class Factory:
    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self.engine, self.box = engine, box

    def __call__(self, read_only: bool = False, one_write: bool = False) -> UnitOfWork:
        return SqlUnitOfWork(self.engine, self.box, read_only, one_write)


async def queue(engine: AsyncEngine, box: SecretBox, thread: ThreadRef, *texts: str) -> None:
    async with SqlUnitOfWork(engine, box) as uow:
        for text in texts:
            item = Outgoing(thread_conversation(thread), "post", "test", thread, Message(text))
            await uow.outbox.add(item, FrozenClock().now())
        await uow.commit()


def a_thread(chat: RecordingChatThreads) -> ThreadRef:
    key = f"t-{uuid.uuid4().hex[:8]}"
    chat.threads[key] = []
    return ThreadRef("test", key)


async def test_one_message_costs_one_transaction_beyond_the_claim(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """A new thread's Auth URL post: the claim (shared by every conversation claimed with it)
    and one transaction that removes the message and drops the lease; nothing else but the
    claim that finds the queue empty. It used to be six transactions beyond the claim."""
    chat = RecordingChatThreads()
    thread = a_thread(chat)
    await queue(own_engine, box, thread, "Auth URL")
    dispatcher = Dispatcher(Factory(own_engine, box), chat, FrozenClock())
    with counting(own_engine) as counted:
        await dispatcher.drain()
    assert [m.text for m in chat.threads[thread.key]] == ["Auth URL"]
    assert counted.transactions <= 3, counted.statements  # claim, the message, the empty claim
    assert len(counted.statements) <= 7, counted.statements
    async with SqlUnitOfWork(own_engine, box) as uow:
        assert await uow.outbox.stats() == {"pending": 0, "failed": 0}


async def test_conversations_claimed_together_share_the_claim(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """Ten threads' posts, then three more in one of them: one claim for all ten, then one
    transaction per message sent."""
    chat = RecordingChatThreads()
    threads = [a_thread(chat) for _ in range(10)]
    for n, thread in enumerate(threads):
        await queue(own_engine, box, thread, f"Auth URL {n}")
    await queue(own_engine, box, threads[0], "one", "two", "three")
    dispatcher = Dispatcher(Factory(own_engine, box), chat, FrozenClock())
    with counting(own_engine) as counted:
        await dispatcher.drain()
    assert [m.text for m in chat.threads[threads[0].key]] == ["Auth URL 0", "one", "two", "three"]
    assert all(len(chat.threads[t.key]) >= 1 for t in threads)
    assert counted.transactions <= 1 + 13 + 1, counted.statements


async def test_conversations_sent_at_once_are_finished_together(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """Twenty new threads' Auth URL posts served at once: the messages sent in one turn of the
    loop are removed (and their leases dropped) in one transaction, not one each (twenty
    before), and each went once."""
    chat = RecordingChatThreads()
    threads = [a_thread(chat) for _ in range(20)]
    for n, thread in enumerate(threads):
        await queue(own_engine, box, thread, f"Auth URL {n}")
    dispatcher = Dispatcher(Factory(own_engine, box), chat, FrozenClock(), gather=0)
    stopping = asyncio.Event()
    with counting(own_engine) as counted:
        runner = asyncio.create_task(dispatcher.run(stopping))
        await until(lambda: all(chat.threads[t.key] for t in threads))

        async def emptied() -> bool:
            async with SqlUnitOfWork(own_engine, box, read_only=True) as uow:
                return await uow.outbox.stats() == {"pending": 0, "failed": 0}

        await until(emptied)
        stopping.set()
        await runner
    assert all(len(chat.threads[t.key]) == 1 for t in threads)
    removals = [s for s in counted.statements if s.startswith("DELETE FROM outbox WHERE")]
    assert len(removals) <= 2, counted.statements


async def test_a_backlog_larger_than_the_places_drains_without_waiting_for_polls(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """Twenty threads' posts, five served at a time, the next poll far away: each place that
    frees up is taken again at once (before, the backlog drained five conversations a poll)."""
    chat = RecordingChatThreads()
    threads = [a_thread(chat) for _ in range(20)]
    for n, thread in enumerate(threads):
        await queue(own_engine, box, thread, f"Auth URL {n}")
    dispatcher = Dispatcher(
        Factory(own_engine, box), chat, FrozenClock(), concurrency=5, poll_every=60, gather=0
    )
    stopping = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stopping))
    try:
        await until(lambda: all(chat.threads[t.key] for t in threads), 10)
    finally:
        stopping.set()
        await runner
    assert all(len(chat.threads[t.key]) == 1 for t in threads)


class Slow(RecordingChatThreads):
    """Each post takes ten seconds of the clock; checks the lease is live while posting."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, clock: FrozenClock) -> None:
        super().__init__()
        self.engine, self.box, self.clock = engine, box, clock
        self.leases: list[datetime | None] = []

    async def post(self, thread: ThreadRef, message: Message) -> None:
        async with SqlUnitOfWork(self.engine, self.box, read_only=True) as uow:
            held = await uow.conn.scalar(
                select(outbox_leases.c.lease_until).where(
                    outbox_leases.c.conversation == thread_conversation(thread)
                )
            )
        self.leases.append(held)
        await super().post(thread, message)
        self.clock.advance(seconds=10)


async def test_a_long_served_conversation_keeps_its_lease_renewed_every_other_message(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """Eight posts taking ten seconds each against a 30 s lease: at every send the lease is
    still live (no other replica may take the conversation), renewed when less than half of it
    is left rather than before every message."""
    clock = FrozenClock()
    chat = Slow(own_engine, box, clock)
    thread = a_thread(chat)
    texts = [f"reply {n}" for n in range(8)]
    await queue(own_engine, box, thread, *texts)
    dispatcher = Dispatcher(Factory(own_engine, box), chat, clock, lease=LEASE)
    with counting(own_engine) as counted:
        await dispatcher.drain()
    assert [m.text for m in chat.threads[thread.key]] == texts
    start = FrozenClock().now()
    sent_at = [start + timedelta(seconds=10 * n) for n in range(8)]
    assert len(chat.leases) == len(sent_at)
    assert all(
        until is not None and until > at for until, at in zip(chat.leases, sent_at, strict=True)
    )
    renewals = [s for s in counted.statements if s.startswith("UPDATE outbox_leases SET lease")]
    assert 1 <= len(renewals) <= len(texts) // 2


async def renewing(engine: AsyncEngine, box: SecretBox, chat: RecordingChatThreads) -> Any:
    """The core on ``engine``, posting to ``chat``, and a tenant of its own to renew."""
    uow = Factory(engine, box)
    tenant = random_tenant("contoso")
    async with uow() as u:
        await u.tenants.add(tenant)
        await u.commit()
    core = compose(
        uow=uow,
        identity=FakeIdentityProvider(FrozenClock()),
        threads=chat,
        clock=FrozenClock(),
        config=ServiceConfig(public_url="https://bot.test"),
    )
    return core, tenant


async def test_a_new_threads_auth_url_goes_out_without_a_claim(
    own_engine: AsyncEngine, box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal requested while the dispatcher runs: its Auth URL is stored leased to this
    process and handed to the dispatcher at the commit, so the whole renewal, thread and Auth URL
    posted and the outbox empty again, costs three transactions (the request, the thread with its
    Auth URL, the removal) and no claim. Before, a claim made it four or five. On PostgreSQL
    the request is one statement after the lookup, and the thread with its Auth URL one
    statement, both sent without BEGIN and COMMIT."""
    begun = []
    start = asyncpg.transaction.Transaction.start

    async def counted_start(self: Any) -> None:
        begun.append(self)
        await start(self)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "start", counted_start)
    chat = RecordingChatThreads()
    begun_at_post: list[int] = []  # BEGINs sent when the Auth URL is posted
    post = chat.post

    async def counted_post(thread: ThreadRef, message: Message) -> None:
        begun_at_post.append(len(begun))
        await post(thread, message)

    monkeypatch.setattr(chat, "post", counted_post)
    core, tenant = await renewing(own_engine, box, chat)
    stopping = asyncio.Event()
    runner = asyncio.create_task(core.dispatcher.run(stopping))
    await until(lambda: core.dispatcher.lease_new() is not None)  # running
    try:
        with counting(own_engine) as counted:
            before = len(begun)  # (the setup's, the dispatcher's first claim)
            await core.desk.handle(tenant.slug, HERE, SUPPORT)
            await until(lambda: any("/onboard/" in t for t in chat.texts()))
            begun_by_the_renewal = begun_at_post[0] - before

            async def emptied() -> bool:
                async with SqlUnitOfWork(own_engine, box, read_only=True) as u:
                    return await u.outbox.stats() == {"pending": 0, "failed": 0}

            await until(emptied)
    finally:
        stopping.set()
        await runner
    writes = counted.transactions - 1  # the read that saw the outbox empty
    claims = [s for s in counted.statements if s.startswith("SELECT outbox.conversation")]
    assert claims == [], counted.statements
    assert writes <= 3, counted.statements
    if own_engine.dialect.name == "postgresql":
        assert begun_by_the_renewal == 0, counted.statements
    assert sum("/onboard/" in t for t in chat.texts()) == 1


async def test_a_message_held_by_a_process_that_died_is_sent_once_its_lease_runs_out(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """A thread's Auth URL stored leased to a process that died before sending it: no other
    replica sends it while the lease holds; after it runs out, one does, once, counted as a
    possible resend (so a platform that can tell is asked first)."""
    clock = FrozenClock()
    chat = RecordingChatThreads()
    thread = a_thread(chat)
    item = Outgoing(thread_conversation(thread), "post", "test", thread, Message("Auth URL"))
    async with SqlUnitOfWork(own_engine, box) as uow:
        held = await uow.outbox.add(item, clock.now(), Lease("dead", clock.now() + LEASE))
        await uow.commit()
    assert held is not None and held.id and held.attempts == 0
    other = Dispatcher(Factory(own_engine, box), chat, clock, lease=LEASE)
    await other.drain()
    assert chat.threads[thread.key] == []
    clock.advance(seconds=31)
    async with SqlUnitOfWork(own_engine, box) as uow:  # a second add to it is not held again
        again = Outgoing(thread_conversation(thread), "post", "test", thread, Message("next"))
        assert await uow.outbox.add(again, clock.now(), Lease("x", clock.now() + LEASE)) is None
        await uow.commit()
    await other.drain()
    assert [m.text for m in chat.threads[thread.key]] == ["Auth URL", "next"]


async def test_a_thread_is_not_stored_without_its_auth_url(
    own_engine: AsyncEngine, box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher has no room to hold a new thread's Auth URL (here: it is not running), so
    the thread and the Auth URL are two writes, and the second fails (the database went away):
    neither is stored, and the renewal is left for the sweep to reopen with a fresh Auth URL,
    not stored as a thread that will never get one."""
    chat = RecordingChatThreads()
    core, tenant = await renewing(own_engine, box, chat)
    assert core.dispatcher.lease_new() is None

    async def fails(self: SqlOutbox, item: Outgoing, now: datetime, hold: Any = None) -> None:
        raise StorageError("the database failed")

    monkeypatch.setattr(SqlOutbox, "add", fails)
    reply = await core.desk.handle(tenant.slug, HERE, SUPPORT)
    assert "/onboard/" not in reply.text
    async with SqlUnitOfWork(own_engine, box, read_only=True) as u:
        (renewal,) = await u.renewals.for_tenant(tenant.key)
    assert renewal.awaiting_thread and renewal.thread is None
