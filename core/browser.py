"""The browser sign-in ("Sign in with Microsoft": the authorization code with PKCE), step by step.

``start`` stores the pending sign-in on the renewal (its ``state`` only as a hash, the adapter's
flow state sealed by storage) and answers where to send the customer; ``finish`` consumes it once,
redeems the code and hands the sign-in to the same ``Validator.complete`` as the device code path.
A return that is not the invitation's pending one changes nothing. Must not know HTTP, cookies or
MSAL; the service's public methods (``RenewalService.start_browser_sign_in`` and
``finish_browser_sign_in``) are the way in.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from core import messages
from core.errors import IdentityProviderError, InvalidTransitionError, SignInStateError
from core.model import SYSTEM, Actor, BrowserSignIn, Renewal, RenewalState, Tenant
from core.ports import SignedIn
from core.validation import Validator

if TYPE_CHECKING:
    from core.services import RenewalService


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class BrowserSignIns:
    def __init__(self, service: RenewalService) -> None:
        self.s = service

    async def start(self, token: str, actor: Actor, admin_upn: str | None) -> str:
        s = self.s
        renewal, tenant = await s.open_invitation(token)
        if not s.config.browser_sign_in or not renewal.can_sign_in_with_browser:
            raise InvalidTransitionError(renewal.state, RenewalState.CODE_ISSUED)
        upn = (admin_upn or "").strip()[:254] or renewal.expected_account or tenant.admin_upn
        state = secrets.token_urlsafe(32)
        start = await s.identity.begin_browser_sign_in(
            tenant, login_hint=upn, redirect_uri=s.callback_url, state=state
        )
        now = s.clock.now()
        pending = BrowserSignIn(_hash(state), now + s.config.browser_sign_in_ttl, start.flow_state)
        async with s.uow() as uow:
            renewal = await s.load(uow, renewal.id)
            renewal.begin_browser_sign_in(pending, now)
            renewal.expected_account = upn
            await uow.renewals.save(renewal)
            await s.audit(uow, renewal, "renewal.browser_sign_in_started", actor)
            await uow.commit()
        return start.authorize_url

    async def finish(self, token: str, state: str, response: dict[str, str]) -> Renewal:
        """Consume the pending sign-in first (a replay finds none), then redeem the code."""
        s = self.s
        renewal, tenant = await s.open_invitation(token)
        now = s.clock.now()
        async with s.uow() as uow:
            renewal = await s.load(uow, renewal.id)
            try:
                flow_state = renewal.take_browser_sign_in(_hash(state), now)
            except SignInStateError as exc:
                if exc.why == "late":  # consumed all the same: a late return is not kept
                    await uow.renewals.save(renewal)
                    await uow.commit()
                raise
            await uow.renewals.save(renewal)
            await uow.commit()
        try:
            signed = await s.identity.finish_browser_sign_in(tenant, flow_state, response)
        except IdentityProviderError as exc:
            return await self._refused(renewal.id, tenant, exc)
        return await self._signed_in(renewal.id, tenant, signed)

    async def _signed_in(self, renewal_id: str, tenant: Tenant, signed: SignedIn) -> Renewal:
        s = self.s
        async with s.uow() as uow:
            renewal = await s.load(uow, renewal_id)
            renewal.browser_returned(s.clock.now())
            await uow.renewals.save(renewal)
            await s.audit(uow, renewal, "renewal.browser_returned", SYSTEM)
            await uow.commit()
        retry = await Validator(s).complete(renewal_id, tenant, signed)
        if retry is not None:  # Microsoft unreachable half way: the scheduler carries on
            s.watch_flow(renewal_id, retry)
        async with s.uow(read_only=True) as uow:
            return await s.load(uow, renewal_id)

    async def _refused(
        self, renewal_id: str, tenant: Tenant, exc: IdentityProviderError
    ) -> Renewal:
        """An error sent back: a new try can fix it (back to INVITED, said on the page and in
        the thread), or it cannot (FAILED, as on the device code path)."""
        s = self.s
        await s.record_error(tenant, exc)
        if exc.is_transient or messages.explain(exc.code).retry_with_new_code:
            now = s.clock.now()
            return await s.change(
                renewal_id, lambda r: r.browser_refused(exc.code, now), "renewal.browser_refused"
            )
        return await s.fail(renewal_id, exc.code)
