"""The one exception tree of renewbot. Adapters translate library errors into these at the boundary.

    RenewalError
    ├── UnknownTenantError          (carries close-match suggestions)
    ├── RenewalInProgressError      (carries the open renewal, to link its thread)
    ├── NoActiveRenewalError
    ├── InvalidTransitionError
    ├── InvitationError
    │   ├── InvitationNotFoundError (HTTP 404)
    │   ├── InvitationGoneError     (HTTP 410: used, cancelled or expired)
    │   └── SignInStateError        (HTTP 400: a browser sign-in's return that is not the one
    │                                this invitation started: wrong, used or late ``state``)
    ├── ConcurrencyError            (someone else changed the renewal first)
    ├── CommandSyntaxError          (chat text we cannot read)
    ├── IdentityProviderError       (.code: AADSTS code or OAuth error; never a secret)
    ├── ChatDeliveryError           (transient: retrying later may work)
    │   ├── ChatRateLimitedError    (.retry_after: seconds the platform asked us to wait)
    │   └── ChatRejectedError       (permanent: .reason, e.g. channel_not_found; never retried)
    ├── EmailDeliveryError          (transient: the mail server failed or was not reachable)
    │   └── EmailRejectedError      (permanent: the mail server refused, e.g. 550 no such user)
    └── StorageError
        └── TokenCacheUnreadableError (.tenant_id: a stored token cache no configured key opens,
                                       or that is not a token cache once opened)

Messages of these exceptions never contain tokens, codes or secrets: they may reach a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from core import identity_codes

if TYPE_CHECKING:
    from core.model import Renewal, RenewalState


class RenewalError(Exception):
    """Base of every error renewbot raises on purpose."""


class UnknownTenantError(RenewalError):
    def __init__(self, ref: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(f"no tenant matches {ref!r}")
        self.ref = ref
        self.suggestions = tuple(suggestions)


class RenewalInProgressError(RenewalError):
    def __init__(self, renewal: Renewal | None = None) -> None:
        super().__init__("a renewal is already open for this tenant")
        self.renewal = renewal


class NoActiveRenewalError(RenewalError):
    def __init__(self, tenant_slug: str) -> None:
        super().__init__(f"no open renewal for {tenant_slug}")
        self.tenant_slug = tenant_slug


class InvalidTransitionError(RenewalError):
    def __init__(self, current: RenewalState, target: RenewalState) -> None:
        super().__init__(f"cannot go from {current.value} to {target.value}")
        self.current = current
        self.target = target


class InvitationError(RenewalError):
    """The Auth URL cannot be used."""


class InvitationNotFoundError(InvitationError):
    def __init__(self) -> None:
        super().__init__("unknown invitation link")


class InvitationGoneError(InvitationError):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class SignInStateError(InvitationError):
    """A return from Microsoft that does not match the invitation's pending browser sign-in."""

    def __init__(self, why: str) -> None:
        super().__init__(f"browser sign-in return refused: {why}")
        self.why = why  # "unknown" (no such or another's state), "used", "late"


class ConcurrencyError(RenewalError):
    def __init__(self) -> None:
        super().__init__("the renewal changed concurrently")


class CommandSyntaxError(RenewalError):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class IdentityProviderError(RenewalError):
    """An answer of the identity provider that ends (or blocks) the sign-in.

    Attributes:
        code: ``AADSTS53003`` style code when the provider sent one, else the OAuth ``error``.
        error: the OAuth ``error`` field (``invalid_grant``, ``authorization_declined`` ...).
        description: the provider's description, for storage in msal_errors only (not chat).
        correlation_id: the provider's correlation id, when given.
    """

    def __init__(
        self,
        code: str,
        error: str = "",
        description: str = "",
        correlation_id: str = "",
    ) -> None:
        super().__init__(code)
        self.code = code
        self.error = error or code
        self.description = description
        self.correlation_id = correlation_id

    @property
    def is_transient(self) -> bool:
        return identity_codes.is_transient(self.code)


class ChatDeliveryError(RenewalError):
    """A chat platform did not take a message; trying again later may work (outage, 5xx)."""


class ChatRateLimitedError(ChatDeliveryError):
    """The platform throttled us (HTTP 429): wait ``retry_after`` seconds before the next send."""

    def __init__(self, retry_after: float, what: str = "") -> None:
        super().__init__(f"rate limited{' on ' + what if what else ''}, retry in {retry_after:g} s")
        self.retry_after = max(0.0, retry_after)


class ChatRejectedError(ChatDeliveryError):
    """The platform refused the message for good (unknown channel, bot removed, message too
    long ...): sending it again would fail the same way. ``reason`` is the platform's error code."""

    def __init__(self, reason: str, what: str = "") -> None:
        super().__init__(f"refused{' ' + what if what else ''}: {reason}")
        self.reason = reason


class StorageError(RenewalError):
    """The database failed or went away."""


class TokenCacheUnreadableError(StorageError):
    """A tenant's stored token cache cannot be used: no configured key decrypts it (a key that is
    not the one used, or the row was altered), or what it decrypts to is not a token cache.

    Only this tenant is affected: it needs a new sign-in (a renewal), which overwrites the cache.
    Carries the tenant id, never the ciphertext or what it decrypts to.
    """

    code = "token_cache_unreadable"  # as recorded in msal_errors and explained in core.messages

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"the stored token cache of tenant {tenant_id} cannot be read")
        self.tenant_id = tenant_id


class EmailDeliveryError(RenewalError):
    """The mail server could not take an email now (4xx, connection, TLS); later may work.

    ``reason`` is the server's code and words (never the message body, which holds the Auth URL).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmailRejectedError(EmailDeliveryError):
    """The mail server refused the email for good (5xx): sending it again cannot help."""
