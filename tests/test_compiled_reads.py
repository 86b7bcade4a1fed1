"""The compiled read path on the demo tenant: the example operations and the benchmark's queries give
the executor's answers, say in `extensions` that they were compiled, and bound their plan cache.

The broad comparison over generated queries and several principals is tests/compiled/.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import OperationDefinitionNode, parse
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.relay import to_base64

from auth.passwords import PasswordHasher
from schema.compiled.runner import PlanCache
from server.app import create_app
from server.seed.demo import DEMO_PASSWORD, SUBDOMAIN, demo_id, seed_demo
from tests.conftest import Database
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
# The example operations that must run compiled (the others fall back, for now, to the executor).
COMPILED = {"nested_pursuit", "organizations_with_children", "project_by_id", "big", "small"}


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
    left = [(k, v) for k, v in left if k != "extensions"]
    right = [(k, v) for k, v in right if k != "extensions"]
    assert left == right


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
    "nodes": "{ nodes(ids: [\"%s\", \"T3JnYW5pemF0aW9uOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMA==\"])"
    " { id __typename ... on OpportunityProject { projectName tenant { name } } } }"
    % to_base64("OpportunityProject", PROJECT),
    "mixed": "{ opportunityProjects(first: 1) { nodes { projectName } } pipelineSummary { stage } }",
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
