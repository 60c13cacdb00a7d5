"""Signed webhooks to a receiving service that checks signatures, fails and recovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import generate_key
from adapters.storage.tables import webhook_deliveries
from bot.bootstrap import runtime
from tests.integration.live import live_bot, until
from tests.servers.postgres import fresh_database
from tests.servers.webhooks import WebhookReceiver, secret


async def delivered(engine: AsyncEngine, n: int) -> bool:
    async with engine.connect() as conn:
        query = select(func.count()).where(webhook_deliveries.c.delivered_at.is_not(None))
        return int((await conn.execute(query)).scalar_one()) >= n


def hooks(receiver: WebhookReceiver, **kw: Any) -> dict[str, Any]:
    conf = {
        "endpoints": [receiver.url],
        "secrets": receiver.secret,
        "first_retry_seconds": 0.2,
        "max_retry_seconds": 0.4,
        "alert_after": 2,
        "poll_seconds": 0.1,
        **kw,
    }
    return {"webhooks": conf}


async def test_validated_tenant_reaches_a_receiver_that_fails_then_recovers(
    tmp_path: Path,
) -> None:
    """A renewal's validation is announced to the receiver, signed; while the receiver answers
    500 the delivery is retried and the alert channel hears of it; once up, it gets the event
    exactly once (the same webhook-id on every attempt)."""
    receiver = await WebhookReceiver(secret(), fail_next=3).start()
    try:
        async with live_bot(tmp_path, more=hooks(receiver)) as live:
            await live.say("contoso")
            status = await live.press(live.auth_url())
            await live.sign_in(str(status["user_code"]), "admin@contoso.com")
            await until(lambda: receiver.accepted, timeout=30)
            await until(
                lambda: any("keeps failing" in t for t in live.chat.announcements), timeout=10
            )
        (event_id, body) = receiver.accepted[0]
        assert receiver.kinds() == ["tenant.validated"]
        assert body["data"]["tenant"] == "contoso" and body["data"]["state"] == "healthy"
        assert receiver.attempts == [event_id] * 4 and receiver.bad_signatures == 0
        (alert,) = [t for t in live.chat.announcements if "keeps failing" in t]
        assert "/hooks/renewbot" in alert and "HTTP 500" in alert
    finally:
        await receiver.stop()


async def test_a_wrong_secret_is_refused_by_the_receiver(tmp_path: Path) -> None:
    """The receiver's check is real: signed with another secret, every delivery is refused."""
    receiver = await WebhookReceiver(secret()).start()
    try:
        conf = hooks(receiver, secrets=secret())
        async with live_bot(tmp_path, more=conf) as live:
            await live.rt.core.monitor.mark_expired(live.tenants["contoso"], "AADSTS700082")
            await until(lambda: receiver.bad_signatures >= 2, timeout=10)
        assert receiver.accepted == []
    finally:
        await receiver.stop()


async def test_a_restart_loses_no_event(tmp_path: Path) -> None:
    """An event stored while the receiver is down survives the process; the next one sends it."""
    receiver = await WebhookReceiver(secret(), fail_next=10**6).start()
    key = generate_key()
    try:
        async with live_bot(tmp_path, key=key, more=hooks(receiver, alert_after=100)) as first:
            await first.rt.core.monitor.mark_expired(first.tenants["contoso"], "AADSTS700082")
            await until(lambda: len(receiver.attempts) >= 2, timeout=10)
            sandbox, tenants = first.sandbox, first.tenants
        assert receiver.accepted == []
        receiver.fail_next = 0
        async with live_bot(
            tmp_path, key=key, seed=False, sandbox=sandbox, more=hooks(receiver)
        ) as second:
            await until(lambda: receiver.accepted, timeout=10)
            assert second.tenants["contoso"].key == tenants["contoso"].key
        assert receiver.kinds() == ["tenant.expired"]
    finally:
        await receiver.stop()


@pytest.mark.postgres
async def test_two_replicas_deliver_each_event_once(tmp_path: Path, postgres_url: str) -> None:
    """Both replicas run the delivery worker on one PostgreSQL: leases give each event to one."""
    receiver = await WebhookReceiver(secret()).start()
    url = await fresh_database(postgres_url)
    try:
        async with live_bot(tmp_path, url, more=hooks(receiver)) as a:
            async with runtime(a.rt.settings, migrate=False) as b:
                assert a.rt.webhooks is not None and b.webhooks is not None
                b.supervisor.spawn(b.webhooks.run(b.stopping, 0.05), "webhooks-b")
                contoso = a.tenants["contoso"]
                for _ in range(30):
                    async with a.rt.uow() as uow:
                        await uow.webhooks.emit(
                            "tenant.validated", contoso, a.rt.core.service.clock.now()
                        )
                        await uow.commit()
                # Delivered rows are never claimed again: once all 30 are marked delivered, no
                # duplicate can still be on its way.
                await until(lambda: delivered(a.rt.engine, 30), timeout=30)
                b.stopping.set()
        ids = receiver.ids()
        assert len(ids) == 30 and len(set(ids)) == 30
        assert len(receiver.attempts) == 30
    finally:
        await receiver.stop()
