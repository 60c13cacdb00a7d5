"""A whole renewal at DEBUG on every logger leaves no secret in any output or file (issue 11, 7).

A real `renewbot serve` subprocess on PostgreSQL with RENEWBOT_LOG__LEVEL=DEBUG: a signed Slack
command, the customer's sign-in at the sandbox (Entra-shaped device code and tokens), the silent
acquisitions, a Teams command through botbuilder, a re-validation with the refresh token, the
invitation emailed over STARTTLS with a login (the Auth URL in its body). Every
secret of the run is a fresh canary; none may appear in stdout, stderr or any file serve wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

import tests.servers.slack as slack_server
from adapters.storage.crypto import generate_key
from adapters.storage.database import make_engine
from adapters.storage.tokens import SqlTokenGrants
from bot.demo import browser_sign_in
from bot.sandbox.directory import DEFAULT_CLIENT_ID, demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from core.tokens import new_key
from tests.integration.live import T_CONTOSO, T_NORTHWIND, until
from tests.integration.test_slack import command_body, signed
from tests.servers.bot_connector import BotConnectorStandIn
from tests.servers.postgres import fresh_database
from tests.servers.slack import SlackStandIn
from tests.servers.smtp import SmtpStandIn
from tests.servers.webhooks import WebhookReceiver
from tests.servers.webhooks import secret as webhook_secret

pytestmark = pytest.mark.postgres
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("RENEWBOT_")}


class Run:
    """CLI processes of one test, their outputs kept in files under ``out``."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env, self.count = out, env, 0
        out.mkdir()

    def paths(self, name: str) -> tuple[Path, Path]:
        self.count += 1
        return self.out / f"{self.count}-{name}.out", self.out / f"{self.count}-{name}.err"

    async def start(self, *args: str) -> tuple[asyncio.subprocess.Process, Path]:
        stdout, stderr = self.paths(args[0])
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                *args,
                env=self.env,
                cwd=self.out,
                stdout=out,
                stderr=err,
            )
        return proc, stdout

    async def run(self, *args: str) -> None:
        proc, stdout = await self.start(*args)
        assert await asyncio.wait_for(proc.wait(), 120) == 0, stdout.with_suffix(".err").read_text()

    def everything(self) -> str:
        """Every byte any process wrote, in any file under its working directory."""
        return "\n".join(
            p.read_bytes().decode("utf-8", "replace") for p in self.out.rglob("*") if p.is_file()
        )


@asynccontextmanager
async def serving(run: Run) -> AsyncIterator[asyncio.subprocess.Process]:
    proc, stdout = await run.start("serve")
    try:
        await until(lambda: "listening" in stdout.read_text() or proc.returncode is not None, 60)
        assert proc.returncode is None, stdout.with_suffix(".err").read_text()[-2000:]
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def sign_in(http: aiohttp.ClientSession, sandbox: Sandbox, code: str, upn: str) -> None:
    """What the customer does on the sandbox's device login page."""
    login = sandbox.login_url + "/devicelogin"
    async with http.post(login, data={"otc": code}) as resp:
        assert resp.status == 200
    async with http.post(f"{login}/signin", data={"otc": code, "upn": upn}) as resp:
        assert resp.status == 200


