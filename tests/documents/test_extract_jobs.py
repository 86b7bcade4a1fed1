"""sync/extraction.py: extraction jobs claimed with a lease by the worker loop. Text, PDF and DOCX
documents end `completed` with their text, preview, page count and chunks; a zip bomb and a PDF over
the page limit end `failed` with the limit named while the worker goes on with the next job; a job
whose child process is killed is claimed again once its lease has run out; quarantined, deleted and
seeded (`no_object`) documents are never extracted.

The claim is cross-tenant, so these tests run on a database of their own (tests/sync's `sync_db`).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from auth.crypto import SecretBox
from auth.outbound import OutboundPolicy
from models.db import set_tenant
from storage.base import DocumentStorage
from storage.extract import DOCX_TYPE, ExtractionLimits
from storage.keys import object_key
from storage.local import LocalStorage
from storage.s3 import S3Storage
from storage.signing import Signer
from sync.extraction import CHUNK_CHARS, ExtractionStep, Outcome, chunk_text, claim_extractions
from sync.schedule import fingerprint_key
from sync.worker import SyncServices, Worker
from tests.documents.conftest import TEST_SIGNING_KEY
from tests.documents.text_samples import docx_bomb, docx_with_text, pdf_with_pages
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.factories import make
from tests.sync import schedule_support
from tests.sync.schedule_support import SECRET_KEYS, SyncDb, new_tenant

sync_db = schedule_support.sync_db  # the fixture: a database of this module's own

PDF = "application/pdf"
LEASE = datetime.timedelta(seconds=30)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


def _storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "documents", signer=Signer(TEST_SIGNING_KEY), public_url="http://127.0.0.1:8000")


def _worker(db: SyncDb, step: ExtractionStep, clock: Clock) -> Worker:
    services = SyncServices(
        engine=db.app,
        chain=TEST_AUDIT_CHAIN,
        secret_box=SecretBox.from_setting(SECRET_KEYS),
        fingerprint_key=fingerprint_key(SECRET_KEYS),
        outbound=OutboundPolicy.from_setting(None),
    )
    return Worker(services, {}, clock=clock, lease=LEASE, side_jobs=[step])


async def _document(
    db: SyncDb, tenant: TenantRef, storage: DocumentStorage, tmp_path: Path, data: bytes | None, mime_type: str,
    **columns: Any,
) -> uuid.UUID:
    document_id = uuid.uuid4()
    key = storage.key_for(object_key(tenant.id, None, document_id, document_id))
    if data is not None:
        source = tmp_path / f"{document_id}.in"
        source.write_bytes(data)
        await storage.put_file(key, source, content_type=mime_type)
    values: dict[str, Any] = {"scan_status": "clean", "processing_status": "pending", **columns}
    async with db.owner.begin() as conn:
        await set_tenant(conn, tenant.id)
        await make(
            conn, "documents", tenant, id=document_id, storage_key=key, file_size_bytes=len(data or b""),
            mime_type=mime_type, original_filename="file", storage_provider=storage.provider, **values,
        )
    return document_id


async def _row(db: SyncDb, tenant: TenantRef, sql: str, **params: Any) -> Any:
    async with db.owner.connect() as conn:
        await set_tenant(conn, tenant.id)
        return (await conn.execute(text(sql), params)).one()


async def _document_row(db: SyncDb, tenant: TenantRef, document_id: uuid.UUID) -> Any:
    return await _row(
        db, tenant,
        "SELECT processing_status, processing_error, page_count, content_preview, length(extracted_text) AS chars,"
        " extracted_text, (SELECT count(*) FROM document_text_chunks c WHERE c.document_id = d.id) AS chunks"
        " FROM documents d WHERE d.id = :id",
        id=document_id,
    )


async def _events(db: SyncDb, tenant: TenantRef, document_id: uuid.UUID) -> list[str]:
    async with db.owner.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = await conn.execute(
            text("SELECT action_type FROM audit_logs WHERE entity_id = :id ORDER BY seq"), {"id": document_id}
        )
        return [r.action_type for r in rows]


async def _run_until_idle(worker: Worker) -> int:
    total = 0
    while ran := await worker.run_once():
        total += ran
    return total


def test_chunks_cover_the_text_and_overlap_at_white_space() -> None:
    words = " ".join(f"w{n}" for n in range(5_000))
    pieces = chunk_text(words)
    assert all(len(piece) <= CHUNK_CHARS for _, piece in pieces)
    assert words.startswith(pieces[0][1]) and words.endswith(pieces[-1][1])
    for (start, piece), (next_start, _) in itertools.pairwise(pieces):
        assert words[start : start + len(piece)] == piece
        assert next_start < start + len(piece)  # overlaps the previous piece
        assert words[next_start - 1] == " "  # starts at a word
    assert chunk_text("") == [] and chunk_text("   ") == []


async def test_text_pdf_and_docx_documents_are_extracted_and_others_left_alone(
    sync_db: SyncDb, tmp_path: Path
) -> None:
    db = sync_db
    tenant = await new_tenant(db)
    storage = _storage(tmp_path)
    filler = ("Lorem ipsum dolor sit amet consectetur. " * 25 + "\n") * 5_000  # about 5 MB
    tail = "Section H.12: the contractor shall maintain CMMC Level 2 certification."
    big_text = await _document(db, tenant, storage, tmp_path, (filler + tail).encode(), "text/plain")
    pdf = await _document(
        db, tenant, storage, tmp_path, pdf_with_pages(["Cover", "Past performance of the incumbent"]), PDF
    )
    docx = await _document(db, tenant, storage, tmp_path, docx_with_text("Volume II technical approach"), DOCX_TYPE)
    quarantined = await _document(
        db, tenant, storage, tmp_path, b"not yet scanned", "text/plain", scan_status="quarantined"
    )
    deleted = await _document(db, tenant, storage, tmp_path, b"gone", "text/plain", is_deleted=True)
    seeded = await _document(db, tenant, storage, tmp_path, None, "text/plain", processing_status="no_object")

    worker = _worker(db, ExtractionStep(storage, temp_dir=tmp_path), Clock())
    assert await _run_until_idle(worker) == 3

    row = await _document_row(db, tenant, big_text)
    assert row.processing_status == "completed" and row.processing_error is None
    assert row.chars == len(filler + tail) and row.extracted_text.endswith(tail)
    assert row.chunks > 1000 and row.page_count is None
    assert row.content_preview.startswith("Lorem ipsum dolor sit amet") and len(row.content_preview) == 500
    row = await _document_row(db, tenant, pdf)
    assert (row.processing_status, row.page_count, row.chunks) == ("completed", 2, 1)
    assert "Past performance of the incumbent" in row.extracted_text
    row = await _document_row(db, tenant, docx)
    assert (row.processing_status, row.chunks) == ("completed", 1)
    assert row.content_preview == "Volume II technical approach table cell"
    for untouched, status in ((quarantined, "pending"), (deleted, "pending"), (seeded, "no_object")):
        row = await _document_row(db, tenant, untouched)
        assert (row.processing_status, row.chars, row.chunks) == (status, None, 0)
    assert await _events(db, tenant, pdf) == ["document.text_extracted"]
    assert await _events(db, tenant, seeded) == []
    async with db.owner.connect() as conn:
        await set_tenant(conn, tenant.id)
        jobs = {r.document_id: r for r in await conn.execute(text("SELECT * FROM document_extraction_jobs"))}
    assert set(jobs) == {big_text, pdf, docx}
    assert all(j.finished_at is not None and j.claimed_by is None and j.attempts == 1 for j in jobs.values())


async def test_a_zip_bomb_and_a_pdf_over_the_page_limit_fail_and_the_worker_goes_on(
    sync_db: SyncDb, tmp_path: Path
) -> None:
    db = sync_db
    tenant = await new_tenant(db)
    storage = _storage(tmp_path)
    bomb = await _document(db, tenant, storage, tmp_path, docx_bomb(48 * 1024 * 1024), DOCX_TYPE)
    long_pdf = await _document(db, tenant, storage, tmp_path, pdf_with_pages([f"p{n}" for n in range(8)]), PDF)
    after = await _document(db, tenant, storage, tmp_path, b"Oral presentation schedule", "text/plain")
    limits = ExtractionLimits(max_pages=5, max_decompressed_bytes=4 * 1024 * 1024, wall_seconds=60)
    worker = _worker(db, ExtractionStep(storage, limits=limits, temp_dir=tmp_path), Clock())

    async with asyncio.timeout(120):  # a generous deadline: the machine is shared
        assert await _run_until_idle(worker) == 3

    row = await _document_row(db, tenant, bomb)
    assert row.processing_status == "failed" and row.chars is None and row.chunks == 0
    assert row.processing_error.startswith("decompressed size limit: the DOCX inflates to ")
    row = await _document_row(db, tenant, long_pdf)
    assert (row.processing_status, row.processing_error) == ("failed", "page limit: 8 pages, the limit is 5")
    assert await _events(db, tenant, long_pdf) == ["document.text_extraction_failed"]
    row = await _document_row(db, tenant, after)
    assert (row.processing_status, row.extracted_text) == ("completed", "Oral presentation schedule")
    failed_job = await _row(
        db, tenant, "SELECT finished_at, last_error FROM document_extraction_jobs WHERE document_id = :id", id=bomb
    )
    assert failed_job.finished_at is not None and failed_job.last_error.startswith("decompressed size limit")


def _children_reading(directory: Path) -> Iterator[int]:
    """Pids of extraction children whose input lies under `directory`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"storage.extract" in command and any(part.startswith(str(directory).encode()) for part in command):
            yield int(entry.name)


