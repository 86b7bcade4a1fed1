"""Text extraction jobs: claimed with a lease by the worker loop, parsed in a limited child process.

    step = ExtractionStep(limits=ExtractionLimits(), max_object_bytes=config.max_upload_bytes)
    worker = Worker(services, jobs, side_jobs=[step])   # each run_once also claims and runs extractions
    # the objects are read from `services.storage` (a worker without a document store extracts nothing)
    await step.run_once(worker)                         # the same, alone (tests, `gwm sync --once`)

A job (document_extraction_jobs, migration 0016) exists for every document whose processing_status
is `pending` and whose object the scanner found clean; `gwm_extraction_claim` creates it and leases
due jobs across tenants, counting each claim as an attempt. The worker then, each step in its own
short transaction with the job's tenant set:

1. marks the document `processing` (or finishes the job at once when the document is gone, deleted,
   has no object (`no_object`, the seeded rows) or was already extracted);
2. copies the object to a private temporary file (at most `max_object_bytes`) and runs
   `storage.extract.extract_in_child` on it: RLIMIT_AS, RLIMIT_CPU and a wall deadline;
3. writes the outcome: `extracted_text`, `content_preview` (the first 500 characters, white space
   collapsed), `page_count`, `processing_status` `completed` and the text's chunks
   (document_text_chunks, replacing any earlier ones); or `failed` with `processing_error` naming the
   limit. One event row on the document's trail (`document.text_extracted` /
   `document.text_extraction_failed`). The job gets `finished_at`, its lease is cleared.

The lease is renewed while the child runs. A child killed from outside (SIGKILL: the machine's OOM
killer, an operator) or a worker that dies leaves the job claimed: once its lease has run out it is
claimed again. After `MAX_ATTEMPTS` claims the document is failed ("gave up after ..."), so a file
that kills every worker that touches it ends. Storage trouble (the object cannot be read now) puts
the job back with a delay, not failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import tempfile
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audited import system_unit
from models.db import set_tenant
from models.document_text import DocumentExtractionJob, DocumentTextChunk
from models.documents import Document
from models.enums import ProcessingStatus
from models.unit_of_work import UnitOfWork
from storage.base import DocumentStorage
from storage.errors import StorageUnavailable
from storage.extract import KILLED_PREFIX, Extracted, ExtractionFailed, ExtractionLimits, extract_in_child

if TYPE_CHECKING:
    from sync.worker import Worker

__all__ = [
    "CHUNK_CHARS",
    "CHUNK_OVERLAP",
    "MAX_ATTEMPTS",
    "PROCESS",
    "ExtractionJob",
    "ExtractionStep",
    "Outcome",
    "chunk_text",
    "claim_extractions",
    "content_preview",
    "record_text",
]

_log = logging.getLogger(__name__)

#: The system process named on the rows the extraction writes.
PROCESS = "sync.extraction"
#: About this many characters per chunk; ts_headline over one chunk stays near 0.4 ms.
CHUNK_CHARS = 4_000
#: Consecutive chunks share this many characters, so a phrase across a cut is inside one chunk.
CHUNK_OVERLAP = 200
#: Claims of one job before its document is failed.
MAX_ATTEMPTS = 3
#: How long a job waits after the object could not be read.
STORAGE_RETRY = datetime.timedelta(minutes=5)
_PREVIEW_CHARS = 500
_SPACE = re.compile(r"\s+")
_EXTRACTABLE = frozenset({ProcessingStatus.PENDING.value, ProcessingStatus.PROCESSING.value})


@dataclass(frozen=True, slots=True)
class ExtractionJob:
    """A claimed extraction: the job row, its document and tenant, and the lease this worker holds."""

    job_id: uuid.UUID
    tenant_id: uuid.UUID
    document_id: uuid.UUID
    attempts: int
    claimed_until: datetime.datetime
    worker: str


class Outcome(StrEnum):
    """What became of a job (for logs and tests)."""

    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    RETRY = "retry"  # left for another claim (storage trouble, the child killed from outside, lease lost)


def chunk_text(text_value: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[tuple[int, str]]:
    """(start offset, piece) of `text_value`: pieces of at most `size` characters, cut at white space
    where there is some in the last quarter, each starting `overlap` characters before the previous
    one ended (at white space where possible)."""
    if size <= overlap * 2:
        raise ValueError("the chunk size must be more than twice the overlap")
    pieces: list[tuple[int, str]] = []
    start, length = 0, len(text_value)
    while start < length:
        end = min(start + size, length)
        if end < length:
            cut = max(text_value.rfind(" ", end - size // 4, end), text_value.rfind("\n", end - size // 4, end))
            if cut > start:
                end = cut
        piece = text_value[start:end]
        if piece.strip():
            pieces.append((start, piece))
        if end >= length:
            break
        following = end - overlap
        space = text_value.find(" ", following, end)
        start = space + 1 if space != -1 else following
        start = max(start, end - overlap)
    return pieces


def content_preview(text_value: str) -> str | None:
    """The first 500 characters of the text, white space collapsed; None for no text."""
    collapsed = _SPACE.sub(" ", text_value[: _PREVIEW_CHARS * 8]).strip()
    return collapsed[:_PREVIEW_CHARS] or None


async def claim_extractions(
    engine: AsyncEngine, *, worker: str, now: datetime.datetime, lease: datetime.timedelta, max_jobs: int = 1
) -> list[ExtractionJob]:
    """Create the jobs of pending clean documents, claim up to `max_jobs` due ones, and commit."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                text("SELECT * FROM public.gwm_extraction_claim(:worker, :now, :lease, :max_jobs)"),
                {"worker": worker, "now": now, "lease": max(1, int(lease.total_seconds())), "max_jobs": max_jobs},
            )
        ).all()
    return [
        ExtractionJob(row.job_id, row.tenant_id, row.document_id, row.attempts, row.claimed_until, worker)
        for row in rows
    ]


