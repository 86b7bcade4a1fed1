"""The compiled read path on the demo tenant: the example operations and the benchmark's queries give
the executor's answers, say in `extensions` that they were compiled, and bound their plan cache.

The broad comparison over generated queries and several principals is tests/compiled/.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.relay import to_base64

from auth.audited import system_unit
from auth.passwords import PasswordHasher
from models import Document
from models.db import set_tenant
from schema.compiled.runner import PlanCache
from server.app import create_app
from server.seed.demo import DEMO_PASSWORD, SUBDOMAIN, TENANT_ID, demo_id, seed_demo
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.http import TEST_ITERATIONS, app_client
from tests.support.http import test_settings as settings_for

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "graphql" / "operations"
BENCH_QUERIES = ROOT / "bench" / "queries" / "gateway"
ADMIN_EMAIL = "dana.whitfield@demofederal.example"
PROJECT = demo_id("project", "cisa_zta")

VARIABLES: dict[str, dict[str, Any]] = {
    "project_by_id": {"id": to_base64("OpportunityProject", PROJECT)},
    "document_search": {"search": "capture plan"},
    "small": {"id": to_base64("OpportunityProject", PROJECT)},
}
# Every example read operation and both benchmark queries must run compiled.
COMPILED = {
    "nested_pursuit", "organizations_with_children", "project_by_id", "pipeline_summary", "viewer",
    "document_search", "big", "small",
}


@pytest.fixture(scope="module")
async def demo(owner_engine: AsyncEngine) -> None:
    await seed_demo(owner_engine, PasswordHasher(TEST_ITERATIONS))


@pytest.fixture(scope="module")
def apps(database: Database) -> tuple[Starlette, Starlette]:
    return (
        create_app(settings_for(database.app_url, compiled_reads=True)),
        create_app(settings_for(database.app_url, compiled_reads=False)),
    )


@pytest.fixture
async def clients(apps: tuple[Starlette, Starlette]) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with app_client(apps[0]) as compiled, app_client(apps[1]) as executor:
        yield compiled, executor


@pytest.fixture
async def token(clients: tuple[httpx.AsyncClient, httpx.AsyncClient], demo: None) -> str:
    client = clients[0]
    credentials = {"email": ADMIN_EMAIL, "password": DEMO_PASSWORD, "tenant": SUBDOMAIN}
    response = await client.post("/auth/login", json=credentials)
    assert response.status_code == 200, response.text
    client.cookies.clear()
    value: str = response.json()["token"]
    return value


def _documents() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(OPERATIONS.glob("*.graphql")):
        operation = parse(path.read_text()).definitions[0]
        if isinstance(operation, OperationDefinitionNode) and operation.operation.value == "query":
            out.append((path.stem, path))
    out += [(p.stem, p) for p in sorted(BENCH_QUERIES.glob("*.graphql"))]
    return out


def _ordered(text: str) -> Any:
    return json.loads(text, object_pairs_hook=lambda pairs: pairs)


async def _post(client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]) -> httpx.Response:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize(("name", "path"), _documents(), ids=[n for n, _ in _documents()])
async def test_both_paths_answer_alike(
    name: str, path: Path, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: str
) -> None:
    query = path.read_text()
    variables = VARIABLES.get(name, {})
    compiled = await _post(clients[0], token, query, variables)
    executor = await _post(clients[1], token, query, variables)
    body = compiled.json()
    assert "errors" not in body, body["errors"]
    flagged = body.get("extensions", {}).get("compiled", [])
    if name in COMPILED:
        assert flagged == list(body["data"]), f"{name} was not compiled: {flagged}"
    left = _ordered(compiled.text)
    right = _ordered(executor.text)
    if left != right and os.environ.get("GWM_COMPILED_DUMP"):
        Path(os.environ["GWM_COMPILED_DUMP"] + ".compiled.json").write_text(compiled.text)
        Path(os.environ["GWM_COMPILED_DUMP"] + ".executor.json").write_text(executor.text)
    left = [(k, v) for k, v in left if k != "extensions"]
    right = [(k, v) for k, v in right if k != "extensions"]
    assert left == right


async def _content_reads(owner_engine: AsyncEngine) -> dict[str, int]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, TENANT_ID)
        rows = await conn.execute(
            text("SELECT access_type, count(*) FROM document_access_logs GROUP BY access_type")
        )
        return {str(access_type): int(count) for access_type, count in rows}


async def test_content_reads_are_logged_alike_on_both_paths(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: str, owner_engine: AsyncEngine
) -> None:
    """A search's snippets and content previews are content reads: one access-log row per document and
    access type, written by the compiled path as by the executor (resolvers/documents/access_log.py)."""
    query = (
        '{ documents(search: "capture plan", first: 5) { nodes { rowId contentPreview searchSnippet '
        "parentDocument { rowId contentPreview } } } }"
    )
    hits = (await _post(clients[1], token, query, {})).json()["data"]["documents"]["nodes"]
    async with system_unit(owner_engine, TEST_AUDIT_CHAIN, TENANT_ID, process="tests.compiled") as uow:
        for hit in hits[:2]:
            document = await uow.lock(Document, uuid.UUID(hit["rowId"]))
            uow.assign(document, {"content_preview": f"Preview of {hit['rowId']}"})
    deltas = []
    for client in clients:
        before = await _content_reads(owner_engine)
        response = await _post(client, token, query, {})
        body = response.json()
        assert "errors" not in body, body
        after = await _content_reads(owner_engine)
        deltas.append({k: after.get(k, 0) - before.get(k, 0) for k in after})
    compiled = (await _post(clients[0], token, query, {})).json()
    assert compiled["extensions"]["compiled"] == ["documents"]
    nodes = compiled["data"]["documents"]["nodes"]
    snippets = sum(1 for n in nodes if n["searchSnippet"] is not None)
    previews = {n["rowId"] for n in nodes if n["contentPreview"] is not None} | {
        n["parentDocument"]["rowId"] for n in nodes if n["parentDocument"] and n["parentDocument"]["contentPreview"]
    }
    assert snippets > 0 and previews
    assert deltas[0] == deltas[1]
    assert deltas[0]["read_search_snippet"] == snippets
    assert deltas[0]["read_content_preview"] == len(previews)


# Shapes the example operations do not cover: filters, totalCount alone, edges and cursors, paging
# backwards, aliases over the same field, fragments and __typename.
QUERIES = {
    "filter_total": '{ opportunityProjects(filter: {projectName: {contains: "a"}}) { totalCount } }',
    "filter_ops": "{ opportunityProjects(first: 5, filter: {pipelineStage: {in: [PHASE_1, PHASE_3]},"
    " archivedAt: {isNull: true}}, orderBy: [{field: PIPELINE_STAGE, direction: DESC}])"
    " { totalCount nodes { projectName pipelineStage } } }",
    "edges": "{ organizations(first: 3, orderBy: [{field: NAME}]) { edges { cursor node { name __typename } }"
    " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
    "backwards": "{ organizations(last: 2) { nodes { name } pageInfo { hasNextPage hasPreviousPage startCursor"
    " endCursor } } }",
    "aliases": "{ a: opportunityProjects(first: 2) { nodes { x: projectName y: projectName ...F } }"
    " b: opportunityProjects(first: 1) { totalCount } } fragment F on OpportunityProject { rowId __typename }",
    "nodes": '{ nodes(ids: ["' + to_base64("OpportunityProject", PROJECT) + '",'
    ' "T3JnYW5pemF0aW9uOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMA=="])'
    " { id __typename ... on OpportunityProject { projectName tenant { name } } } }",
    "documents": '{ documents(first: 3, filter: {includeDeleted: true}) { totalCount edges { cursor node { name'
    " searchRank searchSnippet } } } }",
    "search_paged": '{ documents(search: "plan", first: 2) { edges { cursor node { name searchRank } } pageInfo'
    " { hasNextPage endCursor } } }",
    "mixed": "{ opportunityProjects(first: 1) { nodes { projectName } } viewer { credential sessions { id } } }",
    "viewer": '{ viewer { __typename credential permissions p: permissions(opportunityProjectId: "' + str(PROJECT)
    + '") roles { role { name } opportunityProjectId expiresAt userRole { rowId } } } }',
    "summary": '{ pipelineSummary(filter: {projectName: {contains: "e"}, includeArchived: true})'
    " { __typename stage projectCount totalEstimatedValueMax weightedEstimatedValueMax projectsWithoutValue"
    " projectsWithoutWinProbability } }",
}


@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_other_shapes_answer_alike(
    name: str, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: str
) -> None:
    compiled = await _post(clients[0], token, QUERIES[name], {})
    executor = await _post(clients[1], token, QUERIES[name], {})
    body = compiled.json()
    assert "errors" not in body, body["errors"]
    assert body["extensions"]["compiled"], "nothing was compiled"
    left = [(k, v) for k, v in _ordered(compiled.text) if k != "extensions"]
    right = [(k, v) for k, v in _ordered(executor.text) if k != "extensions"]
    assert left == right


def test_the_plan_cache_keeps_its_bound() -> None:
    cache = PlanCache(3)
    for i in range(10):
        cache.put(("key", i), None)
    assert len(cache) == 3
    assert cache.get(("key", 9)) == (True, None)
    assert cache.get(("key", 0)) == (False, None)


# -- what the compiled path must keep: fresh reads, revocation, expiry, one snapshot, the limits ---------

NEWEST = "{ opportunityProjects(first: 2) { nodes { rowId projectName priorityLevel updatedAt } } }"
UPDATE = """mutation ($id: ID!, $at: DateTime!, $p: Priority!) {
  opportunityProjectUpdate(input: {id: $id, updatedAt: $at, priorityLevel: $p}) {
    opportunityProject { priorityLevel } errors { code } } }"""


async def test_a_compiled_read_right_after_a_mutation_shows_the_new_state(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: str
) -> None:
    client = clients[0]
    before = (await _post(client, token, NEWEST, {})).json()
    # Not the project tests/test_operations.py updates with a fixed updatedAt.
    (project,) = [p for p in before["data"]["opportunityProjects"]["nodes"] if p["rowId"] != str(PROJECT)][:1]
    assert before["extensions"]["compiled"] == ["opportunityProjects"]
    wanted = "LOW" if project["priorityLevel"] != "LOW" else "HIGH"
    changed = await _post(client, token, UPDATE, {
        "id": to_base64("OpportunityProject", project["rowId"]), "at": project["updatedAt"], "p": wanted,
    })
    assert changed.json()["data"]["opportunityProjectUpdate"]["errors"] == []
    after = (await _post(client, token, NEWEST, {})).json()
    (now,) = [p for p in after["data"]["opportunityProjects"]["nodes"] if p["rowId"] == project["rowId"]]
    assert now["priorityLevel"] == wanted and now["updatedAt"] > project["updatedAt"]


async def test_a_revoked_session_is_refused_on_its_next_compiled_read(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], demo: None
) -> None:
    client = clients[0]
    credentials = {"email": ADMIN_EMAIL, "password": DEMO_PASSWORD, "tenant": SUBDOMAIN}
    response = await client.post("/auth/login", json=credentials)
    client.cookies.clear()
    session = response.json()["token"]
    assert "errors" not in (await _post(client, session, NEWEST, {})).json()
    assert (await client.post("/auth/logout", headers={"authorization": f"Bearer {session}"})).status_code < 300
    refused = await client.post("/graphql", json={"query": NEWEST}, headers={"authorization": f"Bearer {session}"})
    assert refused.status_code == 401


async def test_an_expired_assignment_changes_the_next_plan(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """A capture manager whose only grant is on one project sees it, then, the grant expired, nothing."""
    import datetime as dt

    from sqlalchemy import text

    from models.db import set_tenant
    from tests.support.factories import make
    from tests.support.http import make_login_user

    client = clients[0]
    tenant = fresh_tenant
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = (await make(conn, "opportunity_projects", tenant, {})).id
        role = await conn.scalar(text("SELECT id FROM roles WHERE name = 'Capture Manager'"))
    user = await make_login_user(owner_engine, tenant, roles=[])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        assignment = await conn.scalar(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by, expires_at)"
                " VALUES (:t, :u, :r, :p, :by, :e) RETURNING id"
            ),
            {"t": tenant.id, "u": user.id, "r": role, "p": project, "by": tenant.system_user_id,
             "e": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)},
        )
    response = await client.post("/auth/login", json=user.credentials())
    client.cookies.clear()
    session = response.json()["token"]
    query = "{ opportunityProjects { totalCount nodes { rowId winProbabilityScore } } }"
    seen = (await _post(client, session, query, {})).json()
    assert [n["rowId"] for n in seen["data"]["opportunityProjects"]["nodes"]] == [str(project)]
    async with owner_engine.begin() as conn:  # the assignment runs out
        await set_tenant(conn, tenant.id)
        await conn.execute(text("UPDATE user_roles SET expires_at = now() - interval '1 second' WHERE id = :a"),
                           {"a": assignment})
    after = await client.post(
        "/graphql", json={"query": query}, headers={"authorization": f"Bearer {session}"}
    )
    body = after.json()
    assert body["data"]["opportunityProjects"] == {"totalCount": 0, "nodes": []}


async def test_compiled_and_fallback_root_fields_read_one_snapshot(
    apps: tuple[Starlette, Starlette], clients: tuple[httpx.AsyncClient, httpx.AsyncClient], token: str
) -> None:
    from tests.support.roundtrips import count_round_trips

    query = (
        "{ opportunityProjects(first: 2) { nodes { projectName } }"
        f' changeHistory(entityId: "{PROJECT}") {{ nodes {{ fieldName }} }} }}'
    )
    with count_round_trips(apps[0].state.engine) as trips:
        body = (await _post(clients[0], token, query, {})).json()
    assert body["extensions"]["compiled"] == ["opportunityProjects"]
    assert list(body["data"]) == ["opportunityProjects", "changeHistory"]
    statements = [" ".join(t.sql.split()) for t in trips if t.kind != "prepare"]
    begins = [i for i, s in enumerate(statements) if s.upper().startswith("BEGIN")]
    compiled = next(i for i, s in enumerate(statements) if "json_build_object" in s)
    summary = next(i for i, s in enumerate(statements) if "change_history" in s and "json_build_object" not in s)
    # One transaction (REPEATABLE READ, read only) holds the principal lookup, the compiled statement and the
    # executor's read: no BEGIN between them, and the transaction ends after both.
    (start,) = [b for b in begins if b < min(compiled, summary)][-1:]
    assert "REPEATABLE READ" in statements[start].upper() and "READ ONLY" in statements[start].upper()
    assert not [b for b in begins if start < b < max(compiled, summary)]
    end = next(i for i, s in enumerate(statements) if i > max(compiled, summary) and s.upper().startswith("ROLLBACK"))
    assert end > max(compiled, summary)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "executor"])
async def test_the_limits_hold_on_both_paths(
    compiled: bool, database: Database, token: str
) -> None:
    """The cost limit refuses before anything runs, and the deadline stops a compiled read as any other."""
    nested = (BENCH_QUERIES / "big.graphql").read_text()
    costly = create_app(settings_for(database.app_url, compiled_reads=compiled, query_cost_limit=100))
    async with app_client(costly) as client:
        body = (await _post(client, token, nested, {})).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    hurried = create_app(settings_for(database.app_url, compiled_reads=compiled, operation_timeout_ms=1))
    async with app_client(hurried) as client:
        body = (await _post(client, token, nested, {})).json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "OPERATION_TIMEOUT", "timeoutMs": 1}
