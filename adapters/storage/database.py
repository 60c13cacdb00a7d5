"""Engine creation for SQLite (embedded default) and PostgreSQL, and schema migration.

SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE so concurrent writers wait instead of failing.
Inside one process, SQLite transactions also queue on ``write_gate``, an asyncio lock, in arrival
order: SQLite's own busy handler sleeps with growing back-off (up to 100 ms at a time), so at a few
dozen commands per second waiting writers formed convoys of seconds (measured: command to first
thread post p99 2.7 s at 50 commands/s, the in-process Slack bench of the time). Other processes
still wait through the busy timeout. PostgreSQL has no gate.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Insert, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")


READ_ONLY = "renewbot_read_only"
"""Connection execution option of a read-only unit of work."""

_GATES: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


def gate_for(engine: AsyncEngine) -> asyncio.Lock | None:
    """The in-process write queue of a SQLite engine (None for other databases)."""
    if engine.dialect.name != "sqlite":
        return None
    return _GATES.setdefault(engine.sync_engine, asyncio.Lock())


@asynccontextmanager
async def write_gate(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the engine's write queue (a no-op on PostgreSQL) for one transaction."""
    gate = gate_for(engine)
    if gate is None:
        yield
        return
    async with gate:
        yield


def dialect_insert(dialect: str, table: Table) -> Any:
    """INSERT in the dialect's own form, for ON CONFLICT (PostgreSQL and SQLite spell it the
    same) and RETURNING."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"renewbot stores its data in PostgreSQL or SQLite, not {dialect}")


def upsert(engine: AsyncEngine, table: Table, keys: Sequence[str]) -> Insert:
    """INSERT that updates the other columns when a row with ``keys`` exists (PostgreSQL and
    SQLite spell it the same). Execute it with a list of rows for one multi-row statement."""
    stmt = dialect_insert(engine.dialect.name, table)
    updated = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=updated)  # type: ignore[no-any-return]


POOL_SIZE = 30
"""PostgreSQL connections a process keeps open, and the most it opens: none beyond them (a
connection opened for a burst is closed when given back, and a new one costs a connect,
authentication and a fresh prepare of every statement it runs; with 25 kept and 5 for bursts, a
5 s run of renewals at full load opened 37, bench/wrk.py). Two replicas and a rolling update's
third fit PostgreSQL's default max_connections (100)."""


def make_engine(url: str, pool_size: int = POOL_SIZE) -> AsyncEngine:
    # hide_parameters: bound values (sealed token caches, invitation hashes) never reach the SQL
    # log at INFO/DEBUG, nor the text of a database error.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, hide_parameters=True, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
        return engine
    engine = create_async_engine(url, hide_parameters=True, pool_size=pool_size, max_overflow=0)
    _ping_when_idle(engine)
    return engine


PING_AFTER = 1.0
"""Seconds a pooled PostgreSQL connection may rest before it is checked before use."""


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it has rested ``PING_AFTER`` seconds.

    SQLAlchemy's ``pool_pre_ping`` checks at every checkout, and its asyncpg check is three round
    trips (BEGIN, ";", ROLLBACK): about ten per renewal, for connections used a millisecond ago.
    A connection the server hung up on (a restart closes every socket) is known without a round
    trip (asyncpg's ``is_closed()``), and one that rested is pinged; a dead one is replaced before
    the unit of work sees it (raising DisconnectionError in the checkout event: SQLAlchemy's
    "Disconnect Handling - Pessimistic", custom form). One that dies while in use is invalidated
    with the rest of the pool by SQLAlchemy on the first error it causes.
    """
    pool_events = engine.sync_engine.pool

    @event.listens_for(pool_events, "checkin")
    def _rested_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["rested_at"] = time.monotonic()

    @event.listens_for(pool_events, "checkout")
    def _check_if_rested(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_conn, "driver_connection", None)
        if driver is not None and driver.is_closed():  # the server hung up (a restart): no trip
            raise DisconnectionError
        rested_at = record.info.get("rested_at")
        if rested_at is None or time.monotonic() - rested_at < PING_AFTER:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # any failure: not usable; the pool connects afresh
            raise DisconnectionError from exc


_ASYNCPG = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # compiles; never connects


class Direct:
    """A statement of the busiest path sent by asyncpg itself: the SQL that SQLAlchemy compiles
    for it (once), without SQLAlchemy's execution layer, which cost more client CPU than the
    statement's own round trip (bench/wrk.py). Only in a PostgreSQL unit of work in autocommit
    (``one_write``): there SQLAlchemy sends no BEGIN that the statement would have to be inside.
    Values go in as the driver takes them (aware datetimes, bytes), rows come out as they are
    (timestamptz as aware UTC datetimes, as UTCDateTime makes them)."""

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=_ASYNCPG)
        self.sql: str = compiled.string
        self.names: list[str] = list(compiled.positiontup or ())
        # values the statement carries itself (e.g. LIMIT's); every other must be given
        self.defaults = {k: v for k, v in compiled.params.items() if v is not None}

    def args(self, params: dict[str, Any]) -> list[Any]:
        """The values in the statement's order. As SQLAlchemy would: a missing one is an error,
        not NULL, and a naive datetime is refused (UTCDateTime's rule), not read as local."""
        values = [params[n] if n in params else self.defaults[n] for n in self.names]
        for value in values:
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError("naive datetime")
        return values

    async def fetchrow(self, driver: Any, params: dict[str, Any]) -> Any:
        """The first row (attributes by column name, as SQLAlchemy's), or None."""
        row = await driver.fetchrow(self.sql, *self.args(params))
        return None if row is None else Record(row)


class Record:
    """An asyncpg row read by attribute, as a SQLAlchemy row is."""

    __slots__ = ("_row",)

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        try:
            return self._row[name]
        except KeyError:
            raise AttributeError(name) from None


_DIRECT: dict[int, tuple[Any, Direct]] = {}


def direct(statement: Any) -> Direct:
    """``Direct(statement)``, made once per statement (one built once: a module's constant, or
    a cached builder's; the statement is kept, so its id stays its own)."""
    found = _DIRECT.get(id(statement))
    if found is None:
        found = _DIRECT[id(statement)] = (statement, Direct(statement))
    return found[1]


async def fetchrow(
    conn: AsyncConnection, driver: Any, statement: Any, params: dict[str, Any]
) -> Any:
    """The first row of ``statement``, or None: by ``driver`` when given (``Direct``), else by
    SQLAlchemy on ``conn``."""
    if driver is not None:
        return await direct(statement).fetchrow(driver, params)
    return (await conn.execute(statement, params)).first()


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # let the begin hook below issue BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; fsync per checkpoint
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (a deferred transaction that later writes fails
        # at once if another wrote meanwhile); readers start a plain snapshot transaction.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on the engine's database."""

    def _run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Replicas starting together (and the migration job) upgrade one after the other;
            # the later ones find the schema current. Released at commit.
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_UPGRADE_LOCK})")
        await conn.run_sync(_run)


_UPGRADE_LOCK = 0x72656E6577  # "renew": any constant shared by every renewbot process


async def schema_revision(engine: AsyncEngine) -> tuple[str | None, str]:
    """(the database's migration revision, or None before the first upgrade; the latest)."""

    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        current = await conn.run_sync(_current)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return current, head or ""


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database (readiness). Raises whatever the driver raises."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
