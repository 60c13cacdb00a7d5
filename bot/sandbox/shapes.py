"""Secrets shaped like the ones Microsoft Entra issues, so that redaction is tried on real shapes.

Microsoft documents access and ID tokens as JWTs and refresh tokens, authorization codes and
device codes as opaque strings ("Token response" and "Device authorization response" in
learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow and v2-oauth2-device-code).
What Entra issues today looks like this: refresh tokens and authorization codes "1.A" (or "0.A")
followed by base64url with dots; device codes "DAQABAAEAAAD" followed by a long base64url run.
Each value is random; nothing here is a real token. Only the sandbox uses this module.
"""

from __future__ import annotations

import base64
import json
import secrets


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def device_code() -> str:
    return "DAQABAAEAAAD--" + secrets.token_urlsafe(180)


def refresh_token() -> str:
    return f"1.AXkA{secrets.token_urlsafe(120)}.{secrets.token_urlsafe(90)}"


def authorization_code() -> str:
    return f"1.AXkA{secrets.token_urlsafe(100)}.{secrets.token_urlsafe(60)}"


def access_token(tenant_id: str, resource: str) -> str:
    """A JWT-shaped access token; like Entra's Graph tokens, the client cannot verify it."""
    header = {"typ": "JWT", "nonce": secrets.token_urlsafe(32), "alg": "RS256", "kid": "sandbox"}
    claims = {"aud": resource, "tid": tenant_id, "uti": secrets.token_urlsafe(16), "ver": "1.0"}
    body = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return body + "." + _b64(secrets.token_bytes(256))
