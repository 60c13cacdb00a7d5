"""Two bot processes on one PostgreSQL: each device flow is polled by one, and taken over."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bot.bootstrap import runtime
from bot.workers import adopt_flows
from core.model import RenewalState as S
from tests.integration.live import live_bot
from tests.servers.postgres import fresh_database

pytestmark = pytest.mark.postgres


async def test_second_process_never_double_polls_and_takes_over(
    tmp_path: Path, postgres_url: str
) -> None:
    """While A holds the lease B stays quiet; when A dies, B finishes the renewal."""
    url = await fresh_database(postgres_url)
    async with live_bot(tmp_path, url, poll_lease=2.0) as a:
        async with runtime(a.rt.settings, migrate=False) as b:
            b.chat.add("test", a.chat)
            b.supervisor.spawn(b.scheduler.run(), "scheduler-b")
            await a.say("contoso")
            status = await a.press(a.auth_url())
            await a.wait_for("contoso", lambda r: r.state is S.CODE_ISSUED)
            assert await adopt_flows(b) == 1  # B watches the flow too
            code = str(status["user_code"])
            polls = a.sandbox.directory.polls
            # let both schedulers run for several intervals
            await a.wait_for("contoso", lambda r: sum(c == code for c, _ in polls) >= 4)
            await a.rt.supervisor.close()  # process A dies
            await a.sign_in(code, "admin@contoso.com")
            await a.wait_state("contoso", S.VALIDATED, timeout=30)
    times = [t for c, t in polls if c == code]
    gaps = [y - x for x, y in itertools.pairwise(times)]
    assert min(gaps) >= 1.0, "two processes polled the same flow within one interval"
