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
    """What Microsoft Graph says about the organization and the account, with the new token.

    ``None`` means Graph would not say (a permission the app registration lacks); ``unverified``
    then holds why, in plain words. Only what Entra really provides is used (never ``wids``
    alone, which a default app registration does not emit).
    """

    organization_id: str
    organization_name: str
    initial_domain: str = ""  # verifiedDomains[isInitial]: the SharePoint host's source
    user_type: str = ""  # "Member" or "Guest"; "" when Graph would not say
    user_principal_name: str = ""
    is_global_admin: bool | None = None  # the signer's directory roles (transitiveMemberOf)
    tenant_wide_consent: bool | None = None  # an AllPrincipals oauth2PermissionGrant for our app
    unverified: tuple[str, ...] = ()


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
        self, tenant: Tenant, staged: StagedTokens | None = None, *, full: bool = True
    ) -> DirectoryCheck:
        """Call Graph with the staged tokens (or, without, the tenant's stored ones).

        Raises IdentityProviderError.
        """

    async def promote(self, tenant: Tenant, staged: StagedTokens) -> None:
        """Make the staged tokens the tenant's, replacing what it had (after validation)."""

    def admin_consent_url(self, tenant: Tenant) -> str:
        """Where a Global Administrator grants tenant-wide consent to our app."""

    async def refresh(self, tenant: Tenant) -> None:
        """Redeem the tenant's refresh token now (health check). Raises IdentityProviderError."""

    async def cached_access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken | None:
        """See TokenSource (the token API)."""

    async def access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken:
        """See TokenSource (the token API)."""

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
ActionKind = Literal["cancel", "new_code", "validate", "renew", "renew_all", "reinvite"]


@dataclass(frozen=True)
class Action:
    """A button: what it does and to which tenant. Clicking it runs the matching command."""

    kind: ActionKind
    tenant: str
    label: str


@dataclass(frozen=True)
class Mention:
    """A person to notify: the message opens with a real mention of them on their platform
    (Slack ``<@U123>``, a Teams mention entity); elsewhere their name is shown."""

    platform: str
    user_id: str
    name: str


@dataclass(frozen=True)
class Message:
    """What the bot says, platform-neutral: text, how it should look, and its buttons."""

    text: str
    tone: Tone = "info"
    actions: tuple[Action, ...] = ()
    #: the outbox's id of this message, set by the dispatcher when it sends one; an adapter that
    #: can attach it invisibly (Slack message metadata) lets a resend check it first
    ref: str = field(default="", compare=False)
    mention: Mention | None = None


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


class DeliveryCheck(Protocol):
    """Optional capability of a ChatThreads adapter: was a message sent before a crash?"""

    async def was_delivered(self, thread: ThreadRef | None, ref: str) -> bool:
        """True when a message carrying ``ref`` is in ``thread`` (the alert channel for None).
        Raises ChatRejectedError when the platform will not say (asking again will not help),
        ChatDeliveryError when it could not be asked now (ask again later)."""


OutboxKind = Literal["post", "status", "announce"]


@dataclass(frozen=True)
class Outgoing:
    """A message in the durable outbox, waiting to be delivered.

    ``conversation`` is the unit of order: messages of one conversation go out one at a time,
    oldest first. ``kind``: a reply in ``thread`` ("post"), the thread's status message ("status":
    latest wins, an older pending one is replaced), or an alert channel post ("announce", one per
    ``platform``). A status with ``batch`` and no message is a batch summary, rendered when sent.
    """

    conversation: str
    kind: OutboxKind
    platform: str
    thread: ThreadRef | None
    message: Message | None
    batch: str | None = None
    id: int = 0
    attempts: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True)
class Lease:
    """Who delivers a conversation (a process's dispatcher), and until when unless renewed."""

    owner: str
    until: datetime


@dataclass(frozen=True)
class FirstPost:
    """A thread's first message, stored with the renewal that opened the thread
    (``RenewalRepository.save(first=...)``) and held for ``hold.owner`` as ``Outbox.add(hold=)``
    holds it."""

    item: Outgoing
    hold: Lease
    at: datetime


