"""The invitation email and its reminder: stored with the renewal, sent once by one process.

Durability follows the chat outbox (core.delivery): ``InvitationMail.stage`` writes the emails
into the email outbox (its own table, apart from chat's: an email is one row to one address, not
a conversation to keep in order, and its body holds the Auth URL, so it is encrypted and wiped
once sent) inside the unit of work that creates the invitation, so the email exists exactly when
the invitation does. The reminder is written at the same time with ``not_before`` = the reminder
time: the Auth URL is stored only as a hash on the renewal, so the reminder must carry the link
from the start; when its time comes it is sent only if it still applies (the renewal is open, the
invitation is still the current one, the customer has not opened the link).

``EmailDispatcher`` leases due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so replicas never
send the same row, and records the outcome together with the thread's note ("Invitation emailed
to a•••@customer.com", or what to do about a refusal) in one transaction. Guarantee: a sent email
is never sent again after a restart. Only a crash between the mail server's acceptance and that
commit sends it once more, with the same Message-ID (receivers use it to drop the duplicate).
Must not: log an email's body or link, or know SMTP (that is adapters/email).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from core import events, messages
from core.delivery import thread_conversation
from core.errors import EmailDeliveryError, EmailRejectedError, StorageError
from core.model import Renewal, RenewalState, Tenant
from core.ports import (
    Clock,
    Email,
    EmailKind,
    Mailer,
    Message,
    Outgoing,
    OutgoingEmail,
    Tone,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger("renewbot.mail")


@dataclass(frozen=True)
class MailConfig:
    """``organization``: who the customer knows (the MSP's name), said in every email.
    ``remind_after``: when an unopened invitation gets its reminder email (None: never)."""

    organization: str = "your IT support provider"
    remind_after: timedelta | None = timedelta(hours=24)
    max_attempts: int = 6
    lease: timedelta = timedelta(seconds=90)
    domain: str = "renewbot.invalid"  # the right-hand side of Message-IDs


async def _nothing() -> None:
    return None


class InvitationMail:
    """Stages the emails of a new invitation in the caller's unit of work (a service hook)."""

    def __init__(self, config: MailConfig) -> None:
        self.config = config

    async def stage(self, uow: UnitOfWork, tenant: Tenant, renewal: Renewal) -> None:
        """For each new invitation among ``renewal.events``: its email and its reminder.

        The invitation event is marked as emailed, so the thread says so instead of asking
        support to send the link. Does not commit.
        """
        for i, event in enumerate(renewal.events):
            if not isinstance(event, events.RenewalInvited) or event.emailed_to:
                continue
            expires = renewal.invitation_expires_at
            invited = renewal.invited_at
            if expires is None or invited is None:
                continue
            who, org, to = (
                renewal.requested_by.describe(),
                self.config.organization,
                renewal.invitation_email,
            )
            first = messages.invitation_email(tenant, to, who, org, event.auth_url, expires)
            await uow.emails.add(self._item(renewal, "invitation", first), invited)
            remind = self.config.remind_after
            if remind is not None and invited + remind < expires:
                again = messages.reminder_email(tenant, to, who, org, event.auth_url, expires)
                await uow.emails.add(
                    self._item(renewal, "reminder", again, invited + remind), invited
                )
            renewal.events[i] = replace(event, emailed_to=messages.mask_email(to))

    def _item(
        self, renewal: Renewal, kind: EmailKind, email: Email, not_before: datetime | None = None
    ) -> OutgoingEmail:
        return OutgoingEmail(
            renewal.id,
            kind,
            renewal.invitation_ref,
            email,
            message_id=f"<{uuid.uuid4().hex}@{self.config.domain}>",
            not_before=not_before,
        )


def obsolete(item: OutgoingEmail, renewal: Renewal | None) -> str:
    """Why ``item`` must not be sent any more ("" when it still applies)."""
    if renewal is None or not renewal.is_active:
        return "the renewal ended"
    if renewal.invitation_ref != item.invitation:
        return "a fresh invitation replaced it"
    if item.kind == "reminder":
        engaged = renewal.link_opened_at is not None or renewal.state is not RenewalState.INVITED
        code = renewal.code_issued_at
        if engaged or (code and renewal.invited_at and code >= renewal.invited_at):
            return "the customer opened the link"
    return ""


@dataclass
class MailTotals:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0


@dataclass
class EmailDispatcher:
    uow: UnitOfWorkFactory
    mailer: Mailer
    clock: Clock
    config: MailConfig = field(default_factory=MailConfig)
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    poll_every: float = 30.0
    #: called after thread notes were committed: wakes (or runs) the chat outbox
    kick_chat: Callable[[], Awaitable[None]] = _nothing
    totals: MailTotals = field(default_factory=MailTotals)

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Send due emails until ``stopping`` is set (reminders fall due with time: poll too)."""
        while not stopping.is_set():
            self._wake.clear()
            try:
                await self.drain()
            except StorageError:
                log.warning("mail.claim_failed")
            waits = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(stopping.wait()),
            ]
            try:
                await asyncio.wait(
                    waits, timeout=self.poll_every, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()

    async def drain(self) -> int:
        """Send every email due now (one at a time). Returns how many were handled."""
        done = 0
        while True:
            now = self.clock.now()
            async with self.uow() as uow:
                items = await uow.emails.claim(self.owner, now, now + self.config.lease, 10)
                await uow.commit()
            if not items:
                return done
            for item in items:
                await self._one(item)
                done += 1

    async def _one(self, item: OutgoingEmail) -> None:
        async with self.uow(read_only=True) as uow:
            renewal = await uow.renewals.get(item.renewal_id)
        why = obsolete(item, renewal)
        if why or renewal is None:
            async with self.uow() as uow:
                await uow.emails.dropped(item.id, why, self.clock.now())
                await uow.commit()
            self.totals.dropped += 1
            return
        masked = messages.mask_email(item.email.to)
        try:
            await self.mailer.send(item.email, item.message_id)
        except EmailRejectedError as exc:
            await self._finish(
                item, renewal, exc.reason, messages.email_refused(masked, item.kind, exc.reason)
            )
            return
        except EmailDeliveryError as exc:
            if item.attempts >= self.config.max_attempts:
                text = messages.email_failed(masked, item.kind, exc.reason, item.attempts)
                await self._finish(item, renewal, exc.reason, text)
                return
            self.totals.retried += 1
            wait = min(3600.0, 30.0 * 2 ** max(0, item.attempts - 1))
            log.warning("mail.retry", extra={"kind": item.kind, "reason": exc.reason[:120]})
            async with self.uow() as uow:
                until = self.clock.now() + timedelta(seconds=wait)
                await uow.emails.retry(item.id, self.owner, until, exc.reason)
                await uow.commit()
            return
        async with self.uow() as uow:
            await uow.emails.sent(item.id, self.clock.now())
            await self._note(uow, renewal, messages.invitation_emailed(masked, item.kind), "info")
            await uow.commit()
        self.totals.sent += 1
        log.info("mail.sent", extra={"kind": item.kind, "renewal_id": item.renewal_id})
        await self.kick_chat()

    async def _finish(self, item: OutgoingEmail, renewal: Renewal, reason: str, text: str) -> None:
        """Refused for good, or out of attempts: keep the record, tell the thread what to do."""
        async with self.uow() as uow:
            await uow.emails.failed(item.id, reason, self.clock.now())
            await self._note(uow, renewal, text, "error")
            await uow.commit()
        self.totals.failed += 1
        log.warning("mail.failed", extra={"kind": item.kind, "reason": reason[:120]})
        await self.kick_chat()

    async def _note(self, uow: UnitOfWork, renewal: Renewal, text: str, tone: Tone) -> None:
        await stage_note(uow, self.clock, renewal, Message(text, tone))


async def stage_note(uow: UnitOfWork, clock: Clock, renewal: Renewal, message: Message) -> None:
    """A post in the renewal's thread, in ``uow`` (nothing when the thread never opened)."""
    thread = renewal.thread
    if thread is None:
        return
    if renewal.batch:  # many tenants share a batch's thread: say which renewal this is about
        tenant = await uow.tenants.get(renewal.tenant_key)
        if tenant is not None:
            message = replace(message, text=f"{tenant.display_name}: {message.text}")
    item = Outgoing(thread_conversation(thread), "post", thread.platform, thread, message)
    await uow.outbox.add(item, clock.now())
