"""Trusted documents and automatic persisted queries (schema/trusted_documents.py; docs/api.md).

With trusted documents on, a caller without graphql:adhoc (a Viewer) runs only the shipped operations
and its tenant's registered documents, by text or by hash, on both view paths (the prepared path that
answers repeats without strawberry, and strawberry's, GET included); anything else is refused with
TRUSTED_DOCUMENT_REQUIRED having run no SQL beyond the principal lookup and the registry lookup
(counted at the driver). Persisted queries (Apollo's protocol) are shared through the database by
two app instances; only a caller holding graphql:adhoc stores one, and an entry never admits a
document for a Viewer. Registrations are per tenant and bounded. Everything over real HTTP (httpx
ASGITransport) against the test PostgreSQL.
"""

from __future__ import annotations

import json
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
from models.trusted_documents import document_hash
from schema.compiled.runner import PreparedCache
from schema.trusted_documents import OPERATIONS_DIR
from server.app import create_app
from server.settings import Settings
from tests.conftest import Database
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef, create_tenant
from tests.support.graphql import sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import RoundTrip, count_round_trips

ORGANIZATIONS = "query TrustedOrganizations { organizations(first: 5) { nodes { rowId name } } }"
OTHER = "query TrustedOther { organizations(first: 3) { nodes { rowId } } }"
VIEWER_OPERATION = (OPERATIONS_DIR / "viewer.graphql").read_bytes().decode("utf-8")
REGISTER = """mutation ($input: TrustedDocumentRegisterInput!) {
  trustedDocumentRegister(input: $input) {
    trustedDocument { id sha256Hash name document registeredBy createdAt }
    errors { field code message }
  }
}"""
LIST = "{ trustedDocuments { id sha256Hash name document registeredBy createdAt } }"
UNREGISTER = """mutation ($input: TrustedDocumentUnregisterInput!) {
  trustedDocumentUnregister(input: $input) { deletedId deletedRowId errors { field code message } }
}"""


@pytest.fixture(scope="module")
def settings(database: Database) -> Settings:
    return settings_for(
        database.app_url, trusted_documents=True, trusted_documents_max=3, persisted_queries_max=2, db_pool_size=2
    )


@pytest.fixture(scope="module")
def app(settings: Settings) -> Starlette:
    return create_app(settings)


@pytest.fixture(scope="module")
def second_app(settings: Settings) -> Starlette:
    """Another gateway process on the same database."""
    return create_app(settings)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@pytest.fixture
