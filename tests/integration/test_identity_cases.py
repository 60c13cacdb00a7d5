"""Every case of DESIGN.md section 7, with real MSAL against the sandbox identity provider."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from core.model import RenewalState as S
from tests.integration.live import T_CONTOSO, T_NORTHWIND, Live, live_bot, until
from tests.servers.postgres import fresh_database


@pytest.fixture
async def live(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with live_bot(tmp_path) as bot:
        yield bot


async def start(live: Live, slug: str, **form: str) -> dict[str, object]:
    await live.say(slug)
    return await live.press(live.auth_url(), **form)


async def test_success_posts_progress_and_validated(live: Live) -> None:
    """The happy path through real MSAL: code, 1/3..3/3 tokens, validated, announced."""
    status = await start(live, "contoso")
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)
    await live.wait_text("validated for Contoso Ltd")
    await live.wait_text("Validated: Contoso Ltd")  # the thread and the alert channel are
    texts = live.chat.texts()  # delivered independently, each in its own order
    assert any(f"Device code: {status['user_code']}" in t for t in texts)
    assert [t for t in texts if "tokens" in t and "/3" in t][-1].endswith("3/3 tokens")
    assert any(t.startswith("Validated: Contoso Ltd") for t in texts)
    assert "validated for Contoso Ltd" in live.chat.announcements[-1]
    paths = [p for _, p in live.sandbox.directory.requests]
    assert paths.count(f"/{T_CONTOSO}/oauth2/v2.0/devicecode") == 1
    assert "/v1.0/organization" in paths


async def test_consent_needed_global_admin_validates(live: Live) -> None:
    """Enterprise Application deleted: a Global Administrator consents and the renewal succeeds."""
    status = await start(live, "fabrikam")
    page = await live.sign_in(str(status["user_code"]), "it@fabrikam.com")
    assert "signed in" in page
    await live.wait_state("fabrikam", S.VALIDATED)


async def test_consent_by_non_admin_is_explained_and_new_code_recovers(live: Live) -> None:
    """A plain user cannot consent: the thread says so, and a new code with an admin works."""
    status = await start(live, "fabrikam")
    await live.sign_in(str(status["user_code"]), "user@fabrikam.com")
    r = await live.wait_for("fabrikam", lambda r: r.failure_code == "AADSTS90094")
    assert r.state is S.INVITED
    await live.wait_text("Administrator approval is needed")
    status = await live.press(live.auth_url(), "new-code")
    assert status["user_code"]
    await live.sign_in(str(status["user_code"]), "it@fabrikam.com")
    r = await live.wait_state("fabrikam", S.VALIDATED, S.FAILED)
    # consent was needed (the last error said so) and it@fabrikam.com is Global Administrator
    assert r.state is S.VALIDATED


async def test_account_of_another_tenant(live: Live) -> None:
    """Signing in to Contoso with a Fabrikam account is refused with a plain reason."""
    status = await start(live, "contoso")
    page = await live.sign_in(str(status["user_code"]), "it@fabrikam.com")
    assert "not an account of Contoso" in page
    r = await live.wait_for("contoso", lambda r: r.failure_code == "AADSTS50020")
    assert r.state is S.INVITED
    await live.wait_text("belongs to another tenant")


async def test_not_global_admin_validates_with_warning(live: Live) -> None:
    """Without a consent step, a non-admin account validates but support is warned."""
    status = await start(live, "contoso", admin_upn="admin@contoso.com")
    await live.sign_in(str(status["user_code"]), "helpdesk@contoso.com")
    r = await live.wait_state("contoso", S.VALIDATED)
    assert "helpdesk@contoso.com is not a Global Administrator" in r.warnings
    assert any("the tenant's M365 admin username is admin@contoso.com" in w for w in r.warnings)


async def test_declined(live: Live) -> None:
    """The customer cancels at the sign-in page: the page and thread offer a new code."""
    status = await start(live, "contoso")
    await live.decline(str(status["user_code"]))
    await live.wait_for("contoso", lambda r: r.failure_code == "authorization_declined")
    async with live.http.get(live.auth_url() + "/status") as resp:
        page_status = await resp.json()
    assert page_status["can_new_code"] and "declined" in page_status["message"]


# 53003 (a policy against the device code flow) leaves the browser sign-in open instead:
# test_browser_sign_in_http.py::test_device_code_blocked_then_the_browser_renews
@pytest.mark.parametrize("code", ["530033"])
async def test_conditional_access_blocks_device_code(live: Live, code: str) -> None:
    """Conditional Access: the renewal fails with what the customer's admin must change."""
    live.sandbox.directory.tenants[T_NORTHWIND].conditional_access = code
    status = await start(live, "northwind")
    await live.sign_in(str(status["user_code"]), "admin@northwind.com")
    r = await live.wait_state("northwind", S.FAILED)
    assert r.failure_code == f"AADSTS{code}"
    await live.wait_text("Token renewal failed for Northwind Traders (northwind): Conditional")


