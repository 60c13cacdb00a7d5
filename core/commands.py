"""Commands (what a person asked for) and the one grammar every chat adapter shares.

``parse`` turns the text after the slash command (Slack) or after "renew-token" (Teams, console)
into a command. Bad text raises CommandSyntaxError with a reply fit for chat.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
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
class ListTenants:
    """Tenants with their token state; ``state`` narrows to one (expired, expiring ...)."""

    state: str | None


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
    | ListTenants
)

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
    entry = VERBS.get(verb)
    if entry is not None and entry.read is not None:
        return entry.read(verb, args, requester)
    if args and (guess := difflib.get_close_matches(verb, known_verbs(), n=1, cutoff=0.75)):
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
    return frozenset(name for name, v in VERBS.items() if v.read is not None) | {"renew"}


# -- the one table: each command's verb, permission and help line, declared once -----------------

Reader = Callable[[str, list[str], Actor], Command]


def _no_args(make: Callable[[], Command]) -> Reader:
    def read(verb: str, args: list[str], requester: Actor) -> Command:
        if args:
            raise CommandSyntaxError(f"`{verb}` takes no arguments. Try `renew-token help`.")
        return make()

    return read


def _one_tenant(make: Callable[[str, Actor], Command]) -> Reader:
    def read(verb: str, args: list[str], requester: Actor) -> Command:
        if not args:
            raise CommandSyntaxError(f"Which tenant? Usage: renew-token {verb} <tenant>")
        return make(_tenant(" ".join(args), verb), requester)

    return read


def _errors(verb: str, args: list[str], requester: Actor) -> Command:
    return ShowErrors(_tenant(" ".join(args), verb) if args else None)


TENANT_STATES = ("expired", "expiring", "healthy", "unknown")


def _tenants(verb: str, args: list[str], requester: Actor) -> Command:
    if not args:
        return ListTenants(None)
    state = args[0].lower()
    if len(args) > 1 or state not in TENANT_STATES:
        raise CommandSyntaxError(f"Usage: renew-token tenants [{'|'.join(TENANT_STATES)}]")
    return ListTenants(state)


def _snooze_reader(verb: str, args: list[str], requester: Actor) -> Command:
    return _snooze(args, requester)


@dataclass(frozen=True)
class Verb:
    """A command as a person types it: its usage and help line, whether it changes anything
    (the operate permission, core.access), and how its arguments are read (None: the plain
    renewal and `renew all-expired`, read by ``parse`` itself)."""

    command: type
    usage: str
    help: str
    operates: bool
    read: Reader | None = None


VERBS: dict[str, Verb] = {
    "": Verb(
        RequestRenewal,
        "<tenant> [email]",
        "start a renewal; posts the Auth URL in a new thread",
        True,
    ),
    "renew all-expired": Verb(
        RenewAllExpired,
        "renew all-expired",
        "one invitation per expired tenant, all in one summary thread",
        True,
    ),
    "code": Verb(
        IssueCode,
        "code <tenant>",
        "issue a device code now (during a call with the customer)",
        True,
        _one_tenant(IssueCode),
    ),
    "resend": Verb(
        ResendInvitation,
        "resend <tenant>",
        "a fresh invitation (new Auth URL, emailed again if configured)",
        True,
        _one_tenant(ResendInvitation),
    ),
    "cancel": Verb(
        CancelRenewal,
        "cancel <tenant>",
        "cancel the open renewal; its Auth URL stops working",
        True,
        _one_tenant(CancelRenewal),
    ),
    "validate": Verb(
        ValidateTenant,
        "validate <tenant>",
        "validate the tenant's tokens again",
        True,
        _one_tenant(ValidateTenant),
    ),
    "show": Verb(
        ShowTenant,
        "show <tenant>",
        "the tenant's configuration and last validation",
        False,
        _one_tenant(lambda ref, _who: ShowTenant(ref)),
    ),
    "tenants": Verb(
        ListTenants,
        "tenants [state]",
        "tenants with their token state (expired, expiring, healthy, unknown)",
        False,
        _tenants,
    ),
    "pending": Verb(
        ListPending, "pending", "open invitations with age and state", False, _no_args(ListPending)
    ),
    "status": Verb(
        ShowStatus,
        "status",
        "renewals per state and tenants that need action",
        False,
        _no_args(ShowStatus),
    ),
    "history": Verb(
        ShowHistory,
        "history <tenant>",
        "who asked, who signed in, when validated",
        False,
        _one_tenant(lambda ref, _who: ShowHistory(ref)),
    ),
    "errors": Verb(
        ShowErrors, "errors [tenant]", "newest identity errors, explained", False, _errors
    ),
    "snooze": Verb(
        SnoozeAlerts,
        "snooze <tenant> 2d",
        "silence the tenant's health alerts (30m, 12h, 2d; or off)",
        True,
        _snooze_reader,
    ),
    "help": Verb(ShowHelp, "help", "this text", False, _no_args(ShowHelp)),
}

OPERATING: tuple[type, ...] = tuple(v.command for v in VERBS.values() if v.operates)


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
