"""Ports: what core needs from the outside world, in core's own words.

Adapters implement these Protocols; tests use the fakes in tests/fakes. No channel ids, MSAL dicts
or SQL here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from core.errors import IdentityProviderError
from core.model import AuthState, DeviceCode, Origin, Renewal, RenewalState, Tenant, ThreadRef


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class PollPending:
    """The customer has not finished; poll again after ``code.interval`` seconds."""

    code: DeviceCode


@dataclass
class StagedTokens:
    """A sign-in's tokens, held apart from the tenant's own until validation passes.

    Opaque to core (the identity adapter's serialized cache); the adapter replaces ``blob`` when a
    call adds or rotates a token, and core stores it (encrypted) with the renewal.
    """

    blob: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class SignedIn:
    """The device flow succeeded: claims of the signed-in account, read by the identity adapter.

    ``staged`` holds the new tokens; nothing of them is in the tenant's token cache yet.
    """

    account: str
    tenant_id: str
    object_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    staged: StagedTokens = field(default_factory=StagedTokens, repr=False, compare=False)


@dataclass(frozen=True)
class DirectoryCheck:
    """What Microsoft Graph says about the organization, called with the tenant's new token."""

    organization_id: str
    organization_name: str


@dataclass(frozen=True)
class BrowserSignInStart:
    """Where to send the customer's browser, and the adapter's opaque state to keep meanwhile.

    Both are secrets until used (the URL carries ``state``; ``flow_state`` the PKCE verifier and
    the nonce): excluded from repr.
    """

    authorize_url: str = field(repr=False)
    flow_state: bytes = field(repr=False)


class IdentityProvider(Protocol):
    """Device-flow sign-in and tokens for a customer tenant (MSAL in production)."""

    def token_set_names(self) -> Sequence[str]: ...

    async def start_device_flow(self, tenant: Tenant) -> DeviceCode:
        """Raises IdentityProviderError when the tenant refuses to start one."""

    async def poll(self, tenant: Tenant, code: DeviceCode) -> PollPending | SignedIn:
        """One poll of the token endpoint. Raises IdentityProviderError when the flow ended.

        A success leaves the tenant's stored tokens untouched: the new ones are in ``staged``.
        """

    async def acquire_silently(self, tenant: Tenant, token_set: str, staged: StagedTokens) -> None:
        """Get one more token set from the staged sign-in. Raises IdentityProviderError."""

    async def check_directory(
        self, tenant: Tenant, staged: StagedTokens | None = None
    ) -> DirectoryCheck:
        """Call Graph with the staged tokens (or, without, the tenant's stored ones).

        Raises IdentityProviderError.
        """

    async def promote(self, tenant: Tenant, staged: StagedTokens) -> None:
        """Make the staged tokens the tenant's, replacing what it had (after validation)."""

    async def refresh(self, tenant: Tenant) -> None:
        """Redeem the tenant's refresh token now (health check). Raises IdentityProviderError."""

    async def begin_browser_sign_in(
        self, tenant: Tenant, *, login_hint: str, redirect_uri: str, state: str
    ) -> BrowserSignInStart:
        """Prepare an authorization-code sign-in (PKCE, nonce) at the tenant's own authority."""

    async def finish_browser_sign_in(
        self, tenant: Tenant, flow_state: bytes, response: Mapping[str, str]
    ) -> SignedIn:
        """Redeem the code Microsoft sent back (``response``: the redirect's query parameters).

        Like ``poll``, a success leaves the tenant's stored tokens untouched (they are in
        ``staged``). Raises IdentityProviderError for an error sent back, a refused code, a
        ``state`` or nonce that does not match.
        """


Tone = Literal["info", "success", "warning", "error"]
ActionKind = Literal["cancel", "new_code", "validate", "renew", "renew_all"]


@dataclass(frozen=True)
class Action:
    """A button: what it does and to which tenant. Clicking it runs the matching command."""

    kind: ActionKind
    tenant: str
    label: str


@dataclass(frozen=True)
class Message:
    """What the bot says, platform-neutral: text, how it should look, and its buttons."""

    text: str
    tone: Tone = "info"
    actions: tuple[Action, ...] = ()


class ChatThreads(Protocol):
    """A chat platform's threads: open one, post in it, keep its status message, announce.

    Every method raises ChatDeliveryError when the platform finally refuses.
    """

    async def open_thread(self, origin: Origin, message: Message) -> ThreadRef:
        """Post the thread's first message (later updated in place as its status)."""

    async def post(self, thread: ThreadRef, message: Message) -> None: ...

    async def update_status(self, thread: ThreadRef, message: Message) -> None:
        """Replace the thread's first message."""

    async def announce(self, message: Message) -> None:
        """Post to the alert channel(s)."""


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None: ...

    async def get(self, key: str) -> Tenant | None: ...

    async def find_exact(self, ref: str) -> Tenant | None:
        """By slug, display name, primary domain or tenant id, ignoring case."""

    async def names(self) -> list[str]:
        """Slugs, display names and domains, for close-match suggestions."""

    async def all(self) -> list[Tenant]: ...

    async def mark_validated(self, key: str, at: datetime) -> None:
        """New tokens validated: healthy, and the inactivity clock restarts."""

    async def record_health(self, records: Sequence[HealthRecord]) -> None:
        """Store checks' outcomes and when to check next; releases their check leases."""

    async def snooze(self, key: str, until: datetime | None) -> None: ...

    async def claim_due(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[Tenant]:
        """Lease up to ``limit`` tenants whose check is due, so replicas split the work."""

    async def counts_by_state(self) -> dict[AuthState, int]: ...

    async def needing_action(self, limit: int = 20) -> list[Tenant]:
        """Expired and expiring tenants, most urgent first."""

    async def in_state(self, state: AuthState, limit: int = 500) -> list[Tenant]:
        """Tenants whose tokens are in ``state``, by display name."""


class RenewalRepository(Protocol):
    async def add(self, renewal: Renewal) -> None:
        """Raises RenewalInProgressError if the tenant already has an active renewal."""

    async def get(self, renewal_id: str) -> Renewal | None: ...

    async def save(self, renewal: Renewal) -> None:
        """Raises ConcurrencyError if someone saved this renewal since it was loaded."""

    async def active_for(self, tenant_key: str) -> Renewal | None: ...

    async def by_invitation(self, token_hash: str) -> Renewal | None: ...

    async def resumable(self) -> list[Renewal]:
        """Renewals with a device flow or a sign-in in progress (CODE_ISSUED, TOKENS_ACQUIRED),
        for the scheduler after a restart."""

    async def awaiting_thread(self, before: datetime) -> list[Renewal]:
        """INVITED renewals whose thread was never opened, last changed before ``before``."""

    async def claim_work(self, renewal_id: str, owner: str, until: datetime, now: datetime) -> bool:
        """Lease the right to advance this active renewal (poll, continue after sign-in, open
        its thread) until ``until``.

        True when ``owner`` already holds the lease, nobody does, or the holder's lease ran out:
        several bot processes share one database and each renewal is advanced by one of them.
        """

    async def claim_code(self, renewal_id: str, owner: str, until: datetime, now: datetime) -> bool:
        """Claim the start of a device flow for this invitation (INVITED or CODE_ISSUED).

        False while another caller's claim is live: concurrent Start presses make one code.
        """

    async def release_code(self, renewal_id: str, owner: str) -> None:
        """Give back a claim from ``claim_code`` (the code is saved, or starting it failed)."""

    async def open(self) -> list[Renewal]: ...

    async def in_batch(self, batch: str) -> list[Renewal]:
        """The renewals `renew all-expired` started together, oldest first."""

    async def for_tenant(self, tenant_key: str, limit: int = 10) -> list[Renewal]: ...

    async def count_by_state(self) -> dict[RenewalState, int]: ...

    async def validation_times(self) -> list[float]:
        """Seconds from request to validation of every validated renewal."""


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    kind: str
    actor: str
    renewal_id: str | None
    tenant_key: str | None
    detail: str = ""


@dataclass(frozen=True)
class HealthRecord:
    """What one health check found: the state, a successful refresh (None when it failed), and
    when to look again."""

    key: str
    state: AuthState
    refreshed_at: datetime | None
    next_check: datetime


@dataclass(frozen=True)
class IdentityErrorRecord:
    at: datetime
    tenant_key: str | None
    code: str
    error: str
    description: str
    correlation_id: str
    source: str = "renewbot"
    client_ref: str | None = None  # the reporter's own id, for idempotent intake

    @classmethod
    def of(
        cls, at: datetime, tenant_key: str | None, exc: IdentityProviderError, source: str
    ) -> IdentityErrorRecord:
        """The stored form of an identity error (its description capped for storage)."""
        return cls(
            at, tenant_key, exc.code, exc.error, exc.description[:2000], exc.correlation_id, source
        )


class AuditLog(Protocol):
    async def add(self, entry: AuditEntry) -> None: ...

    async def for_tenant(self, tenant_key: str, limit: int = 20) -> list[AuditEntry]: ...


class IdentityErrorLog(Protocol):
    async def add(self, record: IdentityErrorRecord) -> bool:
        """False when the same (source, client_ref) was stored before."""

    async def newest(
        self, tenant_key: str | None = None, limit: int = 10
    ) -> list[IdentityErrorRecord]: ...


class JobRuns(Protocol):
    async def claim(self, name: str, now: datetime, every: timedelta) -> bool:
        """True for exactly one caller per ``every``: that caller runs the job."""


class UnitOfWork(Protocol):
    @property
    def tenants(self) -> TenantRepository: ...

    @property
    def renewals(self) -> RenewalRepository: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def identity_errors(self) -> IdentityErrorLog: ...

    @property
    def jobs(self) -> JobRuns: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, read_only: bool = False) -> UnitOfWork:
        """A unit of work. ``read_only``: it only reads, so it need not queue behind writers
        (it sees the data as of its first read) and must not write."""


class TokenCacheStore(Protocol):
    """Encrypted, per-tenant storage of the MSAL token cache (used by the identity adapter)."""

    async def load(self, tenant_id: str) -> str | None: ...

    async def save(self, tenant_id: str, serialized: str) -> None: ...
