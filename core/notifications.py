"""Turns a renewal's recorded events into chat: thread replies, the status line, announcements.

Nothing here talks to chat except ``open_thread`` (the thread must exist at once). Everything else
is written to the durable outbox (core.delivery sends it, in order, paced, retried): ``stage``
inside the caller's unit of work, so the messages commit with the state change that caused them,
and ``publish`` / ``announce`` / ``note`` / ``withdrawn`` / ``refresh_batch`` in a unit of work of
their own. Chat failures never undo a state change (STYLE.md 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from core import events, identity_codes, messages
from core.chat import ChatRouter
from core.delivery import Dispatcher, StatusMemo, alerts_conversation, thread_conversation
from core.errors import ChatDeliveryError, ChatRateLimitedError
from core.model import Renewal, RenewalState, Tenant, ThreadRef
from core.ports import (
    Action,
    ActionKind,
    ChatThreads,
    Clock,
    FirstPost,
    Lease,
    Message,
    OutboxKind,
    Outgoing,
    Tone,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger("renewbot.notify")

OPEN_ATTEMPTS = 4  # a rate-limited thread opening waits Retry-After this many times at most
OPEN_MAX_WAIT = 10.0

BatchSummary = Callable[[str], Awaitable[Message | None]]
"""The summary message of a batch (`renew all-expired`), from its id."""


async def _nothing() -> None:
    return None


@dataclass
class Staged:
    """What ``Notifier.stage`` stored: messages held for this process's dispatcher (sent without
    a claim once committed) and whether any wait for a claim (``wake``: the dispatchers must be
    woken; the caller sets it too when it stored other rows, e.g. emails)."""

    held: list[tuple[Outgoing, Lease]] = field(default_factory=list)
    wake: bool = False


@dataclass
class Prepared:
    """A renewal's events as messages (``Notifier.prepare``): its thread's, in order, and the
    alert channels' announcements."""

    posts: list[Outgoing] = field(default_factory=list)
    announcements: list[Message] = field(default_factory=list)
    #: a new thread's lease for this process's dispatcher (None: it has no room, or no thread)
    lease: Lease | None = None

    @property
    def one_write(self) -> bool:
        """Stored with the renewal (``stage(save=True)``) by one statement on PostgreSQL: no
        announcement, and no post or one held for the dispatcher (unheld, it is a second)."""
        if self.announcements or len(self.posts) > 1:
            return False
        return not self.posts or (self.lease is not None and self.posts[0].kind != "status")


