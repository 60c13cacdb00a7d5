"""The Renewal aggregate, its states and the one table of allowed transitions.

Only the transition methods change a renewal's state; each checks TRANSITIONS and records an
event. Nothing here reads the clock, talks to a network or knows a chat platform.

A browser sign-in ("Sign in with Microsoft", the authorization code with PKCE) needs no state of
its own: while the customer is at Microsoft the renewal stays INVITED (or CODE_ISSUED, a device
code still showing) and holds the pending sign-in (``browser_sign_in``, single use, short-lived);
when Microsoft sends the customer back with a code, the renewal moves to CODE_ISSUED (a code, the
authorization code, was issued) and continues exactly like a device-code sign-in.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from core import events
from core.errors import InvalidTransitionError, SignInStateError


class RenewalState(StrEnum):
    REQUESTED = "requested"
    INVITED = "invited"
    CODE_ISSUED = "code_issued"
    TOKENS_ACQUIRED = "tokens_acquired"
    VALIDATED = "validated"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in ACTIVE_STATES


class AuthState(StrEnum):
    """A tenant's token health, as the monitor last saw it."""

    UNKNOWN = "unknown"  # never checked
    HEALTHY = "healthy"
    EXPIRING = "expiring"  # the refresh token nears its 90-day inactivity limit
    EXPIRED = "expired"  # the refresh token is dead: a renewal is needed


S = RenewalState
_ENDINGS = {S.FAILED, S.EXPIRED, S.CANCELLED}
TRANSITIONS: dict[RenewalState, frozenset[RenewalState]] = {
    S.REQUESTED: frozenset({S.INVITED, *_ENDINGS}),
    S.INVITED: frozenset({S.CODE_ISSUED, *_ENDINGS}),
    S.CODE_ISSUED: frozenset({S.TOKENS_ACQUIRED, S.INVITED, *_ENDINGS}),
    S.TOKENS_ACQUIRED: frozenset({S.VALIDATED, *_ENDINGS}),
    S.VALIDATED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}
ACTIVE_STATES = frozenset({S.REQUESTED, S.INVITED, S.CODE_ISSUED, S.TOKENS_ACQUIRED})


@dataclass
class Tenant:
    """A customer Microsoft 365 tenant the MSP manages."""

    key: str
    slug: str
    display_name: str
    tenant_id: str
    primary_domain: str
    admin_upn: str
    last_validated_at: datetime | None = None
    auth_state: AuthState = AuthState.UNKNOWN
    last_refresh_at: datetime | None = None
    snoozed_until: datetime | None = None
    # The tenant's initial *.onmicrosoft.com domain: its SharePoint host comes from this, not
    # from the primary domain. Learnt from Graph at sign-in, or set by `tenants import`.
    initial_domain: str = ""

    @property
    def sharepoint_label(self) -> str:
        """``contosoltd`` of contosoltd.onmicrosoft.com, as in contosoltd-admin.sharepoint.com."""
        return (self.initial_domain or self.primary_domain).split(".")[0]

    def is_snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and now < self.snoozed_until


@dataclass(frozen=True)
class Actor:
    """Who did something: a chat user, the customer on the page, or the system."""

    platform: str
    user_id: str
    name: str = ""
    groups: frozenset[str] = field(default_factory=frozenset, compare=False)
    workspace: str = ""

    def describe(self) -> str:
        return self.name or self.user_id


SYSTEM = Actor("system", "renewbot", "renewbot")


@dataclass(frozen=True)
class ThreadRef:
    """Where a renewal's conversation lives. ``key`` is opaque to core."""

    platform: str
    key: str


@dataclass(frozen=True)
class Origin:
    """Where a command was typed; the thread opens there. ``channel`` is opaque to core.

    ``parent`` is the wider place ``channel`` belongs to, when the platform has one (the channel
    of a Teams thread); access rules for a channel also cover its threads.
    """

    platform: str
    channel: str
    parent: str = field(default="", compare=False)


