"""SqlUnitOfWork: one transaction over one AsyncConnection, with every repository on it.

Database failures become StorageError here, the one translation of SQLAlchemy's errors for
everything a unit of work does. SQLite transactions of one process queue on the write gate.
"""

from __future__ import annotations

from typing import Any, cast

import asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from adapters.storage.crypto import SecretBox
from adapters.storage.database import READ_ONLY, gate_for
from adapters.storage.emails import SqlChaseLog, SqlEmailOutbox
from adapters.storage.outbox import SqlOutbox
from adapters.storage.records import SqlAuditLog, SqlIdentityErrorLog, SqlJobRuns
from adapters.storage.renewals import SqlRenewalRepository
from adapters.storage.tenants import SqlTenantRepository
from adapters.storage.webhooks import SqlWebhookOutbox
from core.errors import StorageError

# asyncpg's own errors, from the statements it sends itself (database.Direct); as SQLAlchemy's
# DBAPIError, a constraint's violation is not "the database failed"
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
)
DRIVER_INTEGRITY = asyncpg.IntegrityConstraintViolationError


class OnDemand:
    """A one-write unit's SQLAlchemy connection, made only if one of its statements needs it.

    In a PostgreSQL unit of one write, the busiest statements go by asyncpg itself
    (``database.Direct``) on the pooled connection the unit checked out: entering and leaving
    SQLAlchemy's connection (checkout, execution options, begin, close) cost more client CPU
    than one of those statements (bench/wrk.py). The others (a refused request reading the open
    renewal, say) get a SQLAlchemy connection over that same pooled connection, in autocommit;
    closing it gives the pooled connection back, as closing this does when it was never made.
    """

    def __init__(self, engine: AsyncEngine, raw: PoolProxiedConnection) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._raw = raw
        self._conn: AsyncConnection | None = None

    async def connection(self) -> AsyncConnection:
        if self._conn is None:
            sync = Connection(self.engine.sync_engine, connection=self._raw)
            self._conn = AsyncConnection(self.engine, sync)
            await self._conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await (await self.connection()).execute(*args, **kwargs)

    def in_transaction(self) -> bool:
        return self._conn is not None and self._conn.in_transaction()

    async def commit(self) -> None:
        if self._conn is not None:
            await self._conn.commit()

    async def rollback(self) -> None:
        if self._conn is not None:
            await self._conn.rollback()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        else:
            await greenlet_spawn(self._raw.close)


class SqlUnitOfWork:
    """One transaction. Leaving the block without commit() rolls back."""

    conn: AsyncConnection
    tenants: SqlTenantRepository
    renewals: SqlRenewalRepository
    audit: SqlAuditLog
    identity_errors: SqlIdentityErrorLog
    jobs: SqlJobRuns
    outbox: SqlOutbox
    webhooks: SqlWebhookOutbox
    emails: SqlEmailOutbox
    chases: SqlChaseLog

    def __init__(
        self, engine: AsyncEngine, box: SecretBox, read_only: bool = False, one_write: bool = False
    ) -> None:
        self.driver: Any = None  # asyncpg's connection, in autocommit (database.Direct)
        self.engine = engine
        self.box = box
        self.read_only = read_only
        # PostgreSQL: a unit of one write statement needs no BEGIN/COMMIT (the repositories make
        # each write one statement there, e.g. a renewal with its audit entry)
        self.autocommit = one_write and engine.dialect.name == "postgresql"

    async def __aenter__(self) -> SqlUnitOfWork:
        # SQLite: writers queue on the gate; a reader reads its WAL snapshot beside them.
        self._gate = None if self.read_only else gate_for(self.engine)
        if self._gate is not None:
            await self._gate.acquire()
        try:
            if self.autocommit:  # the pooled connection itself; the busiest statements go by
                raw = await self.engine.raw_connection()  # its driver (database.Direct)
                # (OnDemand has what the repositories use of a connection)
                self.conn = cast(AsyncConnection, OnDemand(self.engine, raw))
                driver = self.driver = raw.driver_connection
            else:
                self.conn = await self.engine.connect()
                if self.read_only:
                    await self.conn.execution_options(**{READ_ONLY: True})
                await self.conn.begin()
                driver = None
        except BaseException as exc:
            self._release()
            unreachable = (OperationalError, DBAPIError, OSError, *DRIVER_ERRORS)
            if isinstance(exc, (*unreachable, self.engine.dialect.loaded_dbapi.Error)):
                raise StorageError("the database is not reachable") from exc
            raise
        self.tenants = SqlTenantRepository(self.conn)
        self.renewals = SqlRenewalRepository(self.conn, self.box, driver)
        self.audit = SqlAuditLog(self.conn)
        self.identity_errors = SqlIdentityErrorLog(self.conn)
        self.jobs = SqlJobRuns(self.conn)
        self.outbox = SqlOutbox(self.conn, self.box)
        self.webhooks = SqlWebhookOutbox(self.conn)
        self.emails = SqlEmailOutbox(self.conn, self.box)
        self.chases = SqlChaseLog(self.conn)
        return self

    def _release(self) -> None:
        if self._gate is not None and self._gate.locked():
            self._gate.release()
        self._gate = None

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self.conn.in_transaction():
                await self.conn.rollback()
        finally:
            try:
                await self.conn.close()
            finally:
                self._release()
        if isinstance(exc, (OperationalError, DBAPIError)) and not isinstance(exc, IntegrityError):
            raise StorageError("the database failed") from exc
        if self.driver is not None and (
            isinstance(exc, DRIVER_ERRORS) and not isinstance(exc, DRIVER_INTEGRITY)
        ):
            raise StorageError("the database failed") from exc  # a Direct statement's

    async def commit(self) -> None:
        try:
            await self.conn.commit()
        except (OperationalError, DBAPIError) as exc:
            raise StorageError("the database failed to commit") from exc

    async def rollback(self) -> None:
        await self.conn.rollback()
