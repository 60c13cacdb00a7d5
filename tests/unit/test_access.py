"""Who may do what, where: operators act, viewers read, refusals are answered and audited."""

from __future__ import annotations

from bot.bootstrap import compose
from core.access import AccessPolicy, Permission
from core.model import Actor, Origin
from core.services import ServiceConfig
from tests.fakes.core import in_memory
from tests.unit.conftest import World

OPS = Origin("slack", "C-ops")
ALICE = Actor("slack", "U-alice", "Alice", workspace="T1")
VIKTOR = Actor("slack", "U-viktor", "Viktor", workspace="T1")
GRACE = Actor("slack", "U-grace", "Grace", groups=frozenset({"S-support"}), workspace="T1")
POLICY = AccessPolicy.of(
    operators=["U-alice", "S-support"],
    viewers=["slack:U-viktor"],
    channels=["C-ops"],
    workspaces=["T1"],
)


def test_operators_operate_and_viewers_only_read() -> None:
    """The roles as configured: user ids, platform-prefixed ids and user groups all count."""
    assert POLICY.allows(ALICE, OPS, Permission.OPERATE)
    assert POLICY.allows(GRACE, OPS, Permission.OPERATE)
    assert POLICY.allows(VIKTOR, OPS, Permission.READ)
    assert not POLICY.allows(VIKTOR, OPS, Permission.OPERATE)
    assert not POLICY.allows(Actor("slack", "U-eve"), OPS, Permission.READ)


def test_channels_and_workspaces_limit_where() -> None:
    """Even an operator is refused outside the allowed channels and workspaces."""
    assert not POLICY.allows(ALICE, Origin("slack", "C-random"), Permission.OPERATE)
    other = Actor("slack", "U-alice", "Alice", workspace="T-other")
    assert not POLICY.allows(other, OPS, Permission.READ)


def test_empty_policy_is_open() -> None:
    """With nothing configured (the demo), everyone may operate."""
    assert AccessPolicy().allows(Actor("x", "anyone"), Origin("x", "y"), Permission.OPERATE)


async def test_viewer_renew_is_refused_in_words_and_audited(world: World) -> None:
    """A viewer trying to renew gets a plain refusal, nothing starts, and it is on record."""
    core = compose(
        uow=in_memory(world.store),
        identity=world.identity,
        threads=world.chat,
        clock=world.clock,
        config=ServiceConfig(public_url="https://bot.test"),
        policy=POLICY,
        deliver_inline=True,
    )
    reply = await core.desk.handle("contoso", OPS, VIKTOR)
    assert "may not start or change renewals" in reply.text
    assert world.store.renewals == {} and world.chat.threads == {}
    assert world.store.audit[-1].kind == "access.denied"
    assert world.store.audit[-1].actor == "Viktor"
    assert "Contoso" in (await core.desk.handle("show contoso", OPS, VIKTOR)).text
