"""The Slack Web API stand-in in a process of its own, for `python -m bench.wrk`.

Prints {"api_url": ..., "response_url": ...} once, then answers one JSON line per stdin line:
  "count" -> {"parents": top-level posts, "named": distinct commands named by a top-level post
              (the text in parentheses), "replies": thread replies,
              "auth_urls": of those, how many carry an Auth URL (in threads opened since the
              last reset),
              "responses": response_url posts, "apologies": of those, how many apologise,
              "busy": of those, how many say the bot is busy}
  "reset" -> forgets every call (between rows; memory stays bounded)
  {"open_loop": {"url", "secret", "texts", "rate", "settle"}} -> sends the texts as signed slash
              commands from here, one every 1/rate s whatever the answers (as Slack delivers
              them), then {"first_post_ms": per command, from sending it to the first top-level
              post naming it, as seen here (one clock), "ack_ms": [...], "statuses": [...],
              "lag_ms": how late the sender was on its schedule at worst}
Pacing is off (``post_rate=None``): the bench measures renewbot, not
Slack's per-channel limit. Stops at end of input. It does not sign or send commands.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from bench.wrk_servers import CHANNELS, command_body, signature
from tests.servers.slack import SlackStandIn


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


def count(stand: SlackStandIn) -> dict[str, Any]:
    parents = [a for a in stand.messages.values() if "thread_ts" not in a]
    roots = {ts for (_, ts), a in stand.messages.items() if "thread_ts" not in a}
    named: set[str] = set()
    for args in parents:
        text = str(args.get("text", ""))
        start, end = text.find("("), text.find(")")
        if 0 <= start < end:
            named.add(text[start + 1 : end])
    texts = [str(r.get("text", "")) for r in stand.responses]
    replies = [a for a in stand.messages.values() if "thread_ts" in a]
    return {
        "parents": len(parents),
        "named": len(named),
        "replies": len(replies),
        "auth_urls": sum(  # in threads opened since the last reset (not a backlog's)
            "/onboard/" in str(a.get("text", "")) and str(a["thread_ts"]) in roots for a in replies
        ),
        "responses": len(texts),
        "apologies": sum("something went wrong" in t for t in texts),
        "busy": sum("busy" in t.lower() for t in texts),
        "calls": len(stand.calls),
    }


async def open_loop(stand: SlackStandIn, job: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    acks: list[float] = []
    statuses: list[int] = []
    sent_at: dict[str, float] = {}
    lag = 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def send(text: str) -> None:
            channel = CHANNELS[len(sent_at) % len(CHANNELS)]
            payload = command_body(text, f"{stand.base_url}/_response/bench", channel)
            ts = str(int(time.time()))
            headers = {
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature(ts, payload, job["secret"]),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            sent_at[text] = time.monotonic()
            async with http.post(job["url"], data=payload, headers=headers) as resp:
                await resp.read()
            acks.append((time.monotonic() - sent_at[text]) * 1000)
            statuses.append(resp.status)

        started, tasks = loop.time(), []
        for i, text in enumerate(job["texts"]):
            due = started + i / job["rate"]
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            lag = max(lag, loop.time() - due)
            tasks.append(asyncio.create_task(send(text)))
        await asyncio.gather(*tasks)
        deadline = loop.time() + job.get("settle", 10)
        while loop.time() < deadline and len(_first_posts(stand, sent_at)) < len(sent_at):
            await asyncio.sleep(0.05)
    return {
        "first_post_ms": _first_posts(stand, sent_at),
        "ack_ms": acks,
        "statuses": statuses,
        "lag_ms": lag * 1000,
    }


async def run() -> None:
    stand = await SlackStandIn(post_rate=None, channels={"C-ops", "C-alerts", *CHANNELS}).start()
    hello = {"api_url": stand.api_url, "response_url": f"{stand.base_url}/_response/bench"}
    print(json.dumps(hello), flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line.startswith("{"):
            job = json.loads(line)["open_loop"]
            print(json.dumps(await open_loop(stand, job)), flush=True)
        elif line == "reset":
            stand.calls.clear()
            stand.messages.clear()
            stand.responses.clear()
            print("{}", flush=True)
        else:
            print(json.dumps(count(stand)), flush=True)
    await stand.stop()


if __name__ == "__main__":
    asyncio.run(run())
