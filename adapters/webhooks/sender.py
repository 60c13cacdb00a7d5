"""StandardWebhookSender: core's WebhookSender port over aiohttp, signed per Standard Webhooks.

Headers ``webhook-id`` (the event's id, the same on every retry), ``webhook-timestamp`` (seconds)
and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one per
configured secret, space-separated, so a receiver can move to a new secret without a gap); see
https://www.standardwebhooks.com/ (spec/standard-webhooks.md, "Signature scheme"). Signing uses
the specification's own Python library (``standardwebhooks``, MIT, no dependencies). No
redirects are followed (a receiver that moved must be reconfigured, not guessed). Must not log a
body, a secret or a receiver's query string.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import aiohttp
from standardwebhooks.webhooks import Webhook

from core.webhooks import Attempt, Delivery


def signers(secrets: Sequence[str]) -> list[Webhook]:
    """One signer per ``whsec_...`` secret. Raises ValueError for a secret that is not one."""
    found = []
    for secret in secrets:
        try:
            found.append(Webhook(secret.strip()))
        except Exception:  # the library raises binascii.Error, EmptyWebhookSecretError, ...
            raise ValueError("a webhook secret is not whsec_ followed by base64") from None
    if not found:
        raise ValueError("no webhook secret")
    return found


class StandardWebhookSender:
    def __init__(self, secrets: Sequence[str], timeout: float = 10.0) -> None:
        self._signers = signers(secrets)
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def headers(self, delivery: Delivery, at: datetime) -> dict[str, str]:
        signature = " ".join(s.sign(delivery.event_id, at, delivery.body) for s in self._signers)
        return {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
            "content-type": "application/json",
            "user-agent": "renewbot-webhooks",
        }

    async def send(self, delivery: Delivery, at: datetime) -> Attempt:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False, timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        try:
            async with self._session.post(
                delivery.endpoint,
                data=delivery.body.encode(),
                headers=self.headers(delivery, at),
                allow_redirects=False,
            ) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Attempt(False, None, type(exc).__name__)
        return Attempt(200 <= status < 300, status)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector close its transports
            self._session = None
