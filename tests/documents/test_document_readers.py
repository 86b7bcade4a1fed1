"""Named readers and content reads of restricted and confidential documents.

- documentReaderAdd / documentReaderRemove: the uploader names a reader of a restricted document, who
  then reads it; removed, the reader no longer does; each change is an event row of the document's trail.
- A caller outside the readers (a Tenant Admin) cannot name himself, nor change, delete or restore the
  document: NOT_FOUND, as for a missing id, and nothing changes.
- Content reads are accesses: reading `extractedText`, `contentPreview` or `searchSnippet` writes a
  document_access_logs row (who, IP, user agent, success), in a read-only request too; a confidential
  document's are at elevated risk; metadata reads write none.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for

MARK = "quokkafish"


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


@dataclass
class World:
    tenant: TenantRef
    users: dict[str, LoginUser]
    restricted: uuid.UUID
    confidential: uuid.UUID


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine) -> World:
    tenant = await create_tenant(owner_engine, "Document readers")
    users = {
        "uploader": await make_login_user(owner_engine, tenant, roles=["Capture Manager"]),
        "colleague": await make_login_user(owner_engine, tenant, roles=["Viewer"]),
        "admin": await make_login_user(owner_engine, tenant, roles=["Tenant Admin"]),
    }
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant)
        refs = {"opportunity_projects": project.id}
        ids = {}
        for level in ("restricted", "confidential"):
            row = await make(conn, "documents", tenant, refs, opportunity_project_id=project.id, access_level=level,
                             name=f"{level} {MARK}", uploaded_by=users["uploader"].id,
                             extracted_text=f"The {MARK} clause of the {level} document.",
                             content_preview=f"The {MARK} clause", processing_status="completed")
            ids[level] = row.id
    return World(tenant, users, ids["restricted"], ids["confidential"])


@pytest.fixture(scope="module")
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


ADD = """
mutation ($input: DocumentReaderAddInput!) {
  documentReaderAdd(input: $input) { document { rowId name } errors { code field message } }
}
"""
REMOVE = """
mutation ($input: DocumentReaderRemoveInput!) {
  documentReaderRemove(input: $input) { document { rowId } errors { code field message } }
}
"""
READ = "query ($id: ID!) { node(id: $id) { ... on Document { rowId name } } }"


async def _token(client: httpx.AsyncClient, world: World, who: str) -> str:
    return await sign_in(client, world.users[who])


async def _reads(client: httpx.AsyncClient, token: str, document: uuid.UUID) -> bool:
    body = await gql(client, READ, {"id": _gid("Document", document)}, token=token)
    return body["data"]["node"] is not None


async def _readers(owner_engine: AsyncEngine, world: World, document: uuid.UUID) -> set[uuid.UUID]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, world.tenant.id)
        rows = await conn.execute(text("SELECT user_id FROM document_readers WHERE document_id = :d"), {"d": document})
        return {r.user_id for r in rows}


@pytest.mark.audits("documentReaderAdd")
async def test_the_uploader_names_a_reader_who_then_reads_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    colleague = await _token(client, world, "colleague")
    assert not await _reads(client, colleague, world.restricted)
    token = await _token(client, world, "uploader")
    variables = {"input": {"documentRowId": str(world.restricted), "userRowId": str(world.users["colleague"].id)}}
    payload = (await gql(client, ADD, variables, token=token))["data"]["documentReaderAdd"]
    assert payload["errors"] == [] and payload["document"]["rowId"] == str(world.restricted)
    log, _ = await expect_audit(owner_engine, world.tenant.id, "documentReaderAdd", action="document.reader_added",
                                entity_id=world.restricted, history=None, operational=True,
                                user_id=world.users["uploader"].id)
    assert log.after_values["user_id"] == str(world.users["colleague"].id)
    assert await _reads(client, colleague, world.restricted)
    # Twice: a conflict, nothing added.
    again = (await gql(client, ADD, variables, token=token))["data"]["documentReaderAdd"]
    assert [e["code"] for e in again["errors"]] == ["CONFLICT"]
    assert await _readers(owner_engine, world, world.restricted) == {world.users["colleague"].id}


@pytest.mark.audits("documentReaderRemove")
async def test_a_removed_reader_no_longer_reads_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    token = await _token(client, world, "uploader")
    colleague = world.users["colleague"]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, world.tenant.id)
        await conn.execute(
            text("INSERT INTO document_readers (tenant_id, document_id, user_id, added_by) VALUES (:t, :d, :u, :u)"
                 " ON CONFLICT DO NOTHING"),
            {"t": world.tenant.id, "d": world.confidential, "u": colleague.id},
        )
    colleague_token = await _token(client, world, "colleague")
    assert await _reads(client, colleague_token, world.confidential)
    variables = {"input": {"documentRowId": str(world.confidential), "userRowId": str(colleague.id)}}
    payload = (await gql(client, REMOVE, variables, token=token))["data"]["documentReaderRemove"]
    assert payload["errors"] == []
    await expect_audit(owner_engine, world.tenant.id, "documentReaderRemove", action="document.reader_removed",
                       entity_id=world.confidential, history=None, operational=True,
                       user_id=world.users["uploader"].id)
    assert not await _reads(client, colleague_token, world.confidential)
    again = (await gql(client, REMOVE, variables, token=token))["data"]["documentReaderRemove"]
    assert [(e["code"], e["field"]) for e in again["errors"]] == [("NOT_FOUND", ["input", "userRowId"])]


UPDATE = """
mutation ($input: DocumentUpdateInput!) { documentUpdate(input: $input) { document { rowId } errors { code field } } }
"""
DELETE = """
mutation ($input: DocumentDeleteInput!) { documentDelete(input: $input) { document { rowId } errors { code field } } }
"""


async def test_an_outsider_can_neither_name_himself_nor_change_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    """A Tenant Admin outside the readers: every write answers NOT_FOUND, as for a missing id."""
    token = await _token(client, world, "admin")
    async with owner_engine.connect() as conn:
        await set_tenant(conn, world.tenant.id)
        before = (await conn.execute(text("SELECT name, access_level, updated_at, is_deleted FROM documents"
                                          " WHERE id = :d"), {"d": world.restricted})).one()
    me = {"documentRowId": str(world.restricted), "userRowId": str(world.users["admin"].id)}
    added = (await gql(client, ADD, {"input": me}, token=token))["data"]["documentReaderAdd"]
    assert [(e["code"], e["field"]) for e in added["errors"]] == [("NOT_FOUND", ["input", "documentRowId"])]
    target = {"rowId": str(world.restricted), "updatedAt": before.updated_at.isoformat()}
    changed = (await gql(client, UPDATE, {"input": {**target, "accessLevel": "TENANT"}}, token=token))
    assert [e["code"] for e in changed["data"]["documentUpdate"]["errors"]] == ["NOT_FOUND"]
    deleted = (await gql(client, DELETE, {"input": target}, token=token))["data"]["documentDelete"]
    assert [e["code"] for e in deleted["errors"]] == ["NOT_FOUND"] and deleted["document"] is None
    async with owner_engine.connect() as conn:
        await set_tenant(conn, world.tenant.id)
        after = (await conn.execute(text("SELECT name, access_level, updated_at, is_deleted FROM documents"
                                         " WHERE id = :d"), {"d": world.restricted})).one()
    assert after == before
    assert world.users["admin"].id not in await _readers(owner_engine, world, world.restricted)


# -- content reads ------------------------------------------------------------------------------------


async def _logs(owner_engine: AsyncEngine, world: World, user: uuid.UUID) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, world.tenant.id)
        rows = await conn.execute(
            text("SELECT document_id, access_type, ip_address, user_agent, success, failure_reason, risk_level"
                 " FROM document_access_logs WHERE user_id = :u ORDER BY accessed_at, access_type"),
            {"u": user},
        )
        return list(rows)


CONTENT = """
query ($ids: [ID!]!) {
  nodes(ids: $ids) { ... on Document { rowId name extractedText contentPreview } }
}
"""


async def test_content_reads_write_access_logs_and_metadata_reads_do_not(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    uploader = world.users["uploader"]
    token = await _token(client, world, "uploader")
    before = len(await _logs(owner_engine, world, uploader.id))
    assert await _reads(client, token, world.restricted)  # metadata only
    assert len(await _logs(owner_engine, world, uploader.id)) == before
    ids = [_gid("Document", world.restricted), _gid("Document", world.confidential)]
    response = await client.post(
        "/graphql", json={"query": CONTENT, "variables": {"ids": ids}},
        headers={"authorization": f"Bearer {token}", "user-agent": "reader-agent/1.0"},
    )
    body = response.json()
    assert "errors" not in body, body
    assert all(MARK in n["extractedText"] and MARK in n["contentPreview"] for n in body["data"]["nodes"])
    logs = (await _logs(owner_engine, world, uploader.id))[before:]
    got = sorted((r.document_id, r.access_type, r.risk_level) for r in logs)
    assert got == sorted([
        (world.restricted, "read_content_preview", "normal"),
        (world.restricted, "read_extracted_text", "normal"),
        (world.confidential, "read_content_preview", "elevated"),
        (world.confidential, "read_extracted_text", "elevated"),
    ])
    assert all(r.success and r.failure_reason is None and r.user_agent == "reader-agent/1.0" for r in logs)
    assert all(str(r.ip_address) == "127.0.0.1" for r in logs)


async def test_a_search_snippet_is_a_content_read(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: World
) -> None:
    uploader = world.users["uploader"]
    token = await _token(client, world, "uploader")
    before = len(await _logs(owner_engine, world, uploader.id))
    query = f'{{ documents(search: "{MARK}") {{ nodes {{ rowId searchSnippet }} }} }}'
    body = await gql(client, query, token=token)
    nodes = body["data"]["documents"]["nodes"]
    assert {n["rowId"] for n in nodes} == {str(world.restricted), str(world.confidential)}
    assert all("<mark>" in n["searchSnippet"] for n in nodes)
    logs = (await _logs(owner_engine, world, uploader.id))[before:]
    assert sorted((r.document_id, r.access_type, r.risk_level) for r in logs) == sorted([
        (world.restricted, "read_search_snippet", "normal"),
        (world.confidential, "read_search_snippet", "elevated"),
    ])
