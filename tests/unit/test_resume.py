"""Nothing lost: staged tokens, a renewal resumed from any stored step, one code per Start.

Through the services with fakes; the same paths run against a killed ``renewbot serve`` in
tests/integration/test_crash.py.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta

from core.model import RenewalState
from core.ports import SignedIn, StagedTokens
from core.services import RenewalService
from tests.unit.conftest import CONTOSO, World
from tests.unit.test_lifecycle import CUSTOMER, GA, started


def signed(account: str = "admin@contoso.com", tid: str = CONTOSO.tenant_id) -> SignedIn:
    return SignedIn(account, tid, "oid-1", GA, StagedTokens(b"new-sign-in"))


async def test_refused_sign_in_leaves_the_tenants_tokens_untouched(world: World) -> None:
    """An account of another organization fails the renewal and nothing of it is kept or used."""
    world.identity.stored[CONTOSO.tenant_id] = b"good-old-tokens"
    rid = await started(world)
    world.identity.polls = [signed("eve@fabrikam.com", tid="22222222-2222-2222-2222-222222222222")]
    await world.service.advance(rid)
    renewal = world.store.renewals[rid]
    assert renewal.state is RenewalState.INVITED and renewal.failure_code == "wrong_tenant"
    assert renewal.staged_tokens is None
    assert world.identity.stored[CONTOSO.tenant_id] == b"good-old-tokens"
    assert world.identity.silent == []  # the wrong account's refresh token was never redeemed


async def test_tokens_replace_the_tenants_only_after_validation(world: World) -> None:
    """Validation runs on the staged tokens; promoted ones carry every token set."""
    world.identity.stored[CONTOSO.tenant_id] = b"good-old-tokens"
    rid = await started(world)
    world.identity.polls = [signed()]
    await world.service.advance(rid)
    assert world.store.renewals[rid].state is RenewalState.VALIDATED
    # the account first (with the Graph token only), then everything, before promotion
    assert world.identity.directory_checked_with == [
        b"new-sign-in",
        b"new-sign-in+exchange+sharepoint",
    ]
    assert world.identity.stored[CONTOSO.tenant_id] == b"new-sign-in+exchange+sharepoint"
    assert world.store.renewals[rid].staged_tokens is None


async def test_graph_refusal_after_sign_in_keeps_the_old_tokens(world: World) -> None:
    """A sign-in whose Graph check fails is never promoted."""
    from core.ports import DirectoryCheck

    world.identity.stored[CONTOSO.tenant_id] = b"good-old-tokens"
    world.identity.directory = DirectoryCheck("33333333-3333-3333-3333-333333333333", "Other")
    rid = await started(world)
    world.identity.polls = [signed()]
    await world.service.advance(rid)
    assert world.store.renewals[rid].failure_code == "graph_mismatch"
    assert world.identity.stored[CONTOSO.tenant_id] == b"good-old-tokens"


async def test_a_renewal_stopped_after_the_first_token_resumes(world: World) -> None:
    """A process that died at 1/3 tokens: the next advance acquires the rest and validates once."""
    rid = await started(world)
    world.identity.polls = [signed()]
    # Die right after the sign-in was recorded: the first silent acquisition never returns.
    world.identity.silent_error = None
    real = world.identity.acquire_silently

    async def dies(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise asyncio.CancelledError

    world.identity.acquire_silently = dies  # type: ignore[method-assign]
    try:
        await world.service.advance(rid)
    except asyncio.CancelledError:
        pass
    renewal = world.store.renewals[rid]
    assert renewal.state is RenewalState.CODE_ISSUED and renewal.tokens_acquired == 1
    assert renewal.staged_tokens == b"new-sign-in"
    world.identity.acquire_silently = real  # type: ignore[method-assign]
    world.clock.advance(seconds=60)  # the dead process's lease ran out
    other = RenewalService(**{**vars(world.service), "config": copy.copy(world.service.config)})
    object.__setattr__(other.config, "worker_id", "another-process")
    assert await other.advance(rid) is None
    assert world.store.renewals[rid].state is RenewalState.VALIDATED
    validated = [t for t in world.chat.texts() if t.startswith("Validated")]
    assert len(validated) == 1


async def test_tokens_acquired_without_validation_is_validated_on_resume(world: World) -> None:
    """Graph down at validation: the scheduler tries again by itself and finishes."""
    from core.errors import IdentityProviderError

    rid = await started(world)
    world.identity.polls = [signed()]
    world.identity.directory = IdentityProviderError("unavailable", "unavailable")
    assert await world.service.advance(rid) == 30.0
    assert world.store.renewals[rid].state is RenewalState.TOKENS_ACQUIRED
    notes = len(world.chat.texts())
    assert await world.service.advance(rid) == 30.0  # still down: no second note
    assert len(world.chat.texts()) == notes
    world.identity.directory = None
    assert await world.service.advance(rid) is None
    assert world.store.renewals[rid].state is RenewalState.VALIDATED


async def test_concurrent_starts_issue_one_code(world: World) -> None:
    """Two tabs pressing Start at once: one device flow, and both show the code that is polled."""
    await world.say("contoso")
    token = world.token_from_thread()
    gate = asyncio.Event()
    real = world.identity.start_device_flow

    async def slow(tenant):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await real(tenant)

    world.identity.start_device_flow = slow  # type: ignore[method-assign]
    first = asyncio.create_task(world.service.start_authentication(token, CUSTOMER))
    second = asyncio.create_task(world.service.start_authentication(token, CUSTOMER, fresh=True))
    await asyncio.sleep(0)  # both presses reach the claim before the flow returns
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, second)
    assert world.identity.started == 1
    (renewal,) = world.store.renewals.values()
    assert renewal.device_code is not None and renewal.device_code.user_code == "CODE0001"


async def test_a_thread_never_opened_is_opened_by_the_sweep(world: World) -> None:
    """A process that died between writing the renewal and posting it: the sweep posts a fresh
    Auth URL in a new thread, once."""
    opened = world.chat.open_thread

    async def dies(origin, message):  # type: ignore[no-untyped-def]
        raise asyncio.CancelledError

    world.chat.open_thread = dies  # type: ignore[method-assign]
    try:
        await world.say("contoso")
    except asyncio.CancelledError:
        pass
    (renewal,) = world.store.renewals.values()
    assert renewal.awaiting_thread and not world.chat.threads
    world.chat.open_thread = opened  # type: ignore[method-assign]
    assert await world.service.reopen_orphans() == 0  # too soon: the first process may live
    world.clock.advance(minutes=3)
    assert await world.service.reopen_orphans() == 1
    assert await world.service.reopen_orphans() == 0
    assert len(world.chat.threads) == 1
    token = world.token_from_thread()
    fresh = await world.service.open_invitation(token)
    assert fresh[0].id == renewal.id


async def test_a_thread_opened_after_a_replica_reopened_the_renewal_shows_no_dead_auth_url(
    world: World,
) -> None:
    """A process that stalled between posting a renewal's thread and storing it, long enough
    for a replica's sweep to reopen the renewal with a fresh Auth URL in a thread of its own:
    the stalled thread gets no Auth URL (its link no longer works) but says where to go."""
    opened = world.chat.open_thread

    async def stalls(origin, message):  # type: ignore[no-untyped-def]
        world.chat.open_thread = opened  # type: ignore[method-assign]
        thread = await opened(origin, message)
        world.clock.advance(minutes=3)
        assert await world.service.reopen_orphans() == 1  # the replica's sweep
        return thread

    world.chat.open_thread = stalls  # type: ignore[method-assign]
    await world.say("contoso")
    stalled, reopened = world.chat.threads["t1"], world.chat.threads["t2"]
    assert not any("/onboard/" in m.text for m in stalled)
    assert "this thread's link will not work" in world.chat.status["t1"].text
    (auth_url,) = [m.text for m in reopened if "/onboard/" in m.text]
    token = auth_url.split("/onboard/")[1].split()[0]
    renewal, _ = await world.service.open_invitation(token)  # the live one
    assert renewal.thread is not None and renewal.thread.key == "t2"


async def test_a_requester_is_not_shown_an_auth_url_replaced_before_its_thread_was_stored(
    world: World,
) -> None:
    """A replica's sweep gave the renewal a fresh Auth URL but has not posted its thread yet
    when the stalled process stores its own: the requester's reply shows no Auth URL (the one
    this process holds no longer works), nor does the stalled thread."""
    opened = world.chat.open_thread

    async def stalls(origin, message):  # type: ignore[no-untyped-def]
        world.chat.open_thread = opened  # type: ignore[method-assign]
        thread = await opened(origin, message)
        async with world.service.uow() as uow:  # the replica's reinvite, its thread still to come
            (renewal,) = await uow.renewals.open()
            renewal.reinvite(
                "0" * 64, world.clock.now() + timedelta(days=7), "x", world.clock.now()
            )
            await uow.renewals.save(renewal)
            await uow.commit()
        return thread

    world.chat.open_thread = stalls  # type: ignore[method-assign]
    reply = await world.say("contoso")
    assert "/onboard/" not in reply and "already open" in reply
    assert not any("/onboard/" in text for text in world.chat.texts())
    assert "this thread's link will not work" in world.chat.status["t1"].text
