"""Claiming sync jobs, their leases, and the call budget per API key (docs/decisions.md D14-D16).

Jobs:

    jobs = await claim_jobs(engine, worker="host:1234:ab12", now=now, lease=timedelta(minutes=10), max_jobs=4)
    # each Job: kind (source_search | saved_search | project_refresh), job_id, tenant_id,
    # external_source_id, saved_search_id, opportunity_project_id, claimed_until, worker
    await renew_lease(engine, chain, job, now=now, lease=lease)   # False: the job is no longer ours
    await release(engine, chain, job, JobOutcome.done(), now=now) # next poll, last success, lease off

`claim_jobs` calls the pre-tenant function `gwm_sync_claim` (migration 0009, owned by gwm_lookup)
in one short transaction of the server's role: due rows of active tenants, active sources, active
saved searches and polled projects, `FOR UPDATE SKIP LOCKED`, each given a lease, committed at
once. Everything after it runs with the job's tenant set, in transactions that never span an HTTP
call. Renewal and release act only while `claimed_by` is still this worker: a worker that outlived
its lease and lost the job to another changes nothing. Polling configurations are audited rows, so
their lease and polling state are written through a system unit of work (operational columns:
no audit row); schedule rows through a plain transaction.

Budget:

    key = fingerprint_key(settings.secret_keys)           # HKDF of the first GWM_SECRET_KEYS key
    budget = KeyBudget(engine, tenant_id, key_fingerprint(key, api_key), hourly_cap=source.rate_limit_per_hour)
    if await budget.reserve(now): ...                     # one slot, committed; the row locked FOR UPDATE
    else: retry_at = budget.next_window(now)              # the next UTC hour or day, whichever ran out

`reserve_call` creates the key's row on first use (daily limit 10: SAM.gov's quota without a role;
the operator raises it with `gwm sync budget ... --daily 1000`, `set_budget_limits`), locks it,
rolls its UTC day and clock-hour windows forward, and counts the call only when both limits
allow: any number of workers together never exceed the budget.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Row, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audited import system_unit
from models.audit_chain import AuditChain
from models.db import set_tenant
from models.external_data import PollingConfiguration
from models.sync import DEFAULT_DAILY_LIMIT, SyncKeyBudget, SyncSchedule

__all__ = [
    "DEFAULT_LEASE",
    "PROCESS",
    "BudgetLimits",
    "BudgetState",
    "Job",
    "JobKind",
    "JobOutcome",
    "KeyBudget",
    "OutcomeKind",
    "budget_state",
    "claim_jobs",
    "fingerprint_key",
    "key_fingerprint",
    "release",
    "renew_lease",
    "reserve_call",
    "retry_delay",
    "set_budget_limits",
]

#: The system process named on rows the scheduler writes through a unit of work.
PROCESS = "sync.schedule"
#: How long a claimed job is held before another worker may take it (renewed while it runs).
DEFAULT_LEASE = datetime.timedelta(minutes=10)
#: The first wait after a failed search; it doubles per consecutive failure, up to the interval.
FIRST_RETRY = datetime.timedelta(minutes=5)
#: The longest a polling configuration's backoff may push its next refresh.
MAX_BACKOFF = datetime.timedelta(days=1)
_FINGERPRINT_INFO = b"gwm sync api key fingerprint v1"


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        raise ValueError("sync times must be timezone-aware")
    return moment.astimezone(datetime.UTC)


# -- jobs ------------------------------------------------------------------------------------------


class JobKind(StrEnum):
    """What a claimed job does."""

    SOURCE_SEARCH = "source_search"  # a source's windowed search (sync_schedules, saved_search_id NULL)
    SAVED_SEARCH = "saved_search"  # a saved search's windowed search (sync_schedules)
    PROJECT_REFRESH = "project_refresh"  # a tracked project's refresh (polling_configurations)


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job: the row it came from, its tenant, and the lease this worker holds."""

    kind: JobKind
    job_id: uuid.UUID  # sync_schedules.id or polling_configurations.id
    tenant_id: uuid.UUID
    external_source_id: uuid.UUID
    saved_search_id: uuid.UUID | None
    opportunity_project_id: uuid.UUID | None
    claimed_until: datetime.datetime
    worker: str


