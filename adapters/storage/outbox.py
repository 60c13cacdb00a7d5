"""SqlOutbox: core's Outbox port on the ``outbox`` and ``outbox_leases`` tables.

Messages are rows, kept until delivered (deleted) or refused for good (state ``failed``, kept
with the platform's reason). Order within a conversation is the row id. A conversation is
delivered by one process at a time: the process holds the conversation's lease row, claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL so replicas split the conversations without waiting on
each other (SQLite drops the clause; there the write gate serialises claims). A lease row is made
when a conversation is first claimed and dropped when its queue is empty, so an add never has to
touch it. Must not send anything or know a chat platform: this is storage only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage.crypto import SecretBox
from adapters.storage.tables import outbox, outbox_leases
from core.model import ThreadRef
from core.ports import Action, Mention, Message, Outgoing

PENDING, FAILED = "pending", "failed"
_CANDIDATES = 200  # conversations looked at per claim


def dump(item: Outgoing, box: SecretBox) -> str:
    """The message, encrypted: a thread's first post carries the Auth URL, a bearer secret that
    is otherwise stored only as a hash (DESIGN.md section 2)."""
    if item.message is None:
        plain = json.dumps({"batch": item.batch})
    else:
        m = item.message
        actions = [[a.kind, a.tenant, a.label] for a in m.actions]
        body: dict[str, Any] = {
            "text": m.text,
            "tone": m.tone,
            "actions": actions,
            "batch": item.batch,
        }
        if m.mention is not None:
            body["mention"] = [m.mention.platform, m.mention.user_id, m.mention.name]
        plain = json.dumps(body)
    return box.seal(plain.encode()).decode()


def _item(row: Row[Any], box: SecretBox) -> Outgoing:
    body = json.loads(box.open(row.body.encode()))
    message = None
    if "text" in body:
        actions = tuple(Action(k, t, label) for k, t, label in body.get("actions", ()))
        mention = Mention(*body["mention"]) if body.get("mention") else None
        message = Message(
            body["text"], body.get("tone", "info"), actions, ref=str(row.id), mention=mention
        )
    thread = ThreadRef(row.platform, row.thread_key) if row.thread_key else None
    return Outgoing(
        conversation=row.conversation,
        kind=row.kind,
        platform=row.platform,
        thread=thread,
        message=message,
        batch=body.get("batch"),
        id=row.id,
        attempts=row.attempts,
        created_at=row.created_at,
    )


class SqlOutbox:
    def __init__(self, conn: AsyncConnection, box: SecretBox) -> None:
        self.c = conn
        self.box = box

    async def add(self, item: Outgoing, now: datetime) -> None:
        if item.kind == "status":  # latest wins: an older status not yet sent is obsolete
            await self.c.execute(
                delete(outbox).where(
                    outbox.c.conversation == item.conversation,
                    outbox.c.kind == "status",
                    outbox.c.state == PENDING,
                )
            )
        await self.c.execute(
            insert(outbox),
            {
                "conversation": item.conversation,
                "kind": item.kind,
                "platform": item.platform,
                "thread_key": item.thread.key if item.thread else None,
                "body": dump(item, self.box),
                "state": PENDING,
                "attempts": 0,
                "created_at": now,
            },
        )

    async def claim(self, owner: str, now: datetime, until: datetime, limit: int) -> list[str]:
        candidates = [
            row.conversation
            for row in await self.c.execute(
                select(outbox.c.conversation)
                .where(outbox.c.state == PENDING)
                .group_by(outbox.c.conversation)
                .order_by(func.min(outbox.c.id))
                .limit(_CANDIDATES)
            )
        ]
        if not candidates:
            return []
        # sorted: replicas inserting the same keys take them in one order (no deadlock)
        await self.c.execute(
            self._insert_missing(), [{"conversation": c} for c in sorted(candidates)]
        )
        free = (
            select(outbox_leases.c.conversation)
            .where(
                outbox_leases.c.conversation.in_(candidates),
                or_(
                    outbox_leases.c.owner.is_(None),
                    outbox_leases.c.owner == owner,
                    outbox_leases.c.lease_until < now,
                ),
                or_(outbox_leases.c.not_before.is_(None), outbox_leases.c.not_before <= now),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        taken = await self.c.execute(
            update(outbox_leases)
            .where(outbox_leases.c.conversation.in_(free.scalar_subquery()))
            .values(owner=owner, lease_until=until)
            .returning(outbox_leases.c.conversation)
        )
        return [row.conversation for row in taken]

    def _insert_missing(self) -> Any:
        if self.c.dialect.name == "postgresql":
            return postgresql.insert(outbox_leases).on_conflict_do_nothing()
        return sqlite.insert(outbox_leases).on_conflict_do_nothing()

    async def head(self, conversation: str, limit: int) -> list[Outgoing]:
        rows = await self.c.execute(
            select(outbox)
            .where(outbox.c.conversation == conversation, outbox.c.state == PENDING)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [_item(r, self.box) for r in rows]

    async def attempt(self, item_id: int, conversation: str, owner: str, until: datetime) -> bool:
        mine = await self.c.execute(
            update(outbox_leases)
            .where(outbox_leases.c.conversation == conversation, outbox_leases.c.owner == owner)
            .values(lease_until=until)
        )
        if mine.rowcount != 1:
            return False
        await self.c.execute(
            update(outbox).where(outbox.c.id == item_id).values(attempts=outbox.c.attempts + 1)
        )
        return True

    async def delivered(self, item_id: int) -> None:
        await self.c.execute(delete(outbox).where(outbox.c.id == item_id))

    async def failed(self, item_id: int, error: str, now: datetime) -> None:
        await self.c.execute(
            update(outbox)
            .where(outbox.c.id == item_id)
            .values(state=FAILED, failed_at=now, error=error[:200])
        )

    async def release(
        self, conversation: str, owner: str, not_before: datetime | None = None, error: str = ""
    ) -> None:
        mine = and_(outbox_leases.c.conversation == conversation, outbox_leases.c.owner == owner)
        if not_before is None:
            # Nothing to wait for: drop the lease row when the queue is empty (a message added
            # meanwhile is found by the next claim, which makes the row again).
            emptied = await self.c.execute(
                delete(outbox_leases).where(
                    mine,
                    ~select(outbox.c.id)
                    .where(outbox.c.conversation == conversation, outbox.c.state == PENDING)
                    .exists(),
                )
            )
            if emptied.rowcount == 1:
                return
        await self.c.execute(
            update(outbox_leases)
            .where(mine)
            .values(owner=None, lease_until=None, not_before=not_before, error=error[:200] or None)
        )

    async def stats(self) -> dict[str, int]:
        rows = await self.c.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
        counts = {PENDING: 0, FAILED: 0}
        counts.update({state: int(n) for state, n in rows})
        return counts
