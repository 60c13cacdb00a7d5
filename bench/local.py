"""What every bench shares: loopback ports, aiohttp servers, processes kept on their cores, and
how a row's repeats and latencies are summed up."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from bot.sandbox.server import bind_loopback

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """min / median / max, as every row of the goals tables gives its repeats."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def quantile(values: list[float], q: int) -> float:
    """The ``q``-th percentile (the largest value of fewer than three; NaN of none)."""
    if len(values) < 3:
        return max(values) if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1]


def free_port() -> int:
    sock = bind_loopback(0)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def pin(cores: set[int]) -> None:
    """Keep this process on ``cores`` (server and load generator apart, where there are two)."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, cores)


def unpin() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


@asynccontextmanager
async def serve(path: str, handler: Handler) -> AsyncIterator[str]:
    """An aiohttp server on loopback answering POST ``path``; yields its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


def load_generator(module: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``python -m module`` on core 1, talking JSON lines; returns it and its hello line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: pin({1}),
    )
    assert proc.stdout
    return proc, dict(json.loads(proc.stdout.readline()))
