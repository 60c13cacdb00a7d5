"""The browser sign-in through the service: start, Microsoft's return, and returns we refuse."""

from __future__ import annotations

import dataclasses

import pytest

from bot.bootstrap import compose
from core.errors import (
    IdentityProviderError,
    InvalidTransitionError,
    InvitationGoneError,
    SignInStateError,
)
from core.model import Actor, RenewalState
from core.ports import SignedIn, StagedTokens
from core.services import ServiceConfig
from tests.fakes.core import in_memory
from tests.unit.conftest import CONTOSO, World

CUSTOMER = Actor("web", "customer", "the customer")


async def begin(world: World, slug: str = "contoso") -> tuple[str, str, str]:
    """A renewal whose customer was sent to Microsoft: (renewal id, Auth URL token, state)."""
    await world.say(slug)
    token = world.token_from_thread()
    await world.service.start_browser_sign_in(token, CUSTOMER)
    state = world.identity.browser_starts[-1][3]
    (renewal,) = [r for r in world.store.renewals.values() if r.browser_sign_in is not None]
    return renewal.id, token, state


def renewal_of(world: World, rid: str):  # type: ignore[no-untyped-def]
    return world.store.renewals[rid]


async def test_browser_sign_in_reaches_validated_through_the_common_path(world: World) -> None:
    """The customer's return is redeemed once and validated like a device-code sign-in."""
    rid, token, state = await begin(world)
    tenant, hint, redirect, _ = world.identity.browser_starts[0]
    assert (tenant, hint) == (CONTOSO.tenant_id, "admin@contoso.com")
    assert redirect == "https://bot.test/onboard/callback"
    pending = renewal_of(world, rid).browser_sign_in
    assert pending is not None and state not in repr(pending) and pending.state_hash != state
    renewal = await world.service.finish_browser_sign_in(
        token, state, {"code": "c", "state": state}
    )
    assert renewal.state is RenewalState.VALIDATED
    assert world.identity.stored[CONTOSO.tenant_id] == b"browser+exchange+sharepoint"
    assert any(t.startswith("Validated: Contoso Ltd") for t in world.chat.texts())
    assert renewal_of(world, rid).browser_sign_in is None


async def test_replayed_return_is_refused_and_changes_nothing(world: World) -> None:
    """A second use of the same return (a replay) finds nothing pending: refused, no change."""
    rid, token, state = await begin(world)
    declined = {"error": "access_denied", "error_description": "AADSTS65004: declined"}
    await world.service.finish_browser_sign_in(token, state, {**declined, "state": state})
    before, posts = dataclasses.replace(renewal_of(world, rid)), len(world.chat.texts())
    with pytest.raises(SignInStateError) as refused:
        await world.service.finish_browser_sign_in(token, state, {"code": "c", "state": state})
    assert refused.value.why == "used"
    assert renewal_of(world, rid).state is before.state is RenewalState.INVITED
    assert len(world.chat.texts()) == posts and len(world.identity.browser_finishes) == 1


async def test_state_of_another_invitation_is_refused(world: World) -> None:
    """A return carrying another invitation's state is refused; this one's stays usable."""
    rid, token, state = await begin(world, "contoso")
    await world.say("fabrikam")
    (other_token,) = [
        t.split("/onboard/")[1].split()[0]
        for t in world.chat.texts()
        if "/onboard/" in t and token not in t
    ]
    await world.service.start_browser_sign_in(other_token, CUSTOMER)
    other_state = world.identity.browser_starts[-1][3]
    with pytest.raises(SignInStateError) as refused:
        await world.service.finish_browser_sign_in(
            token, other_state, {"code": "c", "state": other_state}
        )
    assert refused.value.why == "unknown" and world.identity.browser_finishes == []
    assert renewal_of(world, rid).browser_sign_in is not None
    renewal = await world.service.finish_browser_sign_in(
        token, state, {"code": "c", "state": state}
    )
    assert renewal.state is RenewalState.VALIDATED


