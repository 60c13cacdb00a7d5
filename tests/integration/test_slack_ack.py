"""What a slash command gets in its acknowledgement: `help` answered there, and, at capacity, an
immediate "busy" instead of a 200 followed by a late answer or an apology (issue 18)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.live import Live, live_bot, until
from tests.integration.test_slack import command_body, parent, signed, slack_settings
from tests.servers.slack import SlackStandIn


@pytest.fixture
async def live(tmp_path: Path, slack: SlackStandIn) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, slack=slack_settings(slack)) as bot:
        yield bot


async def ack(live: Live, body: str) -> tuple[int, dict[str, Any] | None]:
    async with live.http.post(
        live.base_url + "/slack/events", data=body, headers=signed(body)
    ) as resp:
        has_json = resp.content_type == "application/json"
        return resp.status, (await resp.json() if has_json else None)


async def test_help_is_answered_in_the_acknowledgement(live: Live, slack: SlackStandIn) -> None:
    """`help` shows up with the ack itself: no response_url call, nothing left to do after."""
    status, answer = await ack(live, command_body(slack, "help"))  # learns the user's groups
    assert status == 200 and answer is not None and "renew-token commands" in answer["text"]
    status, answer = await ack(live, command_body(slack, "help"))  # from the cache, no task
    assert status == 200 and answer is not None
    assert answer["response_type"] == "ephemeral"
    assert "renew-token commands" in answer["text"]
    status, answer = await ack(live, command_body(slack, "cancel"))  # which tenant?
    assert status == 200 and answer is not None and "Which tenant?" in answer["text"]
    assert live.rt.slack is not None and live.rt.slack.in_flight == 0
    assert not slack.responses


async def test_a_renewal_is_answered_in_the_acknowledgement(
    live: Live, slack: SlackStandIn
) -> None:
    """The thread is open when the ack comes back, and the ack says where: two Slack calls
    (the thread, its Auth URL) and no response_url post or permalink lookup."""
    status, answer = await ack(live, command_body(slack, "contoso"))
    assert status == 200 and answer is not None
    assert "Renewal for Contoso Ltd started in a thread" in answer["text"]
    assert parent(slack) is not None  # already there when the person reads the answer
    await until(
        lambda: any("/onboard/" in str(a.get("text")) for a in slack.called("chat.postMessage"))
    )
    assert [c.method for c in slack.calls if c.method != "usergroups.list"] == [
        "chat.postMessage",
        "chat.postMessage",
    ]
    assert not slack.responses


async def test_commands_told_busy_are_logged_once_with_their_count(
    live: Live, slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Under overload the log gets one line per few seconds saying how many were turned away,
    not a line per command (each line costs CPU the bot is short of)."""
    assert live.rt.slack is not None
    live.rt.slack.max_in_flight = 0
    with caplog.at_level(logging.WARNING, logger="renewbot.slack"):
        for _ in range(5):
            status, answer = await ack(live, command_body(slack, "contoso"))
            assert status == 200 and answer is not None and "busy" in answer["text"]
    busy = [r for r in caplog.records if r.getMessage() == "slack.busy"]
    assert len(busy) == 1 and busy[0].__dict__["turned_away"] == 1


async def test_an_answer_later_than_the_budget_comes_through_the_response_url(
    live: Live, slack: SlackStandIn
) -> None:
    """Work that outlasts the ack's budget: the ack goes empty within Slack's 3 s and the
    answer follows through the response_url, once."""
    assert live.rt.slack is not None
    live.rt.slack.ack_budget = 0.0
    status, answer = await ack(live, command_body(slack, "contoso"))
    assert status == 200 and answer is None
    (late,) = await until(lambda: slack.responses)
    assert "Renewal for Contoso Ltd started in a thread" in late["text"]
    assert late["response_type"] == "ephemeral"
    await until(lambda: live.rt.slack is not None and live.rt.slack.in_flight == 0)
    assert len(slack.responses) == 1


async def test_a_late_answer_slack_drops_is_logged_and_the_renewal_goes_on(
    live: Live, slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """The response_url's connection closes unanswered at every attempt (the SDK's webhook
    client retries once): one warning, no failed task; the thread is there all the same."""
    assert live.rt.slack is not None
    live.rt.slack.ack_budget = 0.0
    slack.drop_responses = 5
    with caplog.at_level(logging.WARNING, logger="renewbot"):
        assert (await ack(live, command_body(slack, "contoso")))[0] == 200
        await until(lambda: [r for r in caplog.records if r.getMessage() == "slack.reply_failed"])
        await until(lambda: live.rt.slack is not None and live.rt.slack.in_flight == 0)
    assert parent(slack) and not slack.responses
    assert slack.drop_responses == 3  # two attempts: the webhook client retried once
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_user_groups_slack_does_not_send_leave_the_groups_last_known(
    tmp_path: Path, slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """usergroups.list's connection closes unanswered at every attempt when the cached groups
    expire: a member of an operators' group still renews (the groups last known stay, asked
    again soon), with a warning and no failed task."""
    access = {"operators": ["S-support"]}
    async with live_bot(tmp_path, slack=slack_settings(slack), access=access) as live:
        assert live.rt.slack is not None
        await live.rt.slack.actor("U-grace", "grace", "T1")  # the groups, fetched once
        fetched_at, groups = live.rt.slack._groups
        live.rt.slack._groups = (fetched_at - 3600.0, groups)  # an hour on: expired
        for _ in range(20):  # more than every retry (the SDK's, and aiohttp's on a reused one)
            slack.fail_next("usergroups.list", "drop")
        with caplog.at_level(logging.WARNING, logger="renewbot"):
            status, answer = await ack(live, command_body(slack, "contoso", user="U-grace"))
            assert status == 200
            if answer is None:  # past the ack's budget (the SDK's pause before its retry)
                answer = (await until(lambda: slack.responses))[0]
        assert "Renewal for Contoso Ltd started" in answer["text"]
        assert [r for r in caplog.records if r.getMessage() == "slack.usergroups_unavailable"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_command_at_capacity_is_told_at_once_and_changes_nothing(
    live: Live, slack: SlackStandIn
) -> None:
    """Busy: the person reads it in the ack and no renewal starts; below capacity it works."""
    assert live.rt.slack is not None
    live.rt.slack.max_in_flight = 0
    status, answer = await ack(live, command_body(slack, "contoso"))
    assert status == 200 and answer is not None
    assert "busy" in answer["text"] and "try again" in answer["text"]
    async with live.rt.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM renewals"))).scalar() == 0
    live.rt.slack.max_in_flight = 64
    assert (await ack(live, command_body(slack, "contoso")))[0] == 200
    await until(lambda: parent(slack))
    assert not [r for r in slack.responses if "went wrong" in str(r.get("text"))]
