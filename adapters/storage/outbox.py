"""SqlOutbox: core's Outbox port on the ``outbox`` and ``outbox_leases`` tables.

Messages are rows, kept until delivered (deleted) or refused for good (state ``failed``, kept with
the platform's reason). Order within a conversation is the row id. A conversation is delivered by
one process at a time: the process holds the conversation's lease row, claimed with ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL so replicas split the conversations without waiting on each other
(SQLite drops the clause; there the write gate serialises claims). A lease row is made when a
conversation is first claimed and dropped when its queue is empty, so an add never has to touch it;
except the first message of a conversation just begun (a new thread), which may be added "held":
with its lease row, counted as tried, for the process that began it to send without a claim
(``add(hold=...)``). Messages are handed out one at a time, oldest first: the claim (one
transaction for every conversation taken) hands out each one's first, ``advance`` removes the one
sent and hands out the next, or drops the lease when none is left. A message handed out is counted
as tried (``attempts`` + 1) by the statement that reads it, so a crash after the platform took it
leaves the trace the next sender looks for. Must not send anything or know a chat platform: this is
storage only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    CTE,
    Row,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage.crypto import SecretBox
from adapters.storage.database import dialect_insert
from adapters.storage.tables import outbox, outbox_leases
from core.model import ThreadRef
from core.ports import Action, Lease, Mention, Message, Outgoing

PENDING, FAILED = "pending", "failed"
_ROW = ("conversation", "kind", "platform", "thread_key", "body", "state", "created_at")
_CANDIDATES = 200  # conversations looked at per claim
# Built once (a hot path: every renewal adds its Auth URL this way); values go in as parameters.
_ADD = insert(outbox)
_HOLD_SQLITE = (
    dialect_insert("sqlite", outbox_leases)
    .values(
        conversation=bindparam("conversation"),
        owner=bindparam("owner"),
        lease_until=bindparam("lease_until", type_=outbox_leases.c.lease_until.type),
    )
    .on_conflict_do_nothing()
    .returning(outbox_leases.c.conversation)
)
_ADD_HELD = insert(outbox).returning(outbox.c.id, outbox.c.attempts)
HELD_PREFIX = "o_"


def add_held_after(guard: CTE) -> Any:
    """PostgreSQL: ``add(hold=)`` as one statement (a data-modifying WITH), done only when
    ``guard`` returns a row; the message counts as tried exactly when its lease was made here.
    Its parameters are ``held_params``'."""

    def param(table: Table, name: str) -> Any:
        return bindparam(HELD_PREFIX + name, type_=table.c[name].type)

    leased = (
        dialect_insert("postgresql", outbox_leases)
        .from_select(
            ["conversation", "owner", "lease_until"],
            select(
                *(param(outbox_leases, c) for c in ("conversation", "owner", "lease_until"))
            ).select_from(guard),
        )
        .on_conflict_do_nothing()
        .returning(outbox_leases.c.conversation)
        .cte("leased")
    )
    tries = select(func.count()).select_from(leased).scalar_subquery()
    return (
        insert(outbox)
        .from_select(
            [*_ROW, "attempts"],
            select(*(param(outbox, c) for c in _ROW), tries).select_from(guard),
        )
        .returning(outbox.c.id, outbox.c.attempts)
        .add_cte(guard)
        .add_cte(leased)
    )


# PostgreSQL's add(hold=) on its own: after a guard that always returns its one row
_ADD_LEASED = add_held_after(select(literal_column("1")).cte("always"))


def held_params(item: Outgoing, now: datetime, hold: Lease, box: SecretBox) -> dict[str, Any]:
    row = _row(item, now, box) | {"owner": hold.owner, "lease_until": hold.until}
    return {HELD_PREFIX + k: v for k, v in row.items() if k != "attempts"}


def _row(item: Outgoing, now: datetime, box: SecretBox) -> dict[str, Any]:
    return {
        "conversation": item.conversation,
        "kind": item.kind,
        "platform": item.platform,
        "thread_key": item.thread.key if item.thread else None,
        "body": dump(item, box),
        "state": PENDING,
        "attempts": 0,
        "created_at": now,
    }


def handed_out(item: Outgoing, added: Row[Any] | None, now: datetime) -> Outgoing | None:
    """The message of ``add(hold=)`` as handed out, from the id and tries its insert returned
    (None: the conversation had a lease already, so it is stored as usual)."""
    if added is None or not added.attempts:
        return None
    message = item.message and replace(item.message, ref=str(added.id))
    return replace(item, id=added.id, message=message, attempts=0, created_at=now)


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


