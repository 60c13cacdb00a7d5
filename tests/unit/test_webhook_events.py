"""Which tenant changes become webhook events: validated, expired, starts failing, recovered."""

from __future__ import annotations

import json

from core.errors import IdentityProviderError
from tests.unit.conftest import CONTOSO, World


def events(world: World) -> list[str]:
    return [kind for kind, key, _ in world.store.webhook_events if key == CONTOSO.key]


async def test_monitor_changes_become_one_event_each(world: World) -> None:
    """A failing refresh is announced once (not per sweep), a later success recovers it, a dead
    refresh token expires it once: a receiver hears each change, never each check."""
    await world.core.monitor.sweep()
    assert events(world) == []  # healthy and staying so: nothing to say
    world.identity.refresh_errors["contoso"] = IdentityProviderError("unavailable")
    for _ in range(3):
        world.clock.advance(hours=24)
        await world.core.monitor.sweep()
    assert events(world) == ["tenant.failing"]
    del world.identity.refresh_errors["contoso"]
    world.clock.advance(hours=24)
    await world.core.monitor.sweep()
    assert events(world) == ["tenant.failing", "tenant.recovered"]
    world.identity.refresh_errors["contoso"] = IdentityProviderError(
        "AADSTS700082", "invalid_grant"
    )
    for _ in range(2):
        world.clock.advance(hours=24)
        await world.core.monitor.sweep()
    assert events(world) == ["tenant.failing", "tenant.recovered", "tenant.expired"]
    body = json.loads(world.store.webhook_events[-1][2])
    assert body["type"] == "tenant.expired" and body["data"]["tenant"] == "contoso"
    assert body["data"]["state"] == "expired" and body["timestamp"].startswith("2026-")
