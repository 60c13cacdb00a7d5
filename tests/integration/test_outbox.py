"""The durable outbox end to end: real slack-bolt clients against the rate-limited Slack stand-in.

The stand-in keeps Slack's documented shape (one chat.postMessage per second per channel, short
bursts, 429 with Retry-After) at ten times the tempo, and so does the bot's pacing, so the tests
take seconds rather than minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.slack.threads import SlackThreads
from bot import manifests
from bot.bootstrap import Runtime, runtime
from core.delivery import thread_conversation
from core.errors import StorageError
from core.model import Origin, ThreadRef
from core.ports import Message, Outgoing
from tests.integration.live import Live, live_bot, until
from tests.integration.test_slack import slack_settings
from tests.servers.postgres import fresh_database
from tests.servers.slack import SlackStandIn

TEMPO = 10.0  # Slack's pace, ten times faster


@pytest.fixture
async def fast_slack() -> AsyncIterator[SlackStandIn]:
    stand = await SlackStandIn(post_rate=TEMPO).start()
    yield stand
    await stand.stop()


def at_tempo(rt: Runtime, lease: float = 30.0, concurrency: int = 50) -> SlackThreads:
    """Pace this process's dispatcher like the stand-in; returns its Slack adapter."""
    assert rt.slack is not None
    threads = rt.slack.threads
    assert isinstance(threads, SlackThreads)
    rt.core.dispatcher.pacing["slack"] = replace(threads.pace, rate=TEMPO)
    rt.core.dispatcher.lease = timedelta(seconds=lease)
    rt.core.dispatcher.poll_every = 0.2
    rt.core.dispatcher.concurrency = concurrency
    return threads


@asynccontextmanager
async def replica(live: Live, concurrency: int = 50) -> AsyncIterator[Runtime]:
    """A second bot process's objects over the same database, with its dispatcher running."""
    async with runtime(live.rt.settings, migrate=False) as other:
        other.chat.add("test", live.chat)
        at_tempo(other, concurrency=concurrency)
        other.supervisor.spawn(other.core.dispatcher.run(other.stopping), "outbox-b")
        try:
            yield other
        finally:
            other.stopping.set()
            await other.supervisor.drain(timeout=10)


def alerts(stand: SlackStandIn) -> list[str]:
    return [str(a["text"]) for a in stand.posted("C-alerts")]


async def announce_all(rt: Runtime, texts: list[str]) -> None:
    """Announce every text at once, as a health sweep does when many tenants expire together
    (on SQLite the write queue keeps their order; it is the order they must arrive in)."""
    notifier = rt.core.monitor.notifier
    await asyncio.gather(*(notifier.announce(Message(t)) for t in texts))


async def announce_each(rt: Runtime, texts: list[str]) -> None:
    for text in texts:
        await rt.core.monitor.notifier.announce(Message(text))


