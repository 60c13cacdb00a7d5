"""Nothing lost, nothing doubled: ``renewbot serve`` killed with SIGKILL at each step of a renewal.

A real server process on PostgreSQL, the Slack Web API stand-in and the sandbox identity provider
in this process. The process is killed at a chosen step (the sandbox holds the request that
follows it), started again, and the renewal must end VALIDATED with one "Validated" reply in its
thread and one announcement in the alert channel. A mock cannot show what survives a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import text

from adapters.storage.crypto import generate_key
from adapters.storage.database import make_engine
from bot.bootstrap import runtime
from bot.demo import demo_tenants
from bot.sandbox.directory import DEFAULT_CLIENT_ID, demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from bot.settings import Settings
from tests.integration.live import until
from tests.integration.test_slack import command_body, signed, slack_settings
from tests.servers.postgres import fresh_database
from tests.servers.slack import SlackStandIn

pytestmark = pytest.mark.postgres

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RENEWBOT_")}


class Held:
    """Holds the sandbox's requests that match, until released."""

    def __init__(self, matches: Callable[[web.Request, str], bool]) -> None:
        self.matches = matches
        self.released = asyncio.Event()
        self.seen = asyncio.Event()

    async def __call__(self, request: web.Request) -> None:
        grant = (
            str((await request.post()).get("grant_type", "")) if request.method == "POST" else ""
        )
        if self.matches(request, grant) and not self.released.is_set():
            self.seen.set()
            await self.released.wait()


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


@asynccontextmanager
async def served(env: dict[str, str], port: int, log: Path) -> AsyncIterator[Process]:
    out = await asyncio.to_thread(log.open, "ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        env={**BASE_ENV, **env},
        stdout=out,
        stderr=asyncio.subprocess.STDOUT,
    )
    out.close()
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"serve exited: {await asyncio.to_thread(tail, log)}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await until(ready, timeout=60)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def serve_env(
    url: str,
    port: int,
    sandbox: Sandbox,
    key: str,
    slack: SlackStandIn,
    *,
    public: str | None = None,
    poll_lease: str = "2",
) -> dict[str, str]:
    """The environment of a `renewbot serve` on ``port`` against the sandbox and the Slack
    stand-in (development mode, monitor off, a short poll lease so a dead process's work is
    adopted quickly)."""
    return {
        "RENEWBOT_ENVIRONMENT": "development",
        "RENEWBOT_DATABASE__URL": url,
        "RENEWBOT_WEB__HOST": "127.0.0.1",
        "RENEWBOT_WEB__PORT": str(port),
        "RENEWBOT_WEB__PUBLIC_URL": public or f"http://127.0.0.1:{port}",
        "RENEWBOT_IDENTITY__AUTHORITY_HOST": sandbox.authority_host,
        "RENEWBOT_IDENTITY__CLIENT_ID": DEFAULT_CLIENT_ID,
        "RENEWBOT_IDENTITY__CA_BUNDLE": str(sandbox.ca_path),
        "RENEWBOT_IDENTITY__GRAPH_URL": sandbox.graph_url,
        "RENEWBOT_IDENTITY__POLL_LEASE_SECONDS": poll_lease,
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": key,
        "RENEWBOT_MONITOR__ENABLED": "false",
        **{f"RENEWBOT_SLACK__{k.upper()}": str(v) for k, v in slack_settings(slack).items()},
    }


async def seed_demo_tenants(url: str, sandbox: Sandbox, key: str) -> None:
    """Migrate and add the sandbox's demo tenants, as `db upgrade` and `tenants import` do."""
    settings = Settings(
        _env_file=None,
        environment="development",
        database={"url": url},
        security={"encryption_keys": key},
        identity={"authority_host": sandbox.authority_host, "client_id": DEFAULT_CLIENT_ID},
    )
    async with runtime(settings) as rt:
        async with rt.uow() as uow:
            for t in demo_tenants(sandbox.directory):
                await uow.tenants.add(t)
            await uow.commit()


async def state_of(engine: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT state, tokens_acquired FROM renewals"))
        ).one_or_none()
    return {"state": row[0], "tokens": row[1]} if row else {}


def posted(slack: SlackStandIn, fragment: str, channel: str | None = None) -> list[dict[str, Any]]:
    return [
        a
        for a in slack.called("chat.postMessage")
        if fragment in str(a.get("text", "")) and channel in (None, a.get("channel"))
    ]


