"""Turns a renewal's recorded events into chat: thread replies, the status line, announcements.

Chat failures never undo a state change: they are logged and the renewal goes on (STYLE.md 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace

from core import events, messages
from core.errors import ChatDeliveryError
from core.model import Renewal, RenewalState, Tenant, ThreadRef
from core.ports import Action, ActionKind, ChatThreads, Message, Tone

log = logging.getLogger("renewbot.notify")


BatchSummary = Callable[[str], Awaitable[Message | None]]
"""The summary message of a batch (`renew all-expired`), from its id."""


class Notifier:
    def __init__(self, threads: ChatThreads, summarize: BatchSummary | None = None) -> None:
        self.threads = threads
        self.summarize = summarize
        self._batch_locks: dict[str, asyncio.Lock] = {}
        # The status last shown per thread: an unchanged status is not sent again (chat.update
        # is rate-limited, and right after a thread opens its status has not changed yet).
        self._shown: OrderedDict[ThreadRef, Message] = OrderedDict()

    async def open_thread(self, tenant: Tenant, renewal: Renewal) -> ThreadRef | None:
        status = status_message(tenant, renewal)
        try:
            thread = await self.threads.open_thread(renewal.origin, status)
        except ChatDeliveryError:
            log.warning("chat.thread_open_failed", extra={"renewal_id": renewal.id})
            return None
        self._remember(thread, status)
        return thread

    def _remember(self, thread: ThreadRef, status: Message) -> None:
        self._shown[thread] = status
        self._shown.move_to_end(thread)
        while len(self._shown) > 10_000:
            self._shown.popitem(last=False)

    async def _update_status(self, thread: ThreadRef, status: Message, renewal: Renewal) -> None:
        if self._shown.get(thread) == status:
            return
        if await self._deliver(self.threads.update_status(thread, status), renewal):
            self._remember(thread, status)

    async def publish(self, tenant: Tenant, renewal: Renewal) -> None:
        """Post what happened since the last publish, then refresh the status message."""
        pending, renewal.events = renewal.events, []
        for event in pending:
            message = self.render(tenant, renewal, event)
            if message and renewal.thread:
                if renewal.batch:  # many tenants share the thread: say which one this is
                    message = replace(message, text=f"{tenant.display_name}: {message.text}")
                await self._deliver(self.threads.post(renewal.thread, message), renewal)
            announcement = self.announcement(tenant, event)
            if announcement:
                await self._deliver(self.threads.announce(announcement), renewal)
        if pending and renewal.thread:
            if renewal.batch:
                await self.refresh_batch(renewal.batch, renewal.thread)
                return
            await self._update_status(renewal.thread, status_message(tenant, renewal), renewal)

    async def withdrawn(self, tenant: Tenant, thread: ThreadRef) -> None:
        """A thread opened for a renewal that lost a race with another request for the tenant."""
        text = messages.withdrawn(tenant)
        try:
            await self.threads.update_status(thread, Message(text, "warning"))
        except ChatDeliveryError:
            log.warning("chat.delivery_failed", extra={"tenant": tenant.slug})

    async def refresh_batch(self, batch: str, thread: ThreadRef) -> None:
        """Rewrite a batch's summary message from what is stored now (one update at a time)."""
        if self.summarize is None:
            return
        async with self._batch_locks.setdefault(batch, asyncio.Lock()):
            summary = await self.summarize(batch)
            if summary is None:
                return
            try:
                await self.threads.update_status(thread, summary)
            except ChatDeliveryError:
                log.warning("chat.delivery_failed", extra={"batch": batch})

    async def announce(self, message: Message) -> None:
        try:
            await self.threads.announce(message)
        except ChatDeliveryError:
            log.warning("chat.announce_failed")

    async def note(self, tenant: Tenant, renewal: Renewal, text: str, tone: Tone = "info") -> None:
        if renewal.thread:
            await self._deliver(self.threads.post(renewal.thread, Message(text, tone)), renewal)

    @staticmethod
    def render(tenant: Tenant, renewal: Renewal, event: events.Event) -> Message | None:
        match event:
            case events.RenewalInvited(auth_url=url):
                return Message(
                    messages.auth_url_posted(
                        url, renewal.invitation_email, renewal.invitation_expires_at
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
            case events.RenewalValidated(account=account):
                return Message(messages.announcement_validated(tenant, account), "success")
            case events.RenewalFailed(code=code):
                renew = Action("renew", tenant.slug, "Renew")
                return Message(messages.announcement_failed(tenant, code), "error", (renew,))
        return None

    async def _deliver(self, send: Awaitable[None], renewal: Renewal) -> bool:
        """True when the chat took it; a refusal is logged, never raised (STYLE.md 5)."""
        try:
            await send
        except ChatDeliveryError:
            log.warning("chat.delivery_failed", extra={"renewal_id": renewal.id})
            return False
        return True


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
