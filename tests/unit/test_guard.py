"""The one catch-all of the chat entry points: an apology with a reference, never the error."""

from __future__ import annotations

import logging

import pytest

from core.desk import Reply, guarded


async def test_an_unexpected_error_becomes_an_apology_with_a_reference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> Reply:
        raise RuntimeError("secret-ish internal detail")

    with caplog.at_level(logging.ERROR):
        reply = await guarded(broken(), "slack")
    assert reply.text.startswith("Sorry, something went wrong on our side (reference ")
    assert "secret-ish" not in reply.text
    (record,) = [r for r in caplog.records if r.getMessage() == "slack.command_failed"]
    assert record.__dict__["ref"] in reply.text and record.exc_info is not None


async def test_a_good_reply_passes_through() -> None:
    async def fine() -> Reply:
        return Reply("ok")

    assert (await guarded(fine(), "teams")).text == "ok"
