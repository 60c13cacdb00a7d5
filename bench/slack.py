"""Slack ack latency: renewbot's /slack/events against bolt's ack-only listener, same run.

The anchor is slack-bolt's AsyncApp with a `/renew-token` listener that only acks
(process_before_response=True), served by aiohttp. renewbot's path verifies the signature,
parses, authorises, resolves the tenant, persists the renewal and schedules the thread post, all
after an immediate ack. A separate process hosts the Slack stand-in and sends the commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.storage.crypto import generate_key
from bot.bootstrap import runtime
from bot.sandbox.server import bind_loopback
from bot.settings import Settings
from bot.web import create_app, start_site
from core.model import Tenant

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # noqa: S105 (Slack's documented example secret)
BOT_TOKEN = "xoxb-test-0000-renewbot"  # noqa: S105 (the stand-in's fake token)


class LoadGen:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout
        self.api_url = json.loads(self.proc.stdout.readline())["api_url"]

    async def fire(
        self, url: str, texts: list[str], concurrency: int, settle: float = 0.0, gap: float = 0.0
    ) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        job = {
            "url": url,
            "secret": SECRET,
            "texts": texts,
            "concurrency": concurrency,
            "settle": settle,
            "gap": gap,
        }
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        self.proc.wait(10)
        return dict(json.loads(line))


def _port() -> int:
    sock = bind_loopback(0)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@asynccontextmanager
async def bolt_anchor(api_url: str) -> AsyncIterator[str]:
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    app = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url),
        signing_secret=SECRET,
        process_before_response=True,
    )

    @app.command("/renew-token")
    async def only_ack(ack: Any) -> None:
        await ack()

    async def handle(request: web.Request) -> web.Response:
        resp = await app.async_dispatch(
            AsyncBoltRequest(
                body=await request.text(), query=request.query_string, headers=dict(request.headers)
            )
        )
        return web.Response(status=resp.status, body=resp.body)

    web_app = web.Application()
    web_app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/slack/events"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def renewbot(api_url: str, tenants: int) -> AsyncIterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="renewbot-bench-"))
    port = _port()
    settings = Settings(
        environment="development",
        database={"url": f"sqlite+aiosqlite:///{workdir}/bench.db"},  # type: ignore[arg-type]
        web={
            "host": "127.0.0.1",
            "port": port,  # type: ignore[arg-type]
            "public_url": f"http://127.0.0.1:{port}",
        },
        identity={"authority_host": "https://127.0.0.1:9", "client_id": "bench"},  # type: ignore[arg-type]
        security={"encryption_keys": generate_key()},  # type: ignore[arg-type]
        slack={
            "bot_token": BOT_TOKEN,
            "signing_secret": SECRET,  # type: ignore[arg-type]
            "api_url": api_url,
        },
        monitor={"enabled": False},  # type: ignore[arg-type]  # measure the Slack path alone
    )
    async with runtime(settings) as rt:
        async with rt.uow() as uow:
            for i in range(1, tenants + 1):
                await uow.tenants.add(
                    Tenant(
                        f"k{i}",
                        f"load-{i}",
                        f"Load {i}",
                        f"00000000-0000-4000-9000-{i:012d}",
                        f"load-{i}.example",
                        f"admin@load-{i}.example",
                    )
                )
            await uow.commit()
        runner = await start_site(create_app(rt), "127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}/slack/events"
        finally:
            await runner.cleanup()


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 2 else max(values)


async def measure(kind: str, single: int, burst: int) -> dict[str, float]:
    """Median ack of `single` one-at-a-time commands; p50/p99 of a burst of `burst`."""
    out: dict[str, float] = {}
    for label, n, conc in (("single", single, 1), ("burst", burst, burst)):
        gen = LoadGen()
        texts = [f"load-{i}" for i in range(1, n + 1)]
        server = bolt_anchor(gen.api_url) if kind == "anchor" else renewbot(gen.api_url, n)
        async with server as url:
            result = await gen.fire(
                url,
                texts,
                conc,
                settle=0.0 if kind == "anchor" else 30.0,
                gap=0.2 if conc == 1 else 0.0,
            )
        lat = result["latencies_ms"]
        assert all(s == 200 for s in result["statuses"]), result["statuses"][:5]
        out[f"{label}_p50"] = statistics.median(lat)
        out[f"{label}_p99"] = quantile(lat, 99)
        out[f"{label}_threads"] = result["threads"]
        out[f"{label}_n"] = n
    return out


async def main(repeats: int, single: int = 30, burst: int = 100) -> list[tuple[str, str, str, str]]:
    anchors, ours = [], []
    for _ in range(repeats):
        anchors.append(await measure("anchor", single, burst))
        ours.append(await measure("renewbot", single, burst))

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def row(label: str, key: str) -> tuple[str, str, str, str]:
        a, o = med(anchors, key), med(ours, key)
        return (label, f"{a:.2f}", f"{o:.2f}", f"{o / a:.2f}x" if a else "-")

    return [
        row("Slack ack, single commands 200 ms apart, p50 (ms)", "single_p50"),
        row("Slack ack, single commands 200 ms apart, p99 (ms)", "single_p99"),
        row(f"Slack ack, burst of {burst} at once, p50 (ms)", "burst_p50"),
        row(f"Slack ack, burst of {burst} at once, p99 (ms)", "burst_p99"),
        (
            f"threads posted after the burst (of {burst})",
            "-",
            f"{med(ours, 'burst_threads'):.0f}",
            "-",
        ),
    ]