def _among(column: Any, rows: Any, dialect: str) -> Any:
    """``column IN (rows)``, ``rows`` (a select of one column) found once, whatever the planner's
    statistics say. On PostgreSQL as an array (an InitPlan) that ``column`` is looked up in. As
    ``IN (subquery)`` the planner may run the subquery once per row of the table when its
    statistics say the table is empty, as they do after a quiet spell: with a backlog of 1,090
    messages a claim hit 1.28 million buffers, half a second (bench/README.md, "Outbox
    backlog"); and a subquery with LIMIT and SKIP LOCKED run more than once can take more than
    its limit. SQLite runs an uncorrelated IN subquery once."""
    if dialect != "postgresql":
        return column.in_(rows)
    found = next(iter(rows.subquery().c))
    listed = select(func.array_agg(found)).scalar_subquery()
    return column == any_(cast(listed, ARRAY(column.type)))  # ANY of one array, not of rows


def _firsts(conversations: Iterable[str], dialect: str) -> Any:
    """Is the row the oldest pending message of one of ``conversations``?"""
    first = (
        select(func.min(outbox.c.id))
        .where(outbox.c.conversation.in_(sorted(conversations)), outbox.c.state == PENDING)
        .group_by(outbox.c.conversation)
    )
    return _among(outbox.c.id, first, dialect)


