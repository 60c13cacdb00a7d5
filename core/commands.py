"""Commands (what a person asked for) and the one grammar every chat adapter shares.

``parse`` turns the text after the slash command (Slack) or after "renew-token" (Teams, console)
into a command. Bad text raises CommandSyntaxError with a reply fit for chat.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta

from core.errors import CommandSyntaxError
from core.model import Actor, Origin


@dataclass(frozen=True)
class RequestRenewal:
    tenant_ref: str
    email: str | None
    origin: Origin
    requester: Actor


@dataclass(frozen=True)
class RenewAllExpired:
    """One invitation per tenant whose tokens expired, all in one summary thread."""

    origin: Origin
    requester: Actor


@dataclass(frozen=True)
class IssueCode:
    tenant_ref: str
    requester: Actor


@dataclass(frozen=True)
class ResendInvitation:
    """A fresh Auth URL for the open renewal (the old one stops working)."""

    tenant_ref: str
    requester: Actor


@dataclass(frozen=True)
class CancelRenewal:
    tenant_ref: str
    requester: Actor


@dataclass(frozen=True)
class ValidateTenant:
    tenant_ref: str
    requester: Actor


@dataclass(frozen=True)
class ShowTenant:
    tenant_ref: str


@dataclass(frozen=True)
class ListPending:
    pass


@dataclass(frozen=True)
class ShowStatus:
    pass


@dataclass(frozen=True)
class ShowHistory:
    tenant_ref: str


@dataclass(frozen=True)
class ShowErrors:
    tenant_ref: str | None


@dataclass(frozen=True)
class ShowHelp:
    pass


@dataclass(frozen=True)
class SnoozeAlerts:
    tenant_ref: str
    duration: timedelta | None  # None: alerts back on
    requester: Actor


Command = (
    RequestRenewal
    | RenewAllExpired
    | IssueCode
    | ResendInvitation
    | CancelRenewal
    | ValidateTenant
    | ShowTenant
    | ListPending
    | ShowStatus
    | ShowHistory
    | ShowErrors
    | ShowHelp
    | SnoozeAlerts
)

_TENANT_VERBS = {"code", "cancel", "validate", "show", "history", "resend"}
_NO_ARG_VERBS = {"pending", "status", "help"}
_ALL_VERBS = _TENANT_VERBS | _NO_ARG_VERBS | {"errors", "snooze", "renew"}
ALL_EXPIRED = "all-expired"
ALL = "*"  # the "tenant" of a button that acts on all expired tenants
_DURATION = re.compile(r"^(\d{1,4})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
MAX_SNOOZE = timedelta(days=90)
_EMAIL = re.compile(r"^[^@\s<>|]+@[^@\s<>|]+\.[^@\s<>|]+$")
_TENANT_REF = re.compile(r"^[\w.\- ]{1,120}$")
# Slack wraps e-mail addresses as <mailto:a@b.c|a@b.c>; keep the visible part.
_SLACK_MAILTO = re.compile(r"<mailto:([^|>]+)(?:\|[^>]*)?>")
MAX_TEXT = 500


def _tenant(ref: str, verb: str) -> str:
    if not _TENANT_REF.match(ref):
        raise CommandSyntaxError(
            f"'{ref[:40]}' does not look like a tenant name. Usage: renew-token {verb} <tenant>"
        )
    return ref


PREFIXES = ("/renew-token", "renew-token")


def strip_command(line: str) -> str:
    """The arguments of a typed line: `/renew-token x` (Slack), `renew-token x` (Teams) or `x`."""
    text = line.strip()
    for prefix in PREFIXES:
        if text.lower().startswith(prefix) and text[len(prefix) : len(prefix) + 1] in ("", " "):
            return text[len(prefix) :].strip()
    return text


def parse(text: str, origin: Origin, requester: Actor) -> Command:
    """Read one command.

    Args:
        text: what the person typed after the command name.
        origin: where it was typed.
        requester: who typed it.

    Returns:
        The command.

    Raises:
        CommandSyntaxError: with a short reply that says what was wrong and how to write it.
    """
    if len(text) > MAX_TEXT:
        raise CommandSyntaxError("That command is too long. Try `renew-token help`.")
    cleaned = _SLACK_MAILTO.sub(r"\1", text).replace("\u00a0", " ")
    words = cleaned.split()
    if not words:
        raise CommandSyntaxError(
            "Which tenant? Usage: renew-token <tenant> [email]. Try `renew-token help`."
        )
    verb, args = words[0].lower(), words[1:]
    if verb == "renew" and args:  # `renew <tenant>` reads as the plain request
        words, verb, args = args, args[0].lower(), args[1:]
    if verb == ALL_EXPIRED:
        if args:
            raise CommandSyntaxError(f"`renew {ALL_EXPIRED}` takes no arguments.")
        return RenewAllExpired(origin, requester)
    if verb in _NO_ARG_VERBS:
        if args:
            raise CommandSyntaxError(f"`{verb}` takes no arguments. Try `renew-token help`.")
        no_arg: dict[str, Command] = {
            "pending": ListPending(),
            "status": ShowStatus(),
            "help": ShowHelp(),
        }
        return no_arg[verb]
    if verb == "snooze":
        return _snooze(args, requester)
    if verb == "errors":
        return ShowErrors(_tenant(" ".join(args), verb) if args else None)
    if verb in _TENANT_VERBS:
        if not args:
            raise CommandSyntaxError(f"Which tenant? Usage: renew-token {verb} <tenant>")
        ref = _tenant(" ".join(args), verb)
        if verb == "code":
            return IssueCode(ref, requester)
        if verb == "cancel":
            return CancelRenewal(ref, requester)
        if verb == "resend":
            return ResendInvitation(ref, requester)
        if verb == "validate":
            return ValidateTenant(ref, requester)
        if verb == "show":
            return ShowTenant(ref)
        return ShowHistory(ref)
    if args and (guess := difflib.get_close_matches(verb, _ALL_VERBS, n=1, cutoff=0.75)):
        raise CommandSyntaxError(f"Unknown command '{verb[:30]}'. Did you mean `{guess[0]}`?")
    return _renew(words, origin, requester)


def _snooze(args: list[str], requester: Actor) -> SnoozeAlerts:
    usage = "Usage: renew-token snooze <tenant> <30m|12h|2d|off>"
    if len(args) < 2:
        raise CommandSyntaxError(usage)
    ref, amount = " ".join(args[:-1]), args[-1].lower()
    if amount == "off":
        return SnoozeAlerts(_tenant(ref, "snooze"), None, requester)
    match = _DURATION.match(amount)
    if not match:
        raise CommandSyntaxError(f"'{amount[:20]}' is not a duration. {usage}")
    duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if not timedelta(0) < duration <= MAX_SNOOZE:
        raise CommandSyntaxError(f"A snooze lasts from 1 minute to 90 days. {usage}")
    return SnoozeAlerts(_tenant(ref, "snooze"), duration, requester)


def _renew(words: list[str], origin: Origin, requester: Actor) -> RequestRenewal:
    email = None
    if len(words) > 1 and "@" in words[-1]:
        if not _EMAIL.match(words[-1]):
            raise CommandSyntaxError(
                f"'{words[-1][:60]}' is not an e-mail address. Usage: renew-token <tenant> [email]"
            )
        email = words[-1]
        words = words[:-1]
    ref = " ".join(words)
    if "@" in ref and not _EMAIL.match(ref):
        raise CommandSyntaxError("Usage: renew-token <tenant> [email]")
    return RequestRenewal(_tenant(ref, "<tenant>").strip(), email, origin, requester)


def known_verbs() -> frozenset[str]:
    return frozenset(_ALL_VERBS)


def from_action(kind: str | None, tenant: str, origin: Origin, actor: Actor) -> Command | None:
    """A button click (Cancel, New code, Validate again, Renew) as the command it stands for."""
    if kind == "renew_all" and tenant == ALL:
        return RenewAllExpired(origin, actor)
    if not tenant or not _TENANT_REF.match(tenant):
        return None
    match kind:
        case "cancel":
            return CancelRenewal(tenant, actor)
        case "new_code":
            return IssueCode(tenant, actor)
        case "reinvite":
            return ResendInvitation(tenant, actor)
        case "validate":
            return ValidateTenant(tenant, actor)
        case "renew":
            return RequestRenewal(tenant, None, origin, actor)
    return None
