"""The access log: every request but the chat webhooks' answered ones, never a secret."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bot.web import RedactingAccessLogger


def logged(path: str, status: int, level: int) -> list[logging.LogRecord]:
    logger = logging.getLogger("renewbot.access.test")
    logger.setLevel(level)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        access = RedactingAccessLogger(logger, "")
        access.log(make_mocked_request("POST", path), web.Response(status=status), 0.001)
    finally:
        logger.removeHandler(handler)
    return records


@pytest.mark.parametrize("path", ["/slack/events", "/api/messages"])
def test_answered_chat_webhooks_are_left_to_their_adapters_at_info(path: str) -> None:
    assert logged(path, 200, logging.INFO) == []
    assert len(logged(path, 200, logging.DEBUG)) == 1  # at DEBUG they are there


@pytest.mark.parametrize("status", [401, 403, 500])
def test_refused_chat_webhooks_are_always_logged(status: int) -> None:
    (record,) = logged("/slack/events", status, logging.INFO)
    assert record.__dict__["status"] == status


def test_other_requests_are_logged_with_the_auth_token_redacted() -> None:
    (record,) = logged("/onboard/SECRET-TOKEN/start", 200, logging.INFO)
    assert record.__dict__["path"] == "/onboard/<redacted>/start"
