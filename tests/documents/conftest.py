"""Fixtures of the documents tests: a fresh bucket per test on the session's S3 server (`moto_s3`,
tests/support/s3.py, registered in tests/conftest.py), the two storage backends, and `env`: an app
per backend with a tenant, an admin signed in and a project."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from server.app import create_app
from storage.base import DocumentStorage
from storage.local import LocalStorage
from storage.s3 import S3Storage
from storage.signing import Signer
from tests.conftest import Database
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.s3 import MotoS3

#: A signing key for tests (32 bytes).
TEST_SIGNING_KEY = b"k" * 32
#: The upload limit of the `env` apps.
UPLOAD_LIMIT = 256 * 1024

UPLOAD = """
mutation Up($input: DocumentUploadInput!) {
  documentUpload(input: $input) {
    document { rowId name originalFilename mimeType fileExtension fileSizeBytes fileHashSha256 fileHashMd5
               versionNumber isCurrentVersion processingStatus updatedAt }
    errors { field code message }
  }
}"""


@pytest.fixture
async def s3_bucket(moto_s3: MotoS3) -> str:
    """A new, empty bucket on the session's S3 server."""
    return await moto_s3.create_bucket()


@pytest.fixture
async def s3_storage(moto_s3: MotoS3, s3_bucket: str) -> AsyncIterator[S3Storage]:
    """The S3 backend on a fresh bucket, keys under "gwm/"."""
    storage = S3Storage(moto_s3.config(s3_bucket))
    yield storage
    await storage.aclose()


@pytest.fixture
def local_storage(tmp_path: Path) -> LocalStorage:
    """The local backend under a temporary directory."""
    return LocalStorage(tmp_path / "documents", signer=Signer(TEST_SIGNING_KEY), public_url="http://127.0.0.1:8000")


@dataclass
class Env:
    """One app (one backend) with a tenant, an admin signed in, and a project."""

    backend: str
    app: Starlette
    client: httpx.AsyncClient
    owner: AsyncEngine
    tenant: TenantRef
    token: str
    user_id: uuid.UUID
    project_id: uuid.UUID
    spool: Path

    @property
    def storage(self) -> DocumentStorage:
        found: DocumentStorage = self.app.state.uploads.storage
        return found

    async def post(
        self,
        query: str,
        variables: dict[str, Any],
        file: tuple[str, bytes] | None,
        *,
        path: str = "input.file",
        preflight: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A GraphQL multipart request (operations, map, the file part "0")."""
        operations = json.dumps({"query": query, "variables": variables})
        data = {"operations": operations, "map": json.dumps({"0": [f"variables.{path}"]} if file else {})}
        files = {"0": (file[0], file[1], "application/octet-stream")} if file else None
        sent = {"authorization": f"Bearer {self.token}", **(headers or {})}
        if preflight:
            sent["graphql-require-preflight"] = "1"
        return await self.client.post("/graphql", data=data, files=files, headers=sent)

    async def upload(self, file_name: str, data: bytes, **fields: Any) -> dict[str, Any]:
        variables = {"input": {"file": None, "opportunityProjectRowId": str(self.project_id), **fields}}
        response = await self.post(UPLOAD, variables, (file_name, data))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        payload: dict[str, Any] = body["data"]["documentUpload"]
        return payload

    async def rows(self) -> list[Any]:
        async with self.owner.connect() as conn:
            await set_tenant(conn, self.tenant.id)
            result = await conn.execute(
                text("SELECT * FROM documents WHERE tenant_id = :t ORDER BY created_at, version_number"),
                {"t": self.tenant.id},
            )
            return list(result)

    async def objects(self) -> list[str]:
        """Every object of the store (all keys)."""
        storage = self.storage
        if self.backend == "local":
            root = storage.root  # type: ignore[attr-defined]
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        import aioboto3  # type: ignore[import-untyped]

        session = aioboto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        config = storage.config  # type: ignore[attr-defined]
        async with session.client("s3", endpoint_url=config.endpoint_url) as s3:
            listed = await s3.list_objects_v2(Bucket=config.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def spooled(self) -> list[str]:
        return os.listdir(self.spool)


def open_temp_files() -> int:
    """Files this process holds open that were deleted or live in a temporary directory (the
    multipart parser's spooled files), to show none is left behind."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "(deleted)" in target or "gwm-upload" in target:
            count += 1
    return count


@pytest.fixture(params=["local", "s3"])
async def env(
    request: pytest.FixtureRequest, database: Database, owner_engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[Env]:
    backend: str = request.param
    spool = tmp_path / "spool"
    spool.mkdir()
    overrides: dict[str, Any] = {
        "storage_dir": tmp_path / "documents",
        "upload_max_bytes": UPLOAD_LIMIT,
        "upload_temp_dir": spool,
    }
    if backend == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        overrides |= {
            "storage_backend": "s3",
            "s3_bucket": await moto.create_bucket(),
            "s3_endpoint_url": moto.endpoint_url,
            "s3_prefix": "docs/",
        }
    app = create_app(settings_for(database.app_url, **overrides))
    tenant = await create_tenant(owner_engine)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant)
    user = await make_login_user(owner_engine, tenant, roles=["Tenant Admin"])
    async with app_client(app) as client:
        token = await sign_in(client, user)
        yield Env(backend, app, client, owner_engine, tenant, token, user.id, project.id, spool)
