"""Stored conversation references, so push-only chats (Teams) can be written to after a restart.

A reference is the chat adapter's own JSON (service URL, conversation, bot and tenant ids); it
holds no secret. Keyed by conversation id; ``channel`` is the conversation's channel when it has
one, so alerts can find a way into a channel that only threads have been seen from.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.database import write_gate
from adapters.storage.tables import conversation_refs
from core.errors import StorageError


class SqlConversationStore:
    def __init__(self, engine: AsyncEngine, platform: str) -> None:
        self.engine = engine
        self.platform = platform

    async def save(self, conversation: str, channel: str | None, reference: dict[str, Any]) -> None:
        """Insert or refresh one reference (the service URL of a conversation may move)."""
        values = {
            "platform": self.platform,
            "channel": channel,
            "reference": json.dumps(reference, separators=(",", ":"), sort_keys=True),
            "updated_at": datetime.now(UTC),
        }
        refresh = (
            update(conversation_refs)
            .where(conversation_refs.c.conversation == conversation)
            .values(**values)
        )
        try:
            async with write_gate(self.engine), self.engine.begin() as conn:
                if (await conn.execute(refresh)).rowcount == 0:
                    try:
                        async with conn.begin_nested():
                            await conn.execute(
                                conversation_refs.insert().values(
                                    conversation=conversation, **values
                                )
                            )
                    except IntegrityError:  # another process inserted it meanwhile
                        await conn.execute(refresh)
        except (OperationalError, DBAPIError) as exc:
            raise StorageError("the database failed to store a conversation") from exc

    async def load(self, conversation: str) -> dict[str, Any] | None:
        return await self._one(conversation_refs.c.conversation == conversation)

    async def in_channel(self, channel: str) -> dict[str, Any] | None:
        """The newest reference seen in ``channel`` (any of its threads)."""
        return await self._one(
            (conversation_refs.c.channel == channel) | (conversation_refs.c.conversation == channel)
        )

    async def _one(self, where: Any) -> dict[str, Any] | None:
        try:
            async with write_gate(self.engine), self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(conversation_refs.c.reference)
                        .where(where, conversation_refs.c.platform == self.platform)
                        .order_by(conversation_refs.c.updated_at.desc())
                        .limit(1)
                    )
                ).first()
        except (OperationalError, DBAPIError) as exc:
            raise StorageError("the database failed to load a conversation") from exc
        if row is None:
            return None
        loaded: dict[str, Any] = json.loads(row.reference)
        return loaded
