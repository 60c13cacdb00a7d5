"""The Slack entry points: `/renew-token` and the thread's buttons, over HTTP or Socket Mode.

A slash command is answered in the body of its acknowledgement whenever the answer is ready
within ``ACK_BUDGET`` (Slack waits 3 seconds for the ack, then shows the person
"operation_timeout"): the work runs in a supervised task and the ack waits for its reply up to the
budget; a command still working then is acked empty and answered through its response_url when
done. So a renewal costs no response_url call and, its thread being in the channel the command
was typed in, no chat.getPermalink call either (two of its four Slack calls). `help` and a
mistyped command are answered without any task. Over HTTP, a slash command is acked here, ahead
of bolt's dispatch (bolt dispatches block actions and events, and commands over Socket Mode,
through the same `_accept`); clicks are acked at once and answered through their response_url.
Slack retries and double clicks are recognised by their trigger id. With ``max_in_flight``
commands already being worked on, a command is told at once that the bot is busy instead of
queueing behind them (no pool timeouts, no apology after the 200, bounded memory). Requests
with a missing, malformed or stale signature are refused with 401 before bolt sees them, and no
body is ever logged. With workspaces configured, a request that names none of them (or no
workspace at all) is refused with 403 before any listener runs, over HTTP and Socket Mode alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

from aiohttp import web
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack.blocks import ACTION_PREFIX, action_kind, escape
from adapters.slack.threads import PLATFORM, UNREACHABLE, SlackThreads, split_key
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
GROUPS_RETRY = 30.0  # seconds until user groups Slack did not send are asked for again
# Commands worked on at once before a new one is told the bot is busy. One core sustains about
# 90-250 renewals/s (bench/README.md): 64 is well under a second of queue, and far from the
# database pool (30 connections) timing out a waiting command.
MAX_IN_FLIGHT = 64
# Seconds a command may work before its ack goes out empty (then the answer follows through the
# response_url). Slack shows "operation_timeout" after 3 s: a second left for the network.
ACK_BUDGET = 2.0
# Commands told "busy" are logged once per this many seconds, with how many (under overload, a
# line each took logging above 5% of the CPU: bench/wrk.py --profile).
BUSY_LOG_EVERY = 5.0


class _Answer:
    """Where a command's reply goes: into the ack while it waits, else (late) the response_url."""

    __slots__ = ("late", "ready")

    def __init__(self) -> None:
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.late = False

    def give(self, text: str) -> bool:
        """Hand the reply to the waiting ack; False when the ack has gone without it."""
        if self.late:
            return False
        self.ready.set_result(text)
        return True

    def take(self) -> str | None:
        """The reply if it is ready (the ack carries it); else the ack goes empty, the reply
        will be sent late."""
        if self.ready.done():
            return self.ready.result()
        self.late = True
        return None