async def second(second_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(second_app) as http:
        yield http


@dataclass
class Team:
    tenant: TenantRef
    viewer: str
    analyst: str
    admin: str
    admin_id: uuid.UUID


async def _team(client: httpx.AsyncClient, owner_engine: AsyncEngine, tenant: TenantRef) -> Team:
    admin = await make_login_user(owner_engine, tenant, roles=["Tenant Admin"])
    return Team(
        tenant=tenant,
        viewer=await sign_in(client, await make_login_user(owner_engine, tenant, roles=["Viewer"])),
        analyst=await sign_in(client, await make_login_user(owner_engine, tenant, roles=["BD Analyst"])),
        admin=await sign_in(client, admin),
        admin_id=admin.id,
    )


@pytest.fixture
async def team(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> Team:
    return await _team(client, owner_engine, fresh_tenant)


async def _post(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/graphql", json=body, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _get(client: httpx.AsyncClient, token: str, params: dict[str, str]) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
    response = await client.get("/graphql", params=params, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _by_hash(document: str, *, with_text: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": document_hash(document)}}}
    if with_text:
        body["query"] = document
    return body


def _code(body: dict[str, Any]) -> str:
    (error,) = body["errors"]
    assert body.get("data") is None, body
    code: str = error["extensions"]["code"]
    return code


async def _register(client: httpx.AsyncClient, token: str, document: str, name: str | None = None) -> dict[str, Any]:
    body = await _post(client, token, {"query": REGISTER, "variables": {"input": {"document": document, "name": name}}})
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["trustedDocumentRegister"]
    return payload


async def _unregister(client: httpx.AsyncClient, token: str, row_id: str) -> dict[str, Any]:
    body = await _post(client, token, {"query": UNREGISTER, "variables": {"input": {"id": row_id}}})
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["trustedDocumentUnregister"]
    return payload


def _prepared(app: Starlette) -> PreparedCache:
    cache = app.state.graphql.prepared
    assert isinstance(cache, PreparedCache)
    return cache


def _statements(trips: list[RoundTrip]) -> list[str]:
    """The statements of the trips (transaction control and a statement's prepare exchange left out)."""
    return [t.sql for t in trips if not t.is_transaction_control and t.kind != "prepare"]


async def _counted(
    client: httpx.AsyncClient, app: Starlette, token: str, body: dict[str, Any]
) -> tuple[dict[str, Any], list[str], int]:
    with count_round_trips(app.state.engine) as trips:
        answer = await _post(client, token, body)
    begins = sum(1 for t in trips if t.is_transaction_control and t.sql.strip().upper().startswith("BEGIN"))
    return answer, _statements(list(trips)), begins


def _assert_refused_after_lookups(statements: list[str], begins: int) -> None:
    """Only the principal lookup and one registry lookup ran, in the one read transaction."""
    assert begins == 1, statements
    assert len(statements) == 2, statements
    assert "gwm_request_session" in statements[0], statements
    assert "FROM trusted_documents" in statements[1] and "persisted_queries" not in statements[1], statements


# -- a Viewer runs registered documents only ----------------------------------------------------


async def test_a_viewer_runs_shipped_operations_by_text_and_hash_without_registry_sql(
    client: httpx.AsyncClient, app: Starlette, team: Team
) -> None:
    for body in ({"query": VIEWER_OPERATION}, _by_hash(VIEWER_OPERATION)):
        answer, statements, _ = await _counted(client, app, team.viewer, body)
        assert "errors" not in answer, answer
        assert answer["data"]["viewer"]["roles"], answer
        assert not [s for s in statements if "trusted_documents" in s or "persisted_queries" in s], statements


async def test_an_unregistered_document_is_refused_on_both_paths_and_a_registered_one_runs(
    client: httpx.AsyncClient, app: Starlette, team: Team
) -> None:
    cache = _prepared(app)
    # The analyst (graphql:adhoc) runs it twice: the second is served prepared, so the Viewer's repeats
    # of the same text reach the prepared path first.
    for _ in range(2):
        answer, statements, _ = await _counted(client, app, team.analyst, {"query": ORGANIZATIONS})
        assert "errors" not in answer and "organizations" in answer["data"], answer
        assert not [s for s in statements if "trusted_documents" in s], statements  # no registry SQL for adhoc
    assert (cache.hits, "prepared") and "organizations" in answer["extensions"]["compiled"]

    hits = cache.hits
    for body in ({"query": ORGANIZATIONS}, {"query": ORGANIZATIONS}, _by_hash(ORGANIZATIONS)):
        refused, statements, begins = await _counted(client, app, team.viewer, body)
        assert _code(refused) == "TRUSTED_DOCUMENT_REQUIRED", refused
        (error,) = refused["errors"]
        assert error["extensions"]["permission"] == "graphql:adhoc"
        assert error["extensions"]["sha256Hash"] == document_hash(ORGANIZATIONS)
        _assert_refused_after_lookups(statements, begins)
    assert cache.hits == hits  # the prepared path served none of them

    registered = await _register(client, team.admin, ORGANIZATIONS, "organizations page")
    assert registered["errors"] == [], registered
    assert registered["trustedDocument"]["sha256Hash"] == document_hash(ORGANIZATIONS)

    hits = cache.hits
    ran, statements, _ = await _counted(client, app, team.viewer, {"query": ORGANIZATIONS})
    assert "errors" not in ran and "organizations" in ran["data"], ran
    assert cache.hits == hits + 1, "the Viewer's registered document was served by the prepared path"
    assert "extensions" not in ran  # extensions.compiled is for graphql:adhoc only
    assert len([s for s in statements if "FROM trusted_documents" in s]) == 1, statements
    by_hash = await _post(client, team.viewer, _by_hash(ORGANIZATIONS))
    assert by_hash == ran, (by_hash, ran)
    # With the text and its hash: the same.
    assert await _post(client, team.viewer, _by_hash(ORGANIZATIONS, with_text=True)) == ran

    # Unregistered: refused again, on both paths.
    removed = await _unregister(client, team.admin, registered["trustedDocument"]["id"])
    assert removed["errors"] == [] and removed["deletedRowId"] == registered["trustedDocument"]["id"], removed
    hits = cache.hits
    for body in ({"query": ORGANIZATIONS}, _by_hash(ORGANIZATIONS)):
        assert _code(await _post(client, team.viewer, body)) == "TRUSTED_DOCUMENT_REQUIRED"
    assert cache.hits == hits


async def test_get_is_gated_the_same_way(client: httpx.AsyncClient, team: Team) -> None:
    refused = await _get(client, team.viewer, {"query": OTHER})
    assert _code(refused) == "TRUSTED_DOCUMENT_REQUIRED"
    assert (await _register(client, team.admin, OTHER))["errors"] == []
    by_text = await _get(client, team.viewer, {"query": OTHER})
    assert "errors" not in by_text and "organizations" in by_text["data"], by_text
    extensions = json.dumps(_by_hash(OTHER)["extensions"])
    by_hash = await _get(client, team.viewer, {"extensions": extensions})
    assert by_hash == by_text
    # A mutation stays refused over GET even when registered (405, before anything runs).
    assert (await _register(client, team.admin, UNREGISTER))["errors"] == []
    response = await client.get(
        "/graphql", params={"query": UNREGISTER, "variables": json.dumps({"input": {"id": str(uuid.uuid4())}})},
        headers={"authorization": f"Bearer {team.viewer}", "accept": "application/json"},
    )
    assert response.status_code == 405, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_registration_is_for_graphql_document_register_holders_and_checks_production_limits(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, team: Team
) -> None:
    register = {"query": REGISTER, "variables": {"input": {"document": OTHER}}}
    # The Viewer may not even send the mutation's document until it is registered ...
    assert _code(await _post(client, team.viewer, register)) == "TRUSTED_DOCUMENT_REQUIRED"
    assert (await _register(client, team.admin, REGISTER))["errors"] == []
    # ... and then lacks the permission, as the analyst (graphql:adhoc, not the registration) does.
    for token in (team.viewer, team.analyst):
        body = await _post(client, token, register)
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "FORBIDDEN", "permission": "graphql:document:register"}, body
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(16)) + " }"
    for document, field in (
        (aliases, "document"),  # 16 aliases: over production's 15, whatever the deployment's profile
        ("{ __schema { queryType { name } } }", "document"),
        ("{ organizations { nodes { nme } } }", "document"),
        ("query {", "document"),
    ):
        payload = await _register(client, team.admin, document)
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("VALIDATION", ["input", field])], payload
        assert "Did you mean" not in payload["errors"][0]["message"]
    async with owner_engine.connect() as conn:
        await set_tenant(conn, team.tenant.id)
        count = await conn.scalar(text("SELECT count(*) FROM trusted_documents WHERE tenant_id = :t"),
                                  {"t": team.tenant.id})
    assert count == 1  # the mutation's own document, registered above


# -- persisted queries ----------------------------------------------------------------------------


async def test_a_viewer_cannot_store_a_persisted_query(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, team: Team
) -> None:
    document = f"query ViewerApq {{ organizations(first: 2) {{ nodes {{ rowId }} }} }} # {uuid.uuid4()}"
    refused = await _post(client, team.viewer, _by_hash(document, with_text=True))
    assert _code(refused) == "TRUSTED_DOCUMENT_REQUIRED"
    # Nothing was stored: the analyst's hash alone is not found.
    assert _code(await _post(client, team.analyst, _by_hash(document))) == "PERSISTED_QUERY_NOT_FOUND"
    async with owner_engine.connect() as conn:
        await set_tenant(conn, team.tenant.id)
        stored = await conn.scalar(text("SELECT count(*) FROM persisted_queries WHERE sha256_hash = :h"),
                                   {"h": document_hash(document)})
    assert stored == 0


async def test_persisted_queries_are_shared_by_two_processes_and_grant_nothing(
    client: httpx.AsyncClient, second: httpx.AsyncClient, app: Starlette, team: Team
) -> None:
    document = f"query Apq {{ organizations(first: 2) {{ nodes {{ rowId name }} }} }} # {uuid.uuid4()}"
    missing = await _post(client, team.analyst, _by_hash(document))
    assert _code(missing) == "PERSISTED_QUERY_NOT_FOUND"
    assert missing["errors"][0]["message"] == "PersistedQueryNotFound"
    stored = await _post(client, team.analyst, _by_hash(document, with_text=True))
    assert "errors" not in stored and "organizations" in stored["data"], stored
    # The other process finds it by hash.
    found = await _post(second, team.analyst, _by_hash(document))
    assert "errors" not in found and found["data"] == stored["data"], found
    # An entry is no grant: the Viewer is refused by hash and by text.
    for client_ in (client, second):
        assert _code(await _post(client_, team.viewer, _by_hash(document))) == "TRUSTED_DOCUMENT_REQUIRED"
        assert _code(await _post(client_, team.viewer, {"query": document})) == "TRUSTED_DOCUMENT_REQUIRED"


async def test_a_persisted_query_must_match_its_hash_and_version(client: httpx.AsyncClient, team: Team) -> None:
    body = _by_hash(ORGANIZATIONS)
    body["query"] = OTHER
    assert _code(await _post(client, team.analyst, body)) == "PERSISTED_QUERY_HASH_MISMATCH"
    body = {"query": OTHER, "extensions": {"persistedQuery": {"version": 2, "sha256Hash": document_hash(OTHER)}}}
    assert _code(await _post(client, team.analyst, body)) == "PERSISTED_QUERY_NOT_SUPPORTED"
    body = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "not-a-hash"}}}
    assert _code(await _post(client, team.analyst, body)) == "BAD_REQUEST"


