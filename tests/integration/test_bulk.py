"""`renew all-expired` on PostgreSQL, through Slack: one summary thread, live progress."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.model import AuthState
from core.model import RenewalState as S
from core.ports import HealthRecord
from tests.integration.live import live_bot, until
from tests.integration.test_slack import command_body, parent, post, slack_settings
from tests.servers.postgres import fresh_database
from tests.servers.slack import SlackStandIn

pytestmark = pytest.mark.postgres


async def test_renew_all_expired_in_one_thread_with_live_progress(
    tmp_path: Path, postgres_url: str, slack: SlackStandIn
) -> None:
    """Three expired tenants: three Auth URLs in one thread; the summary follows a sign-in."""
    url = await fresh_database(postgres_url)
    async with live_bot(tmp_path, url, slack=slack_settings(slack)) as live:
        now = datetime.now(UTC)
        async with live.rt.uow() as uow:
            await uow.tenants.record_health(
                [
                    HealthRecord(live.tenants[s].key, AuthState.EXPIRED, None, now + timedelta(1))
                    for s in ("contoso", "fabrikam", "tailspin")
                ]
            )
            await uow.commit()
        assert await post(live, command_body(slack, "renew all-expired")) == 200
        (reply,) = await until(lambda: slack.responses)
        assert reply["text"].startswith("Renewing 3 expired tenants in one thread")
        channel, ts = await until(lambda: parent(slack))
        replies = await until(
            lambda: len(slack.thread(channel, ts)) >= 3 and slack.thread(channel, ts)
        )
        names = [str(r["text"]).split(":")[0] for r in replies[:3]]
        assert sorted(names) == ["Contoso Ltd", "Fabrikam Inc", "Tailspin Toys"]
        urls = {
            str(r["text"]).split(":")[0]: re.search(r"http://\S+/onboard/[\w-]+", str(r["text"]))
            for r in replies[:3]
        }
        assert all(urls.values()) and len({m.group(0) for m in urls.values() if m}) == 3
        await until(lambda: "0 validated, 3 waiting" in slack.messages[(channel, ts)]["text"])
        contoso_url = urls["Contoso Ltd"]
        assert contoso_url
        status = await live.press(contoso_url.group(0))
        await live.sign_in(str(status["user_code"]), "admin@contoso.com")
        await live.wait_state("contoso", S.VALIDATED)
        summary = await until(
            lambda: (
                "1 validated, 2 waiting" in slack.messages[(channel, ts)]["text"]
                and slack.messages[(channel, ts)]["text"]
            )
        )
        assert "Contoso Ltd: Validated" in summary
        for slug in ("fabrikam", "tailspin"):
            assert (await live.renewal(slug)).state is S.INVITED
        assert len({(await live.renewal(s)).batch for s in ("contoso", "fabrikam")}) == 1
