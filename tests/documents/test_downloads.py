"""Download URLs (`documentDownloadUrl`) and the local backend's download route, on the local backend
and on S3 (moto's server on 127.0.0.1): what is served, expiry with an injected clock, tampering,
quarantine, and the access-log row of every issuance, refusal and download (issue 16, acceptance 1
and 4)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from server.app import create_app
from storage.base import DocumentStorage
from storage.local import LocalStorage
from storage.s3 import S3Storage
from tests.conftest import Database
from tests.documents.lifecycle_support import stored_document
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef
from tests.support.graphql import gql, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for

ISSUE = """
mutation D($input: DocumentDownloadUrlInput!) {
  documentDownloadUrl(input: $input) {
    url expiresAt document { rowId scanStatus scanReason legalHold purgedAt } errors { field code message }
  }
}"""
LIFETIME = 120
FILE_NAME = "Résumé \u2013 plan \"v2\".txt"  # an en dash: not Latin-1
DATA = b"Section L instructions\n" * 100


@dataclass
class Env:
    client: httpx.AsyncClient
    token: str
    user_id: uuid.UUID
    tenant: TenantRef
    storage: DocumentStorage


@pytest.fixture
async def local_env(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, local_storage: LocalStorage
) -> AsyncIterator[Env]:
    async for env in _env(database, owner_engine, fresh_tenant, local_storage):
        yield env


@pytest.fixture
async def s3_env(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef, s3_storage: S3Storage
) -> AsyncIterator[Env]:
    async for env in _env(database, owner_engine, fresh_tenant, s3_storage):
        yield env


async def _env(
    database: Database, owner_engine: AsyncEngine, tenant: TenantRef, storage: DocumentStorage
) -> AsyncIterator[Env]:
    app = create_app(settings_for(database.app_url, download_url_seconds=LIFETIME))
    app.state.storage = storage
    user = await make_login_user(owner_engine, tenant, roles=("Viewer",))
    async with app_client(app) as client:
        yield Env(client, await sign_in(client, user), user.id, tenant, storage)


async def _document(owner_engine: AsyncEngine, env: Env, tmp_path: Path, **columns: Any) -> uuid.UUID:
    values: dict[str, Any] = {"scan_status": "clean", "access_level": "tenant", **columns}
    document_id, _ = await stored_document(owner_engine, env.tenant, env.storage, DATA, tmp_path, **values)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(
            text("UPDATE documents SET original_filename = :f WHERE id = :id"), {"f": FILE_NAME, "id": document_id}
        )
    return document_id


async def _issue(env: Env, document_id: uuid.UUID) -> dict[str, Any]:
    body = await gql(env.client, ISSUE, {"input": {"rowId": str(document_id)}}, token=env.token)
    payload: dict[str, Any] = body["data"]["documentDownloadUrl"]
    return payload


async def _logs(owner_engine: AsyncEngine, env: Env, document_id: uuid.UUID) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, env.tenant.id)
        rows = await conn.execute(
            text(
                "SELECT access_type, success, failure_reason, user_id, host(ip_address) AS ip, user_agent"
                " FROM document_access_logs WHERE document_id = :d ORDER BY accessed_at, id"
            ),
            {"d": document_id},
        )
        return list(rows.all())


def _path(url: str) -> str:
    return urlsplit(url).path


@pytest.mark.audits("documentDownloadUrl")
async def test_local_url_serves_the_file_as_an_attachment_and_logs_both_steps(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    env = local_env
    document_id = await _document(owner_engine, env, tmp_path)
    before = datetime.datetime.now(datetime.UTC)
    payload = await _issue(env, document_id)
    assert payload["errors"] == []
    assert payload["document"] == {
        "rowId": str(document_id), "scanStatus": "CLEAN", "scanReason": None, "legalHold": False, "purgedAt": None
    }
    assert payload["url"].startswith("http://127.0.0.1:8000/documents/download/")
    expires = datetime.datetime.fromisoformat(payload["expiresAt"])
    assert before + datetime.timedelta(seconds=LIFETIME - 5) <= expires <= before + datetime.timedelta(
        seconds=LIFETIME + 5
    )

    response = await env.client.get(_path(payload["url"]))  # no credential: the signed URL is one
    assert response.status_code == 200, response.text
    assert response.content == DATA
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="R_sum_ _ plan _v2_.txt"; filename*=utf-8\'\'')
    assert unquote(disposition.split("''", 1)[1]) == FILE_NAME
    assert response.headers["content-length"] == str(len(DATA))

    logs = await _logs(owner_engine, env, document_id)
    assert [(r.access_type, r.success) for r in logs] == [("download_url", True), ("download", True)]
    assert all(r.user_id == env.user_id and r.ip == "127.0.0.1" for r in logs)
    await expect_audit(
        owner_engine, env.tenant.id, "documentDownloadUrl", action="document.download_url.issued",
        entity_id=document_id, operational=True, user_id=env.user_id,  # an event: nothing of the row changed
    )


async def test_an_expired_local_url_is_refused_and_logged(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    env = local_env
    assert isinstance(env.storage, LocalStorage)
    document_id = await _document(owner_engine, env, tmp_path)
    issued_at = datetime.datetime.now(datetime.UTC)
    env.storage.signer.clock = lambda: issued_at
    url = _path((await _issue(env, document_id))["url"])

    env.storage.signer.clock = lambda: issued_at + datetime.timedelta(seconds=LIFETIME - 1)
    assert (await env.client.get(url)).status_code == 200  # one second before the end: still good
    env.storage.signer.clock = lambda: issued_at + datetime.timedelta(seconds=LIFETIME)
    response = await env.client.get(url)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "DOWNLOAD_LINK_EXPIRED"
    last = (await _logs(owner_engine, env, document_id))[-1]
    assert (last.access_type, last.success, last.failure_reason) == ("download", False, "expired download link")


async def test_a_tampered_local_url_is_refused_and_logged(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    env = local_env
    document_id = await _document(owner_engine, env, tmp_path)
    other_id = await _document(owner_engine, env, tmp_path)
    url = _path((await _issue(env, document_id))["url"])
    body, signature = url.rsplit("/", 1)[1].split(".")

    # The same signature over claims naming another document.
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["d"] = str(other_id)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (f"/documents/download/{forged}.{signature}", url[:-2] + ("AA" if url[-2:] != "AA" else "BB")):
        response = await env.client.get(bad)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "DOWNLOAD_LINK_INVALID"
    forged_logs = await _logs(owner_engine, env, other_id)
    assert [(r.access_type, r.success, r.failure_reason) for r in forged_logs] == [
        ("download", False, "invalid or tampered download link")
    ]
    assert [(r.access_type, r.success) for r in await _logs(owner_engine, env, document_id)] == [
        ("download_url", True), ("download", False)
    ]
    garbage = await env.client.get("/documents/download/not-a-token")
    assert garbage.status_code == 403  # nothing to attach a log row to


@pytest.mark.parametrize(
    ("columns", "code"),
    [
        ({"scan_status": "quarantined"}, "DOCUMENT_QUARANTINED"),
        ({"scan_status": "infected", "scan_reason": "Eicar"}, "DOCUMENT_INFECTED"),
        ({"is_deleted": True}, "DOCUMENT_DELETED"),
        ({"processing_status": "no_object"}, "NO_FILE"),
    ],
)
async def test_no_url_for_a_file_that_cannot_be_served(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path, columns: dict[str, Any], code: str
) -> None:
    env = local_env
    document_id = await _document(owner_engine, env, tmp_path, **columns)
    payload = await _issue(env, document_id)
    assert payload["url"] is None and payload["expiresAt"] is None and payload["document"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, ["input", "rowId"])]
    (log,) = await _logs(owner_engine, env, document_id)
    assert (log.access_type, log.success, log.failure_reason) == ("download_url", False, code.lower())


async def test_a_file_quarantined_after_issuance_is_not_served(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    env = local_env
    document_id = await _document(owner_engine, env, tmp_path)
    url = _path((await _issue(env, document_id))["url"])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(text("UPDATE documents SET scan_status = 'quarantined' WHERE id = :d"), {"d": document_id})
    response = await env.client.get(url)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "DOCUMENT_QUARANTINED")
    assert response.content.find(DATA[:20]) == -1
    last = (await _logs(owner_engine, env, document_id))[-1]
    assert (last.success, last.failure_reason) == (False, "document_quarantined")


async def test_another_tenants_document_is_not_found_and_logs_nothing_there(
    owner_engine: AsyncEngine, local_env: Env, tenant_b: TenantRef, tmp_path: Path
) -> None:
    env = local_env
    foreign, _ = await stored_document(
        owner_engine, tenant_b, env.storage, DATA, tmp_path, scan_status="clean", access_level="tenant"
    )
    payload = await _issue(env, foreign)
    assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"] and payload["url"] is None
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant_b.id)
        assert await conn.scalar(
            text("SELECT count(*) FROM document_access_logs WHERE document_id = :d"), {"d": foreign}
        ) == 0


async def test_s3_url_is_presigned_for_the_configured_lifetime_and_each_issuance_is_logged(
    owner_engine: AsyncEngine, s3_env: Env, tmp_path: Path
) -> None:
    env = s3_env
    document_id = await _document(owner_engine, env, tmp_path)
    first = await _issue(env, document_id)
    second = await _issue(env, document_id)
    for payload in (first, second):
        assert payload["errors"] == []
        query = parse_qs(urlsplit(payload["url"]).query)
        assert query["X-Amz-Expires"] == [str(LIFETIME)]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["response-content-disposition"][0].startswith("attachment;")
    async with httpx.AsyncClient() as s3:  # moto on 127.0.0.1
        response = await s3.get(first["url"])
    assert response.status_code == 200 and response.content == DATA
    assert response.headers["content-disposition"].startswith("attachment;")
    logs = await _logs(owner_engine, env, document_id)
    assert [(r.access_type, r.success) for r in logs] == [("download_url", True), ("download_url", True)]
    # The server does not serve S3 objects itself.
    token_path = "/documents/download/" + "x" * 20
    assert (await env.client.get(token_path)).status_code == 404


async def test_access_levels_hold_for_download_urls(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    """A restricted document the caller is not a reader of is NOT_FOUND (the attempt logged); once named a
    reader it gets its URL; a confidential document's every access is logged at elevated risk."""
    env = local_env
    restricted = await _document(owner_engine, env, tmp_path, access_level="restricted")
    payload = await _issue(env, restricted)
    assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"] and payload["url"] is None
    (log,) = await _logs(owner_engine, env, restricted)
    assert (log.success, log.failure_reason) == (False, "not readable by the caller")

    confidential = await _document(owner_engine, env, tmp_path, access_level="confidential")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        for document_id in (restricted, confidential):
            await conn.execute(
                text(
                    "INSERT INTO document_readers (tenant_id, document_id, user_id, added_by)"
                    " VALUES (:t, :d, :u, :b)"
                ),
                {"t": env.tenant.id, "d": document_id, "u": env.user_id, "b": env.tenant.system_user_id},
            )
    assert (await _issue(env, restricted))["errors"] == []
    url = (await _issue(env, confidential))["url"]
    assert (await env.client.get(_path(url))).status_code == 200
    async with owner_engine.connect() as conn:
        await set_tenant(conn, env.tenant.id)
        risks = (
            await conn.execute(
                text("SELECT document_id, access_type, risk_level FROM document_access_logs"
                     " WHERE document_id IN (:r, :c) AND success ORDER BY accessed_at, id"),
                {"r": restricted, "c": confidential},
            )
        ).all()
    assert [(r.document_id, r.access_type, r.risk_level) for r in risks] == [
        (restricted, "download_url", "normal"),
        (confidential, "download_url", "elevated"),
        (confidential, "download", "elevated"),
    ]