class OutcomeKind(StrEnum):
    DONE = "done"  # the job ran: last success moves, errors reset
    FAILED = "failed"  # the source failed: errors count, the next poll backs off
    DEFERRED = "deferred"  # nothing could be tried (no budget left): try again at retry_at, no error


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What a job function reports; `release` turns it into the row's next poll."""

    kind: OutcomeKind
    # DONE: the instant the searched window is complete up to (default: when the job started).
    succeeded_at: datetime.datetime | None = None
    error: str | None = None
    # The earliest next attempt (a Retry-After, the budget's next window); later of it and the backoff.
    retry_at: datetime.datetime | None = None
    # The budget row of the source's key, for source health (schedule rows only).
    key_fingerprint: str | None = None

    @classmethod
    def done(cls, *, succeeded_at: datetime.datetime | None = None, key_fingerprint: str | None = None) -> JobOutcome:
        return cls(OutcomeKind.DONE, succeeded_at=succeeded_at, key_fingerprint=key_fingerprint)

    @classmethod
    def failed(
        cls, error: str, *, retry_at: datetime.datetime | None = None, key_fingerprint: str | None = None
    ) -> JobOutcome:
        return cls(OutcomeKind.FAILED, error=error, retry_at=retry_at, key_fingerprint=key_fingerprint)

    @classmethod
    def deferred(cls, retry_at: datetime.datetime, *, key_fingerprint: str | None = None) -> JobOutcome:
        return cls(OutcomeKind.DEFERRED, retry_at=retry_at, key_fingerprint=key_fingerprint)


async def claim_jobs(
    engine: AsyncEngine,
    *,
    worker: str,
    now: datetime.datetime,
    lease: datetime.timedelta = DEFAULT_LEASE,
    max_jobs: int = 1,
) -> list[Job]:
    """Claim up to `max_jobs` due jobs across tenants, lease them to `worker`, and commit."""
    seconds = max(1, int(lease.total_seconds()))
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                text("SELECT * FROM public.gwm_sync_claim(:worker, :now, :lease, :max_jobs)"),
                {"worker": worker, "now": _utc(now), "lease": seconds, "max_jobs": max_jobs},
            )
        ).all()
    return [
        Job(
            kind=JobKind(row.job_kind),
            job_id=row.job_id,
            tenant_id=row.tenant_id,
            external_source_id=row.external_source_id,
            saved_search_id=row.saved_search_id,
            opportunity_project_id=row.opportunity_project_id,
            claimed_until=row.claimed_until,
            worker=worker,
        )
        for row in rows
    ]


async def renew_lease(
    engine: AsyncEngine,
    chain: AuditChain,
    job: Job,
    *,
    now: datetime.datetime,
    lease: datetime.timedelta = DEFAULT_LEASE,
) -> Job | None:
    """Extend the lease to now + lease while the job is still this worker's; None when it is not."""
    until = _utc(now) + lease
    if job.kind is JobKind.PROJECT_REFRESH:
        async with system_unit(engine, chain, job.tenant_id, process=PROCESS, notify=False) as uow:
            config = await uow.session.scalar(
                select(PollingConfiguration).where(PollingConfiguration.id == job.job_id).with_for_update()
            )
            if config is None or config.claimed_by != job.worker:
                return None
            config.claimed_until = until
    else:
        async with engine.begin() as conn:
            await set_tenant(conn, job.tenant_id)
            renewed = await conn.scalar(
                update(SyncSchedule)
                .where(SyncSchedule.id == job.job_id, SyncSchedule.claimed_by == job.worker)
                .values(claimed_until=until)
                .returning(SyncSchedule.id)
            )
            if renewed is None:
                return None
    return dataclasses.replace(job, claimed_until=until)


def retry_delay(consecutive_errors: int, interval: datetime.timedelta) -> datetime.timedelta:
    """A failed search's wait: FIRST_RETRY doubled per earlier consecutive failure, at most `interval`."""
    exponent: int = max(0, min(consecutive_errors - 1, 30))
    wait: datetime.timedelta = FIRST_RETRY * (1 << exponent)
    return min(wait, interval)


def _later(first: datetime.datetime, second: datetime.datetime | None) -> datetime.datetime:
    return first if second is None or second <= first else _utc(second)