async def test_the_persisted_queries_cache_is_bounded_per_tenant(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, team: Team
) -> None:
    documents = [f"query Bounded{i} {{ __typename }}" for i in range(3)]  # the bound is 2 (settings)
    for document in documents:
        assert "errors" not in await _post(client, team.analyst, _by_hash(document, with_text=True))
    async with owner_engine.connect() as conn:
        await set_tenant(conn, team.tenant.id)
        kept = set((await conn.execute(
            text("SELECT sha256_hash FROM persisted_queries WHERE tenant_id = :t"), {"t": team.tenant.id}
        )).scalars())
    assert kept == {document_hash(d) for d in documents[1:]}
    assert _code(await _post(client, team.analyst, _by_hash(documents[0]))) == "PERSISTED_QUERY_NOT_FOUND"


# -- per tenant, bounded --------------------------------------------------------------------------


async def test_registrations_belong_to_their_tenant(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, team: Team
) -> None:
    there = await _team(client, owner_engine, await create_tenant(owner_engine))
    registered = await _register(client, team.admin, OTHER)
    assert registered["errors"] == []
    assert "errors" not in await _post(client, team.viewer, {"query": OTHER})
    assert _code(await _post(client, there.viewer, {"query": OTHER})) == "TRUSTED_DOCUMENT_REQUIRED"
    assert _code(await _post(client, there.viewer, _by_hash(OTHER))) == "TRUSTED_DOCUMENT_REQUIRED"
    # The other tenant cannot unregister it (a missing id to them) ...
    missing = await _unregister(client, there.admin, registered["trustedDocument"]["id"])
    assert [e["code"] for e in missing["errors"]] == ["NOT_FOUND"], missing
    # ... and registers its own, independently.
    theirs = await _register(client, there.admin, OTHER)
    assert theirs["errors"] == [] and theirs["trustedDocument"]["id"] != registered["trustedDocument"]["id"]
    assert "errors" not in await _post(client, there.viewer, {"query": OTHER})
    assert (await _unregister(client, team.admin, registered["trustedDocument"]["id"]))["errors"] == []
    assert _code(await _post(client, team.viewer, {"query": OTHER})) == "TRUSTED_DOCUMENT_REQUIRED"
    assert "errors" not in await _post(client, there.viewer, {"query": OTHER})


