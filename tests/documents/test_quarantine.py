"""The malware-scan hook (SI-3): quarantined documents are scanned by the job and released or kept.

Committed data under a fresh tenant; the job runs as the schema owner like `gwm jobs run`, over the
test's tenant only. The scanner is a fake that finds the EICAR string (tests/documents/lifecycle_support.py);
ClamdScanner is tested against a loopback server speaking clamd's INSTREAM protocol.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from server.document_jobs import scan_quarantined
from storage.local import LocalStorage
from storage.s3 import S3Storage
from storage.scan import ClamdScanner, NoScanner, Scanner, ScanUnavailable, scanner_from_setting
from tests.documents.lifecycle_support import EICAR, FakeScanner, audit_rows, document_row, stored_document
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef


async def test_clean_and_infected_objects_get_their_verdicts_with_audit_rows(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    clean, _ = await stored_document(owner_engine, fresh_tenant, local_storage, b"capture plan text", tmp_path)
    infected, infected_key = await stored_document(
        owner_engine, fresh_tenant, local_storage, b"prefix " + EICAR + b" suffix", tmp_path
    )
    assert (await document_row(owner_engine, fresh_tenant, clean)).scan_status == "quarantined"  # the default
    scanner = FakeScanner()

    report = await scan_quarantined(
        owner_engine, TEST_AUDIT_CHAIN, local_storage, scanner, tenant_ids=[fresh_tenant.id]
    )

    assert (report.scanned_clean, report.scanned_infected, report.failed) == (1, 1, [])
    row = await document_row(owner_engine, fresh_tenant, clean)
    assert (row.scan_status, row.scan_reason) == ("clean", "nothing found") and row.scanned_at is not None
    bad = await document_row(owner_engine, fresh_tenant, infected)
    assert (bad.scan_status, bad.scan_reason) == ("infected", "Eicar-Test-Signature")
    assert await local_storage.size(infected_key) is not None  # kept, unreadable, for the incident
    (audit,) = await audit_rows(owner_engine, fresh_tenant, clean, "document.scanned")
    assert audit.user_id == fresh_tenant.system_user_id and "fake" in audit.operation_description
    assert {"scan_status", "scan_reason", "scanned_at"} <= set(audit.history_fields)
    (audit,) = await audit_rows(owner_engine, fresh_tenant, infected, "document.infected")
    assert "Eicar-Test-Signature" in audit.operation_description

    # A second run has nothing left to scan.
    again = await scan_quarantined(
        owner_engine, TEST_AUDIT_CHAIN, local_storage, scanner, tenant_ids=[fresh_tenant.id]
    )
    assert (again.scanned_clean, again.scanned_infected, scanner.scanned) == (0, 0, 2)


async def test_objects_on_s3_are_scanned_too(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, s3_storage: S3Storage, tmp_path: Path
) -> None:
    document_id, _ = await stored_document(owner_engine, fresh_tenant, s3_storage, EICAR, tmp_path)
    report = await scan_quarantined(
        owner_engine, TEST_AUDIT_CHAIN, s3_storage, FakeScanner(), tenant_ids=[fresh_tenant.id]
    )
    assert report.scanned_infected == 1
    assert (await document_row(owner_engine, fresh_tenant, document_id)).scan_status == "infected"


class _Down:
    name = "down"

    async def scan(self, chunks: AsyncIterator[bytes]) -> object:
        raise ScanUnavailable("scanner unreachable")


async def test_a_scanner_that_cannot_answer_leaves_the_document_quarantined(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    document_id, _ = await stored_document(owner_engine, fresh_tenant, local_storage, b"text", tmp_path)
    down: Scanner = _Down()  # type: ignore[assignment]
    report = await scan_quarantined(owner_engine, TEST_AUDIT_CHAIN, local_storage, down, tenant_ids=[fresh_tenant.id])
    assert (report.scan_deferred, report.scanned_clean) == (1, 0)
    row = await document_row(owner_engine, fresh_tenant, document_id)
    assert (row.scan_status, row.scanned_at) == ("quarantined", None)
    assert await audit_rows(owner_engine, fresh_tenant, document_id, "document.scanned") == []


async def test_a_missing_object_and_rows_without_one_stay_quarantined(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    missing, key = await stored_document(owner_engine, fresh_tenant, local_storage, b"text", tmp_path)
    await local_storage.delete(key)
    seeded, _ = await stored_document(
        owner_engine, fresh_tenant, local_storage, b"text", tmp_path, processing_status="no_object"
    )
    scanner = FakeScanner()
    report = await scan_quarantined(
        owner_engine, TEST_AUDIT_CHAIN, local_storage, scanner, tenant_ids=[fresh_tenant.id]
    )
    assert (report.scan_deferred, scanner.scanned) == (1, 0)  # the no_object row is not even read
    for document_id in (missing, seeded):
        assert (await document_row(owner_engine, fresh_tenant, document_id)).scan_status == "quarantined"


async def test_no_scanner_releases_with_a_reason_that_says_so(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    document_id, _ = await stored_document(owner_engine, fresh_tenant, local_storage, b"text", tmp_path)
    await scan_quarantined(owner_engine, TEST_AUDIT_CHAIN, local_storage, NoScanner(), tenant_ids=[fresh_tenant.id])
    row = await document_row(owner_engine, fresh_tenant, document_id)
    assert (row.scan_status, row.scan_reason) == ("clean", "not scanned: no scanner configured")


# -- ClamdScanner against a loopback server speaking INSTREAM -------------------------------------


async def _clamd(reply: bytes | None, received: list[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(10) == b"zINSTREAM\0"
        data = b""
        while size := struct.unpack("!L", await reader.readexactly(4))[0]:
            data += await reader.readexactly(size)
        received.append(data)
        if reply is not None:
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("reply", "clean", "reason"),
    [
        (b"stream: OK\0", True, "clamd: no threat found"),
        (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", False, "clamd: Win.Test.EICAR_HDB-1"),
    ],
)
async def test_clamd_verdicts(reply: bytes, clean: bool, reason: str) -> None:
    received: list[bytes] = []
    server, port = await _clamd(reply, received)
    async with server:
        verdict = await ClamdScanner("127.0.0.1", port, chunk_size=3).scan(_chunks(b"abcdefg", b"hij"))
    assert (verdict.clean, verdict.reason) == (clean, reason)
    assert received == [b"abcdefghij"]  # every byte went over, in length-prefixed chunks


async def test_clamd_errors_and_absence_are_scan_unavailable() -> None:
    server, port = await _clamd(b"INSTREAM size limit exceeded. ERROR\0", [])
    async with server:
        with pytest.raises(ScanUnavailable, match="size limit"):
            await ClamdScanner("127.0.0.1", port).scan(_chunks(b"x"))
    with pytest.raises(ScanUnavailable, match=r"clamd at 127\.0\.0\.1"):
        await ClamdScanner("127.0.0.1", port).scan(_chunks(b"x"))  # the server is gone


async def test_scanner_setting() -> None:
    assert isinstance(scanner_from_setting(None), NoScanner)
    clamd = scanner_from_setting("127.0.0.1:3310")
    assert isinstance(clamd, ClamdScanner) and (clamd.host, clamd.port) == ("127.0.0.1", 3310)
    with pytest.raises(ValueError, match="host:port"):
        scanner_from_setting("clamd")


async def test_the_worker_loop_scans_new_files_across_tenants_as_the_server_role(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage,
    tmp_path: Path,
) -> None:
    """gwm_scan_pending() finds quarantined documents before any tenant is set; each is scanned in its own
    tenant as gwm_app, the verdict audited like the job's."""
    import base64

    from auth.crypto import SecretBox
    from auth.outbound import OutboundPolicy
    from server.document_jobs import scan_side_job
    from sync.worker import SyncServices, Worker

    clean, _ = await stored_document(owner_engine, fresh_tenant, local_storage, b"text", tmp_path)
    infected, _ = await stored_document(owner_engine, fresh_tenant, local_storage, EICAR, tmp_path)
    key = base64.b64encode(b"s" * 32).decode()
    services = SyncServices(
        engine=app_engine, chain=TEST_AUDIT_CHAIN, secret_box=SecretBox.from_setting(f"t1:{key}"),
        fingerprint_key=b"f" * 32, outbound=OutboundPolicy.from_setting(None), storage=local_storage,
    )
    worker = Worker(services, {})
    step = scan_side_job(FakeScanner(), batch=1000)  # other tests' quarantined rows come first; theirs stay

    assert await step(worker) >= 2
    assert (await document_row(owner_engine, fresh_tenant, clean)).scan_status == "clean"
    assert (await document_row(owner_engine, fresh_tenant, infected)).scan_status == "infected"
    assert len(await audit_rows(owner_engine, fresh_tenant, clean, "document.scanned")) == 1
    assert await step(Worker(SyncServices(**{**services.__dict__, "storage": None}), {})) == 0  # no store: nothing
