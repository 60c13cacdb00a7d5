"""Repositories and unit of work on SQLite and on the suite's own PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.storage.crypto import SecretBox, generate_key
from adapters.storage.tables import outbox_leases, renewals
from adapters.storage.token_cache import SqlTokenCacheStore
from adapters.storage.unit_of_work import SqlUnitOfWork
from core.delivery import thread_conversation
from core.errors import (
    ConcurrencyError,
    RenewalInProgressError,
    StorageError,
    TokenCacheUnreadableError,
)
from core.model import Actor, AuthState, DeviceCode, Origin, Renewal, RenewalState, ThreadRef
from core.ports import AuditEntry, FirstPost, HealthRecord, Lease, Message, Outgoing
from tests.fakes.refs import random_tenant

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def new_renewal(tenant_key: str) -> Renewal:
    r = Renewal(
        id=uuid.uuid4().hex,
        tenant_key=tenant_key,
        requested_by=Actor("slack", "U1", "Sam"),
        invitation_email="admin@x.example",
        origin=Origin("slack", "C1"),
        created_at=NOW,
        expected_account="admin@x.example",
    )
    r.invite(uuid.uuid4().hex + uuid.uuid4().hex, NOW + timedelta(days=7), "https://x", NOW)
    return r


async def add_tenant(engine: AsyncEngine, box: SecretBox):  # type: ignore[no-untyped-def]
    tenant = random_tenant()
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.tenants.add(tenant)
        await uow.commit()
    return tenant


async def claim(uow: SqlUnitOfWork, ref: str, email: str = "") -> tuple[Renewal, Any]:
    """A request's renewal for the tenant that ``ref`` names (``add_for``), not committed:
    the renewal, and the tenant found (None: none)."""
    renewal = new_renewal("")
    renewal.invitation_email, renewal.expected_account = email, ""
    entry = AuditEntry(NOW, "renewal.requested", "Sam", renewal.id, None)
    return renewal, await uow.renewals.add_for(ref, renewal, entry)


async def test_tenant_found_by_every_name(engine: AsyncEngine, box: SecretBox) -> None:
    """Slug, display name, domain and tenant id all find the tenant, ignoring case."""
    tenant = await add_tenant(engine, box)
    async with SqlUnitOfWork(engine, box) as uow:
        for ref in (
            tenant.slug,
            tenant.display_name.upper(),
            tenant.primary_domain,
            tenant.tenant_id,
        ):
            found = await uow.tenants.find_exact(ref)
            assert found is not None and found.key == tenant.key


async def test_a_tenant_reads_the_same_in_every_kind_of_unit_of_work(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """A request in a one-write unit of work (on PostgreSQL its lookup goes by asyncpg itself)
    finds the tenant exactly as any unit of work's lookup does: every field, datetimes aware in
    UTC."""
    tenant = await add_tenant(engine, box)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.tenants.mark_validated(tenant.key, NOW)
        await uow.commit()
    found = []
    for kind in ({}, {"read_only": True}):
        async with SqlUnitOfWork(engine, box, **kind) as uow:
            found.append(await uow.tenants.find_exact(tenant.slug.upper()))
            assert await uow.tenants.find_exact("no-such-tenant") is None
    async with SqlUnitOfWork(engine, box, one_write=True) as uow:
        found.append((await claim(uow, tenant.slug.upper()))[1])
        assert (await claim(uow, "no-such-tenant"))[1] is None
    assert found[0] == found[1] == found[2]
    assert found[2] is not None and found[2].last_validated_at == NOW
    assert found[2].last_validated_at.utcoffset() == timedelta(0)


async def test_renewal_round_trip_with_encrypted_flow_state(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """Every field survives storage; the device-flow state is unreadable in the raw row."""
    tenant = await add_tenant(engine, box)
    r = new_renewal(tenant.key)
    secret = b'{"device_code": "DEVICECODE-very-secret"}'
    r.issue_code(
        DeviceCode("ABCD-1234", "https://login/device", NOW + timedelta(minutes=15), 5, secret),
        Actor("web", "customer"),
        NOW,
    )
    r.thread = ThreadRef("slack", "C1:1234.5678")
    r.warnings = ["w1"]
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.add(r)
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        loaded = await uow.renewals.get(r.id)
    assert loaded is not None
    assert loaded.device_code == r.device_code and loaded.thread == r.thread
    assert loaded.state is RenewalState.CODE_ISSUED and loaded.warnings == ["w1"]
    assert loaded.created_at == NOW
    async with engine.connect() as conn:
        raw = (
            await conn.execute(select(renewals.c.flow_state).where(renewals.c.id == r.id))
        ).scalar()
    assert raw is not None and b"DEVICECODE" not in raw


async def test_database_allows_one_active_renewal_per_tenant(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """Two simultaneous requests for one tenant: exactly one renewal exists afterwards."""
    tenant = await add_tenant(engine, box)

    async def request() -> str:
        async with SqlUnitOfWork(engine, box) as uow:
            await uow.renewals.add(new_renewal(tenant.key))
            await uow.commit()
        return "ok"

    results = await asyncio.gather(request(), request(), return_exceptions=True)
    assert sorted(type(x).__name__ for x in results) == ["RenewalInProgressError", "str"]
    async with SqlUnitOfWork(engine, box) as uow:
        assert len(await uow.renewals.for_tenant(tenant.key)) == 1


async def test_a_renewal_and_its_audit_entry_are_written_both_or_neither(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """A request stores the renewal with its "requested" audit entry (one statement on
    PostgreSQL); a second request for the tenant, refused, leaves no entry behind."""
    tenant = await add_tenant(engine, box)
    now = datetime.now(UTC)

    async def request() -> Renewal:
        renewal = new_renewal(tenant.key)
        entry = AuditEntry(now, "renewal.requested", "Sam", renewal.id, tenant.key, "why")
        async with SqlUnitOfWork(engine, box) as uow:
            await uow.renewals.add(renewal, entry)
            await uow.commit()
        return renewal

    first = await request()
    with pytest.raises(RenewalInProgressError):
        await request()
    async with SqlUnitOfWork(engine, box, read_only=True) as uow:
        logged = await uow.audit.for_tenant(tenant.key)
        assert await uow.renewals.get(first.id) is not None
    assert [(e.kind, e.renewal_id, e.actor, e.detail) for e in logged] == [
        ("renewal.requested", first.id, "Sam", "why")
    ]
    assert logged[0].at == now


@pytest.mark.parametrize("one_write", [False, True])
async def test_a_renewal_asked_for_by_any_name_is_its_tenants_or_nothing_is_written(
    engine: AsyncEngine, box: SecretBox, one_write: bool
) -> None:
    """A request names the tenant by domain, name or slug in any case (one statement on
    PostgreSQL): the renewal is that tenant's, expecting its administrator, who is invited
    unless an address was given. A name of no tenant, or a second request, writes nothing."""
    tenant, other = await add_tenant(engine, box), await add_tenant(engine, box)

    async def request(ref: str, email: str = "") -> tuple[Renewal, Any]:
        async with SqlUnitOfWork(engine, box, one_write=one_write) as uow:
            requested = await claim(uow, ref, email)
            await uow.commit()
        return requested

    assert (await request("no-such-tenant"))[1] is None
    first, found = await request(tenant.primary_domain.upper())
    assert found == tenant
    given, _ = await request(other.display_name.swapcase(), email="it@other.example")
    with pytest.raises(RenewalInProgressError):
        await request(tenant.slug)
    async with SqlUnitOfWork(engine, box, read_only=True) as uow:
        stored = await uow.renewals.get(first.id)
        stored_given = await uow.renewals.get(given.id)
        logged = await uow.audit.for_tenant(tenant.key)
        everyone = await uow.renewals.for_tenant(tenant.key)
    assert stored == first and stored_given == given  # as Renewal.assign made them in memory
    assert (first.tenant_key, first.expected_account, first.invitation_email) == (
        tenant.key,
        tenant.admin_upn,
        tenant.admin_upn,
    )
    assert (given.tenant_key, given.expected_account, given.invitation_email) == (
        other.key,
        other.admin_upn,
        "it@other.example",
    )
    assert [e.renewal_id for e in logged] == [first.id] and [r.id for r in everyone] == [first.id]


async def test_a_thread_and_its_first_message_are_stored_both_or_neither(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """A renewal saved with its new thread's first message (one statement on PostgreSQL): the
    message is held for the saving process; a save from a stale copy stores neither."""
    tenant = await add_tenant(engine, box)
    renewal = new_renewal(tenant.key)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.add(renewal)
        await uow.commit()
    now = datetime.now(UTC)
    thread = ThreadRef("slack", f"C1:{uuid.uuid4().hex}")
    item = Outgoing(
        thread_conversation(thread), "post", "slack", thread, Message("Auth URL: https://x")
    )
    stale = copy.deepcopy(renewal)
    renewal.thread = stale.thread = thread
    async with SqlUnitOfWork(engine, box, one_write=True) as uow:
        held = await uow.renewals.save(renewal, FirstPost(item, Lease("me", now), now))
        await uow.commit()
    assert held is not None and held.id and held.message is not None
    assert held.message.ref == str(held.id) and held.attempts == 0
    with pytest.raises(ConcurrencyError):
        async with SqlUnitOfWork(engine, box, one_write=True) as uow:
            await uow.renewals.save(stale, FirstPost(item, Lease("other", now), now))
    async with SqlUnitOfWork(engine, box, read_only=True) as uow:
        stored = await uow.renewals.get(renewal.id)
        pending = await uow.outbox.head(item.conversation, 10)
        owners = (await uow.conn.execute(select(outbox_leases.c.owner))).scalars().all()
    assert stored is not None and stored.thread == thread and stored.version == renewal.version
    assert [p.id for p in pending] == [held.id]
    assert owners == ["me"]


async def test_constraint_holds_even_for_raw_sql(engine: AsyncEngine, box: SecretBox) -> None:
    """The rule lives in the schema: code that bypasses the repository cannot break it."""
    tenant = await add_tenant(engine, box)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.add(new_renewal(tenant.key))
        await uow.commit()
    second = new_renewal(tenant.key)
    values: dict[str, Any] = {c.name: None for c in renewals.columns}
    values.update(
        id=second.id,
        tenant_key=tenant.key,
        state="code_issued",
        requested_by_platform="x",
        requested_by_id="x",
        requested_by_name="x",
        invitation_email="x",
        expected_account="x",
        origin_platform="x",
        origin_channel="x",
        created_at=NOW,
        tokens_acquired=0,
        tokens_total=0,
        warnings="[]",
        version=0,
    )
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(renewals).values(**values))


async def test_finished_renewal_frees_the_tenant(engine: AsyncEngine, box: SecretBox) -> None:
    """After a cancel, a new renewal of the same tenant is allowed."""
    tenant = await add_tenant(engine, box)
    first = new_renewal(tenant.key)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.add(first)
        await uow.commit()
    first.cancel(Actor("slack", "U1"), NOW)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.save(first)
        await uow.renewals.add(new_renewal(tenant.key))
        await uow.commit()


async def test_lost_update_is_refused(engine: AsyncEngine, box: SecretBox) -> None:
    """Two writers of one renewal: the second one is told instead of silently overwriting."""
    tenant = await add_tenant(engine, box)
    r = new_renewal(tenant.key)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.add(r)
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        a = await uow.renewals.get(r.id)
    async with SqlUnitOfWork(engine, box) as uow:
        b = await uow.renewals.get(r.id)
    assert a and b
    a.cancel(Actor("x", "a"), NOW)
    b.expire(NOW)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.renewals.save(a)
        await uow.commit()
    with pytest.raises(ConcurrencyError):
        async with SqlUnitOfWork(engine, box) as uow:
            await uow.renewals.save(b)


async def test_uncommitted_work_leaves_nothing(engine: AsyncEngine, box: SecretBox) -> None:
    """A failure mid-command leaves no half-written rows."""
    tenant = await add_tenant(engine, box)
    r = new_renewal(tenant.key)
    with pytest.raises(RuntimeError):
        async with SqlUnitOfWork(engine, box) as uow:
            await uow.renewals.add(r)
            raise RuntimeError("crash before commit")
    async with SqlUnitOfWork(engine, box) as uow:
        assert await uow.renewals.get(r.id) is None


async def test_token_cache_encrypted_and_rotatable(engine: AsyncEngine) -> None:
    """The MSAL cache is ciphertext at rest, and survives adding a new first key."""
    old = generate_key()
    store = SqlTokenCacheStore(engine, SecretBox([old]))
    tid = str(uuid.uuid4())
    await store.save(tid, '{"RefreshToken": {"x": {"secret": "RT-SECRET"}}}')
    await store.save(tid, '{"RefreshToken": {"x": {"secret": "RT-SECRET-2"}}}')
    async with engine.connect() as conn:
        raw = (
            await conn.execute(
                text("SELECT ciphertext FROM token_caches WHERE tenant_id = :t"), {"t": tid}
            )
        ).scalar()
    assert raw is not None and b"RT-SECRET" not in raw
    rotated = SqlTokenCacheStore(engine, SecretBox([generate_key(), old]))
    assert "RT-SECRET-2" in (await rotated.load(tid) or "")
    with pytest.raises(StorageError):
        await SqlTokenCacheStore(engine, SecretBox([generate_key()])).load(tid)


async def test_token_caches_saved_and_loaded_together_stay_apart(engine: AsyncEngine) -> None:
    """Many tenants' caches written and read at once (a health sweep) share statements, and
    each tenant gets its own back; a cache no key opens fails only that tenant's load."""
    box = SecretBox([generate_key()])
    store = SqlTokenCacheStore(engine, box)
    tids = [str(uuid.uuid4()) for _ in range(40)]
    await asyncio.gather(*(store.save(t, f'{{"cache of": "{t}"}}') for t in tids))
    await asyncio.gather(*(store.save(t, f'{{"newer cache of": "{t}"}}') for t in tids[:20]))
    loaded = await asyncio.gather(*(store.load(t) for t in tids))
    assert loaded == [f'{{"newer cache of": "{t}"}}' for t in tids[:20]] + [
        f'{{"cache of": "{t}"}}' for t in tids[20:]
    ]
    assert store._save.batches < 40 and store._load.batches < 40
    stranger = str(uuid.uuid4())
    await SqlTokenCacheStore(engine, SecretBox([generate_key()])).save(stranger, "{}")
    results = await asyncio.gather(
        store.load(tids[0]), store.load(stranger), store.load("never-saved"), return_exceptions=True
    )
    assert results[0] == f'{{"newer cache of": "{tids[0]}"}}'
    assert isinstance(results[1], TokenCacheUnreadableError) and results[1].tenant_id == stranger
    assert results[2] is None