async def test_the_registry_is_bounded_and_registering_is_idempotent_by_content(
    client: httpx.AsyncClient, team: Team
) -> None:
    documents = [f"query Kept{i} {{ organizations(first: {i + 1}) {{ nodes {{ rowId }} }} }}" for i in range(4)]
    ids = [(await _register(client, team.admin, d))["trustedDocument"]["id"] for d in documents[:3]]
    again = await _register(client, team.admin, documents[0])
    assert again["errors"] == [] and again["trustedDocument"]["id"] == ids[0]
    over = await _register(client, team.admin, documents[3])
    assert [(e["code"], e["field"]) for e in over["errors"]] == [("VALIDATION", ["input", "document"])], over
    assert "GWM_TRUSTED_DOCUMENTS_MAX" in over["errors"][0]["message"]
    assert _code(await _post(client, team.viewer, {"query": documents[3]})) == "TRUSTED_DOCUMENT_REQUIRED"
    assert (await _unregister(client, team.admin, ids[1]))["errors"] == []
    assert (await _register(client, team.admin, documents[3]))["errors"] == []
    assert "errors" not in await _post(client, team.viewer, {"query": documents[3]})
    listed = await _post(client, team.admin, {"query": LIST})
    assert [d["id"] for d in listed["data"]["trustedDocuments"]][:2] == [ids[0], ids[2]], listed
    assert [d["document"] for d in listed["data"]["trustedDocuments"]] == [documents[0], documents[2], documents[3]]
    refused = await _post(client, team.analyst, {"query": LIST})  # graphql:adhoc, not the registration
    assert refused["errors"][0]["extensions"] == {"code": "FORBIDDEN", "permission": "graphql:document:register"}


# -- audit ----------------------------------------------------------------------------------------


