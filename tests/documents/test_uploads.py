"""Uploads through the GraphQL multipart request, on the local backend and on S3 (moto's server on
127.0.0.1): hashes, types from the bytes, versions, and every refusal leaving no row, no object and no
temporary file (issue 16, acceptance 1 and 2)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import MutableMapping
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.documents.conftest import UPLOAD, UPLOAD_LIMIT, Env, open_temp_files
from tests.documents.samples import docx_bytes, exe_bytes, html_bytes, pdf_bytes, svg_bytes
from tests.support.audit_trail import expect_audit
from tests.support.db import create_tenant
from tests.support.factories import make
from tests.support.http import make_login_user

VERSION = """
mutation V($input: DocumentVersionUploadInput!) {
  documentVersionUpload(input: $input) {
    document { rowId versionNumber isCurrentVersion updatedAt }
    versionRowId
    errors { field code message }
  }
}"""

LIMIT = UPLOAD_LIMIT


async def test_upload_stores_the_object_with_its_hashes_and_a_key_of_ids(env: Env) -> None:
    data = pdf_bytes("Statement of work")
    payload = await env.upload("SOW final.pdf", data, name="Statement of work", tags=["rfp"])
    assert payload["errors"] == []
    document = payload["document"]
    assert document["fileHashSha256"] == hashlib.sha256(data).hexdigest()
    assert document["fileHashMd5"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert int(document["fileSizeBytes"]) == len(data)
    assert document["mimeType"] == "application/pdf" and document["fileExtension"] == "pdf"
    assert document["originalFilename"] == "SOW final.pdf" and document["name"] == "Statement of work"
    assert document["versionNumber"] == 1 and document["isCurrentVersion"] is True
    assert document["processingStatus"] == "PENDING"
    (row,) = await env.rows()
    doc_id = uuid.UUID(document["rowId"])
    assert row.storage_key == env.storage.key_for(f"{env.tenant.id}/{env.project_id}/{doc_id}/{doc_id}")
    assert row.storage_provider == env.backend and row.scan_status == "quarantined"
    assert "SOW" not in row.storage_key
    assert b"".join([c async for c in env.storage.read(row.storage_key)]) == data
    assert await env.objects() == [row.storage_key]
    assert env.spooled() == []


@pytest.mark.audits("documentUpload")
async def test_upload_is_audited(env: Env) -> None:
    payload = await env.upload("notes.txt", b"Capture notes\nCMMC level 2 required.\n")
    document = payload["document"]
    assert document["mimeType"] == "text/plain"
    await expect_audit(
        env.owner, env.tenant.id, "documentUpload", action="document.uploaded", entity_id=document["rowId"],
        history={"name", "storage_key", "file_hash_sha256"}, user_id=env.user_id,
    )


async def test_docx_is_recognised_inside_its_zip(env: Env) -> None:
    payload = await env.upload("proposal.bin", docx_bytes("Technical volume"))
    assert payload["document"]["mimeType"].endswith("wordprocessingml.document")
    assert payload["document"]["fileExtension"] == "docx"


@pytest.mark.parametrize(
    ("name", "data"),
    [("invoice.pdf", exe_bytes()), ("page.txt", html_bytes()), ("logo.png", svg_bytes())],
    ids=["executable-named-pdf", "html", "svg"],
)
async def test_refused_types_leave_no_row_object_or_temp_file(env: Env, name: str, data: bytes) -> None:
    before = open_temp_files()
    variables = {"input": {"file": None, "opportunityProjectRowId": str(env.project_id)}}
    response = await env.post(UPLOAD, variables, (name, data))
    payload = response.json()["data"]["documentUpload"]
    assert payload["document"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "file"], "UNSUPPORTED_TYPE")]
    assert "not the file name" in payload["errors"][0]["message"]
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []
    assert open_temp_files() <= before


async def test_multipart_without_the_preflight_header_is_refused(env: Env) -> None:
    variables = {"input": {"file": None, "opportunityProjectRowId": str(env.project_id)}}
    response = await env.post(UPLOAD, variables, ("a.pdf", pdf_bytes()), preflight=False)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "PREFLIGHT_REQUIRED"
    assert await env.rows() == [] and await env.objects() == []


async def test_oversized_uploads_are_refused_before_and_while_reading(env: Env) -> None:
    big = b"a" * (LIMIT + 10)  # plain text, just over the file limit
    variables = {"input": {"file": None, "opportunityProjectRowId": str(env.project_id)}}
    # Within the request envelope: refused while spooling the file.
    response = await env.post(UPLOAD, variables, ("big.txt", big))
    payload = response.json()["data"]["documentUpload"]
    assert [e["code"] for e in payload["errors"]] == ["TOO_LARGE"]
    # Far over: refused on Content-Length before the body is read.
    huge = b"a" * (LIMIT + 2 * 1024 * 1024)
    response = await env.post(UPLOAD, variables, ("huge.txt", huge))
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []


async def test_a_lying_content_length_is_cut_at_the_limit(env: Env) -> None:
    huge = b"a" * (LIMIT + 2 * 1024 * 1024)
    operations = json.dumps({"query": UPLOAD, "variables": {"input": {"file": None}}})
    boundary = "gwmboundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n"
        + json.dumps({"0": ["variables.input.file"]})
        + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"x.txt\"\r\n\r\n"
    ).encode() + huge + f"\r\n--{boundary}--\r\n".encode()
    sent: list[int] = []
    messages = [body[i : i + 65536] for i in range(0, len(body), 65536)]

    async def receive() -> dict[str, Any]:
        chunk = messages.pop(0)
        sent.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": bool(messages)}

    status, reply = await _asgi(env, receive, content_length=1000, boundary=boundary)
    assert status == 413 and reply["errors"][0]["extensions"]["code"] == "TOO_LARGE"
    assert sum(sent) <= LIMIT + 1024 * 1024 + 65536  # stopped reading at the limit
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []


async def _asgi(env: Env, receive: Any, *, content_length: int | None, boundary: str) -> tuple[int, dict[str, Any]]:
    """Drive the app at the ASGI level (what a client that lies or goes away looks like)."""
    headers = [
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        (b"authorization", f"Bearer {env.token}".encode()),
        (b"graphql-require-preflight", b"1"),
        (b"host", b"testserver"),
    ]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
        "path": "/graphql", "raw_path": b"/graphql", "query_string": b"", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("testserver", 443), "state": {}, "app": env.app,
    }
    replies: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        replies.append(dict(message))

    await env.app(scope, receive, send)
    start = next((m for m in replies if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in replies if m["type"] == "http.response.body")
    return (start["status"] if start else 0), (json.loads(body) if body else {})


async def test_a_client_disconnecting_mid_upload_leaves_nothing(env: Env) -> None:
    before = open_temp_files()
    operations = json.dumps({
        "query": UPLOAD, "variables": {"input": {"file": None, "opportunityProjectRowId": str(env.project_id)}}
    })
    boundary = "gwmboundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n"
        + json.dumps({"0": ["variables.input.file"]})
        + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"x.txt\"\r\n\r\n"
    ).encode()
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": head, "more_body": True},
        {"type": "http.request", "body": b"partial text " * 5000, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    await _asgi(env, receive, content_length=len(head) + 200_000, boundary=boundary)
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []
    assert open_temp_files() <= before


async def test_an_upload_to_another_tenants_project_is_refused(env: Env, owner_engine: AsyncEngine) -> None:
    other = await create_tenant(owner_engine)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, other.id)
        foreign = await make(conn, "opportunity_projects", other)
    variables = {"input": {"file": None, "opportunityProjectRowId": str(foreign.id)}}
    response = await env.post(UPLOAD, variables, ("a.pdf", pdf_bytes()))
    body = response.json()
    payload = (body.get("data") or {}).get("documentUpload")
    codes = [e["code"] for e in payload["errors"]] if payload else [e["extensions"]["code"] for e in body["errors"]]
    assert codes in (["NOT_FOUND"], ["FORBIDDEN"]), body
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []


@pytest.mark.audits("documentVersionUpload")
async def test_new_version_moves_current_and_keeps_the_chain(env: Env) -> None:
    first = (await env.upload("v1.txt", b"version one\n"))["document"]
    variables = {"input": {"rowId": first["rowId"], "updatedAt": first["updatedAt"], "file": None}}
    response = await env.post(VERSION, variables, ("v2.txt", b"version two\n"))
    payload = response.json()["data"]["documentVersionUpload"]
    assert payload["errors"] == []
    assert payload["document"]["rowId"] == first["rowId"] and payload["document"]["isCurrentVersion"] is False
    rows = await env.rows()
    second = {"rowId": payload["versionRowId"]}
    assert str(rows[1].id) == second["rowId"]
    assert [(r.version_number, r.is_current_version) for r in rows] == [(1, False), (2, True)]
    assert rows[1].parent_document_id == rows[0].id
    assert len(await env.objects()) == 2
    assert rows[0].storage_key.rsplit("/", 2)[1] == rows[1].storage_key.rsplit("/", 2)[1] == first["rowId"]
    await expect_audit(
        env.owner, env.tenant.id, "documentVersionUpload", action="document.version_uploaded",
        entity_id=second["rowId"], history={"version_number", "parent_document_id"}, user_id=env.user_id,
        rows_in_request=2,
    )
    # A third version added to the old (no longer current) one is refused before storing anything.
    variables = {"input": {"rowId": first["rowId"], "updatedAt": rows[0].updated_at.isoformat(), "file": None}}
    response = await env.post(VERSION, variables, ("v3.txt", b"version three\n"))
    payload = response.json()["data"]["documentVersionUpload"]
    assert [e["code"] for e in payload["errors"]] == ["CONFLICT"]
    assert len(await env.objects()) == 2 and env.spooled() == []


async def test_two_concurrent_new_versions_cannot_both_become_current(env: Env) -> None:
    first = (await env.upload("v1.txt", b"version one\n"))["document"]
    variables = {"input": {"rowId": first["rowId"], "updatedAt": first["updatedAt"], "file": None}}
    responses = await asyncio.gather(
        *(env.post(VERSION, variables, (f"v{i}.txt", f"concurrent {i}\n".encode())) for i in range(2))
    )
    payloads = [r.json()["data"]["documentVersionUpload"] for r in responses]
    assert sorted(bool(p["errors"]) for p in payloads) == [False, True]
    assert [e["code"] for p in payloads for e in p["errors"]] == ["CONFLICT"]
    rows = await env.rows()
    assert [r.is_current_version for r in rows].count(True) == 1
    assert len(await env.objects()) == 2  # the refused one left no object


async def test_the_database_refuses_a_second_current_version(env: Env) -> None:
    import sqlalchemy.exc

    first = (await env.upload("v1.txt", b"version one\n"))["document"]
    async with env.owner.connect() as conn:
        await set_tenant(conn, env.tenant.id)
        with pytest.raises(sqlalchemy.exc.IntegrityError, match="ux_documents_current_version"):
            await conn.execute(
                text(
                    "INSERT INTO documents (tenant_id, opportunity_project_id, name, original_filename, mime_type,"
                    " file_size_bytes, storage_key, version_number, is_current_version, parent_document_id,"
                    " uploaded_by) SELECT tenant_id, opportunity_project_id, name, original_filename, mime_type,"
                    " file_size_bytes, storage_key || '-2', 2, true, id, uploaded_by FROM documents WHERE id = :id"
                ),
                {"id": first["rowId"]},
            )


async def test_an_idempotent_upload_sent_again_stores_nothing_twice(env: Env) -> None:
    data = b"Teaming agreement draft\n"
    first = await env.upload("teaming.txt", data, idempotencyKey="upload-1")
    again = await env.upload("teaming.txt", data, idempotencyKey="upload-1")
    assert again["errors"] == [] and again["document"]["rowId"] == first["document"]["rowId"]
    assert len(await env.rows()) == 1 and len(await env.objects()) == 1
    other = await env.post(
        UPLOAD, {"input": {"file": None, "opportunityProjectRowId": str(env.project_id), "idempotencyKey": "upload-1"}},
        ("teaming.txt", b"Another file under the same key\n"),
    )
    payload = other.json()["data"]["documentUpload"]
    assert payload["document"] is None and payload["errors"][0]["field"] == ["input", "idempotencyKey"]
    assert len(await env.rows()) == 1 and len(await env.objects()) == 1 and env.spooled() == []


async def test_a_document_without_a_project(env: Env) -> None:
    variables = {"input": {"file": None, "name": "Company capabilities"}}
    response = await env.post(UPLOAD, variables, ("capabilities.txt", b"What we do.\n"))
    payload = response.json()["data"]["documentUpload"]
    assert payload["errors"] == []
    (row,) = await env.rows()
    assert row.opportunity_project_id is None
    assert row.storage_key == env.storage.key_for(f"{env.tenant.id}/none/{row.id}/{row.id}")


async def test_uploads_past_the_concurrency_bound_are_refused() -> None:
    from server.storage_routes import UploadGuard

    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = UploadGuard(slow_app, max_bytes=1000, concurrency=1)
    scope = {
        "type": "http", "method": "POST", "path": "/graphql",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"graphql-require-preflight", b"1")],
    }
    replies: list[list[dict[str, Any]]] = [[], []]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def sender(i: int) -> Any:
        async def send(message: MutableMapping[str, Any]) -> None:
            replies[i].append(dict(message))
        return send

    first = asyncio.create_task(guard(scope, receive, sender(0)))
    await entered.wait()
    await guard(scope, receive, sender(1))
    assert replies[1][0]["status"] == 503
    assert json.loads(replies[1][1]["body"])["errors"][0]["extensions"]["code"] == "UPLOAD_BUSY"
    release.set()
    await first
    assert replies[0][0]["status"] == 200


async def test_a_new_version_keeps_the_named_readers(env: Env) -> None:
    first = (await env.upload("plan.txt", b"capture plan v1\n", accessLevel="RESTRICTED"))["document"]
    reader = await make_login_user(env.owner, env.tenant, roles=["Viewer"])
    async with env.owner.begin() as conn:
        await set_tenant(conn, env.tenant.id)
        await conn.execute(
            text("INSERT INTO document_readers (tenant_id, document_id, user_id, added_by) VALUES (:t, :d, :u, :a)"),
            {"t": env.tenant.id, "d": first["rowId"], "u": reader.id, "a": env.user_id},
        )
    async with env.owner.connect() as conn:  # the reader row is the one the test wrote just now
        await set_tenant(conn, env.tenant.id)
        updated_at = (await conn.execute(text("SELECT updated_at FROM documents WHERE id = :d"),
                                         {"d": first["rowId"]})).scalar_one()
    variables = {"input": {"rowId": first["rowId"], "updatedAt": updated_at.isoformat(), "file": None}}
    response = await env.post(VERSION, variables, ("plan.txt", b"capture plan v2\n"))
    payload = response.json()["data"]["documentVersionUpload"]
    assert payload["errors"] == []
    async with env.owner.connect() as conn:
        await set_tenant(conn, env.tenant.id)
        readers = (await conn.execute(
            text("SELECT user_id FROM document_readers WHERE document_id = :d"), {"d": payload["versionRowId"]}
        )).scalars().all()
        event = (await conn.execute(
            text("SELECT after_values FROM audit_logs"
                 " WHERE entity_id = :d AND action_type = 'document.readers_copied'"),
            {"d": payload["versionRowId"]},
        )).scalar_one()
    assert readers == [reader.id]
    assert event["user_ids"] == [str(reader.id)] and event["from_version"] == first["rowId"]


async def test_no_version_of_a_document_the_caller_may_not_read(env: Env) -> None:
    from tests.support.graphql import sign_in

    first = (await env.upload("secret.txt", b"pricing strategy\n", accessLevel="CONFIDENTIAL"))["document"]
    outsider = await make_login_user(env.owner, env.tenant, roles=["Tenant Admin"])
    token = await sign_in(env.client, outsider)
    variables = {"input": {"rowId": first["rowId"], "updatedAt": first["updatedAt"], "file": None}}
    response = await env.post(VERSION, variables, ("secret.txt", b"v2\n"), headers={"authorization": f"Bearer {token}"})
    payload = response.json()["data"]["documentVersionUpload"]
    assert [e["code"] for e in payload["errors"]] == ["NOT_FOUND"]
    start = await env.client.post("/graphql", headers={"authorization": f"Bearer {token}"}, json={
        "query": "mutation($i: DocumentUploadStartInput!) {"
                 " documentUploadStart(input: $i) { ticket errors { code } } }",
        "variables": {"i": {"documentRowId": first["rowId"], "fileName": "v2.txt", "sizeBytes": 3, "sha256": "a" * 64}},
    })
    assert [e["code"] for e in start.json()["data"]["documentUploadStart"]["errors"]] == ["NOT_FOUND"]
    assert len(await env.rows()) == 1 and len(await env.objects()) == 1 and env.spooled() == []


async def test_the_upload_guard_passes_lifespan_and_websocket_scopes() -> None:
    from server.storage_routes import UploadGuard

    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guard = UploadGuard(app, max_bytes=10, concurrency=1)

    async def nothing(*_: Any) -> Any:
        return {}

    await guard({"type": "lifespan"}, nothing, nothing)
    await guard({"type": "websocket", "path": "/graphql", "headers": []}, nothing, nothing)
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize("value", ["x", {"filename": "a.pdf"}, 1])
async def test_a_file_sent_as_a_json_value_is_refused(env: Env, value: Any) -> None:
    """Only a part of a multipart request is a file: a JSON value in its place is BAD_USER_INPUT, not a crash."""
    variables = {"input": {"file": value, "opportunityProjectRowId": str(env.project_id)}}
    response = await env.client.post(
        "/graphql", json={"query": UPLOAD, "variables": variables}, headers={"authorization": f"Bearer {env.token}"}
    )
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert "multipart" in error["message"]
    assert await env.rows() == [] and await env.objects() == []


async def test_a_file_written_as_a_literal_is_refused(env: Env) -> None:
    """A literal in the document fails validation (the document is refused before anything runs)."""
    literal = f'{{file: "x", opportunityProjectRowId: "{env.project_id}"}}'
    query = f"mutation {{ documentUpload(input: {literal}) {{ errors {{ code }} }} }}"
    headers = {"authorization": f"Bearer {env.token}"}
    response = await env.client.post("/graphql", json={"query": query}, headers=headers)
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", error
    assert "multipart" in error["message"]
    assert await env.rows() == []
