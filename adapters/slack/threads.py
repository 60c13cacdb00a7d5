"""SlackThreads: core's ChatThreads on the Slack Web API.

A thread is the bot's first message (the status message, updated with chat.update) plus replies
with ``thread_ts``. Posts to one thread go out one at a time, in order. 5xx answers and connection
errors are retried a few times by slack_sdk's retry handlers; a rate limit (429) is not waited out
here but raised at once as ChatRateLimitedError with Slack's Retry-After, so the outbox dispatcher
(core.delivery) can wait without holding anything. Refusals that would repeat (channel_not_found,
not_in_channel, msg_too_long ...) are ChatRejectedError; everything else ChatDeliveryError.

Each post carries its outbox id as message metadata (event type ``renewbot_outbox``), so after a
crash ``was_delivered`` can look for it (conversations.history / conversations.replies) before
sending again. Pacing: chat.postMessage allows about one message per second per channel
(https://api.slack.com/methods/chat.postMessage, "Rate limiting"), so ``pace`` counts per channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import default_interval_calculator
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack import blocks
from core.delivery import Pace
from core.errors import ChatDeliveryError, ChatRateLimitedError, ChatRejectedError
from core.locks import KeyedLocks
from core.model import Origin, ThreadRef
from core.ports import Message, Outgoing

PLATFORM = "slack"
log = logging.getLogger("renewbot.slack")
METADATA_TYPE = "renewbot_outbox"
# Errors that sending the same message again would meet again (Slack's documented error codes of
# chat.postMessage / chat.update). Auth errors are not here: a fixed token delivers the queue.
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_attachments",
        "too_many_attachments",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "cannot_reply_to_message",
        "invalid_arguments",
        "channel_is_archived",
    }
)


# What the SDK's AsyncConnectionErrorRetryHandler and AsyncServerErrorRetryHandler retry (a
# connection the server dropped or reset; a 500 or 503): ``SlackThreads._write`` hands these to
# the SDK's client to retry, with as many retries in all as ``make_client``'s handlers make.
RETRIED_BY_SDK = (aiohttp.ServerConnectionError, aiohttp.ClientOSError)
RETRIED_STATUSES = frozenset({500, 503})
CONNECTION_RETRIES, SERVER_ERROR_RETRIES = 2, 3
# Answers to a question (conversations.history / .replies) that asking again will not change:
# the bot lacks the scope or the channel, or its token is not valid (Slack's documented errors).
WILL_NOT_SAY = frozenset(
    {
        "missing_scope",
        "not_in_channel",
        "channel_not_found",
        "thread_not_found",
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "not_allowed_token_type",
        "access_denied",
        "ekm_access_denied",
    }
)
# Slack not reached, or its answer lost, once the SDK's retries are spent (aiohttp.ClientError:
# ServerDisconnectedError, ClientPayloadError are not OSError)
UNREACHABLE = (TimeoutError, SlackClientError, OSError, aiohttp.ClientError)


def make_client(
    token: str, base_url: str, session: aiohttp.ClientSession | None = None, timeout: int = 15
) -> AsyncWebClient:
    """An AsyncWebClient that honours Retry-After and retries 5xx and connection errors.

    Give it the process's ``session``: without one, slack_sdk opens a new session, and so a new
    connection (a TLS handshake with Slack), for every call.
    """
    return AsyncWebClient(
        token=token,
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        session=session,
        timeout=timeout,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
        ],
    )


def posting_client(client: AsyncWebClient, tried: int = 0) -> AsyncWebClient:
    """``client`` without the rate-limit retry handler: a 429 reaches the caller at once.
    ``tried``: attempts already made (by ``SlackThreads._write``), off the retries left."""
    return AsyncWebClient(
        token=client.token,
        base_url=client.base_url,
        session=client.session,
        timeout=client.timeout,
        ssl=client.ssl,
        proxy=client.proxy,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES - tried),
            AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES - tried),
        ],
    )


def _retry_after(exc: SlackApiError) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    value = next((str(v) for k, v in headers.items() if k.lower() == "retry-after"), "")
    try:
        return max(0.0, float(value[0] if isinstance(value, list) else value))
    except ValueError:
        return 1.0


def _metadata(message: Message) -> dict[str, Any]:
    if not message.ref:
        return {}
    return {"metadata": {"event_type": METADATA_TYPE, "event_payload": {"ref": message.ref}}}


def thread_key(channel: str, ts: str) -> str:
    return f"{channel}|{ts}"


def split_key(key: str) -> tuple[str, str]:
    channel, _, ts = key.partition("|")
    return channel, ts


class SlackThreads:
    def __init__(self, client: AsyncWebClient, alert_channel: str | None) -> None:
        self.client = client
        self.poster = posting_client(client)
        self._retrying = posting_client(client, tried=1)  # after _write's own attempt
        self.alert_channel = alert_channel
        self._locks = KeyedLocks()  # serialises posts per thread; empties as they finish
        self.pace = Pace(rate=1.0, burst=1, key=self.channel_of)

    def channel_of(self, item: Outgoing) -> str:
        """The pacing key of an outbox message: Slack counts posts per channel."""
        if item.thread is not None:
            return split_key(item.thread.key)[0]
        return self.alert_channel or ""

    async def _call(
        self, what: str, call: Callable[[], Awaitable[Any]], asking: bool = False
    ) -> Any:
        """``call``, its failures as core's errors: a 429 ChatRateLimitedError; Slack's refusal
        ChatRejectedError when it would repeat (``PERMANENT``; to a question, ``asking``, one
        of ``WILL_NOT_SAY``), else ChatDeliveryError (``internal_error``, ``fatal_error`` ...:
        Slack answers those with HTTP 200 too)."""
        try:
            return await call()
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", 0)
            data = getattr(exc.response, "data", None)
            error = str(data.get("error", "unknown")) if isinstance(data, dict) else "http_error"
            if status == 429 or error == "ratelimited":
                raise ChatRateLimitedError(_retry_after(exc), what) from None
            log.warning("slack.api_error", extra={"method": what, "error": error})
            if error in PERMANENT or (asking and error in WILL_NOT_SAY):
                raise ChatRejectedError(error, f"by Slack ({what})") from None
            raise ChatDeliveryError(f"Slack refused {what}: {error}") from None
        except UNREACHABLE as exc:
            log.warning("slack.unreachable", extra={"method": what, "error": type(exc).__name__})
            raise ChatDeliveryError(f"Slack unreachable for {what}") from None

    async def _send(self, method: str, payload: dict[str, Any]) -> Any:
        """``_write``, its failures as core's errors (``_call``)."""
        return await self._call(method, lambda: self._write(method, payload))

    async def _write(self, method: str, payload: dict[str, Any]) -> Any:
        """A chat.postMessage or chat.update as the SDK's client sends it: the same JSON body,
        headers, proxy and TLS context on the process's session (so its timeout), and the SDK's
        AsyncSlackResponse, validated (an error is SlackApiError, as from the SDK). Without the
        SDK's per-call work around it: about 0.15 ms of CPU a call (bench/README.md).

        What the SDK's retry handlers retry (a 500 or 503, a connection the server dropped or
        reset) goes on through the SDK's client after the SDK's first pause, with one retry
        fewer: as many attempts as the SDK alone would make, no more (a retried post may be one
        Slack took: every extra attempt could double a message). Except a post carrying its
        outbox id (``_metadata``) whose connection dropped: Slack may have taken it before, so
        it is a delivery error, and the outbox looks for it (``was_delivered``) before sending
        it again; a blind retry could show it twice.
        """
        client = self.poster
        session = client.session
        if session is None or session.closed:  # the SDK opens a session of its own then
            return await client.api_call(method, json=payload)
        url = client.base_url + method
        headers = {
            **client.headers,
            "Authorization": f"Bearer {client.token}",
            "Content-Type": "application/json;charset=utf-8",
        }
        answer = None
        try:
            async with session.post(
                url,
                data=json.dumps(payload),
                headers=headers,
                proxy=client.proxy,
                ssl=True if client.ssl is None else client.ssl,
            ) as resp:
                if resp.status not in RETRIED_STATUSES:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:  # not JSON: refused, as by the SDK
                        data = {}
                    answer = AsyncSlackResponse(
                        client=client,
                        http_verb="POST",
                        api_url=url,
                        req_args={},
                        data=data,
                        headers=dict(resp.headers),
                        status_code=resp.status,
                    )
        except RETRIED_BY_SDK as exc:
            if "metadata" in payload and not isinstance(exc, aiohttp.ClientConnectorError):
                raise  # sent, maybe taken (a connection that never opened sent nothing)
        if answer is None:
            await asyncio.sleep(default_interval_calculator.calculate_sleep_duration(0))
            return await self._retrying.api_call(method, json=payload)
        return answer.validate()  # type: ignore[no-untyped-call]

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        body = blocks.render(message)
        resp = await self._send(
            "chat.postMessage", {"channel": origin.channel, "unfurl_links": False, **body}
        )
        return ThreadRef(PLATFORM, thread_key(str(resp["channel"]), str(resp["ts"])))

    async def post(self, thread: ThreadRef, message: Message) -> None:
        channel, ts = split_key(thread.key)
        body = blocks.render(message) | _metadata(message)
        async with self._locks.hold(thread.key):
            await self._send(
                "chat.postMessage",
                {"channel": channel, "thread_ts": ts, "unfurl_links": False, **body},
            )

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        channel, ts = split_key(thread.key)
        body = blocks.render(message)
        async with self._locks.hold(thread.key):
            await self._send("chat.update", {"channel": channel, "ts": ts, **body})

    async def announce(self, message: Message) -> None:
        if not self.alert_channel:
            return
        body = blocks.render(message) | _metadata(message)
        channel = self.alert_channel
        await self._send("chat.postMessage", {"channel": channel, "unfurl_links": False, **body})

    async def was_delivered(self, thread: ThreadRef | None, ref: str) -> bool:
        """Is a message with outbox id ``ref`` in the thread (the alert channel for None)?"""
        if thread is None:
            if not self.alert_channel:
                return False
            channel = self.alert_channel
            resp = await self._call(
                "conversations.history",
                lambda: self.poster.conversations_history(
                    channel=channel, include_all_metadata=True, limit=100
                ),
                asking=True,
            )
        else:
            channel, ts = split_key(thread.key)
            resp = await self._call(
                "conversations.replies",
                lambda: self.poster.conversations_replies(
                    channel=channel, ts=ts, include_all_metadata=True, limit=1000
                ),
                asking=True,
            )
        for found in resp.get("messages") or ():
            meta = found.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == METADATA_TYPE and str(payload.get("ref")) == ref:
                return True
        return False

    async def permalink(self, thread: ThreadRef) -> str | None:
        channel, ts = split_key(thread.key)
        try:
            resp = await self._call(
                "chat.getPermalink",
                lambda: self.client.chat_getPermalink(channel=channel, message_ts=ts),
            )
        except ChatDeliveryError:
            return None
        return str(resp["permalink"])
