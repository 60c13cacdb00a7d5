"""The support desk: runs one chat command and returns the reply, for every chat adapter alike.

Adapters give it the raw text, where it was typed and who typed it; it answers in plain language.
It dispatches: commands that change something go to the service steps (core.services, which
audit them), questions go to the read side (core.views). Errors a person can fix become replies
here; anything else propagates to the adapter's catch-all. It changes no state itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass

from core import commands, logcontext, messages
from core.access import AccessPolicy, permission_for
from core.bulk import BulkRenewals
from core.chasing import Chaser
from core.errors import (
    CommandSyntaxError,
    ConcurrencyError,
    IdentityProviderError,
    InvalidTransitionError,
    NoActiveRenewalError,
    RenewalInProgressError,
    StorageError,
    TokenCacheUnreadableError,
    UnknownTenantError,
)
from core.model import Actor, Origin, RenewalState, ThreadRef
from core.ports import AuditEntry
from core.services import RenewalService
from core.tenant_steps import TenantSteps
from core.tenants import resolve
from core.views import Views

log = logging.getLogger("renewbot.desk")


@dataclass(frozen=True)
class Reply:
    """What the adapter shows the person who typed the command (ephemeral where possible)."""

    text: str
    thread: ThreadRef | None = None
    #: the reply only says "see the thread": an adapter answering inside that thread may drop it
    just_points_to_thread: bool = False


async def guarded(work: Awaitable[Reply], platform: str) -> Reply:
    """The one catch-all of every chat entry point: an unexpected error is logged with a short
    reference and the person gets an apology naming it, never the exception's text."""
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception:
        ref = uuid.uuid4().hex[:12]
        log.exception(f"{platform}.command_failed", extra={"ref": ref})
        return Reply(messages.apology(ref))


class Desk:
    def __init__(
        self,
        service: RenewalService,
        policy: AccessPolicy | None = None,
        bulk: BulkRenewals | None = None,
        chaser: Chaser | None = None,
    ) -> None:
        self.service = service
        self.policy = policy or AccessPolicy()
        self.bulk = bulk or BulkRenewals(service, service.notifier)
        self.chaser = chaser or Chaser(service)
        self.views = Views(service.uow, service.clock, self.chaser)

    async def handle(
        self, text: str, origin: Origin, actor: Actor, parsed: commands.Command | None = None
    ) -> Reply:
        """Parse and execute what a person typed (``parsed``: the adapter parsed it already)."""
        with logcontext.bound(platform=origin.platform):  # and what the command binds, until done
            if parsed is None:
                try:
                    parsed = commands.parse(text, origin, actor)
                except CommandSyntaxError as exc:
                    return Reply(exc.reply)
            return await self.execute(parsed, origin, actor)

    async def execute(self, cmd: commands.Command, origin: Origin, actor: Actor) -> Reply:
        """Check the person's rights, then run the command (typed or from a button)."""
        permission = permission_for(cmd)
        if not self.policy.allows(actor, origin, permission):
            await self._audit_refusal(cmd, origin, actor)
            return Reply(messages.not_allowed(permission.value))
        try:
            return await self.run(cmd)
        except UnknownTenantError as exc:
            return Reply(messages.unknown_tenant(exc.ref, exc.suggestions))
        except NoActiveRenewalError as exc:
            return Reply(messages.no_active(exc.tenant_slug))
        except InvalidTransitionError as exc:
            return Reply(f"That is not possible now: the renewal is {exc.current.value}.")
        except IdentityProviderError as exc:
            return Reply(messages.failed(exc.code))
        except ConcurrencyError:
            return Reply(messages.changed_meanwhile())
        except TokenCacheUnreadableError as exc:  # one tenant's tokens, not the database
            return Reply(
                messages.tokens_unreadable(getattr(cmd, "tenant_ref", None) or exc.tenant_id)
            )
        except StorageError:
            return Reply(messages.storage_unavailable())

    async def _audit_refusal(self, cmd: commands.Command, origin: Origin, actor: Actor) -> None:
        s = self.service
        detail = f"{type(cmd).__name__} in {origin.platform}:{origin.channel}"
        async with s.uow() as uow:
            await uow.audit.add(
                AuditEntry(s.clock.now(), "access.denied", actor.describe(), None, None, detail)
            )
            await uow.commit()

    async def run(self, cmd: commands.Command) -> Reply:
        s = self.service
        match cmd:
            case commands.RequestRenewal():
                return await self._renew(cmd)
            case commands.RenewAllExpired():
                started = await self.bulk.renew_all_expired(cmd)
                if started.thread is None:
                    return Reply(messages.no_expired())
                return Reply(
                    messages.batch_started(started.started, started.skipped), started.thread
                )
            case commands.IssueCode():
                renewal = await s.issue_code(cmd)
                code = renewal.device_code
                text = (
                    f"New code {code.user_code} posted in the thread." if code else "Code issued."
                )
                return Reply(text, renewal.thread)
            case commands.ResendInvitation():
                renewal = await self.chaser.resend_invitation(cmd)
                async with s.uow(read_only=True) as uow:
                    tenant = await resolve(uow, cmd.tenant_ref)
                return Reply(messages.fresh_invitation(tenant), renewal.thread)
            case commands.CancelRenewal():
                renewal = await s.cancel(cmd)
                return Reply("Cancelled. The Auth URL no longer works.", renewal.thread)
            case commands.ValidateTenant():
                return await self._validate(cmd)
            case commands.ShowTenant(tenant_ref=ref):
                return Reply(await self.views.tenant(ref))
            case commands.ListPending():
                return Reply(await self.views.pending())
            case commands.ListTenants(state=state):
                return Reply(await self.views.tenants(state))
            case commands.ShowStatus():
                return Reply(await self.views.status())
            case commands.ShowHistory(tenant_ref=ref):
                return Reply(await self.views.history(ref))
            case commands.ShowErrors(tenant_ref=ref):
                return Reply(await self.views.errors(ref))
            case commands.ShowHelp():
                return Reply(messages.HELP)
            case commands.SnoozeAlerts():
                tenant, until = await TenantSteps(s).snooze_alerts(cmd)
                return Reply(messages.snoozed(tenant, until))
        raise AssertionError(f"unhandled command {cmd!r}")

    async def _renew(self, cmd: commands.RequestRenewal) -> Reply:
        try:
            requested = await self.service.request_renewal(cmd)
        except RenewalInProgressError as exc:
            async with self.service.uow() as uow:
                tenant = await resolve(uow, cmd.tenant_ref)
            open_renewal = exc.renewal
            state = open_renewal.state if open_renewal else RenewalState.INVITED
            return Reply(
                messages.in_progress(tenant, state), open_renewal.thread if open_renewal else None
            )
        renewal, tenant = requested.renewal, requested.tenant
        if not requested.auth_url:  # replaced meanwhile: the renewal goes on with a fresh one
            return Reply(messages.in_progress(tenant, renewal.state), renewal.thread)
        if renewal.thread is None:  # the chat refused the thread: do not strand the Auth URL
            return Reply(messages.no_thread(tenant, requested.auth_url))
        return Reply(messages.started(tenant), renewal.thread, just_points_to_thread=True)

    async def _validate(self, cmd: commands.ValidateTenant) -> Reply:
        done = await TenantSteps(self.service).revalidate(cmd)
        if done.renewal is not None:  # an open renewal's own validation
            return Reply(f"Validation ran: {done.renewal.state.value}.", done.renewal.thread)
        if done.problem:
            return Reply(messages.revalidation_failed(done.tenant, done.problem))
        return Reply(messages.revalidated(done.tenant, done.organization_name))