class Notifier:
    def __init__(
        self,
        threads: ChatThreads,
        uow: UnitOfWorkFactory,
        clock: Clock,
        summarize: BatchSummary | None = None,
        *,
        memo: StatusMemo | None = None,
        kick: Callable[[], Awaitable[None]] = _nothing,
    ) -> None:
        self.threads = threads
        self.uow = uow
        self.clock = clock
        self.summarize = summarize
        # The status last shown per thread (shared with the dispatcher, which records what it
        # delivered): an unchanged status is not sent again.
        self.memo = memo or StatusMemo()
        #: called after rows were committed: wakes the dispatcher (or delivers, in tests)
        self.kick = kick
        #: this process's running dispatcher: a new thread's first message goes straight to it
        self.dispatcher: Dispatcher | None = None

    async def open_thread(self, tenant: Tenant, renewal: Renewal) -> ThreadRef | None:
        """Post the thread's first message now (not through the outbox: support waits for it)."""
        status = status_message(tenant, renewal)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                thread = await self.threads.open_thread(renewal.origin, status)
            except ChatRateLimitedError as exc:
                if attempt == OPEN_ATTEMPTS - 1 or exc.retry_after > OPEN_MAX_WAIT:
                    log.warning("chat.thread_open_failed", extra={"renewal_id": renewal.id})
                    return None
                await asyncio.sleep(exc.retry_after)
                continue
            except ChatDeliveryError:
                log.warning("chat.thread_open_failed", extra={"renewal_id": renewal.id})
                return None
            self.memo.remember(thread, status)
            return thread
        return None  # pragma: no cover - the loop returns

    def prepare(self, tenant: Tenant, renewal: Renewal, *, new_thread: bool = False) -> Prepared:
        """What happened since the last stage, as messages (to be stored by ``stage``). The
        renewal's events are consumed. ``new_thread``: see ``stage``."""
        pending, renewal.events = renewal.events, []
        thread = renewal.thread
        prepared = Prepared()
        if new_thread and self.dispatcher is not None:
            prepared.lease = self.dispatcher.lease_new()
        for event in pending:
            message = self.render(tenant, renewal, event)
            if message and thread:
                if renewal.batch:  # many tenants share the thread: say which one this is
                    message = replace(message, text=f"{tenant.display_name}: {message.text}")
                prepared.posts.append(_in_thread(thread, "post", message))
            announcement = self.announcement(tenant, event)
            if announcement:
                prepared.announcements.append(announcement)
        if pending and thread:
            if renewal.batch:
                prepared.posts.append(
                    replace(_in_thread(thread, "status", None), batch=renewal.batch)
                )
            else:
                status = status_message(tenant, renewal)
                if not self.memo.shown(thread, status):
                    prepared.posts.append(_in_thread(thread, "status", status))
        return prepared

    async def stage(
        self,
        uow: UnitOfWork,
        tenant: Tenant,
        renewal: Renewal,
        *,
        new_thread: bool = False,
        save: bool = False,
        prepared: Prepared | None = None,
    ) -> Staged:
        """Put what happened since the last stage/publish into the outbox, in ``uow``.

        Does not commit: the caller commits it with the state change, then calls
        ``flush(staged)``. The renewal's events are consumed (or were, by ``prepare``, into
        ``prepared``). ``new_thread``: the renewal's thread was opened just now, so nothing of
        it waits in the outbox: its first message is held for this process's dispatcher (no
        claim needed), the rest follows it. ``save``: save the renewal too, with that first
        message (``RenewalRepository.save(first=)``; ConcurrencyError as it raises it).
        """
        prepared = prepared or self.prepare(tenant, renewal, new_thread=new_thread)
        now = self.clock.now()
        staged = Staged()
        lease = prepared.lease
        if save and not (lease and prepared.posts):  # no message to hold: the renewal alone
            await uow.renewals.save(renewal)
            save = False

        async def add(item: Outgoing) -> None:
            nonlocal lease, save
            hold, lease = lease, None  # only a conversation's first message is handed out so
            if save and hold is not None:
                held = await uow.renewals.save(renewal, FirstPost(item, hold, now))
                save = False
            else:
                held = await uow.outbox.add(item, now, hold)
            if held is not None and hold is not None:
                staged.held.append((held, hold))
            elif not any(h.conversation == item.conversation for h, _ in staged.held):
                staged.wake = True  # (one after a held message follows it without a claim)

        for item in prepared.posts:
            await add(item)
        for announcement in prepared.announcements:
            await self._stage_announcement(uow, announcement)
            staged.wake = True
        return staged

    async def flush(self, staged: Staged | None = None) -> None:
        """Rows were committed: have them delivered (``staged``: only what ``stage`` stored)."""
        if staged is not None and self.dispatcher is not None:
            for item, lease in staged.held:
                self.dispatcher.take(item, lease)
        if staged is None or staged.wake:
            await self.kick()

    async def publish(self, tenant: Tenant, renewal: Renewal) -> None:
        """Post what happened since the last publish, then refresh the status message."""
        if not renewal.events:
            return
        async with self.uow() as uow:
            await self.stage(uow, tenant, renewal)
            await uow.commit()
        await self.flush()

    async def _enqueue(self, *items: Outgoing) -> None:
        now = self.clock.now()
        async with self.uow() as uow:
            for item in items:
                await uow.outbox.add(item, now)
            await uow.commit()
        await self.flush()

    async def withdrawn(self, tenant: Tenant, thread: ThreadRef, *, reopened: bool = False) -> None:
        """A thread opened for a renewal that lost a race with another request for the tenant
        (``reopened``: that got a fresh Auth URL meanwhile, so this thread's will not work)."""
        text = messages.reopened_elsewhere(tenant) if reopened else messages.withdrawn(tenant)
        await self._enqueue(_in_thread(thread, "status", Message(text, "warning")))

    async def refresh_batch(self, batch: str, thread: ThreadRef) -> None:
        """Rewrite a batch's summary message from what is stored when it is sent (latest wins)."""
        if self.summarize is None:
            return
        await self._enqueue(replace(_in_thread(thread, "status", None), batch=batch))

    def _alert_platforms(self) -> list[str]:
        if isinstance(self.threads, ChatRouter):
            return list(self.threads.platforms)
        return [""]

    async def _stage_announcement(self, uow: UnitOfWork, message: Message) -> None:
        now = self.clock.now()
        for platform in self._alert_platforms():  # each platform's alert channel in its own order
            item = Outgoing(alerts_conversation(platform), "announce", platform, None, message)
            await uow.outbox.add(item, now)

    async def announce(self, message: Message) -> None:
        async with self.uow() as uow:
            await self._stage_announcement(uow, message)
            await uow.commit()
        await self.flush()

    async def note(self, tenant: Tenant, renewal: Renewal, text: str, tone: Tone = "info") -> None:
        if renewal.thread:
            await self._enqueue(_in_thread(renewal.thread, "post", Message(text, tone)))

    @staticmethod
    def render(tenant: Tenant, renewal: Renewal, event: events.Event) -> Message | None:
        match event:
            case events.RenewalInvited(auth_url=url, emailed_to=emailed_to):
                return Message(
                    messages.auth_url_posted(
                        url, renewal.invitation_email, renewal.invitation_expires_at, emailed_to
                    )
                )
            case events.DeviceCodeIssued(user_code=uc, verification_uri=uri, expires_at=exp):
                return Message(messages.code_posted(uc, uri, exp))
            case events.CodeLapsed(reason=reason):
                return Message(messages.code_lapsed(reason), "warning")
            case events.TokenProgress(acquired=n, total=m, account=account):
                return Message(messages.token_progress(n, m, account))
            case events.RenewalValidated(account=account, warnings=warnings):
                return Message(
                    messages.validated(tenant, account, warnings),
                    "warning" if warnings else "success",
                )
            case events.RenewalFailed(code=code):
                return Message(messages.failed(code), "error")
            case events.RenewalExpired():
                return Message(messages.expired(), "warning")
            case events.RenewalCancelled(actor=actor):
                return Message(messages.cancelled(actor.describe()), "warning")
        return None

    @staticmethod
    def announcement(tenant: Tenant, event: events.Event) -> Message | None:
        match event:
            case events.RenewalValidated(account=account, warnings=warnings):
                text = messages.announcement_validated(tenant, account, warnings)
                return Message(text, "warning" if warnings else "success")
            case events.RenewalFailed(code=code) if not identity_codes.is_app_wide(code):
                # (an app-registration failure is one registration alert, core/registration.py)
                renew = Action("renew", tenant.slug, "Renew")
                return Message(messages.announcement_failed(tenant, code), "error", (renew,))
        return None


