"""Who may do what, and where: operators renew and cancel, viewers read.

Entries name a user (`U123`, `slack:U123`, a Teams AAD object id), a group the adapter resolved
for the user (a Slack user group `S123`, a Teams team id), or `*` for everyone. An empty policy
(no operators, no viewers) lets everyone operate: the embedded development default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from core import commands
from core.model import Actor, Origin


class Permission(StrEnum):
    READ = "read"
    OPERATE = "operate"


def permission_for(cmd: commands.Command) -> Permission:
    """What ``cmd`` needs: the operate permission when its verb changes something (the one
    table, commands.VERBS), else read."""
    return Permission.OPERATE if isinstance(cmd, commands.OPERATING) else Permission.READ


def _frozen(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip() for v in values if v.strip())


@dataclass(frozen=True)
class AccessPolicy:
    operators: frozenset[str] = field(default_factory=frozenset)
    viewers: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    workspaces: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        operators: Iterable[str] = (),
        viewers: Iterable[str] = (),
        channels: Iterable[str] = (),
        workspaces: Iterable[str] = (),
    ) -> AccessPolicy:
        return cls(_frozen(operators), _frozen(viewers), _frozen(channels), _frozen(workspaces))

    @property
    def is_open(self) -> bool:
        return not self.operators and not self.viewers

    @staticmethod
    def _names(actor: Actor) -> set[str]:
        names = {actor.user_id, f"{actor.platform}:{actor.user_id}", "*"}
        names |= actor.groups | {f"{actor.platform}:{g}" for g in actor.groups}
        return names

    def place_allowed(self, actor: Actor, origin: Origin) -> bool:
        if self.workspaces and actor.workspace and actor.workspace not in self.workspaces:
            return False
        if not self.channels:
            return True
        places = {origin.channel, origin.parent} - {""}
        places |= {f"{origin.platform}:{p}" for p in places}
        return bool(places & self.channels)

    def allows(self, actor: Actor, origin: Origin, permission: Permission) -> bool:
        """True when ``actor`` may use ``permission`` in ``origin``."""
        if not self.place_allowed(actor, origin):
            return False
        if self.is_open:
            return True
        names = self._names(actor)
        if names & self.operators:
            return True
        return permission is Permission.READ and bool(names & self.viewers)
