"""Storage of the token API: service keys, refresh leases and the audit of issued tokens.

Keys are stored as the SHA-256 of their secret part (the secret is 256 random bits: a slow hash
adds nothing). A refresh lease is one row per (tenant, token set), taken with an UPDATE guarded by
its expiry (or an INSERT when the row is new): on PostgreSQL a concurrent claimer blocks on the
row, re-reads the guard after the first commits and gets nothing, so one replica refreshes. Audit
rows are written together: by a flush shortly after the answers (the default), or awaited with
the rows that arrive together sharing one INSERT (``core.batching``). Must not store or log a
token or a key's secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.database import write_gate
from adapters.storage.tables import service_keys, token_issues, token_refresh_leases
from core.batching import Coalescer
from core.errors import StorageError
from core.ports import ServiceKey, TokenIssue

L = token_refresh_leases.c
log = logging.getLogger("renewbot.tokens")


def _key(row: Row[Any]) -> ServiceKey:
    return ServiceKey(
        row.key_id,
        row.service,
        row.secret_hash,
        tuple(json.loads(row.tenants)),
        tuple(json.loads(row.token_sets)),
        row.rate_per_minute,
        row.created_at,
        row.revoked_at,
    )


class SqlTokenGrants:
    """``flush_every`` > 0: audit rows are written by a background flush at most that many
    seconds after the answer (measured: an awaited SQLite commit per request costs about 500 us
    of CPU, two thirds of a cached token's cost, bench/tokens.py); a crash loses at most that
    window of audit rows. 0: each answer waits for its row (group commit)."""

    def __init__(self, engine: AsyncEngine, flush_every: float = 0.0) -> None:
        self.engine = engine
        self.flush_every = flush_every
        self._audit = Coalescer(self._store_issues)
        self._pending: list[TokenIssue] = []
        self._flusher: asyncio.Task[None] | None = None

    async def key(self, key_id: str) -> ServiceKey | None:
        query = select(service_keys).where(service_keys.c.key_id == key_id)
        try:
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to read a service key") from exc
        return _key(row) if row else None

    async def add_key(self, key: ServiceKey) -> None:
        async with write_gate(self.engine), self.engine.begin() as conn:
            await conn.execute(
                insert(service_keys).values(
                    key_id=key.key_id,
                    service=key.service,
                    secret_hash=key.secret_hash,
                    tenants=json.dumps(list(key.tenants)),
                    token_sets=json.dumps(list(key.token_sets)),
                    rate_per_minute=key.rate_per_minute,
                    created_at=key.created_at,
                )
            )

    async def keys(self) -> list[ServiceKey]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(service_keys).order_by(service_keys.c.created_at))
            return [_key(r) for r in rows]

    async def revoke(self, ref: str, at: datetime) -> int:
        async with write_gate(self.engine), self.engine.begin() as conn:
            result = await conn.execute(
                update(service_keys)
                .where(
                    or_(service_keys.c.key_id == ref, service_keys.c.service == ref),
                    service_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
        return int(result.rowcount)

    async def claim_refresh(
        self, tenant_id: str, token_set: str, owner: str, until: datetime, now: datetime
    ) -> bool:
        guard = update(token_refresh_leases).where(
            L.tenant_id == tenant_id,
            L.token_set == token_set,
            or_(L.lease_until.is_(None), L.lease_until < now, L.owner == owner),
        )
        try:
            async with write_gate(self.engine), self.engine.begin() as conn:
                result = await conn.execute(guard.values(owner=owner, lease_until=until))
                if result.rowcount == 1:
                    return True
                exists = await conn.execute(
                    select(L.owner).where(L.tenant_id == tenant_id, L.token_set == token_set)
                )
                if exists.first() is not None:
                    return False  # held by another, and alive
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(token_refresh_leases).values(
                                tenant_id=tenant_id,
                                token_set=token_set,
                                owner=owner,
                                lease_until=until,
                            )
                        )
                except IntegrityError:
                    return False  # another replica inserted it first
                return True
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to lease a token refresh") from exc

    async def release_refresh(self, tenant_id: str, token_set: str, owner: str) -> None:
        async with write_gate(self.engine), self.engine.begin() as conn:
            await conn.execute(
                update(token_refresh_leases)
                .where(L.tenant_id == tenant_id, L.token_set == token_set, L.owner == owner)
                .values(owner=None, lease_until=None)
            )

    async def issued(self, issue: TokenIssue) -> None:
        if self.flush_every <= 0:
            await self._audit(issue)
            return
        self._pending.append(issue)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(), name="token-audit")

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_every)
        await self.flush()

    async def flush(self) -> None:
        """Write the audit rows not yet written (also at shutdown)."""
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            try:
                await self._store_issues(batch)
            except StorageError:
                log.exception("tokens.audit_not_written", extra={"rows": len(batch)})
                self._pending[:0] = batch  # kept for the next flush
                return

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()

    async def _store_issues(self, issues: list[TokenIssue]) -> list[None]:
        rows = [
            {
                "at": i.at,
                "key_id": i.key_id,
                "service": i.service,
                "tenant_key": i.tenant_key,
                "token_set": i.token_set,
                "expires_at": i.expires_at,
                "refreshed": i.refreshed,
            }
            for i in issues
        ]
        try:
            async with write_gate(self.engine), self.engine.begin() as conn:
                await conn.execute(insert(token_issues), rows)
        except (DBAPIError, OSError) as exc:
            raise StorageError("the database failed to store the token audit") from exc
        return [None] * len(issues)

    async def issues(self, tenant_key: str | None = None, limit: int = 100) -> list[TokenIssue]:
        """The newest audit rows (for `keys service list`, tests and operators)."""
        query = select(token_issues).order_by(token_issues.c.id.desc()).limit(limit)
        if tenant_key:
            query = query.where(token_issues.c.tenant_key == tenant_key)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                TokenIssue(
                    r.at, r.key_id, r.service, r.tenant_key, r.token_set, r.expires_at, r.refreshed
                )
                for r in rows
            ]
