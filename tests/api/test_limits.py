"""No single request stalls the server: selection bound, cost limit, validation cache, deadline.

The two abusive shapes found from outside (one selection repeated 600 times in 15.6 KB; a depth-14
walk over categories and documents) are refused before validation runs and before any SQL of the
operation; every shipped operation and GraphiQL's introspection pass; a CPU-heavy read is stopped
at its deadline and the worker serves the next request.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query, parse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from schema.limits import DEFAULT_OPERATION_TIMEOUT_MS, FIELD_WEIGHTS, count_overlaps, count_selections, estimate_cost
from schema.schema import (
    DOCUMENT_CACHE,
    MAX_ALIASES,
    MAX_COST,
    MAX_DEPTH,
    MAX_OVERLAPS,
    MAX_SELECTIONS,
    MAX_TOKENS,
    schema,
)
from server.app import create_app
from server.settings import Settings, SettingsError
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import gql, gql_response, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.sqlcount import count_statements

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = sorted((ROOT / "graphql" / "operations").glob("*.graphql"))
BENCH_QUERIES = sorted((ROOT / "bench" / "queries").glob("*.graphql"))
GRAPHIQL_INTROSPECTION = get_introspection_query(
    descriptions=True,
    specified_by_url=True,
    directive_is_repeatable=True,
    schema_description=True,
    input_value_deprecation=True,
)

# The two shapes of the report. 600 copies of one 26-byte selection: 15,600 bytes, 4,202 tokens,
# no alias, depth 3.
REPEATED = "{" + "documents{nodes{id name}} " * 600 + "}"
# Within the selection bound (exactly 500 selections), but 62,250 pairs of same-named fields for
# validation to compare: up to a second of validation before this bound.
MERGED = "{" + "viewer { credential } " * 250 + "}"
# documentCategories > nodes > documents > nodes > category > ... > name: 14 levels.
DEEP_WALK = (
    "{ documentCategories { nodes { documents { nodes { category { documents { nodes { category {"
    " documents { nodes { category { documents { nodes { name } } } } } } } } } } } } } }"
)


def _depth(document: str) -> int:
    depth = deepest = 0
    for char in document:
        depth += char == "{"
        depth -= char == "}"
        deepest = max(deepest, depth)
    return deepest


def test_the_abusive_shapes_are_within_the_older_limits() -> None:
    """They pass the token, alias and depth limits: only the new bounds can refuse them."""
    assert len(REPEATED.encode()) == 15_602
    assert len(list(_tokens(REPEATED))) < MAX_TOKENS
    assert ":" not in REPEATED and MAX_ALIASES < 600
    assert _depth(DEEP_WALK) == 14 <= MAX_DEPTH


def _tokens(document: str) -> list[str]:
    from graphql.language import Lexer, Source, TokenKind

    lexer = Lexer(Source(document))
    out = []
    while (token := lexer.advance()).kind is not TokenKind.EOF:
        out.append(token.kind.value)
    return out


# -- the cost estimate ----------------------------------------------------------------------------


def _cost(document: str, variables: dict[str, Any] | None = None) -> int:
    return estimate_cost(schema._schema, parse(document), None, variables)


def test_cost_multiplies_page_sizes_along_a_path() -> None:
    # Every resolved field costs 1: the connection once, `nodes` and `name` once per row of the page
    # (20 by default).
    assert _cost("{ organizations { nodes { name } } }") == 1 + 20 + 20
    assert _cost("{ organizations(first: 5) { nodes { name } } }") == 1 + 5 + 5
    assert _cost("{ organizations(first: 5) { nodes { childOrganizations(first: 3) { nodes { name } } } } }") == (
        1 + 5 + 5 * (1 + 3 + 3)
    )
    # Past the maximum page size, the maximum (the resolver refuses the request anyway).
    assert _cost("{ organizations(first: 1000) { nodes { name } } }") == 1 + 100 + 100
    # Variables count as given, else as their default.
    query = "query ($n: Int = 7) { organizations(first: $n) { edges { node { name } } } }"
    assert _cost(query) == 1 + 7 + 7 + 7
    assert _cost(query, {"n": 2}) == 1 + 2 + 2 + 2


def test_cost_is_summed_over_root_fields_and_aliases() -> None:
    one = _cost(DEEP_WALK)
    aliased = DEEP_WALK.replace("{ documentCategories", "{ a: documentCategories", 1)[:-1]
    aliased += " b: documentCategories { nodes { name } } }"
    assert _cost(aliased) == one + 1 + 20 + 20
    twice = "{ a: organizations { nodes { name } } b: organizations { nodes { name } } }"
    assert _cost(twice) == 2 * (1 + 20 + 20)


def test_list_arguments_and_total_count_cost() -> None:
    ids = [f"id{i}" for i in range(40)]
    by_ids = _cost("query ($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids})
    assert by_ids == 40 + 40 + 40  # 40 list elements, 40 objects, their ids
    literal = _cost('{ nodes(ids: ["a", "b", "c"]) { id } }')
    assert literal == 3 + 3 + 3
    values = [f"Agency {i}" for i in range(50)]
    filtered = _cost(
        "query ($names: [String!]) { organizations(first: 1, filter: {name: {in: $names}}) { nodes { name } } }",
        {"names": values},
    )
    assert filtered == 1 + 50 + 1 + 1
    assert FIELD_WEIGHTS[("*", "totalCount")] == 10
    assert _cost("{ organizations(first: 1) { totalCount } }") == 1 + 10


def test_the_deep_walk_costs_far_over_the_limit() -> None:
    assert _cost(DEEP_WALK) > 100 * MAX_COST


@pytest.mark.parametrize("path", OPERATIONS + BENCH_QUERIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_operation_is_within_the_limits(path: Path) -> None:
    document = parse(path.read_text())
    assert count_selections(document, MAX_SELECTIONS) <= MAX_SELECTIONS
    assert estimate_cost(schema._schema, document) <= MAX_COST


def test_the_bench_read_is_admitted_at_its_page_size_not_at_the_maximum() -> None:
    document = parse((ROOT / "bench" / "queries" / "nested_pursuit.graphql").read_text())
    assert estimate_cost(schema._schema, document) == 32_701 <= MAX_COST  # first: 50
    assert estimate_cost(schema._schema, document, None, {"first": 100}) == 65_401 > MAX_COST


def test_graphiql_introspection_is_within_the_limits_and_nested_introspection_is_not() -> None:
    document = parse(GRAPHIQL_INTROSPECTION)
    assert count_selections(document, MAX_SELECTIONS) <= MAX_SELECTIONS
    assert estimate_cost(schema._schema, document) <= MAX_COST
    nested = "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }"
    assert _cost(nested) > MAX_COST


def test_selections_count_fragments_where_they_expand_and_stop_on_cycles() -> None:
    # Ten fragments each spreading the previous one twice: 2^10 copies of one field.
    fragments = ["fragment F0 on Query { viewer { credential } }"]
    fragments += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 11)]
    exploding = parse("{ ...F10 } " + " ".join(fragments))
    assert count_selections(exploding, MAX_SELECTIONS) == MAX_SELECTIONS + 1  # stopped at the bound
    cyclic = parse("{ ...A } fragment A on Query { viewer { credential } ...B } fragment B on Query { ...A }")
    # The operation expands A (2 fields) then B then A no more; the definitions add their own 2.
    assert count_selections(cyclic, MAX_SELECTIONS) == 4


def test_overlaps_count_pairs_of_same_named_fields_and_their_merged_children() -> None:
    assert count_selections(parse(MERGED), MAX_SELECTIONS) == MAX_SELECTIONS  # admitted by that bound
    assert count_overlaps(parse(MERGED), 10**6) == 2 * (250 * 249 // 2)  # the viewers, then their credentials
    assert count_overlaps(parse(MERGED), MAX_OVERLAPS) == 250 * 249 // 2  # stops at the first group past it
    # A field beside a fragment selecting it too: one pair, and one pair of their merged `id`s.
    nested = "{ viewer { ...A user { id } } } fragment A on Viewer { user { id email } credential }"
    assert count_overlaps(parse(nested), MAX_OVERLAPS) == 2
    assert count_overlaps(parse("{ a: viewer { credential } b: viewer { credential } }"), MAX_OVERLAPS) == 0
    cyclic = (
        "{ ...A } fragment A on Query { viewer { credential } ...B }"
        " fragment B on Query { ...A viewer { credential } }"
    )
    assert count_overlaps(parse(cyclic), MAX_OVERLAPS) == 2
    for path in OPERATIONS + BENCH_QUERIES:
        assert count_overlaps(parse(path.read_text()), MAX_OVERLAPS) == 0
    assert count_overlaps(parse(GRAPHIQL_INTROSPECTION), MAX_OVERLAPS) == 0


# -- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture
async def viewer_token(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    return await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))


async def _statements_of(client: httpx.AsyncClient, engine: AsyncEngine, query: str, token: str) -> list[str]:
    with count_statements(engine) as statements:
        response = await gql_response(client, query, token=token)
    assert response.status_code == 200, response.text
    return list(statements)


@pytest.mark.parametrize(
    ("document", "code", "limit"),
    [
        (REPEATED, "TOO_MANY_SELECTIONS", MAX_SELECTIONS),
        (MERGED, "TOO_MANY_OVERLAPPING_FIELDS", MAX_OVERLAPS),
        (DEEP_WALK, "QUERY_TOO_COSTLY", MAX_COST),
    ],
    ids=["repeated-selection", "merged-repeats", "deep-walk"],
)
async def test_the_abusive_shapes_are_refused_before_validation_and_sql(
    client: httpx.AsyncClient, read_app: Starlette, viewer_token: str, document: str, code: str, limit: int
) -> None:
    engine: AsyncEngine = read_app.state.engine
    # What a request costs in SQL before its operation runs: the principal lookup, nothing else.
    await gql(client, "{ __typename }", token=viewer_token)
    baseline = await _statements_of(client, engine, "{ __typename }", viewer_token)
    runs = DOCUMENT_CACHE.runs
    for variant in (document, document.replace(" ", "  "), "# again\n" + document):
        statements = await _statements_of(client, engine, variant, viewer_token)
        assert statements == baseline, statements
        body = (await gql_response(client, variant, token=viewer_token)).json()
        assert body["data"] is None
        (error,) = body["errors"]
        assert error["extensions"]["code"] == code
        assert error["extensions"]["limit"] == limit
        assert f"limit is {limit}" in error["message"] or f"limit of {limit}" in error["message"]
        assert variant not in DOCUMENT_CACHE  # a refused document is not kept parsed
    assert DOCUMENT_CACHE.runs == runs  # no validation rule ran for any of them


async def test_the_cost_refusal_states_the_cost(client: httpx.AsyncClient, viewer_token: str) -> None:
    body = await gql(client, DEEP_WALK, token=viewer_token, errors=True)
    (error,) = body["errors"]
    cost = _cost(DEEP_WALK)
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": cost, "limit": MAX_COST}
    assert f"estimated cost is {cost}, over the limit of {MAX_COST}" in error["message"]


async def test_a_fragment_cycle_is_refused_by_validation_not_a_crash(
    client: httpx.AsyncClient, viewer_token: str
) -> None:
    query = "{ ...A } fragment A on Query { viewer { credential } ...B } fragment B on Query { ...A }"
    body = await gql(client, query, token=viewer_token, errors=True)
    assert body["data"] is None
    assert any("Cannot spread fragment" in e["message"] for e in body["errors"]), body


async def test_graphiql_introspection_and_the_bench_read_are_served(
    client: httpx.AsyncClient, admin_token: str
) -> None:
    body = await gql(client, GRAPHIQL_INTROSPECTION, token=admin_token)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"
    for path in BENCH_QUERIES:
        if "$id" in path.read_text():
            continue
        body = await gql(client, path.read_text(), token=admin_token)
        assert body["data"] is not None


async def test_whitespace_and_comments_do_not_defeat_the_validation_cache(
    client: httpx.AsyncClient, viewer_token: str
) -> None:
    tag = uuid.uuid4().hex[:8]  # a document this process has not validated yet
    query = f"query Cached{tag} {{ viewer {{ user {{ email }} }} }}"
    runs = DOCUMENT_CACHE.runs
    await gql(client, query, token=viewer_token)
    assert DOCUMENT_CACHE.runs == runs + 1
    assert query in DOCUMENT_CACHE  # kept parsed: it passed
    variants = [
        query.replace(" ", "   "),
        f"# a comment\nquery Cached{tag} {{\n  viewer {{\n    user {{ email, }},\n  }}\n}}\n",
        f"query Cached{tag}{{viewer{{user{{email}}}}}}",
    ]
    for variant in variants:
        await gql(client, variant, token=viewer_token)
    assert DOCUMENT_CACHE.runs == runs + 1


async def test_a_cached_validation_error_points_into_the_document_sent(
    client: httpx.AsyncClient, viewer_token: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    first = await gql(client, f"query Bad{tag} {{ viewer {{ noSuchField }} }}", token=viewer_token, errors=True)
    runs = DOCUMENT_CACHE.runs
    again = await gql(
        client, f"\n\n   query Bad{tag} {{\n  viewer {{\n      noSuchField\n  }}\n}}", token=viewer_token, errors=True
    )
    assert DOCUMENT_CACHE.runs == runs  # served from the cache
    assert again["errors"][0]["message"] == first["errors"][0]["message"]
    assert first["errors"][0]["locations"] == [{"line": 1, "column": 30}]
    assert again["errors"][0]["locations"] == [{"line": 5, "column": 7}]


# -- the deadline ---------------------------------------------------------------------------------

DEADLINE_MS = 250
HEAVY_READ_LIMIT = 500_000
# Twenty scalars of each of 10,100 organizations, read twice (two root fields): about 400,000 field
# resolutions, seconds of CPU; admitted by a cost limit raised for it, so that only the deadline
# stops it.
HEAVY_READ = """
fragment Org on Organization {
  id rowId name dunsNumber samUniqueId cageCode addressLine1 addressLine2 city stateProvince postalCode
  country phone email website organizationType businessSize isActive createdAt updatedAt
}
{
  a: organizations(first: 100, filter: {parentOrganizationId: {isNull: true}}, orderBy: [{field: NAME}]) {
    nodes { ...Org childOrganizations(first: 100) { nodes { ...Org } } }
  }
  b: organizations(first: 100, filter: {parentOrganizationId: {isNull: true}}, orderBy: [{field: NAME}]) {
    nodes { ...Org childOrganizations(first: 100) { nodes { ...Org } } }
  }
}"""


@pytest.fixture(scope="module")
def deadline_app(database: Database) -> Starlette:
    return create_app(
        # The executor: a CPU-heavy read through it is what the deadline must stop (compiled, the same read is
        # one statement that finishes in time; tests/test_compiled_reads.py holds the deadline there).
        settings_for(
            database.app_url, operation_timeout_ms=DEADLINE_MS, query_cost_limit=HEAVY_READ_LIMIT, compiled_reads=False
        )
    )


@pytest.fixture
async def deadline_client(deadline_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(deadline_app) as http:
        yield http


async def _ten_thousand_organizations(owner_engine: AsyncEngine, tenant: TenantRef) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        params = {"t": tenant.id, "u": tenant.system_user_id}
        await conn.execute(
            text(
                "INSERT INTO organizations (tenant_id, name, city, created_by)"
                " SELECT :t, 'Agency ' || lpad(i::text, 3, '0'), 'Springfield', :u FROM generate_series(1, 100) i"
            ),
            params,
        )
        await conn.execute(
            text(
                "INSERT INTO organizations (tenant_id, name, city, parent_organization_id, created_by)"
                " SELECT :t, p.name || ' office ' || i, 'Springfield', p.id, :u"
                " FROM organizations p, generate_series(1, 100) i WHERE p.tenant_id = :t"
            ),
            params,
        )


async def test_the_deadline_ends_a_cpu_heavy_read_and_the_worker_serves_the_next_request(
    deadline_client: httpx.AsyncClient, deadline_app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    await _ten_thousand_organizations(owner_engine, fresh_tenant)
    token = await sign_in(deadline_client, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
    cost = estimate_cost(schema._schema, parse(HEAVY_READ))
    assert MAX_COST < cost <= HEAVY_READ_LIMIT  # admitted here: only the deadline stops it
    body = (await gql_response(deadline_client, HEAVY_READ, token=token)).json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "OPERATION_TIMEOUT", "timeoutMs": DEADLINE_MS}
    assert f"deadline of {DEADLINE_MS} ms" in error["message"]
    # Its connection is back in the pool, and the same worker answers the next request.
    engine: AsyncEngine = deadline_app.state.engine
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    served = await gql(deadline_client, "{ viewer { user { email } } }", token=token)
    assert served["data"]["viewer"]["user"]["email"].endswith("@example.test")


async def test_a_mutation_has_no_deadline(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """A 1 ms deadline stops reads, never a write: the mutation commits and answers in full."""
    app = create_app(settings_for(database.app_url, operation_timeout_ms=1))
    async with app_client(app) as client:
        token = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"]))
        name = f"Deadline-free {uuid.uuid4().hex[:6]}"
        body = await gql(
            client,
            "mutation ($input: RoleCreateInput!) {"
            " roleCreate(input: $input) { role { rowId name permissions } errors { code } } }",
            {"input": {"name": name, "permissions": ["opportunity:read"]}},
            token=token,
        )
    assert body["data"]["roleCreate"]["errors"] == []
    assert body["data"]["roleCreate"]["role"]["name"] == name
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        stored = await conn.scalar(text("SELECT count(*) FROM roles WHERE name = :n"), {"n": name})
    assert stored == 1


async def test_the_cost_limit_is_a_setting(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    app = create_app(settings_for(database.app_url, query_cost_limit=41))
    async with app_client(app) as client:
        token = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
        await gql(client, "{ organizations { nodes { id } } }", token=token)  # 1 + 20 + 20: at the limit
        body = await gql(client, "{ organizations { nodes { id name } } }", token=token, errors=True)
    assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 61, "limit": 41}
    assert Settings.from_env({}).query_cost_limit == MAX_COST == 50_000
    assert Settings.from_env({"GWM_QUERY_COST_LIMIT": "80000"}).query_cost_limit == 80_000
    with pytest.raises(SettingsError, match="GWM_QUERY_COST_LIMIT"):
        Settings.from_env({"GWM_QUERY_COST_LIMIT": "0"})


def test_the_operation_timeout_setting() -> None:
    assert Settings.from_env({}).operation_timeout_ms == DEFAULT_OPERATION_TIMEOUT_MS == 10_000
    assert Settings.from_env({"GWM_OPERATION_TIMEOUT_MS": "2500"}).operation_timeout_ms == 2500
    assert Settings.from_env({"GWM_OPERATION_TIMEOUT_MS": "0"}).operation_timeout_ms == 0  # no deadline
    with pytest.raises(SettingsError, match="GWM_OPERATION_TIMEOUT_MS"):
        Settings.from_env({"GWM_OPERATION_TIMEOUT_MS": "-1"})
    with pytest.raises(SettingsError, match="GWM_OPERATION_TIMEOUT_MS"):
        Settings.from_env({"GWM_OPERATION_TIMEOUT_MS": "soon"})