async def release(
    engine: AsyncEngine,
    chain: AuditChain,
    job: Job,
    outcome: JobOutcome,
    *,
    started_at: datetime.datetime,
    now: datetime.datetime,
) -> bool:
    """Record the outcome, set the next poll and end the lease; False when the job was no longer ours
    (its lease ran out and another worker claimed it: that worker's record stands)."""
    started_at, now = _utc(started_at), _utc(now)
    if job.kind is JobKind.PROJECT_REFRESH:
        return await _release_refresh(engine, chain, job, outcome, started_at=started_at, now=now)
    async with engine.begin() as conn:
        await set_tenant(conn, job.tenant_id)
        row = await conn.execute(
            select(SyncSchedule.poll_interval_minutes, SyncSchedule.consecutive_errors)
            .where(SyncSchedule.id == job.job_id, SyncSchedule.claimed_by == job.worker)
            .with_for_update()
        )
        current = row.first()
        if current is None:
            return False
        interval = datetime.timedelta(minutes=current.poll_interval_minutes)
        values: dict[str, object] = {"claimed_until": None, "claimed_by": None, "last_attempt_at": started_at}
        if outcome.key_fingerprint is not None:
            values["key_fingerprint"] = outcome.key_fingerprint
        if outcome.kind is OutcomeKind.DONE:
            values |= {
                "last_success_at": _utc(outcome.succeeded_at) if outcome.succeeded_at else started_at,
                "consecutive_errors": 0,
                "last_error_message": None,
                "next_poll_at": _later(started_at + interval, outcome.retry_at),
            }
        elif outcome.kind is OutcomeKind.FAILED:
            errors = current.consecutive_errors + 1
            values |= {
                "consecutive_errors": errors,
                "last_error_message": (outcome.error or "failed")[:2000],
                "next_poll_at": _later(now + retry_delay(errors, interval), outcome.retry_at),
            }
        else:
            values["next_poll_at"] = _later(now, outcome.retry_at)
        await conn.execute(update(SyncSchedule).where(SyncSchedule.id == job.job_id).values(**values))
    return True


async def _release_refresh(
    engine: AsyncEngine,
    chain: AuditChain,
    job: Job,
    outcome: JobOutcome,
    *,
    started_at: datetime.datetime,
    now: datetime.datetime,
) -> bool:
    # consecutive_errors, response time and success rate of a polling configuration are kept by the
    # calls (sync/calls.py); here only the lease and the timing, backing off by its multiplier.
    async with system_unit(engine, chain, job.tenant_id, process=PROCESS, notify=False) as uow:
        config = await uow.session.scalar(
            select(PollingConfiguration).where(PollingConfiguration.id == job.job_id).with_for_update()
        )
        if config is None or config.claimed_by != job.worker:
            return False
        frequency = datetime.timedelta(minutes=config.polling_frequency_minutes)
        config.claimed_until = None
        config.claimed_by = None
        config.last_poll_timestamp = started_at
        if outcome.kind is OutcomeKind.DONE:
            config.next_poll_timestamp = _later(started_at + frequency, outcome.retry_at)
        elif outcome.kind is OutcomeKind.FAILED:
            errors = max(1, config.consecutive_errors)
            factor = Decimal(config.backoff_multiplier) ** min(errors, 30)
            wait = min(frequency * float(factor), MAX_BACKOFF)
            config.next_poll_timestamp = _later(now + wait, outcome.retry_at)
        else:
            config.next_poll_timestamp = _later(now, outcome.retry_at)
    return True


# -- budget ----------------------------------------------------------------------------------------


def fingerprint_key(secret_keys: str) -> bytes:
    """The HMAC key of API key fingerprints: HKDF-SHA256 of the first (current) GWM_SECRET_KEYS key."""
    entry = secret_keys.split(",", 1)[0]
    key_id, separator, encoded = (part.strip() for part in entry.partition(":"))
    if not separator or not key_id or not encoded:
        raise ValueError("the secret key setting's first entry is not 'key_id:base64key'")
    try:
        material = base64.urlsafe_b64decode(
            encoded.replace("+", "-").replace("/", "_").rstrip("=") + "=" * (-len(encoded.rstrip("=")) % 4)
        )
    except (binascii.Error, ValueError):
        raise ValueError(f"secret key {key_id!r} is not valid base64") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FINGERPRINT_INFO).derive(material)


def key_fingerprint(fingerprint_hmac_key: bytes, api_key: str) -> str:
    """The keyed fingerprint (hex HMAC-SHA256) that finds an API key's budget row."""
    if not api_key:
        raise ValueError("an API key is required")
    return hmac.new(fingerprint_hmac_key, api_key.encode(), hashlib.sha256).hexdigest()


