"""Every log line of one renewal step carries its ids, so one filter finds a whole renewal."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from bot.logging import configure
from core import logcontext
from core.scheduler import DeviceFlowScheduler


async def test_a_scheduled_step_logs_with_its_renewal_id() -> None:
    """A line written during a scheduler step (ours or a library's) names the renewal; a line
    written outside it does not."""
    out = io.StringIO()
    configure(json=True, stream=out)
    done = asyncio.Event()

    async def step(renewal_id: str) -> float | None:
        logging.getLogger("some.library").warning("library.said")
        done.set()
        return None

    scheduler = DeviceFlowScheduler(step, jitter=0)
    runner = asyncio.create_task(scheduler.run())
    try:
        scheduler.watch("r-42", 0)
        await asyncio.wait_for(done.wait(), 5)
        logging.getLogger("renewbot.test").warning("outside")
    finally:
        scheduler.stop()
        await runner
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    said = next(line for line in lines if line["event"] == "library.said")
    outside = next(line for line in lines if line["event"] == "outside")
    assert said["renewal_id"] == "r-42" and "renewal_id" not in outside


def test_bound_ids_end_with_their_block() -> None:
    with logcontext.bound(tenant="contoso", renewal_id=None):
        assert logcontext.current() == {"tenant": "contoso"}
    assert logcontext.current() == {}


def test_slack_sdk_builds_no_debug_text_at_info() -> None:
    """slack_sdk formats a debug line of every call when its own logger's `level` is at most
    DEBUG (NOTSET counts): at INFO it must be above, at DEBUG the lines are there."""
    from slack_sdk.web.async_client import AsyncWebClient
    from slack_sdk.webhook.async_client import AsyncWebhookClient

    try:
        configure(json=True, stream=io.StringIO(), level=logging.INFO)
        web, hook = AsyncWebClient(token="xoxb-x"), AsyncWebhookClient("http://127.0.0.1:9/x")
        assert web._logger.level > logging.DEBUG and hook.logger.level > logging.DEBUG
        configure(json=True, stream=io.StringIO(), level=logging.DEBUG)
        assert web._logger.level == logging.DEBUG and hook.logger.level == logging.DEBUG
    finally:
        configure(json=True, stream=io.StringIO(), level=logging.INFO)
        logging.getLogger().handlers.clear()
