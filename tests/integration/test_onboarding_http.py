"""The onboarding page over real HTTP: bad links, CSRF, headers, and nothing half-written."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from core.model import RenewalState as S
from tests.integration.live import Live, live_bot


@pytest.fixture
async def live(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with live_bot(tmp_path) as bot:
        yield bot


async def test_page_shows_tenant_admin_and_start(live: Live) -> None:
    """The customer sees whose sign-in this is, the editable admin username and Start."""
    await live.say("contoso")
    async with live.http.get(live.auth_url()) as resp:
        body = await resp.text()
        assert resp.status == 200
        headers = resp.headers
    assert "Contoso Ltd" in body and "value='admin@contoso.com'" in body
    assert "Start authentication" in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert (
        "<script src" not in body
        and "http://" not in body.split("<script")[0].split("data-base")[0]
    )


@pytest.mark.parametrize(
    "path",
    ["/onboard/short", "/onboard/" + "A" * 43, "/onboard/%00%2e%2e", "/onboard/" + "x" * 5000],
)
async def test_unknown_or_tampered_links_are_404_pages(live: Live, path: str) -> None:
    """A wrong link gets a clear page, never a stack trace."""
    async with live.http.get(live.base_url + path) as resp:
        body = await resp.text()
    assert resp.status in {404, 414}
    assert "Traceback" not in body
    if resp.status == 404:
        assert "This link is not valid" in body


async def test_tampered_token_is_404(live: Live) -> None:
    """Changing one character of a real Auth URL does not find the renewal."""
    await live.say("contoso")
    url = live.auth_url()
    async with live.http.get(url[:-1] + ("A" if url[-1] != "A" else "B")) as resp:
        assert resp.status == 404


async def test_get_never_changes_state(live: Live) -> None:
    """Opening and reloading the page (or a link preview bot) starts nothing."""
    await live.say("contoso")
    for _ in range(3):
        async with live.http.get(live.auth_url()) as resp:
            assert resp.status == 200
        async with live.http.get(live.auth_url() + "/status") as resp:
            assert (await resp.json())["state"] == "invited"
    assert (await live.renewal("contoso")).state is S.INVITED
    assert not any(p.endswith("/devicecode") for _, p in live.sandbox.directory.requests)


@pytest.mark.parametrize("form", [{}, {"csrf": ""}, {"csrf": "0" * 64}])
async def test_post_without_valid_csrf_is_refused(live: Live, form: dict[str, str]) -> None:
    """A forged POST cannot start a sign-in."""
    await live.say("contoso")
    async with live.http.post(live.auth_url() + "/start", data=form) as resp:
        assert resp.status == 403
        assert "Reload the page" in await resp.text()
    assert (await live.renewal("contoso")).state is S.INVITED


async def test_cross_origin_post_is_refused(live: Live) -> None:
    """Even with the right token, a POST from another site is refused."""
    await live.say("contoso")
    url = live.auth_url()
    csrf = await live.csrf(url)
    async with live.http.post(
        url + "/start", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403
    assert (await live.renewal("contoso")).state is S.INVITED


async def test_cancelled_link_is_410(live: Live) -> None:
    """After support cancels, the customer learns the link was cancelled."""
    await live.say("contoso")
    url = live.auth_url()
    await live.say("cancel contoso")
    async with live.http.get(url) as resp:
        assert resp.status == 410
        assert "cancelled" in await resp.text()


async def test_used_link_is_410_after_validation(live: Live) -> None:
    """A validated renewal's link cannot start another sign-in; its status still says done."""
    await live.say("contoso")
    url = live.auth_url()
    status = await live.press(url)
    await live.sign_in(str(status["user_code"]), "admin@contoso.com")
    await live.wait_state("contoso", S.VALIDATED)
    async with live.http.get(url) as resp:
        assert resp.status == 410
        assert "has been used" in await resp.text()
    async with live.http.get(url + "/status") as resp:
        done = await resp.json()
    assert done["done"] and done["message"] == "All tokens acquired! You can close this page now."
    assert done["user_code"] is None


async def test_expired_link_is_410(live: Live) -> None:
    """Invitations run out (7 days by default); the page says so."""
    await live.say("contoso")
    url = live.auth_url()
    from datetime import timedelta

    r = await live.renewal("contoso")
    r.invitation_expires_at = r.created_at - timedelta(seconds=1)
    async with live.rt.uow() as uow:
        await uow.renewals.save(r)
        await uow.commit()
    async with live.http.get(url) as resp:
        assert resp.status == 410
        assert "expired" in await resp.text()


async def test_double_start_issues_one_code(live: Live) -> None:
    """A double click on Start gives the same code, one device flow."""
    await live.say("contoso")
    first = await live.press(live.auth_url())
    second = await live.press(live.auth_url())
    assert first["user_code"] == second["user_code"]
    devicecodes = [p for _, p in live.sandbox.directory.requests if p.endswith("/devicecode")]
    assert len(devicecodes) == 1


async def test_health_and_readiness(live: Live) -> None:
    """Operators can probe liveness and readiness."""
    async with live.http.get(live.base_url + "/healthz") as resp:
        assert resp.status == 200
    async with live.http.get(live.base_url + "/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"


async def test_database_gone_is_503_not_500(tmp_path: Path) -> None:
    """With the database gone, readiness says so and the page answers without a traceback."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        url = live.auth_url()
        await live.rt.engine.dispose()
        (tmp_path / "bot.db").unlink()
        (tmp_path / "bot.db").mkdir()  # the path now cannot be opened as a database
        async with live.http.get(live.base_url + "/readyz") as resp:
            assert resp.status == 503
        async with live.http.get(url) as resp:
            assert resp.status == 503
            assert "try again" in await resp.text()


async def test_access_log_never_contains_the_auth_token(live: Live) -> None:
    """The Auth URL is a secret: the access log shows the path redacted."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("renewbot.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s %(path)s"))
    try:
        await live.say("contoso")
        url = live.auth_url()
        async with live.http.get(url) as resp:
            assert resp.status == 200
    finally:
        logger.removeHandler(handler)
    token = url.rsplit("/", 1)[1]
    assert "/onboard/<redacted>" in stream.getvalue()
    assert token not in stream.getvalue()
