"""Command handlers: the only code that drives the renewal state machine.

Each handler opens a unit of work, changes the aggregate, commits, and only then talks to chat (via
the Notifier). Calls to the identity provider happen outside database transactions, so a slow
identity provider never holds a lock. Must not know any chat platform or library.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from core import commands, logcontext, messages, registration
from core.browser import BrowserSignIns
from core.errors import (
    ConcurrencyError,
    IdentityProviderError,
    InvalidTransitionError,
    InvitationGoneError,
    InvitationNotFoundError,
    NoActiveRenewalError,
)
from core.mailing import InvitationMail
from core.model import (
    SYSTEM,
    Actor,
    DeviceCode,
    Renewal,
    RenewalState,
    Tenant,
    ThreadRef,
)
from core.notifications import Notifier, Staged
from core.ports import (
    AuditEntry,
    Clock,
    IdentityErrorRecord,
    IdentityProvider,
    PollPending,
    UnitOfWork,
    UnitOfWorkFactory,
)
from core.tenants import resolve, unknown
from core.validation import Validator

log = logging.getLogger("renewbot.core")

NEW_CODE_GRACE = timedelta(seconds=15)
# How long one Start press may hold the invitation's device-flow claim: longer than a slow
# devicecode request (the identity adapter's timeout is 10 s), short enough that a process that
# died while holding it does not block a retry for long.
CODE_CLAIM = timedelta(seconds=30)
CODE_ISSUED = RenewalState.CODE_ISSUED
FlowWatcher = Callable[[str, float], None]
"""Called with (renewal id, seconds until the first poll) whenever a device code is issued."""


def hash_invitation(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Requested:
    """A new renewal, its tenant, and the Auth URL (shown once; only its hash is stored; empty
    when a fresh one replaced it before its thread was stored)."""

    renewal: Renewal
    tenant: Tenant
    auth_url: str = field(repr=False)


@dataclass(frozen=True)
class ServiceConfig:
    public_url: str
    invitation_ttl: timedelta = timedelta(days=7)
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    poll_lease: timedelta = timedelta(seconds=30)
    # "Sign in with Microsoft" (the authorization code with PKCE) offered on the page, and how
    # long the customer may take at Microsoft before the return is refused.
    browser_sign_in: bool = True
    browser_sign_in_ttl: timedelta = timedelta(minutes=10)


@dataclass
class RenewalService:
    """Request, start, poll, complete, validate and cancel renewals."""

    uow: UnitOfWorkFactory
    identity: IdentityProvider
    notifier: Notifier
    clock: Clock
    config: ServiceConfig
    watch_flow: FlowWatcher = field(default=lambda renewal_id, delay: None)
    #: emails each new invitation (and its reminder) when email is configured
    mail: InvitationMail | None = None

    def auth_url(self, token: str) -> str:
        return f"{self.config.public_url.rstrip('/')}/onboard/{token}"

    async def request_renewal(
        self,
        cmd: commands.RequestRenewal,
        *,
        thread: ThreadRef | None = None,
        batch: str | None = None,
    ) -> Requested:
        """Create a renewal with a fresh invitation, open its thread and post the Auth URL.

        A renewal of a batch (``renew all-expired``) posts in the batch's ``thread`` instead of
        opening its own.

        Raises:
            UnknownTenantError: nothing matches ``cmd.tenant_ref``.
            RenewalInProgressError: the tenant already has an open renewal (enforced by storage).
        """
        now = self.clock.now()
        token = secrets.token_urlsafe(32)
        invitation = hash_invitation(token)
        # The row first: the database's one-open-renewal-per-tenant constraint picks the winner
        # before anything reaches chat, so a retried or doubled command never opens a second
        # thread, whichever replica it reaches. The tenant is looked up by the same statement
        # where the database allows (an open renewal is found by the insert, not by a read).
        ref = cmd.tenant_ref.strip()
        renewal = Renewal(
            id=uuid.uuid4().hex,
            tenant_key="",  # assigned with the tenant that ``ref`` names
            requested_by=cmd.requester,
            invitation_email=cmd.email or "",
            origin=cmd.origin,
            created_at=now,
            thread=thread,
            batch=batch,
        )
        renewal.invite(invitation, now + self.config.invitation_ttl, self.auth_url(token), now)
        renewal.awaiting_thread = renewal.thread is None
        requested = self.audit_entry(renewal, "renewal.requested", cmd.requester)
        async with self.uow(one_write=thread is None) as uow:  # a batch's stages more
            # RenewalInProgressError: one is open (and nothing is written)
            tenant = await uow.renewals.add_for(ref, renewal, requested) if ref else None
            if tenant is not None:
                if not renewal.awaiting_thread:  # a batch's renewal posts in the batch's thread
                    await self._stage_invitation(uow, tenant, renewal)
                    await self.notifier.stage(uow, tenant, renewal)
                await uow.commit()
        if tenant is None:  # the close matches, looked for outside the write transaction
            async with self.uow(read_only=True) as uow:
                raise await unknown(uow, ref)
        logcontext.bind(renewal_id=renewal.id, tenant=tenant.slug)
        log.info("renewal.requested")
        if renewal.awaiting_thread:
            renewal = await self._open_thread(tenant, renewal)
        else:
            await self.notifier.flush()
        if renewal.invitation_hash != invitation:  # a fresh one replaced it meanwhile
            return Requested(renewal, tenant, "")
        return Requested(renewal, tenant, self.auth_url(token))

    async def _open_thread(self, tenant: Tenant, renewal: Renewal) -> Renewal:
        """Open the renewal's thread, then store it with what is to be posted there (the Auth
        URL) in one transaction: a crash on either side of it loses and doubles nothing. The
        Auth URL goes straight to this process's dispatcher (``Notifier.stage``, new_thread)."""
        thread = await self.notifier.open_thread(tenant, renewal)
        invitation, happened = renewal.invitation_hash, list(renewal.events)
        renewal.thread, renewal.awaiting_thread = thread, False
        try:
            staged = await self._store_thread(tenant, renewal)
        except ConcurrencyError:  # changed meanwhile (a replica reopening it): as it is now
            async with self.uow(read_only=True) as uow:
                renewal = await self.load(uow, renewal.id)
            if renewal.invitation_hash != invitation or not renewal.awaiting_thread:
                # a fresh Auth URL meanwhile (a replica reopened it, or support asked for one):
                # this thread's is dead, and the thread says so; the fresh one goes to the
                # renewal's own thread (the replica's, or the sweep's)
                if thread is not None:
                    await self.notifier.withdrawn(tenant, thread, reopened=True)
                return renewal
            renewal.thread, renewal.awaiting_thread = thread, False
            renewal.events = happened
            staged = await self._store_thread(tenant, renewal)
        await self.notifier.flush(staged)
        return renewal

    async def _store_thread(self, tenant: Tenant, renewal: Renewal) -> Staged:
        """The renewal with its new thread, and the thread's first messages. Without email, one
        statement on PostgreSQL (the invitation's emails mark its event first, then are rows of
        their own)."""
        new_thread = renewal.thread is not None
        prepared = None
        if self.mail is None:  # (the invitation's emails mark its event before it is rendered)
            prepared = self.notifier.prepare(tenant, renewal, new_thread=new_thread)
        async with self.uow(one_write=prepared is not None and prepared.one_write) as uow:
            await self._stage_invitation(uow, tenant, renewal)
            staged = await self.notifier.stage(
                uow, tenant, renewal, new_thread=new_thread, save=True, prepared=prepared
            )
            staged.wake = staged.wake or self.mail is not None  # its emails wait for a claim
            await uow.commit()
        return staged

    async def reopen_orphans(self, older_than: timedelta = timedelta(minutes=2)) -> int:
        """Open the thread of renewals whose process died between writing and posting them.

        Their Auth URL was never shown (only its hash is stored), so each gets a fresh one.
        Returns how many.
        """
        now = self.clock.now()
        async with self.uow() as uow:
            orphans = await uow.renewals.awaiting_thread(now - older_than)
        done = 0
        for orphan in orphans:
            async with self.uow() as uow:
                mine = await uow.renewals.claim_work(
                    orphan.id, self.config.worker_id, now + self.config.poll_lease, now
                )
                await uow.commit()
            if not mine:
                continue
            token = secrets.token_urlsafe(32)
            async with self.uow() as uow:
                renewal = await self.load(uow, orphan.id)
                tenant = await self.tenant_of(uow, renewal)
                if not renewal.awaiting_thread:
                    continue
                expires = now + self.config.invitation_ttl
                renewal.reinvite(hash_invitation(token), expires, self.auth_url(token), now)
                pending, renewal.events = renewal.events, []
                await uow.renewals.save(renewal)
                await self.audit(uow, renewal, "renewal.thread_reopened", SYSTEM)
                await uow.commit()
            renewal.events = pending
            renewal = await self._open_thread(tenant, renewal)
            done += 1
        return done

    async def lookup_invitation(self, token: str) -> tuple[Renewal, Tenant]:
        """The renewal behind an Auth URL in any state, for its status. Changes nothing.

        Raises:
            InvitationNotFoundError: unknown or tampered token.
        """
        async with self.uow() as uow:
            renewal = await uow.renewals.by_invitation(hash_invitation(token))
            if renewal is None:
                raise InvitationNotFoundError
            tenant = await self.tenant_of(uow, renewal)
        return renewal, tenant

    async def open_invitation(self, token: str) -> tuple[Renewal, Tenant]:
        """The renewal behind an Auth URL that can still be acted on. Changes nothing.

        Raises:
            InvitationNotFoundError: unknown or tampered token.
            InvitationGoneError: used, cancelled, failed or expired.
        """
        renewal, tenant = await self.lookup_invitation(token)
        if renewal.state is RenewalState.VALIDATED:
            raise InvitationGoneError("used")
        if renewal.state is RenewalState.CANCELLED:
            raise InvitationGoneError("cancelled")
        if renewal.state is RenewalState.EXPIRED or renewal.invitation_has_expired(
            self.clock.now()
        ):
            raise InvitationGoneError("expired")
        if renewal.state is RenewalState.FAILED:
            raise InvitationGoneError("failed")
        return renewal, tenant

    async def start_authentication(
        self, token: str, actor: Actor, admin_upn: str | None = None, *, fresh: bool = False
    ) -> Renewal:
        """The customer pressed Start authentication (or New code) on the page.

        Idempotent: a second press while a live code is showing returns the same code, unless
        ``fresh`` asks for a new one.
        """
        renewal, _ = await self.open_invitation(token)
        return await self._issue_code(renewal.id, actor, admin_upn, fresh=fresh)

    async def issue_code(self, cmd: commands.IssueCode) -> Renewal:
        """Support asked for a code during a call (``renew-token code tenant``)."""
        async with self.uow() as uow:
            tenant = await resolve(uow, cmd.tenant_ref)
            renewal = await uow.renewals.active_for(tenant.key)
        if renewal is None:
            raise NoActiveRenewalError(tenant.slug)
        return await self._issue_code(renewal.id, cmd.requester, None, fresh=True)

    async def _issue_code(
        self, renewal_id: str, actor: Actor, admin_upn: str | None, *, fresh: bool
    ) -> Renewal:
        now = self.clock.now()
        async with self.uow() as uow:
            renewal = await self.load(uow, renewal_id)
            tenant = await self.tenant_of(uow, renewal)
        code = renewal.device_code
        if renewal.state is RenewalState.CODE_ISSUED and code and code.expires_at > now:
            just_issued = renewal.code_issued_at and now - renewal.code_issued_at < NEW_CODE_GRACE
            if not fresh or renewal.tokens_acquired or just_issued:
                return renewal  # a double click is not a request for a second code
        elif renewal.state is not RenewalState.INVITED and renewal.state is not (
            RenewalState.CODE_ISSUED
        ):
            raise InvalidTransitionError(renewal.state, RenewalState.CODE_ISSUED)
        owner = self.config.worker_id
        async with self.uow() as uow:
            mine = await uow.renewals.claim_code(renewal_id, owner, now + CODE_CLAIM, now)
            await uow.commit()
        if not mine:
            return renewal  # another press is starting the code right now; the status shows it
        try:
            new_code = await self.identity.start_device_flow(tenant)
        except IdentityProviderError as exc:
            async with self.uow() as uow:
                await uow.renewals.release_code(renewal_id, owner)
                await uow.commit()
            await self.record_error(tenant, exc)
            if exc.is_transient or messages.explain(exc.code).retry_with_new_code:
                raise
            return await self.fail(renewal_id, exc.code)
        async with self.uow() as uow:
            renewal = await self.load(uow, renewal_id)
            if renewal.state is RenewalState.CODE_ISSUED:
                renewal.code_lapsed("replaced", now)
                renewal.events.clear()  # a replaced code is not news for the thread
            if admin_upn and admin_upn.strip():
                renewal.expected_account = admin_upn.strip()[:254]
            renewal.issue_code(new_code, actor, self.clock.now())
            await uow.renewals.save(renewal)
            await uow.renewals.release_code(renewal_id, owner)
            await self.audit(uow, renewal, "renewal.code_issued", actor)
            await self.notifier.stage(uow, tenant, renewal)
            await uow.commit()
        self.watch_flow(renewal.id, float(new_code.interval))
        await self.notifier.flush()
        return renewal

    async def advance(self, renewal_id: str) -> float | None:
        """Take one step of a renewal in flight: poll its device flow once, or, once signed in,
        carry on from what is stored (further token sets, validation). A renewal another
        process left half way, at any step, continues here.

        Returns:
            Seconds until the next step, or None when the renewal needs nothing more from us.
        """
        now = self.clock.now()
        async with self.uow() as uow:
            renewal = await uow.renewals.get(renewal_id)
            if renewal is None or not (renewal.is_signed_in or renewal.state is CODE_ISSUED):
                return None
            code = renewal.device_code
            if code is None and not renewal.is_signed_in:
                return None
            interval = code.interval if code else 0
            lease = max(self.config.poll_lease, timedelta(seconds=3 * interval))
            mine = await uow.renewals.claim_work(
                renewal_id, self.config.worker_id, now + lease, now
            )
            await uow.commit()
            if not mine:  # another process has it; look again in case that process dies
                return lease.total_seconds()
            tenant = await self.tenant_of(uow, renewal)
        if renewal.is_signed_in:
            return await Validator(self).resume(renewal_id, tenant)
        assert code is not None
        return await self._poll(renewal_id, tenant, code)

    async def _poll(self, renewal_id: str, tenant: Tenant, code: DeviceCode) -> float | None:
        if self.clock.now() >= code.expires_at:
            await self.lapse_code(renewal_id, "expired_token")
            return None
        try:
            result = await self.identity.poll(tenant, code)
        except IdentityProviderError as exc:
            if exc.is_transient:
                log.warning("identity.poll_unavailable", extra={"renewal_id": renewal_id})
                return float(code.interval)
            await self.record_error(tenant, exc)
            if messages.explain(exc.code).retry_with_new_code or self._browser_helps(exc.code):
                await self.lapse_code(renewal_id, exc.code)
            else:
                await self.fail(renewal_id, exc.code)
            return None
        if isinstance(result, PollPending):
            if result.code != code:
                async with self.uow() as uow:
                    renewal = await self.load(uow, renewal_id)
                    renewal.keep_polling(result.code)
                    await uow.renewals.save(renewal)
                    await uow.commit()
            return float(result.code.interval)
        return await Validator(self).complete(renewal_id, tenant, result)

    async def cancel(self, cmd: commands.CancelRenewal) -> Renewal:
        async with self.uow() as uow:
            tenant = await resolve(uow, cmd.tenant_ref)
            renewal = await uow.renewals.active_for(tenant.key)
            if renewal is None:
                raise NoActiveRenewalError(tenant.slug)
            renewal.cancel(cmd.requester, self.clock.now())
            await uow.renewals.save(renewal)
            await self.audit(uow, renewal, "renewal.cancelled", cmd.requester)
            await self.notifier.stage(uow, tenant, renewal)
            await uow.commit()
        await self.notifier.flush()
        return renewal

    async def expire_overdue(self) -> int:
        """Expire open renewals whose invitation ran out. Returns how many."""
        now = self.clock.now()
        async with self.uow() as uow:
            overdue = [r for r in await uow.renewals.open() if r.invitation_has_expired(now)]
        for r in overdue:
            await self.change(r.id, lambda r: r.expire(now), "renewal.expired")
        return len(overdue)

    # -- the browser sign-in (authorization code with PKCE): steps in core.browser ----------

    @property
    def callback_url(self) -> str:
        """The redirect URI registered for the app: where Microsoft sends the customer back."""
        return f"{self.config.public_url.rstrip('/')}/onboard/callback"

    def _browser_helps(self, code: str) -> bool:
        """A device-code refusal the browser sign-in avoids (Conditional Access that blocks the
        device code flow): the renewal stays open so the customer can use the browser."""
        return self.config.browser_sign_in and code == "AADSTS53003"

    async def start_browser_sign_in(
        self, token: str, actor: Actor, admin_upn: str | None = None
    ) -> str:
        """The customer pressed "Sign in with Microsoft": where to send their browser.

        Raises:
            InvitationNotFoundError, InvitationGoneError: as ``open_invitation``.
            InvalidTransitionError: already signed in, or the deployment does not offer it.
            IdentityProviderError: the authority could not be reached or refused.
        """
        return await BrowserSignIns(self).start(token, actor, admin_upn)

    async def finish_browser_sign_in(
        self, token: str, state: str, response: dict[str, str]
    ) -> Renewal:
        """Microsoft sent the customer back (``response``: code or error, and ``state``).

        Raises:
            InvitationNotFoundError, InvitationGoneError: as ``open_invitation``.
            SignInStateError: not this invitation's pending sign-in, already used or too late.
            ConcurrencyError: the same return is being handled at this moment.
        """
        return await BrowserSignIns(self).finish(token, state, response)

    # -- service steps: the only way the validator, the browser sign-in and the desk change a
    # renewal (each one transaction: state, audit and what chat is to show, together) ------------

    async def lapse_code(self, renewal_id: str, reason: str) -> None:
        """The code expired or the sign-in was refused: back to INVITED, a new code offered."""
        now = self.clock.now()
        await self.change(renewal_id, lambda r: r.code_lapsed(reason, now), "renewal.code_lapsed")

    async def fail(self, renewal_id: str, code: str) -> Renewal:
        """End the renewal as FAILED with ``code`` (an identity_codes entry), staged tokens gone."""
        now = self.clock.now()
        return await self.change(renewal_id, lambda r: r.fail(code, now), "renewal.failed")

    async def change(
        self, renewal_id: str, step: Callable[[Renewal], None], kind: str, actor: Actor = SYSTEM
    ) -> Renewal:
        """Apply ``step`` (a transition of core.model) to the stored renewal, audit it as
        ``kind`` and stage its chat posts, in one transaction; then have them delivered."""
        async with self.uow() as uow:
            renewal = await self.load(uow, renewal_id)
            tenant = await self.tenant_of(uow, renewal)
            step(renewal)
            await uow.renewals.save(renewal)
            await self.audit(uow, renewal, kind, actor)
            # What the change means for chat is stored with it: announced exactly once, even
            # when the process dies right after the commit.
            await self.notifier.stage(uow, tenant, renewal)
            await uow.commit()
        await self.notifier.flush()
        return renewal

    async def _stage_invitation(self, uow: UnitOfWork, tenant: Tenant, renewal: Renewal) -> None:
        """The invitation's emails commit with the invitation (when email is configured)."""
        if self.mail is not None:
            await self.mail.stage(uow, tenant, renewal)

    async def load(self, uow: UnitOfWork, renewal_id: str) -> Renewal:
        """The renewal in ``uow``. Raises InvitationNotFoundError when there is none."""
        renewal = await uow.renewals.get(renewal_id)
        if renewal is None:
            raise InvitationNotFoundError
        return renewal

    async def tenant_of(self, uow: UnitOfWork, renewal: Renewal) -> Tenant:
        """The renewal's tenant (always there: renewals reference tenants by foreign key)."""
        tenant = await uow.tenants.get(renewal.tenant_key)
        assert tenant is not None, "renewals reference tenants by foreign key"
        return tenant

    async def audit(self, uow: UnitOfWork, renewal: Renewal, kind: str, actor: Actor) -> None:
        """One audit entry for the renewal, in ``uow``."""
        await uow.audit.add(self.audit_entry(renewal, kind, actor))

    def audit_entry(self, renewal: Renewal, kind: str, actor: Actor) -> AuditEntry:
        detail = renewal.failure_code or renewal.signed_in_account or ""
        now = self.clock.now()
        return AuditEntry(now, kind, actor.describe(), renewal.id, renewal.tenant_key, detail)

    async def record_error(self, tenant: Tenant, exc: IdentityProviderError) -> None:
        """Store an identity error in msal_errors; an app-registration one is also announced
        (once, core.registration)."""
        async with self.uow() as uow:
            record = IdentityErrorRecord.of(self.clock.now(), tenant.key, exc, "renewbot")
            await uow.identity_errors.add(record)
            await uow.commit()
        await registration.report(self.uow, self.notifier, self.clock, exc.code)
