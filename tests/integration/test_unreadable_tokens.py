"""Stored tokens that no configured key opens (issue 11, finding 6), on SQLite and PostgreSQL.

Two ways a stored token cache becomes unreadable, each made in the database itself: a row whose
ciphertext was altered, and a row sealed with another valid Fernet key. Real MSAL against the
sandbox identity provider, the alert through the Slack stand-in, chat through signed Slack
commands. The tenant is marked as needing a renewal with the reason and announced; the other
tenants are checked as usual; chat says what is wrong in plain words; a renewal fixes it.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from adapters.storage.crypto import SecretBox, generate_key
from core.model import AuthState
from core.model import RenewalState as S
from tests.integration.live import T_CONTOSO, T_FABRIKAM, Live, live_bot, until
from tests.integration.test_slack import command_body, post, slack_settings
from tests.servers.postgres import fresh_database
from tests.servers.slack import SlackStandIn

T_TAILSPIN = "00000004-0000-4000-8000-000000000004"
ACCOUNTS = {"contoso": "admin@contoso.com", "fabrikam": "it@fabrikam.com"}
ACCOUNTS["tailspin"] = "admin@tailspin.com"
PLAIN = "stored tokens cannot be read"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def live(
    request: pytest.FixtureRequest, tmp_path: Path, slack: SlackStandIn
) -> AsyncIterator[Live]:
    url = None
    if request.param == "postgres":
        url = await fresh_database(request.getfixturevalue("postgres_url"))
    async with live_bot(tmp_path, url, slack=slack_settings(slack)) as bot:
        yield bot


async def renew(live: Live, slug: str) -> None:
    await live.say(slug)
    status = await live.press(live.auth_url())
    await live.sign_in(str(status["user_code"]), ACCOUNTS[slug])
    await live.wait_state(slug, S.VALIDATED)


async def stored(live: Live, tenant_id: str) -> bytes:
    async with live.rt.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT ciphertext FROM token_caches WHERE tenant_id = :t"), {"t": tenant_id}
        )
        return bytes(found.scalar_one())


async def overwrite(live: Live, tenant_id: str, ciphertext: bytes) -> None:
    async with live.rt.engine.begin() as conn:
        await conn.execute(
            text("UPDATE token_caches SET ciphertext = :c WHERE tenant_id = :t"),
            {"c": ciphertext, "t": tenant_id},
        )


async def tamper(live: Live, tenant_id: str) -> None:
    """Alter one character in the middle of the stored ciphertext."""
    sealed = bytearray(await stored(live, tenant_id))
    middle = len(sealed) // 2
    sealed[middle] = ord("A") if sealed[middle] != ord("A") else ord("B")
    await overwrite(live, tenant_id, bytes(sealed))


async def seal_with_another_key(live: Live, tenant_id: str) -> None:
    """The same tokens, sealed with a well-formed key that is not one of the configured keys."""
    body = live.rt.box.open(await stored(live, tenant_id))
    await overwrite(live, tenant_id, SecretBox([generate_key()]).seal(body))


async def due_now(live: Live) -> None:
    async with live.rt.engine.begin() as conn:
        await conn.execute(text("UPDATE tenants SET next_check_at = NULL"))


async def states(live: Live) -> dict[str, AuthState]:
    async with live.rt.uow() as uow:
        return {t.slug: t.auth_state for t in await uow.tenants.all()}


async def error_codes(live: Live, slug: str) -> list[str]:
    async with live.rt.uow() as uow:
        return [r.code for r in await uow.identity_errors.newest(live.tenants[slug].key)]


def token_requests(live: Live, tenant_id: str) -> int:
    path = f"/{tenant_id}/oauth2/v2.0/token"
    return sum(1 for m, p in live.sandbox.directory.requests if m == "POST" and p == path)


def alerts(slack: SlackStandIn) -> list[str]:
    return [str(a["text"]) for a in slack.called("chat.postMessage") if a["channel"] == "C-alerts"]


async def ask(live: Live, slack: SlackStandIn, command: str) -> str:
    """Type a command in Slack; the answer the support engineer reads."""
    seen = len(slack.responses)
    assert await post(live, command_body(slack, command)) == 200
    answers = await until(lambda: slack.responses[seen:])
    return html.unescape(str(answers[0]["text"]))


async def test_unreadable_tokens_mark_their_tenant_and_the_others_carry_on(
    live: Live, slack: SlackStandIn
) -> None:
    """contoso's stored row altered, fabrikam's sealed with another key, tailspin untouched."""
    for slug in ("contoso", "fabrikam", "tailspin"):
        await renew(live, slug)
    await tamper(live, T_CONTOSO)
    await seal_with_another_key(live, T_FABRIKAM)
    await due_now(live)
    tailspin_refreshes = token_requests(live, T_TAILSPIN)
    announced = await until(lambda: len(alerts(slack)) >= 3 and len(alerts(slack)))  # validated

    result = await live.rt.core.monitor.sweep()  # before: StorageError, sweep aborted

    assert result.checked == 4
    assert await states(live) == {
        "contoso": AuthState.EXPIRED,
        "fabrikam": AuthState.EXPIRED,
        "northwind": AuthState.EXPIRED,  # never signed in
        "tailspin": AuthState.HEALTHY,
    }
    assert token_requests(live, T_TAILSPIN) == tailspin_refreshes + 1  # really refreshed
    for slug in ("contoso", "fabrikam"):
        assert (await error_codes(live, slug))[0] == "token_cache_unreadable"
    # three changes: two unreadable, and northwind (never signed in) expired as before
    sent = await until(lambda: len(alerts(slack)) >= announced + 3 and alerts(slack)[announced:])
    unreadable = sorted(a.split(" needs a renewal: ")[0] for a in sent if PLAIN in a)
    assert unreadable == ["Contoso Ltd (contoso)", "Fabrikam Inc (fabrikam)"]
    assert not any("Tailspin" in a for a in sent)

    for command in ("show contoso", "validate contoso", "validate fabrikam"):
        answer = await ask(live, slack, command)
        assert PLAIN in answer and "renew-token" in answer, (command, answer)
        assert "database" not in answer, (command, answer)
    status = await ask(live, slack, "status")
    assert f"Contoso Ltd (contoso): expired ({PLAIN}" in status
    assert "Northwind Traders (northwind): expired\n" in status + "\n"  # no reason invented

    await renew(live, "contoso")  # a new sign-in replaces what no key opens
    await due_now(live)
    await live.rt.core.monitor.sweep()
    found = await states(live)
    assert found["contoso"] is AuthState.HEALTHY and found["fabrikam"] is AuthState.EXPIRED
    assert PLAIN not in await ask(live, slack, "show contoso")


async def test_start_up_check_marks_the_tenants_it_cannot_read(
    live: Live, slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Some rows unreadable: the start goes on, one warning with the count, those tenants are
    marked and announced. No row readable: the start is refused, naming the variable."""
    from bot.admin import check_token_caches  # here: the test above also runs on older code

    for slug in ("contoso", "tailspin"):
        await renew(live, slug)
    await tamper(live, T_CONTOSO)
    with caplog.at_level(logging.WARNING, logger="renewbot.startup"):
        assert await check_token_caches(live.rt) is None
    (warning,) = [r for r in caplog.records if r.name == "renewbot.startup"]
    assert (
        warning.getMessage() == "startup.token_caches_unreadable" and warning.__dict__["count"] == 1
    )
    await until(lambda: [a for a in alerts(slack) if "Contoso Ltd (contoso) needs" in a] or None)
    found = await states(live)
    assert found["contoso"] is AuthState.EXPIRED and found["tailspin"] is not AuthState.EXPIRED

    real_box = live.rt.box
    live.rt.box = SecretBox([generate_key()])  # a key unrelated to what is stored
    try:
        refused = await check_token_caches(live.rt)
    finally:
        live.rt.box = real_box
    assert refused is not None and "RENEWBOT_SECURITY__ENCRYPTION_KEYS" in refused
    assert "\n" not in refused
