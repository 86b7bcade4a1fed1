"""The purge of soft-deleted documents (`gwm jobs run`): after the retention, unless under a legal hold.

Committed data under a fresh tenant; the job runs as the schema owner over the test's tenant, on the
local backend and on the session's S3 server (moto on 127.0.0.1).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from server.document_jobs import purge_deleted
from storage.base import DocumentStorage
from storage.local import LocalStorage
from storage.s3 import S3Storage
from tests.documents.lifecycle_support import audit_rows, document_row, stored_document
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef

RETENTION = timedelta(days=30)


async def _purge_cases(
    owner_engine: AsyncEngine, tenant: TenantRef, storage: DocumentStorage, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    old = now - RETENTION - timedelta(days=1)
    due, due_key = await stored_document(
        owner_engine, tenant, storage, b"old", tmp_path, is_deleted=True, deleted_at=old,
        deleted_by=tenant.system_user_id,
    )
    held, held_key = await stored_document(
        owner_engine, tenant, storage, b"held", tmp_path, is_deleted=True, deleted_at=old,
        deleted_by=tenant.system_user_id, legal_hold=True, legal_hold_reason="litigation 2026-17",
    )
    recent, recent_key = await stored_document(
        owner_engine, tenant, storage, b"recent", tmp_path, is_deleted=True,
        deleted_at=now - RETENTION + timedelta(hours=1), deleted_by=tenant.system_user_id,
    )
    live, live_key = await stored_document(owner_engine, tenant, storage, b"live", tmp_path)

    report = await purge_deleted(
        owner_engine, TEST_AUDIT_CHAIN, storage, retention=RETENTION, now=now, tenant_ids=[tenant.id]
    )

    assert (report.purged, report.failed) == (1, [])
    assert await storage.size(due_key) is None
    row = await document_row(owner_engine, tenant, due)
    assert row.purged_at is not None and row.is_deleted  # the record stays, soft-deleted
    (audit,) = await audit_rows(owner_engine, tenant, due, "document.purged")
    assert audit.user_id == tenant.system_user_id and "30 day(s)" in audit.operation_description
    assert audit.history_fields == ["purged_at"]
    for document_id, key in ((held, held_key), (recent, recent_key), (live, live_key)):
        assert await storage.size(key) is not None
        assert (await document_row(owner_engine, tenant, document_id)).purged_at is None
        assert await audit_rows(owner_engine, tenant, document_id, "document.purged") == []

    # Run again: nothing more is due; the purged row is not purged twice.
    again = await purge_deleted(
        owner_engine, TEST_AUDIT_CHAIN, storage, retention=RETENTION, now=now, tenant_ids=[tenant.id]
    )
    assert again.purged == 0
    assert len(await audit_rows(owner_engine, tenant, due, "document.purged")) == 1

    # Past the hold's release and the retention, the others go too.
    later = await purge_deleted(
        owner_engine, TEST_AUDIT_CHAIN, storage, retention=RETENTION, now=now + timedelta(days=2),
        tenant_ids=[tenant.id],
    )
    assert later.purged == 1  # the recent one; the held one stays held
    assert await storage.size(recent_key) is None and await storage.size(held_key) is not None


async def test_purge_on_the_local_backend(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    await _purge_cases(owner_engine, fresh_tenant, local_storage, tmp_path)


async def test_purge_on_s3(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, s3_storage: S3Storage, tmp_path: Path
) -> None:
    await _purge_cases(owner_engine, fresh_tenant, s3_storage, tmp_path)


async def test_an_object_already_gone_is_still_marked_purged(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    """A run that deleted the object but failed before its commit: the next run completes it."""
    now = datetime.now(UTC)
    document_id, key = await stored_document(
        owner_engine, fresh_tenant, local_storage, b"x", tmp_path, is_deleted=True,
        deleted_at=now - RETENTION * 2, deleted_by=fresh_tenant.system_user_id,
    )
    await local_storage.delete(key)
    report = await purge_deleted(
        owner_engine, TEST_AUDIT_CHAIN, local_storage, retention=RETENTION, now=now, tenant_ids=[fresh_tenant.id]
    )
    assert report.purged == 1
    assert (await document_row(owner_engine, fresh_tenant, document_id)).purged_at is not None
