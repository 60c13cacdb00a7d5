"""Routes of the browser sign-in: "Sign in with Microsoft" on the page, and Microsoft's return.

``POST /onboard/{token}/sign-in`` (CSRF-protected like the page's other POSTs) starts an
authorization-code sign-in and answers where to send the browser; it also sets a cookie that binds
the return to this browser and this invitation (HttpOnly, SameSite=Lax so that Microsoft's
redirect carries it, path /onboard/callback only). ``GET /onboard/callback`` is the redirect URI
registered for the app: it needs that cookie and the invitation's pending ``state``, redeems the
code once, and sends the customer back to their page, where the status tells how it went.

A return without the cookie, with another invitation's or a used ``state``, or for a used link is
a clear 4xx page and changes nothing. The code, the state and the cookie never reach a log: the
access log writes no query string and masks every /onboard/ path segment (bot.web).
"""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta

from aiohttp import web

from adapters.web import page
from adapters.web.onboarding import CUSTOMER, TOKEN_SHAPE, OnboardingPage, status_of
from core import messages
from core.errors import (
    ConcurrencyError,
    IdentityProviderError,
    InvalidTransitionError,
    InvitationGoneError,
    InvitationNotFoundError,
    SignInStateError,
    StorageError,
)
from core.model import RenewalState
from core.services import RenewalService

log = logging.getLogger("renewbot.web")
COOKIE = "renewbot_signin"
CALLBACK = "/onboard/callback"
# What Microsoft sends back ("Microsoft identity platform and OAuth 2.0 authorization code flow",
# successful and error responses); anything else in the query is ignored. Sizes are capped.
_RESPONSE = {"code": 8192, "state": 200, "error": 100, "error_description": 2000}
_REFUSED = {
    "unknown": (
        "This sign-in did not start here",
        "The answer from Microsoft does not belong to this sign-in. Open the link your support "
        "team sent you and press Sign in with Microsoft again.",
    ),
    "used": (
        "This sign-in was already completed",
        "This answer from Microsoft was already used. Open the link your support team sent "
        "you to see how the sign-in went.",
    ),
    "late": (
        "This sign-in took too long",
        "The sign-in at Microsoft took too long. Open the link your support team sent you and "
        "press Sign in with Microsoft again.",
    ),
}
_NO_COOKIE = (
    "Please start from your link",
    "This browser did not start this sign-in. Open the link your support team sent you, in "
    "this browser, and press Sign in with Microsoft.",
)


