"""The invitation email over real SMTP (aiosmtpd on 127.0.0.1), and chasing across replicas.

The mail server speaks STARTTLS or implicit TLS with a test CA and wants a login; it can refuse a
recipient (550) or fail (421). Two bot processes sharing one database send each email and take
each chasing step once, driven by one FrozenClock.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.email.smtp import SmtpConfig, SmtpMailer
from adapters.storage.crypto import SecretBox
from adapters.storage.unit_of_work import SqlUnitOfWork
from bot.bootstrap import compose
from core.chasing import ChaseConfig
from core.errors import EmailDeliveryError, EmailRejectedError
from core.ports import Email
from core.services import ServiceConfig
from tests.fakes.core import FakeIdentityProvider, FrozenClock, RecordingChatThreads
from tests.fakes.refs import random_tenant
from tests.integration.live import HERE, SUPPORT, live_bot, until
from tests.servers.smtp import PASSWORD, USER, SmtpStandIn

EMAIL = Email("it@customer.example", "Subject", ("Hello,",), "https://bot.test/onboard/x", "Go")


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpStandIn]:
    stand = SmtpStandIn(tmp_path / "smtp").start()
    yield stand
    stand.stop()


def mailer(stand: SmtpStandIn, **change: object) -> SmtpMailer:
    conf = SmtpConfig(
        "127.0.0.1",
        stand.port,
        "support@msp.example",
        stand.tls,
        USER,
        PASSWORD,
        ca_bundle=str(stand.ca_path),
        timeout=10,
    )
    return SmtpMailer(conf.__class__(**{**conf.__dict__, **change}))


async def test_invitation_arrives_over_starttls_in_text_and_html(
    tmp_path: Path, smtp: SmtpStandIn
) -> None:
    """`renew-token contoso` emails the customer the Auth URL, both parts; the thread says so."""
    async with live_bot(tmp_path, email=smtp.settings()) as live:
        await live.say("contoso")
        (received,) = await until(lambda: smtp.received)
        await live.wait_text("Invitation emailed to a•••@contoso.com.")
        auth_url = live.auth_url()
    assert received.recipients == ["admin@contoso.com"]
    assert smtp.logins == [USER]  # logged in, over TLS (the server allows AUTH only then)
    message = received.message
    assert message["From"] == "MSP Support <support@msp.example>"
    assert message["Subject"] == (
        "Action needed: renew the Microsoft 365 connection for Contoso Ltd"
    )
    text, html = received.part("plain"), received.part("html")
    assert auth_url in text and f'href="{auth_url}"' in html
    for part in (text, html):
        assert "Sam Support of MSP Example" in part
        assert "microsoft.com/devicelogin" in part and "Global Administrator" in part
    assert re.search(r"works until \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert message["Message-ID"].endswith("@renewbot.invalid>")


async def test_a_refused_address_is_posted_in_the_thread(tmp_path: Path, smtp: SmtpStandIn) -> None:
    """The server's 550 reaches support, with what to do; nothing is retried."""
    smtp.refuse.add("nobody@contoso.com")
    async with live_bot(tmp_path, email=smtp.settings()) as live:
        await live.say("contoso nobody@contoso.com")
        text = await live.wait_text("was refused by the mail server")
        assert "550 5.1.1" in text and "n•••@contoso.com" in text
        assert "renew-token cancel" in text
    assert smtp.received == []


async def test_without_email_settings_the_thread_says_to_send_the_link(tmp_path: Path) -> None:
    """Email not configured: the thread asks support to send the link, as before."""
    async with live_bot(tmp_path) as live:
        await live.say("contoso")
        await live.wait_text("Send it to the customer.")


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_both_tls_modes_deliver(tmp_path: Path, tls: Literal["starttls", "implicit"]) -> None:
    """Port 587 with STARTTLS and port 465 with TLS from the start both work."""
    stand = SmtpStandIn(tmp_path / tls, tls).start()
    try:
        await mailer(stand).send(EMAIL, "<a@test>")
    finally:
        stand.stop()
    (received,) = stand.received
    assert received.message["Message-ID"] == "<a@test>"


async def test_server_answers_become_plain_errors(smtp: SmtpStandIn, tmp_path: Path) -> None:
    """550: refused for good; 421, a wrong password, an unknown CA, no server: try later."""
    smtp.refuse.add(EMAIL.to)
    with pytest.raises(EmailRejectedError, match="550"):
        await mailer(smtp).send(EMAIL, "<b@test>")
    smtp.refuse.clear()
    smtp.failures = 1
    with pytest.raises(EmailDeliveryError, match="421") as failed:
        await mailer(smtp).send(EMAIL, "<c@test>")
    assert not isinstance(failed.value, EmailRejectedError)
    with pytest.raises(EmailDeliveryError, match="login refused") as login:
        await mailer(smtp, password="wrong").send(EMAIL, "<d@test>")
    assert "wrong" not in str(login.value)
    other_ca = SmtpStandIn(tmp_path / "other").ca_path  # a CA that did not sign the server
    with pytest.raises(EmailDeliveryError, match="not reachable"):
        await mailer(smtp, ca_bundle=str(other_ca)).send(EMAIL, "<e@test>")
    with pytest.raises(EmailRejectedError, match="not an email address"):
        await mailer(smtp).send(Email("no address", "s", (), "l"), "<f@test>")
    assert smtp.received == []


async def test_two_replicas_send_each_email_and_take_each_step_once(
    own_engine: AsyncEngine, box: SecretBox, smtp: SmtpStandIn
) -> None:
    """Two processes on one database: one invitation, one reminder, one mention."""
    clock = FrozenClock()
    chat = RecordingChatThreads()
    tenant = random_tenant("chase")
    uow = functools.partial(SqlUnitOfWork, own_engine, box)
    async with uow() as u:
        await u.tenants.add(tenant)
        await u.commit()
    replicas = [
        compose(
            uow=uow,
            identity=FakeIdentityProvider(clock),
            threads=chat,
            clock=clock,
            config=ServiceConfig(public_url="https://bot.test"),
            mailer=mailer(smtp),
            chase=ChaseConfig(mention_after_lapses=0),
        )
        for _ in range(2)
    ]
    a, b = replicas
    await a.desk.handle(tenant.slug, HERE, SUPPORT)

    async def round_(**delta: float) -> None:
        clock.advance(**delta)
        await asyncio.gather(*(r.mail.drain() for r in replicas if r.mail))
        await asyncio.gather(*(r.chaser.sweep() for r in replicas))
        await asyncio.gather(*(r.dispatcher.drain() for r in replicas))

    await round_(seconds=1)
    assert len(smtp.received) == 1
    await round_(hours=24)
    await round_(minutes=1)
    subjects = [r.message["Subject"].split(":")[0] for r in smtp.received]
    assert subjects == ["Action needed", "Reminder"]
    token = smtp.received[0].part("plain").split("/onboard/")[1].split()[0]
    await b.chaser.link_opened(token)
    await round_(hours=4)
    await round_(hours=1)
    texts = chat.texts()
    assert sum("Reminder emailed" in t for t in texts) == 1
    assert sum("Invitation emailed" in t for t in texts) == 1
    assert sum(m.mention is not None for msgs in chat.threads.values() for m in msgs) == 1
    reply = await b.desk.handle("pending", HERE, SUPPORT)
    assert "requester mentioned" in reply.text and "reminder emailed" in reply.text
