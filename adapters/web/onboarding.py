"""Routes of the onboarding page: GET shows, POSTs act (CSRF-protected), /status reports.

GET never changes state. Unknown links are 404, used/cancelled/expired/failed ones 410, bad CSRF
403, identity trouble an explained 409/503, never a traceback. The token in the path is never
logged (see bot.web's access logger). The page's first status poll records that the link was
opened (its script, not the GET: mail scanners fetch links but seldom run scripts); a code that
lapsed while the customer watches is replaced by the script through /auto-code. Each client is
rate limited before any database work: requests overall, and far more tightly the unknown links
it tries (429 with Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from adapters.web import page
from adapters.web.ratelimit import (
    ClientAddress,
    TokenBuckets,
    onboarding_misses,
    onboarding_requests,
    retry_after,
)
from core import messages
from core.chasing import Chaser
from core.errors import (
    ConcurrencyError,
    IdentityProviderError,
    InvalidTransitionError,
    InvitationGoneError,
    InvitationNotFoundError,
    StorageError,
)
from core.model import Actor, Renewal, RenewalState, Tenant
from core.services import RenewalService

log = logging.getLogger("renewbot.web")
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
CUSTOMER = Actor("web", "customer", "the customer")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_GONE = {
    "used": (
        "This link has been used",
        "The sign-in is complete and the tokens were acquired. You can close this page.",
    ),
    "cancelled": (
        "This link was cancelled",
        "Your support team cancelled this request. Ask "
        "them for a new link if you still need to sign in.",
    ),
    "expired": (
        "This link has expired",
        "Sign-in links are valid for a limited time. Ask your support team for a new link.",
    ),
    "failed": (
        "This sign-in could not be completed",
        "Please contact your support team; they can see what went wrong and send a new link.",
    ),
}


def status_of(renewal: Renewal, tenant: Tenant) -> dict[str, Any]:
    """What the page shows for a renewal. Contains the user code, never the device code."""
    s = renewal.state
    code = renewal.device_code if s is RenewalState.CODE_ISSUED else None
    problem = messages.explain(renewal.failure_code) if renewal.failure_code else None
    done = s in {RenewalState.TOKENS_ACQUIRED, RenewalState.VALIDATED}
    signing_in = s is RenewalState.CODE_ISSUED and renewal.tokens_acquired > 0
    if done:
        message = messages.ALL_TOKENS
    elif signing_in:
        message = "Signed in. Acquiring tokens..."
    elif code:
        message = "Enter the code at the Microsoft sign-in page. Waiting for you to sign in..."
    elif s is RenewalState.INVITED and problem:
        message = problem.customer
    elif s is RenewalState.INVITED:
        message = "Check the admin username, then sign in."
    elif s is RenewalState.FAILED and problem:
        message = problem.customer
    else:
        message = _GONE.get(s.value, ("", "This link can no longer be used."))[1]
    return {
        "state": s.value,
        "tenant": tenant.display_name,
        "user_code": code.user_code if code and not signing_in else None,
        "verification_uri": code.verification_uri if code and not signing_in else None,
        "expires_at": code.expires_at.isoformat() if code else None,
        "acquired": renewal.tokens_acquired,
        "total": renewal.tokens_total,
        "message": message,
        "error": bool(problem) and not done and not code,
        "done": done,
        "final": s.is_terminal,
        "can_start": s is RenewalState.INVITED and not problem,
        "can_browser": renewal.can_sign_in_with_browser and not signing_in,
        "can_new_code": (s is RenewalState.INVITED and bool(problem))
        or (s is RenewalState.CODE_ISSUED and not signing_in),
        # the code ran out unused: the open page asks for a fresh one by itself
        "auto_new_code": s is RenewalState.INVITED and renewal.failure_code == "expired_token",
    }


class OnboardingPage:
    def __init__(
        self,
        service: RenewalService,
        csrf_key: bytes,
        public_url: str,
        choices: page.SignInChoices | None = None,
        *,
        requests: TokenBuckets | None = None,
        misses: TokenBuckets | None = None,
        client: Callable[[web.BaseRequest], str] | None = None,
        chaser: Chaser | None = None,
    ) -> None:
        self.service = service
        self.chaser = chaser or Chaser(service)
        self.csrf_key = csrf_key
        self.public_origin = _origin(public_url)
        self.requests = requests or onboarding_requests()
        self.misses = misses or onboarding_misses()
        self.client = client or ClientAddress()
        self.choices = choices or page.SignInChoices()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/onboard/{token}", self._limited(self.show)),
            web.get("/onboard/{token}/status", self._limited(self.status, json=True)),
            web.post("/onboard/{token}/start", self._limited(self.start)),
            web.post("/onboard/{token}/new-code", self._limited(self.new_code)),
            web.post("/onboard/{token}/auto-code", self._limited(self.auto_code)),
        ]

    def _limited(self, handler: Handler, *, json: bool = False) -> Handler:
        """``handler`` behind the client's buckets; a 404 it answers counts as a miss."""

        async def limited(request: web.Request) -> web.StreamResponse:
            key = self.client(request)
            wait = self.misses.wait(key) or self.requests.take(key)
            if wait:  # the access log records the 429; one line per refusal is enough
                return self._too_many(request, wait, json)
            response = await handler(request)
            if response.status == 404:
                self.misses.charge(key)
            return response

        return limited

    def _too_many(self, request: web.Request, wait: float, json: bool) -> web.Response:
        headers = {"Retry-After": retry_after(wait)}
        if json or "application/json" in request.headers.get("Accept", ""):
            return web.json_response(
                {"error": "too many requests", "retry_after": int(headers["Retry-After"])},
                status=429,
                headers=headers,
            )
        resp = self._notice(
            request,
            "Too many requests",
            "This address sent too many requests. Please wait a minute, then reload the page.",
            429,
        )
        resp.headers.update(headers)
        return resp

    def csrf_for(self, token: str) -> str:
        return hmac.new(self.csrf_key, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _token(request: web.Request) -> str | None:
        token = request.match_info["token"]
        return token if TOKEN_SHAPE.match(token) else None

    def _html(self, request: web.Request, text_for: Any, status: int = 200) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        resp = web.Response(text=text_for(nonce), content_type="text/html", status=status)
        resp.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
        return resp

    def _notice(self, request: web.Request, title: str, text: str, status: int) -> web.Response:
        return self._html(request, lambda nonce: page.notice(title, text, nonce), status)

    def _not_found(self, request: web.Request) -> web.Response:
        return self._notice(
            request,
            "This link is not valid",
            "Check that you copied the whole "
            "link from your support team's message, or ask them for a new one.",
            404,
        )

    async def show(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token is None:
            return self._not_found(request)
        try:
            renewal, tenant = await self.service.open_invitation(token)
        except InvitationNotFoundError:
            return self._not_found(request)
        except InvitationGoneError as exc:
            return await self._gone(request, token, exc.why)
        status = status_of(renewal, tenant)
        return self._html(
            request,
            lambda nonce: page.onboarding(
                tenant_name=tenant.display_name,
                admin_upn=renewal.expected_account or tenant.admin_upn,
                base=f"/onboard/{token}",
                csrf=self.csrf_for(token),
                status=status,
                nonce=nonce,
                choices=self.choices,
            ),
        )

    async def _gone(self, request: web.Request, token: str, why: str) -> web.Response:
        title, text = _GONE[why]
        if why == "failed":  # say why, in the customer's words
            renewal, _ = await self.service.lookup_invitation(token)
            if renewal.failure_code:
                text = messages.explain(renewal.failure_code).customer
        return self._notice(request, title, text, 410)

    async def status(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if token is None:
            return web.json_response({"error": "unknown link"}, status=404)
        try:
            renewal, tenant = await self.service.lookup_invitation(token)
        except InvitationNotFoundError:
            return web.json_response({"error": "unknown link"}, status=404)
        if renewal.link_opened_at is None and renewal.is_active:
            await self.chaser.link_opened(token)
        return web.json_response(status_of(renewal, tenant))

    async def start(self, request: web.Request) -> web.Response:
        return await self._act(request, fresh=False)

    async def new_code(self, request: web.Request) -> web.Response:
        return await self._act(request, fresh=True)

    async def auto_code(self, request: web.Request) -> web.Response:
        return await self._act(request, fresh=True, auto=True)

    async def _act(self, request: web.Request, *, fresh: bool, auto: bool = False) -> web.Response:
        token = self._token(request)
        if token is None:
            return self._not_found(request)
        wants_json = "application/json" in request.headers.get("Accept", "")
        form = (
            await request.post() if request.content_length and request.content_length < 4096 else {}
        )
        if not self._same_origin(request) or not hmac.compare_digest(
            str(form.get("csrf", "")), self.csrf_for(token)
        ):
            return self._notice(
                request,
                "Please reload the page",
                "This form has expired or "
                "did not come from this page. Reload the page and try again.",
                403,
            )
        upn = str(form.get("admin_upn", ""))[:254] or None
        try:
            if auto:
                renewal = await self.chaser.renew_lapsed_code(token, CUSTOMER)
            else:
                renewal = await self.service.start_authentication(token, CUSTOMER, upn, fresh=fresh)
        except InvitationNotFoundError:
            return self._not_found(request)
        except InvitationGoneError as exc:
            return await self._gone(request, token, exc.why)
        except IdentityProviderError as exc:
            ex = messages.explain(exc.code)
            return self._notice(request, ex.title, ex.customer, 503 if exc.is_transient else 409)
        except (InvalidTransitionError, ConcurrencyError):
            pass  # already signed in, or changed at the same moment: the status says where it is
        except StorageError:
            return self._notice(
                request,
                "Please try again",
                "We could not save your request. Please try again in a minute.",
                503,
            )
        if wants_json:
            renewal, tenant = await self.service.lookup_invitation(token)
            return web.json_response(status_of(renewal, tenant))
        raise web.HTTPSeeOther(f"/onboard/{token}")

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # some clients send no Origin; the CSRF token still protects us
        own = f"{request.scheme}://{request.host}"
        return origin in {own, self.public_origin}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
