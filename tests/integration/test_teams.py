"""Teams end to end: signed activities through botbuilder, the Bot Connector stand-in, the
customer's sign-in at the sandbox, and what support sees in the channel thread and alert channel."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.storage.crypto import generate_key
from adapters.storage.tables import conversation_refs, renewals
from bot.sandbox.directory import demo_directory
from bot.sandbox.server import Sandbox, bind_loopback
from core.model import RenewalState as S
from tests.integration.live import Live, live_bot, until
from tests.servers.bot_connector import (
    ALERTS,
    BotConnectorStandIn,
    card_buttons,
    card_text,
)


@pytest.fixture
async def live(tmp_path: Path, connector: BotConnectorStandIn) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, teams=connector.settings(alert_conversation=ALERTS)) as bot:
        yield bot


async def send(
    live: Live,
    stand: BotConnectorStandIn,
    activity: dict[str, Any],
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    auth = {"Authorization": f"Bearer {stand.token() if token is None else token}"}
    async with live.http.post(
        live.base_url + "/api/messages", json=activity, headers=auth if headers is None else headers
    ) as resp:
        return resp.status


def texts(stand: BotConnectorStandIn, conversation: str) -> list[str]:
    return stand.texts(stand.posts(conversation))


def posted(stand: BotConnectorStandIn, conversation: str, fragment: str) -> Callable[[], Any]:
    return lambda: [t for t in texts(stand, conversation) if fragment in t]


def auth_url(stand: BotConnectorStandIn, conversation: str) -> str:
    for text in texts(stand, conversation):
        if m := re.search(r"http://\S+/onboard/[\w-]+", text):
            return m.group(0)
    raise AssertionError("no Auth URL in the Teams thread")


async def test_full_renewal_in_a_channel_thread_survives_a_restart(
    tmp_path: Path, connector: BotConnectorStandIn
) -> None:
    """Command, card, sign-in after a restart, validated in the thread and the alert channel."""
    sandbox = await Sandbox(demo_directory(interval=1), workdir=tmp_path / "sandbox").start()
    sock = bind_loopback(0)
    port = sock.getsockname()[1]
    sock.close()
    same = {
        "teams": connector.settings(alert_conversation=ALERTS),
        "sandbox": sandbox,
        "port": port,
        "key": generate_key(),
    }
    command = connector.activity("renew-token contoso")
    thread = command["conversation"]["id"]
    try:
        async with live_bot(tmp_path, **same) as live:
            assert await send(live, connector, connector.installation(ALERTS)) == 200
            assert await send(live, connector, command) == 200
            await until(posted(connector, thread, "/onboard/"))
            status_card = connector.posts(thread)[0]
            assert "Token renewal for Contoso Ltd" in card_text(status_card.body)
            assert [b["title"] for b in card_buttons(status_card.body)] == ["New code", "Cancel"]
            assert status_card.authorization.startswith("Bearer bot-token-")
            status = await live.press(auth_url(connector, thread))
            await until(posted(connector, thread, f"Device code: {status['user_code']}"))
            # The command's own reply ("started in a thread") is not repeated inside the thread.
            assert not [t for t in texts(connector, thread) if "started in a thread" in t]
        async with live_bot(tmp_path, seed=False, **same) as live:
            await live.sign_in(str(status["user_code"]), "admin@contoso.com")
            await live.wait_state("contoso", S.VALIDATED)
            done = await until(posted(connector, thread, "Validated: Contoso Ltd has new tokens"))
            assert done
            alert = await until(posted(connector, ALERTS, "validated for Contoso Ltd"))
            assert alert
            final = await until(
                lambda: [
                    c for c in connector.updates(thread) if "[x] Validated" in card_text(c.body)
                ]
            )
            assert final[-1].activity_id == status_card.response_id
            assert [b["title"] for b in card_buttons(final[-1].body)] == ["Validate again"]
    finally:
        await sandbox.stop()
    ordered = texts(connector, thread)
    assert ordered.index(next(t for t in ordered if "1/3 tokens" in t)) < ordered.index(
        next(t for t in ordered if t.startswith("Validated"))
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not-bearer",
        "malformed",
        "wrong-issuer",
        "wrong-audience",
        "expired",
        "unknown-key",
        "hs256",
    ],
)
async def test_bad_tokens_are_401_and_nothing_is_sent(
    live: Live, connector: BotConnectorStandIn, case: str
) -> None:
    """Every token Teams did not sign for this bot is refused before the bot acts."""
    activity = connector.activity("renew-token contoso")
    token = {
        "missing": None,
        "not-bearer": None,
        "malformed": "not.a.jwt",
        "wrong-issuer": connector.token(iss="https://sts.windows.net/evil/"),
        "wrong-audience": connector.token(aud="someone-elses-bot"),
        "expired": connector.token(exp=1_600_000_000, nbf=1_599_999_000, iat=1_599_999_000),
        "unknown-key": connector.token(key="stranger", kid="no-such-key"),
        "hs256": connector.token(alg="HS256"),
    }[case]
    headers = {
        "missing": {},
        "not-bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
    }.get(case, {"Authorization": f"Bearer {token}"})
    assert await send(live, connector, activity, headers=headers) == 401
    await assert_nothing_happened(live, connector)


@pytest.mark.parametrize("case", ["unendorsed-channel", "other-service-url"])
async def test_valid_but_misdirected_tokens_are_403(
    live: Live, connector: BotConnectorStandIn, case: str
) -> None:
    """A key not endorsed for Teams, or a token minted for another service URL, is refused."""
    activity = connector.activity("renew-token contoso")
    token = (
        connector.token(key="unendorsed")
        if case == "unendorsed-channel"
        else connector.token(service_url="https://attacker.example/amer/")
    )
    assert await send(live, connector, activity, token=token) == 403
    await assert_nothing_happened(live, connector)


async def assert_nothing_happened(live: Live, stand: BotConnectorStandIn) -> None:
    """A good request sent afterwards is answered, and it is the only thing that happened."""
    marker = stand.activity("renew-token help", personal=True)
    assert await send(live, stand, marker) == 200
    await until(lambda: stand.calls)
    assert [c.conversation for c in stand.calls] == [marker["conversation"]["id"]]
    async with live.rt.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(renewals))).scalar() == 0
        refs = (await conn.execute(select(conversation_refs.c.conversation))).scalars().all()
        assert refs == [marker["conversation"]["id"]]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"type": "message"}', b'{"type": "message", "serviceUrl": "x"}'],
)
async def test_malformed_activities_are_400(
    live: Live, connector: BotConnectorStandIn, body: bytes
) -> None:
    """A body that is not an activity gets a clear 400, never a 500."""
    async with live.http.post(
        live.base_url + "/api/messages",
        data=body,
        headers={
            "Authorization": f"Bearer {connector.token()}",
            "Content-Type": "application/json",
        },
    ) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()


async def test_personal_chat_command_gets_an_answer(
    live: Live, connector: BotConnectorStandIn
) -> None:
    """`status` in a 1:1 chat is answered in that chat."""
    activity = connector.activity("renew-token status", personal=True)
    assert await send(live, connector, activity) == 200
    (answer,) = await until(posted(connector, activity["conversation"]["id"], "Open renewals"))
    assert re.match(r"\d+ tenants: \d+ unknown\.", answer)


async def test_card_buttons_run_commands(live: Live, connector: BotConnectorStandIn) -> None:
    """Pressing Cancel on the status card cancels the renewal, in the same thread."""
    command = connector.activity("renew-token fabrikam")
    thread = command["conversation"]["id"]
    await send(live, connector, command)
    await until(posted(connector, thread, "/onboard/"))
    cancel = next(
        b for b in card_buttons(connector.posts(thread)[0].body) if b["title"] == "Cancel"
    )
    click = connector.activity("", conversation=thread, value=cancel["data"], mention=False)
    assert await send(live, connector, click) == 200
    await live.wait_state("fabrikam", S.CANCELLED)
    assert await until(posted(connector, thread, "Cancelled"))


async def test_throttled_sends_are_retried(live: Live, connector: BotConnectorStandIn) -> None:
    """429 (with Retry-After), 412, 502 and 504 from the connector are retried until they pass."""
    assert live.rt.teams is not None
    live.rt.teams.threads.backoff = 0.01  # keep the test fast; Retry-After is still honoured
    connector.fail_next(429, retry_after=0.2)
    connector.fail_next(412)
    connector.fail_next(502)
    connector.fail_next(504)
    activity = connector.activity("renew-token help", personal=True)
    await send(live, connector, activity)
    assert await until(posted(connector, activity["conversation"]["id"], "renew-token"))
    refused = [c.method for c in connector.calls if c.method.startswith("REFUSED")]
    assert refused == ["REFUSED-429", "REFUSED-412", "REFUSED-502", "REFUSED-504"]


async def test_viewer_cannot_renew_in_teams(tmp_path: Path, connector: BotConnectorStandIn) -> None:
    """Rights are checked per Entra object id, as in Slack; a refusal says so in plain words."""
    access = {"operators": ["teams:aad-olivia"], "viewers": ["*"]}
    async with live_bot(tmp_path, teams=connector.settings(), access=access) as live:
        activity = connector.activity("renew-token contoso", user="aad-victor", name="Victor")
        await send(live, connector, activity)
        answer = await until(posted(connector, activity["conversation"]["id"], "you may not start"))
        assert answer
        async with live.rt.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(renewals))).scalar()
        assert count == 0
        allowed = connector.activity("renew-token contoso", user="aad-olivia", name="Olivia")
        await send(live, connector, allowed)
        await live.wait_state("contoso", S.INVITED)