def _windows(now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    now = _utc(now)
    return now.replace(hour=0, minute=0, second=0, microsecond=0), now.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A key's limits and the calls counted in the current windows (as of `now`)."""

    daily_limit: int
    hourly_limit: int | None
    used_today: int
    used_this_hour: int

    @property
    def left_today(self) -> int:
        return max(0, self.daily_limit - self.used_today)


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    daily_limit: int
    hourly_limit: int | None


async def _locked_row(conn: AsyncConnection, tenant_id: uuid.UUID, fingerprint: str) -> Row[Any]:
    await conn.execute(
        pg_insert(SyncKeyBudget)
        .values(tenant_id=tenant_id, key_fingerprint=fingerprint)
        .on_conflict_do_nothing(index_elements=["tenant_id", "key_fingerprint"])
    )
    return (
        await conn.execute(
            select(SyncKeyBudget.__table__)
            .where(SyncKeyBudget.tenant_id == tenant_id, SyncKeyBudget.key_fingerprint == fingerprint)
            .with_for_update()
        )
    ).one()


async def reserve_call(
    engine: AsyncEngine,
    tenant_id: uuid.UUID,
    fingerprint: str,
    now: datetime.datetime,
    *,
    hourly_cap: int | None = None,
) -> bool:
    """Reserve one call of the key's budget (committed before returning): True when reserved, False
    when the day's or the hour's limit is reached. The row is locked FOR UPDATE between the check
    and the count, so concurrent reservations queue on it."""
    return await _reserve(engine, tenant_id, fingerprint, now, hourly_cap=hourly_cap) is None


async def _reserve(
    engine: AsyncEngine, tenant_id: uuid.UUID, fingerprint: str, now: datetime.datetime, *, hourly_cap: int | None
) -> str | None:
    """None when reserved, else the window that ran out ("day" or "hour")."""
    day, hour = _windows(now)
    async with engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        row = await _locked_row(conn, tenant_id, fingerprint)
        day_count = row.day_count if row.day_started_at is not None and row.day_started_at >= day else 0
        hour_count = row.hour_count if row.hour_started_at is not None and row.hour_started_at >= hour else 0
        hourly = [limit for limit in (row.hourly_limit, hourly_cap) if limit is not None]
        if day_count >= row.daily_limit:
            return "day"
        if hourly and hour_count >= min(hourly):
            return "hour"
        await conn.execute(
            update(SyncKeyBudget)
            .where(SyncKeyBudget.id == row.id)
            .values(
                day_started_at=max(day, row.day_started_at or day),
                day_count=day_count + 1,
                hour_started_at=max(hour, row.hour_started_at or hour),
                hour_count=hour_count + 1,
                last_reserved_at=_utc(now),
            )
        )
    return None


async def budget_state(
    conn: AsyncConnection, tenant_id: uuid.UUID, fingerprint: str, now: datetime.datetime
) -> BudgetState:
    """The key's limits and use in the windows of `now` (tenant set on `conn`; defaults if unused)."""
    day, hour = _windows(now)
    row = (
        await conn.execute(
            select(SyncKeyBudget.__table__).where(
                SyncKeyBudget.tenant_id == tenant_id, SyncKeyBudget.key_fingerprint == fingerprint
            )
        )
    ).first()
    if row is None:
        return BudgetState(daily_limit=DEFAULT_DAILY_LIMIT, hourly_limit=None, used_today=0, used_this_hour=0)
    return BudgetState(
        daily_limit=row.daily_limit,
        hourly_limit=row.hourly_limit,
        used_today=row.day_count if row.day_started_at is not None and row.day_started_at >= day else 0,
        used_this_hour=row.hour_count if row.hour_started_at is not None and row.hour_started_at >= hour else 0,
    )


async def set_budget_limits(
    conn: AsyncConnection, tenant_id: uuid.UUID, fingerprint: str, *, daily_limit: int, hourly_limit: int | None
) -> BudgetLimits:
    """Set a key's limits (the operator's `gwm sync budget`); the counters are kept. Tenant set on `conn`."""
    if daily_limit < 0 or (hourly_limit is not None and hourly_limit < 0):
        raise ValueError("limits are not negative")
    await conn.execute(
        pg_insert(SyncKeyBudget)
        .values(tenant_id=tenant_id, key_fingerprint=fingerprint, daily_limit=daily_limit, hourly_limit=hourly_limit)
        .on_conflict_do_update(
            index_elements=["tenant_id", "key_fingerprint"],
            set_={"daily_limit": daily_limit, "hourly_limit": hourly_limit},
        )
    )
    return BudgetLimits(daily_limit=daily_limit, hourly_limit=hourly_limit)


class KeyBudget:
    """One key's budget for sync/calls.py: `reserve(now)` takes a slot; `next_window(now)` says when
    the limit that refused the last reservation opens again."""

    def __init__(
        self, engine: AsyncEngine, tenant_id: uuid.UUID, fingerprint: str, *, hourly_cap: int | None = None
    ) -> None:
        self.engine = engine
        self.tenant_id = tenant_id
        self.fingerprint = fingerprint
        self.hourly_cap = hourly_cap
        self.exhausted: str | None = None

    async def reserve(self, now: datetime.datetime) -> bool:
        self.exhausted = await _reserve(self.engine, self.tenant_id, self.fingerprint, now, hourly_cap=self.hourly_cap)
        return self.exhausted is None

    def next_window(self, now: datetime.datetime) -> datetime.datetime:
        day, hour = _windows(now)
        if self.exhausted == "hour":
            return hour + datetime.timedelta(hours=1)
        return day + datetime.timedelta(days=1)