@dataclass(frozen=True)
class DeviceCode:
    """A device-flow sign-in in progress.

    ``flow_state`` is the identity adapter's opaque state (it holds the device code); core stores it
    and hands it back, never shows it. It is excluded from repr so it cannot reach a log line.
    """

    user_code: str
    verification_uri: str
    expires_at: datetime
    interval: int
    flow_state: bytes = field(repr=False)


@dataclass(frozen=True)
class BrowserSignIn:
    """A browser sign-in in progress: the customer was sent to Microsoft's authorize endpoint.

    Only a hash of ``state`` is kept (the return must present the state itself); ``flow_state`` is
    the identity adapter's opaque state (it holds the PKCE verifier and the nonce: a secret, stored
    encrypted, excluded from repr).
    """

    state_hash: str
    expires_at: datetime
    flow_state: bytes = field(repr=False)


@dataclass
class Renewal:
    """One attempt to renew a tenant's tokens, from the chat command to validation."""

    id: str
    tenant_key: str
    requested_by: Actor
    invitation_email: str
    origin: Origin
    created_at: datetime
    expected_account: str = ""
    state: RenewalState = S.REQUESTED
    updated_at: datetime | None = None
    invitation_hash: str | None = None
    invitation_expires_at: datetime | None = None
    device_code: DeviceCode | None = None
    code_issued_at: datetime | None = None
    tokens_acquired: int = 0
    tokens_total: int = 0
    signed_in_account: str | None = None
    signed_in_is_global_admin: bool | None = None
    failure_code: str | None = None  # the last problem: why the code lapsed or why it failed
    warnings: list[str] = field(default_factory=list)
    thread: ThreadRef | None = None
    batch: str | None = None  # started by `renew all-expired`: shares the batch's summary thread
    version: int = 0
    # The sign-in's tokens, held apart from the tenant's own until every check passed (the
    # identity adapter's opaque, encrypted-at-rest form). A refused sign-in never touches the
    # tenant's working tokens; a crash after sign-in resumes from here.
    staged_tokens: bytes | None = field(default=None, repr=False, compare=False)
    # Written before its thread opens (the database decides which request wins, so replicas
    # never open two threads); cleared once the thread is open or the chat refused it.
    awaiting_thread: bool = False
    browser_sign_in: BrowserSignIn | None = field(default=None, compare=False)
    # Chasing (core.chasing): when the current invitation was made, when its page was first
    # opened (by the page's script), and how many codes lapsed unused since.
    invited_at: datetime | None = None
    link_opened_at: datetime | None = None
    codes_lapsed: int = 0
    events: list[events.Event] = field(default_factory=list, repr=False, compare=False)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def assign(self, tenant: Tenant) -> None:
        """Make this ``tenant``'s renewal: the account expected to sign in is its administrator,
        who is also invited unless another address was given. (PostgreSQL's
        ``RenewalRepository.add_for`` says the same in SQL.)"""
        self.tenant_key = tenant.key
        self.expected_account = tenant.admin_upn
        self.invitation_email = self.invitation_email or tenant.admin_upn

    def _move(self, target: RenewalState, now: datetime) -> None:
        if target not in TRANSITIONS[self.state]:
            raise InvalidTransitionError(self.state, target)
        self.state = target
        self.updated_at = now

    def invite(self, token_hash: str, expires_at: datetime, auth_url: str, now: datetime) -> None:
        self._move(S.INVITED, now)
        self.invitation_hash = token_hash
        self.invitation_expires_at = expires_at
        self.invited_at = now
        self.events.append(events.RenewalInvited(self.id, auth_url))

    def reinvite(self, token_hash: str, expires_at: datetime, auth_url: str, now: datetime) -> None:
        """A fresh Auth URL for an invitation nobody has seen (its process died before posting)."""
        if self.state is not S.INVITED:
            raise InvalidTransitionError(self.state, S.INVITED)
        self.invitation_hash = token_hash
        self.invitation_expires_at = expires_at
        self.invited_at = now
        self.updated_at = now
        self.events.append(events.RenewalInvited(self.id, auth_url))

    def renew_invitation(
        self, token_hash: str, expires_at: datetime, auth_url: str, now: datetime
    ) -> None:
        """A fresh Auth URL (support pressed Send a fresh invitation): the old link dies, the
        chasing starts again. Only before sign-in; a code on show keeps working."""
        if self.state not in (S.INVITED, S.CODE_ISSUED) or self.tokens_acquired:
            raise InvalidTransitionError(self.state, S.INVITED)
        self.invitation_hash = token_hash
        self.invitation_expires_at = expires_at
        self.invited_at = now
        self.link_opened_at = None
        self.codes_lapsed = 0
        if self.state is S.INVITED:
            self.failure_code = None  # a lapsed code's message belongs to the old link
        self.updated_at = now
        self.events.append(events.RenewalInvited(self.id, auth_url))

    def link_opened(self, now: datetime) -> bool:
        """The customer's browser ran the page (its first status poll). True the first time."""
        if self.link_opened_at is not None or not self.is_active:
            return False
        self.link_opened_at = now
        return True

    @property
    def invitation_ref(self) -> str:
        """A short, non-secret name of the current invitation (a prefix of its hash)."""
        return (self.invitation_hash or "")[:16]

    def invitation_has_expired(self, now: datetime) -> bool:
        return self.invitation_expires_at is not None and now >= self.invitation_expires_at

    def issue_code(self, code: DeviceCode, actor: Actor, now: datetime) -> None:
        self._move(S.CODE_ISSUED, now)
        self.device_code = code
        self.code_issued_at = now
        self.failure_code = None
        self.events.append(
            events.DeviceCodeIssued(
                self.id, code.user_code, code.verification_uri, code.expires_at, actor
            )
        )

    def keep_polling(self, code: DeviceCode) -> None:
        """Store the adapter's updated flow state (e.g. a longer interval after slow_down)."""
        if self.state is not S.CODE_ISSUED:
            raise InvalidTransitionError(self.state, S.CODE_ISSUED)
        self.device_code = code

    def code_lapsed(self, reason: str, now: datetime) -> None:
        """The code expired or was declined: back to INVITED, the page offers a new code."""
        self._move(S.INVITED, now)
        self.device_code = None
        self.staged_tokens = None
        self.tokens_acquired = 0
        self.failure_code = reason
        if reason == "expired_token":  # an unused code ran out: the customer may be stuck
            self.codes_lapsed += 1
        self.events.append(events.CodeLapsed(self.id, reason))

    def signed_in(
        self, account: str, is_global_admin: bool, total: int, staged: bytes, now: datetime
    ) -> None:
        """The first token set came from the device flow; more may follow silently."""
        if self.state is not S.CODE_ISSUED or self.tokens_acquired:
            raise InvalidTransitionError(self.state, S.TOKENS_ACQUIRED)
        self.staged_tokens = staged
        self.signed_in_account = account
        self.signed_in_is_global_admin = is_global_admin
        self.device_code = None
        self.tokens_total = total
        self.tokens_acquired = 1
        self.updated_at = now
        self.events.append(events.TokenProgress(self.id, 1, total, account))

    @property
    def is_signed_in(self) -> bool:
        """Signed in, with further token sets or validation still to do (resumable)."""
        return self.state is S.TOKENS_ACQUIRED or (
            self.state is S.CODE_ISSUED and self.tokens_acquired > 0
        )

    def token_acquired(self, staged: bytes, now: datetime) -> None:
        if self.state is not S.CODE_ISSUED or self.tokens_acquired >= self.tokens_total:
            raise InvalidTransitionError(self.state, S.TOKENS_ACQUIRED)
        self.staged_tokens = staged
        self.tokens_acquired += 1
        self.updated_at = now
        self.events.append(
            events.TokenProgress(
                self.id, self.tokens_acquired, self.tokens_total, self.signed_in_account or ""
            )
        )

    def acquire_tokens(self, now: datetime) -> None:
        if self.tokens_acquired < self.tokens_total:
            raise InvalidTransitionError(self.state, S.TOKENS_ACQUIRED)
        self._move(S.TOKENS_ACQUIRED, now)
        self.events.append(events.TokensAcquired(self.id, self.signed_in_account or ""))

    def await_consent(self, now: datetime) -> None:
        """Tokens work, but only the signer consented: wait for consent for the organization."""
        if self.state is not S.TOKENS_ACQUIRED:
            raise InvalidTransitionError(self.state, S.VALIDATED)
        self.failure_code = "consent_for_user_only"
        self.updated_at = now

    def validate(self, warnings: list[str], now: datetime, is_global_admin: bool | None) -> None:
        """Every check passed; the staged tokens are now the tenant's (the caller promoted them).

        ``is_global_admin`` is what Graph (or the token's wids) said; None: not verified.
        """
        self._move(S.VALIDATED, now)
        self.staged_tokens = None
        self.failure_code = None
        self.signed_in_is_global_admin = is_global_admin
        self.warnings = list(warnings)
        self.events.append(
            events.RenewalValidated(self.id, self.signed_in_account or "", tuple(warnings))
        )

    def fail(self, code: str, now: datetime, detail: str = "") -> None:
        self._move(S.FAILED, now)
        self.failure_code = code
        self.device_code = None
        self.staged_tokens = None  # a refused sign-in's tokens are dropped, never promoted
        self.events.append(events.RenewalFailed(self.id, code, detail))

    def expire(self, now: datetime) -> None:
        self._move(S.EXPIRED, now)
        self.device_code = None
        self.staged_tokens = None
        self.events.append(events.RenewalExpired(self.id))

    def cancel(self, actor: Actor, now: datetime) -> None:
        self._move(S.CANCELLED, now)
        self.device_code = None
        self.staged_tokens = None
        self.events.append(events.RenewalCancelled(self.id, actor))

    # -- the browser sign-in (authorization code with PKCE) ------------------------------------

    @property
    def can_sign_in_with_browser(self) -> bool:
        """Waiting for the customer: invited, or a device code showing and nobody signed in."""
        return self.state is S.INVITED or (self.state is S.CODE_ISSUED and not self.tokens_acquired)

    def begin_browser_sign_in(self, pending: BrowserSignIn, now: datetime) -> None:
        """The customer was sent to Microsoft; a later start replaces an earlier one."""
        if not self.can_sign_in_with_browser:
            raise InvalidTransitionError(self.state, S.CODE_ISSUED)
        self.browser_sign_in = pending
        self.updated_at = now

    def take_browser_sign_in(self, state_hash: str, now: datetime) -> bytes:
        """Consume the pending browser sign-in whose state hashes to ``state_hash`` (single use).

        Raises:
            SignInStateError: none pending, another state, or its time ran out.
        """
        pending = self.browser_sign_in
        if pending is None or not self.can_sign_in_with_browser:
            raise SignInStateError("used")
        if not hmac.compare_digest(pending.state_hash, state_hash):
            raise SignInStateError("unknown")
        self.browser_sign_in = None
        self.updated_at = now
        if now >= pending.expires_at:
            raise SignInStateError("late")
        return pending.flow_state

    def browser_returned(self, now: datetime) -> None:
        """Microsoft sent the customer back with a code that was redeemed: the sign-in is in
        progress, as after a device code (a showing device code is dropped)."""
        if self.state is S.INVITED:
            self._move(S.CODE_ISSUED, now)
        elif not self.can_sign_in_with_browser:
            raise InvalidTransitionError(self.state, S.CODE_ISSUED)
        self.device_code = None
        self.code_issued_at = now
        self.failure_code = None
        self.updated_at = now

    def browser_refused(self, reason: str, now: datetime) -> None:
        """Microsoft sent the customer back with an error a new try can fix: the page explains
        it and offers both ways again; the thread hears it like a lapsed code."""
        if self.state is S.CODE_ISSUED and not self.tokens_acquired:
            self.code_lapsed(reason, now)
            return
        if self.state is not S.INVITED:
            raise InvalidTransitionError(self.state, S.INVITED)
        self.failure_code = reason
        self.updated_at = now
        self.events.append(events.CodeLapsed(self.id, reason))