async def test_a_job_whose_child_is_killed_is_claimed_again_after_its_lease(sync_db: SyncDb, tmp_path: Path) -> None:
    db = sync_db
    tenant = await new_tenant(db)
    storage = _storage(tmp_path)
    slow = pdf_with_pages([f"page {n} " + "lorem ipsum " * 30 for n in range(1500)] + ["the final clause"])
    document_id = await _document(db, tenant, storage, tmp_path, slow, PDF)
    clock = Clock()
    work = tmp_path / "work"
    work.mkdir()
    step = ExtractionStep(storage, temp_dir=work)
    worker = _worker(db, step, clock)

    jobs = await claim_extractions(db.app, worker=worker.name, now=clock(), lease=LEASE)
    assert [j.document_id for j in jobs] == [document_id]
    running = asyncio.create_task(step.run(worker, jobs[0]))
    async with asyncio.timeout(60):
        while not (pids := list(_children_reading(work))):  # noqa: ASYNC110 - polling /proc, no event to wait on
            await asyncio.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)  # as the OOM killer would
    assert await running == Outcome.RETRY

    job = await _row(db, tenant, "SELECT * FROM document_extraction_jobs WHERE document_id = :id", id=document_id)
    assert (job.claimed_by, job.finished_at, job.attempts) == (worker.name, None, 1)
    assert (await _document_row(db, tenant, document_id)).processing_status == "processing"
    other = "another-worker"
    assert await claim_extractions(db.app, worker=other, now=clock(), lease=LEASE) == []  # the lease holds

    clock.now += LEASE + datetime.timedelta(seconds=1)
    async with asyncio.timeout(180):
        assert await _run_until_idle(_worker(db, ExtractionStep(storage, temp_dir=work), clock)) == 1
    row = await _document_row(db, tenant, document_id)
    assert (row.processing_status, row.page_count) == ("completed", 1501)
    assert row.extracted_text.endswith("the final clause")
    job = await _row(db, tenant, "SELECT * FROM document_extraction_jobs WHERE document_id = :id", id=document_id)
    assert job.attempts == 2 and job.finished_at is not None


