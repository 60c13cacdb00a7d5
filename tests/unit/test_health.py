"""The token health monitor, driven by a clock: states, alerts on change only, snooze."""

from __future__ import annotations

from datetime import timedelta

from core import commands
from core.errors import IdentityProviderError, TokenCacheUnreadableError
from core.model import AuthState, Tenant
from tests.unit.conftest import CONTOSO, FABRIKAM, HERE, SUPPORT, World


async def sweep(world: World):  # type: ignore[no-untyped-def]
    return await world.core.monitor.sweep()


async def test_sweep_refreshes_every_tenant_and_marks_them_healthy(world: World) -> None:
    """Each tenant's refresh token is redeemed once per sweep; success means healthy."""
    result = await sweep(world)
    assert sorted(world.identity.refreshed) == ["contoso", "fabrikam"]
    assert result.checked == 2 and result.states == {AuthState.HEALTHY: 2}
    assert world.store.tenants[CONTOSO.key].last_refresh_at == world.clock.now()
    assert world.chat.announced == []  # nothing to say about healthy tenants
    assert (await sweep(world)).checked == 0  # not due again until tomorrow
    world.clock.advance(hours=24)
    assert (await sweep(world)).checked == 2


async def test_dead_refresh_token_expires_and_alerts_once(world: World) -> None:
    """AADSTS700082 makes the tenant expired: one red alert with Renew, not one per sweep."""
    world.identity.refresh_errors["contoso"] = IdentityProviderError(
        "AADSTS700082", "invalid_grant"
    )
    await sweep(world)
    assert world.store.tenants[CONTOSO.key].auth_state is AuthState.EXPIRED
    (alert,) = world.chat.announced
    assert alert.tone == "error" and "Contoso Ltd (contoso) have expired" in alert.text
    assert "90 days without use" in alert.text
    assert [(a.kind, a.tenant) for a in alert.actions] == [("renew", "contoso")]
    assert world.store.errors[-1].code == "AADSTS700082"
    assert world.store.errors[-1].source == "monitor"
    world.clock.advance(hours=24)
    await sweep(world)
    assert len(world.chat.announced) == 1


async def test_outage_turns_old_tokens_expiring_with_days_left(world: World) -> None:
    """If refreshes keep failing transiently, tokens near the 90-day limit are announced."""
    await sweep(world)
    world.identity.refresh_errors["fabrikam"] = IdentityProviderError("unavailable")
    world.clock.advance(days=70)
    await sweep(world)
    assert world.store.tenants[FABRIKAM.key].auth_state is AuthState.HEALTHY
    world.clock.advance(days=8)
    await sweep(world)
    assert world.store.tenants[FABRIKAM.key].auth_state is AuthState.EXPIRING
    (warning,) = [m for m in world.chat.announced if "Fabrikam" in m.text]
    assert warning.tone == "warning" and "expire in 12 days" in warning.text


async def test_transient_failure_retries_sooner(world: World) -> None:
    """An unreachable identity service is checked again in minutes, not tomorrow."""
    world.identity.refresh_errors["contoso"] = IdentityProviderError("unavailable")
    await sweep(world)
    world.clock.advance(minutes=16)
    assert (await sweep(world)).checked == 1


async def test_snoozed_tenant_stays_quiet(world: World) -> None:
    """A snoozed tenant's change of state is recorded but not announced."""
    reply = await world.say("snooze contoso 2d")
    assert "snoozed until" in reply
    world.identity.refresh_errors["contoso"] = IdentityProviderError("AADSTS50173", "invalid_grant")
    await sweep(world)
    assert world.store.tenants[CONTOSO.key].auth_state is AuthState.EXPIRED
    assert world.chat.announced == []
    assert "back on" in await world.say("snooze contoso off")


async def test_recovery_is_announced(world: World) -> None:
    """A tenant that was expired and refreshes fine again gets a green all-clear."""
    world.identity.refresh_errors["contoso"] = IdentityProviderError("unavailable")
    await sweep(world)
    world.store.tenants[CONTOSO.key].auth_state = AuthState.EXPIRING
    world.identity.refresh_errors.clear()
    world.clock.advance(minutes=20)
    await sweep(world)
    assert world.chat.announced[-1].tone == "success"
    assert "healthy again" in world.chat.announced[-1].text


async def test_status_lists_counts_and_tenants_needing_action(world: World) -> None:
    """`status` answers with counts per state and the tenants to act on."""
    world.identity.refresh_errors["fabrikam"] = IdentityProviderError(
        "AADSTS700082", "invalid_grant"
    )
    await sweep(world)
    await world.say("contoso")
    status = await world.say("status")
    assert "2 tenants: 1 healthy, 1 expired" in status
    assert "Open renewals: 1 (invited: 1)" in status
    assert "Fabrikam Inc (fabrikam): expired" in status