@pytest.mark.audits("trustedDocumentRegister")
async def test_registering_is_audited(client: httpx.AsyncClient, owner_engine: AsyncEngine, team: Team) -> None:
    payload = await _register(client, team.admin, ORGANIZATIONS, "audited")
    row_id = uuid.UUID(payload["trustedDocument"]["id"])
    log, _ = await expect_audit(
        owner_engine, team.tenant.id, "trustedDocumentRegister", action="graphql.document.registered",
        entity_id=row_id, history=None, user_id=team.admin_id,
    )
    assert log.after_values["document_sha256"] == document_hash(ORGANIZATIONS)
    assert "graphql:document:register" in (log.permission_used or "")


@pytest.mark.audits("trustedDocumentUnregister")
async def test_unregistering_is_audited(client: httpx.AsyncClient, owner_engine: AsyncEngine, team: Team) -> None:
    payload = await _register(client, team.admin, OTHER, "to remove")
    row_id = payload["trustedDocument"]["id"]
    assert (await _unregister(client, team.admin, row_id))["errors"] == []
    log, _ = await expect_audit(
        owner_engine, team.tenant.id, "trustedDocumentUnregister", action="graphql.document.unregistered",
        entity_id=uuid.UUID(row_id), history=None, user_id=team.admin_id,
    )
    assert log.after_values["name"] == "to remove"


# -- round trips ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_app(database: Database) -> Starlette:
    """The same gateway with trusted documents off (a development deployment)."""
    return create_app(settings_for(database.app_url, db_pool_size=2))


async def _trips(client: httpx.AsyncClient, app: Starlette, token: str, body: dict[str, Any]) -> list[RoundTrip]:
    for _ in range(3):  # warm the pooled connections' statement caches
        await _post(client, token, body)
    with count_round_trips(app.state.engine) as trips:
        answer = await _post(client, token, body)
    assert "errors" not in answer, answer
    return list(trips)


async def test_adhoc_callers_and_shipped_operations_pay_no_registry_round_trip(
    client: httpx.AsyncClient, app: Starlette, open_app: Starlette, team: Team
) -> None:
    shipped = (OPERATIONS_DIR / "organizations_with_children.graphql").read_bytes().decode("utf-8")
    async with app_client(open_app) as plain:
        for token, body in ((team.analyst, {"query": ORGANIZATIONS}), (team.viewer, {"query": shipped})):
            gated = await _trips(client, app, token, body)
            ungated = await _trips(plain, open_app, token, body)
            assert not [t for t in gated if "trusted_documents" in t.sql or "persisted_queries" in t.sql], gated
            assert len(gated) == len(ungated), (gated, ungated)
    # The analyst's compiled read: BEGIN, the principal lookup, one statement, ROLLBACK.
    assert len(await _trips(client, app, team.analyst, {"query": ORGANIZATIONS})) <= 4


# -- WebSocket ------------------------------------------------------------------------------------


async def test_a_socket_runs_registered_documents_only(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    from tests.live.ws_support import live_server, ws_connect

    async with live_server(database.app_url, trusted_documents=True) as server:
        viewer = await server.sign_in(await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
        admin = await server.sign_in(await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"]))
        async with ws_connect(server) as ws:
            assert (await ws.init({"authorization": f"Bearer {viewer}"}))["type"] == "connection_ack"
            await ws.subscribe("1", OTHER)
            refused = await ws.next_of("1")
            assert refused["type"] == "error", refused
            assert refused["payload"][0]["extensions"]["code"] == "TRUSTED_DOCUMENT_REQUIRED", refused
            registered = await server.graphql(admin, REGISTER, {"input": {"document": OTHER}})
            assert registered["data"]["trustedDocumentRegister"]["errors"] == []
            await ws.subscribe("2", OTHER)
            ran = await ws.next_of("2")
            assert ran["type"] == "next" and "organizations" in ran["payload"]["data"], ran


# -- settings -------------------------------------------------------------------------------------


def test_trusted_documents_are_on_by_default_in_production_only() -> None:
    assert Settings.from_env({}).trusted_documents is True
    assert Settings.from_env({"GWM_ENV": "development"}).trusted_documents is False
    assert Settings.from_env({"GWM_TRUSTED_DOCUMENTS": "off"}).trusted_documents is False
    assert Settings.from_env({"GWM_ENV": "development", "GWM_TRUSTED_DOCUMENTS": "on"}).trusted_documents is True
    assert Settings.from_env({"GWM_TRUSTED_DOCUMENTS_MAX": "7"}).trusted_documents_max == 7
    assert Settings.from_env({"GWM_PERSISTED_QUERIES_MAX": "9"}).persisted_queries_max == 9
    assert Settings(app_database_url="postgresql+asyncpg://x/y").trusted_documents is False
