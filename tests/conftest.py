from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_renewbot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come only from what a test passes explicitly."""
    for name in list(os.environ):
        if name.startswith("RENEWBOT_"):
            monkeypatch.delenv(name)
