"""SIGTERM, as Docker and Kubernetes stop a replica: it exits 0 promptly without a traceback,
the renewal it was polling stays in flight, and the other replica finishes it.

Two real `renewbot serve` processes on one PostgreSQL, the Slack Web API stand-in and the
sandbox identity provider in this process.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from adapters.storage.crypto import generate_key
from adapters.storage.database import make_engine
from bot.sandbox.directory import demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from tests.integration.live import until
from tests.integration.test_crash import (
    posted,
    seed_demo_tenants,
    serve_env,
    served,
    sign_in,
    state_of,
    tail,
)
from tests.integration.test_slack import command_body, signed
from tests.servers.postgres import fresh_database
from tests.servers.slack import SlackStandIn

pytestmark = pytest.mark.postgres


def free_port() -> int:
    sock = bind_loopback(0)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def test_sigterm_leaves_the_renewal_to_the_other_replica(
    tmp_path: Path, postgres_url: str, slack: SlackStandIn
) -> None:
    """Replica A shows the code and gets SIGTERM; B, already running, validates it once."""
    url = await fresh_database(postgres_url)
    sandbox = await Sandbox(demo_directory(interval=1), workdir=tmp_path / "sandbox").start()
    key = generate_key()
    ports = free_port(), free_port()

    def env(port: int) -> dict[str, str]:
        return serve_env(url, port, sandbox, key, slack)

    await seed_demo_tenants(url, sandbox, key)
    engine = make_engine(url)
    logs = tmp_path / "a.log", tmp_path / "b.log"
    try:
        async with aiohttp.ClientSession() as http, served(env(ports[0]), ports[0], logs[0]) as a:
            body = command_body(slack, "contoso")
            base = f"http://127.0.0.1:{ports[0]}"
            async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                assert r.status == 200
            invited = await until(lambda: posted(slack, "/onboard/"))
            found = re.search(r"http://127\.0\.0\.1:\d+/onboard/[\w-]+", invited[0]["text"])
            assert found, invited[0]["text"]
            async with http.get(found.group(0)) as resp:
                csrf = (await resp.text()).split("name=csrf value='")[1].split("'")[0]
            async with http.post(
                f"{found.group(0)}/start",
                data={"csrf": csrf},
                headers={"Accept": "application/json"},
            ) as resp:
                code = str((await resp.json())["user_code"])
            async with served(env(ports[1]), ports[1], logs[1]):  # B adopts the flow at start
                a.send_signal(signal.SIGTERM)
                async with asyncio.timeout(30):  # inside Kubernetes' default grace period
                    status = await a.wait()
                said = await asyncio.to_thread(tail, logs[0])
                assert status == 0, said
                assert "Traceback" not in said and key not in said
                assert (await state_of(engine))["state"] == "code_issued"  # not failed
                await sign_in(http, sandbox, code)
                await until(lambda: posted(slack, "renewed and validated", "C-alerts"), timeout=60)
                # the thread is paced apart from the alert channel: wait for its post too
                await until(lambda: posted(slack, "Validated:", "C-ops"), timeout=60)
        assert (await state_of(engine))["state"] == "validated"
        assert len([p for p in posted(slack, "Validated:") if p.get("channel") == "C-ops"]) == 1
    finally:
        await engine.dispose()
        await sandbox.stop()