def test_snooze_grammar() -> None:
    """Durations read as people write them; nonsense is refused in words."""
    from core import commands
    from core.errors import CommandSyntaxError
    from tests.unit.conftest import HERE, SUPPORT

    cmd = commands.parse("snooze contoso 36h", HERE, SUPPORT)
    assert isinstance(cmd, commands.SnoozeAlerts) and cmd.duration == timedelta(hours=36)
    for bad in ("snooze contoso", "snooze contoso forever", "snooze contoso 400d"):
        try:
            commands.parse(bad, HERE, SUPPORT)
        except CommandSyntaxError as exc:
            assert "snooze" in exc.reply
        else:
            raise AssertionError(bad)


async def test_daily_digest_lists_what_needs_action_once_a_day(world: World) -> None:
    """One digest per day, only when something is expiring or expired."""
    assert await world.core.monitor.digest() is None  # all unknown: nothing to say
    world.identity.refresh_errors["fabrikam"] = IdentityProviderError(
        "AADSTS700082", "invalid_grant"
    )
    await sweep(world)
    world.clock.advance(hours=24, seconds=1)
    message = await world.core.monitor.digest()
    assert message is not None and message.tone == "warning"
    assert message.text.startswith("Daily token health: 1 expired, 0 expiring.")
    assert "Fabrikam Inc (fabrikam): expired" in message.text
    assert await world.core.monitor.digest() is None  # not twice in a day


async def test_many_expiries_at_once_are_one_alert_with_renew_all(world: World) -> None:
    """The first sweep after an import (or an outage) does not flood the channel: one alert
    lists the tenants, and its button renews them all in one thread."""
    for i in range(7):
        t = Tenant(
            f"k-bulk{i}",
            f"bulk{i}",
            f"Bulk {i}",
            f"{i:08d}-0000-4000-8000-000000000000",
            f"bulk{i}.example",
            f"admin@bulk{i}.example",
        )
        world.store.tenants[t.key] = t
        world.identity.refresh_errors[t.slug] = IdentityProviderError(
            "AADSTS700082", "invalid_grant"
        )
    result = await sweep(world)
    (alert,) = world.chat.announced
    assert result.alerts == 1
    assert alert.text.startswith("Tokens of 7 tenants have expired: Bulk 0 (bulk0), Bulk 1")
    assert [(a.kind, a.tenant) for a in alert.actions] == [("renew_all", "*")]
    cmd = commands.from_action("renew_all", "*", HERE, SUPPORT)
    assert isinstance(cmd, commands.RenewAllExpired)
    reply = await world.core.desk.execute(cmd, HERE, SUPPORT)
    assert reply.text.startswith("Renewing 7 expired tenants in one thread")


async def test_a_few_expiries_are_announced_one_by_one(world: World) -> None:
    """Up to five changes in a sweep keep their own alert, each with its own Renew."""
    for slug in ("contoso", "fabrikam"):
        world.identity.refresh_errors[slug] = IdentityProviderError("AADSTS700082", "invalid_grant")
    await sweep(world)
    assert sorted(a.actions[0].tenant for a in world.chat.announced) == ["contoso", "fabrikam"]


async def test_unreadable_tokens_are_their_own_alert_and_reason(world: World) -> None:
    """Tenants whose stored tokens no key opens are expired with that reason and announced
    apart from ordinary expiries (the fix differs: check the keys, then renew); one alone gets
    its own alert, and `show` and `status` say why."""
    for i in range(6):
        t = Tenant(
            f"k-bad{i}",
            f"bad{i}",
            f"Bad {i}",
            f"{i:08d}-0000-4000-8000-000000000000",
            f"bad{i}.example",
            f"admin@bad{i}.example",
        )
        world.store.tenants[t.key] = t
        world.identity.refresh_errors[t.slug] = TokenCacheUnreadableError(t.tenant_id)
    world.identity.refresh_errors["contoso"] = IdentityProviderError(
        "AADSTS700082", "invalid_grant"
    )
    result = await sweep(world)
    assert result.checked == 8 and result.failures == 7 and result.alerts == 2
    grouped, single = sorted(world.chat.announced, key=lambda m: m.text)
    assert grouped.text.startswith("6 tenants need a renewal because their stored tokens cannot")
    assert "RENEWBOT_SECURITY__ENCRYPTION_KEYS" in grouped.text
    assert single.text.startswith("Tokens of Contoso Ltd (contoso) have expired")
    assert world.store.tenants["k-bad0"].auth_state is AuthState.EXPIRED
    assert {e.code for e in world.store.errors} == {"token_cache_unreadable", "AADSTS700082"}
    assert "stored tokens cannot be read" in await world.say("show bad0")
    assert "stored tokens cannot be read" not in await world.say("show contoso")
    assert "Bad 0 (bad0): expired (stored tokens cannot be read" in await world.say("status")