async def test_a_reader_does_not_queue_behind_a_writer(engine: AsyncEngine, box: SecretBox) -> None:
    """A read-only unit of work (the tenant lookup before a thread opens) runs while a write
    transaction is open, and sees only committed data."""
    known = await add_tenant(engine, box)
    pending = random_tenant()

    async def read() -> set[str]:
        async with SqlUnitOfWork(engine, box, read_only=True) as uow:
            return {t.key for t in await uow.tenants.all()}

    async with SqlUnitOfWork(engine, box) as writer:
        await writer.tenants.add(pending)
        async with asyncio.timeout(10):  # a deadline, not a wait: it hangs if it queues
            seen = await read()
        await writer.commit()
    assert known.key in seen and pending.key not in seen
    assert pending.key in await read()


async def test_health_records_keep_the_last_refresh_when_a_check_failed(
    engine: AsyncEngine, box: SecretBox
) -> None:
    """A failed check changes the state and releases the lease, but the 90-day clock keeps
    counting from the last refresh that worked."""
    ok, failed = await add_tenant(engine, box), await add_tenant(engine, box)
    later = NOW + timedelta(days=1)
    async with SqlUnitOfWork(engine, box) as uow:
        await uow.tenants.record_health(
            [
                HealthRecord(ok.key, AuthState.HEALTHY, NOW, later),
                HealthRecord(failed.key, AuthState.HEALTHY, NOW, later),
            ]
        )
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        claimed = await uow.tenants.claim_due("w1", later, later + timedelta(minutes=5), 500)
        assert {ok.key, failed.key} <= {t.key for t in claimed}
        await uow.tenants.record_health(
            [
                HealthRecord(ok.key, AuthState.HEALTHY, later, later + timedelta(days=1)),
                HealthRecord(failed.key, AuthState.EXPIRED, None, later + timedelta(days=1)),
            ]
        )
        await uow.commit()
    async with SqlUnitOfWork(engine, box) as uow:
        a, b = await uow.tenants.get(ok.key), await uow.tenants.get(failed.key)
        again = await uow.tenants.claim_due("w2", later, later + timedelta(minutes=5), 500)
    assert a is not None and a.last_refresh_at == later and a.auth_state is AuthState.HEALTHY
    assert b is not None and b.last_refresh_at == NOW and b.auth_state is AuthState.EXPIRED
    assert not {ok.key, failed.key} & {t.key for t in again}  # next check is tomorrow