async def test_fifty_announcements_at_once_all_arrive_in_order_once(
    tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """50 alerts into a channel that takes 1 post a second: all 50, in order, none twice."""
    async with live_bot(tmp_path, slack=slack_settings(fast_slack)) as live:
        at_tempo(live.rt)
        wanted = [f"Alert {i:02d}" for i in range(50)]
        await announce_all(live.rt, wanted)
        await until(lambda: len(alerts(fast_slack)) >= 50, timeout=60)
        assert alerts(fast_slack) == wanted
        await until(lambda: not live.rt.core.dispatcher._active)
        async with live.rt.uow() as uow:
            assert (await uow.outbox.stats())["pending"] == 0


async def test_restart_mid_queue_loses_none_and_doubles_none(
    tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """The process dies while Slack has taken a post whose answer never came; the next process
    finds that post (its metadata) instead of sending it again, and sends the rest in order."""
    wanted = [f"Alert {i:02d}" for i in range(30)]
    settings = slack_settings(fast_slack)
    async with live_bot(tmp_path, slack=settings) as live:
        at_tempo(live.rt, lease=1.0)
        await announce_all(live.rt, wanted)
        await until(lambda: len(alerts(fast_slack)) >= 10, timeout=30)
        fast_slack.stall_next_post()
        await until(lambda: fast_slack.stalled)
        await live.rt.supervisor.close()  # the dispatcher dies mid-send
        assert len(alerts(fast_slack)) < len(wanted)
        async with replica(live):
            await until(lambda: len(alerts(fast_slack)) >= len(wanted), timeout=60)
        assert alerts(fast_slack) == wanted


async def drained(rt: Runtime, timeout: float = 60.0) -> None:
    """Until nothing waits in the outbox (a message backing off included) and none is in hand."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with rt.uow() as uow:
            pending = (await uow.outbox.stats())["pending"]
        if not pending and not rt.core.dispatcher._active:
            return
        assert loop.time() < deadline, f"{pending} messages still pending"
        await asyncio.sleep(0.05)


ALERT = "Tokens of Contoso expired"


async def alert_through(tmp_path: Path, stand: SlackStandIn, *failures: tuple[Any, ...]) -> None:
    """One alert announced with ``failures`` scripted at Slack (``fail_next``'s arguments),
    delivered until nothing is left in the outbox: it must show once."""
    async with live_bot(tmp_path, slack=slack_settings(stand)) as live:
        at_tempo(live.rt)
        live.rt.core.dispatcher.max_backoff = 0.2
        for failure in failures:
            stand.fail_next(*failure)
        await live.rt.core.monitor.notifier.announce(Message(ALERT))
        await drained(live.rt)
    assert alerts(stand) == [ALERT]


async def test_a_post_whose_answer_was_lost_is_checked_until_slack_can_say_never_resent(
    tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """Slack takes an alert but its answer is cut short; then the check for it
    (conversations.history) cannot reach Slack for a while. The check waits and is asked
    again: sending unchecked would show the alert twice."""
    dropped = [("conversations.history", "drop")] * 20  # several checks, every retry of each
    await alert_through(tmp_path, fast_slack, ("chat.postMessage", "cut"), *dropped)
    assert not fast_slack.failures["conversations.history"]  # asked until Slack said


async def test_an_alert_slack_took_whose_answer_never_came_arrives_once(
    tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """The connection closes after Slack took the alert, before its answer: the outbox finds
    the alert in the channel (its id in the metadata) instead of sending it a second time."""
    await alert_through(tmp_path, fast_slack, ("chat.postMessage", "lost"))
    assert fast_slack.called("conversations.history")  # looked for before sending again


async def test_a_check_slack_fails_with_a_passing_error_is_asked_again_not_skipped(
    tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """Slack answers the check with ``internal_error`` (HTTP 200, as most of its errors): a
    passing failure, so the check is asked again; only an answer like ``missing_scope`` means
    Slack will not say (and the message then goes unchecked)."""
    await alert_through(
        tmp_path,
        fast_slack,
        ("chat.postMessage", "lost"),
        ("conversations.history", "error", "internal_error"),
    )
    assert len(fast_slack.called("conversations.history")) == 2


async def test_with_the_manifests_scopes_the_check_finds_a_lost_alert(tmp_path: Path) -> None:
    """The Slack app installed from renewbot's manifest can ask Slack whether a post whose
    answer was lost went through: with only the scopes the manifest asks for, an alert Slack
    took before the connection closed shows once (without the history scopes every check is
    ``missing_scope`` and the alert is sent again)."""
    manifest = yaml.safe_load(manifests.slack("https://bot.example.com/"))
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    stand = await SlackStandIn(post_rate=TEMPO, scopes=scopes).start()
    try:
        await alert_through(tmp_path, stand, ("chat.postMessage", "lost"))
        assert stand.called("conversations.history")
    finally:
        await stand.stop()


@pytest.mark.postgres
async def test_two_replicas_deliver_each_message_once_in_order(
    tmp_path: Path, postgres_url: str, fast_slack: SlackStandIn
) -> None:
    """Two processes on one PostgreSQL share four conversations: every message once, in order."""
    url = await fresh_database(postgres_url)
    async with live_bot(tmp_path, url, slack=slack_settings(fast_slack)) as a:
        threads = at_tempo(a.rt, concurrency=2)  # four conversations: each replica takes two
        async with replica(a, concurrency=2) as b:
            fast_slack.channels |= {"C-1", "C-2", "C-3"}
            origin_threads = [
                await threads.open_thread(Origin("slack", f"C-{n}"), Message(f"Thread {n}"))
                for n in (1, 2, 3)
            ]
            wanted: dict[str, list[str]] = {}
            for n, thread in enumerate(origin_threads):
                wanted[thread.key] = [f"T{n} reply {i:02d}" for i in range(12)]
            alerts_wanted = [f"Alert {i:02d}" for i in range(12)]

            async def enqueue(rt: Runtime, thread: ThreadRef, texts: list[str]) -> None:
                for text in texts:
                    async with rt.uow() as uow:
                        item = Outgoing(
                            thread_conversation(thread), "post", "slack", thread, Message(text)
                        )
                        await uow.outbox.add(item, rt.core.service.clock.now())
                        await uow.commit()
                    rt.core.dispatcher.wake()

            await asyncio.gather(
                enqueue(a.rt, origin_threads[0], wanted[origin_threads[0].key]),
                enqueue(b, origin_threads[1], wanted[origin_threads[1].key]),
                enqueue(a.rt, origin_threads[2], wanted[origin_threads[2].key]),
                announce_each(b, alerts_wanted[:6]),
            )
            await announce_each(a.rt, alerts_wanted[6:])

            def done() -> bool:
                replies = [fast_slack.thread(*t.key.split("|")) for t in origin_threads]
                return len(alerts(fast_slack)) >= 12 and all(len(r) >= 12 for r in replies)

            await until(done, timeout=60)
            assert a.rt.core.dispatcher.totals.delivered and b.core.dispatcher.totals.delivered
        for thread in origin_threads:
            channel, ts = thread.key.split("|")
            got = [str(x["text"]) for x in fast_slack.thread(channel, ts)]
            assert got == wanted[thread.key]
        assert alerts(fast_slack) == alerts_wanted


async def test_a_channel_that_refuses_for_good_is_reported(
    tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """Posts into a deleted channel are kept as failed and reported in the alert channel and
    /metrics; a missing alert channel is reported on the other platform and in /metrics."""
    async with live_bot(tmp_path, slack=slack_settings(fast_slack)) as live:
        threads = at_tempo(live.rt)
        fast_slack.channels.add("C-doomed")
        doomed = await threads.open_thread(Origin("slack", "C-doomed"), Message("Thread"))
        fast_slack.channels.discard("C-doomed")  # the channel is deleted
        for text in ("first", "second"):
            async with live.rt.uow() as uow:
                item = Outgoing(thread_conversation(doomed), "post", "slack", doomed, Message(text))
                await uow.outbox.add(item, live.rt.core.service.clock.now())
                await uow.commit()
        live.rt.core.dispatcher.wake()
        report = await until(lambda: [t for t in alerts(fast_slack) if "channel_not_found" in t])
        assert len(report) == 1  # one report for the dead conversation, not one per message
        assert "could not be delivered" in report[0]
        fast_slack.channels.discard("C-alerts")  # now the alert channel itself goes
        await live.rt.core.monitor.notifier.announce(Message("Tenant X expired"))
        shown = await until(lambda: [m for m in live.chat.announced if "alert channel" in m.text])
        assert "channel_not_found" in shown[0].text and shown[0].tone == "error"
        async with live.http.get(live.base_url + "/metrics") as resp:
            metrics = await resp.text()
        assert 'renewbot_outbox_messages{state="failed"} 3' in metrics
        assert "renewbot_chat_undeliverable_total 3" in metrics


class Unreachable:
    """The unit of work of a process that is gone: nothing it would write lands any more."""

    def __call__(self, read_only: bool = False, one_write: bool = False) -> Any:
        return self

    async def __aenter__(self) -> Any:
        raise StorageError("the database is not reachable")

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_post_slack_took_before_the_process_died_is_not_sent_again(
    db: str, request: pytest.FixtureRequest, tmp_path: Path, fast_slack: SlackStandIn
) -> None:
    """The hot path's crash window: a new thread's only post is taken by Slack, and the process
    dies before it can remove the row or give the lease up (only the claim that handed the post
    out had counted it as tried). The next owner finds the post in the thread and does not
    post it again."""
    url = None if db == "sqlite" else await fresh_database(request.getfixturevalue("postgres_url"))
    async with live_bot(tmp_path, url, slack=slack_settings(fast_slack)) as live:
        threads = at_tempo(live.rt, lease=1.0)
        fast_slack.channels.add("C-new")
        thread = await threads.open_thread(Origin("slack", "C-new"), Message("Renewal"))
        fast_slack.stall_next_post()
        async with live.rt.uow() as uow:
            item = Outgoing(thread_conversation(thread), "post", "slack", thread, Message("URL"))
            await uow.outbox.add(item, live.rt.core.service.clock.now())
            await uow.commit()
        live.rt.core.dispatcher.wake()
        await until(lambda: fast_slack.stalled)
        live.rt.core.dispatcher.uow = Unreachable()  # the process is gone: no delete, no release
        await live.rt.supervisor.close()
        async with replica(live) as other:
            await until(lambda: other.core.dispatcher.totals.delivered >= 1, timeout=30)
            await live.delivered()
        replies = fast_slack.thread(*thread.key.split("|"))
        assert [r["text"] for r in replies] == ["URL"]