async def test_a_job_claimed_too_often_gives_up(sync_db: SyncDb, tmp_path: Path) -> None:
    db = sync_db
    tenant = await new_tenant(db)
    storage = _storage(tmp_path)
    document_id = await _document(db, tenant, storage, tmp_path, b"never finishes", "text/plain")
    clock = Clock()
    for _ in range(3):  # three workers each died holding it
        assert len(await claim_extractions(db.app, worker="dead", now=clock(), lease=LEASE)) == 1
        clock.now += LEASE + datetime.timedelta(seconds=1)
    assert await _run_until_idle(_worker(db, ExtractionStep(storage, temp_dir=tmp_path), clock)) == 1
    row = await _document_row(db, tenant, document_id)
    assert row.processing_status == "failed"
    assert row.processing_error == "gave up after 3 attempts: the extraction never finished"


async def test_a_missing_object_fails_the_document(sync_db: SyncDb, tmp_path: Path) -> None:
    db = sync_db
    tenant = await new_tenant(db)
    storage = _storage(tmp_path)
    document_id = await _document(db, tenant, storage, tmp_path, None, "text/plain")
    assert await _run_until_idle(_worker(db, ExtractionStep(storage, temp_dir=tmp_path), Clock())) == 1
    row = await _document_row(db, tenant, document_id)
    assert (row.processing_status, row.processing_error) == ("failed", "the stored object is missing")