@pytest.mark.parametrize("one_write", [False, True])
async def test_database_gone_is_a_storage_error(box: SecretBox, one_write: bool) -> None:
    """A database that went away surfaces as StorageError, not a driver exception, whether the
    unit of work borrows the pooled connection itself (one write) or SQLAlchemy's."""
    from adapters.storage.database import make_engine
    from tests.servers.postgres import free_port

    eng = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(StorageError):
        async with SqlUnitOfWork(eng, box, one_write=one_write):
            pass
    await eng.dispose()


@pytest.mark.postgres
async def test_a_connection_lost_in_a_one_write_unit_of_work_is_a_storage_error(
    postgres_url: str, box: SecretBox
) -> None:
    """PostgreSQL drops the connection of a one-write unit of work (whose statements go by
    asyncpg itself): StorageError, as from any other unit of work, and the pool recovers."""
    from adapters.storage.database import make_engine, upgrade
    from tests.servers.postgres import fresh_database

    engine = make_engine(await fresh_database(postgres_url))
    await upgrade(engine)
    try:
        tenant = await add_tenant(engine, box)
        with pytest.raises(StorageError):
            async with SqlUnitOfWork(engine, box, one_write=True) as uow:
                async with engine.connect() as other:
                    pid = (await uow.conn.execute(text("SELECT pg_backend_pid()"))).scalar()
                    await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                await claim(uow, tenant.slug)
        async with SqlUnitOfWork(engine, box, one_write=True) as uow:
            _, found = await claim(uow, tenant.slug)
        assert found is not None and found.key == tenant.key
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_one_write_unit_gives_its_connection_back_as_it_found_it(
    postgres_url: str, box: SecretBox
) -> None:
    """A one-write unit of work borrows a pooled connection for asyncpg's own statements and
    makes SQLAlchemy's over it only when a statement needs one (a refused request, here): either
    way the connection goes back to the pool, and out of autocommit (a later unit of work's
    uncommitted write still vanishes). A pool of one connection shows both."""
    from adapters.storage.database import make_engine, upgrade
    from tests.servers.postgres import fresh_database

    engine = make_engine(await fresh_database(postgres_url), pool_size=1)
    await upgrade(engine)
    try:
        tenant = await add_tenant(engine, box)

        async def request() -> None:
            async with SqlUnitOfWork(engine, box, one_write=True) as uow:
                await claim(uow, tenant.slug)
                await uow.commit()

        await asyncio.wait_for(request(), 10)  # asyncpg's statements only
        with pytest.raises(RenewalInProgressError):  # and SQLAlchemy's, to read the open one
            await asyncio.wait_for(request(), 10)
        async with SqlUnitOfWork(engine, box) as uow:
            await uow.tenants.snooze(tenant.key, NOW)  # never committed
        async with SqlUnitOfWork(engine, box, read_only=True) as uow:
            again = await uow.tenants.get(tenant.key)
            assert again is not None and again.snoozed_until is None
            assert len(await uow.renewals.for_tenant(tenant.key)) == 1
    finally:
        await engine.dispose()


