"""HTTPS endpoints of the sandbox: v2.0 discovery, JWKS, devicecode and token (Graph: graph.py).

Answers follow the Microsoft identity platform's documented shapes ("Microsoft identity platform
and the OAuth 2.0 device authorization grant flow", "AADSTS error codes"): OAuth errors as
``{"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id",
"error_uri"}`` with HTTP 400 (built in aadsts.py). Registration problems (public client flows
off, unknown client id) are answered for every tenant; a resource the tenant does not have is
AADSTS500011. It must never answer a request with a token the real service would refuse.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.sandbox import authorize, consent, graph
from bot.sandbox.aadsts import (
    FAILURES,
    confidential_only,
    invalid_resource,
    oauth_error,
    unknown_client,
)
from bot.sandbox.directory import (
    CONSUMERS_TENANT,
    GLOBAL_ADMINISTRATOR,
    AuthCode,
    DeviceFlow,
    Directory,
    Grant,
    Registration,
)

RESERVED = {"openid", "profile", "offline_access", "email"}
GRAPH = "https://graph.microsoft.com"
DIRECTORY_KEY = web.AppKey("directory", Directory)
SIGNER_KEY: web.AppKey[Signer] = web.AppKey("signer")
URLS_KEY: web.AppKey[dict[str, str]] = web.AppKey("urls")
LATENCY_KEY: web.AppKey[float] = web.AppKey("latency")


class Signer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


def _b64(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _tenant_or_error(request: web.Request) -> tuple[Any, web.Response | None]:
    d = request.app[DIRECTORY_KEY]
    tid = request.match_info["tenant"]
    tenant = d.tenant(tid)
    if tenant is None:
        return None, oauth_error(
            "invalid_request",
            f"Tenant '{tid}' not found. Check to make sure you have the correct tenant ID.",
            90002,
        )
    return tenant, None


async def discovery(request: web.Request) -> web.Response:
    tenant, err = _tenant_or_error(request)
    if err:
        return err
    base, login = request.app[URLS_KEY]["https"], request.app[URLS_KEY]["http"]
    tid = tenant.tenant_id
    return web.json_response(
        {
            "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            # On the login listener (plain HTTP, like the device login page), so a person's
            # browser in the demo needs no trust in the sandbox's test CA; it is served on this
            # host too, where Entra has it.
            "authorization_endpoint": f"{login}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "nbf",
                "name",
                "oid",
                "tid",
                "preferred_username",
                "ver",
                "wids",
            ],
            "tenant_region_scope": "EU",
        }
    )


async def keys(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIGNER_KEY].jwks())


async def devicecode(request: web.Request) -> web.Response:
    tenant, err = _tenant_or_error(request)
    if err:
        return err
    form = await request.post()
    client_id = str(form.get("client_id", ""))
    scopes = str(form.get("scope", "")).split()
    if not client_id:
        return oauth_error(
            "invalid_request",
            "The request body must contain the following parameter: 'client_id'.",
            900144,
        )
    if tenant.app_unknown or client_id not in request.app[DIRECTORY_KEY].registrations:
        return unknown_client(client_id, tenant)
    flow = request.app[DIRECTORY_KEY].start_flow(tenant, client_id, scopes)
    login = request.app[URLS_KEY]["http"] + "/devicelogin"
    return web.json_response(
        {
            "user_code": flow.user_code,
            "device_code": flow.device_code,
            "verification_uri": login,
            "expires_in": tenant.code_lifetime,
            "interval": flow.interval,
            "message": f"To sign in, use a web browser to open the page {login} and enter the code "
            f"{flow.user_code} to authenticate.",
        }
    )


def _delegated(wanted: list[str], registration: Registration) -> frozenset[str]:
    """The ``scp`` of a token: the named permissions, and for ``.default`` what the registration
    lists (and the consent granted)."""
    names = {s.rsplit("/", 1)[-1] if s.startswith("https://") else s for s in wanted}
    if ".default" in names:
        names = (names - {".default"}) | set(registration.graph_permissions)
    return frozenset(names)


def _claims(
    request: web.Request, holder: Any, registration: Registration, nonce: str = ""
) -> dict[str, Any]:
    """id_token claims ("Access token claims reference", "ID token claims reference")."""
    account, tid = holder.account, holder.tenant_id
    now = int(time.time())
    base = request.app[URLS_KEY]["https"]
    claims = {
        "aud": holder.client_id,
        "iss": f"{base}/{tid}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": account.name,
        "oid": account.oid,
        # a guest's preferred_username is the address it signs in with, not its #EXT# UPN
        "preferred_username": account.mail or account.upn,
        "sub": account.oid,
        "tid": tid,
        "ver": "2.0",
        "uti": uuid.uuid4().hex,
    }
    if nonce:  # OpenID Connect: the authorize request's nonce comes back in the id_token
        claims["nonce"] = nonce
    if account.home_tenant_id and account.home_tenant_id != tid:
        # idp: the home tenant's issuer for guests ("live.com" style for personal accounts)
        claims["idp"] = f"https://sts.windows.net/{account.home_tenant_id}/"
    # wids only when groupMembershipClaims asks for directory roles ("Access token claims
    # reference"); personal accounts have no directory roles.
    if registration.emits_wids and account.global_admin and tid != CONSUMERS_TENANT:
        claims["wids"] = [GLOBAL_ADMINISTRATOR]
    return claims


def _token_response(
    request: web.Request, flow_or_grant: Any, scopes: list[str], nonce: str = ""
) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    account = flow_or_grant.account
    tid = flow_or_grant.tenant_id
    registration = d.registrations.get(flow_or_grant.client_id) or Registration(
        flow_or_grant.client_id
    )
    wanted = [s for s in scopes if s not in RESERVED] or [f"{GRAPH}/.default"]
    resource = wanted[0].rsplit("/", 1)[0] if wanted[0].startswith("https://") else GRAPH
    tenant = d.tenant(tid)
    assert tenant is not None
    if (urlsplit(resource).hostname or "") not in tenant.resource_hosts():
        return invalid_resource(resource, tenant)
    at, rt = d.issue(account, tid, flow_or_grant.client_id, resource)
    d.access_tokens[at].scopes = _delegated(wanted, registration)
    id_token = request.app[SIGNER_KEY].sign(_claims(request, flow_or_grant, registration, nonce))
    d.issued_secrets.append(id_token)
    return web.json_response(
        {
            "token_type": "Bearer",
            "scope": " ".join(wanted),
            "expires_in": 3600,
            "ext_expires_in": 3600,
            "access_token": at,
            "refresh_token": rt,
            "id_token": id_token,
            "client_info": _b64({"uid": account.oid, "utid": tid}),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _poll(request: web.Request, flow: DeviceFlow | None, tid: str) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    if flow is None or flow.tenant_id != tid:
        return oauth_error(
            "bad_verification_code",
            "The provided value for the input parameter 'device_code' is not valid.",
            70000,
        )
    tenant = d.tenant(tid)
    assert tenant is not None
    now = time.monotonic()
    d.polls.append((flow.user_code, now))
    if now >= flow.expires_at:
        d.flows.pop(flow.device_code, None)
        return oauth_error("expired_token", "The code has expired.", 70019)
    too_fast = flow.last_poll and now - flow.last_poll < flow.interval
    flow.last_poll = now
    if tenant.slow_down_polls > 0 or too_fast:
        tenant.slow_down_polls = max(0, tenant.slow_down_polls - 1)
        flow.interval += 5
        return oauth_error(
            "slow_down", "OAuth 2.0 device flow error. Polling too frequently.", 70016
        )
    if flow.status == "pending":
        return oauth_error(
            "authorization_pending",
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            70016,
        )
    d.flows.pop(flow.device_code, None)
    if flow.status == "declined":
        return oauth_error(
            "authorization_declined", "The end user denied the authorization request.", 70011
        )
    if flow.status == "failed":
        code = int(flow.error_code or 0)
        return oauth_error("invalid_grant", FAILURES.get(code, "Sign-in failed."), code)
    return _token_response(request, flow, flow.scopes)


async def token(request: web.Request) -> web.Response:
    tenant, err = _tenant_or_error(request)
    if err:
        return err
    d = request.app[DIRECTORY_KEY]
    form = await request.post()
    grant_type = str(form.get("grant_type", ""))
    scopes = str(form.get("scope", "")).split()
    registration = d.registrations.get(str(form.get("client_id", "")))
    if grant_type and registration is None:
        return unknown_client(str(form.get("client_id", "")), tenant)
    if grant_type == "authorization_code" and registration is not None:
        return _redeem(request, form, tenant.tenant_id, registration)
    if registration is not None and not registration.public_client_flows:
        # the client is authenticated before the grant is looked at: every poll and refresh
        return confidential_only()
    if grant_type in {"urn:ietf:params:oauth:grant-type:device_code", "device_code"}:
        flow = d.flows.get(str(form.get("device_code", "")))
        return _poll(request, flow, tenant.tenant_id)
    if grant_type == "refresh_token":
        grant = d.refresh_tokens.get(str(form.get("refresh_token", "")))
        if grant is None or grant.tenant_id != tenant.tenant_id:
            return oauth_error(
                "invalid_grant", "The refresh token is malformed or not valid.", 9002313
            )
        if tenant.refresh_error:
            code = int(tenant.refresh_error)
            return oauth_error("invalid_grant", FAILURES.get(code, "Refresh failed."), code)
        if tenant.mfa_required:
            return oauth_error("invalid_grant", FAILURES[50076], 50076)
        return _token_response(request, grant, scopes)
    return oauth_error(
        "unsupported_grant_type",
        f"The provided value for the input parameter "
        f"'grant_type' is not valid: {grant_type[:40]!r}.",
        70003,
    )


def _pkce_ok(held: AuthCode, verifier: str) -> bool:
    """ "Proof Key for Code Exchange" (RFC 7636 4.6): S256 is BASE64URL(SHA256(verifier))."""
    if held.code_challenge_method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        return hmac.compare_digest(
            base64.urlsafe_b64encode(digest).decode().rstrip("="), held.code_challenge
        )
    return hmac.compare_digest(verifier, held.code_challenge)


def _redeem(request: web.Request, form: Any, tid: str, registration: Registration) -> web.Response:
    """The authorization_code grant ("Microsoft identity platform and OAuth 2.0 authorization
    code flow", "Redeem a code for an access token"): a code is single use (a second redemption
    is AADSTS54005) and short-lived (AADSTS70008); redirect_uri must be the authorize request's;
    the PKCE verifier must match the challenge (AADSTS501481). A redirect URI registered as "web"
    makes the app confidential: no secret, AADSTS7000218."""
    d = request.app[DIRECTORY_KEY]
    if registration.redirect_platform == "web" and not form.get("client_secret"):
        return confidential_only()
    code = str(form.get("code", ""))
    held = d.auth_codes.pop(code, None)  # popped on any try: a code is never redeemed twice
    if held is None:
        if code in d.redeemed_codes:
            return oauth_error(
                "invalid_grant",
                "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                "code or use an existing refresh token.",
                54005,
            )
        return oauth_error("invalid_grant", "The provided value for 'code' is not valid.", 70000)
    d.redeemed_codes.add(code)
    d.verifiers.append(str(form.get("code_verifier", "")))
    if held.tenant_id != tid or held.client_id != str(form.get("client_id", "")):
        return oauth_error("invalid_grant", "The provided value for 'code' is not valid.", 70000)
    if time.monotonic() >= held.expires_at:
        return oauth_error(
            "invalid_grant",
            "The provided authorization code or refresh token has expired due to inactivity. "
            "Send a new interactive authorization request for this user and resource.",
            70008,
        )
    if str(form.get("redirect_uri", "")) != held.redirect_uri:
        return oauth_error(
            "invalid_grant",
            "The redirect URI specified in the request does not match the redirect URI used to "
            "obtain the authorization code.",
            50011,
        )
    if held.code_challenge and not _pkce_ok(held, str(form.get("code_verifier", ""))):
        return oauth_error(
            "invalid_grant",
            "The code_verifier does not match the code_challenge supplied in the authorization "
            "request.",
            501481,
        )
    scopes = str(form.get("scope", "")).split() or held.scopes
    return _token_response(request, held, scopes, nonce=held.nonce)


async def grant(request: web.Request) -> web.Response:
    """Load-test helper: a token response for the tenant's first account, as after a sign-in."""
    tenant, err = _tenant_or_error(request)
    if err:
        return err
    d = request.app[DIRECTORY_KEY]
    account = next((a for a in d.accounts.values() if a.tenant_id == tenant.tenant_id), None)
    if account is None:
        return oauth_error("invalid_request", "no account in this tenant")
    form = await request.post()
    if str(form.get("client_id", "")) not in d.registrations:
        return unknown_client(str(form.get("client_id", "")), tenant)
    holder = Grant(account, tenant.tenant_id, str(form.get("client_id", "")))
    return _token_response(request, holder, [f"{GRAPH}/.default"])


@web.middleware
async def record(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[DIRECTORY_KEY].requests.append((request.method, request.path))
    latency = request.app[LATENCY_KEY]
    if latency:
        await asyncio.sleep(latency)  # a distant identity provider, for load tests
    return await handler(request)


def https_app(
    directory: Directory, signer: Signer, urls: dict[str, str], latency: float = 0.0
) -> web.Application:
    app = web.Application(middlewares=[record])
    app[LATENCY_KEY] = latency
    app[DIRECTORY_KEY] = directory
    app[SIGNER_KEY] = signer
    app[URLS_KEY] = urls
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", discovery)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", keys)
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", devicecode)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    app.router.add_post("/{tenant}/_sandbox/grant", grant)
    consent.add_routes(app, directory)
    authorize.add_routes(app, directory)
    graph.add_routes(app, directory)
    return app
