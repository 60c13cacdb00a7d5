"""The ids of the work in hand (request, platform, tenant, renewal) for every log line of it.

Entry points (an HTTP request, a chat command, one step of a renewal, one tenant's health check)
bind what they know; the logging configuration (bot/logging.py) adds the bound ids to every line
written while that task runs, ours and libraries' alike, so one filter (``renewal_id=...``)
finds a whole renewal. Values live in a ContextVar: each asyncio task sees its own, and a task
started from another inherits a copy. Standard library only; never bind a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_IDS: ContextVar[dict[str, str]] = ContextVar("renewbot_log_ids", default={})  # noqa: B039 (never mutated: replaced)


def bind(**ids: str | None) -> None:
    """Add ids for the rest of the current task (an entry point's own task)."""
    given = {k: str(v) for k, v in ids.items() if v}
    if given:
        _IDS.set({**_IDS.get(), **given})


@contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Add ids for the ``with`` block only."""
    token = _IDS.set({**_IDS.get(), **{k: str(v) for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _IDS.reset(token)


def current() -> dict[str, str]:
    return _IDS.get()
