"""Slack ack latency: renewbot's /slack/events against bolt's ack-only listener, same run.

The anchor is slack-bolt's AsyncApp with a `/renew-token` listener that only acks
(process_before_response=True), served by aiohttp. renewbot's path verifies the signature,
parses, authorises, resolves the tenant, persists the renewal and schedules the thread post, all
after an immediate ack. A separate process hosts the Slack stand-in and sends the commands.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.storage.crypto import generate_key
from bench.local import free_port, load_generator, pin, serve, unpin
from bot.bootstrap import runtime
from bot.settings import Settings
from bot.web import create_app, start_site
from core.model import Tenant

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # noqa: S105 (Slack's documented example secret)
BOT_TOKEN = "xoxb-test-0000-renewbot"  # noqa: S105 (the stand-in's fake token)


class LoadGen:
    def __init__(self) -> None:
        self.proc, hello = load_generator("bench.loadgen")
        self.api_url = hello["api_url"]

    async def fire(
        self,
        url: str,
        texts: list[str],
        concurrency: int,
        settle: float = 0.0,
        gap: float = 0.0,
        rate: float = 0.0,
    ) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        job = {
            "url": url,
            "secret": SECRET,
            "texts": texts,
            "concurrency": concurrency,
            "settle": settle,
            "gap": gap,
            "rate": rate,
        }
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        # Wait without blocking the loop: the stand-in's shutdown waits for the bot's last calls.
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return dict(json.loads(line))


@asynccontextmanager
async def raw_anchor(api_url: str) -> AsyncIterator[str]:
    """The HTTP layer's ceiling: aiohttp reads the form POST, checks the signature, answers."""
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(SECRET)

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        ok = verifier.is_valid(raw, ts, request.headers.get("X-Slack-Signature", ""))
        return web.Response(status=200 if ok else 401)

    async with serve("/slack/events", handle) as url:
        yield url


@asynccontextmanager
async def bolt_anchor(api_url: str, post: bool = False) -> AsyncIterator[str]:
    """bolt's AsyncApp whose listener acks (and, with ``post``, then posts in the background)."""
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=BOT_TOKEN, base_url=api_url)
    app = AsyncApp(client=client, signing_secret=SECRET, process_before_response=True)
    background: set[asyncio.Task[Any]] = set()

    @app.command("/renew-token")
    async def only_ack(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        if post:
            text = f"Renewal for ({body.get('text', '')}) started"
            task = asyncio.create_task(client.chat_postMessage(channel="C-ops", text=text))
            background.add(task)
            task.add_done_callback(background.discard)

    async def handle(request: web.Request) -> web.Response:
        resp = await app.async_dispatch(
            AsyncBoltRequest(
                body=await request.text(), query=request.query_string, headers=dict(request.headers)
            )
        )
        return web.Response(status=resp.status, body=resp.body)

    async with serve("/slack/events", handle) as url:
        yield url


@asynccontextmanager
async def renewbot(api_url: str, tenants: int) -> AsyncIterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="renewbot-bench-"))
    port = free_port()
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


def _server(kind: str, api_url: str, n: int) -> Any:
    if kind == "raw":
        return raw_anchor(api_url)
    if kind == "bolt":
        return bolt_anchor(api_url)
    if kind == "bolt+post":
        return bolt_anchor(api_url, post=True)
    return renewbot(api_url, n)


async def run_once(
    kind: str, n: int, *, concurrency: int = 32, rate: float = 0.0, settle: float = 0.0
) -> dict[str, Any]:
    gen = LoadGen()
    async with _server(kind, gen.api_url, n) as url:
        result = await gen.fire(
            url, [f"load-{i}" for i in range(1, n + 1)], concurrency, settle=settle, rate=rate
        )
    assert all(s == 200 for s in result["statuses"]), result["statuses"][:5]
    return result


async def goals(repeats: int) -> list[tuple[str, str, str, str, str, str]]:
    """The Slack rows of issue 6's goals, each against its anchor in the same run."""
    pin({0})
    try:
        tput: dict[str, list[float]] = {"raw": [], "bolt": [], "renewbot": []}
        ack99: dict[str, list[float]] = {"bolt": [], "renewbot": []}
        post99: dict[str, list[float]] = {"bolt+post": [], "renewbot": []}
        posted: list[int] = []
        for _ in range(repeats):
            for kind in tput:
                r = await run_once(kind, 400, concurrency=32)
                tput[kind].append(400 / r["seconds"])
            for kind in ack99:
                r = await run_once(kind, 500, rate=100.0)
                ack99[kind].append(quantile(r["latencies_ms"], 99))
            for kind in post99:
                r = await run_once(kind, 250, rate=50.0, settle=60.0)
                post99[kind].append(quantile(r["first_post_ms"], 99))
                if kind == "renewbot":
                    posted.append(len(r["first_post_ms"]))
    finally:
        unpin()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    t_raw, t_bolt, t_ours = med(tput["raw"]), med(tput["bolt"]), med(tput["renewbot"])
    a_bolt, a_ours = med(ack99["bolt"]), med(ack99["renewbot"])
    p_bolt, p_ours = med(post99["bolt+post"]), med(post99["renewbot"])
    return [
        (
            "Slack ack throughput, 32 concurrent (commands/s)",
            f"bolt {t_bolt:.0f} (raw aiohttp {t_raw:.0f})",
            f"{t_ours:.0f}",
            f"{t_ours / t_bolt:.2f}x",
            ">= 0.5x bolt",
            "yes" if t_ours >= 0.5 * t_bolt else "no",
        ),
        (
            "Slack ack p99 at 100 commands/s, open loop (ms)",
            f"bolt {a_bolt:.1f}",
            f"{a_ours:.1f}",
            f"{a_ours / a_bolt:.2f}x",
            "< 50 ms",
            "yes" if a_ours < 50 else "no",
        ),
        (
            "command -> first thread post, 50 commands/s, p99 (ms)",
            f"bolt + background post {p_bolt:.1f}",
            f"{p_ours:.1f} ({min(posted)}/250 posted)",
            f"{p_ours / p_bolt:.2f}x",
            "<= 1.5x, all posted",
            "yes" if p_ours <= 1.5 * p_bolt and min(posted) == 250 else "no",
        ),
    ]
