"""Load generator in its own process: hosts the Slack Web API stand-in and sends signed commands.

Protocol on stdin/stdout (one JSON object per line):
  start -> prints {"api_url": ...}
  reads {"url": ..., "secret": ..., "texts": [...], "concurrency": n, "rate": r}
  -> prints {"latencies_ms": [...], "statuses": [...], "threads": <thread parents seen>,
             "seconds": <send phase>, "first_post_ms": [...]}

Closed loop (``rate`` 0): ``concurrency`` senders, each sending its next command when the last
was acked. Open loop (``rate`` > 0): one command every 1/rate seconds whatever the answers, as
Slack would deliver them. ``first_post_ms``: from sending a command to the first top-level
message at the Web API stand-in that names it (its text contains "(<command text>)").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
import uuid
from urllib.parse import urlencode

import aiohttp

from tests.servers.slack import SlackStandIn


def signed(body: str, secret: str) -> dict[str, str]:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={mac}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def body(text: str, response_url: str, channel: str = "C-ops") -> str:
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


async def run() -> None:
    # Slack's per-channel pace is off: this measures renewbot's own latency, not Slack's limits
    stand = await SlackStandIn(post_rate=None).start()
    print(json.dumps({"api_url": stand.api_url}), flush=True)
    loop = asyncio.get_running_loop()
    job = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    gate = asyncio.Semaphore(job["concurrency"])
    rate = float(job.get("rate", 0.0))
    latencies: list[float] = []
    statuses: list[int] = []
    sent_at: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def send(text: str) -> None:
            payload = body(text, f"{stand.base_url}/_response/x")
            headers = signed(payload, job["secret"])
            t0 = time.perf_counter()
            sent_at[text] = time.monotonic()
            async with http.post(job["url"], data=payload, headers=headers) as resp:
                await resp.read()
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses.append(resp.status)

        async def closed(text: str) -> None:
            async with gate:
                await asyncio.sleep(job.get("gap", 0.0))  # let the previous command's work finish
                await send(text)

        started = time.perf_counter()
        if rate > 0:
            tasks = []
            for i, text in enumerate(job["texts"]):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(text)))
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(closed(t) for t in job["texts"]))
        seconds = time.perf_counter() - started
        deadline = loop.time() + job.get("settle", 0)
        want = len(job["texts"])
        while loop.time() < deadline and _parents(stand) < want:
            await asyncio.sleep(0.05)
    print(
        json.dumps(
            {
                "latencies_ms": latencies,
                "statuses": statuses,
                "threads": _parents(stand),
                "seconds": seconds,
                "first_post_ms": _first_posts(stand, sent_at),
            }
        ),
        flush=True,
    )
    await stand.stop()


def _first_posts(stand: SlackStandIn, sent_at: dict[str, float]) -> list[float]:
    """Per command, ms from its sending to the first top-level post naming it."""
    found: dict[str, float] = {}
    for call in stand.calls:
        if call.method != "chat.postMessage" or "thread_ts" in call.args:
            continue
        text = str(call.args.get("text", ""))
        start, end = text.find("("), text.find(")")
        name = text[start + 1 : end] if 0 <= start < end else ""
        if name in sent_at and name not in found:
            found[name] = (call.at - sent_at[name]) * 1000
    return list(found.values())


def _parents(stand: SlackStandIn) -> int:
    return sum(1 for args in stand.messages.values() if "thread_ts" not in args)


if __name__ == "__main__":
    asyncio.run(run())
