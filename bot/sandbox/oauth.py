"""HTTPS endpoints of the sandbox: v2.0 discovery, JWKS, devicecode, token, and Graph.

Answers follow the Microsoft identity platform's documented shapes: OAuth errors as
``{"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}`` with
HTTP 400, Graph errors as ``{"error": {"code", "message", "innerError"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.sandbox.directory import GLOBAL_ADMINISTRATOR, AccessToken, DeviceFlow, Directory, Grant

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


def oauth_error(
    error: str, description: str, code: int | None = None, status: int = 400
) -> web.Response:
    correlation = str(uuid.uuid4())
    text = f"AADSTS{code}: {description}" if code else description
    body = {
        "error": error,
        "error_description": f"{text}\r\nTrace ID: {uuid.uuid4()}\r\n"
        f"Correlation ID: {correlation}\r\n"
        f"Timestamp: {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code] if code else [],
        "timestamp": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
        "trace_id": str(uuid.uuid4()),
        "correlation_id": correlation,
    }
    return web.json_response(body, status=status)


def graph_error(status: int, code: str, message: str) -> web.Response:
    inner = {
        "date": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}",
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    return web.json_response(
        {"error": {"code": code, "message": message, "innerError": inner}}, status=status
    )


def _b64(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _tenant_or_error(request: web.Request) -> tuple[Any, web.Response | None]:
    d = request.app[DIRECTORY_KEY]
    tid = request.match_info["tenant"]
    tenant = d.tenants.get(tid)
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
    base = request.app[URLS_KEY]["https"]
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
            "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
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
    if tenant.app_unknown:
        return oauth_error(
            "unauthorized_client",
            f"Application with identifier '{client_id}' "
            f"was not found in the directory '{tenant.name}'.",
            700016,
        )
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


def _token_response(request: web.Request, flow_or_grant: Any, scopes: list[str]) -> web.Response:
    d = request.app[DIRECTORY_KEY]
    account = flow_or_grant.account
    tid = flow_or_grant.tenant_id
    wanted = [s for s in scopes if s not in RESERVED] or [f"{GRAPH}/.default"]
    resource = wanted[0].rsplit("/", 1)[0] if wanted[0].startswith("https://") else GRAPH
    at, rt = d.issue(account, tid, flow_or_grant.client_id, resource)
    now = int(time.time())
    base = request.app[URLS_KEY]["https"]
    claims = {
        "aud": flow_or_grant.client_id,
        "iss": f"{base}/{tid}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": account.name,
        "oid": account.oid,
        "preferred_username": account.upn,
        "sub": account.oid,
        "tid": tid,
        "ver": "2.0",
        "uti": uuid.uuid4().hex,
    }
    if account.global_admin:
        claims["wids"] = [GLOBAL_ADMINISTRATOR]
    id_token = request.app[SIGNER_KEY].sign(claims)
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
    tenant = d.tenants[tid]
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
        return oauth_error("invalid_grant", _FAILURES.get(code, "Sign-in failed."), code)
    return _token_response(request, flow, flow.scopes)


_FAILURES = {
    50020: "User account from identity provider does not exist in tenant and cannot access the "
    "application in that tenant.",
    53003: "Access has been blocked by Conditional Access policies. The access policy does not "
    "allow token issuance.",
    530033: "Access has been blocked by Conditional Access policies: the device code flow is "
    "blocked for this application.",
    50076: "Due to a configuration change made by your administrator, or because you moved to a "
    "new location, you must use multi-factor authentication to access this resource.",
    90094: "Admin consent is required for the permissions requested by this application.",
    65001: "The user or administrator has not consented to use the application.",
    700082: "The refresh token has expired due to inactivity. The token was issued on a date "
    "and was inactive for 90.00:00:00.",
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is "
    "needed. The user might have changed or reset their password.",
}


async def token(request: web.Request) -> web.Response:
    tenant, err = _tenant_or_error(request)
    if err:
        return err
    d = request.app[DIRECTORY_KEY]
    form = await request.post()
    grant_type = str(form.get("grant_type", ""))
    scopes = str(form.get("scope", "")).split()
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
            return oauth_error("invalid_grant", _FAILURES.get(code, "Refresh failed."), code)
        if tenant.mfa_required:
            return oauth_error("invalid_grant", _FAILURES[50076], 50076)
        return _token_response(request, grant, scopes)
    return oauth_error(
        "unsupported_grant_type",
        f"The provided value for the input parameter "
        f"'grant_type' is not valid: {grant_type[:40]!r}.",
        70003,
    )


def _bearer(request: web.Request) -> AccessToken | web.Response:
    d = request.app[DIRECTORY_KEY]
    header = request.headers.get("Authorization", "")
    at = d.access_tokens.get(header.removeprefix("Bearer ").strip()) if header else None
    if at is None or at.expires_at < time.time() or at.resource != GRAPH:
        return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
    if d.tenants[at.tenant_id].graph_down:
        return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable.")
    return at


async def organization(request: web.Request) -> web.Response:
    at = _bearer(request)
    if isinstance(at, web.Response):
        return at
    t = request.app[DIRECTORY_KEY].tenants[at.tenant_id]
    return web.json_response(
        {
            "@odata.context": f"{GRAPH}/v1.0/$metadata#organization",
            "value": [
                {
                    "id": t.tenant_id,
                    "displayName": t.name,
                    "tenantType": "AAD",
                    "verifiedDomains": [
                        {
                            "capabilities": "Email, OfficeCommunicationsOnline",
                            "isDefault": True,
                            "isInitial": False,
                            "name": t.domain,
                            "type": "Managed",
                        }
                    ],
                }
            ],
        }
    )


async def me(request: web.Request) -> web.Response:
    at = _bearer(request)
    if isinstance(at, web.Response):
        return at
    a = at.account
    return web.json_response(
        {
            "@odata.context": f"{GRAPH}/v1.0/$metadata#users/$entity",
            "id": a.oid,
            "displayName": a.name,
            "userPrincipalName": a.upn,
            "mail": a.upn,
        }
    )


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
    app.router.add_get("/v1.0/organization", organization)
    app.router.add_get("/v1.0/me", me)
    return app
