from __future__ import annotations

import copy

import pytest

from bot.bootstrap import Core, compose
from core.model import Actor, Origin, Tenant
from core.services import ServiceConfig
from tests.fakes.core import (
    FakeIdentityProvider,
    FrozenClock,
    RecordingChatThreads,
    Store,
    in_memory,
)

SUPPORT = Actor("test", "U1", "Sam Support")
HERE = Origin("test", "C1")
CONTOSO = Tenant(
    "k-contoso",
    "contoso",
    "Contoso Ltd",
    "11111111-1111-1111-1111-111111111111",
    "contoso.com",
    "admin@contoso.com",
)
FABRIKAM = Tenant(
    "k-fabrikam",
    "fabrikam",
    "Fabrikam Inc",
    "22222222-2222-2222-2222-222222222222",
    "fabrikam.com",
    "it@fabrikam.com",
)


class World:
    def __init__(self) -> None:
        self.store = Store()
        self.store.tenants = {t.key: copy.copy(t) for t in (CONTOSO, FABRIKAM)}
        self.clock = FrozenClock()
        self.identity = FakeIdentityProvider(self.clock)
        self.chat = RecordingChatThreads()
        self.watched: list[tuple[str, float]] = []
        self.core: Core = compose(
            uow=in_memory(self.store),
            identity=self.identity,
            threads=self.chat,
            clock=self.clock,
            config=ServiceConfig(public_url="https://bot.test"),
            deliver_inline=True,
            watch_flow=lambda rid, delay: self.watched.append((rid, delay)),
        )

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.core.service

    async def say(self, text: str) -> str:
        reply = await self.core.desk.handle(text, HERE, SUPPORT)
        return reply.text

    def token_from_thread(self) -> str:
        for text in self.chat.texts():
            if "/onboard/" in text:
                return text.split("/onboard/")[1].split()[0]
        raise AssertionError("no Auth URL posted")


@pytest.fixture
def world() -> World:
    return World()
