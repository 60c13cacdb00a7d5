"""The operator's commands answer the same in every chat: Slack, Teams and the console.

One bot serves Slack (real bolt, signed requests) and Teams (signed activities, botbuilder) at
once; the console chat talks to the same desk. Each command is typed in each place and the
answer a support engineer reads there is checked.
"""

from __future__ import annotations

import html
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.console.chat import ConsoleChat
from core.errors import IdentityProviderError
from core.model import Actor, AuthState
from core.ports import HealthRecord, IdentityErrorRecord
from tests.integration.live import Live, live_bot, until
from tests.integration.test_slack import command_body, post, slack_settings
from tests.servers.bot_connector import ALERTS, BotConnectorStandIn, card_buttons
from tests.servers.slack import SlackStandIn

Ask = Callable[[str], Awaitable[str]]


@pytest.fixture
async def live(
    tmp_path: Path, slack: SlackStandIn, connector: BotConnectorStandIn
) -> AsyncIterator[Live]:
    teams = connector.settings(alert_conversation=ALERTS)
    async with live_bot(tmp_path, slack=slack_settings(slack), teams=teams) as bot:
        await bot.say("contoso")  # one open invitation
        blocked = IdentityProviderError("AADSTS53003", "access_denied", "Blocked by CA", "corr-1")
        async with bot.rt.uow() as uow:
            now, day = datetime.now(UTC), timedelta(days=1)
            await uow.identity_errors.add(
                IdentityErrorRecord.of(now, bot.tenants["northwind"].key, blocked, "renewbot")
            )
            await uow.tenants.record_health(
                [HealthRecord(bot.tenants["fabrikam"].key, AuthState.EXPIRED, None, now + day)]
            )
            await uow.commit()
        yield bot


def in_slack(live: Live, stand: SlackStandIn) -> Ask:
    async def ask(text: str) -> str:
        seen = len(stand.responses)
        assert await post(live, command_body(stand, text)) == 200  # an ack's answer counts too
        answers = await until(lambda: stand.responses[seen:])
        return html.unescape(str(answers[0]["text"]))

    return ask


def in_teams(live: Live, stand: BotConnectorStandIn) -> Ask:
    async def ask(text: str) -> str:
        activity = stand.activity(f"renew-token {text}", personal=True)
        conversation = activity["conversation"]["id"]
        seen = len(stand.posts(conversation))
        auth = {"Authorization": f"Bearer {stand.token()}"}
        async with live.http.post(
            live.base_url + "/api/messages", json=activity, headers=auth
        ) as resp:
            assert resp.status == 200
        answers = await until(lambda: stand.texts(stand.posts(conversation))[seen:])
        return str(answers[0])

    return ask


def in_console(live: Live) -> Ask:
    chat = ConsoleChat(live.rt.core.desk, io.StringIO(), Actor("console", "sam", "Sam"))

    async def ask(text: str) -> str:
        return await chat.say(f"renew-token {text}")

    return ask


EXPECTED = {
    "status": ["tenants:", "1 expired", "Open renewals: 1 (invited: 1)", "Fabrikam Inc (fabrikam)"],
    "pending": ["Contoso Ltd", "Invitation sent"],
    "errors": ["Northwind Traders (northwind): AADSTS53003: Conditional Access blocked", "Next:"],
    "errors northwind": ["AADSTS53003"],
    "history contoso": ["History of Contoso Ltd", "requested by"],
    "show contoso": ["M365 admin username: admin@contoso.com", "Open renewal: Invitation sent"],
    "help": ["renew-token renew all-expired", "renew-token snooze"],
    "contso": ["contoso"],  # a typo gets a suggestion
}


@pytest.mark.parametrize("where", ["slack", "teams", "console"])
async def test_commands_answer_alike_everywhere(
    live: Live, slack: SlackStandIn, connector: BotConnectorStandIn, where: str
) -> None:
    """status, pending, errors, history, show and help read the same in each chat."""
    ask = {
        "slack": in_slack(live, slack),
        "teams": in_teams(live, connector),
        "console": in_console(live),
    }[where]
    for command, fragments in EXPECTED.items():
        answer = await ask(command)
        for fragment in fragments:
            assert fragment in answer, f"{where}: {command!r} answered {answer!r}"


async def test_health_alert_reaches_slack_and_teams(
    live: Live, slack: SlackStandIn, connector: BotConnectorStandIn
) -> None:
    """A tenant whose refresh token died is announced in both alert places, with Renew."""
    async with live.http.post(
        live.base_url + "/api/messages",
        json=connector.installation(ALERTS),
        headers={"Authorization": f"Bearer {connector.token()}"},
    ) as resp:
        assert resp.status == 200
    await live.rt.core.monitor.mark_expired(live.tenants["tailspin"], "AADSTS700082")
    (card,) = await until(lambda: connector.posts(ALERTS))
    assert "Tailspin Toys (tailspin) have expired" in BotConnectorStandIn.texts([card])[0]
    assert [b["data"] for b in card_buttons(card.body)] == [
        {"renewbot": "renew", "tenant": "tailspin"}
    ]
    alerts = await until(
        lambda: [a for a in slack.called("chat.postMessage") if a["channel"] == "C-alerts"]
    )
    assert "Tailspin Toys (tailspin) have expired" in str(alerts[-1]["text"])
