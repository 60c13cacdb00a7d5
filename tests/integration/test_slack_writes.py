"""SlackThreads sends chat.postMessage and chat.update itself (not through the SDK's per-call
layer): against the Web API stand-in, every answer Slack documents for them reaches core as it
did through the SDK's client, and what the SDK retries (500, 503, a dropped connection) is
retried as often as the SDK alone would, through the SDK's own proxy settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.threads import (
    CONNECTION_RETRIES,
    SERVER_ERROR_RETRIES,
    SlackThreads,
    make_client,
    split_key,
)
from core.errors import ChatDeliveryError, ChatRateLimitedError, ChatRejectedError
from core.model import Origin
from core.ports import Action, Message
from tests.servers.slack import BOT_TOKEN, SlackStandIn

OPS = Origin("slack", "C-ops")


@pytest.fixture
async def threads(slack: SlackStandIn) -> AsyncIterator[SlackThreads]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield SlackThreads(make_client(BOT_TOKEN, slack.api_url, session), "C-alerts")


def posts(slack: SlackStandIn) -> list[dict[str, object]]:
    return [c.args for c in slack.calls if c.method == "chat.postMessage"]


async def test_a_thread_its_reply_and_its_status_arrive_as_sent(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    message = Message(
        "Renewal of *Contoso* started", actions=(Action("cancel", "contoso", "Cancel"),)
    )
    thread = await threads.open_thread(OPS, message)
    channel, ts = split_key(thread.key)
    assert channel == "C-ops" and (channel, ts) in slack.messages
    first = slack.messages[(channel, ts)]
    assert first["text"] == message.text and first["unfurl_links"] is False
    assert any(b.get("type") == "actions" for b in first["blocks"])

    await threads.post(thread, Message("Auth URL: https://bot.example/onboard/x", ref="o-1"))
    reply = posts(slack)[-1]
    assert reply["thread_ts"] == ts and reply["channel"] == "C-ops"
    assert reply["metadata"] == {"event_type": "renewbot_outbox", "event_payload": {"ref": "o-1"}}

    await threads.update_status(thread, Message("Validated", tone="success"))
    assert slack.messages[(channel, ts)]["text"] == "Validated"


async def test_a_post_is_one_call(slack: SlackStandIn, threads: SlackThreads) -> None:
    await threads.announce(Message("Tokens of Contoso expire in 3 days"))
    assert len(posts(slack)) == 1 and len(slack.calls) == 1


async def test_a_server_error_is_retried_by_the_sdk_and_posts_once(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    slack.fail_next("chat.postMessage", "500", 503)
    thread = await threads.open_thread(OPS, Message("Renewal started"))
    assert len(posts(slack)) == 2  # the 503, then the SDK's retry
    assert [k for k in slack.messages if k[0] == "C-ops"] == [split_key(thread.key)]


async def test_server_errors_get_as_many_attempts_as_the_sdk_gives_them(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    """The SDK's handler makes 3 retries of a 500: 4 attempts in all, then the error."""
    for _ in range(SERVER_ERROR_RETRIES + 2):
        slack.fail_next("chat.postMessage", "500")
    with pytest.raises(ChatDeliveryError):
        await threads.announce(Message("Tokens of Contoso expire in 3 days"))
    assert len(posts(slack)) == 1 + SERVER_ERROR_RETRIES
    assert not slack.messages


