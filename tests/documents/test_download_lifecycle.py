"""A file's whole life through the API, on the local backend and on S3 (moto on 127.0.0.1): uploaded
(quarantined: no download), scanned clean, downloaded, deleted (no download), purged after the
retention (object gone, record kept, no restore) (issue 16, acceptance 1 and 4)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text

from models.db import set_tenant
from server.document_jobs import purge_deleted, scan_quarantined
from tests.documents.conftest import Env
from tests.documents.lifecycle_support import FakeScanner
from tests.support.db import TEST_AUDIT_CHAIN
from tests.support.graphql import gql

ISSUE = """
mutation D($input: DocumentDownloadUrlInput!) {
  documentDownloadUrl(input: $input) { url document { scanStatus } errors { code } }
}"""
DELETE = """
mutation X($input: DocumentDeleteInput!) { documentDelete(input: $input) { document { updatedAt } errors { code } } }
"""
RESTORE = """
mutation R($input: DocumentRestoreInput!) { documentRestore(input: $input) { errors { code } } }
"""
DATA = b"Volume I - Technical approach\n" * 200


async def _issue(env: Env, document_id: str) -> dict[str, Any]:
    body = await gql(env.client, ISSUE, {"input": {"rowId": document_id}}, token=env.token)
    payload: dict[str, Any] = body["data"]["documentDownloadUrl"]
    return payload


async def _fetch(env: Env, url: str) -> httpx.Response:
    if env.backend == "local":
        return await env.client.get(urlsplit(url).path)
    async with httpx.AsyncClient() as s3:  # moto's server on 127.0.0.1
        return await s3.get(url)


async def _row(env: Env, document_id: str) -> Any:
    async with env.owner.connect() as conn:
        await set_tenant(conn, env.tenant.id)
        return (await conn.execute(text("SELECT * FROM documents WHERE id = :d"), {"d": uuid.UUID(document_id)})).one()


async def test_upload_scan_download_delete_purge(env: Env) -> None:
    uploaded = await env.upload("volume-1.txt", DATA)
    assert uploaded["errors"] == []
    document_id = uploaded["document"]["rowId"]
    assert (await _row(env, document_id)).scan_status == "quarantined"

    refused = await _issue(env, document_id)
    assert [e["code"] for e in refused["errors"]] == ["DOCUMENT_QUARANTINED"] and refused["url"] is None

    report = await scan_quarantined(env.owner, TEST_AUDIT_CHAIN, env.storage, FakeScanner(), tenant_ids=[env.tenant.id])
    assert report.scanned_clean == 1
    issued = await _issue(env, document_id)
    assert issued["errors"] == [] and issued["document"] == {"scanStatus": "CLEAN"}
    response = await _fetch(env, issued["url"])
    assert response.status_code == 200 and response.content == DATA
    assert response.headers["content-disposition"].startswith('attachment; filename="volume-1.txt"')

    row = await _row(env, document_id)
    deleted = await gql(
        env.client, DELETE, {"input": {"rowId": document_id, "updatedAt": row.updated_at.isoformat()}}, token=env.token
    )
    assert deleted["data"]["documentDelete"]["errors"] == []
    assert [e["code"] for e in (await _issue(env, document_id))["errors"]] == ["DOCUMENT_DELETED"]

    retention = datetime.timedelta(days=30)
    later = datetime.datetime.now(datetime.UTC) + retention + datetime.timedelta(days=1)
    kept = await purge_deleted(
        env.owner, TEST_AUDIT_CHAIN, env.storage, retention=retention, tenant_ids=[env.tenant.id]
    )
    assert kept.purged == 0  # deleted just now
    gone = await purge_deleted(
        env.owner, TEST_AUDIT_CHAIN, env.storage, retention=retention, now=later, tenant_ids=[env.tenant.id]
    )
    assert gone.purged == 1
    row = await _row(env, document_id)
    assert row.purged_at is not None and await env.storage.size(row.storage_key) is None
    restore = await gql(
        env.client, RESTORE, {"input": {"rowId": document_id, "updatedAt": row.updated_at.isoformat()}}, token=env.token
    )
    assert [e["code"] for e in restore["data"]["documentRestore"]["errors"]] == ["VALIDATION"]

    async with env.owner.connect() as conn:
        await set_tenant(conn, env.tenant.id)
        logs = (
            await conn.execute(
                text("SELECT access_type, success, failure_reason FROM document_access_logs WHERE document_id = :d"
                     " ORDER BY accessed_at, id"),
                {"d": uuid.UUID(document_id)},
            )
        ).all()
    expected = [("download_url", False, "document_quarantined"), ("download_url", True, None)]
    if env.backend == "local":
        expected.append(("download", True, None))
    expected.append(("download_url", False, "document_deleted"))
    assert [(r.access_type, r.success, None if r.success else r.failure_reason) for r in logs] == expected
