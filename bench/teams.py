"""Teams turns: renewbot's /api/messages against stock botbuilder, in the same run.

A separate process (bench/teams_loadgen.py, pinned to another core where there are two) hosts the
Bot Connector stand-in and sends activities from 8 users, each waiting for the bot's reply at the
connector before sending again. A turn is the time from the POST to that reply.

- stock: botbuilder-integration-aiohttp's ``CloudAdapter`` with an echo bot, auth off (the stock
  auth path would call Microsoft's login service). Run twice: with msrest as shipped, and with
  ``speed_up_msrest`` (the safe codes of its retry policy as a frozenset): the before/after of the
  fix, which changes nothing else.
- renewbot: the real `/api/messages` with JWT validation on, `renew-token help` through the desk,
  the reply posted proactively with a token from the stand-in's login.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from msrest.universal_http.requests import ClientRetryPolicy

from adapters.storage.crypto import generate_key
from adapters.teams.connector import speed_up_msrest
from bench.local import free_port, load_generator, pin, quantile, serve, unpin
from bot.bootstrap import runtime
from bot.settings import Settings
from bot.web import create_app, start_site

SHIPPED_SAFE_CODES = [i for i in range(500) if i != 408] + [501, 505]  # msrest 0.7.1 as shipped


class LoadGen:
    def __init__(self) -> None:
        self.proc, hello = load_generator("bench.teams_loadgen")
        self.settings: dict[str, Any] = hello["settings"]

    async def fire(self, url: str, text: str, turns: int, concurrency: int, auth: bool) -> Any:
        assert self.proc.stdin and self.proc.stdout
        job = {"url": url, "text": text, "turns": turns, "concurrency": concurrency, "auth": auth}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return json.loads(await asyncio.to_thread(self.proc.stdout.readline))

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(10)


@asynccontextmanager
async def stock() -> AsyncIterator[str]:
    """botbuilder's own aiohttp CloudAdapter with an echo bot (auth off)."""
    from botbuilder.core import ActivityHandler, MessageFactory, TurnContext
    from botbuilder.integration.aiohttp import (
        CloudAdapter,
        ConfigurationBotFrameworkAuthentication,
    )

    class Config:
        APP_ID = ""
        APP_PASSWORD = ""
        APP_TYPE = "MultiTenant"
        APP_TENANTID = ""

    class Echo(ActivityHandler):  # type: ignore[misc]
        async def on_message_activity(self, turn_context: TurnContext) -> None:
            await turn_context.send_activity(MessageFactory.text("echo"))

    adapter, bot = CloudAdapter(ConfigurationBotFrameworkAuthentication(Config())), Echo()

    async def messages(request: web.Request) -> web.StreamResponse:
        return await adapter.process(request, bot)

    async with serve("/api/messages", messages) as url:
        yield url


@asynccontextmanager
async def renewbot(teams: dict[str, Any]) -> AsyncIterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="renewbot-bench-teams-"))
    port = free_port()
    settings = Settings(
        environment="development",
        database={"url": f"sqlite+aiosqlite:///{workdir}/bench.db"},  # type: ignore[arg-type]
        web={"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},  # type: ignore[arg-type]
        identity={"authority_host": "https://127.0.0.1:9", "client_id": "bench"},  # type: ignore[arg-type]
        security={"encryption_keys": generate_key()},  # type: ignore[arg-type]
        teams=teams,  # type: ignore[arg-type]
        monitor={"enabled": False},  # type: ignore[arg-type]  # measure the Teams path alone
    )
    async with runtime(settings) as rt:
        runner = await start_site(create_app(rt), "127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}/api/messages"
        finally:
            await runner.cleanup()


async def measure(gen: LoadGen, kind: str, turns: int, concurrency: int) -> dict[str, float]:
    if kind == "stock-shipped":
        ClientRetryPolicy.safe_codes = SHIPPED_SAFE_CODES  # type: ignore[assignment]
    else:
        speed_up_msrest()
    server = renewbot(gen.settings) if kind == "renewbot" else stock()
    text = "renew-token help" if kind == "renewbot" else "hello"
    async with server as url:
        await gen.fire(url, text, concurrency * 2, concurrency, kind == "renewbot")  # warm up
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        result = await gen.fire(url, text, turns, concurrency, kind == "renewbot")
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    assert all(s in (200, 201) for s in result["statuses"]), result["statuses"][:5]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    lat = result["latencies_ms"]
    return {
        "tps": turns / result["seconds"],
        "p50": statistics.median(lat),
        "p99": quantile(lat, 99),
        "cpu_ms": cpu * 1000 / turns,
        "replies": result["replies"],
    }


async def main(
    repeats: int, turns: int = 300, concurrency: int = 8
) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str, str]]]:
    """Rows of the msrest fix (before/after) and of renewbot against the stock anchor."""
    pin({0})
    gen = LoadGen()
    runs: dict[str, list[dict[str, float]]] = {
        "stock-shipped": [],
        "stock-fixed": [],
        "renewbot": [],
    }
    try:
        for _ in range(repeats):
            for kind in runs:
                runs[kind].append(await measure(gen, kind, turns, concurrency))
    finally:
        gen.close()
        speed_up_msrest()
        unpin()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    def row(label: str, a: str, o: str, key: str, fmt: str = "{:.1f}") -> tuple[str, str, str, str]:
        x, y = med(a, key), med(o, key)
        return (label, fmt.format(x), fmt.format(y), f"{y / x:.2f}x" if x else "-")

    fix = [
        row("turns/s (8 users, closed loop)", "stock-shipped", "stock-fixed", "tps"),
        row("CPU per turn (ms)", "stock-shipped", "stock-fixed", "cpu_ms", "{:.2f}"),
        row("turn p50 (ms)", "stock-shipped", "stock-fixed", "p50", "{:.2f}"),
    ]
    ours = [
        row("Teams turn, turns/s (8 users, closed loop)", "stock-shipped", "renewbot", "tps"),
        row("Teams turn p50 (ms)", "stock-shipped", "renewbot", "p50", "{:.2f}"),
        row("Teams turn p99 (ms)", "stock-shipped", "renewbot", "p99", "{:.2f}"),
        row("CPU per turn (ms)", "stock-shipped", "renewbot", "cpu_ms", "{:.2f}"),
    ]
    return fix, ours


if __name__ == "__main__":
    print(asyncio.run(main(1)))
