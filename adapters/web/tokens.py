"""GET /api/tokens/{tenant}/{token_set}: an access token for one of the platform's services.

``Authorization: Bearer rbk_...`` (a service key). Answers: 200 the token (JSON), 401 missing or
wrong key, 403 the key may not have that tenant or set, 404 no such tenant or set, 409 the tenant
needs support (a renewal, usually) with its state and what to do, 429 over the key's rate, 503
Microsoft (or the database) not answering, with Retry-After. Never 500: anything unexpected is a
503 with a reference in the log. Never echoes the key; the token appears only in a 200 body.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from core.errors import StorageError
from core.tokens import RenewalNeededError, TokenApiError, TokenService, UnavailableError

log = logging.getLogger("renewbot.tokens")
_NAMES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "renewal_needed",
    429: "rate_limited",
    503: "unavailable",
}


def problem(exc: TokenApiError) -> web.Response:
    body: dict[str, Any] = {"error": _NAMES.get(exc.status, "bad_request"), "message": exc.message}
    if isinstance(exc, RenewalNeededError):
        body.update(
            tenant=exc.tenant.slug,
            tenant_id=exc.tenant.tenant_id,
            state=exc.state.value,
            code=exc.code,
            support=exc.support,
            renewal=exc.renewal,
        )
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="renewbot token API"'
    return web.json_response(body, status=exc.status, headers=headers)


class TokenEndpoint:
    def __init__(self, service: TokenService) -> None:
        self.service = service

    async def handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        try:
            issued = await self.service.issue(
                presented, request.match_info["tenant"], request.match_info["token_set"]
            )
        except TokenApiError as exc:
            return problem(exc)
        except asyncio.CancelledError:
            raise
        except StorageError:
            log.warning("tokens.storage_unavailable")
            return problem(UnavailableError("the database is not answering", 5))
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("tokens.unexpected", extra={"ref": ref})
            return problem(UnavailableError(f"temporarily unavailable (reference {ref})", 30))
        token = issued.token
        left = int((token.expires_at - datetime.now(UTC)).total_seconds())
        return web.json_response(
            {
                "access_token": token.token,
                "token_type": "Bearer",
                "expires_at": token.expires_at.isoformat(),
                "expires_in": max(0, left),
                "scopes": list(token.scopes),
                "tenant": issued.tenant.slug,
                "tenant_id": token.tenant_id,
                "token_set": issued.token_set,
                "account": token.account,
            }
        )
