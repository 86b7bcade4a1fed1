"""The purge of soft-deleted documents (`gwm jobs run`): after the retention, unless under a legal hold.

Committed data under a fresh tenant; the job runs as the schema owner over the test's tenant, on the
local backend and on the session's S3 server (moto on 127.0.0.1).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from server.app import create_app
from server.document_jobs import purge_deleted
from storage.base import DocumentStorage
from storage.local import LocalStorage
from storage.s3 import S3Storage
from tests.conftest import Database
from tests.documents.lifecycle_support import audit_rows, document_row, stored_document
from tests.support.audit_trail import expect_audit
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.graphql import gql, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for

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

    async with owner_engine.begin() as conn:  # text extracted from the due one's file
        await set_tenant(conn, tenant.id)
        for document_id in (due, held):
            await conn.execute(
                text("INSERT INTO document_text_chunks (tenant_id, document_id, chunk_index, start_offset, content)"
                     " VALUES (:t, :d, 0, 0, 'section L')"),
                {"t": tenant.id, "d": document_id},
            )

    report = await purge_deleted(
        owner_engine, TEST_AUDIT_CHAIN, storage, retention=RETENTION, now=now, tenant_ids=[tenant.id]
    )

    assert (report.purged, report.failed) == (1, [])
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        chunks = await conn.execute(text("SELECT document_id FROM document_text_chunks WHERE tenant_id = :t"),
                                    {"t": tenant.id})
        assert [r.document_id for r in chunks] == [held]
    assert await storage.size(due_key) is None
    row = await document_row(owner_engine, tenant, due)
    assert row.purged_at is not None and row.is_deleted  # the record stays, soft-deleted
    (audit,) = await audit_rows(owner_engine, tenant, due, "document.purged")
    assert audit.user_id == tenant.system_user_id and "30 day(s)" in audit.operation_description
    assert set(audit.history_fields) - {"updated_at"} == {"purged_at"}
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


# -- the legal hold through the API --------------------------------------------------------------

HOLD = """
mutation H($input: DocumentLegalHoldSetInput!) {
  documentLegalHoldSet(input: $input) { document { rowId updatedAt } errors { field code message } }
}"""


async def _hold_client(database: Database, owner_engine: AsyncEngine, tenant: TenantRef, role: str) -> Any:
    app = create_app(settings_for(database.app_url))
    user = await make_login_user(owner_engine, tenant, roles=(role,))
    return app, user


@pytest.mark.audits("documentLegalHoldSet")
async def test_a_legal_hold_is_set_with_a_reason_audited_and_lifted(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    document_id, key = await stored_document(
        owner_engine, fresh_tenant, local_storage, b"x", tmp_path, is_deleted=True,
        deleted_at=now - RETENTION * 2, deleted_by=fresh_tenant.system_user_id, access_level="tenant",
    )
    app, admin = await _hold_client(database, owner_engine, fresh_tenant, "Tenant Admin")
    viewer = await make_login_user(owner_engine, fresh_tenant, roles=("Capture Manager",))
    async with app_client(app) as client:
        token = await sign_in(client, admin)
        row = await document_row(owner_engine, fresh_tenant, document_id)
        seen = row.updated_at.isoformat()

        missing_reason = await gql(client, HOLD, {"input": {"rowId": str(document_id), "updatedAt": seen,
                                                           "hold": True}}, token=token)
        assert [(e["code"], e["field"]) for e in missing_reason["data"]["documentLegalHoldSet"]["errors"]] == [
            ("VALIDATION", ["input", "reason"])
        ]
        denied = await gql(client, HOLD, {"input": {"rowId": str(document_id), "updatedAt": seen, "hold": True,
                                                   "reason": "x"}}, token=await sign_in(client, viewer), errors=True)
        assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"

        held = await gql(client, HOLD, {"input": {"rowId": str(document_id), "updatedAt": seen, "hold": True,
                                                 "reason": "Matter 2026-17: preserve"}}, token=token)
        assert held["data"]["documentLegalHoldSet"]["errors"] == []
        row = await document_row(owner_engine, fresh_tenant, document_id)
        assert (row.legal_hold, row.legal_hold_reason, row.legal_hold_set_by) == (
            True, "Matter 2026-17: preserve", admin.id
        ) and row.legal_hold_set_at is not None
        await expect_audit(
            owner_engine, fresh_tenant.id, "documentLegalHoldSet", action="document.legal_hold.set",
            entity_id=document_id, history={"legal_hold", "legal_hold_reason", "legal_hold_set_by"}, user_id=admin.id,
        )

        # Held: the purge leaves it alone.
        report = await purge_deleted(
            owner_engine, TEST_AUDIT_CHAIN, local_storage, retention=RETENTION, tenant_ids=[fresh_tenant.id]
        )
        assert report.purged == 0 and await local_storage.size(key) is not None

        stale = await gql(client, HOLD, {"input": {"rowId": str(document_id), "updatedAt": seen, "hold": False}},
                          token=token)
        assert [e["code"] for e in stale["data"]["documentLegalHoldSet"]["errors"]] == ["CONFLICT"]
        lifted = await gql(client, HOLD, {"input": {"rowId": str(document_id), "updatedAt": row.updated_at.isoformat(),
                                                   "hold": False}}, token=token)
        assert lifted["data"]["documentLegalHoldSet"]["errors"] == []
        row = await document_row(owner_engine, fresh_tenant, document_id)
        assert (row.legal_hold, row.legal_hold_reason, row.legal_hold_set_by) == (False, None, None)

        # Released: purged on the next run; a hold on a purged file, or a restore, is refused.
        report = await purge_deleted(
            owner_engine, TEST_AUDIT_CHAIN, local_storage, retention=RETENTION, tenant_ids=[fresh_tenant.id]
        )
        assert report.purged == 1 and await local_storage.size(key) is None
        row = await document_row(owner_engine, fresh_tenant, document_id)
        again = await gql(client, HOLD, {"input": {"rowId": str(document_id), "updatedAt": row.updated_at.isoformat(),
                                                  "hold": True, "reason": "late"}}, token=token)
        assert [(e["code"], e["field"]) for e in again["data"]["documentLegalHoldSet"]["errors"]] == [
            ("VALIDATION", ["input", "rowId"])
        ]
        restore = await gql(
            client,
            "mutation R($input: DocumentRestoreInput!) { documentRestore(input: $input) { errors { code field } } }",
            {"input": {"rowId": str(document_id), "updatedAt": row.updated_at.isoformat()}}, token=token,
        )
        assert [e["code"] for e in restore["data"]["documentRestore"]["errors"]] == ["VALIDATION"]


async def test_gwm_jobs_run_scans_and_purges(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, tmp_path: Path
) -> None:
    """The command line: `gwm jobs run` scans quarantined files (no scanner configured: released with the
    reason saying so) and purges due ones, on the local store GWM_STORAGE_DIR names."""
    import asyncio
    import os
    import subprocess
    import sys

    from storage.signing import Signer
    from tests.support.db import TEST_AUDIT_KEYS

    root = Path(__file__).resolve().parents[2]
    store = LocalStorage(tmp_path / "store", signer=Signer(b"k" * 32), public_url="http://127.0.0.1:8000")
    now = datetime.now(UTC)

    async def prepare() -> tuple[Any, str, Any]:
        quarantined, _ = await stored_document(owner_engine, fresh_tenant, store, b"new", tmp_path)
        due, due_key = await stored_document(
            owner_engine, fresh_tenant, store, b"old", tmp_path, is_deleted=True, deleted_at=now - RETENTION * 2,
            deleted_by=fresh_tenant.system_user_id, scan_status="clean",
        )
        return quarantined, due_key, due

    quarantined, due_key, due = await prepare()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url, GWM_APP_DATABASE_URL=database.app_url, GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS, GWM_STORAGE_DIR=str(tmp_path / "store"), GWM_DOCUMENT_PURGE_DAYS="30",
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server.cli", "jobs", "run"], env=env, capture_output=True, text=True, cwd=root,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "documents:" in result.stdout and "purged" in result.stdout

    async def check() -> None:
        row = await document_row(owner_engine, fresh_tenant, quarantined)
        assert (row.scan_status, row.scan_reason) == ("clean", "not scanned: no scanner configured")
        assert (await document_row(owner_engine, fresh_tenant, due)).purged_at is not None
        assert await store.size(due_key) is None

    await check()