async def test_key_rotation_reencrypts_everything(engine: AsyncEngine) -> None:
    """After `keys rotate`, the old key can be removed and every secret still opens."""
    from adapters.storage.database import make_engine, upgrade
    from adapters.storage.keys import rotate_secrets as rotate
    from tests.servers.postgres import fresh_database

    if engine.url.get_backend_name() == "postgresql":  # rotation touches every row: own database
        server = engine.url.render_as_string(hide_password=False)
        engine = make_engine(await fresh_database(server))
        await upgrade(engine)
    old, new = generate_key(), generate_key()
    tid = str(uuid.uuid4())
    await SqlTokenCacheStore(engine, SecretBox([old])).save(tid, '{"cache": "body"}')
    assert await rotate(engine, SecretBox([new, old])) >= 1
    assert await SqlTokenCacheStore(engine, SecretBox([new])).load(tid) == '{"cache": "body"}'
    await engine.dispose()


async def test_daily_job_is_claimed_by_one_replica(engine: AsyncEngine, box: SecretBox) -> None:
    """Several replicas asking at once: exactly one runs the daily job."""
    name = f"job-{uuid.uuid4().hex[:8]}"

    async def claim() -> bool:
        async with SqlUnitOfWork(engine, box) as uow:
            won = await uow.jobs.claim(name, NOW, timedelta(hours=24))
            await uow.commit()
        return won

    first = await asyncio.gather(*(claim() for _ in range(5)), return_exceptions=True)
    assert [r for r in first if r is True] == [True]
    async with SqlUnitOfWork(engine, box) as uow:
        assert await uow.jobs.claim(name, NOW + timedelta(hours=25), timedelta(hours=24))


