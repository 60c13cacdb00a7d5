"""The Slack entry points: `/renew-token` and the thread's buttons, over HTTP or Socket Mode.

Listeners ack at once (bolt runs with process_before_response, so no 10 ms wait loop) and hand the
work to a supervised background task. Slack retries and double clicks are recognised by their
trigger id. Over HTTP, a slash command is acked here, ahead of bolt's dispatch (bolt dispatches
block actions and events, and commands over Socket Mode, through the same `_accept`): `help` and
a mistyped command are answered in the body of the ack (one call fewer, no background work), and
with ``max_in_flight`` commands already being worked on, a command is told at once that the bot
is busy instead of queueing behind them (no pool timeouts, no apology after the 200, bounded
memory). Requests with a missing, malformed or stale signature are refused with 401 before
bolt sees them, and no body is ever logged. With workspaces configured, a request that names
none of them (or no workspace at all) is refused with 403 before any listener runs, over HTTP
and Socket Mode alike.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.blocks import ACTION_PREFIX, action_kind, escape
from adapters.slack.threads import PLATFORM, SlackThreads
from core import commands, messages
from core.dedup import SeenTriggers
from core.desk import Desk, Reply, guarded
from core.errors import CommandSyntaxError
from core.model import Actor, Origin
from core.tasks import Supervisor

log = logging.getLogger("renewbot.slack")
SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
MAX_SKEW = 300
GROUPS_TTL = 300.0
# Commands worked on at once before a new one is told the bot is busy. One core sustains about
# 90-250 renewals/s (bench/README.md): 64 is well under a second of queue, and far from the
# database pool (30 connections) timing out a waiting command.
MAX_IN_FLIGHT = 64


class SlackBot:
    def __init__(
        self,
        *,
        desk: Desk,
        threads: SlackThreads,
        client: AsyncWebClient,
        signing_secret: str,
        supervisor: Supervisor,
        command: str = "/renew-token",
        workspaces: Iterable[str] = (),
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.desk = desk
        self.command = command
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.threads = threads
        self.client = client
        self.supervisor = supervisor
        self.seen = SeenTriggers()
        # Never fetched: -inf, not 0.0 (the monotonic clock starts near zero on a freshly booted
        # machine, and 0.0 then read as "fetched moments ago" for the first five minutes).
        self._groups: tuple[float, dict[str, frozenset[str]]] = (float("-inf"), {})
        self._socket: Any = None
        # We verify signatures ourselves (bolt would log the body of a rejected request).
        self.verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self.app = AsyncApp(
            client=client,
            signing_secret=signing_secret or None,
            process_before_response=True,
            request_verification_enabled=False,
            logger=logging.getLogger("slack_bolt"),
        )
        # Slack workspace (T...) or Enterprise Grid org (E...) ids; empty: any workspace.
        self.workspaces = frozenset(w.strip() for w in workspaces if w.strip())
        self.app.use(self._workspace_guard)
        self.app.command(command)(self._on_command)
        self.app.action(re.compile(f"^{ACTION_PREFIX}"))(self._on_action)

    async def _workspace_guard(
        self,
        context: AsyncBoltContext,
        next_: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse:
        """Refuse what comes from no allowed workspace, including a payload that names none.

        Bolt reads the workspace from where each payload kind carries it: `team_id` of a slash
        command, `team.id` (or `user.team_id`) of a block action, `team_id`/`authorizations` of
        an event. Slack's url_verification and ssl_check never get here (bolt answers them in
        its built-in middleware, which runs first).
        """
        if not self._workspace_allowed(context.team_id or "", context.enterprise_id or ""):
            return BoltResponse(
                status=403,
                body='{"error":"workspace_not_allowed"}',
                headers={"content-type": "application/json"},
            )
        return await next_()

    def _workspace_allowed(self, team: str, org: str) -> bool:
        if self.workspaces and not ({team, org} - {""}) & self.workspaces:
            log.warning("slack.workspace_refused", extra={"team": team[:32] or "(none)"})
            return False
        return True

    # -- listeners: ack, then hand off ------------------------------------------------

    async def _on_command(self, ack: Any, body: dict[str, Any]) -> None:
        text = await self._accept(body)
        if text is None:
            await ack()
        else:
            await ack(text=escape(text), response_type="ephemeral")

    async def _on_action(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        if self.seen.first_time(str(body.get("trigger_id", ""))):
            self._spawn(self._action(body), "slack.action")

    async def _accept(self, body: dict[str, Any]) -> str | None:
        """Take a slash command: what to answer in the ack itself, or None (work started)."""
        if not self.seen.first_time(str(body.get("trigger_id", ""))):
            return None  # a Slack retry or a double submit: the first one is being answered
        quick = await self._quick_reply(body)
        if quick is not None:
            return quick
        if self.in_flight >= self.max_in_flight:
            log.warning("slack.busy", extra={"in_flight": self.in_flight})
            return messages.busy()
        self._spawn(self._command(body), "slack.command")
        return None

    async def _quick_reply(self, body: dict[str, Any]) -> str | None:
        """`help` or a mistyped command, answered without I/O; None for everything else.

        Only when the user's groups are cached (access rules may name groups); the desk still
        decides (a refused `help` is audited there, like any refusal).
        """
        fetched_at, by_user = self._groups
        if time.monotonic() - fetched_at > GROUPS_TTL:
            return None
        uid = str(body.get("user_id") or "")
        actor = Actor(
            PLATFORM,
            uid,
            str(body.get("user_name") or uid),
            by_user.get(uid, frozenset()),
            str(body.get("team_id") or ""),
        )
        origin = Origin(PLATFORM, str(body.get("channel_id", "")))
        text = str(body.get("text", ""))
        try:
            quick = isinstance(commands.parse(text, origin, actor), commands.ShowHelp)
        except CommandSyntaxError:
            quick = True
        if not quick:
            return None
        # Answered in the ack (help, a typo): the access log's line is enough at INFO; logging
        # it twice was a sixth of a `help` command's CPU under load (py-spy, bench/wrk.py).
        log.debug("slack.command_received", extra={"user": uid, "answered": "in_ack"})
        return (await self.desk.handle(text, origin, actor)).text

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        self.in_flight += 1
        self.supervisor.spawn(self._counted(work), name)

    async def _counted(self, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            self.in_flight -= 1

    # -- the work after the ack ---------------------------------------------------------

    async def _command(self, body: dict[str, Any]) -> None:
        actor = await self.actor(body.get("user_id"), body.get("user_name"), body.get("team_id"))
        origin = Origin(PLATFORM, str(body.get("channel_id", "")))
        log.info("slack.command_received", extra={"user": actor.user_id})
        await self._answer(body, self.desk.handle(str(body.get("text", "")), origin, actor))

    async def _action(self, body: dict[str, Any]) -> None:
        user = body.get("user") or {}
        team = (body.get("team") or {}).get("id") or user.get("team_id")
        actor = await self.actor(user.get("id"), user.get("username") or user.get("name"), team)
        origin = Origin(PLATFORM, str((body.get("channel") or {}).get("id", "")))
        action = (body.get("actions") or [{}])[0]
        kind, tenant = action_kind(str(action.get("action_id", ""))), str(action.get("value", ""))
        cmd = commands.from_action(kind, tenant, origin, actor)
        if cmd is None:
            return
        log.info("slack.action_received", extra={"user": actor.user_id, "action": kind})
        await self._answer(body, self.desk.execute(cmd, origin, actor))

    async def _answer(self, body: dict[str, Any], work: Awaitable[Reply]) -> None:
        """Show the reply to the person who acted, only to them, with a link to the thread."""
        reply = await guarded(work, PLATFORM)
        text = escape(reply.text)
        if reply.thread is not None and reply.thread.platform == PLATFORM:
            link = await self.threads.permalink(reply.thread)
            if link:
                text += f"\n<{link}|Open the thread>"
        url = body.get("response_url")
        if not url:
            return
        try:
            webhook = AsyncWebhookClient(str(url), timeout=10, session=self.client.session)
            await webhook.send(text=text, response_type="ephemeral", replace_original=False)
        except (SlackClientError, OSError) as exc:
            log.warning("slack.reply_failed", extra={"error": type(exc).__name__})

    async def actor(self, user_id: Any, name: Any, team: Any) -> Actor:
        uid = str(user_id or "")
        return Actor(PLATFORM, uid, str(name or uid), await self._groups_of(uid), str(team or ""))

    async def _groups_of(self, user_id: str) -> frozenset[str]:
        """The user groups the user belongs to (cached; empty when Slack will not say)."""
        fetched_at, by_user = self._groups
        if time.monotonic() - fetched_at > GROUPS_TTL:
            by_user = {}
            try:
                resp = await self.client.usergroups_list(include_users=True)
                for group in resp.get("usergroups") or []:
                    for member in group.get("users") or []:
                        by_user[member] = by_user.get(member, frozenset()) | {str(group["id"])}
            except (SlackApiError, SlackClientError, OSError) as exc:
                log.warning("slack.usergroups_unavailable", extra={"error": type(exc).__name__})
            self._groups = (time.monotonic(), by_user)
        return by_user.get(user_id, frozenset())

    # -- transports ---------------------------------------------------------------------------

    async def connect_socket_mode(self, app_token: str) -> None:
        """Receive commands and clicks over Socket Mode (no public URL needed)."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        self._socket = AsyncSocketModeHandler(self.app, app_token)
        await self._socket.connect_async()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None

    async def handle(self, request: web.Request) -> web.Response:
        """POST /slack/events: guard the signature headers, then let bolt verify and dispatch."""
        ts = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not ts.isdigit() or not SIGNATURE.match(signature):
            return _unauthorized()
        if abs(time.time() - int(ts)) > MAX_SKEW or self.verifier is None:
            return _unauthorized()
        raw = await request.read()
        if not self.verifier.is_valid(raw, ts, signature):
            log.warning("slack.bad_signature")  # never the body
            return _unauthorized()
        if b"command=" in raw and not raw.startswith(b"payload="):
            body = dict(parse_qsl(raw.decode("utf-8", "replace")))
            if body.get("command") == self.command and "ssl_check" not in body:
                return await self._ack_command(body)
        resp = await self.app.async_dispatch(
            AsyncBoltRequest(
                body=raw.decode("utf-8", "replace"),
                query=request.query_string,
                headers=dict(request.headers),
            )
        )
        content_type = resp.headers.get("content-type", ["text/plain"])[0].split(";")[0]
        return web.Response(status=resp.status, body=resp.body, content_type=content_type)

    async def _ack_command(self, body: dict[str, Any]) -> web.Response:
        """A slash command over HTTP: the workspace guard, then the same acceptance as bolt's
        listener, answered here (bolt's dispatch would cost more than everything else)."""
        if not self._workspace_allowed(
            str(body.get("team_id", "")), str(body.get("enterprise_id", ""))
        ):
            return web.json_response({"error": "workspace_not_allowed"}, status=403)
        text = await self._accept(body)
        if text is None:
            return web.Response(status=200)
        return web.json_response({"response_type": "ephemeral", "text": escape(text)})


def _unauthorized() -> web.Response:
    return web.json_response({"error": "invalid_request"}, status=401)
