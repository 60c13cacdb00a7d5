from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox, generate_key
from adapters.storage.database import make_engine, upgrade
from tests.servers import postgres

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(reason: str | None) -> None:
    """Skip for a missing service locally; in CI a missing service fails the build."""
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI requires this service: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _clean_renewbot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come only from what a test passes explicitly."""
    for name in list(os.environ):
        if name.startswith("RENEWBOT_") and name != "RENEWBOT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("RENEWBOT_TEST_DATABASE_URL")
    if given:
        yield given
        return
    need(postgres.available())
    with postgres.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def box() -> SecretBox:
    """One key for the session: tests share the PostgreSQL database."""
    return SecretBox([generate_key()])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[AsyncEngine]:
    """A migrated database: embedded SQLite, and the suite's own PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/renewbot.db"
    else:
        url = request.getfixturevalue("postgres_url")
    eng = make_engine(url)
    await upgrade(eng)
    yield eng
    await eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def own_engine(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[AsyncEngine]:
    """A migrated database of the test's own: for tests whose workers take whatever is pending
    (an outbox dispatcher would deliver other tests' rows from the shared database)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/own.db"
    else:
        url = await postgres.fresh_database(request.getfixturevalue("postgres_url"))
    eng = make_engine(url)
    await upgrade(eng)
    yield eng
    await eng.dispose()
