"""Sign in with Microsoft over real HTTP: real MSAL against the sandbox's authorize and token
endpoints, the callback route, and the attacks on it (state, replay, CSRF, a missing cookie)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from yarl import URL

from bot.demo import browser_sign_in
from bot.sandbox.directory import DEFAULT_CLIENT_ID
from core.model import RenewalState as S
from tests.integration.live import T_CONTOSO, Live, live_bot


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1, as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def open_link(live: Live, slug: str) -> str:
    await live.say(slug)
    return live.auth_url()


async def test_northwind_renews_through_the_browser(tmp_path: Path) -> None:
    """Conditional Access blocks northwind's device code; Sign in with Microsoft validates it,
    and the code is redeemed with PKCE at the tenant's own token endpoint."""
    async with live_bot(tmp_path) as live, browser() as http:
        auth_url = await open_link(live, "northwind")
        back = await browser_sign_in(http, auth_url, "admin@northwind.com")
        assert back.startswith(f"{live.base_url}/onboard/callback?")
        async with http.get(back, allow_redirects=False) as resp:
            assert resp.status == 200 and "All tokens acquired!" in await resp.text()
            assert 'renewbot_signin=""' in resp.headers["Set-Cookie"]  # the binding is spent
        renewal = await live.wait_state("northwind", S.VALIDATED)
        assert renewal.signed_in_account == "admin@northwind.com"
        await live.wait_text("Signed in as admin@northwind.com")
        tid = live.tenants["northwind"].tenant_id
        assert ("POST", f"/{tid}/oauth2/v2.0/token") in live.sandbox.directory.requests
        async with http.get(auth_url) as resp:
            assert resp.status == 410  # the link is used up


async def test_device_code_blocked_then_the_browser_renews(tmp_path: Path) -> None:
    """The customer tries the device code first; Conditional Access blocks it (AADSTS53003).
    The page says to use Sign in with Microsoft, support hears why, and the browser renews."""
    async with live_bot(tmp_path) as live, browser() as http:
        auth_url = await open_link(live, "northwind")
        status = await live.press(auth_url)
        await live.sign_in(str(status["user_code"]), "admin@northwind.com")
        renewal = await live.wait_for("northwind", lambda r: r.failure_code == "AADSTS53003")
        assert renewal.state is S.INVITED
        await live.wait_text("Conditional Access blocked the sign-in")
        async with http.get(f"{auth_url}/status") as resp:
            page = await resp.json()
        assert "Use 'Sign in with Microsoft'" in page["message"] and page["can_browser"]
        back = await browser_sign_in(http, auth_url, "admin@northwind.com")
        async with http.get(back) as resp:
            assert resp.status == 200
        await live.wait_state("northwind", S.VALIDATED)


async def test_replayed_callback_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """The same return opened twice: the second is refused, nothing is redeemed again."""
    async with live_bot(tmp_path) as live, browser() as http:
        auth_url = await open_link(live, "contoso")
        back = await browser_sign_in(http, auth_url, "admin@contoso.com")
        cookies = http.cookie_jar.filter_cookies(URL(back))
        async with http.get(back, allow_redirects=False) as resp:
            assert resp.status == 200
        await live.wait_state("contoso", S.VALIDATED)
        grants = len(live.sandbox.directory.redeemed_codes)
        http.cookie_jar.update_cookies(cookies, URL(back))  # an attacker's copy of the cookie
        async with http.get(back) as resp:
            assert resp.status == 410  # the link is used: "This link has been used"
        assert len(live.sandbox.directory.redeemed_codes) == grants
        assert (await live.renewal("contoso")).state is S.VALIDATED


