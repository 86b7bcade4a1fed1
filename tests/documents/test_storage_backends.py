"""The two storage backends against the same contract, S3 on moto's server on 127.0.0.1: store,
read, size, delete; hashes computed while streaming; types from the bytes; every refusal leaves no
object and no temporary file; presigned uploads carry their limits."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from storage import ingest
from storage.base import DocumentStorage
from storage.errors import Refused
from storage.keys import object_key, parse_key
from storage.local import LocalStorage
from storage.s3 import S3Storage
from tests.documents.samples import docx_bytes, exe_bytes, html_bytes, pdf_bytes, svg_bytes, zip_bytes
from tests.support.s3 import MotoS3

BACKENDS = ["local", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> DocumentStorage:
    name = request.param
    return request.getfixturevalue("local_storage" if name == "local" else "s3_storage")  # type: ignore[no-any-return]


@pytest.fixture
def temp_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


def _key(storage: DocumentStorage) -> str:
    doc = uuid.uuid4()
    return storage.key_for(object_key(uuid.uuid4(), uuid.uuid4(), doc, doc))


async def _chunks(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _read(storage: DocumentStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


def test_keys_are_built_from_ids_only() -> None:
    tenant, project, doc, version = (uuid.uuid4() for _ in range(4))
    key = object_key(tenant, project, doc, version)
    assert key == f"{tenant}/{project}/{doc}/{version}"
    assert parse_key(key) == (tenant, project, doc, version)
    assert object_key(tenant, None, doc, version).split("/")[1] == "none"
    for hostile in ("../etc/passwd", f"{tenant}/{project}/{doc}/../x", f"{key}/name.pdf", ""):
        with pytest.raises(ValueError):
            parse_key(hostile)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (pdf_bytes("hello"), "application/pdf"),
        (docx_bytes("hello"), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("Plain text, UTF-8: é ü 漢字\n".encode() * 10, "text/plain"),
    ],
)
async def test_store_read_delete_with_hashes(backend: DocumentStorage, temp_dir: Path, data: bytes, mime: str) -> None:
    key = _key(backend)
    stored = await ingest.store(backend, key, _chunks(data), ingest.Limits(1024 * 1024, temp_dir))
    assert stored.size == len(data) == await backend.size(key)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert stored.mime_type == mime
    assert await _read(backend, key) == data
    assert os.listdir(temp_dir) == []
    await backend.delete(key)
    assert await backend.size(key) is None
    with pytest.raises(FileNotFoundError):
        await _read(backend, key)
    await backend.delete(key)  # idempotent


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (exe_bytes(), "application/x-executable"),
        (html_bytes(), "text/html"),
        (svg_bytes(), "text/html"),
        (zip_bytes(), "application/zip"),
        (b"\x00\x01\x02binary" * 100, "application/octet-stream"),
    ],
    ids=["elf-named-pdf", "html", "svg", "zip", "binary"],
)
async def test_types_outside_the_allow_list_are_refused_leaving_nothing(
    backend: DocumentStorage, temp_dir: Path, data: bytes, found: str
) -> None:
    key = _key(backend)
    with pytest.raises(Refused) as refused:
        await ingest.store(backend, key, _chunks(data), ingest.Limits(1024 * 1024, temp_dir))
    assert refused.value.code == "UNSUPPORTED_TYPE"
    assert found in refused.value.message
    assert await backend.size(key) is None
    assert os.listdir(temp_dir) == []


async def test_too_large_is_refused_while_streaming(backend: DocumentStorage, temp_dir: Path) -> None:
    key = _key(backend)
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 4096
            yield b"a" * 4096

    with pytest.raises(Refused) as refused:
        await ingest.store(backend, key, endless(), ingest.Limits(100_000, temp_dir))
    assert refused.value.code == "TOO_LARGE"
    assert read <= 100_000 + 4096  # stopped at the limit, not after reading everything
    assert await backend.size(key) is None
    assert os.listdir(temp_dir) == []


async def test_a_stream_failing_midway_leaves_nothing(backend: DocumentStorage, temp_dir: Path) -> None:
    key = _key(backend)

    async def broken() -> AsyncIterator[bytes]:
        yield b"text " * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await ingest.store(backend, key, broken(), ingest.Limits(1024 * 1024, temp_dir))
    assert await backend.size(key) is None
    assert os.listdir(temp_dir) == []


async def test_announced_digest_and_size_are_checked(backend: DocumentStorage, temp_dir: Path) -> None:
    data = b"some text\n" * 50
    key = _key(backend)
    with pytest.raises(Refused) as refused:
        await ingest.store(backend, key, _chunks(data), ingest.Limits(10_000, temp_dir), sha256="0" * 64)
    assert refused.value.code == "INTEGRITY_MISMATCH"
    with pytest.raises(Refused):
        await ingest.store(backend, key, _chunks(data), ingest.Limits(10_000, temp_dir), size=len(data) + 1)
    assert await backend.size(key) is None
    with pytest.raises(Refused) as empty:
        await ingest.store(backend, key, _chunks(b""), ingest.Limits(10_000, temp_dir))
    assert empty.value.code == "EMPTY_FILE"


async def test_verify_deletes_a_refused_object(backend: DocumentStorage, temp_dir: Path) -> None:
    key = _key(backend)
    src = temp_dir.parent / "src.html"
    src.write_bytes(html_bytes())
    await backend.put_file(key, src, content_type="text/plain")
    with pytest.raises(Refused) as refused:
        await ingest.verify(backend, key, ingest.Limits(10_000, temp_dir), sha256=None, size=None)
    assert refused.value.code == "UNSUPPORTED_TYPE"
    assert await backend.size(key) is None
    with pytest.raises(Refused) as missing:
        await ingest.verify(backend, key, ingest.Limits(10_000, temp_dir), sha256=None, size=None)
    assert missing.value.code == "UPLOAD_MISSING"
    good = pdf_bytes("fine")
    src.write_bytes(good)
    await backend.put_file(key, src, content_type="application/pdf")
    stored = await ingest.verify(
        backend, key, ingest.Limits(10_000, temp_dir), sha256=hashlib.sha256(good).hexdigest(), size=len(good)
    )
    assert stored.mime_type == "application/pdf" and await backend.size(key) == len(good)
    assert sorted(os.listdir(temp_dir)) == []


async def test_s3_presigned_post_carries_the_content_length_range(s3_storage: S3Storage) -> None:
    key = _key(s3_storage)
    upload = await s3_storage.presign_upload(key, max_bytes=5000, lifetime=datetime.timedelta(minutes=5))
    assert upload.method == "POST" and upload.fields["key"] == key
    assert upload.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    policy = json.loads(base64.b64decode(upload.fields["policy"]))
    assert ["content-length-range", 1, 5000] in policy["conditions"]
    data = pdf_bytes("uploaded by the client")
    async with httpx.AsyncClient() as http:
        ok = await http.post(upload.url, data=upload.fields, files={"file": ("x.pdf", io.BytesIO(data))})
        assert ok.status_code in (200, 204), ok.text
    assert await s3_storage.size(key) == len(data)


async def test_s3_presigned_get_expires_after_the_lifetime(s3_storage: S3Storage, temp_dir: Path) -> None:
    key = _key(s3_storage)
    src = temp_dir.parent / "a.pdf"
    src.write_bytes(pdf_bytes("x"))
    await s3_storage.put_file(key, src, content_type="application/pdf")
    url = await s3_storage.presign_download(
        key, lifetime=datetime.timedelta(seconds=300), filename="Réponse \"final\".pdf", content_type="application/pdf"
    )
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["300"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "filename*=utf-8''R%C3%A9ponse" in query["response-content-disposition"][0]
    async with httpx.AsyncClient() as http:
        got = await http.get(url)
    assert got.status_code == 200 and got.content == src.read_bytes()


async def test_s3_objects_use_the_kms_key(moto_s3: MotoS3, s3_bucket: str, temp_dir: Path) -> None:
    import aioboto3  # type: ignore[import-untyped]

    storage = S3Storage(moto_s3.config(s3_bucket, kms_key_id="alias/gwm-documents"))
    key = _key(storage)
    assert key.startswith("gwm/")
    stored = await ingest.store(storage, key, _chunks(pdf_bytes("secret")), ingest.Limits(10_000, temp_dir))
    session = aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    async with session.client("s3", endpoint_url=moto_s3.endpoint_url) as s3:
        head = await s3.head_object(Bucket=s3_bucket, Key=stored.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/gwm-documents")
    assert storage.kms_key_id == "alias/gwm-documents"


async def test_local_presigned_upload_is_a_signed_url_needing_the_preflight_header(local_storage: LocalStorage) -> None:
    key = _key(local_storage)
    upload = await local_storage.presign_upload(key, max_bytes=1234, lifetime=datetime.timedelta(minutes=1))
    assert upload.method == "PUT" and upload.headers == {"GraphQL-Require-Preflight": "1"}
    token = upload.url.rsplit("/", 1)[1]
    claims = local_storage.signer.verify("storage.upload", token)
    assert claims["key"] == key and claims["max"] == 1234