async def test_validation_histogram_counts_in_the_database(
    own_engine: AsyncEngine, box: SecretBox
) -> None:
    """/metrics' time-to-validation comes from one aggregate (bucket counts, sum, count) on
    both databases instead of loading every validated renewal at each scrape: only validated
    renewals count, a renewal of exactly a bound is in that bound's bucket."""
    took = {30.0: "validated", 200.0: "validated", 3600.0: "validated", 864000.0: "validated"}
    rows = [*took.items(), (45.0, "failed")]
    for seconds, state in rows:
        tenant = await add_tenant(own_engine, box)
        r = new_renewal(tenant.key)
        async with SqlUnitOfWork(own_engine, box) as uow:
            await uow.renewals.add(r)
            await uow.commit()
        async with own_engine.begin() as conn:
            await conn.execute(
                update(renewals)
                .where(renewals.c.id == r.id)
                .values(state=state, updated_at=NOW + timedelta(seconds=seconds))
            )
    async with SqlUnitOfWork(own_engine, box) as uow:
        hist = await uow.renewals.validation_histogram((60.0, 300.0, 3600.0, 86400.0))
    assert hist.at_most == (1, 2, 3, 3)
    assert hist.count == 4 and hist.total_seconds == pytest.approx(sum(took), abs=0.01)


