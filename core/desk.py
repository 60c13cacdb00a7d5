"""The support desk: runs one chat command and returns the reply, for every chat adapter alike.

Adapters give it the raw text, where it was typed and who typed it; it answers in plain language.
Errors a person can fix become replies here; anything else propagates to the adapter's catch-all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
from core.model import Actor, AuthState, Origin, RenewalState, Tenant, ThreadRef
from core.ports import AuditEntry, UnitOfWork
from core.services import RenewalService
from core.tenants import resolve
from core.validation import Validator


@dataclass(frozen=True)
class Reply:
    """What the adapter shows the person who typed the command (ephemeral where possible)."""

    text: str
    thread: ThreadRef | None = None
    #: the reply only says "see the thread": an adapter answering inside that thread may drop it
    just_points_to_thread: bool = False


def _age(since: datetime, now: datetime) -> str:
    minutes = int((now - since).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


async def _unreadable(uow: UnitOfWork, tenants: list[Tenant]) -> set[str]:
    """Keys of the expired tenants whose last recorded error is that their tokens cannot be read."""
    found = set()
    for t in tenants:
        if t.auth_state is AuthState.EXPIRED:
            last = await uow.identity_errors.newest(t.key, limit=1)
            if last and last[0].code == TokenCacheUnreadableError.code:
                found.add(t.key)
    return found


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

    async def handle(self, text: str, origin: Origin, actor: Actor) -> Reply:
        """Parse and execute what a person typed."""
        with logcontext.bound(platform=origin.platform):  # and what the command binds, until done
            try:
                cmd = commands.parse(text, origin, actor)
            except CommandSyntaxError as exc:
                return Reply(exc.reply)
            return await self.execute(cmd, origin, actor)

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
                async with s.uow() as uow:
                    tenant = await resolve(uow, ref)
                    open_renewal = await uow.renewals.active_for(tenant.key)
                    unreadable = await _unreadable(uow, [tenant])
                summary = messages.tenant_summary(tenant, open_renewal)
                if unreadable:
                    summary += "\n" + messages.tokens_unreadable(tenant.slug)
                return Reply(summary)
            case commands.ListPending():
                return await self._pending()
            case commands.ShowStatus():
                return await self._status()
            case commands.ShowHistory(tenant_ref=ref):
                async with s.uow() as uow:
                    tenant = await resolve(uow, ref)
                    entries = await uow.audit.for_tenant(tenant.key)
                if not entries:
                    return Reply(f"No history for {tenant.display_name} yet.")
                lines = [f"History of {tenant.display_name}, newest first:"]
                lines += [
                    f"{e.at:%Y-%m-%d %H:%M} {e.kind.split('.')[-1]} by {e.actor}"
                    + (f" ({e.detail})" if e.detail else "")
                    for e in entries
                ]
                return Reply("\n".join(lines))
            case commands.ShowErrors(tenant_ref=ref):
                return await self._errors(ref)
            case commands.ShowHelp():
                return Reply(messages.HELP)
            case commands.SnoozeAlerts(tenant_ref=ref, duration=duration):
                async with s.uow() as uow:
                    tenant = await resolve(uow, ref)
                    until = s.clock.now() + duration if duration else None
                    await uow.tenants.snooze(tenant.key, until)
                    await uow.commit()
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
        if renewal.thread is None:  # the chat refused the thread: do not strand the Auth URL
            return Reply(messages.no_thread(tenant, requested.auth_url))
        return Reply(messages.started(tenant), renewal.thread, just_points_to_thread=True)

    async def _validate(self, cmd: commands.ValidateTenant) -> Reply:
        s = self.service
        async with s.uow() as uow:
            tenant = await resolve(uow, cmd.tenant_ref)
            renewal = await uow.renewals.active_for(tenant.key)
        if renewal and renewal.state is RenewalState.TOKENS_ACQUIRED:
            renewal = await Validator(s).validate(renewal.id, tenant)
            return Reply(f"Validation ran: {renewal.state.value}.", renewal.thread)
        try:
            check = await s.identity.check_directory(tenant)
        except IdentityProviderError as exc:
            await s.record_error(tenant, exc)
            return Reply(messages.revalidation_failed(tenant, exc.code))
        if check.organization_id.lower() != tenant.tenant_id.lower():
            return Reply(messages.revalidation_failed(tenant, "graph_mismatch"))
        async with s.uow() as uow:
            await uow.tenants.mark_validated(tenant.key, s.clock.now())
            await uow.commit()
        return Reply(messages.revalidated(tenant, check.organization_name))

    async def _pending(self) -> Reply:
        s = self.service
        now = s.clock.now()
        async with s.uow(read_only=True) as uow:
            renewals = await uow.renewals.open()
            tenants = {r.tenant_key: await uow.tenants.get(r.tenant_key) for r in renewals}
            chased = await self.chaser.describe(uow, renewals)
        if not renewals:
            return Reply("No open invitations.")
        lines = ["Open invitations:"]
        for r in sorted(renewals, key=lambda r: r.created_at):
            t = tenants[r.tenant_key]
            name = t.display_name if t else r.tenant_key
            lines.append(
                f"{name}: {messages.STATE_LABELS[r.state]}, {_age(r.created_at, now)} old, "
                f"for {r.invitation_email}"
            )
            lines.append(f"  {chased[r.id]}")
        return Reply("\n".join(lines))

    async def _status(self) -> Reply:
        s = self.service
        async with s.uow() as uow:
            counts = await uow.tenants.counts_by_state()
            urgent = await uow.tenants.needing_action(limit=15)
            renewals = await uow.renewals.open()
            unreadable = await _unreadable(uow, urgent)
        total = sum(counts.values())
        order = [AuthState.HEALTHY, AuthState.EXPIRING, AuthState.EXPIRED, AuthState.UNKNOWN]
        parts = [f"{counts[state]} {state.value}" for state in order if counts.get(state)]
        lines = [f"{total} tenants: {', '.join(parts) or 'none'}."]
        by_state: dict[str, int] = {}
        for r in renewals:
            by_state[r.state.value] = by_state.get(r.state.value, 0) + 1
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(by_state.items()))
        lines.append(f"Open renewals: {len(renewals)}" + (f" ({detail})" if detail else ""))
        if urgent:
            lines.append("Need action:")
            lines += [
                f"  {t.display_name} ({t.slug}): {t.auth_state.value}"
                + (f" ({messages.UNREADABLE_SHORT})" if t.key in unreadable else "")
                for t in urgent
            ]
        return Reply("\n".join(lines))

    async def _errors(self, ref: str | None) -> Reply:
        s = self.service
        async with s.uow(read_only=True) as uow:
            tenant = await resolve(uow, ref) if ref else None
            records = await uow.identity_errors.newest(tenant.key if tenant else None)
            names: dict[str, str] = {}
            for key in {r.tenant_key for r in records if r.tenant_key}:
                found = await uow.tenants.get(key)
                names[key] = f"{found.display_name} ({found.slug})" if found else "a removed tenant"
        if not records:
            return Reply("No identity errors recorded.")
        lines = ["Newest identity errors:"]
        for rec in records:
            ex = messages.explain(rec.code)
            seen_by = "" if rec.source in ("renewbot", "monitor") else f", reported by {rec.source}"
            lines.append(
                f"{rec.at:%Y-%m-%d %H:%M} {names.get(rec.tenant_key or '', 'no known tenant')}"
                f"{seen_by}: {rec.code}: "
                f"{ex.title}. Next: {ex.support}"
            )
        return Reply("\n".join(lines))
