"""Webhooks to the platform's services: which events there are, their body, and delivering them.

Events (the ``type`` of the body, Standard Webhooks' shape ``{"type", "timestamp", "data"}``):
- ``tenant.validated``: a renewal's new tokens passed validation; the token API serves them.
- ``tenant.expired``: the tenant's refresh token is dead; nothing works until a renewal.
- ``tenant.failing``: a refresh failed and the tenant is not (yet) called expired: Microsoft
  unreachable, the app registration refused, or a refusal that is not final.
- ``tenant.recovered``: a refresh worked again after ``failing`` or ``expired``.

An event is stored in the transaction that changed the tenant (``WebhookOutbox``); the delivery
worker fans each event out to every configured receiver, claims deliveries with leases (each is
sent by one replica), retries with growing delays until the receiver answers 2xx, and announces a
receiver that keeps failing (once per ``alert_every`` across replicas). Must not know HTTP, SQL or
how a body is signed (``WebhookSender`` does).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from core.model import AuthState, Tenant
from core.notifications import Notifier
from core.ports import Clock, HealthRecord, Message, UnitOfWorkFactory

log = logging.getLogger("renewbot.webhooks")

VALIDATED = "tenant.validated"
EXPIRED = "tenant.expired"
FAILING = "tenant.failing"
RECOVERED = "tenant.recovered"
KINDS = (VALIDATED, EXPIRED, FAILING, RECOVERED)


def new_event_id() -> str:
    """The ``webhook-id``: the same on every retry, so a receiver can drop duplicates."""
    return f"msg_{uuid.uuid4().hex}"


def body(kind: str, tenant: Tenant, at: datetime, state: AuthState, reason: str = "") -> str:
    """The JSON body of an event (compact; signed byte for byte as sent)."""
    data = {
        "tenant": tenant.slug,
        "tenant_id": tenant.tenant_id,
        "display_name": tenant.display_name,
        "state": state.value,
        "reason": reason,
    }
    return json.dumps(
        {"type": kind, "timestamp": at.isoformat(), "data": data}, separators=(",", ":")
    )


def state_after(kind: str) -> AuthState:
    return {
        VALIDATED: AuthState.HEALTHY,
        RECOVERED: AuthState.HEALTHY,
        EXPIRED: AuthState.EXPIRED,
    }.get(kind, AuthState.UNKNOWN)


def health_event(previous: AuthState, record: HealthRecord, last: str | None) -> str | None:
    """The event a stored health check means, or None.

    Args:
        previous: the tenant's state before this check.
        record: what the check found (``refreshed_at`` None: the refresh failed).
        last: the last event sent for this tenant, if any.
    """
    if record.state is AuthState.EXPIRED:
        return EXPIRED if previous is not AuthState.EXPIRED else None
    if record.refreshed_at is None:
        return FAILING if last not in (FAILING, EXPIRED) else None
    return RECOVERED if last in (FAILING, EXPIRED) else None


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one receiver."""

    id: int
    event_id: str
    endpoint: str
    kind: str
    body: str
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """How one POST went: 2xx is delivered; anything else (or no answer) is retried."""

    delivered: bool
    status: int | None = None
    error: str = ""


class WebhookQueue(Protocol):
    async def fan_out(self, endpoints: Sequence[str], now: datetime, limit: int) -> int:
        """A delivery per stored event and receiver. Returns how many events were fanned."""

    async def claim(self, owner: str, now: datetime, until: datetime, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` due, undelivered deliveries (one replica gets each)."""

    async def delivered(self, delivery_id: int, at: datetime, status: int) -> None: ...

    async def retry(self, delivery_id: int, at: datetime, attempt: Attempt) -> None:
        """Count the failed attempt; the delivery is due again at ``at`` (lease released)."""

    async def waiting(self, endpoint: str) -> int:
        """Undelivered deliveries of one receiver."""


class WebhookSender(Protocol):
    async def send(self, delivery: Delivery, at: datetime) -> Attempt:
        """POST the signed body. Never raises for the receiver's failures."""


@dataclass(frozen=True)
class DeliveryConfig:
    endpoints: tuple[str, ...] = ()
    first_retry: timedelta = timedelta(seconds=5)
    max_retry: timedelta = timedelta(hours=1)
    lease: timedelta = timedelta(seconds=60)
    batch: int = 50
    alert_after: int = 5  # failed attempts of one delivery before the receiver is announced
    alert_every: timedelta = timedelta(hours=1)
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def next_try(attempts: int, config: DeliveryConfig) -> timedelta:
    """Delay after the ``attempts``-th failure: first_retry x 4^(n-1), capped, +-20% jitter
    (so receivers coming back are not hit by every replica's retries at once)."""
    base = config.first_retry * (1 << 2 * max(0, min(attempts - 1, 20)))  # 4^(n-1)
    jitter: float = random.uniform(0.8, 1.2)
    return min(base, config.max_retry) * jitter


def shown(endpoint: str) -> str:
    """A receiver's URL without query or credentials (they may carry secrets)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" + (
        parts.path or ""
    )


class WebhookDelivery:
    def __init__(
        self,
        queue: WebhookQueue,
        sender: WebhookSender,
        uow: UnitOfWorkFactory,
        notifier: Notifier,
        clock: Clock,
        config: DeliveryConfig,
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.uow = uow
        self.notifier = notifier
        self.clock = clock
        self.config = config
        self.sent = 0
        self.failed = 0

    async def run_once(self) -> int:
        """Fan out new events, then send what is due. Returns how many were delivered."""
        now = self.clock.now()
        await self.queue.fan_out(self.config.endpoints, now, self.config.batch)
        due = await self.queue.claim(
            self.config.worker_id, now, now + self.config.lease, self.config.batch
        )
        outcomes = await asyncio.gather(*(self._one(d) for d in due))
        return sum(outcomes)

    async def _one(self, delivery: Delivery) -> bool:
        attempt = await self.sender.send(delivery, self.clock.now())
        now = self.clock.now()
        if attempt.delivered:
            await self.queue.delivered(delivery.id, now, attempt.status or 0)
            self.sent += 1
            return True
        self.failed += 1
        attempts = delivery.attempts + 1
        await self.queue.retry(delivery.id, now + next_try(attempts, self.config), attempt)
        log.warning(
            "webhook.attempt_failed",
            extra={"endpoint": shown(delivery.endpoint), "status": attempt.status, "n": attempts},
        )
        if attempts >= self.config.alert_after:
            await self._alert(delivery.endpoint, attempt)
        return False

    async def _alert(self, endpoint: str, attempt: Attempt) -> None:
        """Once per ``alert_every`` across replicas: the receiver keeps failing."""
        now = self.clock.now()
        job = "webhook-failing:" + hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        async with self.uow() as uow:
            mine = await uow.jobs.claim(job, now, self.config.alert_every)
            await uow.commit()
        if not mine:
            return
        waiting = await self.queue.waiting(endpoint)
        answer = f"HTTP {attempt.status}" if attempt.status else (attempt.error or "no answer")
        await self.notifier.announce(
            Message(
                f"Webhook receiver {shown(endpoint)} keeps failing (last answer: {answer}). "
                f"{waiting} event(s) are kept and retried until it accepts them; check that "
                "service and its webhook secret.",
                "warning",
            )
        )

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        """Deliver until ``stop`` is set; a failed round is logged and the next one runs."""
        while not stop.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook.round_failed")
            try:
                async with asyncio.timeout(every):
                    await stop.wait()
            except TimeoutError:
                pass
