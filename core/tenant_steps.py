"""Service steps on a tenant rather than a renewal: snooze its alerts, validate it again.

Like the renewal steps in core.services, each is audited in the transaction that makes it.
Must not know any chat platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from core import commands
from core.errors import IdentityProviderError
from core.model import Actor, Renewal, RenewalState, Tenant
from core.ports import AuditEntry, UnitOfWork
from core.tenants import resolve
from core.validation import Validator

if TYPE_CHECKING:
    from core.services import RenewalService


@dataclass(frozen=True)
class Revalidation:
    """What `validate` found: an open renewal's own validation, or the stored tokens checked."""

    tenant: Tenant
    renewal: Renewal | None = None
    problem: str | None = None  # an identity_codes entry
    organization_name: str = ""


class TenantSteps:
    def __init__(self, service: RenewalService) -> None:
        self.s = service

    async def _audit(
        self, uow: UnitOfWork, tenant: Tenant, kind: str, actor: Actor, detail: str
    ) -> None:
        await uow.audit.add(
            AuditEntry(self.s.clock.now(), kind, actor.describe(), None, tenant.key, detail)
        )

    async def snooze_alerts(self, cmd: commands.SnoozeAlerts) -> tuple[Tenant, datetime | None]:
        """Silence the tenant's health alerts until a time (None: alerts back on). Audited."""
        s = self.s
        async with s.uow() as uow:
            tenant = await resolve(uow, cmd.tenant_ref)
            until = s.clock.now() + cmd.duration if cmd.duration else None
            await uow.tenants.snooze(tenant.key, until)
            detail = f"until {until:%Y-%m-%d %H:%M} UTC" if until else "alerts back on"
            await self._audit(uow, tenant, "tenant.snoozed", cmd.requester, detail)
            await uow.commit()
        return tenant, until

    async def revalidate(self, cmd: commands.ValidateTenant) -> Revalidation:
        """`validate`: an open renewal holding new tokens is validated; otherwise the stored
        tokens are checked against Graph again and, when they answer for the tenant, it counts
        as validated now. Audited either way; a failure is recorded like any identity error."""
        s = self.s
        async with s.uow() as uow:
            tenant = await resolve(uow, cmd.tenant_ref)
            renewal = await uow.renewals.active_for(tenant.key)
        if renewal and renewal.state is RenewalState.TOKENS_ACQUIRED:
            return Revalidation(tenant, await Validator(s).validate(renewal.id, tenant))
        try:
            check = await s.identity.check_directory(tenant)
        except IdentityProviderError as exc:
            await s.record_error(tenant, exc)
            return await self._revalidated(tenant, cmd.requester, exc.code)
        if check.organization_id.lower() != tenant.tenant_id.lower():
            return await self._revalidated(tenant, cmd.requester, "graph_mismatch")
        return await self._revalidated(tenant, cmd.requester, None, check.organization_name)

    async def _revalidated(
        self, tenant: Tenant, actor: Actor, problem: str | None, name: str = ""
    ) -> Revalidation:
        s = self.s
        async with s.uow() as uow:
            if problem is None:
                await uow.tenants.mark_validated(tenant.key, s.clock.now())
            await self._audit(uow, tenant, "tenant.revalidated", actor, problem or "ok")
            await uow.commit()
        return Revalidation(tenant, None, problem, name)
