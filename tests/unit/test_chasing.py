"""The invitation email and chasing a stalled customer, on a FrozenClock (issue 16)."""

from __future__ import annotations

import pytest

from bot.bootstrap import compose
from core import commands
from core.chasing import ChaseConfig
from core.errors import InvitationNotFoundError
from core.model import Actor, RenewalState
from core.services import ServiceConfig
from tests.fakes.core import RecordingMailer, in_memory
from tests.unit.conftest import HERE, SUPPORT, World

CUSTOMER = Actor("web", "customer")


class MailWorld(World):
    """The unit world with email configured (a recording mailer)."""

    def __init__(self, chase: ChaseConfig | None = None) -> None:
        super().__init__()
        self.mailer = RecordingMailer()
        self.rewire(chase)

    def rewire(self, chase: ChaseConfig | None = None) -> None:
        """A fresh process on the same store (a restart, or a second replica)."""
        self.core = compose(
            uow=in_memory(self.store),
            identity=self.identity,
            threads=self.chat,
            clock=self.clock,
            config=ServiceConfig(public_url="https://bot.test"),
            deliver_inline=True,
            watch_flow=lambda rid, delay: self.watched.append((rid, delay)),
            mailer=self.mailer,
            chase=chase,
        )

    async def tick(self, **delta: float) -> None:
        """Time passes; the background workers do their round."""
        self.clock.advance(**delta)
        await self.core.chaser.sweep()
        assert self.core.mail is not None
        await self.core.mail.drain()

    def token_from_thread_last(self) -> str:
        for text in reversed(self.chat.texts()):
            if "/onboard/" in text:
                return text.split("/onboard/")[1].split()[0]
        raise AssertionError("no Auth URL posted")

    def renewal_id(self) -> str:
        (rid,) = self.store.renewals
        return rid


@pytest.fixture
def mw() -> MailWorld:
    return MailWorld()


def mentions(world: World) -> list[str]:
    return [m.text for m in world.chat.threads["t1"] if m.mention is not None]


async def test_invitation_is_emailed_and_the_thread_says_so(mw: MailWorld) -> None:
    """The customer gets the Auth URL by email; support reads where it went, masked."""
    await mw.say("contoso")
    ((email, message_id),) = mw.mailer.sent
    token = mw.token_from_thread()
    assert email.to == "admin@contoso.com"
    assert email.link == f"https://bot.test/onboard/{token}"
    assert "Contoso Ltd" in email.subject and message_id.startswith("<")
    assert "Sam Support" in " ".join(email.intro)  # who asks
    assert any("Consent on behalf of your organization" in p for p in email.outro)
    texts = mw.chat.texts()
    assert any("Emailing the invitation to a•••@contoso.com" in t for t in texts)
    assert "Invitation emailed to a•••@contoso.com." in texts
    assert not any("Send it to the customer" in t for t in texts)
    assert "admin@contoso.com" not in "\n".join(texts[1:])  # the address is masked in chat


async def test_without_email_the_thread_says_to_send_the_link_by_hand(world: World) -> None:
    """No mail server configured: as before, support is told to send the link."""
    await world.say("contoso fred@contoso.com")
    assert any("Send it to the customer" in t for t in world.chat.texts())
    assert not any("emailed" in t.lower() for t in world.chat.texts())


async def test_a_refused_email_is_posted_with_what_to_do(mw: MailWorld) -> None:
    """A 550 from the mail server reaches the thread with the next step, not only a log."""
    mw.mailer.refuse = "550 5.1.1 no such user"
    await mw.say("contoso typo@contoso.com")
    refused = [m for m in mw.chat.threads["t1"] if "refused" in m.text]
    assert len(refused) == 1 and refused[0].tone == "error"
    assert "550 5.1.1 no such user" in refused[0].text and "renew-token cancel" in refused[0].text
    assert "t•••@contoso.com" in refused[0].text
    mw.mailer.refuse = None
    await mw.tick(hours=1)
    assert not mw.mailer.sent  # refused for good: not sent again


