"""The renewal lifecycle through the desk and services, with fakes (DESIGN.md section 2)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.errors import (
    IdentityProviderError,
    InvalidTransitionError,
    InvitationGoneError,
    InvitationNotFoundError,
)
from core.model import Actor, Origin, RenewalState
from core.ports import DirectoryCheck, SignedIn
from core.validation import GLOBAL_ADMINISTRATOR
from tests.fakes.core import slow_down
from tests.unit.conftest import CONTOSO, World

CUSTOMER = Actor("web", "customer")
GA = frozenset({GLOBAL_ADMINISTRATOR})


def signed(
    account: str = "admin@contoso.com", tid: str = CONTOSO.tenant_id, roles: frozenset[str] = GA
) -> SignedIn:
    return SignedIn(account, tid, "oid-1", roles)


async def started(world: World) -> str:
    await world.say("contoso")
    token = world.token_from_thread()
    await world.service.start_authentication(token, CUSTOMER)
    return world.watched[-1][0]


async def state(world: World, rid: str) -> RenewalState:
    return world.store.renewals[rid].state


async def test_renew_posts_auth_url_in_a_new_thread(world: World) -> None:
    """Support sees the thread and the Auth URL right after typing the command."""
    reply = await world.say("contoso")
    assert "started in a thread" in reply
    ((key, thread),) = world.chat.threads.items()
    assert thread[0].text.startswith(
        "Token renewal for Contoso Ltd (contoso), requested by Sam Support"
    )
    assert "https://bot.test/onboard/" in thread[1].text
    assert "admin@contoso.com" in thread[1].text
    status = world.chat.status[key]
    assert "[x] Invitation sent → [ ] Code issued" in status.text
    assert [a.kind for a in status.actions] == ["new_code", "cancel"]
    assert len(world.token_from_thread()) >= 43  # 256 random bits, url-safe


async def test_auth_url_token_is_stored_only_as_hash(world: World) -> None:
    """A database dump must not reveal a working Auth URL."""
    await world.say("contoso")
    token = world.token_from_thread()
    (renewal,) = world.store.renewals.values()
    assert token not in repr(renewal) and renewal.invitation_hash != token


async def test_second_renew_links_the_open_thread(world: World) -> None:
    """A second /renew-token for the same tenant does not start a second renewal."""
    await world.say("contoso")
    reply = await world.core.desk.handle("Contoso Ltd", *_here())
    assert "already open" in reply.text and reply.thread is not None
    assert len(world.store.renewals) == 1 and len(world.chat.threads) == 1


def _here() -> tuple[Origin, Actor]:
    from tests.unit.conftest import HERE, SUPPORT

    return HERE, SUPPORT


async def test_typo_suggests_close_tenant_names(world: World) -> None:
    """A typo gets the closest names instead of a dead end."""
    reply = await world.say("contosso")
    assert "Did you mean" in reply and "contoso" in reply
    assert world.store.renewals == {}


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("", "Which tenant?"),
        ("   ", "Which tenant?"),
        ("status extra", "`status` takes no arguments"),
        ("cancel", "Which tenant? Usage: renew-token cancel <tenant>"),
        ("a|b", "does not look like a tenant name"),
        ("x" * 600, "That command is too long"),
        ("cancle contoso", "Did you mean `cancel`?"),
    ],
)
async def test_odd_text_gets_a_plain_answer_and_changes_nothing(
    world: World, text: str, answer: str
) -> None:
    """Bad input is answered in words that say what to write, and nothing is committed."""
    reply = await world.say(text)
    assert answer in reply
    assert world.store.renewals == {} and world.chat.threads == {} and world.store.audit == []


async def test_tenant_found_by_domain_and_tenant_id(world: World) -> None:
    """Support can name the tenant the way the ticket does."""
    assert "Contoso Ltd" in await world.say("show contoso.com")
    assert "admin@contoso.com" in await world.say(f"show {CONTOSO.tenant_id}")


async def test_full_renewal_reaches_validated_with_progress(world: World) -> None:
    """The happy path: code, n/m tokens, then a green validated message and an announcement."""
    rid = await started(world)
    assert any("Device code: CODE0001" in t for t in world.chat.texts())
    code = world.store.renewals[rid].device_code
    assert code is not None
    world.identity.polls = [slow_down(code), signed()]
    assert await world.service.advance(rid) == 10.0  # slow_down honoured: 5 s + 5 s
    assert await world.service.advance(rid) is None
    texts = world.chat.texts()
    assert any("1/3 tokens" in t for t in texts) and any("3/3 tokens" in t for t in texts)
    assert any(t.startswith("Validated: Contoso Ltd") for t in texts)
    assert await state(world, rid) is RenewalState.VALIDATED
    assert world.identity.silent == ["exchange", "sharepoint"]
    assert world.chat.announcements[-1].startswith("Tokens renewed and validated for Contoso")
    assert world.chat.announced[-1].tone == "success"
    (status,) = world.chat.status.values()
    assert status.tone == "success" and [a.kind for a in status.actions] == ["validate"]
    assert world.store.tenants[CONTOSO.key].last_validated_at == world.clock.now()


async def test_auth_url_is_dead_after_validation(world: World) -> None:
    """The single-use link cannot be reused once the tokens are validated."""
    rid = await started(world)
    token = world.token_from_thread()
    world.identity.polls = [signed()]
    await world.service.advance(rid)
    with pytest.raises(InvitationGoneError):
        await world.service.start_authentication(token, CUSTOMER, fresh=True)
    with pytest.raises(InvitationNotFoundError):
        await world.service.open_invitation(token[:-2] + "xx")


async def test_start_twice_keeps_the_same_code(world: World) -> None:
    """A double click on Start does not burn a second device code."""
    await world.say("contoso")
    token = world.token_from_thread()
    first = await world.service.start_authentication(token, CUSTOMER)
    second = await world.service.start_authentication(token, CUSTOMER)
    assert first.device_code == second.device_code and world.identity.started == 1


async def test_expired_code_returns_to_invited_and_new_code_works(world: World) -> None:
    """A device code lives about 15 minutes; the customer can get a fresh one."""
    rid = await started(world)
    world.clock.advance(minutes=16)
    assert await world.service.advance(rid) is None
    assert await state(world, rid) is RenewalState.INVITED
    assert any("The code expired" in t for t in world.chat.texts())
    await world.service.start_authentication(world.token_from_thread(), CUSTOMER, fresh=True)
    code = world.store.renewals[rid].device_code
    assert code is not None and code.user_code == "CODE0002"


@pytest.mark.parametrize(
    ("code", "end"),
    [
        ("authorization_declined", RenewalState.INVITED),
        ("AADSTS90094", RenewalState.INVITED),
        ("AADSTS53003", RenewalState.INVITED),  # the browser sign-in avoids it (issue 14)
        ("AADSTS530033", RenewalState.FAILED),
    ],
)
async def test_identity_errors_explained_in_thread(
    world: World, code: str, end: RenewalState
) -> None:
    """Declines and consent errors offer a new code; Conditional Access against the device code
    leaves the browser sign-in open; a managed-device policy ends the renewal."""
    rid = await started(world)
    world.identity.polls = [IdentityProviderError(code, "invalid_grant", "secret-ish detail")]
    await world.service.advance(rid)
    assert await state(world, rid) is end
    last = world.chat.texts()[-1]
    assert "secret-ish detail" not in last
    assert world.store.errors[-1].code == code


async def test_wrong_tenant_account_gets_a_new_code(world: World) -> None:
    """An account of another tenant never validates this one; the page offers a new code."""
    rid = await started(world)
    world.identity.polls = [signed("bob@fabrikam.com", tid="22222222-2222-2222-2222-222222222222")]
    await world.service.advance(rid)
    assert await state(world, rid) is RenewalState.INVITED
    assert world.store.renewals[rid].failure_code == "wrong_tenant"
    assert world.identity.silent == []


async def test_consent_by_non_global_admin_fails(world: World) -> None:
    """When the Enterprise Application was missing, only a Global Administrator will do."""
    rid = await started(world)
    world.identity.polls = [
        IdentityProviderError("AADSTS65001", "invalid_grant"),
        signed(roles=frozenset()),
    ]
    world.identity.directory = DirectoryCheck(
        CONTOSO.tenant_id, CONTOSO.display_name, is_global_admin=False, tenant_wide_consent=True
    )
    await world.service.advance(rid)
    await world.service.start_authentication(world.token_from_thread(), CUSTOMER, fresh=True)
    await world.service.advance(rid)
    assert world.store.renewals[rid].failure_code == "not_global_admin"


async def test_other_admin_account_validates_with_warning(world: World) -> None:
    """A different admin account works but support is told which one signed in, in the thread
    and in the alert channel (the announcement keeps the warning)."""
    rid = await started(world)
    world.identity.polls = [signed("other@contoso.com")]
    await world.service.advance(rid)
    assert await state(world, rid) is RenewalState.VALIDATED
    warning = "other@contoso.com, but the tenant's M365 admin username is admin@contoso.com"
    assert warning in world.chat.texts()[-1]
    alert = world.chat.announced[-1]
    assert alert.tone == "warning" and f"Warning: signed in as {warning}" in alert.text


async def test_graph_unreachable_keeps_tokens_and_validate_again_finishes(world: World) -> None:
    """A Graph outage does not throw away acquired tokens; `validate` completes later."""
    rid = await started(world)
    world.identity.directory = IdentityProviderError("unavailable")
    world.identity.polls = [signed()]
    await world.service.advance(rid)
    assert await state(world, rid) is RenewalState.TOKENS_ACQUIRED
    world.identity.directory = None
    reply = await world.say("validate contoso")
    assert "validated" in reply and await state(world, rid) is RenewalState.VALIDATED


async def test_cancel_kills_the_link(world: World) -> None:
    """After cancel, the customer's page says so instead of starting sign-in."""
    await world.say("contoso")
    token = world.token_from_thread()
    assert "Cancelled" in await world.say("cancel contoso")
    with pytest.raises(InvitationGoneError):
        await world.service.start_authentication(token, CUSTOMER)
    assert "no open renewal" in await world.say("cancel contoso")