class SqlOutbox:
    def __init__(self, conn: AsyncConnection, box: SecretBox) -> None:
        self.c = conn
        self.box = box

    async def add(
        self, item: Outgoing, now: datetime, hold: Lease | None = None
    ) -> Outgoing | None:
        if item.kind == "status":  # latest wins: an older status not yet sent is obsolete
            await self.c.execute(
                delete(outbox).where(
                    outbox.c.conversation == item.conversation,
                    outbox.c.kind == "status",
                    outbox.c.state == PENDING,
                )
            )
        if hold is None:
            await self.c.execute(_ADD, _row(item, now, self.box))
            return None
        # A new conversation: its lease row is made here, not by a claim.
        if self.c.dialect.name == "postgresql":
            params = held_params(item, now, hold, self.box)
            added = (await self.c.execute(_ADD_LEASED, params)).one()
        else:
            lease = {
                "conversation": item.conversation,
                "owner": hold.owner,
                "lease_until": hold.until,
            }
            made = (await self.c.execute(_HOLD_SQLITE, lease)).first()
            row = _row(item, now, self.box)
            row["attempts"] = 1 if made else 0  # handed out: counted as tried, as a claim does
            added = (await self.c.execute(_ADD_HELD, row)).one()
        return handed_out(item, added, now)

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> dict[str, Outgoing | None]:
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
            return {}
        # sorted: replicas inserting the same keys take them in one order (no deadlock)
        await self.c.execute(
            self._insert_missing(), [{"conversation": c} for c in sorted(candidates)]
        )
        free = (
            select(outbox_leases.c.conversation)
            .where(
                outbox_leases.c.conversation.in_(candidates),
                # not its own live leases: the owner serves those already
                or_(outbox_leases.c.owner.is_(None), outbox_leases.c.lease_until < now),
                or_(outbox_leases.c.not_before.is_(None), outbox_leases.c.not_before <= now),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        taken = await self.c.execute(
            update(outbox_leases)
            .where(_among(outbox_leases.c.conversation, free, self.c.dialect.name))
            .values(owner=owner, lease_until=until)
            .returning(outbox_leases.c.conversation)
        )
        claimed: dict[str, Outgoing | None] = {row.conversation: None for row in taken}
        if claimed:
            for item in await self._mark(_firsts(claimed, self.c.dialect.name)):
                claimed[item.conversation] = item
        return claimed

    async def _mark(self, which: Any) -> list[Outgoing]:
        """Count a try of the rows ``which`` selects, before they are sent, and return them with
        the count from before: a row with tries is one that may have reached the platform."""
        rows = await self.c.execute(
            update(outbox)
            .where(which, outbox.c.state == PENDING)  # re-checked if another writer got there
            .values(attempts=outbox.c.attempts + 1)
            .returning(*outbox.c)
        )
        return [replace(_item(r, self.box), attempts=r.attempts - 1) for r in rows]

    def _insert_missing(self) -> Any:
        return dialect_insert(self.c.dialect.name, outbox_leases).on_conflict_do_nothing()

    async def head(self, conversation: str, limit: int) -> list[Outgoing]:
        rows = await self.c.execute(
            select(outbox)
            .where(outbox.c.conversation == conversation, outbox.c.state == PENDING)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [_item(r, self.box) for r in rows]

    async def advance(
        self,
        conversation: str,
        owner: str,
        now: datetime,
        done: int | None = None,
        failed: str = "",
        until: datetime | None = None,
    ) -> Outgoing | None:
        # The lease row first, then the messages: the order a claim locks them in (PostgreSQL),
        # so an owner finishing and a replica taking over never wait on each other in a circle.
        mine = and_(outbox_leases.c.conversation == conversation, outbox_leases.c.owner == owner)
        if until is not None:
            renewed = await self.c.execute(
                update(outbox_leases).where(mine).values(lease_until=until)
            )
            go_on = renewed.rowcount == 1  # else taken over: the new owner goes on
        else:  # the usual end: the last message went, and the lease goes with it
            dropped = await self.c.execute(self._drop_if_empty(conversation, mine, done))
            go_on = dropped.rowcount != 1
        if done is not None and failed:
            await self.c.execute(
                update(outbox)
                .where(outbox.c.id == done)
                .values(state=FAILED, failed_at=now, error=failed[:200])
            )
        elif done is not None:
            await self.c.execute(delete(outbox).where(outbox.c.id == done))
        if not go_on:
            return None
        return (await self._hand_out(owner, [conversation]))[conversation]

    async def finish(self, owner: str, done: dict[str, int]) -> dict[str, Outgoing | None]:
        # As advance: the lease rows first, then the messages (the order a claim locks them in).
        gone = list(done.values())
        # Not correlated (NOT IN: one hashed subplan): as NOT EXISTS per lease row, with the
        # statistics of an empty outbox, each row read every pending message (see ``_among``).
        going_on = select(outbox.c.conversation).where(
            outbox.c.state == PENDING,
            outbox.c.conversation.in_(sorted(done)),
            outbox.c.id.not_in(gone),
        )
        dropped = await self.c.execute(
            delete(outbox_leases)
            .where(
                outbox_leases.c.owner == owner,
                outbox_leases.c.conversation.in_(sorted(done)),
                outbox_leases.c.conversation.not_in(going_on),
            )
            .returning(outbox_leases.c.conversation)
        )
        left = set(done) - {row.conversation for row in dropped}
        await self.c.execute(delete(outbox).where(outbox.c.id.in_(gone)))
        handed: dict[str, Outgoing | None] = dict.fromkeys(done)
        if left:
            handed.update(await self._hand_out(owner, left))
        return handed

    async def _hand_out(
        self, owner: str, conversations: Iterable[str]
    ) -> dict[str, Outgoing | None]:
        """The next message of each conversation ``owner`` holds, counted as tried; a
        conversation with none (emptied meanwhile, or no longer ours) is let go: None."""
        handed: dict[str, Outgoing | None] = dict.fromkeys(sorted(conversations))
        held = (
            select(outbox_leases.c.conversation)
            .where(
                outbox_leases.c.conversation == outbox.c.conversation,
                outbox_leases.c.owner == owner,
            )
            .exists()
        )
        for item in await self._mark(and_(_firsts(handed, self.c.dialect.name), held)):
            handed[item.conversation] = item
        for conversation in [c for c, item in handed.items() if item is None]:
            await self.release(conversation, owner)
        return handed

    def _drop_if_empty(self, conversation: str, mine: Any, but: int | None = None) -> Any:
        """Drop the lease row when the queue is empty, message ``but`` aside (it is being removed).
        A message added later is found by the next claim, which makes the row again."""
        others = [outbox.c.conversation == conversation, outbox.c.state == PENDING]
        if but is not None:
            others.append(outbox.c.id != but)
        return delete(outbox_leases).where(mine, ~select(outbox.c.id).where(*others).exists())

    async def renew(self, conversation: str, owner: str, until: datetime) -> bool:
        renewed = await self.c.execute(
            update(outbox_leases)
            .where(outbox_leases.c.conversation == conversation, outbox_leases.c.owner == owner)
            .values(lease_until=until)
        )
        return renewed.rowcount == 1

    async def release(
        self,
        conversation: str,
        owner: str,
        not_before: datetime | None = None,
        error: str = "",
        unsent: Outgoing | None = None,
    ) -> None:
        mine = and_(outbox_leases.c.conversation == conversation, outbox_leases.c.owner == owner)
        if not_before is None:
            if (await self.c.execute(self._drop_if_empty(conversation, mine))).rowcount == 1:
                return
        given_up = await self.c.execute(
            update(outbox_leases)
            .where(mine)
            .values(owner=None, lease_until=None, not_before=not_before, error=error[:200] or None)
        )
        if unsent is not None and given_up.rowcount == 1:
            await self.c.execute(
                update(outbox)
                .where(outbox.c.id == unsent.id, outbox.c.state == PENDING)
                .values(attempts=unsent.attempts)
            )

    async def stats(self) -> dict[str, int]:
        rows = await self.c.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
        counts = {PENDING: 0, FAILED: 0}
        counts.update({state: int(n) for state, n in rows})
        return counts
