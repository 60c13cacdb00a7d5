"""ChatRouter: one ChatThreads over several platforms, chosen by the thread's platform.

Announcements go to every platform that has an alert destination. Lets Slack, Teams and the
console serve the same core at once.
"""

from __future__ import annotations

import logging

from core.errors import ChatDeliveryError
from core.model import Origin, ThreadRef
from core.ports import ChatThreads, Message

log = logging.getLogger("renewbot.chat")


class ChatRouter:
    def __init__(self, platforms: dict[str, ChatThreads] | None = None) -> None:
        self.platforms: dict[str, ChatThreads] = dict(platforms or {})

    def add(self, platform: str, threads: ChatThreads) -> None:
        self.platforms[platform] = threads

    def _for(self, platform: str) -> ChatThreads:
        try:
            return self.platforms[platform]
        except KeyError:
            raise ChatDeliveryError(f"no chat adapter for {platform!r}") from None

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        return await self._for(origin.platform).open_thread(origin, message)

    async def post(self, thread: ThreadRef, message: Message) -> None:
        await self._for(thread.platform).post(thread, message)

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        await self._for(thread.platform).update_status(thread, message)

    async def announce(self, message: Message) -> None:
        for name, threads in self.platforms.items():
            try:
                await threads.announce(message)
            except ChatDeliveryError:
                log.warning("chat.announce_failed", extra={"platform": name})
