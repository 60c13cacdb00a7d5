"""A loopback stand-in of the Slack Web API (and Socket Mode), for the tests.

Same paths (`/api/<method>`), the same JSON envelopes (`{"ok": true, ...}` or `{"ok": false,
"error": "channel_not_found"}`), HTTP 429 with `Retry-After`, and injectable 5xx. Records every
call.

As harsh as Slack about pace: chat.postMessage "generally allows posting one message per second
per channel ... short bursts >1 allowed" (https://api.slack.com/methods/chat.postMessage, "Rate
limiting"; https://api.slack.com/apis/rate-limits, "Special rate limits"). A token bucket per
channel (thread replies count for their channel) holds ``post_burst`` posts (Slack names no
number; 2 is the least that is still a burst) and refills ``post_rate`` a second; a post beyond it
gets HTTP 429 `{"ok": false, "error": "ratelimited"}` with `Retry-After` (whole seconds, at least
1, as Slack sends it; slack_sdk parses it as an integer) and is not posted. Tests may raise
``post_rate`` to keep that shape at a faster tempo; ``post_rate=None`` turns pacing off
(benchmarks of our own latency).
Message metadata (`metadata` of chat.postMessage) is stored and returned by conversations.history
and conversations.replies when `include_all_metadata` is true, as Slack does.

`response_url` posts land on `/_response/<id>`. Socket Mode: `apps.connections.open` returns
a `ws://` URL served here that sends `hello` and delivers envelopes, recording the client's acks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-test-0000-renewbot"
APP_TOKEN = "xapp-test-0000-renewbot"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float


@dataclass
class SlackStandIn:
    channels: set[str] = field(default_factory=lambda: {"C-ops", "C-alerts"})
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    drop_responses: int = 0  # response_url posts whose connection closes unanswered
    # the bot token's scopes (None: any method is allowed); a method whose scope is missing is
    # answered as Slack does: {"ok": false, "error": "missing_scope", "needed", "provided"}
    scopes: set[str] | None = None
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    # scripted failures (fail_next): method -> list of ("429", seconds) | ("500", None or a 5xx
    # status) | ("error", code) | ("drop", None) | ("cut", None) | ("lost", None)
    failures: dict[str, list[tuple[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    post_rate: float | None = 1.0  # chat.postMessage per second per channel (None: no limit)
    post_burst: int = 2
    throttled: list[str] = field(default_factory=list)  # channels of posts answered with 429
    # a post Slack accepted whose answer never reaches the client (the crash window of a sender)
    stalled: list[dict[str, Any]] = field(default_factory=list)
    _stall: int = 0
    # posts matching this are stored but never answered (a crash while Slack takes them)
    stall_when: Callable[[dict[str, Any]], bool] | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    # -- what tests look at ------------------------------------------------------------

    def called(self, method: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.method == method]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The replies posted in one thread, in the order Slack received them."""
        return [
            a
            for a in self.called("chat.postMessage")
            if a.get("channel") == channel and a.get("thread_ts") == ts
        ]

    def fail_next(self, method: str, kind: str, value: Any = None) -> None:
        """The next call of ``method`` fails: "429" (Retry-After ``value``), "500" (status
        ``value``, 500 by default), "error" (``{"ok": false, "error": value}``), "drop" (the
        connection closes unanswered), "cut" (carried out, its answer cut short) or "lost"
        (carried out, the connection closes before any answer: a load balancer or Slack's
        server failing mid-request)."""
        self.failures[method].append((kind, value))

    def stall_next_post(self) -> None:
        """The next accepted chat.postMessage is stored, but its answer never comes back."""
        self._stall += 1

    def posted(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages Slack accepted in ``channel``, in the order it received them."""
        return [a for (ch, _), a in self.messages.items() if ch == channel and "thread_ts" not in a]

    def _over_pace(self, channel: str) -> float:
        """Seconds until ``channel`` may post again; 0 takes a token (the post goes ahead)."""
        if self.post_rate is None:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.get(channel, (float(self.post_burst), now))
        tokens = min(float(self.post_burst), tokens + (now - at) * self.post_rate)
        if tokens >= 1.0:
            self._buckets[channel] = (tokens - 1.0, now)
            return 0.0
        self._buckets[channel] = (tokens, now)
        return (1.0 - tokens) / self.post_rate

    # -- server ------------------------------------------------------------------------

    async def start(self) -> SlackStandIn:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/_response/{id}", self._response)
        app.router.add_get("/_socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._closing.set()
        for ws in self._sockets:
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    async def _args(self, request: web.Request) -> dict[str, Any]:
        if request.method == "GET":
            return dict(request.query)
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        form = await request.post()
        args: dict[str, Any] = {k: str(v) for k, v in form.items()}
        for key in ("blocks", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await self._args(request)
        self.calls.append(Call(method, args, time.monotonic()))
        cut = lost = False
        if self.failures[method]:
            kind, value = self.failures[method].pop(0)
            if kind == "drop":  # the connection closes before any answer (a reset, a restart)
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)  # never reaches the client
            cut = kind == "cut"  # taken, but the answer's body is cut short (below)
            lost = kind == "lost"  # taken, but the connection closes before any answer
            if kind == "429":
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(value)},
                )
            if kind == "500":  # a server error; ("500", 502) answers 502, and so on
                return web.Response(status=int(value or 500), text="upstream failure")
            if not (cut or lost):
                return web.json_response({"ok": False, "error": value})
        auth = request.headers.get("Authorization", "")
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if auth != f"Bearer {wanted}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        needed = _needed_scope(method, args) if self.scopes is not None else ""
        if self.scopes is not None and needed and needed not in self.scopes:
            return web.json_response(
                {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": needed,
                    "provided": ",".join(sorted(self.scopes)),
                }
            )
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        if method == "chat.postMessage" and str(args.get("channel", "")) in self.channels:
            wait = self._over_pace(str(args["channel"]))
            if wait > 0:
                self.throttled.append(str(args["channel"]))
                return web.json_response(  # Slack's Retry-After is whole seconds, at any tempo
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        answer = await handler(args)
        stall = self._stall or (self.stall_when is not None and self.stall_when(args))
        if method == "chat.postMessage" and answer.get("ok") and stall:
            self._stall = max(0, self._stall - 1)
            self.stalled.append(args)
            await self._closing.wait()  # hangs until the client gives up or the server stops
        if cut:
            return await _cut_short(request, answer)
        if lost:
            assert request.transport is not None
            request.transport.close()
        return web.json_response(answer)

    def _next_ts(self) -> str:
        return f"{1800000000 + next(self._ts)}.000100"

    async def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://renewbot-test.slack.com/",
            "team": "Test",
            "user": "renewbot",
            "team_id": "T1",
            "user_id": "U-bot",
            "bot_id": "B-bot",
            "is_enterprise_install": False,
        }

    async def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if "metadata" in args:
            meta = args["metadata"]
            meta = json.loads(meta) if isinstance(meta, str) else meta
            if not isinstance(meta, dict) or "event_type" not in meta:
                return {"ok": False, "error": "invalid_metadata_format"}
            args["metadata"] = meta
        ts = self._next_ts()
        message = {"type": "message", "text": args.get("text"), "ts": ts, "bot_id": "B-bot"}
        self.messages[(channel, ts)] = dict(args)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _shown(self, ts: str, args: dict[str, Any], metadata: bool) -> dict[str, Any]:
        message = {"type": "message", "text": args.get("text"), "ts": ts, "bot_id": "B-bot"}
        if "thread_ts" in args:
            message["thread_ts"] = args["thread_ts"]
        if metadata and "metadata" in args:
            message["metadata"] = args["metadata"]
        return message

    @staticmethod
    def _flag(value: Any) -> bool:
        return value is True or str(value).lower() in {"true", "1"}

    async def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages of a channel, newest first."""
        channel = str(args.get("channel"))
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        meta = self._flag(args.get("include_all_metadata"))
        found = [
            self._shown(ts, a, meta)
            for (ch, ts), a in self.messages.items()
            if ch == channel and "thread_ts" not in a
        ]
        limit = int(args.get("limit") or 100)
        return {"ok": True, "messages": list(reversed(found))[:limit], "has_more": False}

    async def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """A thread: its parent, then the replies oldest first."""
        channel, ts = str(args.get("channel")), str(args.get("ts"))
        if (channel, ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        meta = self._flag(args.get("include_all_metadata"))
        found = [self._shown(ts, self.messages[(channel, ts)], meta)]
        found += [
            self._shown(t, a, meta)
            for (ch, t), a in self.messages.items()
            if ch == channel and a.get("thread_ts") == ts
        ]
        return {"ok": True, "messages": found[: int(args.get("limit") or 1000)]}

    async def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args.get("channel")), str(args.get("ts")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key] = dict(args)
        return {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text")}

    async def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if str(args.get("channel")) not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    async def _chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel")), str(args.get("message_ts"))
        if (channel, ts) not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://renewbot-test.slack.com/archives/{channel}/"
            f"p{ts.replace('.', '')}",
        }

    async def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "usergroups": [
                {"id": gid, "handle": gid.lower(), "users": users}
                for gid, users in self.usergroups.items()
            ],
        }

    async def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base_url.replace("http://", "ws://") + "/_socket"}

    async def _response(self, request: web.Request) -> web.Response:
        if self.drop_responses:  # the connection closes unanswered, the reply not taken
            self.drop_responses -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never reaches the client
        self.responses.append(await request.json())
        return web.Response(text="ok")

    # -- Socket Mode -------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "applink-test", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A-renewbot"},
            }
        )
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.socket_acks.append(json.loads(msg.data))
        return ws

    async def deliver(self, envelope_type: str, payload: dict[str, Any]) -> str:
        """Send one Socket Mode envelope to the connected client; returns its envelope id."""
        deadline = asyncio.get_running_loop().time() + 10
        while not self._sockets:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("no Socket Mode client connected")
            await asyncio.sleep(0.02)
        envelope_id = f"env-{next(self._ts)}"
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": envelope_type,
                "payload": payload,
                "accepts_response_payload": envelope_type == "slash_commands",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope_id


