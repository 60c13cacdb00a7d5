"""The Slack Web API stand-in in a process of its own, for `python -m bench.wrk`.

Prints {"api_url": ..., "response_url": ...} once, then answers one JSON line per stdin line:
  "count" -> {"parents": top-level posts, "named": distinct commands named by a top-level post
              (the text in parentheses, as bench/loadgen.py reads it), "replies": thread replies,
              "responses": response_url posts, "apologies": of those, how many apologise,
              "busy": of those, how many say the bot is busy}
  "reset" -> forgets every call (between rows; memory stays bounded)
Pacing is off (``post_rate=None``), as in bench/loadgen.py: the bench measures renewbot, not
Slack's per-channel limit. Stops at end of input. It does not sign or send commands.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from tests.servers.slack import SlackStandIn


def count(stand: SlackStandIn) -> dict[str, Any]:
    parents = [a for a in stand.messages.values() if "thread_ts" not in a]
    named: set[str] = set()
    for args in parents:
        text = str(args.get("text", ""))
        start, end = text.find("("), text.find(")")
        if 0 <= start < end:
            named.add(text[start + 1 : end])
    texts = [str(r.get("text", "")) for r in stand.responses]
    return {
        "parents": len(parents),
        "named": len(named),
        "replies": len(stand.messages) - len(parents),
        "responses": len(texts),
        "apologies": sum("something went wrong" in t for t in texts),
        "busy": sum("busy" in t.lower() for t in texts),
        "calls": len(stand.calls),
    }


async def run() -> None:
    stand = await SlackStandIn(post_rate=None).start()
    hello = {"api_url": stand.api_url, "response_url": f"{stand.base_url}/_response/bench"}
    print(json.dumps(hello), flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "reset":
            stand.calls.clear()
            stand.messages.clear()
            stand.responses.clear()
            print("{}", flush=True)
        else:
            print(json.dumps(count(stand)), flush=True)
    await stand.stop()


if __name__ == "__main__":
    asyncio.run(run())