class Outbox(Protocol):
    """Stored outgoing chat messages and which process delivers each conversation (leases).

    A message is handed out one at a time per conversation, oldest first, and counted as tried
    (``attempts`` + 1 stored) in the same transaction that hands it out, before anything is sent:
    whoever gets it next after a crash sees the try and can ask the platform whether it arrived.
    The ``Outgoing`` handed out carries the tries from before this one (0: certainly not sent).
    """

    async def add(
        self, item: Outgoing, now: datetime, hold: Lease | None = None
    ) -> Outgoing | None:
        """Store one message (a "status" replaces the conversation's pending status).

        ``hold``, for the first message of a conversation just begun (a thread just opened):
        lease the conversation to ``hold.owner`` in the same transaction and hand the message
        out at once, counted as tried, as a claim would: returned with its id (None without
        ``hold``, or when the conversation has a lease already; it is then stored as usual)."""

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> dict[str, Outgoing | None]:
        """Lease up to ``limit`` conversations that have messages due and no live lease (not
        ``owner``'s own either: it serves those already), each with its oldest message, counted
        as tried. None: the conversation emptied meanwhile (``advance`` lets it go)."""

    async def advance(
        self,
        conversation: str,
        owner: str,
        now: datetime,
        done: int | None = None,
        failed: str = "",
        until: datetime | None = None,
    ) -> Outgoing | None:
        """The message ``done`` went (deleted; with ``failed``, kept as undeliverable with that
        reason); return the conversation's next message, counted as tried. With ``until``, the
        lease is extended to it. None: nothing is left and the lease is dropped, or the lease is
        no longer ``owner``'s (it ran out and another process took the conversation over)."""

    async def finish(self, owner: str, done: dict[str, int]) -> dict[str, Outgoing | None]:
        """``advance`` of many conversations at once: per conversation, its message
        ``done[conversation]`` went (deleted); its next message is handed out (counted as
        tried), or, with nothing left, its lease is dropped (None; also when it is no longer
        ``owner``'s, and then nothing of it changes)."""

    async def renew(self, conversation: str, owner: str, until: datetime) -> bool:
        """Extend the lease; False: it is no longer ``owner``'s and nothing was changed."""

    async def release(
        self,
        conversation: str,
        owner: str,
        not_before: datetime | None = None,
        error: str = "",
        unsent: Outgoing | None = None,
    ) -> None:
        """Give the lease up; with ``not_before``, nobody sends in it before then (back-off).
        ``unsent``: the message in hand, with the tries it really had (stored as its count)."""

    async def head(self, conversation: str, limit: int) -> list[Outgoing]:
        """The conversation's pending messages, oldest first (as stored; nothing is counted)."""

    async def stats(self) -> dict[str, int]:
        """How many messages are "pending" and how many "failed"."""


EmailKind = Literal["invitation", "reminder"]


@dataclass(frozen=True)
class Email:
    """An email to the customer, platform-neutral: the mail adapter renders text and HTML.

    ``link`` is the Auth URL, a bearer secret: excluded from repr, stored only encrypted.
    """

    to: str
    subject: str
    intro: tuple[str, ...]
    link: str = field(repr=False)
    link_label: str = ""
    outro: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutgoingEmail:
    """An email in the email outbox. ``invitation`` names the invitation it belongs to
    (Renewal.invitation_ref): a fresh invitation makes the old one's pending emails obsolete.
    ``message_id`` stays the same on every attempt, so a receiver can drop a duplicate."""

    renewal_id: str
    kind: EmailKind
    invitation: str
    email: Email = field(repr=False)
    message_id: str = ""
    not_before: datetime | None = None
    id: int = 0
    attempts: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True)
