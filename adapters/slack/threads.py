"""SlackThreads: core's ChatThreads on the Slack Web API.

A thread is the bot's first message (the status message, updated with chat.update) plus replies
with ``thread_ts``. Posts to one thread go out one at a time, in order. Rate limits (429 with
Retry-After), 5xx answers and connection errors are retried by slack_sdk's retry handlers; what
finally fails becomes ChatDeliveryError, never a lost state change (core logs and carries on).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks
from core.errors import ChatDeliveryError
from core.model import Origin, ThreadRef
from core.ports import Message

PLATFORM = "slack"
log = logging.getLogger("renewbot.slack")


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
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=3),
        ],
    )


def thread_key(channel: str, ts: str) -> str:
    return f"{channel}|{ts}"


def split_key(key: str) -> tuple[str, str]:
    channel, _, ts = key.partition("|")
    return channel, ts


class SlackThreads:
    def __init__(self, client: AsyncWebClient, alert_channel: str | None) -> None:
        self.client = client
        self.alert_channel = alert_channel
        self._locks: dict[str, asyncio.Lock] = {}

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except SlackApiError as exc:
            data = getattr(exc.response, "data", None)
            error = str(data.get("error", "unknown")) if isinstance(data, dict) else "http_error"
            log.warning("slack.api_error", extra={"method": what, "error": error})
            raise ChatDeliveryError(f"Slack refused {what}: {error}") from None
        except (TimeoutError, SlackClientError, OSError) as exc:
            log.warning("slack.unreachable", extra={"method": what, "error": type(exc).__name__})
            raise ChatDeliveryError(f"Slack unreachable for {what}") from None

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        body = blocks.render(message)
        resp = await self._call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=origin.channel, unfurl_links=False, **body
            ),
        )
        return ThreadRef(PLATFORM, thread_key(str(resp["channel"]), str(resp["ts"])))

    async def post(self, thread: ThreadRef, message: Message) -> None:
        channel, ts = split_key(thread.key)
        body = blocks.render(message)
        async with self._lock(thread.key):
            await self._call(
                "chat.postMessage",
                lambda: self.client.chat_postMessage(
                    channel=channel, thread_ts=ts, unfurl_links=False, **body
                ),
            )

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        channel, ts = split_key(thread.key)
        body = blocks.render(message)
        async with self._lock(thread.key):
            await self._call(
                "chat.update", lambda: self.client.chat_update(channel=channel, ts=ts, **body)
            )

    async def announce(self, message: Message) -> None:
        if not self.alert_channel:
            return
        body = blocks.render(message)
        channel = self.alert_channel
        await self._call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(channel=channel, unfurl_links=False, **body),
        )

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
