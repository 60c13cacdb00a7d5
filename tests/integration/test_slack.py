"""Slack end to end: signed requests through the real bolt stack, the Web API stand-in, the
customer's sign-in at the sandbox, and what support sees in the thread and the alert channel."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from sqlalchemy import text

from core.model import RenewalState as S
from tests.integration.live import Live, live_bot, until
from tests.servers.slack import APP_TOKEN, BOT_TOKEN, SlackStandIn

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documented example secret: fake by design


def slack_settings(stand: SlackStandIn, **extra: Any) -> dict[str, Any]:
    return {
        "bot_token": BOT_TOKEN,
        "signing_secret": SECRET,
        "api_url": stand.api_url,
        "alert_channel": "C-alerts",
        **extra,
    }


@pytest.fixture
async def live(tmp_path: Path, slack: SlackStandIn) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, slack=slack_settings(slack)) as bot:
        yield bot


def signed(body: str, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command_body(
    stand: SlackStandIn,
    text: str,
    user: str = "U-alice",
    channel: str = "C-ops",
    trigger: str | None = None,
) -> str:
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": "T1",
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/renew-token",
            "text": text,
            "api_app_id": "A-renewbot",
            "is_enterprise_install": "false",
            "response_url": f"{stand.base_url}/_response/{uuid.uuid4().hex}",
            "trigger_id": trigger or uuid.uuid4().hex,
        }
    )


def click_body(
    stand: SlackStandIn, kind: str, tenant: str, user: str = "U-alice", channel: str = "C-ops"
) -> str:
    payload = {
        "type": "block_actions",
        "api_app_id": "A-renewbot",
        "token": "legacy",
        "trigger_id": uuid.uuid4().hex,
        "team": {"id": "T1", "domain": "test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T1"},
        "channel": {"id": channel, "name": "ops"},
        "container": {"type": "message"},
        "response_url": f"{stand.base_url}/_response/{uuid.uuid4().hex}",
        "actions": [
            {
                "type": "button",
                "action_id": f"renewbot_{kind}",
                "block_id": "b1",
                "value": tenant,
                "text": {"type": "plain_text", "text": kind},
                "action_ts": str(time.time()),
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


async def post(live: Live, body: str, headers: dict[str, str] | None = None) -> int:
    """Send a signed request as Slack would. An answer in the ack's body is what Slack shows
    the person, like a response_url post: it is recorded at the stand-in's response_url too
    (marked ``"via": "ack"``), so a test reads every answer in one place, in order."""
    async with live.http.post(
        live.base_url + "/slack/events",
        data=body,
        headers=signed(body) if headers is None else headers,
    ) as resp:
        if resp.status == 200 and resp.content_type == "application/json":
            await show_ack(live, body, await resp.json())
        return resp.status


async def show_ack(live: Live, body: str, answer: dict[str, Any]) -> None:
    urls = parse_qs(body).get("response_url")
    if urls and "text" in answer:
        async with live.http.post(urls[0], json={**answer, "via": "ack"}) as resp:
            assert resp.status == 200


def parent(stand: SlackStandIn, channel: str = "C-ops") -> tuple[str, str] | None:
    for (ch, ts), args in stand.messages.items():
        if ch == channel and "thread_ts" not in args:
            return ch, ts
    return None


def auth_url(stand: SlackStandIn) -> str:
    """The Auth URL as support would copy it from the Slack thread."""
    for args in reversed(stand.called("chat.postMessage")):
        if m := re.search(r"http://\S+/onboard/[\w-]+", str(args.get("text"))):
            return m.group(0)
    raise AssertionError("no Auth URL posted in Slack")


def auth_urls(stand: SlackStandIn) -> int:
    """How many Auth URLs Slack has taken so far."""
    return sum("/onboard/" in str(a.get("text")) for a in stand.called("chat.postMessage"))


def texts(stand: SlackStandIn, channel: str, ts: str) -> list[str]:
    return [str(a.get("text")) for a in stand.thread(channel, ts)]


async def test_full_renewal_in_a_slack_thread(live: Live, slack: SlackStandIn) -> None:
    """Command, thread with Auth URL and code, customer signs in, green validated, alert."""
    assert await post(live, command_body(slack, "contoso")) == 200
    reply = await until(lambda: slack.responses)
    # answered in the ack: no response_url call, no permalink (the thread is in this channel)
    assert reply[0]["via"] == "ack" and reply[0]["response_type"] == "ephemeral"
    assert "started in a thread: the bot's message just posted in this channel" in reply[0]["text"]
    assert not slack.called("chat.getPermalink")
    channel, ts = await until(lambda: parent(slack))
    await until(lambda: any("/onboard/" in t for t in texts(slack, channel, ts)))
    status = await live.press(auth_url(slack))
    await until(
        lambda: any(f"Device code: {status['user_code']}" in t for t in texts(slack, channel, ts))
    )
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)
    done = await until(
        lambda: [a for a in slack.thread(channel, ts) if str(a.get("text")).startswith("Validated")]
    )
    assert done[0]["attachments"][0]["color"] == "#2EB67D"  # clearly green
    thread = texts(slack, channel, ts)
    assert thread.index(next(t for t in thread if "1/3 tokens" in t)) < thread.index(
        next(t for t in thread if t.startswith("Validated"))
    )
    alerts = await until(
        lambda: [a for a in slack.called("chat.postMessage") if a["channel"] == "C-alerts"]
    )
    assert "validated for Contoso Ltd" in alerts[0]["text"]
    await until(lambda: "[x] Validated" in slack.messages[(channel, ts)]["text"])
    status_msg = slack.messages[(channel, ts)]
    buttons = status_msg["attachments"][0]["blocks"][1]["elements"]
    assert [b["action_id"] for b in buttons] == ["renewbot_validate"]


async def test_status_message_has_checklist_and_buttons(live: Live, slack: SlackStandIn) -> None:
    """The thread's first message is updated in place with the lifecycle and the buttons."""
    await post(live, command_body(slack, "fabrikam"))
    channel, ts = await until(lambda: parent(slack))
    await until(lambda: slack.thread(channel, ts))  # the Auth URL is posted
    assert not slack.called("chat.update")  # the status had not changed: no update sent
    blocks = slack.messages[(channel, ts)]["blocks"]
    assert "[x] Invitation sent → [ ] Code issued" in blocks[0]["text"]["text"]
    ids = [e["action_id"] for e in blocks[1]["elements"]]
    assert ids == ["renewbot_new_code", "renewbot_cancel"]
    assert blocks[1]["elements"][1]["confirm"]  # cancelling asks first