async def test_code_expires_and_new_code_is_issued(tmp_path: Path) -> None:
    """A code that runs out sends the renewal back to INVITED; New code works."""
    async with live_bot(tmp_path, code_lifetime=2) as live:
        first = await start(live, "contoso")
        await live.wait_for("contoso", lambda r: r.failure_code == "expired_token")
        await live.wait_text("The code expired")
        live.sandbox.directory.tenants[T_CONTOSO].code_lifetime = 900
        second = await live.press(live.auth_url(), "new-code")
        assert second["user_code"] != first["user_code"]
        await live.sign_in(str(second["user_code"]), "admin@contoso.com")
        await live.wait_state("contoso", S.VALIDATED)


async def test_slow_down_is_honoured(live: Live) -> None:
    """slow_down makes us wait longer; we never poll faster than the interval."""
    live.sandbox.directory.tenants[T_CONTOSO].slow_down_polls = 1
    status = await start(live, "contoso")
    r = await live.wait_for(
        "contoso", lambda r: r.device_code is not None and r.device_code.interval == 6
    )
    assert r.state is S.CODE_ISSUED
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED, timeout=40)
    times = [t for code, t in live.sandbox.directory.polls if code == status["user_code"]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 1.0
    assert gaps[0] >= 6.0  # after slow_down: interval 1 + 5


async def test_enterprise_app_unknown_fails_at_start(live: Live) -> None:
    """AADSTS700016 at the start: our registration's fault, said as such on the page, in the
    thread, and once in the alert channel (not as this tenant's problem)."""
    live.sandbox.directory.tenants[T_CONTOSO].app_unknown = True
    await live.say("contoso")
    url = live.auth_url()
    async with live.http.post(f"{url}/start", data={"csrf": await live.csrf(url)}) as resp:
        assert resp.status == 410  # redirected to the page, which now explains the failure
        assert "misconfigured on our side" in await resp.text()
    await live.wait_text("does not know our application id")
    assert any("RENEWBOT_IDENTITY__CLIENT_ID" in a for a in live.chat.announcements)
    r = await live.renewal("contoso")
    assert r.state is S.FAILED and r.failure_code == "AADSTS700016"


async def test_graph_down_keeps_tokens_then_validate_again(live: Live) -> None:
    """Graph unavailable at validation: tokens kept, `validate` finishes once it is back."""
    live.sandbox.directory.tenants[T_CONTOSO].graph_down = True
    status = await start(live, "contoso")
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.TOKENS_ACQUIRED)
    await live.wait_text("could not be reached to validate")
    live.sandbox.directory.tenants[T_CONTOSO].graph_down = False
    reply = await live.say("validate contoso")
    assert "validated" in reply
    assert (await live.renewal("contoso")).state is S.VALIDATED


async def test_sandbox_gone_mid_flow_changes_nothing(live: Live) -> None:
    """Identity provider unreachable when the customer presses Start: a clear 503, still INVITED."""
    await live.say("contoso")
    url = live.auth_url()
    csrf = await live.csrf(url)
    await live.sandbox.stop()
    async with live.http.post(f"{url}/start", data={"csrf": csrf}) as resp:
        assert resp.status == 503
        assert "not answering" in await resp.text()
    assert (await live.renewal("contoso")).state is S.INVITED


@pytest.mark.postgres
async def test_full_renewal_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """The same renewal with PostgreSQL as the database."""
    async with live_bot(tmp_path, await fresh_database(postgres_url)) as live:
        status = await start(live, "contoso")
        await live.sign_in(str(status["user_code"]), "admin@contoso.com")
        await live.wait_state("contoso", S.VALIDATED)


async def test_sandbox_gone_while_waiting_keeps_the_code(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """An identity outage during polling is retried; nothing is half-written or failed."""
    await start(live, "contoso")
    before = await live.wait_for("contoso", lambda r: r.state is S.CODE_ISSUED)
    await live.sandbox.stop()
    caplog.set_level("WARNING", logger="renewbot.core")
    await until(lambda: sum(r.msg == "identity.poll_unavailable" for r in caplog.records) >= 2, 20)
    after = await live.renewal("contoso")
    assert after.state is S.CODE_ISSUED and after.device_code == before.device_code
    assert not any("failed" in t.lower() for t in live.chat.texts())
