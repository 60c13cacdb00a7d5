"""The anchors of `python -m bench.wrk`, each a process of its own: `python -m bench.anchors
raw|bolt|bolt-post|claim-post PORT API_URL [DATABASE_URL]`.

raw: aiohttp reads the form POST, checks the Slack signature with slack_sdk's verifier, answers
200 (the HTTP layer's ceiling). bolt: slack-bolt's AsyncApp (process_before_response=True) whose
`/renew-token` listener only acks, bolt verifying the signature itself. bolt-post: the same, then
one chat.postMessage naming the command from a background task (the anchor of "command -> first
thread post"). claim-post: the floor of a claim-first path (issue 11: the renewal's row before
its thread), for "command -> first thread post": raw's signature check, then renewbot's own
claim statement (the tenant looked up, the renewal and its audit entry inserted: one statement,
on asyncpg's pool), then the thread's chat.postMessage on a kept-alive session, then the 200;
none of renewbot's layers, logging or other work. All serve POST /slack/events on 127.0.0.1
until terminated; no access log.
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


def claim_app(api_url: str, database_url: str) -> web.Application:
    import json
    import uuid
    from datetime import UTC, datetime, timedelta
    from urllib.parse import parse_qsl

    import aiohttp
    import asyncpg
    from slack_sdk.signature import SignatureVerifier

    from adapters.storage.crypto import SecretBox, generate_key
    from adapters.storage.renewals import claim_statement
    from core.model import Actor, Origin, Renewal
    from core.ports import AuditEntry

    verifier = SignatureVerifier(SECRET)
    box = SecretBox([generate_key()])
    headers = {
        "Authorization": f"Bearer {BOT_TOKEN}",
        "Content-Type": "application/json;charset=utf-8",
    }
    post_url = api_url.rstrip("/") + "/chat.postMessage"
    held: dict[str, Any] = {}

    async def nothing_to_reset(conn: asyncpg.Connection) -> None:
        pass

    async def start(app: web.Application) -> None:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        held["pool"] = await asyncpg.create_pool(  # (no reset on release: no session state)
            dsn, min_size=1, max_size=8, reset=nothing_to_reset
        )
        held["http"] = aiohttp.ClientSession(trust_env=False)

    async def stop(app: web.Application) -> None:
        await held["http"].close()
        await held["pool"].close()

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        if not verifier.is_valid(raw, ts, request.headers.get("X-Slack-Signature", "")):
            return web.Response(status=401)
        form = dict(parse_qsl(raw.decode()))
        now = datetime.now(UTC)
        renewal = Renewal(
            id=uuid.uuid4().hex,
            tenant_key="",
            requested_by=Actor("slack", form["user_id"], form["user_name"]),
            invitation_email="",
            origin=Origin("slack", form["channel_id"]),
            created_at=now,
        )
        renewal.invite(uuid.uuid4().hex * 2, now + timedelta(days=7), "https://x/onboard/x", now)
        entry = AuditEntry(now, "renewal.requested", form["user_id"], renewal.id, None)
        sql, args = claim_statement(form["text"].strip(), renewal, entry, box)
        async with held["pool"].acquire() as conn:
            row = await conn.fetchrow(sql, *args)
        if row is not None and row["claimed"]:
            body = {"channel": form["channel_id"], "text": f"Renewal started ({form['text']})"}
            async with held["http"].post(post_url, data=json.dumps(body), headers=headers) as r:
                await r.read()
        return web.Response(status=200)

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/slack/events", handle)
    return app


def main() -> None:
    kind, port, api_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "claim-post":
        app = claim_app(api_url, sys.argv[4])
    else:
        app = raw_app() if kind == "raw" else bolt_app(api_url, post=kind == "bolt-post")
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