class _Command(NamedTuple):
    """A slash command as read from its form: the text, where, who, and the text parsed (None:
    a typo; or, read before the user groups were cached, left for the desk to parse)."""

    text: str
    origin: Origin
    actor: Actor
    parsed: commands.Command | None

    @property
    def answered_at_once(self) -> bool:
        """`help` or a typo (of a command ``_read`` parsed): answered in the ack itself."""
        return self.parsed is None or isinstance(self.parsed, commands.ShowHelp)


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
        ack_budget: float = ACK_BUDGET,
    ) -> None:
        self.desk = desk
        self.command = command
        self.max_in_flight = max_in_flight
        self.ack_budget = ack_budget
        self._busy_logged_at, self._busy_since_logged = float("-inf"), 0
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
            await ack(text=text, response_type="ephemeral")

    async def _on_action(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        if self.seen.first_time(str(body.get("trigger_id", ""))):
            self._spawn(self._action(body), "slack.action")

    async def _accept(self, body: dict[str, Any]) -> str | None:
        """Take a slash command: the answer (Slack mrkdwn) for the ack itself, or None when the
        ack goes empty (a retry, or work that outlasted the budget and will answer late)."""
        if not self.seen.first_time(str(body.get("trigger_id", ""))):
            return None  # a Slack retry or a double submit: the first one is being answered
        command = self._read(body)
        if command is not None and command.answered_at_once:
            return escape(await self._quick_reply(command))
        if self.in_flight >= self.max_in_flight:
            self._busy_since_logged += 1
            now = time.monotonic()
            if now - self._busy_logged_at >= BUSY_LOG_EVERY:  # one line, not one per command
                turned_away = self._busy_since_logged
                log.warning(
                    "slack.busy", extra={"in_flight": self.in_flight, "turned_away": turned_away}
                )
                self._busy_logged_at, self._busy_since_logged = now, 0
            return escape(messages.busy())
        answer = _Answer()
        self._spawn(self._command(body, answer, command), "slack.command")
        try:
            await asyncio.wait_for(asyncio.shield(answer.ready), self.ack_budget)
        except TimeoutError:
            log.info("slack.answer_late", extra={"budget_s": self.ack_budget})
        finally:
            text = answer.take()
        return text

    def _read(self, body: dict[str, Any]) -> _Command | None:
        """Who typed what, where, parsed once (None until the user groups are cached: access
        rules may name groups, and fetching them is I/O, left to the task)."""
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
            parsed: commands.Command | None = commands.parse(text, origin, actor)
        except CommandSyntaxError:
            parsed = None  # a typo: the desk says what was wrong
        return _Command(text, origin, actor, parsed)

    async def _quick_reply(self, command: _Command) -> str:
        """`help` or a mistyped command, answered without I/O (the desk still decides: a refused
        `help` is audited there, like any refusal)."""
        # Answered in the ack (help, a typo): the access log's line is enough at INFO; logging
        # it twice was a sixth of a `help` command's CPU under load (py-spy, bench/wrk.py).
        log.debug(
            "slack.command_received", extra={"user": command.actor.user_id, "answered": "in_ack"}
        )
        reply = await self.desk.handle(
            command.text, command.origin, command.actor, parsed=command.parsed
        )
        return reply.text

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        self.in_flight += 1
        self.supervisor.spawn(self._counted(work), name)

    async def _counted(self, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            self.in_flight -= 1

    # -- the work after the ack ---------------------------------------------------------

    async def _command(
        self, body: dict[str, Any], answer: _Answer, command: _Command | None = None
    ) -> None:
        """The work of a command past the ack (``command``: already read, when it could be)."""
        if command is None:  # the user groups to fetch first
            actor = await self.actor(
                body.get("user_id"), body.get("user_name"), body.get("team_id")
            )
            origin = Origin(PLATFORM, str(body.get("channel_id", "")))
            command = _Command(str(body.get("text", "")), origin, actor, None)
        log.info("slack.command_received", extra={"user": command.actor.user_id})
        reply = await guarded(
            self.desk.handle(command.text, command.origin, command.actor, parsed=command.parsed),
            PLATFORM,
        )
        text = await self._shown(reply, command.origin)
        if not answer.give(text):
            await self._respond(body, text)

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
        reply = await guarded(self.desk.execute(cmd, origin, actor), PLATFORM)
        await self._respond(body, await self._shown(reply, origin))

    async def _shown(self, reply: Reply, origin: Origin) -> str:
        """The reply as Slack mrkdwn, with a link to the thread it names, unless it only points
        to a thread just opened in this very channel (the person sees it appear there)."""
        text = escape(reply.text)
        thread = reply.thread
        if thread is None or thread.platform != PLATFORM:
            return text
        if reply.just_points_to_thread and split_key(thread.key)[0] == origin.channel:
            return text.removesuffix(".") + ": the bot's message just posted in this channel."
        link = await self.threads.permalink(thread)
        return text + f"\n<{link}|Open the thread>" if link else text

    async def _respond(self, body: dict[str, Any], text: str) -> None:
        """Show ``text`` to the person who acted, only to them, through the response_url."""
        url = body.get("response_url")
        if not url:
            return
        try:
            webhook = AsyncWebhookClient(str(url), timeout=10, session=self.client.session)
            await webhook.send(text=text, response_type="ephemeral", replace_original=False)
        except UNREACHABLE as exc:
            log.warning("slack.reply_failed", extra={"error": type(exc).__name__})

    async def actor(self, user_id: Any, name: Any, team: Any) -> Actor:
        uid = str(user_id or "")
        return Actor(PLATFORM, uid, str(name or uid), await self._groups_of(uid), str(team or ""))

    async def _groups_of(self, user_id: str) -> frozenset[str]:
        """The user groups the user belongs to (cached; empty when Slack will not say)."""
        fetched_at, by_user = self._groups
        if time.monotonic() - fetched_at > GROUPS_TTL:
            fresh: dict[str, frozenset[str]] = {}
            try:
                resp = await self.client.usergroups_list(include_users=True)
                for group in resp.get("usergroups") or []:
                    for member in group.get("users") or []:
                        fresh[member] = fresh.get(member, frozenset()) | {str(group["id"])}
                self._groups = (time.monotonic(), by_user := fresh)
            except (SlackApiError, *UNREACHABLE) as exc:
                # the groups last known stay (none if never fetched); asked again soon
                log.warning("slack.usergroups_unavailable", extra={"error": type(exc).__name__})
                self._groups = (time.monotonic() - GROUPS_TTL + GROUPS_RETRY, by_user)
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
            body = form_fields(raw)
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
        return web.json_response({"response_type": "ephemeral", "text": text})


def form_fields(raw: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (a slash command) as ``dict(parse_qsl(...))``
    makes it: the last of a repeated field, none without a value; in half its time."""
    fields = {}
    for pair in raw.decode("utf-8", "replace").split("&"):
        name, _, value = pair.partition("=")
        if value:
            fields[unquote_plus(name)] = unquote_plus(value)
    return fields


def _unauthorized() -> web.Response:
    return web.json_response({"error": "invalid_request"}, status=401)
