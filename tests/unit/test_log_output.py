"""The log handler writes a line when the event loop next waits, never loses one, and keeps the
ids bound where the line was logged; the keys the processors set carry nothing a caller gave."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.logging import configure
from core import logcontext


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure(json=True, stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().handlers.clear()


def events(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_line_logged_on_the_loop_is_written_when_the_loop_next_waits(
    out: io.StringIO,
) -> None:
    """Not in the middle of the work that logged it (it would delay a command's first post),
    but as soon as that work waits; written in the context it was logged in, in order."""
    log = logging.getLogger("renewbot.test")
    with logcontext.bound(renewal_id="r-1"):
        log.info("first")
    log.info("second")
    assert out.getvalue() == ""  # still inside the same turn of the loop
    await asyncio.sleep(0)
    said = events(out)
    assert [e["event"] for e in said] == ["first", "second"]
    assert said[0]["renewal_id"] == "r-1" and "renewal_id" not in said[1]


async def test_a_warning_is_written_at_once_after_what_is_pending(out: io.StringIO) -> None:
    log = logging.getLogger("renewbot.test")
    log.info("before")
    log.warning("trouble")
    assert [e["event"] for e in events(out)] == ["before", "trouble"]


def test_lines_pending_when_a_loop_ends_are_written_by_the_next_one_or_at_exit(
    out: io.StringIO,
) -> None:
    """A loop that stops before the handler's turn comes: the next loop writes its lines, and
    logging.shutdown (at exit) writes whatever is still pending."""
    log = logging.getLogger("renewbot.test")

    def stopped_before_writing(text: str) -> None:
        loop = asyncio.new_event_loop()
        loop.call_soon(log.info, text)
        loop.call_soon(loop.stop)  # runs in the same turn: the handler's comes after
        loop.run_forever()
        loop.close()

    async def say(text: str) -> None:
        log.info(text)
        await asyncio.sleep(0)

    stopped_before_writing("one")
    assert out.getvalue() == ""
    asyncio.run(say("two"))
    assert [e["event"] for e in events(out)] == ["one", "two"]
    stopped_before_writing("three")
    assert [e["event"] for e in events(out)] == ["one", "two"]
    for handler in logging.getLogger().handlers:  # what logging.shutdown does at exit
        handler.flush()
    assert [e["event"] for e in events(out)] == ["one", "two", "three"]


async def test_a_line_carries_the_time_it_was_logged_not_written(out: io.StringIO) -> None:
    logged = datetime.now(UTC)
    logging.getLogger("renewbot.test").info("busy after this")
    busy_until = time.monotonic() + 0.05  # the loop is busy with work before it next waits
    while time.monotonic() < busy_until:
        pass
    written = datetime.now(UTC)
    await asyncio.sleep(0)
    at = datetime.fromisoformat(events(out)[0]["timestamp"].replace("Z", "+00:00"))
    assert logged <= at < written - timedelta(milliseconds=40)


def test_a_line_logged_off_the_loop_is_written_at_once(out: io.StringIO) -> None:
    logging.getLogger("renewbot.test").info("no loop here")
    assert [e["event"] for e in events(out)] == ["no loop here"]


def test_a_secret_given_as_timestamp_level_or_logger_is_not_written(out: io.StringIO) -> None:
    """Redaction skips the keys that the processors set (for speed): a value a caller gives
    under one of them is replaced, never written."""
    canary = "xoxb-" + "7" * 12 + "-canary"
    logging.getLogger("renewbot.test").info(
        "event", extra={"timestamp": canary, "level": canary, "logger": canary}
    )
    line = events(out)[0]
    assert canary not in out.getvalue()
    assert (line["level"], line["logger"]) == ("info", "renewbot.test")


def test_a_text_is_masked_every_time_and_no_secret_is_remembered() -> None:
    """Redaction remembers short texts it found clean (for speed): a text with a secret is
    masked the second time as the first, and is not among those remembered."""
    from bot import logging as bot_logging

    canary = "xoxb-" + "5" * 12 + "-canary"
    for _ in range(2):
        assert bot_logging.redact_text("renewal.requested") == "renewal.requested"
        assert canary not in bot_logging.redact_text(f"token={canary}")
        assert canary not in bot_logging.redact_text(f"posted with {canary}")
    assert "renewal.requested" in bot_logging._CLEAN
    assert not any(canary in text for text in bot_logging._CLEAN)
