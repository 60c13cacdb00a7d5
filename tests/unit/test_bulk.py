"""`renew all-expired`: one invitation per expired tenant, one summary thread kept up to date."""

from __future__ import annotations

import copy

import pytest

from core import commands
from core.errors import CommandSyntaxError
from core.model import AuthState, RenewalState, Tenant
from tests.unit.conftest import CONTOSO, FABRIKAM, HERE, SUPPORT, World

NORTHWIND = Tenant(
    "k-northwind",
    "northwind",
    "Northwind Traders",
    "33333333-3333-3333-3333-333333333333",
    "northwind.com",
    "admin@northwind.com",
)


def expire(world: World, *tenants: Tenant) -> None:
    for t in tenants:
        stored = world.store.tenants.setdefault(t.key, copy.copy(t))
        stored.auth_state = AuthState.EXPIRED


async def test_each_expired_tenant_gets_an_invitation_in_one_thread(world: World) -> None:
    """Two expired tenants: two Auth URLs in one new thread, each post naming its tenant."""
    expire(world, CONTOSO, NORTHWIND)
    reply = await world.say("renew all-expired")
    assert reply.startswith("Renewing 2 expired tenants in one thread")
    (key,) = world.chat.threads
    posts = [m.text for m in world.chat.threads[key][1:]]
    assert [p.split(":")[0] for p in posts] == ["Contoso Ltd", "Northwind Traders"]
    assert all("/onboard/" in p for p in posts)
    renewals = list(world.store.renewals.values())
    assert {r.state for r in renewals} == {RenewalState.INVITED}
    assert len({r.batch for r in renewals}) == 1 and renewals[0].batch
    assert all(r.thread and r.thread.key == key for r in renewals)
    summary = world.chat.status[key].text
    assert summary.startswith("Renewal of 2 expired tenants, requested by Sam Support: 0 validated")
    assert "Contoso Ltd: Invitation sent" in summary and "Northwind Traders: Invitation" in summary
    assert FABRIKAM.key not in {r.tenant_key for r in renewals}  # not expired, left alone


async def test_summary_follows_each_renewal(world: World) -> None:
    """When one tenant's customer signs in, the summary says so; the others still wait."""
    expire(world, CONTOSO, NORTHWIND)
    await world.say("all-expired")
    (key,) = world.chat.threads
    contoso = next(r for r in world.store.renewals.values() if r.tenant_key == CONTOSO.key)
    await world.service.cancel(commands.CancelRenewal("contoso", SUPPORT))
    summary = world.chat.status[key].text
    assert "0 validated, 1 waiting, 1 ended otherwise" in summary
    assert "Contoso Ltd: Cancelled" in summary
    assert any(m.text.startswith("Contoso Ltd: ") for m in world.chat.threads[key][3:])
    assert contoso.id in world.store.renewals


async def test_open_renewals_are_not_restarted(world: World) -> None:
    """A tenant with a renewal already open is named in the reply and keeps its own thread."""
    await world.say("contoso")
    expire(world, CONTOSO, FABRIKAM)
    reply = await world.say("renew all-expired")
    assert "Renewing 1 expired tenants" in reply
    assert "Already open, so not restarted: Contoso Ltd." in reply
    assert len(world.chat.threads) == 2


async def test_nothing_expired_is_a_plain_answer(world: World) -> None:
    """No expired tenant: no thread, and a pointer to `status`."""
    assert await world.say("renew all-expired") == (
        "No tenant has expired tokens. `renew-token status` shows the others."
    )
    assert world.chat.threads == {}


def test_grammar() -> None:
    """`renew <tenant>` is the plain request; `renew all-expired` takes nothing after it."""
    assert commands.parse("renew contoso", HERE, SUPPORT) == commands.RequestRenewal(
        "contoso", None, HERE, SUPPORT
    )
    assert isinstance(commands.parse("renew all-expired", HERE, SUPPORT), commands.RenewAllExpired)
    with pytest.raises(CommandSyntaxError):
        commands.parse("renew all-expired now", HERE, SUPPORT)
