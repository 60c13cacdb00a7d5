"""The processes of `python -m bench.wrk` (bench/wrk.py): servers on core 0, the rest on core 1.

renewbot runs as `python -m bot serve` with its production logging (JSON at INFO) against the
bench's PostgreSQL; the anchors (bench/anchors.py) run as processes of their own on the same
core. The Slack stand-in (bench/standin.py) runs on core 1 beside wrk and PostgreSQL. Request
pools are signed here. Nothing here talks to anything beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bench.local import free_port

HERE = Path(__file__).parent
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # noqa: S105 (Slack's documented example secret)
BOT_TOKEN = "xoxb-test-0000-renewbot"  # noqa: S105 (the stand-in's fake token)
SERVER_CORE, LOAD_CORE = 0, 1
# Commands come from this many channels, in turn. Slack takes about one post a second per
# channel (chat.postMessage, "Rate limiting"), and renewbot paces each thread's replies by it: a
# renewal's Auth URL reply is its thread's second post in that channel. A rate of renewals that
# one core can sustain (hundreds a second) exists only across many channels or workspaces (an
# MSP's teams); in one channel it would be Slack's limit, not renewbot's, being measured. With
# 512 channels, 250 renewals/s made two posts a second in each on average, and the Auth URLs
# waited for the pace (seconds of drain): 2,048 keep the pace well away from the ceiling.
CHANNELS = [f"C-load-{i:04d}" for i in range(2048)]
ACTIVE = "('requested', 'invited', 'code_issued', 'tokens_acquired')"


def command_body(text: str, response_url: str, channel: str) -> str:
    """A `/renew-token` slash command's form body as Slack sends it, with a fresh trigger_id."""
    return urlencode(
        {
            "team_id": "T1",
            "channel_id": channel,
            "user_id": "U-bench",
            "user_name": "bench",
            "command": "/renew-token",
            "text": text,
            "response_url": response_url,
            "trigger_id": uuid.uuid4().hex,
        }
    )


def signature(ts: str, body: str, secret: str = SECRET) -> str:
    """Slack's request signature (X-Slack-Signature) of ``body`` sent at ``ts``."""
    return "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()


def pool(path: Path, texts: list[str], response_url: str) -> None:
    """Sign one request per text, each with a fresh trigger_id, one line per request."""
    ts = str(int(time.time()))
    with path.open("w") as out:
        for k, text in enumerate(texts):
            body = command_body(text, response_url, CHANNELS[k % len(CHANNELS)])
            out.write(f"{ts}\t{signature(ts, body)}\t{body}\n")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


INSTRUMENT_NICE = -10  # the stand-in while it times first posts (StandIn.ahead_of_the_database)


def on_core(core: int) -> Any:
    return lambda: os.sched_setaffinity(0, {core})


