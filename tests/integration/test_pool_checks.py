"""A pooled PostgreSQL connection is checked before use only when it rested or the server hung
up: a busy bot pays no check per unit of work (SQLAlchemy's pre-ping cost three round trips
each, about ten per renewal), and a rested or hung-up connection never reaches a unit of work
dead (the database restart itself: tests/integration/test_three_replicas.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage import database
from adapters.storage.database import make_engine
from tests.integration.live import until

pytestmark = pytest.mark.postgres


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> Iterator[list[int]]:
    seen: list[int] = []
    real = type(make_engine(postgres_url).dialect).do_ping

    def counted(self: object, dbapi_conn: object) -> bool:
        seen.append(1)
        return bool(real(self, dbapi_conn))  # type: ignore[arg-type]

    monkeypatch.setattr(type(make_engine(postgres_url).dialect), "do_ping", counted)
    yield seen


async def one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1


async def test_a_connection_in_use_is_not_checked_a_rested_one_is(
    postgres_url: str, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER", 0.2)
    engine = make_engine(postgres_url)
    try:
        for _ in range(20):  # back to back, as under load
            await one(engine)
        assert not pings
        await asyncio.sleep(0.3)  # rested longer than PING_AFTER
        await one(engine)
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_a_connection_the_server_hung_up_on_is_replaced_before_use(
    postgres_url: str, pings: list[int]
) -> None:
    """The server ends the session (as a restart does): the next unit of work gets a fresh
    connection, without a check's round trip and without an error."""
    engine, killer = make_engine(postgres_url), make_engine(postgres_url)
    rested: list[Any] = []
    event.listen(engine.sync_engine.pool, "checkin", lambda dbapi, _record: rested.append(dbapi))
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        async with killer.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        def hung_up() -> bool:  # the pooled connection's socket saw the server go
            return bool(rested[-1].driver_connection.is_closed())

        await until(hung_up, 10)
        async with engine.connect() as conn:
            fresh = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        assert fresh != pid and not pings
    finally:
        await engine.dispose()
        await killer.dispose()
