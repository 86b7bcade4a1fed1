"""The sync worker: claim due jobs, run each with its tenant, record the outcome, release the lease.

    services = SyncServices(engine=app_engine, chain=chain, secret_box=box, fingerprint_key=fingerprint_key(keys),
                            outbound=OutboundPolicy.from_setting(allow))
    worker = Worker(services, jobs={JobKind.SOURCE_SEARCH: search, ...}, clock=utc_now)
    await worker.run()          # until worker.stop(): the job under way finishes first
    await worker.run_once()     # claim and run what is due now (gwm sync --once, tests)

A job function receives a `JobContext` (the claimed `Job`, the services, the injected clock, the
instant it started, `budget(...)` for the source's key and `renew()` for the lease) and returns a
`JobOutcome` (sync/schedule.py): done, failed (an error, maybe a retry time) or deferred (no
budget: try again at the next window). An exception is a failure: logged, recorded on the row,
and the next poll backs off. The lease is renewed in the background while a job runs (every third
of it); a job that lost its lease (its worker stalled past it and another took the job) is not
released by this worker. Nothing here holds a transaction open across a job: claim, renewal and
release are each their own short transaction (sync/schedule.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from auth.crypto import SecretBox
from auth.outbound import OutboundPolicy
from models.audit_chain import AuditChain
from storage.base import DocumentStorage
from storage.config import StorageConfig
from sync.schedule import (
    DEFAULT_LEASE,
    Job,
    JobKind,
    JobOutcome,
    KeyBudget,
    claim_jobs,
    key_fingerprint,
    release,
    renew_lease,
)

__all__ = [
    "Clock",
    "JobContext",
    "JobFunction",
    "SideJob",
    "SyncServices",
    "Worker",
    "utc_now",
    "worker_name",
]

_log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def worker_name() -> str:
    """host:pid:random, unique per worker (at most 200 characters: sync_schedules.claimed_by)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class SyncServices:
    """What jobs need from the process: the server role's engine, the audit chain, the secret box
    (source credentials), the fingerprint key of API keys, and the outbound policy."""

    engine: AsyncEngine
    chain: AuditChain
    secret_box: SecretBox
    fingerprint_key: bytes
    outbound: OutboundPolicy
    # The document store SAM.gov attachments are taken into (sync/attachments.py) and its limits;
    # None: attachments are not fetched.
    storage: DocumentStorage | None = None
    storage_config: StorageConfig = field(default_factory=StorageConfig)


@dataclass
class JobContext:
    """One claimed job as its function sees it."""

    job: Job
    services: SyncServices
    clock: Clock
    started_at: datetime.datetime
    _worker: Worker = field(repr=False)

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.job.tenant_id

    def now(self) -> datetime.datetime:
        return self.clock()

    def key_fingerprint(self, api_key: str) -> str:
        return key_fingerprint(self.services.fingerprint_key, api_key)

    def budget(self, api_key: str, *, hourly_cap: int | None = None) -> KeyBudget:
        """The budget of `api_key` in the job's tenant (sync/calls.py's `Budget`)."""
        return KeyBudget(self.services.engine, self.job.tenant_id, self.key_fingerprint(api_key), hourly_cap=hourly_cap)

    async def renew(self) -> bool:
        """Extend the lease now; False when the job is no longer this worker's (stop working on it)."""
        return await self._worker.renew(self)


JobFunction = Callable[[JobContext], Awaitable[JobOutcome]]
#: Other leased work the loop does after its sync jobs (sync/extraction.py's ExtractionStep): given
#: the worker (its name, clock, lease, services), it claims and runs its own jobs; the number run.
SideJob = Callable[["Worker"], Awaitable[int]]


class Worker:
    """Claims due jobs and runs them one after the other until stopped."""

    def __init__(
        self,
        services: SyncServices,
        jobs: Mapping[JobKind, JobFunction],
        *,
        name: str | None = None,
        clock: Clock = utc_now,
        lease: datetime.timedelta = DEFAULT_LEASE,
        idle_seconds: float = 5.0,
        batch: int = 1,
        side_jobs: Sequence[SideJob] = (),
    ) -> None:
        if lease < datetime.timedelta(seconds=3):
            raise ValueError("the lease must be at least 3 seconds")
        self.services = services
        self.jobs = dict(jobs)
        self.name = name or worker_name()
        self.clock = clock
        self.lease = lease
        self.idle_seconds = idle_seconds
        self.batch = batch
        self.side_jobs = tuple(side_jobs)
        self._stop = asyncio.Event()
        self._lost: set[uuid.UUID] = set()

    def stop(self) -> None:
        """Stop after the job under way (graceful); jobs claimed but not started are released."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Claim and run jobs until stopped; idle for `idle_seconds` when nothing is due."""
        _log.info("sync worker %s started", self.name)
        while not self._stop.is_set():
            try:
                ran = await self.run_once()
            except Exception:  # the database went away, say: log it, wait, and try again
                _log.exception("sync worker %s: claiming failed", self.name)
                ran = 0
            if ran == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.idle_seconds)
        _log.info("sync worker %s stopped", self.name)

    async def run_once(self) -> int:
        """Claim up to `batch` due jobs and run them, then the side jobs' due work; the number run."""
        claimed = await claim_jobs(
            self.services.engine, worker=self.name, now=self.clock(), lease=self.lease, max_jobs=self.batch
        )
        ran = 0
        for job in claimed:
            if self._stop.is_set():  # not started: give it back at once
                await release(
                    self.services.engine, self.services.chain, job, JobOutcome.deferred(self.clock()),
                    started_at=self.clock(), now=self.clock(),
                )
                continue
            await self._run(job)
            ran += 1
        for side_job in self.side_jobs:
            if self._stop.is_set():
                break
            ran += await side_job(self)
        return ran

    async def renew(self, ctx: JobContext) -> bool:
        renewed = await renew_lease(
            self.services.engine, self.services.chain, ctx.job, now=self.clock(), lease=self.lease
        )
        if renewed is None:
            self._lost.add(ctx.job.job_id)
            return False
        ctx.job = renewed
        return True

    async def _keep_lease(self, ctx: JobContext) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.renew(ctx):
                    _log.warning("sync worker %s lost its lease on %s %s", self.name, ctx.job.kind, ctx.job.job_id)
                    return
            except Exception:
                _log.exception("sync worker %s: renewing the lease of %s failed", self.name, ctx.job.job_id)

    async def _run(self, job: Job) -> None:
        started = self.clock()
        ctx = JobContext(job=job, services=self.services, clock=self.clock, started_at=started, _worker=self)
        function = self.jobs.get(job.kind)
        keeper = asyncio.create_task(self._keep_lease(ctx))
        try:
            if function is None:
                outcome = JobOutcome.failed(f"no job function for {job.kind}")
            else:
                try:
                    outcome = await function(ctx)
                except Exception as exc:
                    _log.exception("sync job %s %s (tenant %s) failed", job.kind, job.job_id, job.tenant_id)
                    outcome = JobOutcome.failed(f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if job.job_id in self._lost:
            self._lost.discard(job.job_id)
            return
        released = await release(
            self.services.engine, self.services.chain, ctx.job, outcome, started_at=started, now=self.clock()
        )
        if not released:
            _log.warning("sync worker %s: %s %s was taken over before its release", self.name, job.kind, job.job_id)