@pytest.mark.parametrize("lease_seconds", [0])
async def test_the_claim_refuses_bad_arguments(sync_db: SyncDb, lease_seconds: int) -> None:
    with pytest.raises(Exception, match="a positive lease"):
        await claim_extractions(
            sync_db.app, worker="w", now=datetime.datetime.now(datetime.UTC),
            lease=datetime.timedelta(seconds=lease_seconds), max_jobs=0,
        )


async def test_the_worker_loop_scans_a_new_file_then_extracts_it_and_never_an_infected_one(
    sync_db: SyncDb, tmp_path: Path
) -> None:
    from server.document_jobs import scan_side_job
    from tests.documents.lifecycle_support import EICAR, FakeScanner

    db = sync_db
    tenant = await new_tenant(db)
    storage = _storage(tmp_path)
    new = await _document(db, tenant, storage, tmp_path, b"Teaming agreement draft", "text/plain",
                          scan_status="quarantined")
    infected = await _document(db, tenant, storage, tmp_path, b"note " + EICAR, "text/plain",
                               scan_status="quarantined")
    services = SyncServices(
        engine=db.app, chain=TEST_AUDIT_CHAIN, secret_box=SecretBox.from_setting(SECRET_KEYS),
        fingerprint_key=fingerprint_key(SECRET_KEYS), outbound=OutboundPolicy.from_setting(None), storage=storage,
    )
    worker = Worker(services, {}, clock=Clock(), lease=LEASE,
                    side_jobs=[scan_side_job(FakeScanner()), ExtractionStep(temp_dir=tmp_path)])

    assert await worker.run_once() == 3  # two verdicts, then one extraction in the same pass
    row = await _document_row(db, tenant, new)
    assert (row.processing_status, row.extracted_text) == ("completed", "Teaming agreement draft")
    row = await _document_row(db, tenant, infected)
    assert (row.processing_status, row.chars, row.chunks) == ("pending", None, 0)
    assert await worker.run_once() == 0


async def test_an_object_on_s3_is_extracted(sync_db: SyncDb, tmp_path: Path, s3_storage: S3Storage) -> None:
    db = sync_db
    tenant = await new_tenant(db)
    data = pdf_with_pages(["Amendment 0003", "Questions are due by 2 PM Eastern."])
    document_id = await _document(db, tenant, s3_storage, tmp_path, data, PDF)
    worker = _worker(db, ExtractionStep(s3_storage, temp_dir=tmp_path), Clock())
    assert await _run_until_idle(worker) == 1
    row = await _document_row(db, tenant, document_id)
    assert (row.processing_status, row.page_count) == ("completed", 2)
    assert "Questions are due by 2 PM Eastern." in row.extracted_text
    assert list(tmp_path.glob("gwm-extract-*")) == []  # the temporary copy is gone
