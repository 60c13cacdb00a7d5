"""Problems of the MSP's app registration: one alert for everyone, never one per tenant.

A wrong client id, or public client flows turned off, fails every tenant the same way. Blaming
each tenant ("expired", with a Renew button that cannot work) would flood the alert channel and
hide the one fix. Whoever meets such a code first reports it here; the database decides that it
is announced once per REPEAT_EVERY across every replica. Must not touch a tenant's state.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from core import identity_codes, messages
from core.notifications import Notifier
from core.ports import Clock, Message, UnitOfWorkFactory

log = logging.getLogger("renewbot.registration")

REPEAT_EVERY = timedelta(hours=6)


async def report(uow: UnitOfWorkFactory, notifier: Notifier, clock: Clock, code: str) -> bool:
    """Announce an app-wide identity problem unless it was announced lately. True when sent."""
    if not identity_codes.is_app_wide(code):
        return False
    async with uow() as u:
        claimed = await u.jobs.claim(f"registration:{code}", clock.now(), REPEAT_EVERY)
        await u.commit()
    if not claimed:
        return False
    log.warning("identity.registration_problem", extra={"code": code})
    await notifier.announce(Message(messages.registration_problem(code), "error"))
    return True