async def test_invitation_expires_after_ttl(world: World) -> None:
    """An invitation is valid for 7 days by default."""
    await world.say("contoso")
    token = world.token_from_thread()
    world.clock.advance(days=7, seconds=1)
    with pytest.raises(InvitationGoneError):
        await world.service.open_invitation(token)
    assert await world.service.expire_overdue() == 1
    assert "expired" in world.chat.texts()[-1]


async def test_chat_outage_does_not_lose_state(world: World) -> None:
    """If chat refuses a post, the renewal still moves on."""
    rid = await started(world)
    world.chat.fail = True
    world.identity.polls = [signed()]
    await world.service.advance(rid)
    assert await state(world, rid) is RenewalState.VALIDATED


async def test_conditional_access_at_start_fails_renewal(world: World) -> None:
    """Some tenants refuse device code flow outright: the renewal ends with the reason."""
    await world.say("contoso")
    world.identity.start_error = IdentityProviderError("AADSTS530033", "invalid_request")
    renewal = await world.service.start_authentication(world.token_from_thread(), CUSTOMER)
    assert renewal.state is RenewalState.FAILED
    assert "Conditional Access" in world.chat.texts()[-1]


async def test_transitions_table_refuses_bad_moves(world: World) -> None:
    """The state machine rejects moves the table does not allow."""
    rid = await started(world)
    renewal = world.store.renewals[rid]
    renewal.cancel(CUSTOMER, world.clock.now())
    with pytest.raises(InvalidTransitionError):
        renewal.expire(world.clock.now() + timedelta(seconds=1))


