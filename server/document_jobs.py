"""Document jobs: the malware scan of new objects and the purge of soft-deleted ones.

Both run per tenant as the tenant's system user (auth/audited.py `system_unit`), one unit of work
per document, so each verdict and each purge commits with its own audit row (`document.scanned`,
`document.infected`, `document.purged`) and one document's failure leaves the others' work alone.

- `scan_quarantined`: every quarantined document that has an object (not `no_object`, not purged) is
  read from storage through the configured `Scanner` (storage/scan.py); clean -> `clean`, a finding
  -> `infected` (the object stays, unreadable: nothing serves a document that is not clean). A
  scanner that cannot answer leaves the row quarantined for the next run (`ScanUnavailable`); an
  object that cannot be read likewise. The row is locked and checked again before the verdict is
  written (a new version or a concurrent run may have changed it meanwhile).
- `purge_deleted`: a document soft-deleted for longer than the retention (GWM_DOCUMENT_PURGE_DAYS)
  and not under a legal hold loses its object and its text chunks (document_text_chunks); the row
  stays, with `purged_at`, so its history and access logs remain. The object is deleted before the
  row is marked: a run that fails in between finds the row again and the delete of a missing object
  succeeds.

`gwm jobs run` calls `run_document_jobs`; the worker loop (`gwm sync`, `gwm serve --with-sync`) runs
`scan_side_job` after its sync jobs, so a new upload is scanned within seconds: it finds quarantined
documents across tenants through `gwm_scan_pending()` (migration 0015; ids only) and scans each in
its own tenant as the jobs do.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import RequestMeta
from auth.audited import system_unit
from models.audit_chain import AuditChain
from models.db import set_tenant
from models.documents import Document
from models.enums import ProcessingStatus, ScanStatus
from models.errors import NotFound
from storage.base import DocumentStorage
from storage.errors import StorageUnavailable
from storage.scan import Scanner, ScanUnavailable
from sync.worker import Worker

__all__ = ["DocumentJobsReport", "purge_deleted", "run_document_jobs", "scan_quarantined", "scan_side_job"]

_log = logging.getLogger(__name__)
#: The system process recorded on the jobs' audit and history rows.
SCAN_PROCESS = "documents.scan"
PURGE_PROCESS = "documents.purge"


@dataclass
class DocumentJobsReport:
    """What the document jobs did over the tenants they visited."""

    scanned_clean: int = 0
    scanned_infected: int = 0
    scan_deferred: int = 0
    purged: int = 0
    failed: list[uuid.UUID] = field(default_factory=list)

    def __str__(self) -> str:
        failed = f"; FAILED for {len(self.failed)} document(s)" if self.failed else ""
        return (
            f"documents: {self.scanned_clean} scanned clean, {self.scanned_infected} infected,"
            f" {self.scan_deferred} left quarantined (scanner or storage unavailable), {self.purged} purged{failed}"
        )


def _meta(job: str) -> RequestMeta:
    return RequestMeta(request_id=f"job-{job}-{uuid.uuid4()}", endpoint="gwm jobs run", method="JOB")


async def _tenants(engine: AsyncEngine) -> list[uuid.UUID]:
    async with engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
    return ids


async def _candidates(engine: AsyncEngine, tenant_id: uuid.UUID, sql: str, **params: object) -> list[uuid.UUID]:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        ids = list((await conn.execute(text(sql), params)).scalars())
        await conn.rollback()
    return ids


_QUARANTINED = """
SELECT id FROM documents
 WHERE scan_status = 'quarantined' AND purged_at IS NULL AND processing_status <> 'no_object'
 ORDER BY created_at
 LIMIT :limit