@pytest.mark.postgres
async def test_a_process_opens_no_more_connections_than_its_pool_size(
    postgres_url: str, box: SecretBox
) -> None:
    """``pool_size`` is every connection a process opens, its units of one write and its
    transactions together, however many run at once: what an operator sizes PostgreSQL's
    max_connections by."""
    import asyncpg

    from adapters.storage.database import make_engine, upgrade
    from tests.servers.postgres import fresh_database

    url = await fresh_database(postgres_url)
    engine = make_engine(url, pool_size=4)
    await upgrade(engine)
    tenants = [await add_tenant(engine, box) for _ in range(12)]
    seen: list[int] = []
    watcher = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    watching = asyncio.Lock()

    async def connections() -> int:
        async with watching:  # (the watcher's own connection is not counted)
            sql = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
            )
            return int(await watcher.fetchval(sql)) - 1

    async def one_write(slug: str) -> None:
        async with SqlUnitOfWork(engine, box, one_write=True) as uow:
            await claim(uow, slug)
            seen.append(await connections())

    async def transaction(key: str) -> None:
        async with SqlUnitOfWork(engine, box) as uow:
            await uow.tenants.snooze(key, NOW)
            seen.append(await connections())
            await uow.commit()

    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(one_write(t.slug) for t in tenants), *(transaction(t.key) for t in tenants)
            ),
            30,
        )
        async with SqlUnitOfWork(engine, box, read_only=True) as uow:
            claimed = [await uow.renewals.active_for(t.key) for t in tenants]
    finally:
        await watcher.close()
        await engine.dispose()
    assert all(claimed)  # every unit did its work
    assert 2 <= max(seen) <= 4  # in use at once, never beyond pool_size
