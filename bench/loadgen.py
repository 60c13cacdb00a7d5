"""Load generator in its own process: hosts the Slack Web API stand-in and sends signed commands.

Protocol on stdin/stdout (one JSON object per line):
  start -> prints {"api_url": ...}
  reads {"url": ..., "secret": ..., "texts": [...], "concurrency": n}
  -> prints {"latencies_ms": [...], "statuses": [...], "threads": <thread parents seen>}
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


def body(text: str, response_url: str) -> str:
    return urlencode(
        {
            "team_id": "T1",
            "channel_id": "C-ops",
            "user_id": "U-bench",
            "user_name": "bench",
            "command": "/renew-token",
            "text": text,
            "response_url": response_url,
            "trigger_id": uuid.uuid4().hex,
        }
    )


async def run() -> None:
    stand = await SlackStandIn().start()
    print(json.dumps({"api_url": stand.api_url}), flush=True)
    loop = asyncio.get_running_loop()
    job = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    gate = asyncio.Semaphore(job["concurrency"])
    latencies: list[float] = []
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def one(text: str) -> None:
            payload = body(text, f"{stand.base_url}/_response/x")
            headers = signed(payload, job["secret"])
            async with gate:
                await asyncio.sleep(job.get("gap", 0.0))  # let the previous command's work finish
                t0 = time.perf_counter()
                async with http.post(job["url"], data=payload, headers=headers) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses.append(resp.status)

        await asyncio.gather(*(one(t) for t in job["texts"]))
        deadline = loop.time() + job.get("settle", 0)
        want = len(job["texts"])
        while loop.time() < deadline and _parents(stand) < want:
            await asyncio.sleep(0.05)
    print(
        json.dumps({"latencies_ms": latencies, "statuses": statuses, "threads": _parents(stand)}),
        flush=True,
    )
    await stand.stop()


def _parents(stand: SlackStandIn) -> int:
    return sum(1 for args in stand.messages.values() if "thread_ts" not in args)


if __name__ == "__main__":
    asyncio.run(run())
