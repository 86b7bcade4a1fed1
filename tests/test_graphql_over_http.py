"""GraphQL over HTTP (schema/graphql_http.py, docs/api.md "Media types and status codes"): the response
media type negotiated from Accept, the status codes of each media type, on both ways the view serves a
request (strawberry's pipeline, and the prepared fast path answering a repeat without it); mutations
and side-effect fields never over GET; a 406 runs no SQL beyond the principal lookup.

Everything over HTTP through the whole application (httpx ASGITransport); round trips counted at the
driver (tests/support/roundtrips.py) against those of `{ __typename }`, the principal lookup alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from schema.compiled.runner import PreparedCache
from schema.graphql_http import APPLICATION_JSON, GRAPHQL_RESPONSE_JSON, SIDE_EFFECT_FIELDS, finish_status, negotiate
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import count_round_trips

GR = GRAPHQL_RESPONSE_JSON
JS = APPLICATION_JSON
PREPARABLE = "query Pursuits { opportunityProjects(first: 3) { totalCount nodes { rowId projectName } } }"


@pytest.fixture(scope="module")
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@pytest.fixture
async def token(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    return await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"]))


def _prepared(app: Starlette) -> PreparedCache:
    cache = app.state.graphql.prepared
    assert isinstance(cache, PreparedCache), "compiled reads are on in the tests"
    return cache


async def _post(
    client: httpx.AsyncClient, token: str, body: Any, accept: str | None, *, raw: bool = False
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    if accept is not None:
        headers["accept"] = accept
    content = body if raw else json.dumps(body)
    return await client.post("/graphql", content=content, headers=headers)


async def _get(client: httpx.AsyncClient, token: str, params: dict[str, str], accept: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} | ({"accept": accept} if accept is not None else {})
    return await client.get("/graphql", params=params, headers=headers)


def _media(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";", 1)[0].strip()


# -- negotiation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JS),  # the specification's legacy rule
        ("", JS),
        ("*/*", JS),
        ("application/*", JS),
        (GR, GR),
        (JS, JS),
        (f"{GR}, {JS};q=0.9", GR),  # what the specification asks clients to send
        (f"{JS}, {GR}", GR),  # both named at the same quality: the new type
        (f"{JS};q=1, {GR};q=0.5", JS),
        (f"{GR};q=0, */*", JS),
        ("text/html, */*;q=0.1", JS),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", JS),
        (f"{GR}; charset=utf-8", GR),
        ("APPLICATION/GRAPHQL-RESPONSE+JSON", GR),
        ("text/plain", None),
        (f"{JS};q=0", None),
        ("*/*;q=0", None),
        (f"{JS};q=abc", None),  # an unreadable quality is no preference
        ("garbage", JS),  # no media range at all: as if Accept were missing
    ],
)
def test_negotiation(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


# -- status codes per media type, strawberry's path -----------------------------------------------

# (name, body, status under application/json, status under application/graphql-response+json, data kept under GR)
CASES: list[tuple[str, dict[str, Any], int, int, bool]] = [
    ("executed", {"query": "{ __typename }"}, 200, 200, True),
    ("parse failure", {"query": "{"}, 200, 400, False),
    ("validation failure", {"query": "{ noSuchField }"}, 200, 400, False),
    ("variable coercion failure", {"query": "query Q($id: ID!) { __typename }", "variables": {"id": None}}, 200, 400,
     False),
    ("unknown operation name", {"query": "query A { __typename }", "operationName": "B"}, 400, 400, False),
    ("argument refused before execution", {"query": '{ node(id: "not a global id") { id } }'}, 200, 400, False),
]


@pytest.mark.parametrize(("name", "body", "json_status", "gr_status", "gr_data"), CASES, ids=[c[0] for c in CASES])
async def test_status_codes_per_media_type(
    client: httpx.AsyncClient, token: str, name: str, body: dict[str, Any], json_status: int, gr_status: int,
    gr_data: bool,
) -> None:
    as_json = await _post(client, token, body, JS)
    assert (as_json.status_code, _media(as_json)) == (json_status, JS), as_json.text
    as_gr = await _post(client, token, body, GR)
    assert (as_gr.status_code, _media(as_gr)) == (gr_status, GR), as_gr.text
    if json_status == 200:
        assert "data" in as_json.json()  # application/json keeps strawberry's `data: null` on request errors
    assert ("data" in as_gr.json()) is gr_data, as_gr.text
    if name != "executed":
        assert as_gr.json()["errors"]


async def test_a_field_error_keeps_its_data_and_200_under_both(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await make(conn, "opportunity_projects", fresh_tenant)
    viewer = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
    query = {"query": "{ opportunityProjects(first: 1) { nodes { rowId winProbabilityScore } } }"}
    for accept in (JS, GR):
        response = await _post(client, viewer, query, accept)
        body = response.json()
        assert (response.status_code, _media(response)) == (200, accept), response.text
        (node,) = body["data"]["opportunityProjects"]["nodes"]
        assert node["rowId"] and node["winProbabilityScore"] is None
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "FORBIDDEN" and error["path"][-1] == "winProbabilityScore"


@pytest.mark.parametrize("accept", [None, "*/*", JS, GR, f"{GR}, {JS};q=0.9"])
async def test_malformed_requests_answer_400_in_the_negotiated_type(
    client: httpx.AsyncClient, token: str, accept: str | None
) -> None:
    expected = negotiate(accept)
    for body, raw in (('{ "not a JSON', True), ({"notquery": "{ __typename }"}, False), ({"query": 0}, False),
                      ({"query": "{ __typename }", "variables": "x"}, False),
                      ({"query": "{ __typename }", "extensions": []}, False), ("", True)):
        response = await _post(client, token, body, accept, raw=raw)
        assert response.status_code == 400, (body, response.text)
        assert _media(response) == expected
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST" and "data" not in response.json()


async def test_utf8_in_and_out(client: httpx.AsyncClient, token: str) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json; charset=utf-8", "accept": GR}
    body = json.dumps({"query": '{ __type(name: "Run🏃Swim🏊") { name } }'}, ensure_ascii=False).encode()
    response = await client.post("/graphql", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["data"] == {"__type": None}
    response.content.decode("utf-8")


# -- the prepared path ----------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, JS, GR])
async def test_the_prepared_path_answers_in_the_negotiated_type(
    app: Starlette, client: httpx.AsyncClient, token: str, accept: str | None
) -> None:
    cache = _prepared(app)
    first = await _post(client, token, {"query": PREPARABLE}, accept)
    hits = cache.hits
    repeat = await _post(client, token, {"query": PREPARABLE}, accept)
    assert cache.hits == hits + 1, "the repeat is served by the prepared path"
    expected = negotiate(accept)
    for response in (first, repeat):
        assert (response.status_code, _media(response)) == (200, expected), response.text
        assert response.headers["cache-control"] == "no-store"
    assert repeat.json()["data"] == first.json()["data"]


async def test_406_on_both_paths_runs_no_sql_beyond_the_principal_lookup(
    app: Starlette, client: httpx.AsyncClient, token: str
) -> None:
    cache = _prepared(app)
    await _post(client, token, {"query": "{ __typename }"}, JS)
    await _post(client, token, {"query": PREPARABLE}, JS)  # prepared from now on
    with count_round_trips(app.state.engine) as baseline:
        await _post(client, token, {"query": "{ __typename }"}, JS)
    hits = cache.hits
    for body in ({"query": PREPARABLE}, {"query": "{ __typename }"}):
        with count_round_trips(app.state.engine) as trips:
            response = await _post(client, token, body, "text/plain")
        assert response.status_code == 406, response.text
        assert _media(response) == JS
        assert response.json()["errors"][0]["extensions"]["code"] == "NOT_ACCEPTABLE"
        assert "data" not in response.json()
        assert len(trips) <= len(baseline), ([str(t) for t in trips], [str(t) for t in baseline])
    assert cache.hits == hits, "a 406 is answered before the prepared path"
    # GET is negotiated alike.
    refused = await _get(client, token, {"query": "{ __typename }"}, f"{JS};q=0")
    assert refused.status_code == 406


# -- GET ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, JS, GR])
async def test_get_queries_with_variables(client: httpx.AsyncClient, token: str, accept: str | None) -> None:
    query = "query Type($name: String!) { __type(name: $name) { name } }"
    response = await _get(client, token, {"query": query, "variables": json.dumps({"name": "Query"})}, accept)
    assert (response.status_code, _media(response)) == (200, negotiate(accept)), response.text
    assert response.json()["data"] == {"__type": {"name": "Query"}} and "errors" not in response.json()


@pytest.mark.parametrize("accept", [JS, GR])
async def test_mutations_never_over_get(client: httpx.AsyncClient, token: str, accept: str) -> None:
    query = 'mutation { opportunityProjectCreate(input: {projectName: "Over GET"}) { opportunityProject { rowId } } }'
    response = await _get(client, token, {"query": query}, accept)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert _media(response) == accept
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("accept", [None, "*/*", JS, GR])
async def test_a_get_without_a_query_is_a_400(client: httpx.AsyncClient, token: str, accept: str | None) -> None:
    # Never an IDE page or a 404: GraphiQL lives at /graphiql (browsers asking for HTML are sent there).
    response = await _get(client, token, {}, accept)
    assert (response.status_code, _media(response)) == (400, negotiate(accept)), response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_other_methods_are_refused_naming_get_and_post(client: httpx.AsyncClient, token: str) -> None:
    response = await client.head("/graphql", params=QUERY_TYPENAME, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"


QUERY_TYPENAME = {"query": "{ __typename }"}

SIDE_EFFECT_QUERIES = [
    "query D($id: ID!) { node(id: $id) { ... on Document { extractedText } } }",
    "query D($id: ID!) { node(id: $id) { ...F } } fragment F on Document { rowId contentPreview }",
    "query D($id: ID!) { node(id: $id) { ... on Document { content: searchSnippet } } }",
]


def test_the_side_effect_fields_are_the_content_reads() -> None:
    # resolvers/documents/access_log.py ContentRead: each content read is a field here.
    from resolvers.documents.access_log import ContentRead

    reads = {v for k, v in vars(ContentRead).items() if k.isupper()}
    assert len(reads) == len(SIDE_EFFECT_FIELDS) == 3
    assert {f"read_{'_'.join(_snake(field))}" for _, field in SIDE_EFFECT_FIELDS} == reads


def _snake(name: str) -> list[str]:
    words, word = [], ""
    for ch in name:
        if ch.isupper():
            words.append(word)
            word = ch.lower()
        else:
            word += ch
    return [*words, word]


@pytest.mark.parametrize("accept", [JS, GR])
async def test_side_effect_fields_are_refused_over_get_and_served_over_post(
    app: Starlette, client: httpx.AsyncClient, token: str, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    accept: str,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        project = await make(conn, "opportunity_projects", fresh_tenant)
        document = await make(
            conn, "documents", fresh_tenant, {"opportunity_projects": project.id}, opportunity_project_id=project.id,
            access_level="tenant", processing_status="completed", extracted_text="Scope: radar upgrades.",
            content_preview="Scope: radar",
        )
    listed = await _post(client, token, {"query": "{ documents(first: 1) { nodes { id } } }"}, JS)
    (node,) = listed.json()["data"]["documents"]["nodes"]
    variables = json.dumps({"id": node["id"]})
    with count_round_trips(app.state.engine) as baseline:
        await _get(client, token, {"query": "{ __typename }"}, accept)
    for query in SIDE_EFFECT_QUERIES:
        with count_round_trips(app.state.engine) as trips:
            response = await _get(client, token, {"query": query, "variables": variables}, accept)
        assert response.status_code == 405 and response.headers["allow"] == "POST", response.text
        assert _media(response) == accept
        body = response.json()
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "METHOD_NOT_ALLOWED" and "POST" in error["message"]
        assert ("data" in body) is (accept == JS)
        assert len(trips) <= len(baseline), [str(t) for t in trips]
    assert await _access_logs(owner_engine, fresh_tenant, document.id) == 0
    # The same documents over POST are served, and their reads logged.
    for query in SIDE_EFFECT_QUERIES:
        response = await _post(client, token, {"query": query, "variables": {"id": node["id"]}}, accept)
        assert response.status_code == 200 and "errors" not in response.json(), response.text
    assert await _access_logs(owner_engine, fresh_tenant, document.id) >= 2
    # A GET of the document without them is served.
    plain = await _get(client, token, {"query": "query D($id: ID!) { node(id: $id) { ... on Document { rowId } } }",
                                       "variables": variables}, accept)
    assert plain.status_code == 200 and plain.json()["data"]["node"]["rowId"] == str(document.id)


async def _access_logs(owner_engine: AsyncEngine, tenant: TenantRef, document_id: Any) -> int:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        count = await conn.scalar(
            text("SELECT count(*) FROM document_access_logs WHERE document_id = :d"), {"d": document_id}
        )
    return int(count or 0)


# -- status of request errors by code (graphql-response+json) -------------------------------------


@pytest.mark.parametrize(
    ("media", "codes", "expected"),
    [
        (GR, ["UNAUTHENTICATED"], 401),
        (GR, ["FORBIDDEN"], 403),
        (GR, ["TRUSTED_DOCUMENT_REQUIRED"], 403),
        (GR, ["RATE_LIMITED"], 429),
        (GR, ["INTERNAL_SERVER_ERROR"], 500),
        (GR, ["GRAPHQL_VALIDATION_FAILED"], 400),
        (GR, ["METHOD_NOT_ALLOWED"], 405),
        (JS, ["FORBIDDEN"], 200),
        (JS, ["METHOD_NOT_ALLOWED"], 405),
    ],
)
def test_request_error_status_by_code(media: str, codes: list[str], expected: int) -> None:
    scope = {"gwm.media_type": media, "gwm.graphql_outcome": (True, codes)}
    assert finish_status(scope, 200)[0] == expected
    assert finish_status({**scope, "gwm.graphql_outcome": (False, codes)}, 200)[0] == 200  # executed: 200
    assert finish_status(scope, 429)[0] == 429  # a status another hook set is kept