async def test_help_and_history(world: World) -> None:
    """Help lists the commands; history shows who asked and who signed in."""
    assert "renew-token cancel <tenant>" in await world.say("help")
    rid = await started(world)
    world.identity.polls = [signed()]
    await world.service.advance(rid)
    history = await world.say("history contoso")
    assert "requested by Sam Support" in history and "admin@contoso.com" in history


async def test_thread_refused_still_gives_requester_the_auth_url(world: World) -> None:
    """If chat will not open a thread, the person who asked still gets the Auth URL."""
    from core.errors import ChatDeliveryError

    async def refuse(*args: object) -> None:
        raise ChatDeliveryError("channel_not_found")

    world.chat.open_thread = refuse  # type: ignore[method-assign,assignment]
    reply = await world.say("contoso")
    assert "could not post in this channel" in reply and "https://bot.test/onboard/" in reply


async def test_new_code_double_click_issues_one_code(world: World) -> None:
    """Two New code clicks within seconds give the same code."""
    await world.say("contoso")
    token = world.token_from_thread()
    await world.service.start_authentication(token, CUSTOMER)
    again = await world.service.start_authentication(token, CUSTOMER, fresh=True)
    assert world.identity.started == 1 and again.device_code is not None
    world.clock.advance(seconds=20)
    await world.service.start_authentication(token, CUSTOMER, fresh=True)
    assert world.identity.started == 2


