"""Three `renewbot serve` replicas on one PostgreSQL, a database restart in the middle.

A Slack retry reaching another replica and near-simultaneous commands for one tenant open one
thread and one renewal; PostgreSQL restarts while the renewal is open; the customer's page and
Start go to other replicas; the renewal is validated once and announced once.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text

from adapters.storage.crypto import generate_key
from adapters.storage.database import make_engine
from bot.sandbox.directory import demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from tests.conftest import need
from tests.integration.live import until
from tests.integration.test_crash import posted, seed_demo_tenants, serve_env, served, sign_in
from tests.integration.test_slack import command_body, signed
from tests.servers import postgres
from tests.servers.slack import SlackStandIn

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, object]]:
    need(postgres.available())  # skips locally without PostgreSQL, fails in CI
    with postgres.restartable_server() as server:
        yield server


def free_port() -> int:
    sock = bind_loopback(0)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def test_three_replicas_one_thread_and_a_database_restart(
    tmp_path: Path, own_postgres: tuple[str, object], slack: SlackStandIn
) -> None:
    """One thread for a retried and doubled command across replicas; after a PostgreSQL restart
    the renewal still ends validated, announced once."""
    server_url, restart = own_postgres
    url = await postgres.fresh_database(server_url)
    sandbox = await Sandbox(demo_directory(interval=1), workdir=tmp_path / "sandbox").start()
    key = generate_key()
    await seed_demo_tenants(url, sandbox, key)
    ports = [free_port() for _ in range(3)]
    public = f"http://127.0.0.1:{ports[0]}"

    def env(port: int) -> dict[str, str]:
        return serve_env(url, port, sandbox, key, slack, public=public, poll_lease="3")

    engine = make_engine(url)
    try:
        async with (
            served(env(ports[0]), ports[0], tmp_path / "a.log"),
            served(env(ports[1]), ports[1], tmp_path / "b.log"),
            served(env(ports[2]), ports[2], tmp_path / "c.log"),
            aiohttp.ClientSession() as http,
        ):
            body = command_body(slack, "contoso", trigger="trigger-1")
            other = command_body(slack, "contoso", user="U-bob", trigger="trigger-2")

            async def send(port: int, payload: str, retry: int | None = None) -> int:
                headers = signed(payload)
                if retry is not None:  # Slack's retry of the same command (no answer in time)
                    headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "timeout"}
                async with http.post(
                    f"http://127.0.0.1:{port}/slack/events", data=payload, headers=headers
                ) as resp:
                    return resp.status

            statuses = await asyncio.gather(
                send(ports[0], body),
                send(ports[1], body, retry=1),
                send(ports[2], body, retry=2),
                send(ports[2], other),
            )
            assert all(s == 200 for s in statuses)
            await until(lambda: posted(slack, "/onboard/"), 60)
            async with engine.connect() as conn:
                count = (await conn.execute(text("SELECT count(*) FROM renewals"))).scalar()
            assert count == 1
            openings = [
                a
                for a in slack.called("chat.postMessage")
                if "thread_ts" not in a and "Contoso" in str(a.get("text"))
            ]
            assert len(openings) == 1, openings  # one thread, whichever replica won

            await asyncio.to_thread(restart)  # type: ignore[arg-type]

            found = re.search(r"/onboard/[\w-]+", str(posted(slack, "/onboard/")[0]["text"]))
            assert found
            path = found.group(0)

            async def page() -> str | None:  # the first requests after the restart may 503
                async with http.get(f"http://127.0.0.1:{ports[1]}{path}") as resp:
                    return await resp.text() if resp.status == 200 else None

            html = await until(page, 60)
            csrf = html.split("name=csrf value='")[1].split("'")[0]
            async with http.post(
                f"http://127.0.0.1:{ports[2]}{path}/start",
                data={"csrf": csrf},
                headers={"Accept": "application/json", "Origin": public},
            ) as resp:
                assert resp.status == 200, await resp.text()
                code = str((await resp.json())["user_code"])
            await sign_in(http, sandbox, code)

            async def validated() -> bool:
                async with engine.connect() as conn:
                    state = (await conn.execute(text("SELECT state FROM renewals"))).scalar()
                return state == "validated"

            await until(validated, 90)
            await until(lambda: posted(slack, "renewed and validated", "C-alerts"), 60)
            await until(lambda: posted(slack, "Validated:", "C-ops"), 60)
        assert len(posted(slack, "renewed and validated", "C-alerts")) == 1
        assert len([a for a in posted(slack, "Validated:") if a.get("channel") == "C-ops"]) == 1
    finally:
        await engine.dispose()
        await sandbox.stop()