_ACTIONS: dict[RenewalState, tuple[tuple[ActionKind, str], ...]] = {
    RenewalState.REQUESTED: (("cancel", "Cancel"),),
    RenewalState.INVITED: (("new_code", "New code"), ("cancel", "Cancel")),
    RenewalState.CODE_ISSUED: (("new_code", "New code"), ("cancel", "Cancel")),
    RenewalState.TOKENS_ACQUIRED: (("validate", "Validate again"), ("cancel", "Cancel")),
    RenewalState.VALIDATED: (("validate", "Validate again"),),
    RenewalState.FAILED: (("renew", "Renew"),),
    RenewalState.EXPIRED: (("renew", "Renew"),),
    RenewalState.CANCELLED: (("renew", "Renew"),),
}


def _in_thread(thread: ThreadRef, kind: OutboxKind, message: Message | None) -> Outgoing:
    return Outgoing(thread_conversation(thread), kind, thread.platform, thread, message)


def status_message(tenant: Tenant, renewal: Renewal) -> Message:
    """The thread's first message: who asked, the lifecycle checklist, and the buttons."""
    tone: Tone = "info"
    if renewal.state is RenewalState.VALIDATED:
        tone = "success"
    elif renewal.state is RenewalState.FAILED:
        tone = "error"
    choices = _ACTIONS[renewal.state]
    if renewal.state is RenewalState.CODE_ISSUED and renewal.tokens_acquired:
        choices = (("cancel", "Cancel"),)  # signed in: a new code would make no sense now
    actions = tuple(Action(kind, tenant.slug, label) for kind, label in choices)
    text = (
        messages.thread_opened(tenant, renewal.requested_by.describe())
        + "\n"
        + messages.status_line(tenant, renewal)
    )
    return Message(text, tone, actions)
