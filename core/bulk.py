"""`renew all-expired`: one invitation per tenant whose tokens expired, in one summary thread.

Each renewal is an ordinary renewal (its own single-use Auth URL, device code and validation);
they share the thread the batch opened, where each post names its tenant, and the thread's first
message is a summary of all of them, rewritten as each one moves. Tenants that already have an
open renewal are left alone and listed in the reply.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from core import commands, messages
from core.errors import RenewalInProgressError
from core.model import ACTIVE_STATES, AuthState, ThreadRef
from core.notifications import Notifier
from core.ports import Message
from core.services import RenewalService

log = logging.getLogger("renewbot.bulk")
MAX_BATCH = 200


@dataclass(frozen=True)
class BatchStarted:
    started: int
    skipped: list[str]
    thread: ThreadRef | None


class BulkRenewals:
    def __init__(self, service: RenewalService, notifier: Notifier) -> None:
        self.service = service
        self.notifier = notifier
        if notifier.summarize is None:
            notifier.summarize = self.summary

    async def renew_all_expired(self, cmd: commands.RenewAllExpired) -> BatchStarted:
        """Open the summary thread, then request a renewal for every expired tenant in it."""
        async with self.service.uow() as uow:
            expired = await uow.tenants.in_state(AuthState.EXPIRED, limit=MAX_BATCH)
        if not expired:
            return BatchStarted(0, [], None)
        batch = uuid.uuid4().hex
        opening = Message(messages.batch_opened(cmd.requester.describe(), len(expired)))
        thread = await self.notifier.threads.open_thread(cmd.origin, opening)
        started, skipped = 0, []
        for tenant in expired:
            request = commands.RequestRenewal(tenant.slug, None, cmd.origin, cmd.requester)
            try:
                await self.service.request_renewal(request, thread=thread, batch=batch)
            except RenewalInProgressError:
                skipped.append(tenant.display_name)
                continue
            started += 1
        log.info("batch.started", extra={"batch": batch, "started": started})
        await self.notifier.refresh_batch(batch, thread)
        return BatchStarted(started, skipped, thread)

    async def summary(self, batch: str) -> Message | None:
        """The batch's summary message, from the stored renewals."""
        async with self.service.uow() as uow:
            renewals = await uow.renewals.in_batch(batch)
            lines = []
            for renewal in renewals:
                tenant = await uow.tenants.get(renewal.tenant_key)
                name = tenant.display_name if tenant else renewal.tenant_key
                lines.append((name, renewal.state))
        if not renewals:
            return None
        text = messages.batch_summary(renewals[0].requested_by.describe(), lines)
        done = all(state not in ACTIVE_STATES for _, state in lines)
        return Message(text, "success" if done else "info")