def mentioned(args: dict[str, Any]) -> list[str]:
    """User ids Slack would notify for a chat.postMessage: `<@U...>` in its mrkdwn texts
    (Slack's "Formatting text for app surfaces": escaped `&lt;@U...&gt;` is plain text)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.extend(re.findall(r"<@([UW][\w-]+)>", str(node.get("text", ""))))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(args.get("blocks"))
    walk(args.get("attachments"))
    return found


async def _cut_short(request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
    """``answer``'s headers and half its body, then the connection closes: the client reads a
    body shorter than its Content-Length (a connection lost mid-answer)."""
    body = json.dumps(answer).encode()
    resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    assert request.transport is not None
    request.transport.close()
    return resp


def _needed_scope(method: str, args: dict[str, Any]) -> str:
    """The bot scope a Web API method needs, as the methods' reference pages list them
    (https://docs.slack.dev/reference/methods/conversations.replies and the like): reading a
    conversation needs channels:history for a public channel, groups:history for a private one,
    im:history for a direct message. The kind is told here by the id's first letter (G private,
    D direct, else public), as this stand-in names its channels; real Slack keeps a channel's
    C id when it is made private. Methods not listed here are not checked."""
    if method in ("conversations.history", "conversations.replies"):
        first = str(args.get("channel", ""))[:1]
        return {"G": "groups:history", "D": "im:history"}.get(first, "channels:history")
    return {
        "chat.postMessage": "chat:write",
        "chat.update": "chat:write",
        "usergroups.list": "usergroups:read",
    }.get(method, "")
