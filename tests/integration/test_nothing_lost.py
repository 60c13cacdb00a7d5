"""A refused sign-in keeps the tenant's working tokens; concurrent Starts make one device flow.

Real MSAL against the sandbox identity provider, the real web server and storage.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import text

from core.errors import IdentityProviderError
from core.model import RenewalState as S
from tests.integration.live import T_CONTOSO, Live, live_bot


async def stored_cache(live: Live) -> bytes:
    async with live.rt.engine.connect() as conn:
        row = await conn.execute(
            text("SELECT ciphertext FROM token_caches WHERE tenant_id = :t"), {"t": T_CONTOSO}
        )
        return bytes(row.scalar_one())


async def renew(live: Live, upn: str) -> None:
    await live.say("contoso")
    status = await live.press(live.auth_url())
    await live.sign_in(str(status["user_code"]), upn)


async def test_refused_sign_in_keeps_the_tenants_working_tokens(tmp_path: Path) -> None:
    """A helpdesk user without the role signs in where consent was needed: the renewal fails,
    the stored tokens are byte for byte what they were, and the health check still refreshes
    the real admin's token (so the monitor's "healthy" is true)."""
    async with live_bot(tmp_path) as live:
        await renew(live, "admin@contoso.com")
        await live.wait_state("contoso", S.VALIDATED)
        before = await stored_cache(live)
        tenant = live.tenants["contoso"]
        # The platform reported that the Enterprise Application lacks consent.
        await live.rt.core.service.record_error(
            tenant, IdentityProviderError("AADSTS65001", "invalid_grant", "consent missing")
        )
        await renew(live, "helpdesk@contoso.com")
        failed = await live.wait_for("contoso", lambda r: r.state is S.FAILED)
        assert failed.failure_code == "not_global_admin"
        assert await stored_cache(live) == before
        refreshed = len(live.sandbox.directory.refresh_tokens)
        await live.rt.core.service.identity.refresh(tenant)
        assert len(live.sandbox.directory.refresh_tokens) > refreshed
        cache = await live.rt.core.service.identity._store.load(T_CONTOSO)  # type: ignore[attr-defined]
        accounts = json.loads(cache or "{}").get("Account", {}).values()
        assert [a["username"] for a in accounts] == ["admin@contoso.com"]


async def test_concurrent_starts_make_one_device_flow(tmp_path: Path) -> None:
    """Two tabs, a double submit and more, all at once: one device code at Microsoft, and the
    code every page then shows is the one being polled."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        url = live.auth_url()
        await asyncio.gather(*(live.press(url) for _ in range(8)))
        paths = [p for _, p in live.sandbox.directory.requests]
        assert paths.count(f"/{T_CONTOSO}/oauth2/v2.0/devicecode") == 1
        renewal = await live.wait_state("contoso", S.CODE_ISSUED)
        assert renewal.device_code is not None
        status = await live.press(url)
        assert status["user_code"] == renewal.device_code.user_code
        await live.sign_in(str(status["user_code"]), "admin@contoso.com")
        await live.wait_state("contoso", S.VALIDATED)
