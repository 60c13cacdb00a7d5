"""Token health over real HTTP and real MSAL: the monitor, the MSAL error intake, /metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.model import AuthState
from core.model import RenewalState as S
from tests.integration.live import T_CONTOSO, Live, live_bot

KEY = "intake-test-key-not-a-secret"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_bot(tmp_path, monitor={"enabled": False, "api_keys": KEY}) as bot:
        yield bot


async def report(
    live: Live, body: Any, key: str | None = KEY, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body).encode()
    async with live.http.post(
        live.base_url + "/api/msal-errors", data=data, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def renew(live: Live, slug: str = "contoso", upn: str = "admin@contoso.com") -> None:
    await live.say(slug)
    status = await live.press(live.auth_url())
    await live.sign_in(str(status["user_code"]), upn)
    await live.wait_state(slug, S.VALIDATED)


async def tenant_state(live: Live, slug: str) -> AuthState:
    async with live.rt.uow() as uow:
        tenant = await uow.tenants.find_exact(slug)
    assert tenant is not None
    return tenant.auth_state


async def test_monitor_with_real_msal_finds_a_dead_refresh_token(live: Live) -> None:
    """After a renewal the sweep refreshes fine; once the IdP says 700082 the tenant expires."""
    await renew(live)
    await live.rt.core.monitor.sweep()
    assert await tenant_state(live, "contoso") is AuthState.HEALTHY
    paths = [p for m, p in live.sandbox.directory.requests if m == "POST"]
    assert paths[-1] == f"/{T_CONTOSO}/oauth2/v2.0/token"  # a real refresh-token grant
    live.sandbox.directory.tenants[T_CONTOSO].refresh_error = "700082"
    async with live.rt.engine.begin() as conn:  # make the next check due now
        await conn.execute(text("UPDATE tenants SET next_check_at = NULL"))
    await live.rt.core.monitor.sweep()
    assert await tenant_state(live, "contoso") is AuthState.EXPIRED
    alert = await live.wait_text("Tokens of Contoso Ltd (contoso) have expired")
    assert "90 days without use" in alert
    assert await tenant_state(live, "tailspin") is AuthState.EXPIRED  # never signed in


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_intake_refuses_without_the_key(live: Live, key: str | None) -> None:
    """No key or a wrong key: 401, and nothing is stored."""
    status, body = await report(live, {"id": "1", "tenant": "contoso", "error": "x"}, key=key)
    assert status == 401 and "API key" in body["error"]
    assert KEY not in json.dumps(body)


async def test_intake_bad_bodies(live: Live) -> None:
    """Bad JSON 400, schema problems 400 listed, too large 413."""
    assert (await report(live, None, raw=b"{not json"))[0] == 400
    status, body = await report(live, {"tenant": "contoso", "error": 5, "extra": 1})
    assert status == 400
    assert set(body["problems"]) == {
        "unknown field 'extra'",
        "'id' is required",
        "'error' must be a string",
    }
    status, _ = await report(
        live, {"id": "1", "tenant": "contoso", "error": "x", "error_description": "y" * 20_000}
    )
    assert status == 413


async def test_intake_records_once_and_expires_on_dead_token(live: Live) -> None:
    """A dead-token report marks the tenant expired and alerts; a resend is a duplicate."""
    report_body = {
        "id": "evt-1",
        "tenant": "contoso.com",
        "error": "invalid_grant",
        "error_description": "AADSTS50173: The provided grant has expired",
        "error_codes": [50173],
        "correlation_id": "c-9",
        "source": "backup",
    }
    status, body = await report(live, report_body)
    assert status == 201 and body == {"recorded": True, "tenant_expired": True}
    assert await tenant_state(live, "contoso") is AuthState.EXPIRED
    await live.wait_text("Tokens of Contoso Ltd (contoso) have expired")
    status, body = await report(live, report_body)
    assert status == 200 and body["duplicate"] is True
    errors = await live.say("errors contoso")
    assert "AADSTS50173: The grant was revoked" in errors
    assert len(live.chat.announcements) == 1


async def test_intake_unknown_tenant_is_404_and_recorded(live: Live) -> None:
    """A report for a tenant we do not know is kept for the record and answered 404."""
    status, body = await report(
        live, {"id": "evt-2", "tenant": "nobody.example", "error": "invalid_grant"}
    )
    assert status == 404 and body["recorded"] is True
    async with live.rt.engine.connect() as conn:
        n = (
            await conn.execute(text("SELECT count(*) FROM msal_errors WHERE tenant_key IS NULL"))
        ).scalar()
    assert n == 1


async def test_metrics_in_prometheus_format(live: Live) -> None:
    """/metrics reports renewals by state, validation time, tenant health and monitor counters."""
    await renew(live)
    await live.rt.core.monitor.sweep()
    async with live.http.get(live.base_url + "/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        body = await resp.text()
    assert 'renewbot_renewals{state="validated"} 1' in body
    assert "renewbot_renewal_validation_seconds_count 1" in body
    assert 'renewbot_renewal_validation_seconds_bucket{le="604800"} 1' in body
    assert 'renewbot_tenants{auth_state="healthy"} 1' in body
    assert 'renewbot_tenants{auth_state="expired"} 3' in body  # never signed in
    assert "renewbot_monitor_checks_total 4" in body
    assert "# TYPE renewbot_alerts_total counter" in body
