"""The anchors of `python -m bench.wrk`, each a process of its own: `python -m bench.anchors
raw|bolt|bolt-post PORT API_URL`.

raw: aiohttp reads the form POST, checks the Slack signature with slack_sdk's verifier, answers
200 (the HTTP layer's ceiling). bolt: slack-bolt's AsyncApp (process_before_response=True) whose
`/renew-token` listener only acks, bolt verifying the signature itself. bolt-post: the same, then
one chat.postMessage naming the command from a background task (the anchor of "command -> first
thread post"). All serve
POST /slack/events on 127.0.0.1 until terminated; no access log.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiohttp import web

from bench.wrk_servers import BOT_TOKEN, SECRET


def raw_app() -> web.Application:
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(SECRET)

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        ok = verifier.is_valid(raw, ts, request.headers.get("X-Slack-Signature", ""))
        return web.Response(status=200 if ok else 401)

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    return app


def bolt_app(api_url: str, post: bool = False) -> web.Application:
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=BOT_TOKEN, base_url=api_url)
    bolt = AsyncApp(client=client, signing_secret=SECRET, process_before_response=True)

    tasks: set[asyncio.Task[Any]] = set()

    @bolt.command("/renew-token")
    async def only_ack(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        if post:  # then one message naming the command, from a background task
            text = f"Renewal started ({body.get('text', '')})"
            task = asyncio.create_task(client.chat_postMessage(channel="C-ops", text=text))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def handle(request: web.Request) -> web.Response:
        resp = await bolt.async_dispatch(
            AsyncBoltRequest(
                body=await request.text(), query=request.query_string, headers=dict(request.headers)
            )
        )
        return web.Response(status=resp.status, body=resp.body)

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    return app


def main() -> None:
    kind, port, api_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = raw_app() if kind == "raw" else bolt_app(api_url, post=kind == "bolt-post")
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