def log_events(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_debug_renewal_leaks_no_canary_secret(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEBUG on every library logger shows its debug lines, and no secret of the run in them."""
    signing_secret = secrets.token_hex(16)
    bot_token = f"xoxb-{secrets.randbelow(10**12)}-canary-{secrets.token_hex(12)}"
    monkeypatch.setattr(slack_server, "BOT_TOKEN", bot_token)
    slack = await SlackStandIn().start()
    connector = await BotConnectorStandIn(password=f"Pw~{secrets.token_urlsafe(30)}").start()
    sandbox = await Sandbox(demo_directory(interval=1), workdir=tmp_path / "sandbox").start()
    smtp = SmtpStandIn(tmp_path / "smtp", password=f"Smtp~{secrets.token_urlsafe(24)}").start()
    sock = bind_loopback(0)
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}"
    key = generate_key()
    database = await fresh_database(postgres_url)
    receiver = await WebhookReceiver(webhook_secret()).start()
    env = {
        **BASE_ENV,
        "PYTHONUNBUFFERED": "1",
        "RENEWBOT_LOG__LEVEL": "DEBUG",
        "RENEWBOT_ENVIRONMENT": "development",
        "RENEWBOT_DATABASE__URL": database,
        "RENEWBOT_WEB__PORT": str(port),
        "RENEWBOT_WEB__PUBLIC_URL": base,
        "RENEWBOT_SECURITY__ENCRYPTION_KEYS": key,
        "RENEWBOT_IDENTITY__AUTHORITY_HOST": sandbox.authority_host,
        "RENEWBOT_IDENTITY__CLIENT_ID": DEFAULT_CLIENT_ID,
        "RENEWBOT_IDENTITY__CA_BUNDLE": str(sandbox.ca_path),
        "RENEWBOT_IDENTITY__GRAPH_URL": sandbox.graph_url,
        "RENEWBOT_SLACK__SIGNING_SECRET": signing_secret,
        "RENEWBOT_SLACK__BOT_TOKEN": bot_token,
        "RENEWBOT_SLACK__API_URL": slack.api_url,
        "RENEWBOT_SLACK__ALERT_CHANNEL": "C-alerts",
        **{f"RENEWBOT_TEAMS__{k.upper()}": v for k, v in connector.settings().items()},
        "RENEWBOT_WEBHOOKS__ENDPOINTS": json.dumps([receiver.url]),
        "RENEWBOT_WEBHOOKS__SECRETS": receiver.secret,
        **{f"RENEWBOT_EMAIL__{k.upper()}": str(v) for k, v in smtp.settings().items()},
    }
    run = Run(tmp_path / "run", env)
    inbound = connector.token()
    try:
        await run.run("db", "upgrade")
        tenant = ["--slug", "contoso", "--name", "Contoso Ltd", "--tenant-id", T_CONTOSO]
        await run.run(
            "tenants", "add", *tenant, "--domain", "contoso.com", "--admin", "admin@contoso.com"
        )
        service_key = await add_service_key(database)
        northwind = ["--slug", "northwind", "--name", "Northwind Traders"]
        await run.run(
            "tenants", "add", *northwind, "--tenant-id", T_NORTHWIND, "--domain", "northwind.com",
            "--admin", "admin@northwind.com",
        )  # fmt: skip
        async with serving(run), aiohttp.ClientSession() as http:
            auth_url = await renew_through_slack(http, base, slack, sandbox, signing_secret)
            back = await renew_through_browser(base, slack, signing_secret)
            async with http.get(
                f"{base}/api/tokens/contoso/exchange",
                headers={"Authorization": f"Bearer {service_key}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                api_token = str((await resp.json())["access_token"])
            await until(lambda: "tenant.validated" in receiver.kinds(), 30)
            activity = connector.activity("renew-token validate contoso")
            async with http.post(
                f"{base}/api/messages",
                json=activity,
                headers={"Authorization": f"Bearer {inbound}"},
            ) as resp:
                assert resp.status == 200
            await until(lambda: any("again" in t for t in connector.texts(connector.posts())), 60)
        ciphertexts = await stored_ciphertexts(database)
    finally:
        smtp.stop()
        await sandbox.stop()
        await receiver.stop()
        await connector.stop()
        await slack.stop()

    output = run.everything()
    issued = list(sandbox.directory.issued_secrets)
    outbound = {c.authorization.removeprefix("Bearer ") for c in connector.calls}
    canaries: dict[str, Any] = {
        "device code": [s for s in issued if s.startswith("DAQAB")],
        "refresh token": [s for s in issued if s.startswith("1.A")],
        "access or id token": [s for s in issued if s.startswith("eyJ")],
        "onboarding token": [auth_url.rsplit("/", 1)[1]],
        # the browser sign-in's return: its code, its state, and the PKCE verifier sent
        "authorization code": parse_qs(urlsplit(back).query)["code"],
        "state": parse_qs(urlsplit(back).query)["state"],
        "PKCE verifier": list(sandbox.directory.verifiers),
        "encryption key": [key],
        "Slack signing secret": [signing_secret],
        "Slack bot token": [bot_token],
        "Teams app password": [connector.password],
        "SMTP password": [smtp.password],
        "Teams tokens": [inbound, *outbound],
        "sealed token cache": ciphertexts,
        "token API service key": [service_key],
        "token from the token API": [api_token],
        "webhook signing secret": [receiver.secret, receiver.secret.removeprefix("whsec_")],
    }
    assert all(canaries.values()), {k: len(v) for k, v in canaries.items()}
    # the Auth URLs went out by email (contoso's and northwind's), and not into any log
    emailed = "".join(invitation.part("plain") for invitation in smtp.received)
    assert len(smtp.received) == 2 and canaries["onboarding token"][0] in emailed
    assert len(canaries["refresh token"]) >= 3  # three token sets, then a re-validation
    for what, values in canaries.items():
        for value in values:
            assert value not in output, f"a {what} reached the output"
    assert "gAAAAA" not in output, "a Fernet token (sealed secret) reached the output"
    # DEBUG really was on, for the libraries too
    events = log_events(output)
    shown = {str(e["logger"]) for e in events if e["level"] == "debug"}
    for library in ("msal.token_cache", "sqlalchemy.engine.Engine", "slack_sdk", "msrest"):
        assert any(name.startswith(library) for name in shown), (library, sorted(shown))
    cache_events = [e["event"] for e in events if e["logger"] == "msal.token_cache"]
    assert any('"device_code": "[redacted]"' in e for e in cache_events)  # logged, masked
    paths = [str(e.get("path")) for e in events if e["logger"] == "renewbot.access"]
    assert "/onboard/<redacted>/start" in paths  # the access log saw the Auth URL, masked
    assert "/onboard/<redacted>" in paths  # and the callback, without its query


async def renew_through_browser(base: str, slack: SlackStandIn, secret: str) -> str:
    """Support's command for northwind and the customer's Sign in with Microsoft; returns the
    URL Microsoft sent the browser back to (code and state in its query)."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        body = command_body(slack, "northwind")
        headers = signed(body, secret=secret)
        async with http.post(f"{base}/slack/events", data=body, headers=headers):
            pass

        def posts() -> list[str]:
            return [str(a.get("text")) for a in slack.called("chat.postMessage")]

        def auth_url() -> str | None:
            found = [
                m.group(0) for t in posts() if (m := re.search(r"http://\S+/onboard/[\w-]+", t))
            ]
            return found[1] if len(found) > 1 else None

        back = await browser_sign_in(http, await until(auth_url), "admin@northwind.com")
        async with http.get(back) as resp:
            assert resp.status == 200
        await until(lambda: sum(t.startswith("Validated") for t in posts()) == 2, 60)
        return back


async def renew_through_slack(
    http: aiohttp.ClientSession, base: str, slack: SlackStandIn, sandbox: Sandbox, secret: str
) -> str:
    """Support's command, the customer's Start and sign-in; returns the Auth URL."""
    body = command_body(slack, "contoso")
    async with http.post(f"{base}/slack/events", data=body, headers=signed(body, secret=secret)):
        pass

    def posts() -> list[str]:
        return [str(a.get("text")) for a in slack.called("chat.postMessage")]

    def auth_urls() -> list[str]:
        return [m.group(0) for t in posts() if (m := re.search(r"http://\S+/onboard/[\w-]+", t))]

    auth_url = str((await until(auth_urls))[0])
    async with http.get(auth_url) as resp:
        csrf = re.search(r"name=csrf value='([0-9a-f]+)'", await resp.text())
    assert csrf
    async with http.post(
        f"{auth_url}/start", data={"csrf": csrf.group(1)}, headers={"Accept": "application/json"}
    ) as resp:
        assert resp.status == 200
        code = str((await resp.json())["user_code"])
    await sign_in(http, sandbox, code, "admin@contoso.com")
    await until(lambda: any(t.startswith("Validated") for t in posts()), 60)
    return auth_url


async def add_service_key(url: str) -> str:
    """A token API key, stored as `keys service add` stores it (its hash only)."""
    engine = make_engine(url)
    try:
        key, presented = new_key("canary", (), (), 600, datetime.now(UTC))
        await SqlTokenGrants(engine).add_key(key)
    finally:
        await engine.dispose()
    return presented


async def stored_ciphertexts(url: str) -> list[str]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT ciphertext FROM token_caches")
    finally:
        await conn.close()
    return [bytes(r[0]).decode() if not isinstance(r[0], str) else r[0] for r in rows]
