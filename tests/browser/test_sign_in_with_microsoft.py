"""Sign in with Microsoft in real Chromium: from the Auth URL through the sandbox's authorize
pages and back to "All tokens acquired", and each error the customer can meet there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.model import RenewalState as S
from tests.integration.live import Live, live_bot

pytestmark = pytest.mark.browser
DONE = "All tokens acquired! You can close this page now."


async def to_microsoft(live: Live, browser: Any, slug: str) -> Any:
    """Open the Auth URL and press Sign in with Microsoft; returns the page, at the sandbox."""
    await live.say(slug)
    page = await (await browser.new_context()).new_page()
    await page.goto(live.auth_url())
    await page.get_by_text("Signing in on another device?").wait_for()
    await page.get_by_text("No one will ever ask you to type a code").wait_for()
    await page.get_by_role("button", name="Sign in with Microsoft").click()
    await page.get_by_text("Pick an account").wait_for()
    return page


async def test_customer_signs_in_with_microsoft_and_sees_all_tokens_acquired(
    tmp_path: Path, browser: Any, artifacts: Path
) -> None:
    """Northwind blocks the device code; two clicks in the browser renew it."""
    async with live_bot(tmp_path) as live:
        page = await to_microsoft(live, browser, "northwind")
        await page.get_by_role("button", name="Northwind Admin (admin@northwind.com)").click()
        await page.get_by_text(DONE).wait_for(timeout=30_000)
        assert "code=" not in page.url  # the spent code is out of the address bar
        await page.screenshot(path=str(artifacts / "sign-in-with-microsoft.png"), full_page=True)
        renewal = await live.wait_state("northwind", S.VALIDATED)
        assert renewal.signed_in_account == "admin@northwind.com"
        await live.wait_text("Validated: Northwind Traders has new tokens")


async def test_global_admin_consents_for_the_organization(tmp_path: Path, browser: Any) -> None:
    """The Enterprise Application is missing: the admin ticks the unticked organization box."""
    async with live_bot(tmp_path) as live:
        page = await to_microsoft(live, browser, "fabrikam")
        await page.get_by_role("button", name="Fabrikam IT (it@fabrikam.com)").click()
        org = page.locator("#org")
        assert not await org.is_checked()
        await org.check()
        await page.click("#accept")
        await page.get_by_text(DONE).wait_for(timeout=30_000)
        await live.wait_state("fabrikam", S.VALIDATED)


@pytest.mark.parametrize(
    ("slug", "account", "then", "says", "thread"),
    [
        (
            "fabrikam",
            "Fabrikam IT (it@fabrikam.com)",
            "#cancel",
            "You declined the permissions",
            "The customer declined to consent",
        ),
        (
            "contoso",
            "Northwind Admin (admin@northwind.com)",
            None,
            "belongs to a different organization",
            "The account belongs to another tenant",
        ),
        (
            "fabrikam",
            "Fabrikam User (user@fabrikam.com)",
            "#accept",
            "This needs a Global Administrator",
            "Administrator approval is needed",
        ),
    ],
    ids=["declined", "wrong-tenant", "not-global-admin"],
)
async def test_errors_sent_back_are_explained_and_offer_a_new_try(
    tmp_path: Path,
    browser: Any,
    slug: str,
    account: str,
    then: str | None,
    says: str,
    thread: str,
) -> None:
    """Declined consent, an account of another tenant, a non-admin: the page says what to do
    and offers Sign in with Microsoft again; the thread tells support."""
    async with live_bot(tmp_path) as live:
        page = await to_microsoft(live, browser, slug)
        await page.get_by_role("button", name=account).click()
        if then:
            await page.click(then)
        await page.get_by_text(says).wait_for(timeout=30_000)
        assert await page.get_by_role("button", name="Sign in with Microsoft").is_visible()
        assert (await live.renewal(slug)).state is S.INVITED
        await live.wait_text(thread)


async def test_conditional_access_in_the_browser_ends_with_a_plain_page(
    tmp_path: Path, browser: Any
) -> None:
    """A policy that blocks the browser too (a managed device): the customer reads why."""
    async with live_bot(tmp_path) as live:
        tenant = live.sandbox.directory.tenants[live.tenants["contoso"].tenant_id]
        tenant.browser_conditional_access = "530033"
        page = await to_microsoft(live, browser, "contoso")
        await page.get_by_role("button", name="Contoso Admin (admin@contoso.com)").click()
        await page.get_by_text("It requires a managed device").wait_for(timeout=30_000)
        await live.wait_state("contoso", S.FAILED)
        await live.wait_text("Conditional Access requires a compliant device")


async def test_device_code_fallback_still_works_on_the_same_page(
    tmp_path: Path, browser: Any
) -> None:
    """ "Signing in on another device?": Start authentication still shows a code."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        page = await browser.new_page()
        await page.goto(live.auth_url())
        await page.get_by_role("button", name="Start authentication").click()
        await page.locator("#user-code").wait_for(state="visible")
        code = (await page.locator("#user-code").text_content() or "").strip()
        await live.sign_in(code, "admin@contoso.com")
        await page.get_by_text(DONE).wait_for(timeout=30_000)
