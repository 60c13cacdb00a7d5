"""After sign-in: acquire the remaining token sets silently, then validate (DESIGN.md section 3).

Validation rules: the signed-in tenant must be the renewal's tenant; Graph must answer with the new
token for that same organization; where consent was needed (the tenant's last identity error said
the Enterprise Application is missing or unconsented), the account must be a Global Administrator;
an account other than the configured M365 admin is a warning naming both.
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


# How soon to try again when Microsoft could not be reached half way through a sign-in.
RETRY_UNAVAILABLE = 30.0


def _token_acquired(blob: bytes, now: datetime) -> Callable[[Renewal], None]:
    return lambda renewal: renewal.token_acquired(blob, now)


class Validator:
    """Drives a signed-in renewal to VALIDATED or FAILED. Every step starts from what is stored,
    so a process that died at any step is followed by one that carries on (``resume``).

    The sign-in's tokens stay staged on the renewal until every check passed; only then do they
    replace the tenant's (``IdentityProvider.promote``). A refused sign-in changes nothing the
    tenant had.
    """

    def __init__(self, service: RenewalService) -> None:
        self.s = service

    async def complete(self, renewal_id: str, tenant: Tenant, signed: SignedIn) -> float | None:
        """Record the sign-in (its tokens staged), fetch every further token set, then validate.

        Returns:
            Seconds until the next try when Microsoft was unreachable, else None.
        """
        s = self.s
        if signed.tenant_id.lower() != tenant.tenant_id.lower():
            # Refused before anything is stored: the wrong account's refresh token is neither
            # redeemed for other token sets nor kept.
            await s._record_error(
                tenant, IdentityProviderError("wrong_tenant", "wrong_tenant", signed.tenant_id)
            )
            await s._fail(renewal_id, "wrong_tenant")
            return None
        names = list(s.identity.token_set_names())
        is_ga = GLOBAL_ADMINISTRATOR in signed.roles
        blob, now = signed.staged.blob, s.clock.now()
        await s._change(
            renewal_id,
            lambda r: r.signed_in(signed.account, is_ga, len(names), blob, now),
            "renewal.signed_in",
        )
        return await self.resume(renewal_id, tenant)

    async def resume(self, renewal_id: str, tenant: Tenant) -> float | None:
        """Carry on a signed-in renewal from its stored step. Returns a retry delay or None."""
        s = self.s
        async with s.uow() as uow:
            renewal = await s._load(uow, renewal_id)
        if renewal.state is RenewalState.CODE_ISSUED and renewal.tokens_acquired:
            staged = StagedTokens(renewal.staged_tokens or b"")
            for name in list(s.identity.token_set_names())[renewal.tokens_acquired :]:
                try:
                    await s.identity.acquire_silently(tenant, name, staged)
                except IdentityProviderError as exc:
                    await s._record_error(tenant, exc)
                    if exc.is_transient:
                        return RETRY_UNAVAILABLE
                    await s._fail(renewal_id, exc.code)
                    return None
                await s._change(
                    renewal_id,
                    _token_acquired(staged.blob, s.clock.now()),
                    "renewal.token_acquired",
                )
            await s._change(
                renewal_id, lambda r: r.acquire_tokens(s.clock.now()), "renewal.tokens_acquired"
            )
        elif renewal.state is not RenewalState.TOKENS_ACQUIRED:
            return None
        # An outage is said once, when validation first finds it; later tries stay quiet.
        first_try = renewal.state is RenewalState.CODE_ISSUED
        renewal = await self.validate(renewal_id, tenant, say_outage=first_try)
        return RETRY_UNAVAILABLE if renewal.state is RenewalState.TOKENS_ACQUIRED else None

    async def validate(self, renewal_id: str, tenant: Tenant, say_outage: bool = True) -> Renewal:
        """Validate a renewal in TOKENS_ACQUIRED. Graph unreachable: stays there (and says so)."""
        s = self.s
        async with s.uow() as uow:
            renewal = await s._load(uow, renewal_id)
        if renewal.state is not RenewalState.TOKENS_ACQUIRED:
            raise InvalidTransitionError(renewal.state, RenewalState.VALIDATED)
        # Renewals from before staging (no staged tokens) wrote straight to the tenant's cache.
        staged = StagedTokens(renewal.staged_tokens) if renewal.staged_tokens else None
        try:
            check = await s.identity.check_directory(tenant, staged)
        except IdentityProviderError as exc:
            await s._record_error(tenant, exc)
            if exc.is_transient:
                if say_outage:
                    await s.notifier.note(tenant, renewal, messages.graph_unreachable())
                return renewal
            return await s._fail(renewal_id, "graph_failed")
        async with s.uow() as uow:
            last_errors = await uow.identity_errors.newest(tenant.key, limit=1)
        consent_needed = bool(last_errors) and identity_codes.consent_missing(last_errors[0].code)
        problem = self.problem(renewal, tenant, check, consent_needed)
        if problem:
            return await s._fail(renewal_id, problem)
        warnings = self.warnings(renewal, tenant, check)
        if staged is not None:
            # Promote before recording VALIDATED: a crash in between validates again from the
            # staged tokens (still on the renewal) and promotes the same tokens again.
            await s.identity.promote(tenant, staged)
        now = s.clock.now()
        renewal = await s._change(
            renewal_id, lambda r: r.validate(warnings, now), "renewal.validated"
        )
        async with s.uow() as uow:
            await uow.tenants.mark_validated(tenant.key, now)
            await uow.webhooks.emit("tenant.validated", tenant, now)
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
