"""MSAL errors reported by the platform's other services (POST /api/msal-errors).

Each report is stored once (idempotent on the reporter's id). A code that means the refresh token
is dead marks the tenant expired and alerts, exactly as the monitor would.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core import registration
from core.health import DEAD_REFRESH_CODES, HealthMonitor
from core.ports import Clock, IdentityErrorRecord, UnitOfWorkFactory


@dataclass(frozen=True)
class ErrorReport:
    client_ref: str
    tenant_ref: str
    error: str
    description: str = ""
    error_codes: tuple[int, ...] = ()
    correlation_id: str = ""
    source: str = "platform"

    @property
    def code(self) -> str:
        return f"AADSTS{self.error_codes[0]}" if self.error_codes else self.error


class IntakeOutcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    UNKNOWN_TENANT = "unknown_tenant"


class ErrorIntake:
    def __init__(self, uow: UnitOfWorkFactory, monitor: HealthMonitor, clock: Clock) -> None:
        self.uow = uow
        self.monitor = monitor
        self.clock = clock

    async def report(self, report: ErrorReport) -> tuple[IntakeOutcome, bool]:
        """Store the report. Returns the outcome and whether the tenant was marked expired."""
        async with self.uow() as uow:
            tenant = await uow.tenants.find_exact(report.tenant_ref)
            stored = await uow.identity_errors.add(
                IdentityErrorRecord(
                    self.clock.now(),
                    tenant.key if tenant else None,
                    report.code,
                    report.error,
                    report.description[:2000],
                    report.correlation_id,
                    report.source,
                    report.client_ref,
                )
            )
            await uow.commit()
        if tenant is None:
            return IntakeOutcome.UNKNOWN_TENANT, False
        if not stored:
            return IntakeOutcome.DUPLICATE, False
        m = self.monitor
        if await registration.report(m.uow, m.notifier, self.clock, report.code):
            return IntakeOutcome.RECORDED, False  # the registration's fault, not the tenant's
        if report.code in DEAD_REFRESH_CODES:
            await self.monitor.mark_expired(tenant, report.code)
            return IntakeOutcome.RECORDED, True
        return IntakeOutcome.RECORDED, False
