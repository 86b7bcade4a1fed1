"""The claim (gwm_sync_claim), leases, release and the call budget per API key (sync/schedule.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models.db import set_tenant
from sync.schedule import (
    JobKind,
    JobOutcome,
    KeyBudget,
    budget_state,
    claim_jobs,
    fingerprint_key,
    key_fingerprint,
    release,
    renew_lease,
    reserve_call,
    retry_delay,
    set_budget_limits,
)
from tests.support.db import TEST_AUDIT_CHAIN
from tests.sync import schedule_support
from tests.sync.schedule_support import (
    SECRET_KEYS,
    T0,
    SyncDb,
    add_polling,
    add_project,
    add_saved_search,
    add_source,
    new_tenant,
)

sync_db = schedule_support.sync_db  # the fixture: a database of this module's own

LEASE = timedelta(minutes=10)
FAR = T0 + timedelta(days=3650)


async def _drain(db: SyncDb) -> None:
    """Claim everything due (as of far in the future) and drop it, so each test starts from its own rows."""
    # Leased until long after any instant the tests use.
    while await claim_jobs(
        db.app, worker="drain", now=FAR + timedelta(days=1000), lease=timedelta(days=3650), max_jobs=100
    ):
        pass


async def test_claim_picks_only_pollable_rows_and_leases_them(sync_db: SyncDb) -> None:
    await _drain(sync_db)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    idle_source = await add_source(sync_db.owner, t, active=False)
    live = await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source), source)
    on_hold = await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source, status="on_hold"), source)
    # Not polled: archived project, closed project, inactive configuration, inactive source,
    # the "Manual entry" source, and everything of a deactivated tenant.
    await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source, archived=True), source)
    await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source, status="won"), source)
    await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source), source, active=False)
    await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, idle_source), idle_source)
    manual = t.manual_source_id
    await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, manual), manual)
    search = await add_saved_search(sync_db.owner, t, source)
    await add_saved_search(sync_db.owner, t, source, active=False)
    gone = await new_tenant(sync_db, is_active=False)
    gone_source = await add_source(sync_db.owner, gone)
    await add_polling(sync_db.owner, gone, await add_project(sync_db.owner, gone, gone_source), gone_source)
    await add_saved_search(sync_db.owner, gone, gone_source)

    jobs = await claim_jobs(sync_db.app, worker="w1", now=FAR + timedelta(days=2), lease=LEASE, max_jobs=50)

    assert {j.tenant_id for j in jobs} == {t.id}
    assert sorted(
        (j.kind, j.external_source_id, j.saved_search_id) for j in jobs if j.kind is not JobKind.PROJECT_REFRESH
    ) == sorted(
        [
            (JobKind.SOURCE_SEARCH, source, None),
            (JobKind.SAVED_SEARCH, source, search),
        ]
    )
    assert {j.job_id for j in jobs if j.kind is JobKind.PROJECT_REFRESH} == {live, on_hold}
    assert all(j.claimed_until == FAR + timedelta(days=2) + LEASE and j.worker == "w1" for j in jobs)
    # Leased: another worker gets nothing until the lease runs out, then everything again.
    assert await claim_jobs(sync_db.app, worker="w2", now=FAR + timedelta(days=2), lease=LEASE, max_jobs=50) == []
    later = FAR + timedelta(days=2) + LEASE + timedelta(seconds=1)
    again = await claim_jobs(sync_db.app, worker="w2", now=later, lease=LEASE, max_jobs=50)
    assert {j.job_id for j in again} == {j.job_id for j in jobs}
    assert {j.worker for j in again} == {"w2"}


async def test_claim_respects_the_job_count_and_the_due_time(sync_db: SyncDb) -> None:
    await _drain(sync_db)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    now = FAR + timedelta(days=10)
    due = [
        await add_polling(
            sync_db.owner, t, await add_project(sync_db.owner, t, source), source, next_poll=now - timedelta(minutes=i)
        )
        for i in range(3)
    ]
    await add_polling(
        sync_db.owner, t, await add_project(sync_db.owner, t, source), source, next_poll=now + timedelta(minutes=1)
    )
    first = await claim_jobs(sync_db.app, worker="w", now=now, lease=LEASE, max_jobs=2)
    # The source's own search row is created due at once and comes first; then the oldest refresh.
    assert [j.kind for j in first] == [JobKind.SOURCE_SEARCH, JobKind.PROJECT_REFRESH]
    assert first[1].job_id == due[2]
    rest = await claim_jobs(sync_db.app, worker="w", now=now, lease=LEASE, max_jobs=10)
    assert {j.job_id for j in rest} == {due[0], due[1]}


async def test_the_claim_function_refuses_nonsense(sync_db: SyncDb) -> None:
    with pytest.raises(DBAPIError, match="positive lease"):
        await claim_jobs(sync_db.app, worker="w", now=T0, lease=LEASE, max_jobs=0)
    with pytest.raises(DBAPIError, match="worker name"):
        await claim_jobs(sync_db.app, worker="", now=T0, lease=LEASE, max_jobs=1)


async def test_the_app_role_cannot_touch_other_tenants_through_the_claim(sync_db: SyncDb) -> None:
    # The function returns ids only; the rows themselves stay invisible without the tenant.
    async with sync_db.app.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM sync_schedules")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM polling_configurations")) == 0


async def test_release_records_success_failure_and_deferral(sync_db: SyncDb) -> None:
    await _drain(sync_db)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    now = FAR + timedelta(days=20)
    (job,) = await claim_jobs(sync_db.app, worker="w", now=now, lease=LEASE, max_jobs=1)
    assert job.kind is JobKind.SOURCE_SEARCH and job.external_source_id == source

    async def row() -> dict[str, object]:
        async with sync_db.app.begin() as conn:
            await set_tenant(conn, t.id)
            return dict(
                (await conn.execute(text("SELECT * FROM sync_schedules WHERE id = :i"), {"i": job.job_id}))
                .one()
                ._mapping
            )

    fp = "ab" * 32
    # Failed twice: errors count, the wait doubles (5, then 10 minutes), a Retry-After later wins.
    assert await release(sync_db.app, TEST_AUDIT_CHAIN, job, JobOutcome.failed("HTTP 500"), started_at=now, now=now)
    r = await row()
    assert (r["consecutive_errors"], r["last_error_message"], r["next_poll_at"]) == (
        1,
        "HTTP 500",
        now + timedelta(minutes=5),
    )
    assert (r["claimed_until"], r["claimed_by"], r["last_attempt_at"], r["last_success_at"]) == (None, None, now, None)
    (job,) = await claim_jobs(sync_db.app, worker="w", now=now + timedelta(minutes=5), lease=LEASE, max_jobs=1)
    retry_at = now + timedelta(hours=2)
    assert await release(
        sync_db.app,
        TEST_AUDIT_CHAIN,
        job,
        JobOutcome.failed("429", retry_at=retry_at),
        started_at=now,
        now=now + timedelta(minutes=5),
    )
    r = await row()
    assert (r["consecutive_errors"], r["next_poll_at"]) == (2, retry_at)
    # Deferred (no budget): back at the window, the error count untouched.
    (job,) = await claim_jobs(sync_db.app, worker="w", now=retry_at, lease=LEASE, max_jobs=1)
    window = retry_at + timedelta(hours=10)
    assert await release(
        sync_db.app,
        TEST_AUDIT_CHAIN,
        job,
        JobOutcome.deferred(window, key_fingerprint=fp),
        started_at=retry_at,
        now=retry_at,
    )
    r = await row()
    assert (r["consecutive_errors"], r["next_poll_at"], r["key_fingerprint"]) == (2, window, fp)
    # Done: last success is when the job started, errors reset, next poll one interval later.
    (job,) = await claim_jobs(sync_db.app, worker="w", now=window, lease=LEASE, max_jobs=1)
    assert await release(
        sync_db.app, TEST_AUDIT_CHAIN, job, JobOutcome.done(), started_at=window, now=window + timedelta(minutes=1)
    )
    r = await row()
    assert (r["consecutive_errors"], r["last_error_message"], r["last_success_at"]) == (0, None, window)
    assert r["next_poll_at"] == window + timedelta(minutes=360)


async def test_a_lease_taken_over_is_neither_renewed_nor_released_by_its_old_holder(sync_db: SyncDb) -> None:
    await _drain(sync_db)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    config = await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source), source)
    now = FAR + timedelta(days=30)
    jobs = await claim_jobs(sync_db.app, worker="old", now=now, lease=LEASE, max_jobs=5)
    old = next(j for j in jobs if j.job_id == config)
    renewed = await renew_lease(sync_db.app, TEST_AUDIT_CHAIN, old, now=now + timedelta(minutes=5), lease=LEASE)
    assert renewed is not None and renewed.claimed_until == now + timedelta(minutes=15)
    # The old worker stalls past its lease; a new one takes the refresh.
    late = now + timedelta(minutes=16)
    taken = [
        j for j in await claim_jobs(sync_db.app, worker="new", now=late, lease=LEASE, max_jobs=5) if j.job_id == config
    ]
    assert len(taken) == 1
    assert await renew_lease(sync_db.app, TEST_AUDIT_CHAIN, renewed, now=late, lease=LEASE) is None
    assert not await release(sync_db.app, TEST_AUDIT_CHAIN, renewed, JobOutcome.done(), started_at=now, now=late)
    assert await release(sync_db.app, TEST_AUDIT_CHAIN, taken[0], JobOutcome.done(), started_at=late, now=late)
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        r = (await conn.execute(text("SELECT * FROM polling_configurations WHERE id = :i"), {"i": config})).one()
    assert (r.claimed_until, r.claimed_by, r.last_poll_timestamp) == (None, None, late)
    assert r.next_poll_timestamp == late + timedelta(minutes=60)


async def test_claims_and_releases_leave_updated_at_and_the_audit_trail_alone(sync_db: SyncDb) -> None:
    await _drain(sync_db)
    t = await new_tenant(sync_db)
    source = await add_source(sync_db.owner, t)
    config = await add_polling(sync_db.owner, t, await add_project(sync_db.owner, t, source), source)

    async def state() -> tuple[object, int]:
        async with sync_db.app.begin() as conn:
            await set_tenant(conn, t.id)
            stamp = await conn.scalar(
                text("SELECT updated_at FROM polling_configurations WHERE id = :i"), {"i": config}
            )
            audits = await conn.scalar(text("SELECT count(*) FROM audit_logs"))
            return stamp, int(audits or 0)

    before = await state()
    now = FAR + timedelta(days=40)
    jobs = await claim_jobs(sync_db.app, worker="w", now=now, lease=LEASE, max_jobs=5)
    job = next(j for j in jobs if j.job_id == config)
    assert await renew_lease(sync_db.app, TEST_AUDIT_CHAIN, job, now=now, lease=LEASE) is not None
    assert await release(sync_db.app, TEST_AUDIT_CHAIN, job, JobOutcome.failed("x"), started_at=now, now=now)
    assert await state() == before


def test_failed_searches_back_off_up_to_the_interval() -> None:
    interval = timedelta(hours=6)
    assert [retry_delay(n, interval) for n in (1, 2, 3, 7, 8, 40)] == [
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(minutes=20),
        timedelta(minutes=320),
        interval,
        interval,
    ]


def test_key_fingerprints_are_keyed_and_stable() -> None:
    key = fingerprint_key(SECRET_KEYS)
    assert key_fingerprint(key, "api-key-1") == key_fingerprint(fingerprint_key(SECRET_KEYS), "api-key-1")
    assert key_fingerprint(key, "api-key-1") != key_fingerprint(key, "api-key-2")
    other = fingerprint_key("k2:" + "B" * 43 + "=")
    assert key_fingerprint(other, "api-key-1") != key_fingerprint(key, "api-key-1")
    assert len(key_fingerprint(key, "k")) == 64
    with pytest.raises(ValueError, match="key_id:base64key"):
        fingerprint_key("nonsense")
    with pytest.raises(ValueError, match="required"):
        key_fingerprint(key, "")


async def test_the_budget_counts_per_day_and_hour_and_refuses_past_its_limits(sync_db: SyncDb) -> None:
    t = await new_tenant(sync_db)
    fp = uuid.uuid4().hex * 2
    day = T0.replace(hour=0)
    # Unconfigured: 10 a day (a key without a SAM.gov role).
    results = [await reserve_call(sync_db.app, t.id, fp, day + timedelta(hours=i // 4)) for i in range(12)]
    assert results == [True] * 10 + [False] * 2
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        state = await budget_state(conn, t.id, fp, day + timedelta(hours=2))
        assert (state.daily_limit, state.used_today, state.left_today, state.used_this_hour) == (10, 10, 0, 2)
        # The operator raises it (gwm sync budget --daily 1000 --hourly 3).
        await set_budget_limits(conn, t.id, fp, daily_limit=1000, hourly_limit=3)
    assert await reserve_call(sync_db.app, t.id, fp, day + timedelta(hours=2, minutes=5))
    assert not await reserve_call(sync_db.app, t.id, fp, day + timedelta(hours=2, minutes=6))  # 3 this hour
    assert await reserve_call(sync_db.app, t.id, fp, day + timedelta(hours=3))  # a new hour
    # A source's own hourly cap applies too (the lower wins).
    assert not await reserve_call(sync_db.app, t.id, fp, day + timedelta(hours=3, minutes=1), hourly_cap=1)
    # A new UTC day starts from zero.
    budget = KeyBudget(sync_db.app, t.id, fp, hourly_cap=None)
    assert await budget.reserve(day + timedelta(days=1))
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        await set_budget_limits(conn, t.id, fp, daily_limit=1, hourly_limit=None)
    assert not await budget.reserve(day + timedelta(days=1, hours=5))
    assert budget.next_window(day + timedelta(days=1, hours=5)) == day + timedelta(days=2)
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        await set_budget_limits(conn, t.id, fp, daily_limit=100, hourly_limit=0)
    assert not await budget.reserve(day + timedelta(days=1, hours=5, minutes=30))
    assert budget.next_window(day + timedelta(days=1, hours=5, minutes=30)) == day + timedelta(days=1, hours=6)


async def test_budgets_are_per_tenant_and_per_key(sync_db: SyncDb) -> None:
    a, b = await new_tenant(sync_db), await new_tenant(sync_db)
    fp, other = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    for tenant in (a, b):
        async with sync_db.app.begin() as conn:
            await set_tenant(conn, tenant.id)
            await set_budget_limits(conn, tenant.id, fp, daily_limit=1, hourly_limit=None)
    assert await reserve_call(sync_db.app, a.id, fp, T0)
    assert not await reserve_call(sync_db.app, a.id, fp, T0)
    assert await reserve_call(sync_db.app, b.id, fp, T0)
    assert await reserve_call(sync_db.app, a.id, other, T0)


async def test_concurrent_reservations_never_exceed_the_budget(sync_db: SyncDb) -> None:
    t = await new_tenant(sync_db)
    fp = uuid.uuid4().hex * 2
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        await set_budget_limits(conn, t.id, fp, daily_limit=7, hourly_limit=None)
    results = await asyncio.gather(*(reserve_call(sync_db.app, t.id, fp, T0) for _ in range(20)))
    assert sum(results) == 7
    async with sync_db.app.begin() as conn:
        await set_tenant(conn, t.id)
        assert (await budget_state(conn, t.id, fp, T0)).used_today == 7


@pytest.mark.parametrize(
    ("statement", "allowed"),
    [
        ("UPDATE polling_configurations SET claimed_by = 'x' WHERE false", True),
        ("UPDATE sync_schedules SET claimed_until = now() WHERE false", True),
        ("UPDATE polling_configurations SET is_active = false WHERE false", False),
        ("UPDATE sync_schedules SET next_poll_at = now() WHERE false", False),
        ("UPDATE opportunity_projects SET project_status = 'won' WHERE false", False),
        ("SELECT api_credentials_encrypted FROM external_opportunity_sources", False),
        ("SELECT title FROM opportunity_projects", False),
        ("DELETE FROM sync_schedules WHERE false", False),
        ("SELECT count(*) FROM sync_key_budgets", False),
    ],
)
async def test_the_claim_functions_owner_may_touch_only_the_lease(
    sync_db: SyncDb, statement: str, allowed: bool
) -> None:
    async with sync_db.owner.connect() as conn:
        await conn.execute(text("SET ROLE gwm_lookup"))
        try:
            if allowed:
                await conn.execute(text(statement))
            else:
                with pytest.raises(DBAPIError, match="permission denied"):
                    await conn.execute(text(statement))
        finally:
            await conn.rollback()
