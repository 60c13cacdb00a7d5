"""Loopback stand-ins of the chat platforms, shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.servers.bot_connector import BotConnectorStandIn
from tests.servers.slack import SlackStandIn


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    stand = await SlackStandIn(usergroups={"S-support": ["U-grace"]}).start()
    yield stand
    await stand.stop()


@pytest.fixture
async def connector() -> AsyncIterator[BotConnectorStandIn]:
    stand = await BotConnectorStandIn().start()
    yield stand
    await stand.stop()
