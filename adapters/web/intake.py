"""POST /api/msal-errors: the platform's other services report their MSAL failures here.

Bearer API key (401), JSON body of at most 16 KiB (413), strict schema (400 naming each problem),
unknown tenant 404 (still recorded), idempotent on the reporter's `id` (200 `duplicate`), 201 when
stored. Never echoes the key or a token. Rate limited per key (and per client address for
requests without a valid key) before the body is read or the database touched: 429 with
Retry-After.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from adapters.web.ratelimit import ClientAddress, TokenBuckets, intake_reports, retry_after
from core.intake import ErrorIntake, ErrorReport, IntakeOutcome

MAX_BODY = 16 * 1024
_FIELDS: dict[str, tuple[type, int, bool]] = {  # name: (type, max length, required)
    "id": (str, 100, True),
    "tenant": (str, 120, True),
    "error": (str, 64, True),
    "error_description": (str, 4000, False),
    "error_codes": (list, 10, False),
    "correlation_id": (str, 64, False),
    "source": (str, 64, False),
    "timestamp": (str, 40, False),
}


def problems_of(body: Any) -> list[str]:
    """Every way ``body`` differs from the schema, in words."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    found = [f"unknown field '{k[:40]}'" for k in body if k not in _FIELDS]
    for name, (kind, limit, required) in _FIELDS.items():
        value: Any = body.get(name)
        if name not in body:
            if required:
                found.append(f"'{name}' is required")
        elif not isinstance(value, kind) or not isinstance(value, (str, list)):
            found.append(f"'{name}' must be a {'string' if kind is str else 'list'}")
        elif len(value) > limit or (required and not value):
            unit = "items" if kind is list else "characters"
            found.append(f"'{name}' must have 1 to {limit} {unit}")
        elif name == "error_codes" and not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 10**9 for c in value
        ):
            found.append("'error_codes' must be a list of AADSTS numbers")
    return found


class IntakeEndpoint:
    def __init__(
        self,
        intake: ErrorIntake,
        api_keys: Sequence[str],
        *,
        limits: TokenBuckets | None = None,
        client: Callable[[web.BaseRequest], str] | None = None,
    ) -> None:
        self.intake = intake
        self.keys = [k.encode() for k in api_keys if k]
        self.limits = limits or intake_reports()
        self.client = client or ClientAddress()

    def _key_index(self, request: web.Request) -> int | None:
        """Which API key the request carries (compared in constant time), or None."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not self.keys:
            return None
        given = header[len("Bearer ") :].strip().encode()
        found = None
        for i, key in enumerate(self.keys):  # no early exit: every key is compared
            if hmac.compare_digest(given, key):
                found = i
        return found

    async def handle(self, request: web.Request) -> web.Response:
        index = self._key_index(request)
        bucket = f"key:{index}" if index is not None else f"client:{self.client(request)}"
        wait = self.limits.take(bucket)
        if wait:
            return web.json_response(
                {"error": "too many requests", "retry_after": int(retry_after(wait))},
                status=429,
                headers={"Retry-After": retry_after(wait)},
            )
        if index is None:
            return web.json_response(
                {"error": "missing or wrong API key"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        problems = problems_of(body)
        if problems:
            return web.json_response({"error": "invalid report", "problems": problems}, status=400)
        report = ErrorReport(
            client_ref=body["id"],
            tenant_ref=body["tenant"],
            error=body["error"],
            description=body.get("error_description", ""),
            error_codes=tuple(body.get("error_codes", ())),
            correlation_id=body.get("correlation_id", ""),
            source=body.get("source", "platform"),
        )
        outcome, expired = await self.intake.report(report)
        if outcome is IntakeOutcome.UNKNOWN_TENANT:
            return web.json_response({"error": "unknown tenant", "recorded": True}, status=404)
        if outcome is IntakeOutcome.DUPLICATE:
            return web.json_response({"recorded": True, "duplicate": True}, status=200)
        return web.json_response({"recorded": True, "tenant_expired": expired}, status=201)