async def test_a_failing_mail_server_is_retried_then_reported(mw: MailWorld) -> None:
    """421s are retried with back-off; after the last attempt the thread says what to do."""
    mw.mailer.fail = "421 4.3.0 try later"
    await mw.say("contoso")
    assert not any("emailed" in t or "delivered" in t for t in mw.chat.texts()[2:])
    for _ in range(7):
        await mw.tick(hours=1)
    failed = [t for t in mw.chat.texts() if "could not be delivered after 6 attempts" in t]
    assert len(failed) == 1 and "421 4.3.0 try later" in failed[0]
    mw.mailer.fail = None
    await mw.tick(hours=1)
    assert mw.mailer.subjects == []  # the invitation is not sent after being reported


async def test_reminder_email_when_the_link_is_not_opened(mw: MailWorld) -> None:
    """24 h without the page being opened: a reminder email, noted in the thread, once."""
    await mw.say("contoso")
    await mw.tick(hours=23, minutes=59)
    assert len(mw.mailer.sent) == 1
    await mw.tick(minutes=1)
    assert [s.split(":")[0] for s in mw.mailer.subjects] == ["Action needed", "Reminder"]
    assert mw.mailer.sent[1][0].link == mw.mailer.sent[0][0].link
    notes = [t for t in mw.chat.texts() if t.startswith("Reminder emailed to a•••@contoso.com")]
    assert len(notes) == 1
    mw.rewire()  # a restart
    await mw.tick(hours=30)
    assert len(mw.mailer.sent) == 2


async def test_no_reminder_once_the_customer_opened_the_link(mw: MailWorld) -> None:
    """The page's script reported the link opened: the reminder is dropped, not sent."""
    await mw.say("contoso")
    await mw.core.chaser.link_opened(mw.token_from_thread())
    assert mw.store.renewals[mw.renewal_id()].link_opened_at == mw.clock.now()
    await mw.tick(hours=25)
    assert len(mw.mailer.sent) == 1


async def test_opened_but_no_sign_in_mentions_the_requester_once(mw: MailWorld) -> None:
    """4 h after opening without a sign-in, the person who asked is really mentioned."""
    await mw.say("contoso")
    await mw.core.chaser.link_opened(mw.token_from_thread())
    await mw.tick(hours=3, minutes=59)
    assert mentions(mw) == []
    await mw.tick(minutes=1)
    ((text,),) = [mentions(mw)]
    assert "opened the link 4 hours ago" in text and "renew-token code contoso" in text
    (mention,) = [m.mention for m in mw.chat.threads["t1"] if m.mention]
    assert (mention.platform, mention.user_id) == ("test", SUPPORT.user_id)
    await mw.tick(hours=1)
    mw.rewire()  # a restart does not mention again
    await mw.tick(hours=1)
    assert len(mentions(mw)) == 1


async def test_two_lapsed_codes_mention_the_requester(mw: MailWorld) -> None:
    """The code expired twice unused: support is pulled in at once."""
    await mw.say("contoso")
    token = mw.token_from_thread()
    for _ in range(2):
        await mw.service.start_authentication(token, CUSTOMER, fresh=True)
        mw.clock.advance(minutes=16)
        await mw.service.advance(mw.renewal_id())
    assert mw.store.renewals[mw.renewal_id()].codes_lapsed == 2
    await mw.tick(seconds=1)
    (text,) = mentions(mw)
    assert "2 codes expired without a sign-in" in text


