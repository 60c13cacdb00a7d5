"""SqlOutbox on SQLite and PostgreSQL: order, latest-wins status, leases shared by replicas, and
the count of tries that tells the next sender a message may have arrived."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.database import make_engine, upgrade
from adapters.storage.tables import outbox
from adapters.storage.unit_of_work import SqlUnitOfWork
from core.model import ThreadRef
from core.ports import Message, Outgoing
from tests.servers import postgres

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def thread() -> ThreadRef:
    return ThreadRef("slack", f"C-{uuid.uuid4().hex[:8]}|1.0")


def item(t: ThreadRef, kind: str, text: str) -> Outgoing:
    return Outgoing(f"slack:{t.key}", kind, "slack", t, Message(text))  # type: ignore[arg-type]


async def add(engine: AsyncEngine, box: SecretBox, *items: Outgoing) -> None:
    async with SqlUnitOfWork(engine, box) as uow:
        for i in items:
            await uow.outbox.add(i, NOW)
        await uow.commit()


async def test_order_kept_and_only_the_latest_status_waits(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """Posts keep their order; 50 status updates in a row leave one, the newest, after them."""
    t = thread()
    await add(engine, box, item(t, "post", "one"), item(t, "post", "two"))
    for n in range(50):
        await add(engine, box, item(t, "status", f"status {n}"))
    await add(engine, box, item(t, "post", "three"))
    async with SqlUnitOfWork(engine, box) as uow:
        head = await uow.outbox.head(f"slack:{t.key}", 100)
        await uow.conn.execute(delete(outbox).where(outbox.c.conversation == f"slack:{t.key}"))
        await uow.commit()
    assert [i.message.text for i in head if i.message] == ["one", "two", "status 49", "three"]
    assert all(i.message and i.message.ref == str(i.id) for i in head)


async def test_messages_are_handed_out_one_at_a_time_in_order_and_the_last_drops_the_lease(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """The claim hands out the oldest message; each advance the next; after the last one the
    conversation is free again (its lease row is gone, so a later message is claimed at once)."""
    t = thread()
    conv = f"slack:{t.key}"
    await add(engine, box, item(t, "post", "one"), item(t, "post", "two"))
    async with SqlUnitOfWork(engine, box) as uow:
        first = (await uow.outbox.claim("A", NOW, NOW + LEASE, 100))[conv]
        await uow.commit()
    texts = []
    got = first
    while got is not None:
        assert got.attempts == 0  # never tried before: no lookup needed
        texts.append(got.message.text if got.message else "")
        async with SqlUnitOfWork(engine, box) as uow:
            got = await uow.outbox.advance(conv, "A", NOW, got.id)
            await uow.commit()
    assert texts == ["one", "two"]
    await add(engine, box, item(t, "post", "three"))
    async with SqlUnitOfWork(engine, box) as uow:
        later = (await uow.outbox.claim("B", NOW, NOW + LEASE, 100))[conv]  # A's lease went
        assert later is not None and later.message is not None
        assert later.message.text == "three"
        assert await uow.outbox.advance(conv, "B", NOW, later.id) is None
        await uow.commit()


async def test_one_replica_per_conversation_until_its_lease_runs_out(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """A holds the conversation; B gets nothing until A's lease ends, and then gets the message
    A was handed counted as tried (A may have sent it); A can no longer renew or go on."""
    t = thread()
    conv = f"slack:{t.key}"
    await add(engine, box, item(t, "post", "hello"), item(t, "post", "world"))
    async with SqlUnitOfWork(engine, box) as uow:
        first = (await uow.outbox.claim("A", NOW, NOW + LEASE, 100))[conv]
        assert first is not None and first.attempts == 0
        assert conv not in await uow.outbox.claim("A", NOW, NOW + LEASE, 100)  # A has it already
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        assert conv not in await uow.outbox.claim("B", NOW, NOW + LEASE, 100)
        taken = (await uow.outbox.claim("B", NOW + 2 * LEASE, NOW + 3 * LEASE, 100))[conv]
        await uow.commit()
    assert taken is not None and taken.id == first.id
    assert taken.attempts == 1  # the next sender knows it may have arrived already
    async with SqlUnitOfWork(engine, box) as uow:
        assert not await uow.outbox.renew(conv, "A", NOW + 3 * LEASE)
        assert await uow.outbox.renew(conv, "B", NOW + 3 * LEASE)
        # B is rate limited before it sends: back off, with the tries it really had (one, A's)
        back = replace(taken, attempts=1)
        await uow.outbox.release(conv, "B", NOW + 4 * LEASE, "rate limited", back)
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        assert conv not in await uow.outbox.claim("A", NOW + 3 * LEASE, NOW + 4 * LEASE, 100)
        again = (await uow.outbox.claim("A", NOW + 5 * LEASE, NOW + 6 * LEASE, 100))[conv]
        assert again is not None and again.id == first.id and again.attempts == 1
        nxt = await uow.outbox.advance(conv, "A", NOW, again.id, "channel_not_found")
        assert nxt is not None and nxt.message is not None and nxt.message.text == "world"
        assert await uow.outbox.advance(conv, "B", NOW, nxt.id) is None  # not B's to go on
        assert await uow.outbox.advance(conv, "A", NOW) is None  # empty: the lease is dropped
        assert await uow.outbox.head(conv, 10) == []
        assert (await uow.outbox.stats())["failed"] >= 1
        await uow.commit()


async def test_a_message_given_back_unsent_keeps_its_true_count(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """Handed out (counted as tried) but given back before any send, e.g. at a graceful stop:
    the next sender sees no try and need not ask the platform whether it arrived."""
    t = thread()
    conv = f"slack:{t.key}"
    await add(engine, box, item(t, "post", "hello"))
    async with SqlUnitOfWork(engine, box) as uow:
        first = (await uow.outbox.claim("A", NOW, NOW + LEASE, 100))[conv]
        assert first is not None
        await uow.outbox.release(conv, "A", NOW, "", first)
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        again = (await uow.outbox.claim("B", NOW, NOW + LEASE, 100))[conv]
        assert again is not None and again.attempts == 0
        assert await uow.outbox.advance(conv, "B", NOW, again.id) is None
        await uow.commit()


async def test_uncommitted_messages_are_not_sent(engine: AsyncEngine, box: SecretBox) -> None:
    """A state change that rolls back takes its messages with it (stage in the same unit)."""
    t = thread()
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.outbox.add(item(t, "post", "never"), NOW)
    async with SqlUnitOfWork(engine, box) as uow:
        assert await uow.outbox.head(f"slack:{t.key}", 10) == []


_READ = text(
    "SELECT (SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0) "
    "FROM pg_stat_xact_user_tables WHERE relname IN ('outbox', 'outbox_leases')) + "
    "(SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0) FROM pg_index i "
    "JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname IN ('outbox', 'outbox_leases'))"
)


async def _entries_read(uow: SqlUnitOfWork) -> int:
    """Rows and index entries of the outbox's tables this transaction has read so far
    (PostgreSQL's statistics of the current transaction: a count of work, not a time)."""
    return int((await uow.conn.execute(_READ)).scalar_one())


@pytest.mark.postgres
async def test_a_backlog_is_claimed_and_finished_reading_it_once_not_per_message(
    postgres_url: str, box: SecretBox
) -> None:
    """After a quiet spell PostgreSQL's statistics say the outbox is empty; then a backlog
    arrives (a chat outage, a burst of renewals). Claiming a batch of it and finishing the
    batch must not read the backlog once per message: a plan of that shape hit 1.28 million
    buffers to hand out 50 of 1,090 messages, half a second a claim while the backlog drained
    at 100 messages a second with the CPU idle (bench/README.md, "Outbox backlog")."""
    eng = make_engine(await postgres.fresh_database(postgres_url))
    await upgrade(eng)
    try:
        async with eng.begin() as conn:  # the statistics stay as ANALYZE leaves them
            for table in ("outbox", "outbox_leases"):
                await conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = off)"))
        backlog = 2_000
        await add(eng, box, *(item(thread(), "post", f"earlier {i}") for i in range(backlog)))
        async with eng.begin() as conn:  # the earlier traffic is gone: statistics say empty
            await conn.execute(delete(outbox))
            await conn.execute(text("ANALYZE outbox, outbox_leases"))
        queued, follow_ups = [], {}
        for i in range(backlog):  # a claim looks at the oldest 200: every other one has two
            t = thread()
            queued.append(item(t, "post", f"Auth URL {i}"))
            if i < 200 and i % 2 == 0:
                queued.append(item(t, "post", f"Reminder {i}"))
                follow_ups[f"slack:{t.key}"] = f"Reminder {i}"
        await add(eng, box, *queued)
        async with SqlUnitOfWork(eng, box) as uow:
            before = await _entries_read(uow)
            claimed = await uow.outbox.claim("me", NOW, NOW + LEASE, 50)
            claiming = await _entries_read(uow) - before
            done = {c: i.id for c, i in claimed.items() if i is not None}
            handed = await uow.outbox.finish("me", done)
            finishing = await _entries_read(uow) - before - claiming
            await uow.commit()
        assert len(claimed) == len(done) == 50  # no more than asked for, each with its message
        going_on = {c: follow_ups[c] for c in claimed if c in follow_ups}
        assert going_on and len(going_on) < 50  # some conversations go on, some end
        assert {c: i.message.text for c, i in handed.items() if i and i.message} == going_on
        assert claiming < 10 * backlog, claiming
        assert finishing < 10 * backlog, finishing
        async with SqlUnitOfWork(eng, box) as uow:
            assert (await uow.outbox.stats())["pending"] == len(queued) - 50
    finally:
        await eng.dispose()
