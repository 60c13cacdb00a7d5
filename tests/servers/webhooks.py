"""A receiving service for webhooks: verifies every delivery as the Standard Webhooks spec says.

Each POST is checked twice: with the specification's own library (``standardwebhooks``) and by
hand (HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{raw body}``, base64, ``v1,`` prefix,
timestamp within 5 minutes), so a sender that merely agrees with the library on a mistake fails.
``fail_next`` answers 500 that many times (a receiver that is down and comes back); a bad
signature is answered 401 and counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def by_hand(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > 300:
        return False
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


@dataclass
class WebhookReceiver:
    secret: str
    fail_next: int = 0
    attempts: list[str] = field(default_factory=list)  # webhook-id of every POST
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, body)
    bad_signatures: int = 0
    _runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.attempts.append(headers.get("webhook-id", ""))
        try:
            parsed = Webhook(self.secret).verify(body, headers)
            assert by_hand(self.secret, headers, body)
        except (WebhookVerificationError, AssertionError, KeyError, ValueError):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="down")
        self.accepted.append((headers["webhook-id"], parsed))
        return web.Response(status=204)

    def kinds(self) -> list[str]:
        return [str(b["type"]) for _, b in self.accepted]

    def ids(self) -> list[str]:
        return [i for i, _ in self.accepted]

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks/renewbot", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hooks/renewbot"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def secret() -> str:
    import secrets as _secrets

    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()
