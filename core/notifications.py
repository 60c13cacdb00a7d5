"""Turns a renewal's recorded events into chat: thread replies, the status line, announcements.

Chat failures never undo a state change: they are logged and the renewal goes on (STYLE.md 5).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from core import events, messages
from core.errors import ChatDeliveryError
from core.model import Renewal, Tenant, ThreadRef
from core.ports import ChatThreads

log = logging.getLogger("renewbot.notify")


class Notifier:
    def __init__(self, threads: ChatThreads) -> None:
        self.threads = threads

    async def open_thread(self, tenant: Tenant, renewal: Renewal) -> ThreadRef | None:
        text = messages.thread_opened(tenant, renewal.requested_by.describe())
        try:
            return await self.threads.open_thread(renewal.origin, text)
        except ChatDeliveryError:
            log.warning("chat.thread_open_failed", extra={"renewal_id": renewal.id})
            return None

    async def publish(self, tenant: Tenant, renewal: Renewal) -> None:
        """Post what happened since the last publish, then refresh the status line."""
        pending, renewal.events = renewal.events, []
        for event in pending:
            text = self.render(tenant, renewal, event)
            if text and renewal.thread:
                await self._deliver(self.threads.post(renewal.thread, text), renewal)
            announcement = self.announcement(tenant, event)
            if announcement:
                await self._deliver(self.threads.announce(announcement), renewal)
        if pending and renewal.thread:
            status = messages.status_line(tenant, renewal)
            await self._deliver(self.threads.update_status(renewal.thread, status), renewal)

    async def note(self, tenant: Tenant, renewal: Renewal, text: str) -> None:
        if renewal.thread:
            await self._deliver(self.threads.post(renewal.thread, text), renewal)

    @staticmethod
    def render(tenant: Tenant, renewal: Renewal, event: events.Event) -> str | None:
        match event:
            case events.RenewalInvited(auth_url=url):
                return messages.auth_url_posted(
                    url, renewal.invitation_email, renewal.invitation_expires_at
                )
            case events.DeviceCodeIssued(user_code=uc, verification_uri=uri, expires_at=exp):
                return messages.code_posted(uc, uri, exp)
            case events.CodeLapsed(reason=reason):
                return messages.code_lapsed(reason)
            case events.TokenProgress(acquired=n, total=m, account=account):
                return messages.token_progress(n, m, account)
            case events.RenewalValidated(account=account, warnings=warnings):
                return messages.validated(tenant, account, warnings)
            case events.RenewalFailed(code=code):
                return messages.failed(code)
            case events.RenewalExpired():
                return messages.expired()
            case events.RenewalCancelled(actor=actor):
                return messages.cancelled(actor.describe())
        return None

    @staticmethod
    def announcement(tenant: Tenant, event: events.Event) -> str | None:
        match event:
            case events.RenewalValidated(account=account):
                return messages.announcement_validated(tenant, account)
            case events.RenewalFailed(code=code):
                return messages.announcement_failed(tenant, code)
        return None

    async def _deliver(self, send: Awaitable[None], renewal: Renewal) -> None:
        try:
            await send
        except ChatDeliveryError:
            log.warning("chat.delivery_failed", extra={"renewal_id": renewal.id})
