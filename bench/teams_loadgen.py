"""Teams load generator in its own process: hosts the Bot Connector stand-in and sends activities.

Protocol on stdin/stdout (one JSON object per line):
  start -> prints {"service_url": ..., "settings": {...teams settings for renewbot...}}
  reads {"url": ..., "text": ..., "turns": n, "concurrency": c, "auth": bool}
  -> prints {"seconds": ..., "latencies_ms": [...], "statuses": [...], "replies": n}

Each of ``concurrency`` users has its own 1:1 chat and sends its next message when the bot's
reply to the previous one has reached the connector (closed loop), so a turn is measured from the
POST to the reply at the connector, whatever path the bot takes in between.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict
from typing import Any

import aiohttp

from tests.servers.bot_connector import BotConnectorStandIn, Call


async def fire(
    stand: BotConnectorStandIn, arrived: dict[str, asyncio.Event], job: dict[str, Any]
) -> dict[str, Any]:
    stand.require_auth = bool(job["auth"])
    stand.calls.clear()
    latencies: list[float] = []
    statuses: list[int] = []
    remaining = [job["turns"]]
    # The Bot Connector reuses one token for about an hour; so does this load generator.
    token = stand.token()
    async with aiohttp.ClientSession() as http:

        async def user(n: int) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                activity = stand.activity(job["text"], personal=True, user=f"bench-{n}")
                conversation = activity["conversation"]["id"]
                headers = {"Authorization": f"Bearer {token}"} if job["auth"] else {}
                event = arrived[conversation]
                event.clear()
                t0 = time.perf_counter()
                async with http.post(job["url"], json=activity, headers=headers) as resp:
                    statuses.append(resp.status)
                    await resp.read()
                await asyncio.wait_for(event.wait(), 30)
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(user(n) for n in range(job["concurrency"])))
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "latencies_ms": latencies,
        "statuses": statuses,
        "replies": len(stand.posts()),
    }


async def run() -> None:
    stand = await BotConnectorStandIn().start()
    print(json.dumps({"service_url": stand.service_url, "settings": stand.settings()}), flush=True)
    loop = asyncio.get_running_loop()
    arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def on_call(call: Call) -> None:
        arrived[call.conversation].set()

    stand.on_call = on_call
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(await fire(stand, arrived, json.loads(line))), flush=True)
    await stand.stop()


if __name__ == "__main__":
    asyncio.run(run())
