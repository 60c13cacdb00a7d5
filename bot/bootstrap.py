"""The composition root: the only place that constructs adapters and wires them into core.

``compose`` takes ready ports (tests pass fakes); ``build`` makes the real adapters from Settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.desk import Desk
from core.notifications import Notifier
from core.ports import ChatThreads, Clock, IdentityProvider, UnitOfWorkFactory
from core.services import FlowWatcher, RenewalService, ServiceConfig


@dataclass
class Core:
    service: RenewalService
    desk: Desk


def compose(
    *,
    uow: UnitOfWorkFactory,
    identity: IdentityProvider,
    threads: ChatThreads,
    clock: Clock,
    config: ServiceConfig,
    watch_flow: FlowWatcher | None = None,
) -> Core:
    service = RenewalService(uow, identity, Notifier(threads), clock, config)
    if watch_flow is not None:
        service.watch_flow = watch_flow
    return Core(service, Desk(service))