class EmailRecord:
    """What became of one email, for `pending` (no body: that holds the Auth URL)."""

    renewal_id: str
    kind: EmailKind
    to: str
    state: Literal["pending", "sent", "failed", "dropped"]
    created_at: datetime
    not_before: datetime | None = None
    sent_at: datetime | None = None
    error: str = ""


class Mailer(Protocol):
    """Sends one email (SMTP in production, a local mailbox in the demo)."""

    async def send(self, email: Email, message_id: str) -> None:
        """Raises EmailRejectedError (refused for good) or EmailDeliveryError (try later)."""


class EmailOutbox(Protocol):
    """Stored emails, each sent by one process (a lease per row), once."""

    async def add(self, item: OutgoingEmail, now: datetime) -> None: ...

    async def claim(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[OutgoingEmail]:
        """Lease up to ``limit`` due emails (counting an attempt) that nobody holds."""

    async def sent(self, item_id: int, now: datetime) -> None:
        """Delivered: the body (the Auth URL) is wiped, the record kept."""

    async def failed(self, item_id: int, error: str, now: datetime) -> None: ...

    async def dropped(self, item_id: int, why: str, now: datetime) -> None:
        """No longer wanted (validated, cancelled, a fresh invitation, the link was opened)."""

    async def retry(self, item_id: int, owner: str, not_before: datetime, error: str) -> None:
        """Give the lease up; nobody sends it before ``not_before``."""

    async def history(self, renewal_ids: Sequence[str]) -> list[EmailRecord]: ...


class ChaseLog(Protocol):
    """Which chasing steps were taken: a row per (renewal, step), made once."""

    async def claim(self, renewal_id: str, step: str, at: datetime) -> bool:
        """Record ``step``; False when it was recorded before (by another replica, or before a
        restart). The caller stages what the step says in the same transaction."""

    async def taken(self, renewal_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        """renewal id -> step -> when, for the given renewals."""


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None: ...

    async def get(self, key: str) -> Tenant | None: ...

    async def find_exact(self, ref: str) -> Tenant | None:
        """By slug, display name, primary domain or tenant id, ignoring case."""

    async def names(self) -> list[str]:
        """Slugs, display names and domains, for close-match suggestions."""

    async def all(self) -> list[Tenant]: ...

    async def set_initial_domain(self, key: str, domain: str) -> None:
        """Remember the tenant's initial *.onmicrosoft.com domain (its SharePoint host)."""

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
    async def add(self, renewal: Renewal, audit: AuditEntry | None = None) -> None:
        """Store a new renewal, with ``audit`` (its entry in the audit log) when given: both or
        neither. Raises RenewalInProgressError if the tenant already has an active renewal."""

    async def add_for(self, ref: str, renewal: Renewal, audit: AuditEntry) -> Tenant | None:
        """``add`` for the tenant that ``ref`` names (as ``TenantRepository.find_exact``), made
        that tenant's first (``Renewal.assign``; the entry's tenant key too), in one statement
        where the database allows. Returns the tenant, or None when ``ref`` names none (and
        nothing is written). Raises RenewalInProgressError as ``add`` does."""

    async def get(self, renewal_id: str) -> Renewal | None: ...

    async def save(self, renewal: Renewal, first: FirstPost | None = None) -> Outgoing | None:
        """Raises ConcurrencyError if someone saved this renewal since it was loaded (and then
        stores nothing). ``first``: its new thread's first message, stored with it (one
        statement where the database allows) and returned as ``Outbox.add(hold=)`` returns it;
        None without ``first``."""

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

    async def count_by_state(self, open_only: bool = False) -> dict[RenewalState, int]:
        """Renewals per state; ``open_only``: the non-terminal states only (an index read,
        whatever the history)."""

    async def validation_histogram(self, bounds: Sequence[float]) -> DurationHistogram:
        """Seconds from request to validation of the validated renewals, as counts at most
        each bound: one aggregate, the same small answer whatever the number of renewals."""


@dataclass(frozen=True)
class DurationHistogram:
    """``at_most[i]`` renewals took at most ``bounds[i]`` seconds; ``count`` in all, together
    ``total_seconds``."""

    bounds: tuple[float, ...]
    at_most: tuple[int, ...]
    total_seconds: float
    count: int


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

    @property
    def outbox(self) -> Outbox: ...

    @property
    def webhooks(self) -> WebhookOutbox: ...

    @property
    def emails(self) -> EmailOutbox: ...

    @property
    def chases(self) -> ChaseLog: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, read_only: bool = False, one_write: bool = False) -> UnitOfWork:
        """A unit of work. ``read_only``: it only reads, so it need not queue behind writers
        (it sees the data as of its first read) and must not write. ``one_write``: it makes
        one repository write at most (all of it or nothing, as ever), so the database may run
        it without BEGIN and COMMIT (two round trips); each read sees the latest commits."""


class TokenCacheStore(Protocol):
    """Encrypted, per-tenant storage of the MSAL token cache (used by the identity adapter)."""

    async def load(self, tenant_id: str) -> str | None: ...

    async def save(self, tenant_id: str, serialized: str) -> None: ...


# -- the token API and webhooks (issue 15) ---------------------------------------------------


@dataclass(frozen=True)
class AccessToken:
    """An access token of one tenant's token set, as handed to the platform's services."""

    token: str = field(repr=False)
    expires_at: datetime
    scopes: tuple[str, ...]
    tenant_id: str
    account: str
    refreshed: bool = False  # this call redeemed the refresh token (not served from the cache)


class TokenSource(Protocol):
    """The part of an identity provider the token API uses (``IdentityProvider`` has it)."""

    def token_set_names(self) -> Sequence[str]: ...

    async def cached_access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken | None:
        """The tenant's stored token for ``token_set`` if it lives longer than ``min_left``.
        Never calls Microsoft. Raises TokenCacheUnreadableError."""

    async def access_token(
        self, tenant: Tenant, token_set: str, min_left: timedelta
    ) -> AccessToken:
        """The stored token if it lives longer than ``min_left``, else one redeemed with the
        stored refresh token (the rotated refresh token is saved). Raises IdentityProviderError
        (``no_account`` when the tenant never signed in) or TokenCacheUnreadableError."""


@dataclass(frozen=True)
class ServiceKey:
    """A service's key to the token API: only its hash is stored. Empty tuples mean "any"."""

    key_id: str
    service: str
    secret_hash: str = field(repr=False)
    tenants: tuple[str, ...]  # tenant keys
    token_sets: tuple[str, ...]
    rate_per_minute: int
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class TokenIssue:
    """The audit of one issued token: which service, tenant and set, when. Never the token."""

    at: datetime
    key_id: str
    service: str
    tenant_key: str
    token_set: str
    expires_at: datetime
    refreshed: bool


class TokenGrants(Protocol):
    """Storage of the token API: service keys, single-flight refresh leases, the audit."""

    async def key(self, key_id: str) -> ServiceKey | None: ...

    async def add_key(self, key: ServiceKey) -> None: ...

    async def keys(self) -> list[ServiceKey]: ...

    async def revoke(self, ref: str, at: datetime) -> int:
        """Revoke the live keys whose id or service name is ``ref``. Returns how many."""

    async def claim_refresh(
        self, tenant_id: str, token_set: str, owner: str, until: datetime, now: datetime
    ) -> bool:
        """Lease the refresh of one tenant's token set: True for one caller across replicas."""

    async def release_refresh(self, tenant_id: str, token_set: str, owner: str) -> None: ...

    async def issued(self, issue: TokenIssue) -> None:
        """Store the audit of an issued token (stored when this returns)."""


class WebhookOutbox(Protocol):
    """Events for the platform's services, written in the caller's transaction."""

    async def emit(self, kind: str, tenant: Tenant, at: datetime, reason: str = "") -> None: ...

    async def health(self, records: Sequence[HealthRecord], at: datetime) -> None:
        """Health checks about to be stored: an event for each tenant that turns expired,
        starts failing or recovers (call before ``TenantRepository.record_health``)."""
