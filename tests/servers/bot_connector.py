"""A loopback stand-in of the Bot Connector service and its authentication, for the tests.

Serves what the bot talks to, with the documented paths and JSON shapes:
- the channel's OpenID metadata and signing keys (`/v1/.well-known/openidconfiguration`,
  `/v1/.well-known/keys`, keys with `kid` and `endorsements`), so inbound JWTs signed here verify;
- the bot's login (`POST /botframework.com/oauth2/v2.0/token`, client credentials);
- the Connector REST API under a Teams-like service URL (`/amer/v3/conversations/...`):
  send (`POST .../activities`), reply (`POST .../activities/{id}`) and update (`PUT`), answering
  `ResourceResponse` JSON or an `ErrorResponse` (`{"error": {"code", "message"}}`).
Records every call; ``fail_next`` scripts 429 (with Retry-After), 412 or 5xx answers.

The signing keys behave as "Authentication with the Bot Connector API" (learn.microsoft.com,
bot-service/rest-api/bot-framework-rest-connector-authentication) describes them: a list that is
"relatively stable" and may be cached, but that changes, so a bot refetches it. ``publish_next_key``
adds a new key (``token(key="next")`` signs with it), and ``hang_keys`` makes the metadata and key
endpoints hold every request open until ``recover_keys``, like an endpoint that accepts the
connection and never answers. ``key_fetches`` counts the metadata requests (each refresh starts
with one), ``keys_held`` those held open right now.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

APP_ID = "00000000-0000-4000-8000-00000000b075"
APP_PASSWORD = "test-bot-secret-not-real"
ISSUER = "https://api.botframework.com"
TENANT = "72f988bf-0000-4000-8000-000000000001"
TEAM = "19:team-renewbot-support@thread.tacv2"
CHANNEL = "19:support-channel@thread.tacv2"
ALERTS = "19:alerts-channel@thread.tacv2"


@dataclass
class Call:
    method: str
    conversation: str
    activity_id: str | None
    body: dict[str, Any]
    authorization: str
    response_id: str = ""
    at: float = field(default_factory=time.perf_counter)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class BotConnectorStandIn:
    app_id: str = APP_ID
    password: str = APP_PASSWORD
    require_auth: bool = True
    calls: list[Call] = field(default_factory=list)
    logins: int = 0
    base_url: str = ""
    failures: list[tuple[int, float | None]] = field(default_factory=list)
    on_call: Callable[[Call], None] | None = None  # e.g. a load generator waiting for replies
    key_fetches: int = 0
    keys_held: int = 0  # metadata requests held open right now
    keys_hanging: bool = False
    next_key_published: bool = False
    _signing: rsa.RSAPrivateKey = field(default_factory=_key)
    _unendorsed: rsa.RSAPrivateKey = field(default_factory=_key)
    _stranger: rsa.RSAPrivateKey = field(default_factory=_key)
    _next: rsa.RSAPrivateKey = field(default_factory=_key)
    _keys_answer: asyncio.Event = field(default_factory=asyncio.Event)
    _issued: set[str] = field(default_factory=set)
    _ids: Any = field(default_factory=lambda: itertools.count(1_700_000_000_000))
    _runner: web.AppRunner | None = None

    # -- addresses -----------------------------------------------------------------------

    @property
    def service_url(self) -> str:
        return f"{self.base_url}/amer/"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/v1/.well-known/openidconfiguration"

    @property
    def login_url(self) -> str:
        return f"{self.base_url}/botframework.com/oauth2/v2.0/token"

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The bot's RENEWBOT_TEAMS__* settings pointing here."""
        return {
            "app_id": self.app_id,
            "app_password": self.password,
            "openid_metadata_url": self.metadata_url,
            "login_url": self.login_url,
            **extra,
        }

    # -- what tests look at ------------------------------------------------------------

    def posts(self, conversation: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == "POST" and (conversation is None or c.conversation == conversation)
        ]

    def updates(self, conversation: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method == "PUT" and (conversation is None or c.conversation == conversation)
        ]

    @staticmethod
    def texts(calls: list[Call]) -> list[str]:
        """The visible text of each posted card (its TextBlocks joined by newlines)."""
        return [card_text(c.body) for c in calls]

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        self.failures.extend([(status, retry_after)] * times)

    def hang_keys(self) -> None:
        """From now on the metadata and key requests get no answer until ``recover_keys``."""
        self.keys_hanging = True
        if self._keys_answer.is_set():  # recovered earlier: a new hang needs a new event
            self._keys_answer = asyncio.Event()

    def recover_keys(self) -> None:
        """Answer the held requests (with the keys published by then) and every later one."""
        self.keys_hanging = False
        self._keys_answer.set()

    def publish_next_key(self) -> None:
        """Rotation: the key document lists a new key, kid "next", endorsed like "signing"."""
        self.next_key_published = True

    # -- inbound tokens ------------------------------------------------------------------

    def token(self, service_url: str | None = None, **overrides: Any) -> str:
        """A channel JWT as the Bot Connector would sign it; overrides break it on purpose.

        Special overrides: ``key`` ("unendorsed", "next" or "stranger"), ``alg`` ("HS256"),
        ``kid``.
        """
        key_name = overrides.pop("key", "signing")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": self.app_id,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 3600,
            "serviceurl": service_url or self.service_url,
        }
        alg = overrides.pop("alg", "RS256")
        kid = overrides.pop("kid", key_name)
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        if alg == "HS256":
            return jwt.encode(claims, "a-shared-secret-of-32-bytes-long!", "HS256", {"kid": kid})
        key = {"signing": self._signing, "unendorsed": self._unendorsed, "next": self._next}.get(
            key_name, self._stranger
        )
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def activity(
        self,
        text: str,
        *,
        conversation: str | None = None,
        user: str = "aad-sam",
        name: str = "Sam Support",
        value: dict[str, Any] | None = None,
        personal: bool = False,
        mention: bool = True,
    ) -> dict[str, Any]:
        """A Teams-shaped message activity: a channel thread post (@mention) or a 1:1 message."""
        message_id = str(next(self._ids))
        conv_id = conversation or (
            f"a:personal-{user}" if personal else f"{CHANNEL};messageid={message_id}"
        )
        body_text = f"<at>renewbot</at> {text}" if mention and not personal else text
        activity: dict[str, Any] = {
            "type": "message",
            "id": message_id,
            "timestamp": "2026-11-27T09:00:00.000Z",
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {"id": f"29:{user}", "name": name, "aadObjectId": user},
            "conversation": {
                "id": conv_id,
                "conversationType": "personal" if personal else "channel",
                "tenantId": TENANT,
                **({} if personal else {"isGroup": True}),
            },
            "recipient": {"id": f"28:{self.app_id}", "name": "renewbot"},
            "text": body_text,
            "textFormat": "plain",
            "locale": "en-US",
            "channelData": {"tenant": {"id": TENANT}}
            if personal
            else {
                "teamsChannelId": CHANNEL,
                "teamsTeamId": TEAM,
                "channel": {"id": channel_of(conv_id)},
                "team": {"id": TEAM},
                "tenant": {"id": TENANT},
            },
        }
        if mention and not personal:
            activity["entities"] = [
                {
                    "type": "mention",
                    "text": "<at>renewbot</at>",
                    "mentioned": {"id": f"28:{self.app_id}", "name": "renewbot"},
                }
            ]
        if value is not None:
            activity["value"] = value
            activity["text"] = ""
        return activity

    def installation(self, channel: str = ALERTS) -> dict[str, Any]:
        """The conversationUpdate Teams sends when the bot is added to a team."""
        return {
            "type": "conversationUpdate",
            "id": f"f:{uuid.uuid4()}",
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {"id": "29:aad-admin", "aadObjectId": "aad-admin"},
            "conversation": {
                "id": channel,
                "conversationType": "channel",
                "isGroup": True,
                "tenantId": TENANT,
            },
            "recipient": {"id": f"28:{self.app_id}", "name": "renewbot"},
            "membersAdded": [{"id": f"28:{self.app_id}"}],
            "channelData": {
                "team": {"id": TEAM},
                "channel": {"id": channel},
                "eventType": "teamMemberAdded",
                "tenant": {"id": TENANT},
            },
        }

    # -- server ------------------------------------------------------------------------------

    async def start(self) -> BotConnectorStandIn:
        app = web.Application()
        app.router.add_get("/v1/.well-known/openidconfiguration", self._metadata)
        app.router.add_get("/v1/.well-known/keys", self._keys)
        app.router.add_post("/botframework.com/oauth2/v2.0/token", self._login)
        base = "/amer/v3/conversations/{conversation}/activities"
        app.router.add_post(base, self._send)
        app.router.add_post(base + "/{activity}", self._send)
        app.router.add_put(base + "/{activity}", self._update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._keys_answer.set()  # held key requests end, so the server can shut down
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metadata(self, request: web.Request) -> web.Response:
        self.key_fetches += 1
        if self.keys_hanging:
            self.keys_held += 1
            try:
                await self._keys_answer.wait()
            finally:
                self.keys_held -= 1
        return web.json_response(
            {
                "issuer": ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": f"{self.base_url}/v1/.well-known/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        if self.keys_hanging:
            await self._keys_answer.wait()
        published = [
            ("signing", self._signing, ["msteams", "webchat"]),
            ("unendorsed", self._unendorsed, ["skype"]),
        ]
        if self.next_key_published:
            published.append(("next", self._next, ["msteams", "webchat"]))
        keys = []
        for kid, key, endorsements in published:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "endorsements": endorsements})
        return web.json_response({"keys": keys})

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.app_id or form.get("client_secret") != self.password:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        self.logins += 1
        token = f"bot-token-{uuid.uuid4().hex}"
        self._issued.add(token)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": token,
            }
        )

    def _refuse(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        if self.require_auth and auth.removeprefix("Bearer ") not in self._issued:
            return _error(401, "Unauthorized", "Authorization has been denied for this request.")
        if self.failures:
            status, retry_after = self.failures.pop(0)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            code = {429: "TooManyRequests", 412: "PreconditionFailed"}.get(status, "ServiceError")
            return _error(status, code, "scripted failure", headers)
        return None

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._refuse(request)
        self.calls.append(
            Call(
                "POST",
                request.match_info["conversation"],
                request.match_info.get("activity"),
                body,
                request.headers.get("Authorization", ""),
            )
        )
        if refused is not None:
            self.calls[-1].method = f"REFUSED-{refused.status}"
            return refused
        self.calls[-1].response_id = str(next(self._ids))
        if self.on_call is not None:
            self.on_call(self.calls[-1])
        return web.json_response({"id": self.calls[-1].response_id}, status=201)

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._refuse(request)
        call = Call(
            "PUT",
            request.match_info["conversation"],
            request.match_info["activity"],
            body,
            request.headers.get("Authorization", ""),
        )
        self.calls.append(call)
        if refused is not None:
            call.method = f"REFUSED-{refused.status}"
            return refused
        return web.json_response({"id": request.match_info["activity"]})


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def channel_of(conversation: str) -> str:
    return conversation.split(";messageid=", 1)[0]


def card_text(activity: dict[str, Any]) -> str:
    """The text a Teams user reads on an activity: its cards' TextBlocks, else its text."""
    lines: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TextBlock":
                lines.append(str(node.get("text", "")).replace("\u200b", ""))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for attachment in activity.get("attachments") or []:
        walk(attachment.get("content"))
    return "\n".join(lines) if lines else str(activity.get("text", ""))


def card_buttons(activity: dict[str, Any]) -> list[dict[str, Any]]:
    """The Action.Submit buttons of an activity's cards."""
    found: list[dict[str, Any]] = []
    for attachment in activity.get("attachments") or []:
        for action in (attachment.get("content") or {}).get("actions") or []:
            if action.get("type") == "Action.Submit":
                found.append(action)
    return found


def mentioned(activity: dict[str, Any]) -> list[str]:
    """User ids Teams would notify for a card activity: an `msteams.entities` mention whose
    `<at>name</at>` text appears in a TextBlock ("Mention support within Adaptive Cards")."""
    found: list[str] = []
    for attachment in activity.get("attachments") or []:
        content = attachment.get("content") or {}
        shown = json.dumps(content.get("body") or [])
        for entity in (content.get("msteams") or {}).get("entities") or []:
            if entity.get("type") == "mention" and json.dumps(entity.get("text"))[1:-1] in shown:
                found.append(str((entity.get("mentioned") or {}).get("id")))
    return found
