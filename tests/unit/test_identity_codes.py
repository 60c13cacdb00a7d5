"""The one table of identity error codes: every code the product or the sandbox names is in it,
and app-wide codes blame the registration, not the tenants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core import identity_codes
from core.errors import IdentityProviderError
from core.identity_codes import CODES, Scope
from core.model import AuthState
from tests.unit.conftest import CONTOSO, FABRIKAM, World

ROOT = Path(__file__).resolve().parents[2]
# At least these, as issue 12 lists them (Microsoft's "error codes" reference).
REQUIRED = [
    "AADSTS50020",
    "AADSTS50034",
    "AADSTS50059",
    "AADSTS50076",
    "AADSTS50079",
    "AADSTS50105",
    "AADSTS50173",
    "AADSTS53003",
    "AADSTS530033",
    "AADSTS500011",
    "AADSTS65001",
    "AADSTS70043",
    "AADSTS700016",
    "AADSTS700082",
    "AADSTS700084",
    "AADSTS7000218",
    "AADSTS90002",
    "invalid_client",
    "unauthorized_client",
]


def named_codes() -> set[str]:
    """Every identity code the code base or the sandbox names."""
    found: set[str] = set()
    for folder in ("core", "adapters", "bot"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text()
            found |= {f"AADSTS{n}" for n in re.findall(r"AADSTS(\d+)", source)}
            # our own failure codes: _fail(renewal, "code") and IdentityProviderError("code", ...)
            found |= set(re.findall(r"_fail\(\s*\w+,\s*\"([a-z_]+)\"", source))
            found |= set(re.findall(r"IdentityProviderError\(\s*\"([a-z_]+)\"", source))
            if path.name == "validation.py":  # its checks return their failure code
                found |= set(re.findall(r"return \"([a-z_]+)\"", source))
            if "sandbox" in path.parts:  # the sandbox names Entra's codes by number
                found |= {f"AADSTS{n}" for n in re.findall(r"\"(\d{5,7})\"", source)}
    return found


def test_every_named_code_has_an_entry() -> None:
    """A code the product can meet but cannot explain would read "Sign-in failed"."""
    missing = sorted((named_codes() | set(REQUIRED)) - set(CODES))
    assert missing == []


def test_the_scan_finds_codes() -> None:
    """The check above would be empty without the scan finding what the sources name."""
    assert {"AADSTS65001", "wrong_tenant", "not_global_admin"} <= named_codes()


@pytest.mark.parametrize("code", ["AADSTS7000218", "AADSTS700016", "invalid_client"])
def test_registration_codes_concern_the_app(code: str) -> None:
    entry = identity_codes.lookup(code)
    assert entry.scope is Scope.APP and not entry.kills_refresh_token


def test_every_entry_has_words_for_both_readers() -> None:
    for code, entry in CODES.items():
        assert entry.title and entry.support and entry.customer, code


async def test_wrong_client_id_is_one_registration_alert_not_expired_tenants(
    world: World,
) -> None:
    """AADSTS700016 for every tenant: no tenant expires, one alert names the registration."""
    for slug in ("contoso", "fabrikam"):
        world.identity.refresh_errors[slug] = IdentityProviderError(
            "AADSTS700016", "unauthorized_client"
        )
    await world.core.monitor.sweep()
    for key in (CONTOSO.key, FABRIKAM.key):
        assert world.store.tenants[key].auth_state is not AuthState.EXPIRED
    (alert,) = world.chat.announced
    assert "app registration" in alert.text and "RENEWBOT_IDENTITY__CLIENT_ID" in alert.text
    assert alert.actions == ()  # no Renew button that cannot help
    world.clock.advance(minutes=30)
    await world.core.monitor.sweep()
    assert len(world.chat.announced) == 1  # said once, not per sweep