async def test_return_while_signing_in_cannot_be_replayed(tmp_path: Path) -> None:
    """A return replayed before validation ends finds no pending sign-in: 409, no new grant."""
    async with live_bot(tmp_path) as live, browser() as http:
        auth_url = await open_link(live, "fabrikam")  # consent: the Enterprise App is missing
        live.sandbox.directory.tenants[live.tenants["fabrikam"].tenant_id].graph_down = True
        back = await browser_sign_in(http, auth_url, "it@fabrikam.com")
        cookies = http.cookie_jar.filter_cookies(URL(back))
        async with http.get(back, allow_redirects=False) as resp:
            assert resp.status == 200
        await live.wait_state("fabrikam", S.TOKENS_ACQUIRED)  # Graph down: waits there
        http.cookie_jar.update_cookies(cookies, URL(back))
        async with http.get(back) as resp:
            assert resp.status == 409
            assert "already used" in await resp.text()
        assert (await live.renewal("fabrikam")).state is S.TOKENS_ACQUIRED


async def test_state_of_another_invitation_is_refused(tmp_path: Path) -> None:
    """Invitation A's browser returning with invitation B's state: 400, A keeps its pending
    sign-in and completes with its own return afterwards."""
    async with live_bot(tmp_path) as live, browser() as a, browser() as b:
        contoso = await open_link(live, "contoso")
        tailspin = await open_link(live, "tailspin")
        back_a = await browser_sign_in(a, contoso, "admin@contoso.com")
        back_b = await browser_sign_in(b, tailspin, "admin@tailspin.com")
        async with a.get(back_b) as resp:
            assert resp.status == 400
            assert "does not belong to this sign-in" in await resp.text()
        assert (await live.renewal("contoso")).state is S.INVITED
        async with a.get(back_a) as resp:
            assert resp.status == 200
            assert "All tokens acquired! You can close this page now." in await resp.text()
        await live.wait_state("contoso", S.VALIDATED)


async def test_return_without_the_browser_cookie_is_refused(tmp_path: Path) -> None:
    """A return opened in another browser (or forged) has no binding cookie: 400, no change."""
    async with live_bot(tmp_path) as live, browser() as http, browser() as other:
        auth_url = await open_link(live, "contoso")
        back = await browser_sign_in(http, auth_url, "admin@contoso.com")
        async with other.get(back) as resp:
            assert resp.status == 400
            assert "did not start this sign-in" in await resp.text()
        renewal = await live.renewal("contoso")
        assert renewal.state is S.INVITED and renewal.browser_sign_in is not None


async def test_sign_in_post_needs_csrf_and_our_origin(tmp_path: Path) -> None:
    """The Sign in with Microsoft POST is CSRF-protected like the page's other actions."""
    async with live_bot(tmp_path) as live, browser() as http:
        auth_url = await open_link(live, "contoso")
        async with http.post(f"{auth_url}/sign-in", data={"csrf": "0" * 64}) as resp:
            assert resp.status == 403
        csrf = await live.csrf(auth_url)
        async with http.post(
            f"{auth_url}/sign-in", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
        ) as resp:
            assert resp.status == 403
        assert (await live.renewal("contoso")).browser_sign_in is None