async def test_expiring_invitation_warns_once_with_a_fresh_invitation_button(
    mw: MailWorld,
) -> None:
    """A day before the invitation expires, support is told once, with a button."""
    await mw.say("contoso")
    await mw.core.chaser.link_opened(mw.token_from_thread())
    mw.core = compose(  # mentions off, to see the expiry warning alone
        uow=in_memory(mw.store),
        identity=mw.identity,
        threads=mw.chat,
        clock=mw.clock,
        config=ServiceConfig(public_url="https://bot.test"),
        deliver_inline=True,
        mailer=mw.mailer,
        chase=ChaseConfig(mention_after=None),
    )
    await mw.tick(days=5, hours=23)
    assert not any("expires at" in t for t in mw.chat.texts())
    await mw.tick(hours=1)
    await mw.tick(hours=2)
    (warning,) = [m for m in mw.chat.threads["t1"] if "expires at" in m.text]
    assert [(a.kind, a.label) for a in warning.actions] == [("reinvite", "Send a fresh invitation")]
    assert warning.mention is not None


async def test_the_fresh_invitation_button_emails_a_new_link(mw: MailWorld) -> None:
    """Pressing the button kills the old link, posts and emails a new one, restarts chasing."""
    await mw.say("contoso")
    old = mw.token_from_thread()
    cmd = commands.from_action("reinvite", "contoso", HERE, SUPPORT)
    assert isinstance(cmd, commands.ResendInvitation)
    reply = await mw.core.desk.execute(cmd, HERE, SUPPORT)
    assert "fresh invitation" in reply.text
    new = mw.token_from_thread_last()
    assert new != old
    with pytest.raises(InvitationNotFoundError):
        await mw.service.open_invitation(old)
    assert [e.link.rsplit("/", 1)[1] for e, _ in mw.mailer.sent] == [old, new]
    await mw.tick(hours=25)  # the old invitation's reminder is obsolete; the new one's is due
    assert [e.link.rsplit("/", 1)[1] for e, _ in mw.mailer.sent] == [old, new, new]


async def test_validation_or_cancel_stops_the_chasing(mw: MailWorld) -> None:
    """Once cancelled: no reminder, no mention, no warning, ever."""
    await mw.say("contoso")
    await mw.say("cancel contoso")
    texts_before = len(mw.chat.texts())
    await mw.tick(days=8)
    assert len(mw.mailer.sent) == 1
    assert len(mw.chat.texts()) == texts_before


async def test_pending_says_what_was_sent_when_and_what_is_next(mw: MailWorld) -> None:
    """`pending` answers 'did the customer get it, and what happens next?'."""
    await mw.say("contoso")
    await mw.tick(hours=2)
    reply = await mw.say("pending")
    assert "sent: invitation emailed 2026-11-27 09:00 UTC" in reply
    assert "next: reminder email at 2026-11-28 09:00 UTC" in reply
    await mw.tick(hours=23)
    reply = await mw.say("pending")
    assert "reminder emailed 2026-11-28 10:00 UTC" in reply  # the round after it fell due
    assert "next: expiry warning at 2026-12-03 09:00 UTC" in reply


async def test_without_email_an_unopened_link_is_noted_in_the_thread(world: World) -> None:
    """No mail server: after 24 h the thread says the link was not opened, once."""
    await world.say("contoso")
    world.clock.advance(hours=24)
    await world.core.chaser.sweep()
    await world.core.chaser.sweep()
    notes = [t for t in world.chat.texts() if "has not opened the Auth URL after 24 hours" in t]
    assert len(notes) == 1


async def test_a_code_that_lapses_on_the_open_page_is_replaced_without_a_click(
    mw: MailWorld,
) -> None:
    """The page's script asks for a fresh code only when the last one ran out unused."""
    await mw.say("contoso")
    token = mw.token_from_thread()
    first = await mw.service.start_authentication(token, CUSTOMER)
    same = await mw.core.chaser.renew_lapsed_code(token, CUSTOMER)
    assert same.device_code == first.device_code  # a live code is not replaced
    mw.clock.advance(minutes=16)
    await mw.service.advance(mw.renewal_id())
    assert mw.store.renewals[mw.renewal_id()].state is RenewalState.INVITED
    fresh = await mw.core.chaser.renew_lapsed_code(token, CUSTOMER)
    assert fresh.state is RenewalState.CODE_ISSUED
    assert fresh.device_code and first.device_code
    assert fresh.device_code.user_code != first.device_code.user_code
