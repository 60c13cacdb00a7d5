"""After sign-in: check the account, acquire the remaining token sets, validate, promote.

Every step starts from what is stored, so a process that died at any step is followed by one that
carries on (``resume``). The sign-in's tokens stay staged on the renewal until every check
passed; only then do they replace the tenant's (``IdentityProvider.promote``). A refused sign-in
changes nothing the tenant had.

Rules (DESIGN.md section 3), from sources Entra really provides (Graph, read by the identity
adapter; ``wids`` counts only when the token carries it):
- the signed-in tenant (``tid``) is the tenant's, and Graph answers for that organization;
- the account is a member of the tenant, not a B2B guest (checked with Graph right after the
  sign-in, before the refresh token is redeemed for any other resource);
- the tenant's SharePoint host comes from its initial domain, learnt here when not known yet;
- consent for the organization (an AllPrincipals grant): when only the signer consented, the
  renewal waits for a Global Administrator to grant it (the admin-consent link) and completes
  by itself; where consent was needed the account must be a Global Administrator;
- an account other than the configured M365 admin is a warning naming both; what Graph would
  not say is reported as "not verified" with the reason, never as a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from core import identity_codes, messages
from core.errors import IdentityProviderError, InvalidTransitionError
from core.model import Renewal, RenewalState, Tenant
from core.ports import DirectoryCheck, SignedIn, StagedTokens

if TYPE_CHECKING:
    from core.services import RenewalService

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
# The tid of every personal Microsoft account ("Microsoft identity platform ID tokens").
PERSONAL_ACCOUNTS_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"

# How soon to look again when Microsoft could not be reached half way through, or while a
# Global Administrator has yet to grant consent for the organization.
RETRY_UNAVAILABLE = 30.0


def _token_acquired(blob: bytes, now: datetime) -> Callable[[Renewal], None]:
    return lambda renewal: renewal.token_acquired(blob, now)


class Validator:
    """Drives a signed-in renewal to VALIDATED, FAILED, or back to INVITED for a new code."""

    def __init__(self, service: RenewalService) -> None:
        self.s = service

    async def complete(self, renewal_id: str, tenant: Tenant, signed: SignedIn) -> float | None:
        """Record the sign-in (its tokens staged), then carry on (``resume``).

        Returns:
            Seconds until the next try when something must be waited for, else None.
        """
        s = self.s
        if signed.tenant_id.lower() != tenant.tenant_id.lower():
            # Refused before anything is stored: the wrong account's refresh token is neither
            # redeemed for other token sets nor kept.
            await s.record_error(
                tenant, IdentityProviderError("wrong_tenant", "wrong_tenant", signed.tenant_id)
            )
            await self._refuse(renewal_id, "wrong_tenant")
            return None
        names = list(s.identity.token_set_names())
        is_ga = GLOBAL_ADMINISTRATOR in signed.roles
        blob, now = signed.staged.blob, s.clock.now()
        await s.change(
            renewal_id,
            lambda r: r.signed_in(signed.account, is_ga, len(names), blob, now),
            "renewal.signed_in",
        )
        return await self.resume(renewal_id, tenant)

    async def resume(self, renewal_id: str, tenant: Tenant) -> float | None:
        """Carry on a signed-in renewal from its stored step. Returns a retry delay or None."""
        s = self.s
        async with s.uow() as uow:
            renewal = await s.load(uow, renewal_id)
        if renewal.state is RenewalState.CODE_ISSUED and renewal.tokens_acquired:
            staged = StagedTokens(renewal.staged_tokens or b"")
            if renewal.tokens_acquired == 1:  # nothing redeemed yet: look at the account first
                try:
                    tenant = await self._check_account(renewal_id, tenant, staged)
                except _Stop as stop:
                    return stop.delay
            for name in list(s.identity.token_set_names())[renewal.tokens_acquired :]:
                try:
                    await s.identity.acquire_silently(tenant, name, staged)
                except IdentityProviderError as exc:
                    await s.record_error(tenant, exc)
                    if exc.is_transient:
                        return RETRY_UNAVAILABLE
                    await s.fail(renewal_id, exc.code)
                    return None
                await s.change(
                    renewal_id,
                    _token_acquired(staged.blob, s.clock.now()),
                    "renewal.token_acquired",
                )
            await s.change(
                renewal_id, lambda r: r.acquire_tokens(s.clock.now()), "renewal.tokens_acquired"
            )
        elif renewal.state is not RenewalState.TOKENS_ACQUIRED:
            return None
        # An outage is said once, when validation first finds it; later tries stay quiet.
        first_try = renewal.state is RenewalState.CODE_ISSUED
        renewal = await self.validate(renewal_id, tenant, say_outage=first_try)
        return RETRY_UNAVAILABLE if renewal.state is RenewalState.TOKENS_ACQUIRED else None

    async def _check_account(self, renewal_id: str, tenant: Tenant, staged: StagedTokens) -> Tenant:
        """Graph, with the new Graph token only: the organization and the account. Learns the
        tenant's initial domain. Raises _Stop when the renewal cannot go on now."""
        s = self.s
        try:
            check = await s.identity.check_directory(tenant, staged, full=False)
        except IdentityProviderError as exc:
            if exc.is_transient:
                # Graph down: go on; validation checks the account again before promoting, and
                # says the outage there (the renewal then waits in TOKENS_ACQUIRED).
                return tenant
            await s.record_error(tenant, exc)
            await s.fail(renewal_id, "graph_failed")
            raise _Stop(None) from None
        problem = self.account_problem(tenant, check)
        if problem:
            await self._refuse(renewal_id, problem)
            raise _Stop(None)
        if check.initial_domain and check.initial_domain.lower() != tenant.initial_domain.lower():
            async with s.uow() as uow:
                await uow.tenants.set_initial_domain(tenant.key, check.initial_domain.lower())
                await uow.commit()
            tenant.initial_domain = check.initial_domain.lower()
        return tenant

    async def _refuse(self, renewal_id: str, code: str) -> None:
        """An account we cannot take: a new code where one can help, else the renewal fails."""
        async with self.s.uow() as uow:
            renewal = await self.s.load(uow, renewal_id)
        if renewal.state is RenewalState.CODE_ISSUED and identity_codes.lookup(code).new_code_helps:
            await self.s.lapse_code(renewal_id, code)
        else:
            await self.s.fail(renewal_id, code)

    async def validate(self, renewal_id: str, tenant: Tenant, say_outage: bool = True) -> Renewal:
        """Validate a renewal in TOKENS_ACQUIRED. Graph unreachable, or consent for the
        organization still missing: stays there (and says so once)."""
        s = self.s
        async with s.uow() as uow:
            renewal = await s.load(uow, renewal_id)
        if renewal.state is not RenewalState.TOKENS_ACQUIRED:
            raise InvalidTransitionError(renewal.state, RenewalState.VALIDATED)
        # Renewals from before staging (no staged tokens) wrote straight to the tenant's cache.
        staged = StagedTokens(renewal.staged_tokens) if renewal.staged_tokens else None
        try:
            check = await s.identity.check_directory(tenant, staged)
        except IdentityProviderError as exc:
            await s.record_error(tenant, exc)
            if exc.is_transient:
                if say_outage:
                    await s.notifier.note(tenant, renewal, messages.graph_unreachable())
                return renewal
            return await s.fail(renewal_id, "graph_failed")
        async with s.uow() as uow:
            last_errors = await uow.identity_errors.newest(tenant.key, limit=1)
        consent_needed = bool(last_errors) and identity_codes.consent_missing(last_errors[0].code)
        is_ga = bool(renewal.signed_in_is_global_admin) or check.is_global_admin
        problem = self.account_problem(tenant, check) or self.role_problem(is_ga, consent_needed)
        if problem:
            return await s.fail(renewal_id, problem)
        if check.tenant_wide_consent is False:
            return await self._await_consent(renewal, tenant)
        warnings = self.warnings(renewal, tenant, check, is_ga)
        if staged is not None:
            # Promote before recording VALIDATED: a crash in between validates again from the
            # staged tokens (still on the renewal) and promotes the same tokens again.
            await s.identity.promote(tenant, staged)
        now = s.clock.now()
        renewal = await s.change(
            renewal_id, lambda r: r.validate(warnings, now, is_ga), "renewal.validated"
        )
        async with s.uow() as uow:
            await uow.tenants.mark_validated(tenant.key, now)
            await uow.webhooks.emit("tenant.validated", tenant, now)
            await uow.commit()
        return renewal

    async def _await_consent(self, renewal: Renewal, tenant: Tenant) -> Renewal:
        """Only the signer consented: ask for consent for the organization, once, and wait."""
        s = self.s
        if renewal.failure_code == "consent_for_user_only":
            return renewal
        renewal = await s.change(
            renewal.id, lambda r: r.await_consent(s.clock.now()), "renewal.consent_needed"
        )
        url = s.identity.admin_consent_url(tenant)
        await s.notifier.note(
            tenant, renewal, messages.consent_for_user_only(renewal.signed_in_account, url)
        )
        return renewal

    @staticmethod
    def account_problem(tenant: Tenant, check: DirectoryCheck) -> str | None:
        if check.organization_id.lower() != tenant.tenant_id.lower():
            return "graph_mismatch"
        if check.user_type.lower() == "guest":
            return "guest_account"
        return None

    @staticmethod
    def role_problem(is_ga: bool | None, consent_needed: bool) -> str | None:
        if consent_needed and is_ga is False:
            return "not_global_admin"
        return None

    @staticmethod
    def warnings(
        renewal: Renewal, tenant: Tenant, check: DirectoryCheck, is_ga: bool | None
    ) -> list[str]:
        account = renewal.signed_in_account or ""
        expected = renewal.expected_account or tenant.admin_upn
        found = []
        if expected and account.lower() != expected.lower():
            found.append(messages.account_mismatch(expected, account))
        if is_ga is False:
            found.append(messages.not_global_admin_warning(account))
        for reason in check.unverified:
            if is_ga and "Global Administrator" in reason:
                continue  # the token's own wids said so
            found.append(reason)
        return found


class _Stop(Exception):
    """The renewal cannot go on now: ``delay`` seconds until the next try, or None."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
