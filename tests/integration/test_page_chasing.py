"""The onboarding page's part in chasing, over real HTTP: "opened" and the automatic new code."""

from __future__ import annotations

from pathlib import Path

from core.model import RenewalState as S
from tests.integration.live import live_bot


async def test_the_page_script_marks_the_link_opened_not_the_page_fetch(tmp_path: Path) -> None:
    """A mail scanner fetching the link is not the customer; the page's status poll is."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        async with live.http.get(live.auth_url()) as resp:
            assert resp.status == 200
        assert (await live.renewal("contoso")).link_opened_at is None
        for _ in range(2):
            async with live.http.get(
                live.auth_url() + "/status", headers={"Accept": "application/json"}
            ) as resp:
                assert resp.status == 200
        opened = (await live.renewal("contoso")).link_opened_at
        assert opened is not None
        async with live.http.get(live.auth_url() + "/status") as resp:
            assert resp.status == 200
        assert (await live.renewal("contoso")).link_opened_at == opened  # recorded once
        history = await live.say("history contoso")
        assert "link_opened by the customer" in history


async def test_a_code_that_expires_on_the_open_page_is_replaced_without_a_click(
    tmp_path: Path,
) -> None:
    """The code runs out while the page is open: its script gets a fresh one (auto-code)."""
    async with live_bot(tmp_path, code_lifetime=2) as live:
        await live.say("contoso")
        url = live.auth_url()
        first = await live.press(url)
        assert (await live.press(url, "auto-code"))["user_code"] == first["user_code"]  # live
        await live.wait_for(
            "contoso", lambda r: r.state is S.INVITED and r.failure_code == "expired_token"
        )
        async with live.http.get(url + "/status") as resp:
            status = await resp.json()
        assert status["auto_new_code"] is True and status["user_code"] is None
        fresh = await live.press(url, "auto-code")
        assert fresh["state"] == "code_issued" and fresh["auto_new_code"] is False
        assert fresh["user_code"] and fresh["user_code"] != first["user_code"]
        assert (await live.renewal("contoso")).codes_lapsed == 1