async def test_renewal_is_written_before_its_thread_opens(world: World) -> None:
    """The database picks the one renewal per tenant before anything reaches chat."""
    seen: list[int] = []
    opened = world.chat.open_thread

    async def watching(origin, message):  # type: ignore[no-untyped-def]
        seen.append(len(world.store.renewals))
        return await opened(origin, message)

    world.chat.open_thread = watching  # type: ignore[method-assign]
    await world.say("contoso")
    assert seen == [1]
    (renewal,) = world.store.renewals.values()
    assert renewal.thread is not None and not renewal.awaiting_thread


async def test_a_request_racing_another_opens_no_second_thread(world: World) -> None:
    """Two requests at the same moment: one renewal, one thread; the other is told it is open."""
    opened = world.chat.open_thread
    replies: list[str] = []

    async def racing(origin, message):  # type: ignore[no-untyped-def]
        if not replies:
            replies.append(await world.say("contoso"))  # arrives while this one posts
        return await opened(origin, message)

    world.chat.open_thread = racing  # type: ignore[method-assign]
    await world.say("contoso")
    assert "already open" in replies[0]
    assert len(world.store.renewals) == 1 and len(world.chat.threads) == 1


async def test_snooze_and_validate_again_are_in_the_history(world: World) -> None:
    """Changing a tenant's alerts or validating it again leaves an audit entry, like a renewal."""
    await world.say("snooze contoso 2d")
    await world.say("validate contoso")
    kinds = [e.kind for e in world.store.audit if e.tenant_key == CONTOSO.key]
    assert kinds == ["tenant.snoozed", "tenant.revalidated"]
    history = await world.say("history contoso")
    assert "snoozed by Sam Support" in history and "revalidated by Sam Support (ok)" in history


async def test_tenants_lists_each_with_its_token_state(world: World) -> None:
    """`tenants` names every tenant with its state; `tenants expired` only the expired ones."""
    from core.model import AuthState

    world.store.tenants[CONTOSO.key].auth_state = AuthState.EXPIRED
    listing = await world.say("tenants")
    assert listing.startswith("2 tenants (1 expired, 1 unknown):")
    assert "Contoso Ltd (contoso): expired" in listing and "Fabrikam Inc (fabrikam)" in listing
    only = await world.say("tenants expired")
    assert "contoso" in only and "fabrikam" not in only
    assert "Usage: renew-token tenants" in await world.say("tenants sleepy")
