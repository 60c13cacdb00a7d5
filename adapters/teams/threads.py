"""TeamsThreads: core's ChatThreads on the Bot Connector, as proactive messages.

A renewal's thread is the Teams conversation the command came from (a channel thread, whose id
ends in ``;messageid=<root>``, or a chat). Its status message is the bot's first card there,
updated in place. Every post is proactive: the conversation's reference is loaded from the
database (stored on installation, conversation updates and every message), so posts keep working
after a restart. Transient answers (412, 502, 504, no answer) are retried a few times with
exponential backoff and jitter. Throttling (429) is retried here only for direct replies
(``send``); the ChatThreads methods, which the outbox dispatcher calls, raise it at once as
ChatRateLimitedError with Retry-After, so the dispatcher paces the conversation instead. A deleted
conversation or a bot removed from it (403, 404) is ChatRejectedError: retrying cannot help.
Pacing (``pace``): Microsoft documents per bot and thread 7 messages a second, 8 per 2 s, 60 per
30 s and 1800 per hour ("Rate limiting for bots", learn.microsoft.com, Teams platform docs); the
bucket below keeps the first three, 429s pace the rest.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ActivityTypes, Attachment, ConversationReference
from msrest.exceptions import ClientRequestError, HttpOperationError

from adapters.teams import cards
from adapters.teams.connector import TeamsAdapter
from core.delivery import Pace
from core.errors import ChatDeliveryError, ChatRateLimitedError, ChatRejectedError
from core.locks import KeyedLocks
from core.lru import BoundedCache
from core.model import Origin, ThreadRef
from core.ports import Message

PLATFORM = "teams"
RETRYABLE = frozenset({412, 429, 502, 504})
PERMANENT = frozenset({400, 403, 404, 413})  # bad activity, not in the roster, no such conversation
log = logging.getLogger("renewbot.teams")


class ConversationStore(Protocol):
    async def save(
        self, conversation: str, channel: str | None, reference: dict[str, Any]
    ) -> None: ...

    async def load(self, conversation: str) -> dict[str, Any] | None: ...

    async def in_channel(self, channel: str) -> dict[str, Any] | None: ...


def channel_of(conversation: str) -> str:
    """The channel of a channel-thread conversation id (the id itself otherwise)."""
    return conversation.split(";messageid=", 1)[0]


def channel_data(activity: Activity) -> dict[str, Any]:
    data = activity.channel_data
    return data if isinstance(data, dict) else {}


def channel_id(activity: Activity) -> str:
    """The Teams channel an activity came from (its conversation, outside channels)."""
    channel = (channel_data(activity).get("channel") or {}).get("id")
    return str(channel or channel_of(str(activity.conversation.id)))


def thread_key(conversation: str, status_id: str) -> str:
    return f"{conversation}|{status_id}"


def split_key(key: str) -> tuple[str, str]:
    conversation, _, status_id = key.rpartition("|")
    return conversation, status_id


def card_activity(message: Message) -> Activity:
    return Activity(
        type=ActivityTypes.message,
        summary=cards.summary(message),
        attachments=[Attachment(content_type=cards.CARD_TYPE, content=cards.card(message))],
    )


class TeamsThreads:
    def __init__(
        self,
        adapter: TeamsAdapter,
        store: ConversationStore,
        app_id: str,
        alert_conversation: str | None,
        *,
        attempts: int = 6,
        backoff: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self.adapter = adapter
        self.store = store
        self.app_id = app_id
        self.alert_conversation = alert_conversation
        self.attempts, self.backoff, self.max_delay = attempts, backoff, max_delay
        self._refs: BoundedCache[str, ConversationReference] = BoundedCache(5000)
        self._locks = KeyedLocks()  # serialises posts per thread; empties as they finish
        self.pace = Pace(rate=1.8, burst=4)  # per thread (the outbox conversation)

    # -- references --------------------------------------------------------------------------

    async def remember(self, activity: Activity) -> str:
        """Store where ``activity`` came from; returns its conversation id."""
        reference = TurnContext.get_conversation_reference(activity)
        conversation = str(reference.conversation.id)
        known = self._refs.get(conversation)
        self._cache(conversation, reference)
        if known is None or known.service_url != reference.service_url:
            await self.store.save(conversation, channel_id(activity), reference.serialize())
        return conversation

    def _cache(self, conversation: str, reference: ConversationReference) -> None:
        self._refs.put(conversation, reference)

    async def _reference(
        self, conversation: str, *, channel_ok: bool = False
    ) -> ConversationReference:
        ref = self._refs.get(conversation)
        if ref is None:
            raw = await self.store.load(conversation)
            if raw is None and channel_ok:
                raw = await self.store.in_channel(conversation)
            if raw is None:
                raise ChatDeliveryError("Teams: no stored reference for this conversation")
            ref = ConversationReference().deserialize(raw)
            if ref.conversation.id != conversation:  # a thread's reference, used for its channel
                ref = copy.deepcopy(ref)
                ref.conversation.id = conversation
            else:
                self._cache(conversation, ref)
        return ref

    # -- sending -------------------------------------------------------------------------------

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[str]], throttled: bool = False
    ) -> str:
        """``throttled``: raise a 429 at once (ChatRateLimitedError) rather than waiting here."""
        for attempt in range(self.attempts):
            try:
                return await call()
            except HttpOperationError as exc:
                status = getattr(exc.response, "status_code", 0) or 0
                if status == 429 and throttled:
                    raise ChatRateLimitedError(self._delay(attempt, exc.response), what) from None
                if status not in RETRYABLE or attempt == self.attempts - 1:
                    log.warning("teams.send_refused", extra={"op": what, "status": status})
                    if status in PERMANENT:
                        raise ChatRejectedError(f"http_{status}", f"by Teams ({what})") from None
                    raise ChatDeliveryError(f"Teams refused {what} ({status})") from None
                await asyncio.sleep(self._delay(attempt, exc.response))
            except ClientRequestError:  # never reached the connector, or no answer: try again
                if attempt == self.attempts - 1:
                    log.warning("teams.unreachable", extra={"op": what})
                    raise ChatDeliveryError(f"Teams unreachable for {what}") from None
                await asyncio.sleep(self._delay(attempt, None))
            except (
                OSError,
                TimeoutError,
                PermissionError,
            ) as exc:
                log.warning("teams.unreachable", extra={"op": what, "error": type(exc).__name__})
                raise ChatDeliveryError(f"Teams unreachable for {what}") from None
        raise ChatDeliveryError(f"Teams refused {what}")  # pragma: no cover - loop always returns

    def _delay(self, attempt: int, response: Any) -> float:
        """Retry-After when given, else exponential backoff with full jitter."""
        header = ""
        if response is not None and getattr(response, "headers", None) is not None:
            header = str(response.headers.get("Retry-After", ""))
        if header.replace(".", "", 1).isdigit():
            return min(float(header), self.max_delay)
        return random.uniform(0, min(self.max_delay, self.backoff * 2**attempt))

    async def _deliver(
        self, ref: ConversationReference, activity: Activity, update: bool, throttled: bool = True
    ) -> str:
        """One proactive turn that posts (or updates) ``activity`` in ``ref``'s conversation."""
        target = copy.copy(ref)
        target.activity_id = None  # post into the conversation itself, not as a reply to an id
        outgoing = TurnContext.apply_conversation_reference(copy.copy(activity), target)
        ids: list[str] = []

        async def logic(ctx: TurnContext) -> None:
            if update:
                response = await ctx.adapter.update_activity(ctx, outgoing)
            else:
                response = (await ctx.adapter.send_activities(ctx, [outgoing]))[0]
            ids.append(str(getattr(response, "id", "") or ""))

        async def once() -> str:
            ids.clear()
            await self.adapter.continue_conversation(ref, logic, self.app_id)
            return ids[0] if ids else ""

        what = "update_activity" if update else "send_activity"
        return await self._retrying(what, once, throttled)

    async def send(self, conversation: str, message: Message, throttled: bool = False) -> str:
        """Post ``message`` in ``conversation``; returns the new activity's id.

        A direct reply (``throttled`` False) waits out a 429 here; the outbox's posts do not.
        """
        ref = await self._reference(conversation)
        async with self._locks.hold(conversation):
            return await self._deliver(ref, card_activity(message), False, throttled)

    # -- ChatThreads ---------------------------------------------------------------------------

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        status_id = await self.send(origin.channel, message, throttled=True)
        return ThreadRef(PLATFORM, thread_key(origin.channel, status_id))

    async def post(self, thread: ThreadRef, message: Message) -> None:
        conversation, _ = split_key(thread.key)
        await self.send(conversation, message, throttled=True)

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        conversation, status_id = split_key(thread.key)
        ref = await self._reference(conversation)
        activity = card_activity(message)
        activity.id = status_id
        async with self._locks.hold(conversation):
            await self._deliver(ref, activity, update=True)

    async def announce(self, message: Message) -> None:
        """Post to the alert conversation (a channel gets a new top-level post)."""
        if not self.alert_conversation:
            return
        ref = await self._reference(self.alert_conversation, channel_ok=True)
        await self._deliver(ref, card_activity(message), update=False)
