"""After sign-in: acquire the remaining token sets silently, then validate (DESIGN.md section 3).

Validation rules: the signed-in tenant must be the renewal's tenant; Graph must answer with the new
token for that same organization; where consent was needed (the tenant's last identity error said
the Enterprise Application is missing or unconsented), the account must be a Global Administrator;
an account other than the configured M365 admin is a warning naming both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import messages
from core.errors import IdentityProviderError, InvalidTransitionError
from core.model import Renewal, RenewalState, Tenant
from core.ports import DirectoryCheck, SignedIn

if TYPE_CHECKING:
    from core.services import RenewalService

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
CONSENT_CODES = frozenset({"AADSTS65001", "AADSTS700016", "AADSTS90094"})


class Validator:
    def __init__(self, service: RenewalService) -> None:
        self.s = service

    async def complete(self, renewal_id: str, tenant: Tenant, signed: SignedIn) -> Renewal:
        """Record the sign-in, fetch every further token set, then validate."""
        s = self.s
        if signed.tenant_id.lower() != tenant.tenant_id.lower():
            await s._record_error(
                tenant, IdentityProviderError("wrong_tenant", "wrong_tenant", signed.tenant_id)
            )
            return await s._fail(renewal_id, "wrong_tenant")
        names = list(s.identity.token_set_names())
        is_ga = GLOBAL_ADMINISTRATOR in signed.roles
        now = s.clock.now()
        await s._change(
            renewal_id,
            lambda r: r.signed_in(signed.account, is_ga, len(names), now),
            "renewal.signed_in",
        )
        for name in names[1:]:
            try:
                await s.identity.acquire_silently(tenant, name)
            except IdentityProviderError as exc:
                await s._record_error(tenant, exc)
                return await s._fail(renewal_id, exc.code)
            await s._change(
                renewal_id, lambda r: r.token_acquired(s.clock.now()), "renewal.token_acquired"
            )
        await s._change(
            renewal_id, lambda r: r.acquire_tokens(s.clock.now()), "renewal.tokens_acquired"
        )
        return await self.validate(renewal_id, tenant)

    async def validate(self, renewal_id: str, tenant: Tenant) -> Renewal:
        """Validate a renewal in TOKENS_ACQUIRED. Graph unreachable: stays there, says so."""
        s = self.s
        async with s.uow() as uow:
            renewal = await s._load(uow, renewal_id)
        if renewal.state is not RenewalState.TOKENS_ACQUIRED:
            raise InvalidTransitionError(renewal.state, RenewalState.VALIDATED)
        try:
            check = await s.identity.check_directory(tenant)
        except IdentityProviderError as exc:
            await s._record_error(tenant, exc)
            if exc.is_transient:
                await s.notifier.note(tenant, renewal, messages.graph_unreachable())
                return renewal
            return await s._fail(renewal_id, "graph_failed")
        async with s.uow() as uow:
            last_errors = await uow.identity_errors.newest(tenant.key, limit=1)
        consent_needed = bool(last_errors) and last_errors[0].code in CONSENT_CODES
        problem = self.problem(renewal, tenant, check, consent_needed)
        if problem:
            return await s._fail(renewal_id, problem)
        warnings = self.warnings(renewal, tenant, check)
        now = s.clock.now()
        renewal = await s._change(
            renewal_id, lambda r: r.validate(warnings, now), "renewal.validated"
        )
        async with s.uow() as uow:
            await uow.tenants.mark_validated(tenant.key, now)
            await uow.commit()
        return renewal

    @staticmethod
    def problem(
        renewal: Renewal, tenant: Tenant, check: DirectoryCheck, consent_needed: bool
    ) -> str | None:
        if check.organization_id.lower() != tenant.tenant_id.lower():
            return "graph_mismatch"
        if consent_needed and not renewal.signed_in_is_global_admin:
            return "not_global_admin"
        return None

    @staticmethod
    def warnings(renewal: Renewal, tenant: Tenant, check: DirectoryCheck) -> list[str]:
        account = renewal.signed_in_account or ""
        expected = renewal.expected_account or tenant.admin_upn
        found = []
        if expected and account.lower() != expected.lower():
            found.append(messages.account_mismatch(expected, account))
        if not renewal.signed_in_is_global_admin:
            found.append(messages.not_global_admin_warning(account))
        return found
