"""Presigned uploads (the client sends the bytes itself) completed by a mutation that checks the
object, on the local backend (a signed URL of this server needing the preflight header) and on S3
(a presigned POST limited to the announced size); and the S3 server failing mid-stream."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.documents.conftest import UPLOAD, Env
from tests.documents.samples import html_bytes, pdf_bytes
from tests.support.s3 import MotoS3

START = """
mutation S($input: DocumentUploadStartInput!) {
  documentUploadStart(input: $input) {
    upload { method url fields headers expiresAt }
    ticket
    document { rowId }
    errors { field code message }
  }
}"""

COMPLETE = """
mutation C($input: DocumentUploadCompleteInput!) {
  documentUploadComplete(input: $input) {
    document { rowId name originalFilename mimeType fileSizeBytes fileHashSha256 versionNumber isCurrentVersion }
    errors { field code message }
  }
}"""


async def _gql(env: Env, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await env.client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"authorization": f"Bearer {env.token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def _start(env: Env, data: bytes, **extra: Any) -> dict[str, Any]:
    fields = {
        "opportunityProjectRowId": str(env.project_id),
        "fileName": "Volume I.pdf",
        "sizeBytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **extra,
    }
    started: dict[str, Any] = (await _gql(env, START, {"input": fields}))["documentUploadStart"]
    return started


async def _send(env: Env, upload: dict[str, Any], data: bytes, *, preflight: bool = True) -> httpx.Response:
    if upload["method"] == "POST":  # S3: the form, fields first, the file last
        async with httpx.AsyncClient() as http:
            return await http.post(upload["url"], data=upload["fields"], files={"file": ("f", io.BytesIO(data))})
    path = urlsplit(upload["url"]).path
    headers = dict(upload["headers"]) if preflight else {}
    return await env.client.put(path, content=data, headers=headers)


async def _complete(env: Env, ticket: str, **extra: Any) -> dict[str, Any]:
    done: dict[str, Any] = (await _gql(env, COMPLETE, {"input": {"ticket": ticket, **extra}}))["documentUploadComplete"]
    return done


@pytest.mark.audits("documentUploadComplete")
async def test_presigned_upload_completed_and_completed_again(env: Env) -> None:
    from tests.support.audit_trail import expect_audit

    data = pdf_bytes("Volume I")
    started = await _start(env, data)
    assert started["errors"] == [] and started["document"] is None
    upload = started["upload"]
    if env.backend == "s3":
        assert upload["method"] == "POST" and "policy" in upload["fields"]
    else:
        assert upload["method"] == "PUT" and upload["headers"] == {"GraphQL-Require-Preflight": "1"}
    sent = await _send(env, upload, data)
    assert sent.status_code in (200, 201, 204), sent.text
    done = await _complete(env, started["ticket"], name="Volume I", documentType="proposal_volume")
    assert done["errors"] == []
    document = done["document"]
    assert document["fileHashSha256"] == hashlib.sha256(data).hexdigest()
    assert document["mimeType"] == "application/pdf" and document["originalFilename"] == "Volume I.pdf"
    (row,) = await env.rows()
    assert await env.objects() == [row.storage_key]  # the staging object moved to the document's key
    assert row.storage_key.endswith(f"/{env.project_id}/{row.id}/{row.id}")
    await expect_audit(
        env.owner, env.tenant.id, "documentUploadComplete", action="document.uploaded", entity_id=row.id,
        history={"name", "storage_key"}, user_id=env.user_id,
    )
    again = await _complete(env, started["ticket"])
    assert again["errors"] == [] and again["document"]["rowId"] == document["rowId"]
    assert len(await env.rows()) == 1


async def test_presigned_new_version(env: Env) -> None:
    first = (await env.upload("v1.txt", b"version one\n"))["document"]
    data = b"version two, sent directly\n"
    started = await _start(env, data, documentRowId=first["rowId"], opportunityProjectRowId=None)
    assert started["errors"] == [] and started["document"]["rowId"] == first["rowId"]
    await _send(env, started["upload"], data)
    done = await _complete(env, started["ticket"])
    assert done["errors"] == [] and done["document"]["versionNumber"] == 2
    rows = await env.rows()
    assert [(r.version_number, r.is_current_version, r.parent_document_id) for r in rows] == [
        (1, False, None), (2, True, rows[0].id)
    ]


@pytest.mark.parametrize("case", ["html", "wrong-sha256", "wrong-size", "over-size"])
async def test_an_object_failing_the_checks_is_deleted(env: Env, case: str) -> None:
    announced = pdf_bytes("announced")
    sent = {
        "html": html_bytes(), "wrong-sha256": pdf_bytes("other"), "wrong-size": announced[:-1],
        "over-size": announced + b"\n% more than announced",
    }[case]
    if case == "html":
        announced = sent
    started = await _start(env, announced)
    response = await _send(env, started["upload"], sent)
    if case == "over-size" and env.backend == "local":
        assert response.status_code == 413  # the signed PUT takes at most the announced size
        assert await env.objects() == []
        return
    # moto does not enforce the POST policy's content-length-range (S3 does): the completion's own
    # size check refuses the object either way.
    assert response.status_code in (200, 201, 204), response.text
    done = await _complete(env, started["ticket"])
    assert done["document"] is None
    expected = "UNSUPPORTED_TYPE" if case == "html" else "INTEGRITY_MISMATCH"
    assert [e["code"] for e in done["errors"]] == [expected]
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []
    again = await _complete(env, started["ticket"])
    assert [e["code"] for e in again["errors"]] == ["UPLOAD_MISSING"]


async def test_start_refuses_what_cannot_be_taken(env: Env) -> None:
    from tests.documents.conftest import UPLOAD_LIMIT

    too_big = await _start(env, b"x", sizeBytes=UPLOAD_LIMIT + 1)
    assert [e["code"] for e in too_big["errors"]] == ["TOO_LARGE"] and too_big["ticket"] is None
    bad_hash = await _start(env, b"x", sha256="not-a-digest")
    assert [e["code"] for e in bad_hash["errors"]] == ["VALIDATION"]
    empty = await _start(env, b"")
    assert [e["code"] for e in empty["errors"]] == ["EMPTY_FILE"]


async def test_an_expired_or_forged_ticket_is_refused(env: Env) -> None:
    data = pdf_bytes("late")
    started = await _start(env, data)
    await _send(env, started["upload"], data)
    signer = env.app.state.uploads.signer
    real_clock = signer.clock
    signer.clock = lambda: real_clock() + datetime.timedelta(hours=2)
    try:
        late = await _complete(env, started["ticket"])
    finally:
        signer.clock = real_clock
    assert [e["code"] for e in late["errors"]] == ["UPLOAD_EXPIRED"]
    body, _, mac = started["ticket"].partition(".")
    forged = await _complete(env, f"{body}x.{mac}")
    assert [e["code"] for e in forged["errors"]] == ["UPLOAD_INVALID"]
    assert await env.rows() == []


@pytest.mark.parametrize("env", ["local"], indirect=True)  # the local backend's own URL
async def test_local_upload_url_rules(env: Env) -> None:
    data = pdf_bytes("local")
    started = await _start(env, data)
    upload = started["upload"]
    path = urlsplit(upload["url"]).path
    # No preflight header: refused (a cross-site form cannot send it).
    assert (await _send(env, upload, data, preflight=False)).status_code == 400
    # Tampered token.
    tampered = await env.client.put(path[:-2] + "xx", content=data, headers=upload["headers"])
    assert tampered.status_code == 403 and tampered.json()["errors"][0]["extensions"]["code"] == "UPLOAD_INVALID"
    # More than announced: refused on Content-Length, and while streaming without one.
    over = await env.client.put(path, content=data + b"x", headers=upload["headers"])
    assert over.status_code == 413

    async def chunked() -> AsyncIterator[bytes]:
        yield data
        yield b"more than announced"

    over_stream = await env.client.put(path, content=chunked(), headers=upload["headers"])
    assert over_stream.status_code == 413
    assert await env.objects() == [] and env.spooled() == []
    # The real one, then no second PUT over it.
    assert (await _send(env, upload, data)).status_code == 201
    assert (await _send(env, upload, data)).status_code == 409
    # Expired URL.
    storage_signer = env.storage.signer  # type: ignore[attr-defined]
    real_clock = storage_signer.clock
    storage_signer.clock = lambda: real_clock() + datetime.timedelta(hours=2)
    try:
        late = await env.client.put(path, content=data, headers=upload["headers"])
    finally:
        storage_signer.clock = real_clock
    assert late.status_code == 403 and late.json()["errors"][0]["extensions"]["code"] == "UPLOAD_EXPIRED"


class _CuttingProxy:
    """A TCP relay in front of the S3 server that drops every connection once `cut_after` bytes of
    requests have gone through it: an S3 server going away mid-stream."""

    def __init__(self, upstream: tuple[str, int], cut_after: int) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        sent = 0

        async def upstream() -> None:
            nonlocal sent
            while chunk := await reader.read(16384):
                sent += len(chunk)
                if sent > self.cut_after:
                    break
                up_writer.write(chunk)
                await up_writer.drain()

        async def downstream() -> None:
            while chunk := await up_reader.read(16384):
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.close()


@pytest.mark.parametrize("env", ["s3"], indirect=True)  # an S3 server going away
async def test_the_s3_server_failing_mid_stream_leaves_nothing(
    env: Env, moto_s3: MotoS3
) -> None:
    from storage.s3 import S3Storage

    real = env.app.state.uploads
    host, port = urlsplit(moto_s3.endpoint_url).hostname, urlsplit(moto_s3.endpoint_url).port
    assert host is not None and port is not None
    async with _CuttingProxy((host, port), cut_after=64 * 1024) as proxied:
        config = real.storage.config
        broken = S3Storage(dataclasses.replace(config, endpoint_url=proxied))
        env.app.state.uploads = type(real)(broken, real.limits, real.signer, real.url_lifetime)
        try:
            data = (b"A long capture plan, line after line.\n" * 5000)[:200_000]
            variables = {"input": {"file": None, "opportunityProjectRowId": str(env.project_id)}}
            response = await env.post(UPLOAD, variables, ("plan.txt", data))
        finally:
            env.app.state.uploads = real
    payload = response.json()["data"]["documentUpload"]
    assert payload["document"] is None
    assert [e["code"] for e in payload["errors"]] == ["STORAGE_UNAVAILABLE"]
    assert await env.rows() == [] and await env.objects() == [] and env.spooled() == []


def _ticket_claims(ticket: str) -> dict[str, Any]:
    import base64
    import json

    body = ticket.split(".", 1)[0]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


@pytest.mark.audits("documentUploadStart")
async def test_starting_a_presigned_upload_is_recorded(env: Env) -> None:
    from tests.support.audit_trail import expect_audit

    data = pdf_bytes("recorded")
    started = await _start(env, data)
    upload_id = _ticket_claims(started["ticket"])["i"]
    log, _ = await expect_audit(
        env.owner, env.tenant.id, "documentUploadStart", action="document.upload_started", entity_id=upload_id,
        operational=True, user_id=env.user_id,
    )
    assert log.after_values["sha256"] == hashlib.sha256(data).hexdigest()
    assert log.after_values["size_bytes"] == len(data)
    assert await env.rows() == []  # nothing but the event until the upload is completed


async def test_another_users_ticket_is_unknown(env: Env) -> None:
    from tests.support.graphql import sign_in
    from tests.support.http import make_login_user

    data = pdf_bytes("mine")
    started = await _start(env, data)
    await _send(env, started["upload"], data)
    colleague = await make_login_user(env.owner, env.tenant, roles=["Tenant Admin"])
    token = await sign_in(env.client, colleague)
    response = await env.client.post(
        "/graphql", json={"query": COMPLETE, "variables": {"input": {"ticket": started["ticket"]}}},
        headers={"authorization": f"Bearer {token}"},
    )
    payload = response.json()["data"]["documentUploadComplete"]
    assert [e["code"] for e in payload["errors"]] == ["UPLOAD_NOT_FOUND"]
    assert await env.rows() == []
