"""MSAL answers translated at the boundary, and every code explained for support and customer."""

from __future__ import annotations

import pytest

from adapters.identity.errors import is_waiting, to_error
from core import messages

# Recorded shapes of Microsoft identity platform error answers (as MSAL returns them).
DECLINED = {
    "error": "authorization_declined",
    "error_description": "AADSTS70011: denied",
    "error_codes": [70011],
    "correlation_id": "c-1",
}
EXPIRED = {
    "error": "expired_token",
    "error_description": "AADSTS70019: expired",
    "error_codes": [70019],
}
CA = {
    "error": "invalid_grant",
    "error_description": "AADSTS53003: Access has been blocked",
    "error_codes": [53003],
    "correlation_id": "c-2",
}
NO_CODES = {
    "error": "invalid_grant",
    "error_description": "AADSTS700082: The refresh token has expired due to inactivity.",
}


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (DECLINED, "authorization_declined"),
        (EXPIRED, "expired_token"),
        (CA, "AADSTS53003"),
        (NO_CODES, "AADSTS700082"),
        ({"error": "temporarily_unavailable"}, "unavailable"),
    ],
)
def test_msal_answers_become_codes_core_can_explain(answer: dict[str, object], code: str) -> None:
    """Each terminal answer becomes one code; the description stays out of the code."""
    err = to_error(answer)
    assert err.code == code
    assert err.description == answer.get("error_description", "")


def test_pending_and_slow_down_are_not_errors() -> None:
    """Waiting answers keep the flow going."""
    assert is_waiting({"error": "authorization_pending"}) and is_waiting({"error": "slow_down"})
    assert not is_waiting(CA)


@pytest.mark.parametrize(
    "code",
    [
        "AADSTS700082",
        "AADSTS50173",
        "AADSTS65001",
        "AADSTS90094",
        "AADSTS700016",
        "AADSTS50076",
        "AADSTS53003",
        "AADSTS530033",
        "authorization_declined",
        "expired_token",
        "bad_verification_code",
    ],
)
def test_every_listed_code_has_plain_words_for_thread_and_page(code: str) -> None:
    """Support and customer both get a specific explanation, not the generic one."""
    ex = messages.explain(code)
    assert ex is not messages.explain("AADSTS99999999")
    assert ex.support and ex.customer and "AADSTS" not in ex.customer
