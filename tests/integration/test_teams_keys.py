"""Teams behind a hanging key endpoint (issue 11, finding 8): key fetches never hold requests up.

The Bot Connector stand-in's OpenID metadata and key endpoints accept the connection and never
answer (``hang_keys``) until ``recover_keys``. Signed activities go through the real bot at
``/api/messages``. Each test gives all its concurrent requests one deadline that is well under
Teams' 15 s and under the bot's 10 s fetch timeout, so a request that waited for the hanging fetch
(as the code before the fix did, one behind another under a lock) misses it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.teams.auth import ChannelTokenValidator
from tests.integration.live import Live, live_bot, until
from tests.servers.bot_connector import BotConnectorStandIn

# All concurrent requests of a step are answered within this; with the keys cached they take
# milliseconds, and a refusal for an unknown key waits at most the validator's key_wait (3 s).
DEADLINE = 8.0
CONCURRENT = 10


@pytest.fixture
async def live(tmp_path: Path, connector: BotConnectorStandIn) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, teams=connector.settings()) as bot:
        await until(lambda: validator(bot).key_count > 0)  # the startup fetch got the keys
        yield bot


def validator(live: Live) -> ChannelTokenValidator:
    assert live.rt.teams is not None and live.rt.teams.validator is not None
    return live.rt.teams.validator


def age_keys(live: Live, seconds: float) -> None:
    """Make the cached keys as old as after ``seconds`` of running (no clock to move instead).

    ``_fetched_at`` is the time of the last good fetch, the same field on the code before the fix,
    so these tests reproduce finding 8 there.
    """
    validator(live)._fetched_at -= seconds


async def send_all(live: Live, stand: BotConnectorStandIn, tokens: list[str]) -> list[int]:
    """POST one activity per token, all at once; their statuses, all within DEADLINE."""

    async def one(token: str) -> int:
        activity = stand.activity("renew-token help", personal=True)
        headers = {"Authorization": f"Bearer {token}"}
        async with live.http.post(
            live.base_url + "/api/messages", json=activity, headers=headers
        ) as resp:
            return resp.status

    async with asyncio.timeout(DEADLINE):
        return list(await asyncio.gather(*(one(t) for t in tokens)))


def tokens(stand: BotConnectorStandIn, key: str = "signing", n: int = CONCURRENT) -> list[str]:
    """Distinct tokens (each is verified, none answered from the verified-token cache)."""
    return [stand.token(key=key, jti=uuid.uuid4().hex) for _ in range(n)]


async def test_cached_keys_keep_serving_while_the_key_endpoint_hangs(
    live: Live, connector: BotConnectorStandIn
) -> None:
    """Keys due for refresh, endpoint hanging: every activity is accepted at once, one fetch."""
    assert connector.key_fetches == 1
    connector.hang_keys()
    age_keys(live, 25 * 3600)  # past the 24 h refresh interval
    assert await send_all(live, connector, tokens(connector)) == [200] * CONCURRENT
    await until(lambda: connector.key_fetches > 1)
    # One background refresh, and it is still held open: no request waited for it.
    assert connector.key_fetches == 2
    assert connector.keys_held == 1
    connector.recover_keys()
    await until(lambda: connector.keys_held == 0)
    assert await send_all(live, connector, tokens(connector)) == [200] * CONCURRENT
    assert connector.key_fetches == 2


async def test_unknown_key_is_refused_in_time_with_one_fetch_then_accepted_once_published(
    live: Live, connector: BotConnectorStandIn
) -> None:
    """A rotated key while the endpoint hangs: 401s within the bound from a single fetch, the
    known key still serves meanwhile, and once the endpoint answers the new key is accepted."""
    connector.hang_keys()
    age_keys(live, 3600)  # the last fetch is an hour old: an unknown key id may refetch
    statuses = await send_all(
        live, connector, tokens(connector, "next") + tokens(connector, "signing", 3)
    )
    assert statuses == [401] * CONCURRENT + [200] * 3
    assert connector.key_fetches == 2  # the startup fetch and one shared refresh
    connector.publish_next_key()
    connector.recover_keys()
    assert await send_all(live, connector, tokens(connector, "next", 1)) == [200]
    assert connector.key_fetches == 2  # the held fetch brought the new key


async def test_first_requests_after_start_wait_bounded_for_the_first_fetch(
    tmp_path: Path, connector: BotConnectorStandIn
) -> None:
    """No keys yet and the endpoint hangs: concurrent activities are refused with 401 (not 500)
    in time, one fetch serves them all, and the first activity after recovery is accepted."""
    connector.hang_keys()
    async with live_bot(tmp_path, teams=connector.settings()) as live:
        assert await send_all(live, connector, tokens(connector)) == [401] * CONCURRENT
        assert connector.key_fetches == 1
        connector.recover_keys()
        assert await send_all(live, connector, tokens(connector, n=1)) == [200]
        assert connector.key_fetches == 1
