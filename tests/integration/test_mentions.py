"""A stalled customer pulls in the person who asked, with a real mention in Slack and Teams.

The bot runs on a FrozenClock: the customer's page reports the link opened, four hours pass
without a sign-in, and the chaser's round mentions the requester in the renewal's thread, as the
Slack and Bot Connector stand-ins render it (a `<@U...>` in mrkdwn; a card mention entity).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from tests.fakes.core import FrozenClock
from tests.integration.live import Live, live_bot, until
from tests.integration.test_slack import command_body, post, slack_settings
from tests.servers import bot_connector
from tests.servers.bot_connector import BotConnectorStandIn
from tests.servers.slack import SlackStandIn
from tests.servers.slack import mentioned as slack_mentioned


async def open_page(live: Live, auth_url: str) -> None:
    """What the page's script does first: ask for the status (the link counts as opened)."""
    async with live.http.get(auth_url + "/status", headers={"Accept": "application/json"}) as r:
        assert r.status == 200


async def test_slack_thread_mentions_the_requester_of_a_stalled_renewal(
    tmp_path: Path, slack: SlackStandIn
) -> None:
    """Opened, then nothing for 4 hours: Alice gets a Slack notification in the thread."""
    clock = FrozenClock(datetime.now(UTC))
    async with live_bot(tmp_path, slack=slack_settings(slack), clock=clock) as live:
        assert await post(live, command_body(slack, "contoso", user="U-alice")) == 200
        urls = await until(
            lambda: [
                m.group(0)
                for a in slack.called("chat.postMessage")
                if (m := re.search(r"http://\S+/onboard/[\w-]+", str(a.get("text"))))
            ]
        )
        await open_page(live, urls[0])
        clock.advance(hours=4, minutes=1)
        assert await live.rt.core.chaser.sweep() == 1
        stuck = await until(
            lambda: [a for a in slack.called("chat.postMessage") if "seems stuck" in str(a)]
        )
        assert await live.rt.core.chaser.sweep() == 0
    (args,) = stuck
    assert slack_mentioned(args) == ["U-alice"]
    assert "thread_ts" in args  # in the renewal's thread, not the channel
    assert "renew-token code contoso" in str(args["text"])


async def test_teams_thread_mentions_the_requester_of_a_stalled_renewal(
    tmp_path: Path, connector: BotConnectorStandIn
) -> None:
    """The same in Teams: the card carries a mention entity for Sam's Entra object id."""
    clock = FrozenClock(datetime.now(UTC))
    async with live_bot(tmp_path, teams=connector.settings(), clock=clock) as live:
        command = connector.activity("renew-token contoso", user="aad-sam", name="Sam Support")
        thread = command["conversation"]["id"]
        auth = {"Authorization": f"Bearer {connector.token()}"}
        async with live.http.post(
            live.base_url + "/api/messages", json=command, headers=auth
        ) as resp:
            assert resp.status == 200

        def urls() -> list[str]:
            texts = connector.texts(connector.posts(thread))
            return [m.group(0) for t in texts if (m := re.search(r"http://\S+/onboard/[\w-]+", t))]

        await open_page(live, (await until(urls))[0])
        clock.advance(hours=4, minutes=1)
        assert await live.rt.core.chaser.sweep() == 1
        stuck = await until(
            lambda: [c for c in connector.posts(thread) if "seems stuck" in str(c.body)]
        )
    (call,) = stuck
    assert bot_connector.mentioned(call.body) == ["aad-sam"]
    assert "<at>Sam Support</at>" in bot_connector.card_text(call.body)
