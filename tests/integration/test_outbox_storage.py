"""SqlOutbox on SQLite and PostgreSQL: order, latest-wins status, leases shared by replicas."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.unit_of_work import SqlUnitOfWork
from core.model import ThreadRef
from core.ports import Message, Outgoing

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
        for i in head:
            await uow.outbox.delivered(i.id)
        await uow.commit()
    assert [i.message.text for i in head if i.message] == ["one", "two", "status 49", "three"]
    assert all(i.message and i.message.ref == str(i.id) for i in head)


async def test_one_replica_per_conversation_until_its_lease_runs_out(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """A holds the conversation; B gets nothing until A's lease ends; then A's attempt fails."""
    t = thread()
    conv = f"slack:{t.key}"
    await add(engine, box, item(t, "post", "hello"))
    async with SqlUnitOfWork(engine, box) as uow:
        assert conv in await uow.outbox.claim("A", NOW, NOW + LEASE, 100)
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        assert conv not in await uow.outbox.claim("B", NOW, NOW + LEASE, 100)
        assert conv in await uow.outbox.claim("B", NOW + 2 * LEASE, NOW + 3 * LEASE, 100)
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        (head,) = await uow.outbox.head(conv, 10)
        assert not await uow.outbox.attempt(head.id, conv, "A", NOW + 3 * LEASE)
        assert await uow.outbox.attempt(head.id, conv, "B", NOW + 3 * LEASE)
        await uow.outbox.release(conv, "B", NOW + 4 * LEASE, "rate limited")  # back off
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        assert conv not in await uow.outbox.claim("A", NOW + 3 * LEASE, NOW + 4 * LEASE, 100)
        assert conv in await uow.outbox.claim("A", NOW + 5 * LEASE, NOW + 6 * LEASE, 100)
        (head,) = await uow.outbox.head(conv, 10)
        assert head.attempts == 1  # the next sender knows it may have arrived already
        await uow.outbox.failed(head.id, "channel_not_found", NOW)
        await uow.outbox.release(conv, "A")
        assert await uow.outbox.head(conv, 10) == []
        assert (await uow.outbox.stats())["failed"] >= 1
        await uow.commit()


async def test_uncommitted_messages_are_not_sent(engine: AsyncEngine, box: SecretBox) -> None:
    """A state change that rolls back takes its messages with it (stage in the same unit)."""
    t = thread()
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.outbox.add(item(t, "post", "never"), NOW)
    async with SqlUnitOfWork(engine, box) as uow:
        assert await uow.outbox.head(f"slack:{t.key}", 10) == []