"""


async def scan_quarantined(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    scanner: Scanner,
    *,
    tenant_ids: list[uuid.UUID] | None = None,
    limit: int = 100,
    report: DocumentJobsReport | None = None,
) -> DocumentJobsReport:
    """Scan up to `limit` quarantined documents per tenant (every tenant unless `tenant_ids`)."""
    report = report or DocumentJobsReport()
    for tenant_id in tenant_ids if tenant_ids is not None else await _tenants(engine):
        for document_id in await _candidates(engine, tenant_id, _QUARANTINED, limit=limit):
            try:
                await _scan_one(engine, chain, storage, scanner, tenant_id, document_id, report)
            except Exception:
                _log.exception("scanning document %s of tenant %s failed", document_id, tenant_id)
                report.failed.append(document_id)
    return report


async def _scan_one(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    scanner: Scanner,
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    report: DocumentJobsReport,
) -> None:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        key = await conn.scalar(text("SELECT storage_key FROM documents WHERE id = :id"), {"id": document_id})
        await conn.rollback()
    if key is None:
        return
    try:
        verdict = await scanner.scan(storage.read(key))
    except (ScanUnavailable, StorageUnavailable, FileNotFoundError, ValueError) as exc:
        # ValueError: a key this store cannot hold (not built from ids), e.g. a row written elsewhere.
        _log.warning("document %s stays quarantined: %s", document_id, exc)
        report.scan_deferred += 1
        return
    async with system_unit(engine, chain, tenant_id, process=SCAN_PROCESS, meta=_meta("scan")) as uow:
        try:
            document = await uow.lock(Document, document_id)
        except NotFound:  # gone meanwhile (its tenant or project deleted)
            return
        if document.scan_status != ScanStatus.QUARANTINED or document.storage_key != key:
            return  # another run decided, or the row now names another object
        status = ScanStatus.CLEAN if verdict.clean else ScanStatus.INFECTED
        uow.assign(document, {"scan_status": status.value, "scan_reason": verdict.reason})
        document.scanned_at = func.now()
        uow.label(
            document,
            "document.scanned" if verdict.clean else "document.infected",
            f"malware scan ({scanner.name}): {verdict.reason or status.value}",
        )
        await uow.flush()
    if verdict.clean:
        report.scanned_clean += 1
    else:
        report.scanned_infected += 1


def scan_side_job(scanner: Scanner, *, batch: int = 20) -> Callable[[Worker], Awaitable[int]]:
    """The worker loop's scan step (sync/worker.py `Worker(side_jobs=[...])`): up to `batch` quarantined
    documents of any tenant, through the worker's engine (gwm_app), chain and document store; the
    number given a verdict (0 when nothing was due, or the scanner cannot answer: the loop idles)."""

    async def step(worker: Worker) -> int:
        services = worker.services
        if services.storage is None:
            return 0
        async with services.engine.connect() as conn:
            pending = (
                await conn.execute(
                    text("SELECT tenant_id, document_id FROM gwm_scan_pending(:n)"), {"n": batch}
                )
            ).all()
            await conn.rollback()
        report = DocumentJobsReport()
        for tenant_id, document_id in pending:
            if worker.stopping:
                break
            try:
                await _scan_one(
                    services.engine, services.chain, services.storage, scanner, tenant_id, document_id, report
                )
            except Exception:
                _log.exception("scanning document %s of tenant %s failed", document_id, tenant_id)
        return report.scanned_clean + report.scanned_infected

    return step


_PURGE_DUE = """
SELECT id FROM documents
 WHERE is_deleted AND purged_at IS NULL AND NOT legal_hold AND deleted_at <= :cutoff
 ORDER BY deleted_at
 LIMIT :limit
"""


async def purge_deleted(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    *,
    retention: timedelta,
    now: datetime | None = None,
    tenant_ids: list[uuid.UUID] | None = None,
    limit: int = 1000,
    report: DocumentJobsReport | None = None,
) -> DocumentJobsReport:
    """Delete the objects of documents soft-deleted `retention` ago or earlier and not on hold."""
    report = report or DocumentJobsReport()
    cutoff = (now or datetime.now(UTC)) - retention
    for tenant_id in tenant_ids if tenant_ids is not None else await _tenants(engine):
        for document_id in await _candidates(engine, tenant_id, _PURGE_DUE, cutoff=cutoff, limit=limit):
            try:
                if await _purge_one(engine, chain, storage, tenant_id, document_id, cutoff, retention):
                    report.purged += 1
            except Exception:
                _log.exception("purging document %s of tenant %s failed", document_id, tenant_id)
                report.failed.append(document_id)
    return report


async def _purge_one(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    cutoff: datetime,
    retention: timedelta,
) -> bool:
    async with system_unit(engine, chain, tenant_id, process=PURGE_PROCESS, meta=_meta("purge")) as uow:
        try:
            document = await uow.lock(Document, document_id)
        except NotFound:
            return False
        # Checked again under the lock: restored, put on hold or purged since the lookup.
        if (
            not document.is_deleted
            or document.legal_hold
            or document.purged_at is not None
            or document.deleted_at is None
            or document.deleted_at > cutoff
        ):
            return False
        if document.processing_status != ProcessingStatus.NO_OBJECT:
            try:
                await storage.delete(document.storage_key)
            except ValueError:  # a key this store cannot hold: nothing of ours to delete, left for a person
                _log.warning("document %s: key %r is not one of this store's; not purged", document_id,
                             document.storage_key)
                return False
        # The text extracted from the file goes with it (derived data, not audited: W11).
        await uow.connection.execute(
            text("DELETE FROM document_text_chunks WHERE document_id = :d"), {"d": document_id}
        )
        document.purged_at = func.now()
        uow.label(
            document,
            "document.purged",
            f"file deleted from storage {retention.days} day(s) after the document was deleted"
            f" (deleted {document.deleted_at.isoformat()}); the record and its history stay",
        )
        await uow.flush()
    return True


async def run_document_jobs(
    engine: AsyncEngine,
    chain: AuditChain,
    storage: DocumentStorage,
    scanner: Scanner,
    *,
    retention: timedelta,
    now: datetime | None = None,
) -> DocumentJobsReport:
    """`gwm jobs run`: scan what is quarantined, then purge what is due, in every tenant."""
    tenants = await _tenants(engine)
    report = await scan_quarantined(engine, chain, storage, scanner, tenant_ids=tenants)
    return await purge_deleted(engine, chain, storage, retention=retention, now=now, tenant_ids=tenants, report=report)
