"""The identity platform's error answers, in the JSON shape Entra's token endpoint uses.

Shape and texts follow "AADSTS error codes" (reference-error-codes) and the error responses of
"Microsoft identity platform and the OAuth 2.0 device authorization grant flow": HTTP 400 with
``error``, ``error_description`` ("AADSTS<code>: ..." plus trace, correlation and timestamp
lines), ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id`` and ``error_uri``. It
builds answers only; which request gets which answer is decided in oauth.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web

from bot.sandbox.directory import SandboxTenant


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
    if code:  # Entra links each coded error to its page; nothing here fetches it
        body["error_uri"] = f"https://login.microsoftonline.com/error?code={code}"
    return web.json_response(body, status=status)


def unknown_client(client_id: str, tenant: SandboxTenant) -> web.Response:
    """AADSTS700016 ("AADSTS error codes"): no registration has this client id."""
    return oauth_error(
        "unauthorized_client",
        f"Application with identifier '{client_id[:64]}' was not found in the directory "
        f"'{tenant.name}'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have "
        "sent your authentication request to the wrong tenant.",
        700016,
    )


def confidential_only() -> web.Response:
    """AADSTS7000218 ("AADSTS error codes"): "Allow public client flows" is off."""
    return oauth_error(
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
        7000218,
    )


def invalid_resource(resource: str, tenant: SandboxTenant) -> web.Response:
    """AADSTS500011 ("AADSTS error codes", InvalidResourceServicePrincipalNotFound)."""
    return oauth_error(
        "invalid_resource",
        f"The resource principal named {resource[:120]} was not found in the tenant named "
        f"{tenant.name}. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You might have "
        "sent your authentication request to the wrong tenant.",
        500011,
    )


FAILURES = {
    50020: "User account from identity provider does not exist in tenant and cannot access the "
    "application in that tenant.",
    # "AADSTS error codes", BlockedByConditionalAccess: what a policy that blocks the device code
    # flow (authentication flows condition) answers.
    53003: "Access has been blocked by Conditional Access policies. The access policy does not "
    "allow token issuance.",
    # Not in the public list; seen when a policy requires a managed (compliant) device, which a
    # device code sign-in on another device cannot prove. The sandbox's wording.
    530033: "Access has been blocked by Conditional Access policies: this application requires "
    "a managed device, and the device code flow cannot show that the device is managed.",
    50076: "Due to a configuration change made by your administrator, or because you moved to a "
    "new location, you must use multi-factor authentication to access this resource.",
    90094: "Admin consent is required for the permissions requested by this application.",
    65001: "The user or administrator has not consented to use the application.",
    700082: "The refresh token has expired due to inactivity. The token was issued on a date "
    "and was inactive for 90.00:00:00.",
    50173: "The provided grant has expired due to it being revoked, a fresh auth token is "
    "needed. The user might have changed or reset their password.",
}
