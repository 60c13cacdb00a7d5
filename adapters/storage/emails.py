"""SqlEmailOutbox and SqlChaseLog: core's EmailOutbox and ChaseLog ports on their tables.

An email row is claimed alone (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas split the
due rows without waiting on each other; SQLite drops the clause and its write gate serialises
claims), with a lease that a crashed process's row outlives only until ``lease_until``. The body
(the Auth URL) is sealed with the SecretBox and set to NULL once the email is sent or dropped. A
chase step is a row whose primary key is (renewal, step): an INSERT that meets an existing row
does nothing, so one caller wins. Must not send anything: storage only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage.crypto import SecretBox
from adapters.storage.database import dialect_insert
from adapters.storage.tables import chase_steps, email_outbox
from core.ports import Email, EmailRecord, OutgoingEmail

PENDING, SENT, FAILED, DROPPED = "pending", "sent", "failed", "dropped"


def seal(email: Email, box: SecretBox) -> str:
    plain = {
        "to": email.to,
        "subject": email.subject,
        "intro": list(email.intro),
        "link": email.link,
        "link_label": email.link_label,
        "outro": list(email.outro),
    }
    return box.seal(json.dumps(plain).encode()).decode()


def _email(sealed: str, box: SecretBox) -> Email:
    body = json.loads(box.open(sealed.encode()))
    return Email(
        body["to"],
        body["subject"],
        tuple(body["intro"]),
        body["link"],
        body.get("link_label", ""),
        tuple(body.get("outro", ())),
    )


class SqlEmailOutbox:
    def __init__(self, conn: AsyncConnection, box: SecretBox) -> None:
        self.c = conn
        self.box = box

    async def add(self, item: OutgoingEmail, now: datetime) -> None:
        await self.c.execute(
            insert(email_outbox),
            {
                "renewal_id": item.renewal_id,
                "kind": item.kind,
                "invitation": item.invitation,
                "recipient": item.email.to[:254],
                "message_id": item.message_id,
                "body": seal(item.email, self.box),
                "state": PENDING,
                "attempts": 0,
                "created_at": now,
                "not_before": item.not_before,
            },
        )

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[OutgoingEmail]:
        due = (
            select(email_outbox.c.id)
            .where(
                email_outbox.c.state == PENDING,
                or_(email_outbox.c.not_before.is_(None), email_outbox.c.not_before <= now),
                or_(email_outbox.c.lease_until.is_(None), email_outbox.c.lease_until < now),
            )
            .order_by(email_outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = [row.id for row in await self.c.execute(due)]
        if not ids:
            return []
        await self.c.execute(
            update(email_outbox)
            .where(email_outbox.c.id.in_(ids))
            .values(owner=owner, lease_until=until, attempts=email_outbox.c.attempts + 1)
        )
        rows = await self.c.execute(
            select(email_outbox).where(email_outbox.c.id.in_(ids)).order_by(email_outbox.c.id)
        )
        return [self._item(r) for r in rows]

    def _item(self, row: Row[Any]) -> OutgoingEmail:
        return OutgoingEmail(
            renewal_id=row.renewal_id,
            kind=row.kind,
            invitation=row.invitation,
            email=_email(row.body, self.box),
            message_id=row.message_id,
            not_before=row.not_before,
            id=row.id,
            attempts=row.attempts,
            created_at=row.created_at,
        )

    async def _end(self, item_id: int, state: str, now: datetime, **values: Any) -> None:
        await self.c.execute(
            update(email_outbox)
            .where(email_outbox.c.id == item_id)
            .values(state=state, owner=None, lease_until=None, **values)
        )

    async def sent(self, item_id: int, now: datetime) -> None:
        await self._end(item_id, SENT, now, sent_at=now, body=None)

    async def failed(self, item_id: int, error: str, now: datetime) -> None:
        await self._end(item_id, FAILED, now, error=error[:200], body=None)

    async def dropped(self, item_id: int, why: str, now: datetime) -> None:
        await self._end(item_id, DROPPED, now, error=why[:200], body=None)

    async def retry(self, item_id: int, owner: str, not_before: datetime, error: str) -> None:
        await self.c.execute(
            update(email_outbox)
            .where(email_outbox.c.id == item_id, email_outbox.c.owner == owner)
            .values(owner=None, lease_until=None, not_before=not_before, error=error[:200])
        )

    async def history(self, renewal_ids: Sequence[str]) -> list[EmailRecord]:
        if not renewal_ids:
            return []
        rows = await self.c.execute(
            select(
                email_outbox.c.renewal_id,
                email_outbox.c.kind,
                email_outbox.c.recipient,
                email_outbox.c.state,
                email_outbox.c.created_at,
                email_outbox.c.not_before,
                email_outbox.c.sent_at,
                email_outbox.c.error,
            )
            .where(email_outbox.c.renewal_id.in_(list(renewal_ids)))
            .order_by(email_outbox.c.id)
        )
        return [
            EmailRecord(
                r.renewal_id,
                r.kind,
                r.recipient,
                r.state,
                r.created_at,
                r.not_before,
                r.sent_at,
                r.error or "",
            )
            for r in rows
        ]


class SqlChaseLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def claim(self, renewal_id: str, step: str, at: datetime) -> bool:
        stmt = dialect_insert(self.c.dialect.name, chase_steps).on_conflict_do_nothing()
        # PostgreSQL: a concurrent INSERT of the same key waits for the first transaction, then
        # does nothing once it committed: exactly one caller sees a row inserted.
        result = await self.c.execute(stmt, {"renewal_id": renewal_id, "step": step, "at": at})
        return result.rowcount == 1

    async def taken(self, renewal_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        if not renewal_ids:
            return {}
        rows = await self.c.execute(
            select(chase_steps).where(chase_steps.c.renewal_id.in_(list(renewal_ids)))
        )
        found: dict[str, dict[str, datetime]] = {}
        for r in rows:
            found.setdefault(r.renewal_id, {})[r.step] = r.at
        return found
