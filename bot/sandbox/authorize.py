"""The sandbox's authorize endpoint: ``GET /{tenant}/oauth2/v2.0/authorize`` and its pages.

Follows "Microsoft identity platform and OAuth 2.0 authorization code flow": the app sends the
browser here with ``client_id``, ``response_type=code``, ``redirect_uri``, ``scope``, ``state``,
``nonce``, ``code_challenge`` (+ ``code_challenge_method``, "Proof Key for Code Exchange", RFC 7636)
and ``login_hint``; the person picks an account (password-less here), consents where the app has
no grant, and the browser goes back to ``redirect_uri`` with ``code`` and ``state``, or with
``error`` and ``error_description`` (an AADSTS code). Problems with the request itself (unknown
tenant or app, a redirect URI the registration does not list: AADSTS50011) are shown on the page
and never redirected, as Entra does. The consent screen is the one of "Microsoft Entra application
consent experiences" (see login.py and consent.py): "Consent on behalf of your organization" only
for a Global Administrator, unticked. It issues codes only; oauth.py redeems them.
"""

from __future__ import annotations

import html
import secrets
import time
from urllib.parse import urlencode

from aiohttp import web

from bot.sandbox import shapes
from bot.sandbox.directory import AuthCode, AuthRequest, Directory, Registration, SandboxAccount
from bot.sandbox.login import consent_choices, page

DIRECTORY_KEY = web.AppKey("authorize_directory", Directory)
_TROUBLE = "Sorry, but we're having trouble signing you in"


def _problem(code: int, text: str) -> web.Response:
    return page(_TROUBLE, f"<p>AADSTS{code}: {html.escape(text)}</p>", status=400)


def _back(req: AuthRequest, **params: str) -> web.Response:
    """Back to the app: the documented success or error response, always with ``state``."""
    sep = "&" if "?" in req.redirect_uri else "?"
    raise web.HTTPFound(f"{req.redirect_uri}{sep}{urlencode({**params, 'state': req.state})}")


def _error(req: AuthRequest, error: str, code: int, text: str) -> web.Response:
    # "Error response" of the authorization code flow: error, error_description (AADSTS...)
    return _back(req, error=error, error_description=f"AADSTS{code}: {text}")


def _registration(d: Directory, client_id: str) -> Registration:
    return d.registrations.get(client_id) or Registration(client_id)


def _hidden(**values: str) -> str:
    return "".join(
        f"<input type=hidden name={k} value='{html.escape(v)}'>" for k, v in values.items()
    )