class BrowserSignInRoutes:
    def __init__(
        self,
        service: RenewalService,
        onboarding: OnboardingPage,
        *,
        secure_cookie: bool,
        ttl: timedelta = timedelta(minutes=10),
    ) -> None:
        self.service = service
        self.page = onboarding
        self.secure_cookie = secure_cookie
        self.ttl = ttl

    def routes(self) -> list[web.RouteDef]:
        """Register these before the page's own routes (``/onboard/{token}``)."""
        return [
            web.get(CALLBACK, self.callback),
            web.post("/onboard/{token}/sign-in", self.start),
        ]

    def _notice(self, request: web.Request, title: str, text: str, status: int) -> web.Response:
        return self.page._notice(request, title, text, status)

    async def start(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not TOKEN_SHAPE.match(token):
            return self.page._not_found(request)
        wants_json = "application/json" in request.headers.get("Accept", "")
        size = request.content_length
        form = await request.post() if size and size < 4096 else {}
        if not self.page._same_origin(request) or not _same(
            str(form.get("csrf", "")), self.page.csrf_for(token)
        ):
            return self._notice(
                request,
                "Please reload the page",
                "This form has expired or did not come from this page. Reload the page and try "
                "again.",
                403,
            )
        upn = str(form.get("admin_upn", ""))[:254] or None
        try:
            url = await self.service.start_browser_sign_in(token, CUSTOMER, upn)
        except InvitationNotFoundError:
            return self.page._not_found(request)
        except InvitationGoneError as exc:
            return await self.page._gone(request, token, exc.why)
        except IdentityProviderError as exc:
            ex = messages.explain(exc.code)
            return self._notice(request, ex.title, ex.customer, 503 if exc.is_transient else 409)
        except (InvalidTransitionError, ConcurrencyError):
            # signed in already, not offered here, or changed at this moment: the page says
            if wants_json:
                renewal, tenant = await self.service.lookup_invitation(token)
                return web.json_response(status_of(renewal, tenant))
            raise web.HTTPSeeOther(f"/onboard/{token}") from None
        except StorageError:
            return self._notice(
                request, "Please try again", "We could not save your request. Please try "
                "again in a minute.", 503
            )  # fmt: skip
        log.info("onboarding.browser_sign_in_started")
        if wants_json:
            response = web.json_response({"authorize_url": url})
        else:  # without script: a link (a redirect after a form post would meet form-action)
            response = self.page._html(
                request,
                lambda nonce: page.document(
                    "Continue to Microsoft",
                    "<main><h1>Continue to Microsoft</h1><p><a id=continue href='"
                    f"{page._e(url)}' rel=noreferrer>Sign in with Microsoft</a></p></main>",
                    nonce,
                ),
            )
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.ttl.total_seconds()),
            path=CALLBACK,
            httponly=True,
            samesite="Lax",
            secure=self.secure_cookie,
        )
        return response

    async def callback(self, request: web.Request) -> web.Response:
        token = request.cookies.get(COOKIE, "")
        query = request.query
        response = {
            k: query[k][:cap] for k, cap in _RESPONSE.items() if k in query and query[k][:cap]
        }
        if not TOKEN_SHAPE.match(token):
            return self._notice(request, *_NO_COOKIE, 400)
        if "state" not in response or not ({"code", "error"} & response.keys()):
            return self._notice(request, *_REFUSED["unknown"], 400)
        try:
            renewal = await self.service.finish_browser_sign_in(token, response["state"], response)
        except InvitationNotFoundError:
            return self._notice(request, *_NO_COOKIE, 400)
        except InvitationGoneError as exc:
            return await self.page._gone(request, token, exc.why)
        except SignInStateError as exc:
            log.warning("onboarding.browser_return_refused", extra={"why": exc.why})
            return self._notice(request, *_REFUSED[exc.why], 409 if exc.why == "used" else 400)
        except ConcurrencyError:
            return self._notice(request, *_REFUSED["used"], 409)
        except StorageError:
            return self._notice(
                request, "Please try again", "We could not save your sign-in. Open your link "
                "again in a minute.", 503
            )  # fmt: skip
        log.info(
            "onboarding.browser_returned",
            extra={"renewal_id": renewal.id, "renewal_state": renewal.state.value},
        )
        if renewal.state in {RenewalState.TOKENS_ACQUIRED, RenewalState.VALIDATED}:
            # Done before the browser got here: say so on this answer (the page itself would
            # call the link used), and take the spent code out of the address bar.
            _, tenant = await self.service.lookup_invitation(token)
            done = self.page._html(request, lambda nonce: _finished(tenant.display_name, nonce))
            done.del_cookie(COOKIE, path=CALLBACK)
            return done
        redirect = web.HTTPSeeOther(f"/onboard/{token}")  # the page shows where it stands
        redirect.del_cookie(COOKIE, path=CALLBACK)
        raise redirect


def _finished(tenant_name: str, nonce: str) -> str:
    body = (
        f"<main><h1>Signed in for {page._e(tenant_name)}</h1>"
        f"<p id=status class=ok role=status>{page._e(messages.ALL_TOKENS)}</p></main>"
        f"<script nonce='{nonce}'>history.replaceState(null,'','{CALLBACK}');</script>"
    )
    return page.document(f"Signed in for {tenant_name}", body, nonce)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given, expected)
