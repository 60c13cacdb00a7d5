"""The Teams entry point: `POST /api/messages`, turned into the same commands as Slack.

Every request is authenticated before anything else (see ``adapters.teams.auth``): a bad token is
401 or 403, a malformed body 400, never 500. A turn only remembers where the activity came from
and hands the command to a supervised background task, so Teams gets its answer at once; the bot
then answers with proactive messages in the command's thread. Card buttons (Action.Submit) come
back as messages with a ``value``. Nothing from a request body is logged.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Awaitable

from aiohttp import web
from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes

from adapters.teams import cards
from adapters.teams.auth import ChannelAuthError
from adapters.teams.connector import TeamsAdapter
from adapters.teams.threads import PLATFORM, TeamsThreads, channel_data, channel_id, split_key
from core import commands
from core.dedup import SeenTriggers
from core.desk import Desk, Reply, guarded
from core.model import Actor, Origin
from core.ports import Message
from core.tasks import Supervisor

log = logging.getLogger("renewbot.teams")
_MENTION = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
MAX_BODY = 256 * 1024


def command_text(activity: Activity) -> str:
    """What the person typed, without the @mention of the bot and without Teams' HTML."""
    text = _MENTION.sub(" ", activity.text or "")
    text = html.unescape(_TAGS.sub(" ", text)).replace("\u00a0", " ")
    return commands.strip_command(" ".join(text.split()))


class TeamsBot:
    def __init__(
        self,
        *,
        desk: Desk,
        threads: TeamsThreads,
        adapter: TeamsAdapter,
        supervisor: Supervisor,
    ) -> None:
        self.desk = desk
        self.threads = threads
        self.adapter = adapter
        self.supervisor = supervisor
        self.seen = SeenTriggers()

    # -- HTTP ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """POST /api/messages."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _problem(413, "request too large")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _problem(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _problem(400, "the body is not an activity")
        try:
            activity = Activity().deserialize(body)
        except Exception:  # msrest raises its own DeserializationError family for bad shapes
            return _problem(400, "the body is not an activity")
        if (
            not activity.type
            or not activity.service_url
            or not getattr(activity.conversation, "id", None)
        ):
            return _problem(400, "an activity needs type, serviceUrl and conversation.id")
        try:
            await self.adapter.process_activity(
                request.headers.get("Authorization", ""), activity, self.on_turn
            )
        except ChannelAuthError as exc:
            log.warning("teams.unauthorized", extra={"status": exc.status, "reason": exc.reason})
            return _problem(exc.status, "unauthorized" if exc.status == 401 else "forbidden")
        return web.Response(status=200)

    # -- the turn --------------------------------------------------------------------------------

    async def on_turn(self, ctx: TurnContext) -> None:
        activity: Activity = ctx.activity
        if activity.type in (ActivityTypes.conversation_update, ActivityTypes.installation_update):
            await self.threads.remember(activity)
            return
        if activity.type != ActivityTypes.message:
            return
        conversation = await self.threads.remember(activity)
        if not self.seen.first_time(str(activity.id or "")):
            return  # a redelivery of an activity already handled
        self.supervisor.spawn(self._message(activity, conversation), "teams.message")

    async def _message(self, activity: Activity, conversation: str) -> None:
        actor = self.actor(activity)
        origin = Origin(PLATFORM, conversation, parent=channel_id(activity))
        clicked = cards.submitted(activity.value)
        if clicked is not None:
            cmd = commands.from_action(clicked[0], clicked[1], origin, actor)
            if cmd is None:
                return
            log.info("teams.action_received", extra={"user": actor.user_id, "action": clicked[0]})
            await self._answer(conversation, self.desk.execute(cmd, origin, actor))
            return
        text = command_text(activity)
        log.info("teams.command_received", extra={"user": actor.user_id})
        await self._answer(conversation, self.desk.handle(text, origin, actor))

    async def _answer(self, conversation: str, work: Awaitable[Reply]) -> None:
        """Reply in the conversation, unless the reply only points at the thread we are in."""
        reply = await guarded(work, PLATFORM)
        thread = reply.thread
        if reply.just_points_to_thread and thread is not None and thread.platform == PLATFORM:
            if split_key(thread.key)[0] == conversation:
                return
        await self.threads.send(conversation, Message(reply.text))

    @staticmethod
    def actor(activity: Activity) -> Actor:
        sender = activity.from_property
        user_id = str(getattr(sender, "aad_object_id", None) or getattr(sender, "id", "") or "")
        data = channel_data(activity)
        team = str((data.get("team") or {}).get("id") or "")
        tenant = str(
            (data.get("tenant") or {}).get("id")
            or getattr(activity.conversation, "tenant_id", None)
            or ""
        )
        return Actor(
            PLATFORM,
            user_id,
            str(getattr(sender, "name", "") or user_id),
            frozenset({team} - {""}),
            tenant,
        )


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response({"error": detail}, status=status)