class StandIn:
    """bench/standin.py in its own process (core 1)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.standin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.api_url, self.response_url = hello["api_url"], hello["response_url"]

    @contextmanager
    def ahead_of_the_database(self) -> Iterator[bool]:
        """The stand-in ahead of PostgreSQL on the load core while timing first posts (False if
        this user may not raise a priority). The stand-in is both the clock and Slack's end:
        behind a PostgreSQL backend that was still finishing renewbot's statement, it noted
        renewbot's post up to a scheduler slice late (bolt's anchor uses no database, so only
        renewbot's times carried this); in a deployment Slack and the database are not on one
        core. Measured: renewbot's p99 7.1 ms at the default priority, 5.2 ms ahead (bolt's
        4.0 and 3.8)."""
        before = os.getpriority(os.PRIO_PROCESS, self.proc.pid)
        try:
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, INSTRUMENT_NICE)
        except PermissionError:
            yield False
            return
        try:
            yield True
        finally:
            with suppress(ProcessLookupError):  # (it died: the error that killed it says why)
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, before)

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout
        return dict(json.loads(self.proc.stdout.readline()))

    def ask(self, what: str) -> dict[str, Any]:
        assert self.proc.stdin
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(10)


@dataclass
class Server:
    kind: str  # raw | bolt | renewbot
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    errors_seen: int = 0

    def log_errors(self) -> dict[str, int]:
        """Pool timeouts and error lines in the serve log since the last call."""
        if not self.log.exists():
            return {"pool_timeouts": 0, "errors": 0}
        text = self.log.read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if '"level": "error"' in ln]
        new = lines[self.errors_seen :]
        self.errors_seen = len(lines)
        return {"pool_timeouts": sum("QueuePool limit" in ln for ln in new), "errors": len(new)}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


async def start_anchor(kind: str, api_url: str, workdir: Path, *more: str) -> Server:
    """An anchor of bench/anchors.py (``more``: the database URL of claim-post)."""
    port = free_port()
    log = workdir / f"{kind}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (a start of a long-lived server, once)
            [sys.executable, "-m", "bench.anchors", kind, str(port), api_url, *more],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=on_core(SERVER_CORE),
        )
    url = f"http://127.0.0.1:{port}/slack/events"
    await ready(url, proc)
    return Server(kind, proc, url, log)


async def start_renewbot(database_url: str, api_url: str, workdir: Path) -> Server:
    from adapters.storage.crypto import generate_key

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENEWBOT_")}
    env.update(
        {
            "RENEWBOT_ENVIRONMENT": "development",  # the IdP stand-in address is loopback
            "RENEWBOT_LOG__LEVEL": "INFO",
            "RENEWBOT_LOG__FORMAT": "json",
            "RENEWBOT_DATABASE__URL": database_url,
            "RENEWBOT_WEB__HOST": "127.0.0.1",
            "RENEWBOT_WEB__PORT": str(port),
            "RENEWBOT_WEB__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RENEWBOT_IDENTITY__AUTHORITY_HOST": "https://127.0.0.1:9",
            "RENEWBOT_IDENTITY__CLIENT_ID": "bench",
            "RENEWBOT_SECURITY__ENCRYPTION_KEYS": generate_key(),
            "RENEWBOT_MONITOR__ENABLED": "false",  # the Slack path alone
            "RENEWBOT_SLACK__BOT_TOKEN": BOT_TOKEN,
            "RENEWBOT_SLACK__SIGNING_SECRET": SECRET,
            "RENEWBOT_SLACK__API_URL": api_url,
        }
    )
    log = workdir / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (a start of a long-lived server, once)
            [sys.executable, "-m", "bot", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=on_core(SERVER_CORE),
        )
    await ready(f"http://127.0.0.1:{port}/readyz", proc)
    return Server("renewbot", proc, f"http://127.0.0.1:{port}/slack/events", log)


async def seed(database_url: str, n: int) -> None:
    """Migrate and insert ``n`` tenants (slug load-i), one in twenty expired or expiring."""
    from sqlalchemy import insert

    from adapters.storage.database import make_engine, upgrade
    from adapters.storage.tables import tenants

    engine = make_engine(database_url)
    try:
        await upgrade(engine)
        now = datetime.now(UTC)
        states = ["healthy"] * 18 + ["expiring", "expired"]
        rows = [
            {
                "key": f"k{i}",
                "slug": f"load-{i}",
                "display_name": f"Load {i}",
                "tenant_id": f"00000000-0000-4000-9000-{i:012d}",
                "primary_domain": f"load-{i}.example",
                "admin_upn": f"admin@load-{i}.example",
                "created_at": now,
                "auth_state": states[i % len(states)],
                "last_refresh_at": now,
            }
            for i in range(1, n + 1)
        ]
        async with engine.begin() as conn:
            for start in range(0, n, 5000):
                await conn.execute(insert(tenants), rows[start : start + 5000])
        await analyze(engine)
    finally:
        await engine.dispose()


async def analyze(engine: Any) -> None:
    """Statistics, as a database in service has them (autovacuum gathers them within a minute
    or so of a bulk change). Without them the tenant lookup's cached plan was a sequential scan,
    and the bench measured that until autovacuum came by, at a different moment in each run."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))


async def sessions(database_url: str) -> int:
    """Database sessions ever established (PostgreSQL's pg_stat_database.sessions), this
    reading's own included: the difference of two readings, less one, is the connections the
    server under test opened in between (a pool that churns shows here)."""
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        found = await conn.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(found)
    finally:
        await conn.close()


async def release_tenants(database_url: str) -> None:
    """Cancel every active renewal, so the next renewal row starts with free tenants."""
    from sqlalchemy import text

    from adapters.storage.database import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE renewals SET state = 'cancelled' WHERE state IN {ACTIVE}")  # noqa: S608
            )
        await analyze(engine)
    finally:
        await engine.dispose()


@dataclass
class Tenants:
    """Hands out tenant slugs in order; the caller releases them when the range runs out."""

    total: int
    next: int = 1
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def take(self, n: int) -> list[str] | None:
        if self.next + n - 1 > self.total:
            return None
        first, self.next = self.next, self.next + n
        return [f"load-{i}" for i in range(first, first + n)]