class ExtractionStep:
    """The extraction work of a worker loop (`Worker(side_jobs=[step])`)."""

    def __init__(
        self,
        storage: DocumentStorage | None = None,
        *,
        limits: ExtractionLimits | None = None,
        max_object_bytes: int = 50 * 1024 * 1024,
        batch: int = 1,
        temp_dir: Path | None = None,
    ) -> None:
        self.storage = storage
        self.limits = limits or ExtractionLimits()
        self.max_object_bytes = max_object_bytes
        self.batch = batch
        self.temp_dir = temp_dir

    def _storage(self, worker: Worker) -> DocumentStorage | None:
        return self.storage if self.storage is not None else worker.services.storage

    async def __call__(self, worker: Worker) -> int:
        return await self.run_once(worker)

    async def run_once(self, worker: Worker) -> int:
        """Claim up to `batch` due extractions and run them; the number run."""
        if self._storage(worker) is None:
            return 0
        engine = worker.services.engine
        jobs = await claim_extractions(
            engine, worker=worker.name, now=worker.clock(), lease=worker.lease, max_jobs=self.batch
        )
        for job in jobs:
            if worker.stopping:  # not started: the lease runs out and another worker takes it
                break
            await self.run(worker, job)
        return len(jobs)

    async def run(self, worker: Worker, job: ExtractionJob) -> Outcome:
        """One claimed job to its end (or back to the queue); the `Outcome`."""
        keeper = asyncio.create_task(self._keep_lease(worker, job))
        try:
            return await self._run(worker, job)
        except Exception:
            _log.exception("extraction of document %s (tenant %s) failed", job.document_id, job.tenant_id)
            return Outcome.RETRY
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_lease(self, worker: Worker, job: ExtractionJob) -> None:
        interval = worker.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with worker.services.engine.begin() as conn:
                    await set_tenant(conn, job.tenant_id)
                    renewed = await conn.scalar(
                        update(DocumentExtractionJob)
                        .where(DocumentExtractionJob.id == job.job_id, DocumentExtractionJob.claimed_by == job.worker)
                        .values(claimed_until=worker.clock() + worker.lease)
                        .returning(DocumentExtractionJob.id)
                    )
                if renewed is None:
                    return
            except Exception:
                _log.exception("renewing the lease of extraction job %s failed", job.job_id)

    async def _run(self, worker: Worker, job: ExtractionJob) -> Outcome:
        services = worker.services
        async with system_unit(services.engine, services.chain, job.tenant_id, process=PROCESS, notify=False) as uow:
            if not await _still_ours(uow.connection, job):
                return Outcome.RETRY
            document = await uow.session.scalar(
                select(Document).where(Document.id == job.document_id).with_for_update()
            )
            if document is None or document.is_deleted or document.processing_status not in _EXTRACTABLE:
                await _finish(uow.connection, job, None)
                return Outcome.SKIPPED
            if job.attempts > MAX_ATTEMPTS:
                reason = f"gave up after {MAX_ATTEMPTS} attempts: the extraction never finished"
                _fail(uow, document, reason)
                await _finish(uow.connection, job, reason)
                return Outcome.FAILED
            key, mime_type = document.storage_key, document.mime_type
            document.processing_status = ProcessingStatus.PROCESSING.value

        try:
            storage = self._storage(worker)
            assert storage is not None  # run_once claims nothing without one
            result: Extracted | ExtractionFailed = await self._extract(storage, key, mime_type)
        except (StorageUnavailable, FileNotFoundError, _TooLarge) as exc:
            return await self._storage_trouble(worker, job, exc)
        except _Killed as exc:
            _log.warning("extraction of %s: %s; retried after the lease", job.document_id, exc)
            return Outcome.RETRY

        async with system_unit(services.engine, services.chain, job.tenant_id, process=PROCESS, notify=False) as uow:
            if not await _still_ours(uow.connection, job):
                return Outcome.RETRY
            document = await uow.session.scalar(
                select(Document).where(Document.id == job.document_id).with_for_update()
            )
            if document is None or document.is_deleted or document.processing_status not in _EXTRACTABLE:
                await _finish(uow.connection, job, None)
                return Outcome.SKIPPED
            if isinstance(result, ExtractionFailed):
                _fail(uow, document, result.reason)
                await _finish(uow.connection, job, result.reason)
                return Outcome.FAILED
            await record_text(uow, document, result)
            await _finish(uow.connection, job, None)
        return Outcome.COMPLETED

    async def _extract(self, storage: DocumentStorage, key: str, mime_type: str) -> Extracted | ExtractionFailed:
        with tempfile.TemporaryDirectory(prefix="gwm-extract-", dir=self.temp_dir) as directory:
            path = Path(directory) / "object"
            size = 0
            with path.open("wb") as sink:
                async for chunk in storage.read(key):
                    size += len(chunk)
                    if size > self.max_object_bytes:
                        raise _TooLarge(f"the object is larger than {self.max_object_bytes} bytes")
                    sink.write(chunk)
            try:
                return await extract_in_child(path, mime_type, self.limits)
            except ExtractionFailed as failed:
                if failed.reason.startswith(KILLED_PREFIX):
                    raise _Killed(failed.reason) from None
                return failed

    async def _storage_trouble(self, worker: Worker, job: ExtractionJob, exc: Exception) -> Outcome:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        if isinstance(exc, _TooLarge | FileNotFoundError):
            # Nothing a retry would change: the object is missing or beyond what the worker reads.
            services = worker.services
            async with system_unit(
                services.engine, services.chain, job.tenant_id, process=PROCESS, notify=False
            ) as uow:
                if not await _still_ours(uow.connection, job):
                    return Outcome.RETRY
                document = await uow.session.scalar(
                    select(Document).where(Document.id == job.document_id).with_for_update()
                )
                message = "the stored object is missing" if isinstance(exc, FileNotFoundError) else str(exc)
                if document is not None:
                    _fail(uow, document, message)
                await _finish(uow.connection, job, message)
            return Outcome.FAILED
        async with worker.services.engine.begin() as conn:
            await set_tenant(conn, job.tenant_id)
            await conn.execute(
                update(DocumentExtractionJob)
                .where(DocumentExtractionJob.id == job.job_id, DocumentExtractionJob.claimed_by == job.worker)
                .values(
                    claimed_by=None, claimed_until=None, last_error=reason,
                    available_at=worker.clock() + STORAGE_RETRY,
                )
            )
        return Outcome.RETRY


