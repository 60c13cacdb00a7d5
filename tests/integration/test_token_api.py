"""The token API over HTTP: every answer a service can get, against real MSAL and the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapters.storage.tables import msal_errors, token_issues
from adapters.storage.tokens import SqlTokenGrants
from core.model import AuthState
from tests.integration.live import T_CONTOSO, T_FABRIKAM, Live, live_bot, until
from tests.integration.tokens import age_tokens, make_key, seed_tokens, stored_cache, token_posts

FAST_KEYS = {"tokens": {"key_cache_seconds": 0}}


async def audit_rows_if(rows: Any, n: int) -> list[Any] | None:
    """The audit rows once there are ``n`` (they are written shortly after the answers)."""
    found = await rows()
    return found if len(found) >= n else None


async def get(live: Live, path: str, key: str | None) -> tuple[int, dict[str, Any], Any]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with live.http.get(f"{live.base_url}/api/tokens/{path}", headers=headers) as resp:
        return resp.status, dict(await resp.json()), resp.headers


async def test_a_service_gets_the_cached_token_then_one_refresh_when_it_ages(
    tmp_path: Path,
) -> None:
    """200 with token, expiry, scopes, tenant id and account; the cache answers until the token
    has less than five minutes left, then one refresh, and the rotated refresh token is kept."""
    async with live_bot(tmp_path, more=FAST_KEYS) as live:
        seeded = await seed_tokens(live.rt, live.sandbox, T_CONTOSO)
        key = await make_key(live.rt)
        before = token_posts(live.sandbox, T_CONTOSO)
        status, body, headers = await get(live, "contoso/graph", key)
        assert status == 200, body
        assert body["access_token"] == seeded["access_token"]
        assert body["tenant_id"] == T_CONTOSO and body["account"] == "admin@contoso.com"
        assert body["scopes"] == ["https://graph.microsoft.com/.default"]
        assert 3000 < body["expires_in"] <= 3600 and body["token_type"] == "Bearer"
        assert headers["Cache-Control"] == "no-store"
        for ref in ("contoso.com", T_CONTOSO, "Contoso Ltd"):  # domain, id, name
            assert (await get(live, f"{ref}/graph", key))[0] == 200
        assert token_posts(live.sandbox, T_CONTOSO) == before  # all from the cache

        live.rt.tokens._tokens.clear()  # type: ignore[union-attr]  # another process: no memory
        await age_tokens(live.rt, T_CONTOSO, left=200)  # under five minutes: counts as expired
        status, body, _ = await get(live, "contoso/graph", key)
        assert status == 200 and body["access_token"] != seeded["access_token"]
        assert body["expires_in"] > 3000
        assert token_posts(live.sandbox, T_CONTOSO) == before + 1
        cache = await stored_cache(live.rt, T_CONTOSO)
        (stored_rt,) = [e["secret"] for e in cache["RefreshToken"].values()]
        assert stored_rt != seeded["refresh_token"]  # rotated, and the new one stored
        assert stored_rt in live.sandbox.directory.refresh_tokens

        async def audit_rows() -> list[Any]:
            async with live.rt.engine.connect() as conn:
                return list((await conn.execute(select(token_issues))).all())

        audit = await until(lambda: audit_rows_if(audit_rows, 5), timeout=10)
        assert len(audit) == 5 and {r.service for r in audit} == {"backup-jobs"}
        assert [r.refreshed for r in audit].count(True) == 1
        assert "access_token" not in token_issues.c and "token" not in token_issues.c


async def test_keys_are_checked_before_anything_else(tmp_path: Path) -> None:
    """401 without, with a wrong or a revoked key; 403 outside the key's tenants or sets (and
    a restricted key does not learn which tenants exist); 404 for an unknown tenant or set."""
    async with live_bot(tmp_path, more=FAST_KEYS) as live:
        await seed_tokens(live.rt, live.sandbox, T_CONTOSO)
        contoso = live.tenants["contoso"].key
        narrow = await make_key(live.rt, tenants=(contoso,), sets=("graph",), service="portal")
        wide = await make_key(live.rt, service="scripts")
        for key in (None, "", "rbk_nope", narrow[:-2] + "xx", "Basic " + narrow):
            status, body, headers = await get(live, "contoso/graph", key)
            assert status == 401 and body["error"] == "unauthorized", key
            assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (await get(live, "contoso/exchange", narrow))[0] == 403
        assert (await get(live, "fabrikam/graph", narrow))[0] == 403
        assert (await get(live, "no-such-tenant/graph", narrow))[0] == 403
        status, body, _ = await get(live, "no-such-tenant/graph", wide)
        assert status == 404 and body["error"] == "not_found"
        assert (await get(live, "contoso/no-such-set", wide))[0] == 404
        assert (await get(live, "contoso/graph", narrow))[0] == 200
        await SqlTokenGrants(live.rt.engine).revoke("portal", live.rt.core.service.clock.now())
        assert (await get(live, "contoso/graph", narrow))[0] == 401
        for body_text in (str(await get(live, "contoso/graph", narrow)),):
            assert narrow not in body_text  # the key is never echoed


async def test_a_key_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    """Rate limits are per key: the burst is allowed, then 429 with when to come back."""
    async with live_bot(tmp_path, more=FAST_KEYS) as live:
        await seed_tokens(live.rt, live.sandbox, T_CONTOSO)
        slow = await make_key(live.rt, rate=6)  # a burst of one, one more every 10 s
        other = await make_key(live.rt, service="other")
        assert (await get(live, "contoso/graph", slow))[0] == 200
        status, body, headers = await get(live, "contoso/graph", slow)
        assert status == 429 and body["error"] == "rate_limited"
        assert 1 <= int(headers["Retry-After"]) <= 11
        assert (await get(live, "contoso/graph", other))[0] == 200  # others are unaffected


async def test_a_tenant_that_needs_a_renewal_answers_409_and_is_recorded(tmp_path: Path) -> None:
    """A dead refresh token: 409 with the tenant's state and support's next step; the error is
    in msal_errors, the tenant turns expired and the alert channel hears it once. A tenant that
    never signed in: 409 too."""
    async with live_bot(tmp_path, more=FAST_KEYS) as live:
        await seed_tokens(live.rt, live.sandbox, T_CONTOSO)
        await age_tokens(live.rt, T_CONTOSO)
        live.sandbox.directory.tenants[T_CONTOSO].refresh_error = "700082"
        key = await make_key(live.rt)
        status, body, _ = await get(live, "contoso/graph", key)
        assert status == 409, body
        assert body["error"] == "renewal_needed" and body["state"] == "expired"
        assert body["code"] == "AADSTS700082" and "renew" in body["support"].lower()
        assert body["tenant"] == "contoso" and body["renewal"] is None
        again = await get(live, "contoso/graph", key)
        assert again[0] == 409  # remembered: Microsoft is not asked again at once
        assert token_posts(live.sandbox, T_CONTOSO) == 1
        async with live.rt.engine.connect() as conn:
            errors = (await conn.execute(select(msal_errors))).all()
        assert [(e.code, e.source) for e in errors] == [("AADSTS700082", "token-api")]
        async with live.rt.uow() as uow:
            tenant = await uow.tenants.get(live.tenants["contoso"].key)
        assert tenant is not None and tenant.auth_state is AuthState.EXPIRED
        await until(lambda: any("Contoso" in t for t in live.chat.announcements))
        assert sum("Contoso" in t for t in live.chat.announcements) == 1

        await live.say("fabrikam")  # a renewal is open: the answer says so
        status, body, _ = await get(live, "fabrikam/graph", key)
        assert status == 409 and body["code"] == "no_tokens" and body["renewal"] == "invited"


async def test_microsoft_unreachable_answers_503_with_retry_after(tmp_path: Path) -> None:
    """The identity service down: 503 and Retry-After, never 500; nothing marked expired."""
    async with live_bot(tmp_path, more=FAST_KEYS) as live:
        await seed_tokens(live.rt, live.sandbox, T_FABRIKAM)
        await age_tokens(live.rt, T_FABRIKAM)
        key = await make_key(live.rt)
        await live.sandbox.stop()
        status, body, headers = await get(live, "fabrikam/graph", key)
        assert status == 503 and body["error"] == "unavailable", body
        assert int(headers["Retry-After"]) > 0
        async with live.rt.uow() as uow:
            tenant = await uow.tenants.get(live.tenants["fabrikam"].key)
        assert tenant is not None and tenant.auth_state is not AuthState.EXPIRED