async def test_declined_at_microsoft_is_explained_on_the_page_and_in_the_thread(
    tmp_path: Path,
) -> None:
    """An error sent back through the redirect (AADSTS65004) reaches the customer and support."""
    async with live_bot(tmp_path) as live, browser() as http:
        auth_url = await open_link(live, "fabrikam")
        csrf = await live.csrf(auth_url)
        async with http.post(
            f"{auth_url}/sign-in", data={"csrf": csrf}, headers={"Accept": "application/json"}
        ) as resp:
            authorize = (await resp.json())["authorize_url"]
        async with http.get(authorize) as resp:
            txn = re.search(r"name=txn value='([^']+)'", await resp.text())
            target = str(resp.url).split("?")[0] + "/signin"
        assert txn
        async with http.post(target, data={"txn": txn.group(1), "decision": "cancel"}) as resp:
            assert resp.status == 200  # followed back to the page
            assert str(resp.url) == auth_url
        async with http.get(f"{auth_url}/status") as resp:
            status = await resp.json()
        assert "You declined the permissions" in status["message"]
        assert status["can_browser"] and status["state"] == "invited"
        await live.wait_text("The customer declined to consent")


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def _sandbox_code(http: aiohttp.ClientSession, live: Live, challenge: str) -> str:
    redirect = "http://127.0.0.1:1/cb"
    query = urlencode(
        {
            "client_id": DEFAULT_CLIENT_ID,
            "response_type": "code",
            "redirect_uri": redirect,
            "scope": "openid offline_access https://graph.microsoft.com/.default",
            "state": "s1",
            "nonce": "n1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    async with http.get(f"{live.sandbox.login_url}/{T_CONTOSO}/oauth2/v2.0/authorize?{query}") as r:
        txn = re.search(r"name=txn value='([^']+)'", await r.text())
    assert txn
    async with http.post(
        f"{live.sandbox.login_url}/{T_CONTOSO}/oauth2/v2.0/authorize/signin",
        data={"txn": txn.group(1), "upn": "admin@contoso.com"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302
        back = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert back["state"] == ["s1"]
    return back["code"][0]


async def _redeem(
    http: aiohttp.ClientSession, live: Live, code: str, verifier: str
) -> dict[str, object]:
    form = {
        "client_id": DEFAULT_CLIENT_ID,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:1/cb",
        "code_verifier": verifier,
    }
    url = f"{live.sandbox.authority_host}/{T_CONTOSO}/oauth2/v2.0/token"
    async with http.post(url, data=form, ssl=False) as resp:
        return dict(await resp.json())


async def test_sandbox_checks_pkce_and_uses_codes_once(tmp_path: Path) -> None:
    """The sandbox's token endpoint plays Entra: a wrong verifier is refused (AADSTS501481)
    and burns the code (AADSTS54005 after), an expired code is AADSTS70008."""
    async with live_bot(tmp_path) as live, browser() as http:
        verifier, challenge = _pkce()
        code = await _sandbox_code(http, live, challenge)
        wrong = await _redeem(http, live, code, verifier + "x")
        assert wrong["error"] == "invalid_grant" and wrong["error_codes"] == [501481]
        again = await _redeem(http, live, code, verifier)
        assert again["error_codes"] == [54005]
        code = await _sandbox_code(http, live, challenge)
        good = await _redeem(http, live, code, verifier)
        assert "access_token" in good and "refresh_token" in good
        live.sandbox.directory.tenants[T_CONTOSO].auth_code_lifetime = 0
        late = await _redeem(http, live, await _sandbox_code(http, live, challenge), verifier)
        assert late["error_codes"] == [70008]


async def test_unregistered_redirect_uri_is_shown_not_redirected(tmp_path: Path) -> None:
    """A redirect URI the registration does not list: Entra's AADSTS50011 page, no redirect."""
    async with live_bot(tmp_path) as live, browser() as http:
        registration = live.sandbox.directory.registrations[DEFAULT_CLIENT_ID]
        registration.redirect_uris = ("https://renewbot.example/onboard/callback",)
        auth_url = await open_link(live, "contoso")
        csrf = await live.csrf(auth_url)
        async with http.post(
            f"{auth_url}/sign-in", data={"csrf": csrf}, headers={"Accept": "application/json"}
        ) as resp:
            authorize = (await resp.json())["authorize_url"]
        async with http.get(authorize, allow_redirects=False) as resp:
            assert resp.status == 400 and "AADSTS50011" in await resp.text()


@pytest.mark.parametrize("ways", ["device_code", "browser"])
async def test_the_setting_chooses_the_ways_on_the_page(tmp_path: Path, ways: str) -> None:
    """SIGNIN__WAYS: the page offers the browser, the device code, or both."""
    async with live_bot(tmp_path, signin={"ways": ways}) as live, browser() as http:
        auth_url = await open_link(live, "contoso")
        async with http.get(auth_url) as resp:
            html = await resp.text()
        start_form = re.search(r"id=start-form [^>]*class=box( hidden)?>", html)
        assert start_form is not None
        assert ("id=sign-in" in html) is (ways == "browser")
        assert (start_form.group(1) is not None) is (ways == "browser")
        csrf = await live.csrf(auth_url)
        async with http.post(
            f"{auth_url}/sign-in", data={"csrf": csrf}, headers={"Accept": "application/json"}
        ) as resp:
            assert ("authorize_url" in await resp.json()) is (ways == "browser")