class _Killed(Exception):
    """The child was killed from outside: the job is claimed again after its lease."""


class _TooLarge(Exception):
    pass


async def record_text(uow: UnitOfWork, document: Document, result: Extracted) -> int:
    """Store an extraction's result on `document` (locked by `uow`): its text, preview, page count,
    status `completed`, and its chunks in place of any earlier ones; one event row. The chunk count."""
    await uow.connection.execute(delete(DocumentTextChunk).where(DocumentTextChunk.document_id == document.id))
    chunks = chunk_text(result.text)
    document.extracted_text = result.text
    document.content_preview = content_preview(result.text)
    document.page_count = result.page_count
    document.processing_status = ProcessingStatus.COMPLETED.value
    document.processing_error = None
    if chunks:
        await uow.connection.execute(
            insert(DocumentTextChunk),
            [
                {
                    "tenant_id": document.tenant_id, "document_id": document.id, "chunk_index": index,
                    "start_offset": start, "content": piece,
                }
                for index, (start, piece) in enumerate(chunks)
            ],
        )
    uow.record_event(
        "document.text_extracted",
        entity_type="document",
        entity_id=document.id,
        description="text extracted from the stored file",
        details={"characters": len(result.text), "chunks": len(chunks), "page_count": result.page_count},
    )
    return len(chunks)


async def _still_ours(conn: Any, job: ExtractionJob) -> bool:
    claimed_by = await conn.scalar(
        select(DocumentExtractionJob.claimed_by)
        .where(DocumentExtractionJob.id == job.job_id, DocumentExtractionJob.finished_at.is_(None))
        .with_for_update()
    )
    return bool(claimed_by == job.worker)


async def _finish(conn: Any, job: ExtractionJob, error: str | None) -> None:
    await conn.execute(
        update(DocumentExtractionJob)
        .where(DocumentExtractionJob.id == job.job_id)
        .values(claimed_by=None, claimed_until=None, finished_at=text("now()"), last_error=error)
    )


def _fail(uow: Any, document: Document, reason: str) -> None:
    document.processing_status = ProcessingStatus.FAILED.value
    document.processing_error = reason[:2000]
    uow.record_event(
        "document.text_extraction_failed",
        entity_type="document",
        entity_id=document.id,
        description="text extraction failed",
        details={"reason": reason[:2000]},
    )
