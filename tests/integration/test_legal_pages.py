"""The Teams package's privacy and terms links open pages that `renewbot serve` serves."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from bot import manifests
from tests.integration.live import live_bot

APP_ID = "1f2e3d4c-5b6a-4789-8abc-def012345678"


async def test_teams_privacy_and_terms_urls_open_pages(tmp_path: Path) -> None:
    """Before: both URLs were the bare public URL (a 404 there). Now each path of the package's
    privacyUrl and termsOfUseUrl answers 200 with a plain HTML page naming the operator
    (escaped), under the same security headers as every page."""
    doc = manifests.teams_manifest(APP_ID, "https://bot.example.com/")
    links = {doc["developer"][k] for k in ("privacyUrl", "termsOfUseUrl")}
    assert links == {"https://bot.example.com/privacy", "https://bot.example.com/terms"}
    signin = {"msp_name": "Fabrikam <IT>", "app_name": "Fabrikam renewals"}
    async with live_bot(tmp_path, signin=signin) as live:
        for link in sorted(links):
            async with live.http.get(live.base_url + urlsplit(link).path) as resp:
                body = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html"
                headers = resp.headers
            assert "Fabrikam &lt;IT&gt;" in body and "<IT>" not in body
            assert "<script" not in body
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
        async with live.http.get(live.base_url + "/privacy") as resp:
            assert "Privacy statement: Fabrikam renewals" in await resp.text()
        async with live.http.post(live.base_url + "/terms") as resp:
            assert resp.status == 405
