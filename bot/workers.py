"""The background workers of `renewbot serve`: one supervised task each, stopped gracefully.

- the device-flow scheduler (polls and resumes renewals in flight), adopting what a previous or
  dead process left;
- the chat outbox dispatcher, and the email dispatcher when email is configured;
- the sweeper: expires overdue invitations, adopts orphaned renewals, opens threads a dead
  process never opened;
- the chaser (reminders, mentions, expiry warnings) and the token health monitor.

Every loop finishes the step it is in when the process stops (a task cancelled in the middle of
a database call can leave the aiosqlite connection unable to close). No routes here.
"""

from __future__ import annotations

import asyncio
import logging

from bot.bootstrap import Runtime

log = logging.getLogger("renewbot.workers")


async def start(rt: Runtime) -> None:
    rt.supervisor.spawn(rt.scheduler.run(), "device-flow-scheduler")
    rt.supervisor.spawn(rt.core.dispatcher.run(rt.stopping), "outbox-dispatcher")
    if rt.core.mail is not None:
        rt.supervisor.spawn(rt.core.mail.run(rt.stopping), "email-dispatcher")
    rt.supervisor.spawn(_chase(rt), "chaser")
    await adopt_flows(rt)  # flows a previous process left pending
    rt.supervisor.spawn(_sweep(rt), "sweeper")
    if rt.settings.monitor.enabled:
        rt.supervisor.spawn(_monitor(rt), "token-health-monitor")


async def stop(rt: Runtime) -> None:
    rt.stopping.set()
    rt.scheduler.stop()
    await rt.supervisor.drain(timeout=15.0)
    await rt.supervisor.close()


async def adopt_flows(rt: Runtime) -> int:
    """Watch every renewal in flight (a pending device flow, or signed in and not yet validated)
    that this process does not watch yet.

    Leases decide which process really advances it; watching lets this one take over when the
    lease holder dies, at whatever step it died.
    """
    async with rt.uow() as uow:
        waiting = await uow.renewals.resumable()
    adopted = 0
    for renewal in waiting:
        if not rt.scheduler.is_watching(renewal.id):
            rt.scheduler.watch(renewal.id, 1.0)
            adopted += 1
    return adopted


async def _pause(rt: Runtime, seconds: float) -> bool:
    """Sleep, but wake at once when the process stops. True when it is stopping."""
    try:
        async with asyncio.timeout(seconds):  # not wait_for: see core/scheduler.py
            await rt.stopping.wait()
    except TimeoutError:
        return False
    return True


async def _sweep(rt: Runtime, every: float = 30.0) -> None:
    """Expire overdue invitations, adopt orphaned renewals and open threads a dead process never
    opened, until stopped."""
    while not await _pause(rt, every):
        try:
            await rt.core.service.expire_overdue()
            await adopt_flows(rt)
            await rt.core.service.reopen_orphans()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweep.failed")


async def _chase(rt: Runtime) -> None:
    """Take due chasing steps (reminders, mentions, expiry warnings) until stopped."""
    while not await _pause(rt, rt.settings.chase.sweep_every_seconds):
        try:
            await rt.core.chaser.sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chase.sweep_failed")


async def _monitor(rt: Runtime) -> None:
    """Run the token health sweep forever; each sweep checks only the tenants that are due."""
    loop = asyncio.get_running_loop()
    while not rt.stopping.is_set():
        started = loop.time()
        try:
            await rt.core.monitor.sweep(rt.stopping)
            await rt.core.monitor.digest()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("monitor.sweep_failed")
        rt.metrics.last_sweep_seconds = loop.time() - started
        rt.metrics.sweeps += 1
        if await _pause(rt, rt.settings.monitor.sweep_every_seconds):
            return