STEPS: dict[str, tuple[Any, Callable[[dict[str, Any]], bool]]] = {
    # step name: (what the sandbox holds, what the database shows when the process is killed);
    # with nothing held, the process is killed before the customer signs in (while it is down).
    "with the code shown": (
        None,
        lambda s: s.get("state") == "code_issued" and s.get("tokens") == 0,
    ),
    "after the first token": (
        lambda r, grant: grant == "refresh_token",
        lambda s: s.get("state") == "code_issued" and s.get("tokens") == 1,
    ),
    "with every token, before validation": (
        lambda r, grant: "transitiveMemberOf" in r.path,  # only validation reads the roles
        lambda s: s.get("state") == "tokens_acquired",
    ),
    "validated, while Slack takes the announcement": (
        "slack",
        lambda s: s.get("state") == "validated",
    ),
}


@pytest.mark.parametrize("step", list(STEPS))
async def test_renewal_survives_sigkill(
    step: str, tmp_path: Path, postgres_url: str, slack: SlackStandIn
) -> None:
    """Killed at ``step`` and started again: validated once, announced once, tokens stored."""
    url = await fresh_database(postgres_url)
    sandbox = await Sandbox(demo_directory(interval=1), workdir=tmp_path / "sandbox").start()
    sock = bind_loopback(0)
    port = sock.getsockname()[1]
    sock.close()
    key = generate_key()
    env = serve_env(url, port, sandbox, key, slack)
    await seed_demo_tenants(url, sandbox, key)
    engine = make_engine(url)
    holds, killed_at = STEPS[step]
    log = tmp_path / "serve.log"
    try:
        async with aiohttp.ClientSession() as http:
            async with served(env, port, log) as proc:
                body = command_body(slack, "contoso")
                async with http.post(
                    f"http://127.0.0.1:{port}/slack/events", data=body, headers=signed(body)
                ) as resp:
                    assert resp.status == 200
                invited = await until(lambda: posted(slack, "/onboard/"))
                found = re.search(r"http://127\.0\.0\.1:\d+/onboard/[\w-]+", invited[0]["text"])
                assert found, invited[0]["text"]
                auth_url = found.group(0)
                async with http.get(auth_url) as resp:
                    page = await resp.text()
                csrf = page.split("name=csrf value='")[1].split("'")[0]
                async with http.post(
                    f"{auth_url}/start",
                    data={"csrf": csrf},
                    headers={"Accept": "application/json"},
                ) as resp:
                    code = str((await resp.json())["user_code"])
                held = Held(holds if callable(holds) else (lambda r, grant: False))
                sandbox.gate = held
                if holds == "slack":  # Slack stores the announcement but never answers
                    slack.stall_when = lambda a: "renewed and validated" in str(a.get("text"))
                    await sign_in(http, sandbox, code)
                    await until(lambda: slack.stalled, 60)
                elif holds:
                    await sign_in(http, sandbox, code)
                    await asyncio.wait_for(held.seen.wait(), 30)
                await until(lambda: _holds(engine, killed_at), 60)
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            if not holds:
                await sign_in(http, sandbox, code)  # while no bot process runs
            held.released.set()
            async with served(env, port, log):
                try:
                    await until(lambda: _holds(engine, lambda s: s.get("state") == "validated"), 90)
                except AssertionError as exc:
                    logged = await asyncio.to_thread(tail, log)
                    raise AssertionError(f"{await state_of(engine)}: {logged}") from exc
                await until(lambda: posted(slack, "renewed and validated", "C-alerts"), 60)
                # the thread is paced (about one post a second): wait for its last post too
                await until(lambda: posted(slack, "Validated:", "C-ops"), 60)
        validated = [a for a in posted(slack, "Validated:") if a.get("channel") == "C-ops"]
        assert len(validated) == 1, validated
        assert len(posted(slack, "renewed and validated", "C-alerts")) == 1
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT count(*) FROM token_caches"))).scalar()
            staged = (
                await conn.execute(
                    text("SELECT count(*) FROM renewals WHERE staged_tokens IS NOT NULL")
                )
            ).scalar()
        assert stored == 1 and staged == 0
    finally:
        await engine.dispose()
        await sandbox.stop()


async def sign_in(http: aiohttp.ClientSession, sandbox: Sandbox, code: str) -> None:
    """What the customer does on the sandbox's device login page."""
    login = sandbox.login_url + "/devicelogin"
    async with http.post(login, data={"otc": code}) as resp:
        assert resp.status == 200
    upn = {"otc": code, "upn": "admin@contoso.com"}
    async with http.post(f"{login}/signin", data=upn) as resp:
        assert resp.status == 200


async def _holds(engine: Any, check: Callable[[dict[str, Any]], bool]) -> bool:
    return check(await state_of(engine))