@pytest.mark.parametrize("case", ["missing", "non-numeric", "stale", "wrong", "malformed"])
async def test_bad_signatures_are_401_and_change_nothing(
    live: Live, slack: SlackStandIn, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every forged or replayed request is a 401, never a 500, and its body is not logged."""
    body = command_body(slack, "contoso")
    headers = {
        "missing": {"Content-Type": "application/x-www-form-urlencoded"},
        "non-numeric": {**signed(body), "X-Slack-Request-Timestamp": "yesterday"},
        "stale": signed(body, ts=int(time.time()) - 600),
        "wrong": signed(body, secret="0" * 32),
        "malformed": {**signed(body), "X-Slack-Signature": "v0=xyz"},
    }[case]
    caplog.set_level("DEBUG")
    assert await post(live, body, headers) == 401
    assert not slack.called("chat.postMessage")
    assert "legacy-verification-token" not in caplog.text and "contoso" not in caplog.text


async def test_retry_and_second_renew_do_not_duplicate(live: Live, slack: SlackStandIn) -> None:
    """A Slack retry runs nothing twice; a second renew links the open thread."""
    body = command_body(slack, "contoso", trigger="trigger-1")
    assert await post(live, body) == 200
    retry_headers = {**signed(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"}
    assert await post(live, body, retry_headers) == 200
    await until(lambda: slack.responses)
    assert await post(live, command_body(slack, "Contoso Ltd", user="U-bob")) == 200
    second = await until(lambda: slack.responses[1:] and slack.responses[1])
    assert "already open" in second["text"] and "Open the thread" in second["text"]
    parents = [k for k, a in slack.messages.items() if "thread_ts" not in a and k[0] == "C-ops"]
    assert len(parents) == 1


async def test_cancel_button_cancels(live: Live, slack: SlackStandIn) -> None:
    """Cancel in the thread ends the renewal and the Auth URL stops working."""
    await post(live, command_body(slack, "contoso"))
    channel, ts = await until(lambda: parent(slack))
    await live.wait_for("contoso", lambda r: r.thread is not None)
    assert await post(live, click_body(slack, "cancel", "contoso")) == 200
    await live.wait_state("contoso", S.CANCELLED)
    await until(lambda: any("cancelled by u-alice" in t for t in texts(slack, channel, ts)))
    async with live.http.get(auth_url(slack)) as resp:
        assert resp.status == 410


async def test_rate_limits_and_server_errors_are_retried_in_order(
    live: Live, slack: SlackStandIn
) -> None:
    """429 with Retry-After and a 5xx delay posts but lose none, and the order holds."""
    slack.fail_next("chat.postMessage", "429", 1)
    slack.fail_next("chat.postMessage", "500")
    await post(live, command_body(slack, "contoso"))
    channel, ts = await until(lambda: parent(slack))
    await until(lambda: texts(slack, channel, ts))
    status = await live.press(auth_url(slack))
    await until(lambda: any("Device code" in t for t in texts(slack, channel, ts)))
    thread = texts(slack, channel, ts)
    assert thread[0].startswith("Auth URL") and thread[1].startswith("Device code")
    assert status["user_code"] in thread[1]
    attempts = [c for c in slack.calls if c.method == "chat.postMessage"]
    assert attempts[1].at - attempts[0].at >= 0.9  # Retry-After: 1 was honoured


async def test_unknown_channel_still_gives_the_auth_url(live: Live, slack: SlackStandIn) -> None:
    """If the bot cannot post in the channel, the requester still gets the Auth URL privately."""
    await post(live, command_body(slack, "contoso", channel="C-private"))
    reply = await until(lambda: slack.responses)
    assert "could not post in this channel" in reply[0]["text"]
    assert "/onboard/" in reply[0]["text"]


async def test_failing_posts_never_lose_state(live: Live, slack: SlackStandIn) -> None:
    """Slack refusing every thread reply does not stop the renewal reaching VALIDATED."""
    await post(live, command_body(slack, "contoso"))
    await until(lambda: auth_urls(slack))  # posts go out through the outbox: wait for it
    for _ in range(20):
        slack.fail_next("chat.postMessage", "error", "msg_too_long")
    status = await live.press(auth_url(slack))
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)


async def test_viewer_is_refused_and_audited(tmp_path: Path, slack: SlackStandIn) -> None:
    """Viewers may read but not renew or click Cancel; user groups make operators."""
    access = {"operators": ["S-support"], "viewers": ["U-viktor"]}
    async with live_bot(tmp_path, slack=slack_settings(slack), access=access) as live:
        await post(live, command_body(slack, "contoso", user="U-viktor"))
        refused = await until(lambda: slack.responses)
        assert "may not start or change renewals" in refused[0]["text"]
        await post(live, command_body(slack, "show contoso", user="U-viktor"))
        shown = await until(lambda: slack.responses[1:])
        assert "admin@contoso.com" in shown[0]["text"]
        await post(live, command_body(slack, "contoso", user="U-grace"))  # via S-support
        await live.wait_for("contoso", lambda r: r.thread is not None)
        await post(live, click_body(slack, "cancel", "contoso", user="U-viktor"))
        await until(lambda: len(slack.responses) >= 4)
        assert (await live.renewal("contoso")).state is S.INVITED
        async with live.rt.engine.connect() as conn:
            denied = (
                await conn.execute(
                    text("SELECT count(*) FROM audit_events WHERE kind = 'access.denied'")
                )
            ).scalar()
        assert denied == 2


async def test_socket_mode_receives_commands(tmp_path: Path, slack: SlackStandIn) -> None:
    """With an app-level token the same command arrives over Socket Mode and is acked."""
    settings = slack_settings(slack, app_token=APP_TOKEN)
    async with live_bot(tmp_path, slack=settings) as live:
        payload = dict(x.split("=", 1) for x in command_body(slack, "contoso").split("&"))
        from urllib.parse import unquote_plus

        payload = {k: unquote_plus(v) for k, v in payload.items()}
        envelope = await slack.deliver("slash_commands", payload)
        await until(lambda: any(a.get("envelope_id") == envelope for a in slack.socket_acks))
        await live.wait_for("contoso", lambda r: r.thread is not None)
        assert parent(slack)


async def test_new_code_validate_and_renew_buttons(live: Live, slack: SlackStandIn) -> None:
    """New code posts a code; Validate again re-checks; Renew on a failure alert starts afresh."""
    # a managed-device policy: the sign-in fails whichever way (53003 would leave the browser)
    live.sandbox.directory.tenants[
        live.tenants["northwind"].tenant_id
    ].conditional_access = "530033"
    await post(live, command_body(slack, "northwind"))
    channel, ts = await until(lambda: parent(slack))
    await live.wait_for("northwind", lambda r: r.thread is not None)
    assert await post(live, click_body(slack, "new_code", "northwind")) == 200
    code_post = await until(lambda: [t for t in texts(slack, channel, ts) if "Device code" in t])
    user_code = code_post[0].split()[2]
    await live.sign_in(user_code, "admin@northwind.com")  # Conditional Access blocks it
    await live.wait_state("northwind", S.FAILED)
    alert = await until(
        lambda: [a for a in slack.called("chat.postMessage") if a["channel"] == "C-alerts"]
    )
    renew = alert[0]["attachments"][0]["blocks"][1]["elements"][0]
    assert renew["action_id"] == "renewbot_renew" and renew["value"] == "northwind"
    await post(live, click_body(slack, "renew", "northwind", channel="C-alerts"))
    await live.wait_for("northwind", lambda r: r.state is S.INVITED)
    assert parent(slack, "C-alerts")  # the new renewal's thread opened where Renew was clicked

    await post(live, command_body(slack, "contoso"))
    renewal = await live.wait_for("contoso", lambda r: r.thread is not None)
    thread = renewal.thread
    assert thread is not None
    in_thread = await until(
        lambda: [t for t in texts(slack, *thread.key.split("|")) if "/onboard/" in t]
    )
    url = re.search(r"http://\S+/onboard/[\w-]+", in_thread[0])
    assert url is not None
    status = await live.press(url.group(0))
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)
    before = len(slack.responses)
    await post(live, click_body(slack, "validate", "contoso"))
    reply = await until(lambda: slack.responses[before:])
    assert "Validated again: Microsoft Graph answers for Contoso Ltd" in reply[0]["text"]
