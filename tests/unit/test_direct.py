"""database.Direct: the statements asyncpg sends itself take their values as SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.storage.database import direct
from adapters.storage.tenants import FIND_TENANT


def test_a_statement_takes_its_values_in_its_own_order_with_its_own_limit() -> None:
    found = direct(FIND_TENANT)
    assert found.args({"b_ref": "contoso"}) == ["contoso", 1]  # the LIMIT it carries
    assert direct(FIND_TENANT) is found  # compiled once


def test_a_missing_value_is_an_error_not_null() -> None:
    with pytest.raises(KeyError):
        direct(FIND_TENANT).args({})


def test_a_naive_datetime_is_refused_not_read_as_local_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        direct(FIND_TENANT).args({"b_ref": datetime(2026, 12, 1, 9, 0)})
    assert direct(FIND_TENANT).args({"b_ref": datetime(2026, 12, 1, tzinfo=UTC)})
