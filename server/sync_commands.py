"""`gwm sync` (workers), `gwm sync budget` (a key's limits) and the worker of `gwm serve --with-sync`.

Workers connect as the server's role (gwm_app): jobs are claimed through `gwm_sync_claim` and run
with their tenant set (sync/worker.py). The job functions come from `sync.jobs:JOBS` unless
`--jobs module:attribute` names another table (a deployment's own jobs, or a test's).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import select

from auth.crypto import SecretBox
from auth.outbound import OutboundPolicy
from models.audit_chain import AuditChain
from models.db import create_engine, set_tenant
from models.external_data import ExternalOpportunitySource
from server.settings import Settings, SettingsError
from storage import open_storage
from sync.schedule import BudgetLimits, JobKind, fingerprint_key, key_fingerprint, set_budget_limits
from sync.worker import JobFunction, SideJob, SyncServices, Worker

__all__ = ["DEFAULT_JOBS", "load_jobs", "run_workers", "set_budget", "sync_services", "worker_in_process"]

_log = logging.getLogger(__name__)
DEFAULT_JOBS = "sync.jobs:JOBS"


def load_jobs(spec: str = DEFAULT_JOBS) -> Mapping[JobKind, JobFunction]:
    """The job table named `module:attribute`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SettingsError(f"--jobs must be module:attribute, not {spec!r}")
    try:
        table: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SettingsError(f"cannot load the sync jobs {spec!r}: {exc}") from None
    if not isinstance(table, Mapping) or not all(isinstance(kind, JobKind) for kind in table):
        raise SettingsError(f"{spec} is not a mapping of JobKind to job functions")
    return table


def _document_side_jobs(settings: Settings) -> list[SideJob]:
    """The document work a worker loop does after its sync jobs: the malware scan of new files, then the
    text extraction of the clean ones (sync/extraction.py)."""
    from server.document_jobs import scan_side_job
    from storage.extract import ExtractionLimits
    from storage.scan import scanner_from_setting
    from sync.extraction import ExtractionStep

    config = settings.storage_config()
    limits = ExtractionLimits(
        max_pages=settings.extract_max_pages,
        max_decompressed_bytes=settings.extract_max_unpacked_bytes,
        memory_bytes=settings.extract_memory_bytes,
        cpu_seconds=settings.extract_cpu_seconds,
        wall_seconds=float(settings.extract_wall_seconds),
    )
    extraction = ExtractionStep(limits=limits, max_object_bytes=config.max_upload_bytes, temp_dir=config.temp_dir)
    return [scan_side_job(scanner_from_setting(settings.scan_clamd)), extraction]


@contextlib.asynccontextmanager
async def sync_services(settings: Settings, *, pool_size: int = 4) -> AsyncIterator[SyncServices]:
    """The services of workers, on settings whose database and keys are resolved."""
    if settings.app_database_url is None or settings.secret_keys is None or settings.audit_keys is None:
        raise SettingsError("the sync workers need the database URLs, GWM_SECRET_KEYS and GWM_AUDIT_KEYS")
    engine = create_engine(
        settings.app_database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        application_name="gwm-sync",
    )
    # the document store SAM.gov attachments are taken into (sync/attachments.py)
    storage_config = settings.storage_config()
    storage = open_storage(storage_config, settings.public_url)
    try:
        yield SyncServices(
            engine=engine,
            chain=AuditChain.from_setting(settings.audit_keys),
            secret_box=SecretBox.from_setting(settings.secret_keys),
            fingerprint_key=fingerprint_key(settings.secret_keys),
            outbound=OutboundPolicy.from_setting(settings.outbound_allow),
            storage=storage,
            storage_config=storage_config,
        )
    finally:
        await storage.aclose()
        await engine.dispose()


async def run_workers(
    settings: Settings,
    *,
    jobs: Mapping[JobKind, JobFunction],
    concurrency: int = 1,
    once: bool = False,
    lease: datetime.timedelta,
    idle_seconds: float = 5.0,
) -> int:
    """`concurrency` workers in this process until SIGINT/SIGTERM (graceful: jobs under way finish),
    or with `once` until nothing is due. Returns the number of jobs run."""
    async with sync_services(settings, pool_size=max(2, concurrency + 1)) as services:
        workers = [
            Worker(services, jobs, lease=lease, idle_seconds=idle_seconds, side_jobs=_document_side_jobs(settings))
            for _ in range(max(1, concurrency))
        ]
        def stop_all() -> None:
            for worker in workers:
                worker.stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop_all)
        if once:
            totals = await asyncio.gather(*(_drain(w) for w in workers))
            return sum(totals)
        await asyncio.gather(*(w.run() for w in workers))
        return 0


async def _drain(worker: Worker) -> int:
    total = 0
    while not worker.stopping:
        ran = await worker.run_once()
        if ran == 0:
            break
        total += ran
    return total


async def set_budget(
    settings: Settings, tenant: str, source_id: uuid.UUID, *, daily_limit: int, hourly_limit: int | None
) -> tuple[str, BudgetLimits]:
    """Set the limits of the budget of a source's API key (as the schema owner, the tenant set)."""
    from resolvers.external_data.mutations import open_credentials
    from server.user_commands import CommandError
    from server.user_commands import _tenant as find_tenant

    if settings.database_url is None or settings.secret_keys is None:
        raise SettingsError("gwm sync budget needs the database and GWM_SECRET_KEYS")
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0, application_name="gwm-sync-budget")
    try:
        try:
            tenant_id = (await find_tenant(engine, tenant)).tenant_id
        except CommandError as exc:
            raise SettingsError(str(exc)) from None
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            source = await conn.execute(
                select(ExternalOpportunitySource.__table__).where(ExternalOpportunitySource.id == source_id)
            )
            row = source.first()
            if row is None:
                raise SettingsError(f"no source {source_id} in tenant {tenant}")
            credentials = open_credentials(SecretBox.from_setting(settings.secret_keys), _as_source(dict(row._mapping)))
            api_key = credentials.get("api_key")
            if not api_key:
                raise SettingsError(f"source {source_id} has no api_key in its credentials")
            fingerprint = key_fingerprint(fingerprint_key(settings.secret_keys), api_key)
            limits = await set_budget_limits(
                conn, tenant_id, fingerprint, daily_limit=daily_limit, hourly_limit=hourly_limit
            )
    finally:
        await engine.dispose()
    return fingerprint, limits


def _as_source(values: Mapping[str, Any]) -> ExternalOpportunitySource:
    return ExternalOpportunitySource(
        id=values["id"], tenant_id=values["tenant_id"], api_credentials_encrypted=values["api_credentials_encrypted"]
    )


@contextlib.asynccontextmanager
async def worker_in_process(
    settings: Settings, *, jobs: Mapping[JobKind, JobFunction], lease: datetime.timedelta
) -> AsyncIterator[Worker]:
    """One worker running beside the server in this event loop (`gwm serve --with-sync`); stopped
    gracefully on leaving."""
    async with sync_services(settings, pool_size=2) as services:
        worker = Worker(services, jobs, lease=lease, side_jobs=_document_side_jobs(settings))
        task = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await task
