"""Domain events: facts a renewal records as it moves. Past-tense names, no platform vocabulary.

Handlers in core.notifications turn them into chat posts; none of them carries a secret (the user
code is meant for the customer and the thread; the device code is never in an event).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.model import Actor


@dataclass(frozen=True)
class Event:
    renewal_id: str


@dataclass(frozen=True)
class RenewalInvited(Event):
    auth_url: str
    #: the (masked) address the invitation is being emailed to; "" when email is not configured
    emailed_to: str = ""


@dataclass(frozen=True)
class DeviceCodeIssued(Event):
    user_code: str
    verification_uri: str
    expires_at: datetime
    actor: Actor


@dataclass(frozen=True)
class CodeLapsed(Event):
    reason: str


@dataclass(frozen=True)
class TokenProgress(Event):
    acquired: int
    total: int
    account: str


@dataclass(frozen=True)
class TokensAcquired(Event):
    account: str


@dataclass(frozen=True)
class RenewalValidated(Event):
    account: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class RenewalFailed(Event):
    code: str
    detail: str


@dataclass(frozen=True)
class RenewalExpired(Event):
    pass


@dataclass(frozen=True)
class RenewalCancelled(Event):
    actor: Actor
