"""Renewals that succeed for a real tenant: real MSAL against a sandbox that behaves as Entra
does (tokens without ``wids``, initial domains, guests, consent for one user, registration
mistakes). Each case failed on the code before issue 12."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.sandbox.directory import DEFAULT_CLIENT_ID
from core.model import AuthState
from core.model import RenewalState as S
from tests.integration.live import T_CONTOSO, T_FABRIKAM, Live, live_bot

T_TAILSPIN = "00000004-0000-4000-8000-000000000004"
GUEST = "jane_partner.example#EXT#@contoso.onmicrosoft.com"


@pytest.fixture
async def live(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with live_bot(tmp_path) as bot:
        yield bot


async def renew(live: Live, slug: str, upn: str, consent: str | None = "accept") -> None:
    await live.say(slug)
    status = await live.press(live.auth_url())
    await live.sign_in(str(status["user_code"]), upn, consent)


async def test_sharepoint_host_comes_from_the_initial_domain(live: Live) -> None:
    """Tailspin's SharePoint is tailspintoys-admin (its initial domain), not tailspin-admin:
    learnt from Graph, kept on the tenant, and the renewal gets 3/3 tokens."""
    await renew(live, "tailspin", "admin@tailspin.com")
    r = await live.wait_state("tailspin", S.VALIDATED, S.FAILED)
    assert r.state is S.VALIDATED, r.failure_code
    async with live.rt.uow() as uow:
        tenant = await uow.tenants.get(live.tenants["tailspin"].key)
        errors = await uow.identity_errors.newest(live.tenants["tailspin"].key)
    assert tenant is not None and tenant.initial_domain == "tailspintoys.onmicrosoft.com"
    assert [e.code for e in errors] == []  # no AADSTS500011 on the way
    reply = await live.say("show tailspin")
    assert "tailspintoys-admin.sharepoint.com" in reply


async def test_global_administrator_without_wids_validates_without_warning(live: Live) -> None:
    """A default registration emits no wids: Graph's directory roles say Global Administrator."""
    await renew(live, "contoso", "admin@contoso.com")
    r = await live.wait_state("contoso", S.VALIDATED)
    assert r.warnings == [] and r.signed_in_is_global_admin is True


async def test_a_guest_is_refused_before_any_other_token(live: Live) -> None:
    """A B2B guest signs in with Contoso's tid: Graph's userType refuses it, a new code is offered,
    and its refresh token is never redeemed for Exchange or SharePoint nor stored."""
    await renew(live, "contoso", GUEST)
    r = await live.wait_for("contoso", lambda r: r.failure_code == "guest_account")
    assert r.state is S.INVITED and r.staged_tokens is None
    await live.wait_text("guest")
    refreshes = [p for m, p in live.sandbox.directory.requests if p.endswith("/token")]
    assert len(refreshes) <= 2  # the device-code polls only: no refresh-token grant
    assert await live.rt.core.service.identity._store.load(T_CONTOSO) is None  # type: ignore[attr-defined]


async def test_consent_only_for_the_signer_waits_for_the_organization(live: Live) -> None:
    """Fabrikam's Enterprise Application was deleted; its Global Administrator consents for
    themself only (the box starts unticked). The thread says so with the admin-consent link, the
    renewal is not validated, and it completes once consent is granted for the organization."""
    await live.say("fabrikam")
    status = await live.press(live.auth_url())
    code = str(status["user_code"])
    login = live.sandbox.login_url + "/devicelogin"
    async with live.http.post(login, data={"otc": code}) as resp:
        assert resp.status == 200
    async with live.http.post(f"{login}/signin", data={"otc": code, "upn": "it@fabrikam.com"}):
        pass
    async with live.http.post(f"{login}/consent", data={"otc": code, "decision": "accept"}):
        pass  # no "org": consent for this user only
    r = await live.wait_for("fabrikam", lambda r: r.failure_code == "consent_for_user_only")
    assert r.state is S.TOKENS_ACQUIRED
    note = await live.wait_text("adminconsent")
    assert "only for their own account" in note
    assert not any("validated for Fabrikam" in a for a in live.chat.announcements)
    live.sandbox.directory.tenants[T_FABRIKAM].app_present = True  # the GA granted it
    await live.say("validate fabrikam")
    r = await live.wait_state("fabrikam", S.VALIDATED)
    assert r.failure_code is None


async def test_role_not_readable_is_said_not_verified(live: Live) -> None:
    """A registration with User.Read only: Graph lists roles without ids, so the role is
    reported "not verified" with the permission to add, never as a failure."""
    live.sandbox.directory.registrations[DEFAULT_CLIENT_ID].graph_permissions = ("User.Read",)
    await renew(live, "contoso", "admin@contoso.com")
    r = await live.wait_state("contoso", S.VALIDATED)
    assert any("not verified" in w and "Directory.Read.All" in w for w in r.warnings)
    assert not any("is not a Global Administrator" in w for w in r.warnings)


async def test_public_client_flows_off_is_one_registration_alert(live: Live) -> None:
    """AADSTS7000218 is the app registration's fault: the renewal says what to change, one alert
    names it, and a tenant with working tokens is not marked expired by the monitor."""
    await renew(live, "contoso", "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)
    live.sandbox.directory.registrations[DEFAULT_CLIENT_ID].public_client_flows = False
    await renew(live, "tailspin", "admin@tailspin.com")
    r = await live.wait_state("tailspin", S.FAILED)
    assert r.failure_code == "AADSTS7000218"
    await live.wait_text("Allow public client flows")
    alerts = [a for a in live.chat.announcements if "registration needs fixing" in a]
    assert len(alerts) == 1
    await live.rt.core.monitor.sweep()
    async with live.rt.uow() as uow:
        contoso = await uow.tenants.get(live.tenants["contoso"].key)
    assert contoso is not None and contoso.auth_state is AuthState.HEALTHY
    assert len([a for a in live.chat.announcements if "registration needs fixing" in a]) == 1
