"""What a health sweep's batch costs the database, counted on the real engines (SQLite, PostgreSQL).

A sweep checks thousands of tenants; statements that grow with the tenants of a batch were most of
its database CPU (bench/health.py). The batch's outcomes go in one transaction after its checks:
these tests count statements with SQLAlchemy's own events, so a change that stores each outcome by
itself again shows up here, and they check that one failing check does not lose the others'.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox
from adapters.storage.unit_of_work import SqlUnitOfWork
from core.errors import StorageError
from core.health import HealthMonitor, MonitorConfig
from core.model import AuthState, Tenant
from core.notifications import Notifier
from tests.fakes.core import FakeIdentityProvider, FrozenClock, RecordingChatThreads
from tests.integration.test_outbox_cost import Factory, counting

BATCH = 30


async def seeded(engine: AsyncEngine, box: SecretBox, n: int) -> list[Tenant]:
    tenants = []
    async with SqlUnitOfWork(engine, box) as uow:
        for _ in range(n):
            key = uuid.uuid4().hex[:12]
            tenant = Tenant(key, f"t-{key}", f"Tenant {key}", str(uuid.uuid4()), f"{key}.example",
                            f"admin@{key}.example")  # fmt: skip
            await uow.tenants.add(tenant, FrozenClock().now())
            tenants.append(tenant)
        await uow.commit()
    return tenants


def monitor(engine: AsyncEngine, box: SecretBox, identity: FakeIdentityProvider) -> HealthMonitor:
    clock = identity.clock
    uow = Factory(engine, box)
    # One check at a time: each check ends before the next begins, so nothing but the batch
    # itself can group their outcomes.
    config = MonitorConfig(concurrency=1, batch=BATCH)
    return HealthMonitor(uow, identity, Notifier(RecordingChatThreads(), uow, clock), clock, config)


async def states(engine: AsyncEngine, box: SecretBox, tenants: list[Tenant]) -> set[AuthState]:
    async with SqlUnitOfWork(engine, box) as uow:
        found = [await uow.tenants.get(t.key) for t in tenants]
    return {t.auth_state for t in found if t is not None}


async def test_a_batch_stores_its_outcomes_in_one_statement(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """Thirty tenants checked one after another: one health update for all of them (it was one
    transaction of three statements per check), and every tenant is healthy afterwards."""
    tenants = await seeded(own_engine, box, BATCH)
    identity = FakeIdentityProvider(FrozenClock())
    with counting(own_engine) as counted:
        result = await monitor(own_engine, box, identity).check_all(tenants)
    assert result.checked == BATCH and result.failures == 0
    updates = [s for s in counted.statements if s.startswith("UPDATE tenants")]
    assert len(updates) == 1, counted.statements
    assert counted.transactions <= 2, counted.statements  # the outcomes (and at most one alert)
    assert len(counted.statements) <= 8, counted.statements
    assert await states(own_engine, box, tenants) == {AuthState.HEALTHY}


@pytest.mark.parametrize("own_engine", ["sqlite"], indirect=True)
async def test_a_check_that_fails_unexpectedly_loses_no_other_outcome(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """The database failing for one tenant's tokens: the sweep hears of it, and the batch's
    other tenants are still stored as checked (not checked again after the lease)."""
    tenants = await seeded(own_engine, box, 5)
    identity = FakeIdentityProvider(FrozenClock())
    identity.refresh_errors[tenants[2].slug] = StorageError("the database failed")
    with pytest.raises(StorageError):
        await monitor(own_engine, box, identity).check_all(tenants)
    assert await states(own_engine, box, tenants[:2] + tenants[3:]) == {AuthState.HEALTHY}
    assert await states(own_engine, box, [tenants[2]]) == {AuthState.UNKNOWN}
