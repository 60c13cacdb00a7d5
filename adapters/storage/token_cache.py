"""SqlTokenCacheStore: each tenant's MSAL token cache, encrypted, loaded and saved in batches.

A row that no configured key opens (or that is not a cache) is that tenant's
TokenCacheUnreadableError, never the database's; database failures are StorageError.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.database import upsert, write_gate
from adapters.storage.tables import (
    token_caches,
)
from core.batching import Coalescer
from core.errors import (
    StorageError,
    TokenCacheUnreadableError,
)

# Built once: building a statement costs more CPU than running it (SQLAlchemy caches the compiled
# form, not the construction); the ids go in as one expanding parameter.
_LOAD = select(token_caches.c.tenant_id, token_caches.c.ciphertext).where(
    token_caches.c.tenant_id.in_(bindparam("b_ids", expanding=True))
)


class SqlTokenCacheStore:
    """The MSAL token cache per tenant, encrypted.

    Loads and saves that arrive together share one statement and one short transaction (see
    ``core.batching``): a health sweep loads and saves hundreds of caches at once. A cache that no
    configured key opens, or that does not open to a token cache, fails that tenant's load alone
    with TokenCacheUnreadableError; a database failure is a StorageError.
    """

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box
        self._load = Coalescer(self._load_many)
        self._save = Coalescer(self._save_many)
        self._upsert = upsert(engine, token_caches, ["tenant_id"])  # built once: costly to build
        # One statement needs no transaction around it: in autocommit a load or a save is one
        # round trip instead of three (BEGIN, the statement, COMMIT/ROLLBACK). Each row stands
        # alone (one tenant's cache), and each statement is atomic by itself.
        # (PostgreSQL only: SQLite's writes keep their transaction and the write gate.)
        self._direct = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else None
        )

    def _connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """For one write: autocommit on PostgreSQL, a transaction on SQLite."""
        return self._direct.connect() if self._direct is not None else self.engine.begin()

    async def load(self, tenant_id: str) -> str | None:
        return await self._load(tenant_id)

    async def save(self, tenant_id: str, serialized: str) -> None:
        await self._save((tenant_id, serialized))

    async def _load_many(self, tenant_ids: list[str]) -> list[str | Exception | None]:
        try:
            async with write_gate(self.engine), (self._direct or self.engine).connect() as conn:
                rows = await conn.execute(_LOAD, {"b_ids": list(set(tenant_ids))})
                found = {row.tenant_id: row.ciphertext for row in rows}
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to load token caches") from exc
        return [self._open(tid, found[tid]) if tid in found else None for tid in tenant_ids]

    def _open(self, tenant_id: str, sealed: bytes) -> str | Exception:
        """The cache's text, or the error of this tenant alone (the batch's others still load)."""
        try:
            body = self.box.open(sealed).decode()
            if isinstance(json.loads(body), dict):  # what MSAL's deserialize expects
                return body
        except (StorageError, ValueError, TypeError):  # undecryptable, not UTF-8, not JSON
            pass
        return TokenCacheUnreadableError(tenant_id)

    async def unreadable(self, page: int = 1000) -> tuple[int, list[str]]:
        """Every stored cache opened once (the start-up key check): how many there are, and the
        tenant ids of those that do not open. Reads in pages; opens them off the event loop."""
        checked, after = 0, ""
        bad: list[str] = []
        query = (
            select(token_caches.c.tenant_id, token_caches.c.ciphertext)
            .where(token_caches.c.tenant_id > bindparam("b_after"))
            .order_by(token_caches.c.tenant_id)
            .limit(page)
        )
        while True:
            try:
                async with self.engine.connect() as conn:
                    result = await conn.execute(query, {"b_after": after})
                    rows = [(str(r.tenant_id), bytes(r.ciphertext)) for r in result]
            except (DBAPIError, OSError) as exc:
                raise StorageError("the database failed to read token caches") from exc
            if not rows:
                return checked, bad
            bad += await asyncio.to_thread(self._unopened, rows)
            checked += len(rows)
            after = rows[-1][0]

    def _unopened(self, rows: Sequence[tuple[str, bytes]]) -> list[str]:
        return [tid for tid, sealed in rows if isinstance(self._open(tid, sealed), Exception)]

    async def _save_many(self, items: list[tuple[str, str]]) -> list[None]:
        now = datetime.now(UTC)
        latest = dict(items)  # one row per tenant: the last save asked for wins
        rows = [
            {"tenant_id": tid, "ciphertext": self.box.seal(body.encode()), "updated_at": now}
            for tid, body in latest.items()
        ]
        try:
            async with write_gate(self.engine), self._connection() as conn:
                await conn.execute(self._upsert, rows)
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to save token caches") from exc
        return [None] * len(items)