async def test_late_return_is_refused_and_used_up(world: World) -> None:
    """The customer has ten minutes at Microsoft; a later return is refused and not kept."""
    rid, token, state = await begin(world)
    world.clock.advance(minutes=11)
    for why in ("late", "used"):
        with pytest.raises(SignInStateError) as refused:
            await world.service.finish_browser_sign_in(token, state, {"code": "c", "state": state})
        assert refused.value.why == why
    assert renewal_of(world, rid).state is RenewalState.INVITED


async def test_declined_at_microsoft_is_explained_and_offered_again(world: World) -> None:
    """An error sent back (declined consent) is said on the page and in the thread; the
    customer can press Sign in with Microsoft again."""
    _rid, token, state = await begin(world)
    response = {"error": "access_denied", "error_description": "AADSTS65004: no", "state": state}
    renewal = await world.service.finish_browser_sign_in(token, state, response)
    assert renewal.state is RenewalState.INVITED and renewal.failure_code == "AADSTS65004"
    assert "declined to consent" in world.chat.texts()[-1]
    assert renewal.can_sign_in_with_browser
    await world.service.start_browser_sign_in(token, CUSTOMER)
    assert len(world.identity.browser_starts) == 2


async def test_managed_device_policy_in_the_browser_fails_the_renewal(world: World) -> None:
    """Conditional Access that blocks the browser too cannot be fixed by trying again."""
    _rid, token, state = await begin(world)
    response = {"error": "access_denied", "error_description": "AADSTS530033: x", "state": state}
    renewal = await world.service.finish_browser_sign_in(token, state, response)
    assert renewal.state is RenewalState.FAILED
    with pytest.raises(InvitationGoneError):
        await world.service.start_browser_sign_in(token, CUSTOMER)


async def test_account_of_another_tenant_is_refused_and_tokens_untouched(world: World) -> None:
    """The same tenant check as the device code path: nothing of the stranger is kept, and the
    page offers to sign in again with an account of this organization."""
    _rid, token, state = await begin(world)
    world.identity.browser_results = [
        SignedIn(
            "x@other.example",
            "99999999-0000-0000-0000-000000000000",
            "o",
            staged=StagedTokens(b"x"),
        )
    ]
    renewal = await world.service.finish_browser_sign_in(
        token, state, {"code": "c", "state": state}
    )
    assert renewal.state is RenewalState.INVITED and renewal.failure_code == "wrong_tenant"
    assert renewal.staged_tokens is None and CONTOSO.tenant_id not in world.identity.stored


async def test_browser_return_replaces_a_showing_device_code(world: World) -> None:
    """A customer who first got a code and then used the browser is signed in by the browser."""
    await world.say("contoso")
    token = world.token_from_thread()
    renewal = await world.service.start_authentication(token, CUSTOMER)
    assert renewal.device_code is not None
    await world.service.start_browser_sign_in(token, CUSTOMER)
    state = world.identity.browser_starts[-1][3]
    renewal = await world.service.finish_browser_sign_in(
        token, state, {"code": "c", "state": state}
    )
    assert renewal.state is RenewalState.VALIDATED and renewal.device_code is None
    assert await world.service.advance(renewal.id) is None  # no device flow left to poll


def _device_only(world: World) -> None:
    world.core = compose(
        uow=in_memory(world.store),
        identity=world.identity,
        threads=world.chat,
        clock=world.clock,
        config=ServiceConfig(public_url="https://bot.test", browser_sign_in=False),
        deliver_inline=True,
    )


async def test_device_code_only_deployment_refuses_browser_and_fails_on_53003(
    world: World,
) -> None:
    """Where the browser is not offered, a blocked device code ends the renewal as before."""
    _device_only(world)
    await world.say("contoso")
    token = world.token_from_thread()
    with pytest.raises(InvalidTransitionError):
        await world.service.start_browser_sign_in(token, CUSTOMER)
    renewal = await world.service.start_authentication(token, CUSTOMER)
    world.identity.polls = [IdentityProviderError("AADSTS53003", "invalid_grant")]
    await world.service.advance(renewal.id)
    assert world.store.renewals[renewal.id].state is RenewalState.FAILED