async def test_a_link_acts_with_its_users_access_as_it_is_when_used(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    """A role or a reader removed after issuance ends the link's use (404, logged)."""
    env = local_env
    restricted = await _document(owner_engine, env, tmp_path, access_level="restricted")
    open_one = await _document(owner_engine, env, tmp_path)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(
            text(
                "INSERT INTO document_readers (tenant_id, document_id, user_id, added_by)"
                " VALUES (:t, :d, :u, :b)"
            ),
            {"t": env.tenant.id, "d": restricted, "u": env.user_id, "b": env.tenant.system_user_id},
        )
    restricted_url = _path((await _issue(env, restricted))["url"])
    open_url = _path((await _issue(env, open_one))["url"])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(text("DELETE FROM document_readers WHERE document_id = :d"), {"d": restricted})
    response = await env.client.get(restricted_url)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert (await env.client.get(open_url)).status_code == 200
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(text("DELETE FROM user_roles WHERE user_id = :u"), {"u": env.user_id})
    assert (await env.client.get(open_url)).status_code == 404
    last = (await _logs(owner_engine, env, open_one))[-1]
    assert (last.success, last.failure_reason) == (False, "no longer readable by the user")


async def test_an_api_keys_link_ends_with_the_key(
    owner_engine: AsyncEngine, local_env: Env, tmp_path: Path
) -> None:
    env = local_env
    document_id = await _document(owner_engine, env, tmp_path)
    admin = await make_login_user(owner_engine, env.tenant, roles=("Tenant Admin",))
    admin_token = await sign_in(env.client, admin)
    created = await gql(
        env.client,
        "mutation K($input: ApiKeyCreateInput!) {"
        " apiKeyCreate(input: $input) { key errors { code } } }",
        {"input": {"name": f"ci-{uuid.uuid4().hex[:6]}", "roleName": "Viewer", "expiresInDays": 7}},
        token=admin_token,
    )
    key = created["data"]["apiKeyCreate"]["key"]
    body = await gql(env.client, ISSUE, {"input": {"rowId": str(document_id)}}, token=key)
    url = _path(body["data"]["documentDownloadUrl"]["url"])
    assert (await env.client.get(url)).status_code == 200
    async with owner_engine.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(text("UPDATE api_keys SET revoked_at = now()"))  # the tenant's only key
    response = await env.client.get(url)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "DOWNLOAD_LINK_INVALID")