async def test_a_server_error_the_sdk_does_not_retry_is_not_retried(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    """A 502 may come after Slack took the post: the SDK does not retry it, nor does this."""
    slack.fail_next("chat.postMessage", "500", 502)
    with pytest.raises(ChatDeliveryError):
        await threads.open_thread(OPS, Message("Renewal started"))
    assert len(posts(slack)) == 1


async def test_writes_go_through_the_proxy_the_sdk_would_use(
    slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY, as the SDK's client reads it: every write goes by the proxy."""
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        async with aiohttp.ClientSession(trust_env=False) as onward:
            async with onward.post(
                str(request.url), data=await request.read(), headers=request.headers
            ) as answer:
                return web.Response(
                    status=answer.status, body=await answer.read(), content_type="application/json"
                )

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(proxy)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession(trust_env=False) as session:
            threads = SlackThreads(make_client(BOT_TOKEN, slack.api_url, session), "C-alerts")
            thread = await threads.open_thread(OPS, Message("Renewal started"))
            await threads.update_status(thread, Message("Validated"))
    finally:
        await runner.cleanup()
    assert [u.rsplit("/", 1)[1] for u in seen] == ["chat.postMessage", "chat.update"]
    assert slack.messages[split_key(thread.key)]["text"] == "Validated"


async def test_a_rate_limit_is_raised_at_once_with_slacks_retry_after(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    slack.fail_next("chat.postMessage", "429", 7)
    with pytest.raises(ChatRateLimitedError) as raised:
        await threads.open_thread(OPS, Message("Renewal started"))
    assert raised.value.retry_after == 7
    assert len(posts(slack)) == 1  # not waited out here: the outbox waits


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("channel_not_found", ChatRejectedError),  # would fail again: rejected
        ("msg_too_long", ChatRejectedError),
        ("fatal_error", ChatDeliveryError),  # may pass later: delivery failed
    ],
)
async def test_slacks_refusals_are_told_apart(
    slack: SlackStandIn, threads: SlackThreads, code: str, error: type[Exception]
) -> None:
    slack.fail_next("chat.update", "error", code)
    thread = await threads.open_thread(OPS, Message("Renewal started"))
    with pytest.raises(error) as raised:
        await threads.update_status(thread, Message("Validated"))
    assert type(raised.value) is error


async def test_a_wrong_token_is_a_delivery_error(
    slack: SlackStandIn,
) -> None:
    async with aiohttp.ClientSession(trust_env=False) as session:
        wrong = SlackThreads(make_client("xoxb-wrong", slack.api_url, session), "C-alerts")
        with pytest.raises(ChatDeliveryError) as raised:
            await wrong.announce(Message("Tokens of Contoso expire in 3 days"))
    assert "invalid_auth" in str(raised.value)
    assert not slack.messages


async def test_slack_unreachable_is_a_delivery_error(slack: SlackStandIn) -> None:
    url = slack.api_url
    await slack.stop()
    async with aiohttp.ClientSession(trust_env=False) as session:
        gone = SlackThreads(make_client(BOT_TOKEN, url, session), "C-alerts")
        with pytest.raises(ChatDeliveryError):
            await gone.open_thread(OPS, Message("Renewal started"))


async def test_a_connection_dropped_at_every_attempt_is_a_delivery_error(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    for _ in range(10):
        slack.fail_next("chat.postMessage", "drop")
    with pytest.raises(ChatDeliveryError):  # core's error, which the outbox backs off on
        await threads.open_thread(OPS, Message("Renewal started"))
    assert not slack.messages
    assert len(posts(slack)) == 1 + CONNECTION_RETRIES  # as the SDK retries a dropped one


async def test_a_dropped_connection_is_retried_and_posts_once(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    slack.fail_next("chat.postMessage", "drop")
    thread = await threads.open_thread(OPS, Message("Renewal started"))
    assert [a["text"] for a in slack.posted("C-ops")] == ["Renewal started"]
    assert split_key(thread.key)[0] == "C-ops"


async def test_an_answer_cut_short_is_a_delivery_error_not_retried(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    thread = await threads.open_thread(OPS, Message("Renewal started"))
    slack.fail_next("chat.postMessage", "cut")
    with pytest.raises(ChatDeliveryError):  # Slack may have taken it: the outbox checks first
        await threads.post(thread, Message("Open the link"))
    assert len(posts(slack)) == 2  # not sent again here: a retry could double the reply


async def test_a_post_slack_took_whose_answer_never_came_is_not_sent_again_blindly(
    slack: SlackStandIn, threads: SlackThreads
) -> None:
    """The connection closes after Slack took a reply that carries its outbox id: a delivery
    error for the outbox to check on (it can find the id), not a retry that could double it.
    A thread's first message carries no id: it is retried as the SDK would."""
    thread = await threads.open_thread(OPS, Message("Renewal started"))
    slack.fail_next("chat.postMessage", "lost")
    with pytest.raises(ChatDeliveryError):
        await threads.post(thread, Message("Open the link", ref="41"))
    assert [a["text"] for a in posts(slack)] == ["Renewal started", "Open the link"]
    assert await threads.was_delivered(thread, "41")
    slack.fail_next("chat.postMessage", "drop")  # (another channel: Slack paces each one)
    await threads.open_thread(Origin("slack", "C-alerts"), Message("Another renewal started"))
    assert [a["text"] for a in slack.posted("C-alerts")] == ["Another renewal started"]
