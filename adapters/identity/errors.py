"""MSAL answers (dicts) and HTTP failures translated into IdentityProviderError at the boundary.

``authorization_pending`` and ``slow_down`` are not errors (the caller keeps polling); everything
else gets a code core can explain: the OAuth error for the device-flow endings, otherwise the
AADSTS code.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import IdentityProviderError

WAITING = frozenset({"authorization_pending", "slow_down"})
_PLAIN = frozenset({"authorization_declined", "expired_token", "bad_verification_code"})
_AADSTS = re.compile(r"AADSTS(\d+)")


def is_waiting(result: dict[str, Any]) -> bool:
    return result.get("error") in WAITING


def to_error(result: dict[str, Any]) -> IdentityProviderError:
    """Map an MSAL error dict. Never includes tokens: MSAL error dicts carry none."""
    error = str(result.get("error") or "unknown_error")
    description = str(result.get("error_description") or "")
    codes = result.get("error_codes") or []
    code = error
    if error not in _PLAIN:
        if codes:
            code = f"AADSTS{codes[0]}"
        elif match := _AADSTS.search(description):
            code = f"AADSTS{match.group(1)}"
    if error in {"temporarily_unavailable", "server_error"}:
        code = "unavailable"
    if error in {"no_account", "no_token"}:
        code = "no_tokens"  # nothing stored for this tenant: only a renewal can fix it
    return IdentityProviderError(code, error, description, str(result.get("correlation_id") or ""))


def unavailable(detail: str) -> IdentityProviderError:
    return IdentityProviderError("unavailable", "unavailable", detail)
