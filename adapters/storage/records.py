"""Append-only records: the audit trail, identity errors (msal_errors) and job runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.storage.tables import (
    audit_events,
    job_runs,
    msal_errors,
)
from core.ports import AuditEntry, IdentityErrorRecord


class SqlAuditLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def add(self, entry: AuditEntry) -> None:
        await self.c.execute(
            insert(audit_events),
            {
                "at": entry.at,
                "kind": entry.kind,
                "actor": entry.actor,
                "renewal_id": entry.renewal_id,
                "tenant_key": entry.tenant_key,
                "detail": entry.detail,
            },
        )

    async def for_tenant(self, tenant_key: str, limit: int = 20) -> list[AuditEntry]:
        rows = await self.c.execute(
            select(audit_events)
            .where(audit_events.c.tenant_key == tenant_key)
            .order_by(audit_events.c.at.desc(), audit_events.c.id.desc())
            .limit(limit)
        )
        return [
            AuditEntry(r.at, r.kind, r.actor, r.renewal_id, r.tenant_key, r.detail) for r in rows
        ]


async def audit_since(conn: AsyncConnection, since: datetime) -> list[AuditEntry]:
    """Every audit entry from ``since`` on, oldest first (for exports)."""
    rows = await conn.execute(
        select(audit_events)
        .where(audit_events.c.at >= since)
        .order_by(audit_events.c.at, audit_events.c.id)
    )
    return [AuditEntry(r.at, r.kind, r.actor, r.renewal_id, r.tenant_key, r.detail) for r in rows]


class SqlIdentityErrorLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def add(self, record: IdentityErrorRecord) -> bool:
        """Store one error. False when (source, client_ref) was already reported."""
        values = {
            "at": record.at,
            "tenant_key": record.tenant_key,
            "code": record.code,
            "error": record.error,
            "description": record.description,
            "correlation_id": record.correlation_id,
            "source": record.source,
            "client_ref": record.client_ref,
        }
        try:
            async with self.c.begin_nested():
                await self.c.execute(insert(msal_errors), values)
        except IntegrityError:
            return False
        return True

    async def newest(
        self, tenant_key: str | None = None, limit: int = 10
    ) -> list[IdentityErrorRecord]:
        query = select(msal_errors).order_by(msal_errors.c.at.desc(), msal_errors.c.id.desc())
        if tenant_key:
            query = query.where(msal_errors.c.tenant_key == tenant_key)
        rows = await self.c.execute(query.limit(limit))
        return [
            IdentityErrorRecord(
                r.at, r.tenant_key, r.code, r.error, r.description, r.correlation_id, r.source
            )
            for r in rows
        ]


class SqlJobRuns:
    def __init__(self, conn: AsyncConnection) -> None:
        self.c = conn

    async def claim(self, name: str, now: datetime, every: timedelta) -> bool:
        """An UPDATE guarded by the last run time: only one replica's claim matches."""
        result = await self.c.execute(
            update(job_runs)
            .where(job_runs.c.name == name, job_runs.c.last_run_at <= now - every)
            .values(last_run_at=now)
        )
        if result.rowcount == 1:
            return True
        try:
            async with self.c.begin_nested():
                await self.c.execute(insert(job_runs).values(name=name, last_run_at=now))
        except IntegrityError:
            return False  # it exists and ran recently
        return True
