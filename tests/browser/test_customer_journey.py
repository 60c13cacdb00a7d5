"""The customer's journey in a real browser: Auth URL, Start, sandbox sign-in, done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.model import RenewalState as S
from tests.integration.live import live_bot

pytestmark = pytest.mark.browser
DONE = "All tokens acquired! You can close this page now."


async def test_customer_signs_in_and_sees_all_tokens_acquired(
    tmp_path: Path, browser: Any, artifacts: Path
) -> None:
    """From the Auth URL to the closing sentence, as the customer clicks through it."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(live.auth_url())
        await page.get_by_role("button", name="Start authentication").click()
        code_el = page.locator("#user-code")
        await code_el.wait_for(state="visible")
        code = (await code_el.text_content() or "").strip()
        assert code
        await live.wait_text(code)  # the same code in the thread (delivered through the outbox)
        async with context.expect_page() as popup:
            await page.locator("#verify-link").click()
        login = await popup.value
        await login.fill("#otc", code)
        await login.click("#next")
        await login.get_by_role("button", name="Contoso Admin (admin@contoso.com)").click()
        await login.locator("#done").wait_for()
        await page.get_by_text(DONE).wait_for(timeout=30_000)
        await page.screenshot(path=str(artifacts / "customer-journey.png"), full_page=True)
        await live.wait_state("contoso", S.VALIDATED)
        assert await page.locator("#start-form").is_hidden()
        await context.close()


async def test_declined_sign_in_offers_new_code_on_the_page(tmp_path: Path, browser: Any) -> None:
    """After a decline the page explains and its New code button brings a fresh code."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        page = await browser.new_page()
        await page.goto(live.auth_url())
        await page.click("#start")
        await page.locator("#user-code").wait_for(state="visible")
        first = await page.locator("#user-code").text_content()
        await live.decline(str(first))
        await page.get_by_text("You declined the sign-in").wait_for(timeout=30_000)
        await page.click("#new-code")
        await page.locator("#user-code").wait_for(state="visible")
        await page.wait_for_function(
            "first => document.getElementById('user-code').textContent !== first", arg=first
        )
        assert await page.locator("#user-code").text_content() != first