async def authorize(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    q = request.query
    tid = request.match_info["tenant"]
    tenant = d.tenant(tid)
    if tenant is None:
        return _problem(90002, f"Tenant '{tid[:64]}' not found.")
    for name in ("client_id", "redirect_uri", "response_type", "scope"):
        if not q.get(name):
            return _problem(
                900144, f"The request body must contain the following parameter: '{name}'."
            )
    registration = d.registrations.get(q["client_id"])
    if registration is None or tenant.app_unknown:
        return _problem(
            700016,
            f"Application with identifier '{q['client_id'][:64]}' was not found in the "
            f"directory '{tenant.name}'.",
        )
    if registration.redirect_uris and q["redirect_uri"] not in registration.redirect_uris:
        return _problem(
            50011,
            f"The redirect URI '{q['redirect_uri'][:200]}' specified in the request does not "
            "match the redirect URIs configured for the application.",
        )
    req = AuthRequest(
        tenant.tenant_id,
        q["client_id"],
        q["redirect_uri"],
        q["scope"].split(),
        q.get("state", ""),
        q.get("nonce", ""),
        q.get("code_challenge", ""),
        q.get("code_challenge_method", "plain"),
        q.get("login_hint", ""),
    )
    if q["response_type"] != "code":
        return _error(req, "unsupported_response_type", 70005, "Unsupported response type.")
    if req.code_challenge and req.code_challenge_method not in {"S256", "plain"}:
        return _error(req, "invalid_request", 5000, "Unsupported code_challenge_method.")
    txn = secrets.token_urlsafe(16)
    d.auth_requests[txn] = req
    hint = req.login_hint.lower()
    accounts = sorted(d.accounts.values(), key=lambda a: a.upn.lower() != hint)
    buttons = "".join(
        f"<button name=upn value='{html.escape(a.upn)}'"
        f"{' autofocus' if a.upn.lower() == hint else ''}>"
        f"{html.escape(a.name)} ({html.escape(a.upn)})</button>"
        for a in accounts
    )
    base = request.path
    return page(
        "Pick an account",
        (
            f"<p>to continue to <b>{html.escape(registration.display_name)}</b> "
            f"({html.escape(registration.publisher)}) for <b>{html.escape(tenant.name)}</b>. "
            "No password in the sandbox: pick the account.</p>"
            f"<form method=post action='{html.escape(base)}/signin'>{_hidden(txn=txn)}{buttons}"
            "<button name=decision value=cancel id=cancel-signin>Cancel</button></form>"
        ),
    )


def _pending(d: Directory, txn: str) -> AuthRequest | None:
    return d.auth_requests.get(txn)


async def sign_in(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    form = await request.post()
    req = _pending(d, str(form.get("txn", "")))
    if req is None:
        return _problem(50058, "This sign-in is no longer valid. Start again from the app.")
    if form.get("decision") == "cancel":
        d.auth_requests.pop(str(form.get("txn", "")), None)
        return _error(req, "access_denied", 65004, "User declined to consent to access the app.")
    account = d.accounts.get(str(form.get("upn", "")).lower())
    tenant = d.tenant(req.tenant_id)
    if account is None or tenant is None:
        return _problem(50034, "The user account does not exist in this directory.")
    if account.tenant_id != tenant.tenant_id:
        return _error(
            req,
            "invalid_request",
            50020,
            f"User account '{account.upn}' from identity provider does not exist in tenant "
            f"'{tenant.name}' and cannot access the application in that tenant.",
        )
    blocked = tenant.browser_conditional_access or (
        tenant.conditional_access if tenant.conditional_access == "530033" else None
    )
    if blocked:
        return _error(
            req,
            "access_denied",
            int(blocked),
            "Access has been blocked by Conditional Access policies. The access policy does "
            "not allow token issuance.",
        )
    if tenant.mfa_required:
        return _error(
            req,
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, you must use "
            "multi-factor authentication to access this resource.",
        )
    if not tenant.consented(account):
        return _consent_page(d, str(form.get("txn", "")), req, account)
    return _issue(d, str(form.get("txn", "")), req, account)


def _consent_page(
    d: Directory, txn: str, req: AuthRequest, account: SandboxAccount
) -> web.Response:
    registration = _registration(d, req.client_id)
    asks, admin_box = consent_choices(registration, account)
    return page(
        "Permissions requested",
        (
            f"<p><b>{html.escape(registration.display_name)}</b> "
            f"({html.escape(registration.publisher)}) needs permission to access resources in "
            f"your organization.</p><ul id=permissions>{asks}</ul>"
            f"<form method=post action='/{req.tenant_id}/oauth2/v2.0/authorize/consent'>"
            f"{_hidden(txn=txn, upn=account.upn)}{admin_box}"
            "<button name=decision value=accept id=accept>Accept</button>"
            "<button name=decision value=decline id=cancel>Cancel</button></form>"
        ),
    )


async def consent(request: web.Request) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    form = await request.post()
    txn = str(form.get("txn", ""))
    req = _pending(d, txn)
    account = d.accounts.get(str(form.get("upn", "")).lower())
    tenant = d.tenant(req.tenant_id) if req else None
    if req is None or account is None or tenant is None or account.tenant_id != req.tenant_id:
        return _problem(50058, "This sign-in is no longer valid. Start again from the app.")
    d.auth_requests.pop(txn, None)
    if form.get("decision") != "accept":
        return _error(req, "access_denied", 65004, "User declined to consent to access the app.")
    if not account.global_admin:
        return _error(
            req,
            "access_denied",
            90094,
            "Admin consent is required for the permissions requested by this application.",
        )
    tenant.record_consent(account, for_organization=form.get("org") == "1")
    return _issue(d, txn, req, account)


def _issue(d: Directory, txn: str, req: AuthRequest, account: SandboxAccount) -> web.Response:
    d.auth_requests.pop(txn, None)
    tenant = d.tenant(req.tenant_id)
    assert tenant is not None
    code = shapes.authorization_code()
    d.auth_codes[code] = AuthCode(
        account,
        req.tenant_id,
        req.client_id,
        req.redirect_uri,
        req.scopes,
        req.nonce,
        req.code_challenge,
        req.code_challenge_method,
        time.monotonic() + tenant.auth_code_lifetime,
    )
    d.issued_secrets.append(code)
    return _back(req, code=code, session_state=secrets.token_hex(16))


def add_routes(app: web.Application, directory: Directory) -> None:
    app[DIRECTORY_KEY] = directory
    app.router.add_get("/{tenant}/oauth2/v2.0/authorize", authorize)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize/signin", sign_in)
    app.router.add_post("/{tenant}/oauth2/v2.0/authorize/consent", consent)
