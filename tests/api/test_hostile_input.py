"""Hostile input gets a clear error, never a crash: generated from the served schema.

For every string argument and every string input field reachable from the root types (connection
cursors of nested lists included), three values are sent as a variable: one with NUL, one with an
unpaired surrogate, one past the value's limit (its column's length, schema/input_guard.py). Each
must get a clean answer: a documented error code naming the argument (top-level, or a UserError
on that input field), or for a too-long value in a read, a normal result; never
INTERNAL_SERVER_ERROR, never a 5xx; and no row is written. A meta-test fails when a position has
no case. The /auth JSON fields get the same three values; the request bodies every parser must
refuse cleanly (not an object, not UTF-8, nested thousands deep, inside a cursor too) follow.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
    get_named_type,
    is_leaf_type,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Route

from schema.input_guard import MAX_ID_LENGTH, string_limit
from schema.schema import schema as served
from tests.support.db import TenantRef
from tests.support.error_codes import documented_codes
from tests.support.graphql import sign_in
from tests.support.http import make_login_user

# Every extensions.code the server documents (docs/api.md, "Error codes").
DOCUMENTED_CODES = documented_codes()
NUL = "before\x00after"
SURROGATE = "before\ud800after"
STRING_SCALARS = frozenset({"String", "ID", "JSON"})


@dataclass(frozen=True)
class Position:
    """One string leaf: a field reached by `path` from the root, its argument, and where inside it."""

    root: str  # "query" or "mutation"
    path: tuple[str, ...]  # field names from the root to the field taking the argument
    field: GraphQLField
    argument: str
    inner: tuple[str | int, ...]  # input fields (and list index 0) below the argument
    owner: str  # what string_limit() is keyed by
    scalar: str

    @property
    def name(self) -> str:
        inner = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.inner)
        return f"{self.root}:{'.'.join(self.path)}({self.argument}{inner})"


def _unwrap(type_: Any) -> Any:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


def _leaves(type_: GraphQLInputType, owner: str, inner: tuple[str | int, ...], seen: frozenset[str]) -> Iterator[
        tuple[tuple[str | int, ...], str, str]]:
    type_ = _unwrap(type_)
    if isinstance(type_, GraphQLList):
        yield from _leaves(type_.of_type, owner, (*inner, 0), seen)
    elif isinstance(type_, GraphQLInputObjectType):
        if type_.name in seen:
            return
        for name, field in type_.fields.items():
            yield from _leaves(field.type, f"{type_.name}.{name}", (*inner, name), seen | {type_.name})
    elif isinstance(type_, GraphQLScalarType) and type_.name in STRING_SCALARS:
        yield inner, owner, type_.name


def _reachable(schema: GraphQLSchema) -> Iterator[tuple[str, tuple[str, ...], GraphQLObjectType]]:
    """(root, path, type) for every object type, by the shortest path of fields without required arguments."""
    seen: set[str] = set()
    for root_name, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        assert root is not None
        queue: list[tuple[tuple[str, ...], GraphQLObjectType]] = [((), root)]
        while queue:
            path, type_ = queue.pop(0)
            if (root_name == "query" and type_.name in seen) or (root_name == "mutation" and path):
                continue
            seen.add(type_.name)
            yield root_name, path, type_
            for name, field in type_.fields.items():
                target = get_named_type(field.type)
                required = any(
                    isinstance(a.type, GraphQLNonNull) and a.default_value is Undefined for a in field.args.values()
                )
                if isinstance(target, GraphQLObjectType) and not required and len(path) < 6:
                    queue.append(((*path, name), target))


def positions(schema: GraphQLSchema) -> list[Position]:
    found: list[Position] = []
    for root, path, type_ in _reachable(schema):
        for name, field in type_.fields.items():
            for arg_name, arg in field.args.items():
                owner = f"{type_.name}.{name}.{arg_name}"
                for inner, leaf_owner, scalar in _leaves(arg.type, owner, (), frozenset()):
                    found.append(Position(root, (*path, name), field, arg_name, inner, leaf_owner, scalar))
    return found


def every_string_argument(schema: GraphQLSchema) -> set[str]:
    """Every (type.field.argument / input type.field) holding a string, by walking all types."""
    owners: set[str] = set()
    for type_ in schema.type_map.values():
        if type_.name.startswith("__"):
            continue
        if isinstance(type_, GraphQLObjectType):
            for name, field in type_.fields.items():
                for arg_name, arg in field.args.items():
                    if get_named_type(arg.type).name in STRING_SCALARS:
                        owners.add(f"{type_.name}.{name}.{arg_name}")
        elif isinstance(type_, GraphQLInputObjectType):
            for name, field in type_.fields.items():
                if get_named_type(field.type).name in STRING_SCALARS:
                    owners.add(f"{type_.name}.{name}")
    return owners


def _sample(type_: GraphQLInputType) -> Any:
    """A value of `type_` that coerces (its required fields only)."""
    type_ = _unwrap(type_)
    if isinstance(type_, GraphQLList):
        return []
    if isinstance(type_, GraphQLInputObjectType):
        return {n: _sample(f.type) for n, f in type_.fields.items()
                if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined}
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    assert isinstance(type_, GraphQLScalarType)
    scalar = type_.name
    return {
        "String": "x", "ID": base64.b64encode(f"OpportunityProject:{uuid.uuid4()}".encode()).decode(),
        "UUID": str(uuid.uuid4()), "DateTime": "2026-01-01T00:00:00Z", "Date": "2026-01-01",
        "Decimal": "1", "BigInt": "1", "Int": 1, "Float": 1.0, "Boolean": False, "JSON": {}, "Upload": "x",
    }[scalar]


def _place(value: Any, type_: GraphQLInputType, inner: tuple[str | int, ...], leaf: str) -> Any:
    type_ = _unwrap(type_)
    if not inner:
        return leaf
    head, rest = inner[0], inner[1:]
    if isinstance(type_, GraphQLList):
        return [_place(None, type_.of_type, rest, leaf)]
    assert isinstance(type_, GraphQLInputObjectType) and isinstance(head, str)
    base = dict(value) if isinstance(value, dict) else _sample(type_)
    base[head] = _place(base.get(head), type_.fields[head].type, rest, leaf)
    return base


def request_for(position: Position, leaf: str) -> tuple[str, dict[str, Any]]:
    field = position.field
    declarations, arguments, variables = [], [], {}
    for index, (name, arg) in enumerate(field.args.items()):
        if name == position.argument:
            value = _place(None, arg.type, position.inner, leaf)
        elif isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined:
            value = _sample(arg.type)
        else:
            continue
        declarations.append(f"$a{index}: {arg.type}")
        arguments.append(f"{name}: $a{index}")
        variables[f"a{index}"] = value
    selection = "" if is_leaf_type(get_named_type(field.type)) else " { __typename }"
    inner = f"{position.path[-1]}({', '.join(arguments)}){selection}"
    for name in reversed(position.path[:-1]):
        inner = f"{name} {{ {inner} }}"
    return f"{position.root} Hostile({', '.join(declarations)}) {{ {inner} }}", variables


def _limit(position: Position) -> int:
    return MAX_ID_LENGTH if position.scalar == "ID" else string_limit(position.owner)


def _expected_field(position: Position) -> list[str]:
    return [position.argument, *(str(p) for p in position.inner)]


def _user_errors(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "errors" and isinstance(value, list):
                yield from value
            else:
                yield from _user_errors(value)


ALL_POSITIONS = positions(served._schema)


def test_every_string_argument_has_a_case() -> None:
    """The meta-test: every string argument and input field of the schema is reached by some position."""
    covered = {p.owner for p in ALL_POSITIONS}
    # Subscription arguments arrive over the WebSocket: tests/live/test_ws_hostile_input.py sends them the cases.
    missing = {o for o in every_string_argument(served._schema) - covered if not o.startswith("Subscription.")}
    assert not missing, f"string arguments without a hostile-input case: {sorted(missing)}"
    assert len(ALL_POSITIONS) > 40


async def _row_counts(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, int]:
    async with owner_engine.connect() as conn:
        tables = (await conn.execute(text(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant_id'"
            " AND table_schema = 'public' ORDER BY table_name"))).scalars().all()
        await conn.execute(text("SELECT set_config('app.tenant_id', :t, false)"), {"t": str(tenant.id)})
        counts = {}
        for table in tables:
            counts[table] = await conn.scalar(text(f'SELECT count(*) FROM "{table}" WHERE tenant_id = :t'),
                                              {"t": tenant.id})
        await conn.rollback()
    return counts


# Side-effect rows a refused request may leave: sign-in events and denials are recorded, not changes.
_SIDE_EFFECT_TABLES = frozenset({"permission_audit", "user_sessions"})


def _check_answer(position: Position, kind: str, response: httpx.Response) -> str | None:
    """None when the answer is clean, else what is wrong."""
    if response.status_code >= 500:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]}"
    errors = body.get("errors") or []
    codes = [(e.get("extensions") or {}).get("code") for e in errors]
    if "INTERNAL_SERVER_ERROR" in codes:
        return f"INTERNAL_SERVER_ERROR: {errors}"
    if any(code not in DOCUMENTED_CODES for code in codes):
        return f"undocumented code: {codes}"
    expected = _expected_field(position)
    if any((e.get("extensions") or {}).get("field") == expected for e in errors):
        return None
    if any(u.get("field") == expected for u in _user_errors(body.get("data"))):
        return None
    if kind == "long" and position.root == "query" and not errors:
        return None  # a read: a value longer than any stored one simply matches nothing
    return f"no error naming {expected}: {json.dumps(body)[:400]}"


@pytest.fixture
async def hostile_admin(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    return await sign_in(client, user)


async def test_every_string_argument_answers_hostile_text_cleanly(
    client: httpx.AsyncClient, hostile_admin: str, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    before = await _row_counts(owner_engine, fresh_tenant)
    headers = {"authorization": f"Bearer {hostile_admin}", "content-type": "application/json"}
    failures: list[str] = []
    sent = 0
    for position in ALL_POSITIONS:
        for kind, leaf in (("nul", NUL), ("surrogate", SURROGATE), ("long", "x" * (_limit(position) + 1))):
            query, variables = request_for(position, leaf)
            body = json.dumps({"query": query, "variables": variables})  # ASCII: \ud800 stays an escape
            response = await client.post("/graphql", content=body, headers=headers)
            sent += 1
            problem = _check_answer(position, kind, response)
            if problem is not None:
                failures.append(f"{position.name} [{kind}]: {problem}")
    after = await _row_counts(owner_engine, fresh_tenant)
    written = {t: (before[t], after[t]) for t in before if before[t] != after[t] and t not in _SIDE_EFFECT_TABLES}
    assert not failures, f"{len(failures)} of {sent} cases:\n" + "\n".join(failures)
    assert not written, f"rows written by refused input: {written}"


# --- /auth/* JSON fields -------------------------------------------------------------------------

# Every /auth route that reads a JSON body, with its fields (the meta-test below keeps it complete).
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "/auth/login": ("email", "password", "tenant"),
    "/auth/password/reset/request": ("email", "tenant"),
    "/auth/password/reset": ("token", "password"),
    "/auth/invitations/accept": ("token", "password"),
    "/auth/password/change": ("currentPassword", "newPassword"),
    "/auth/mfa/confirm": ("code",),
    "/auth/mfa/verify": ("code",),
    "/auth/mfa/recovery": ("code",),
}
# POST routes without a JSON body: sign-out and MFA enrollment take none, the SAML ACS is a form.
_NO_JSON_BODY = ("/auth/logout", "/auth/mfa/enroll", "/auth/saml/{tenant}/acs")


def test_every_auth_json_route_has_cases(read_app: Starlette) -> None:
    posted = {
        route.path for route in read_app.routes
        if isinstance(route, Route) and route.path.startswith("/auth/") and "POST" in (route.methods or ())
    }
    assert posted - set(_NO_JSON_BODY) == set(AUTH_FIELDS)


async def test_every_auth_json_field_answers_hostile_text_cleanly(
    client: httpx.AsyncClient, hostile_admin: str, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    before = await _row_counts(owner_engine, fresh_tenant)
    failures = []
    for path, fields in AUTH_FIELDS.items():
        for field in fields:
            for kind, leaf in (("nul", NUL), ("surrogate", SURROGATE), ("long", "x" * 5000)):
                body = {name: "plausible-value" for name in fields} | {field: leaf}
                response = await client.post(path, content=json.dumps(body), headers={
                    "content-type": "application/json", "authorization": f"Bearer {hostile_admin}"})
                error = response.json().get("error", {}) if response.headers["content-type"].startswith(
                    "application/json") else {}
                if response.status_code != 400 or error.get("code") != "BAD_REQUEST" or error.get("field") != field:
                    failures.append(f"{path} {field} [{kind}]: {response.status_code} {response.text[:200]}")
    after = await _row_counts(owner_engine, fresh_tenant)
    assert not failures, "\n".join(failures)
    assert {t for t in before if before[t] != after[t]} <= _SIDE_EFFECT_TABLES


# --- request bodies ------------------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
BAD_BODIES: dict[str, bytes] = {
    "array": b"[1]",
    "string": b'"query"',
    "null": b"null",
    "number": b"1",
    "not UTF-8": b'{"query": "{ __typename }", "x": "\xff"}',
    "UTF-16": '{"query": "{ __typename }"}'.encode("utf-16"),
    "not JSON": b"{query",
    "nested thousands deep": DEEP.encode(),
    "variables nested thousands deep": b'{"query": "{ __typename }", "variables": {"v": ' + DEEP.encode() + b"}}",
    "variables nested 40 deep": b'{"query": "{ __typename }", "variables": {"v": ' + b"[" * 40 + b"]" * 40 + b"}}",
}


@pytest.fixture
async def raw_client(read_app: Starlette, client: httpx.AsyncClient) -> Any:
    """The same app (its lifespan runs under `client`) without the test hooks, which parse bodies."""
    transport = httpx.ASGITransport(app=read_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as raw:
        yield raw


@pytest.mark.parametrize("kind", list(BAD_BODIES))
async def test_graphql_refuses_a_bad_body_with_400_json(raw_client: httpx.AsyncClient, hostile_admin: str,
                                                        kind: str) -> None:
    response = await raw_client.post("/graphql", content=BAD_BODIES[kind], headers={
        "content-type": "application/json", "authorization": f"Bearer {hostile_admin}"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("kind", list(BAD_BODIES))
async def test_auth_refuses_a_bad_body_with_400_json(raw_client: httpx.AsyncClient, kind: str) -> None:
    response = await raw_client.post("/auth/login", content=BAD_BODIES[kind],
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BAD_REQUEST"


async def _graphql(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/graphql", json=body, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    result.pop("extensions", None)  # which root fields ran compiled (an administrator's flag) is not the point here
    return result


def _codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


async def test_a_cursor_nested_thousands_deep_or_holding_nul_is_bad_input(client: httpx.AsyncClient,
                                                                          hostile_admin: str) -> None:
    for raw in (DEEP.encode(), b'["a\\u0000b"]', b'[{"s": "a\\ud800b"}]'):
        cursor = base64.urlsafe_b64encode(raw).decode()
        body = await _graphql(client, hostile_admin, {
            "query": "query($c: String) { opportunityProjects(after: $c) { totalCount } }", "variables": {"c": cursor}})
        assert _codes(body) == ["BAD_USER_INPUT"], body
        assert body["errors"][0]["message"] == "The cursor is not valid."


async def test_decimal_and_uuid_literals_in_the_document(client: httpx.AsyncClient, hostile_admin: str) -> None:
    row_id = uuid.uuid4()
    for literal in ('"1.5"', "1.5", "2"):
        body = await _graphql(client, hostile_admin, {"query": "{ opportunityProjects(filter: "
                              f"{{winProbabilityScore: {{gt: {literal}}}}}) {{ totalCount }} }}"})
        assert body == {"data": {"opportunityProjects": {"totalCount": 0}}}
    body = await _graphql(client, hostile_admin, {
        "query": f'{{ opportunityProjects(filter: {{rowId: {{in: ["{row_id}"]}}}}) {{ totalCount }} }}'})
    assert body == {"data": {"opportunityProjects": {"totalCount": 0}}}
    query = f'{{ changeHistory(entityId: "{row_id}") {{ totalCount }} }}'
    body = await _graphql(client, hostile_admin, {"query": query})
    assert body == {"data": {"changeHistory": {"totalCount": 0}}}
    for bad in ('{ opportunityProjects(filter: {winProbabilityScore: {gt: "1,5"}}) { totalCount } }',
                "{ opportunityProjects(filter: {winProbabilityScore: {gt: true}}) { totalCount } }",
                '{ changeHistory(entityId: "not-a-uuid") { totalCount } }',
                "{ changeHistory(entityId: 12) { totalCount } }"):
        body = await _graphql(client, hostile_admin, {"query": bad})
        assert _codes(body) == ["GRAPHQL_VALIDATION_FAILED"], body
    body = await _graphql(client, hostile_admin, {
        "query": "query($d: Decimal) { opportunityProjects(filter: {winProbabilityScore: {gt: $d}}) { totalCount } }",
        "variables": {"d": 1.5}})
    assert _codes(body) == ["BAD_USER_INPUT"], body


async def test_global_ids_must_name_a_node_type(client: httpx.AsyncClient, hostile_admin: str) -> None:
    for type_name in ("UserError", "Query", "Mutation", "PageInfo", "NoSuchType"):
        gid = base64.b64encode(f"{type_name}:{uuid.uuid4()}".encode()).decode()
        body = await _graphql(client, hostile_admin, {"query": "query($id: ID!) { node(id: $id) { id } }",
                                                      "variables": {"id": gid}})
        assert body["data"] is None and _codes(body) == ["BAD_USER_INPUT"], body
        assert body["errors"][0]["extensions"]["field"] == ["id"]
        body = await _graphql(client, hostile_admin, {"query": f'{{ nodes(ids: ["{gid}"]) {{ id }} }}'})
        assert body["errors"][0]["extensions"]["field"] == ["ids", "0"], body
    for junk in ("!!!", "", base64.b64encode(b"\xff\xfe").decode(), base64.b64encode(b"no-colon").decode()):
        body = await _graphql(client, hostile_admin, {"query": "query($id: ID!) { node(id: $id) { id } }",
                                                      "variables": {"id": junk}})
        assert _codes(body) == ["BAD_USER_INPUT"], body
    gid = base64.b64encode(f"OpportunityProject:{uuid.uuid4()}".encode()).decode()
    body = await _graphql(client, hostile_admin, {"query": "query($id: ID!) { node(id: $id) { id } }",
                                                  "variables": {"id": gid}})
    assert body == {"data": {"node": None}}


async def test_several_operations_need_an_operation_name(client: httpx.AsyncClient, hostile_admin: str) -> None:
    document = "query A { viewer { __typename } } mutation B { mfaEnrollmentStart { __typename } }"
    body = await _graphql(client, hostile_admin, {"query": document})
    assert body["data"] is None and _codes(body) == ["BAD_REQUEST"], body
    assert "operationName" in body["errors"][0]["message"]
    body = await _graphql(client, hostile_admin, {"query": document, "operationName": "A"})
    assert body == {"data": {"viewer": {"__typename": "Viewer"}}}


async def test_every_graphql_error_carries_a_code(client: httpx.AsyncClient, hostile_admin: str) -> None:
    cases = {
        "{ ": "GRAPHQL_PARSE_FAILED",
        "{ viewer { __typename } } }": "GRAPHQL_PARSE_FAILED",
        "{ noSuchField }": "GRAPHQL_VALIDATION_FAILED",
        "query($x: Int) { viewer { __typename } }": "GRAPHQL_VALIDATION_FAILED",
        "{ opportunityProjects(first: 101) { totalCount } }": "BAD_USER_INPUT",
    }
    for document, code in cases.items():
        body = await _graphql(client, hostile_admin, {"query": document})
        assert _codes(body) == [code], (document, body)
    body = await _graphql(client, hostile_admin, {"query": "query($n: Int!) { opportunityProjects(first: $n) "
                                                  "{ totalCount } }", "variables": {"n": "ten"}})
    assert _codes(body) == ["BAD_USER_INPUT"], body
    unknown = await client.post("/graphql", json={"query": "{ viewer { __typename } }", "operationName": "Nope"},
                                headers={"authorization": f"Bearer {hostile_admin}"})
    assert unknown.status_code == 400 and _codes(unknown.json()) == ["BAD_REQUEST"], unknown.text


async def test_http_refusals_are_json_with_a_code(raw_client: httpx.AsyncClient, hostile_admin: str) -> None:
    bearer = {"authorization": f"Bearer {hostile_admin}"}
    unknown = await raw_client.get("/no/such/path")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    unknown = await raw_client.post("/auth/no-such-route", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    unknown = await raw_client.get("/no/such/path", headers=bearer)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "NOT_FOUND"
    wrong_method = await raw_client.get("/auth/login")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    over_get = await raw_client.get("/graphql", params={"query": "mutation { mfaEnrollmentStart { __typename } }"},
                                    headers=bearer)
    assert over_get.status_code == 405, over_get.text
    assert over_get.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    no_query = await raw_client.post("/graphql", json={"variables": {}}, headers=bearer)
    assert no_query.status_code == 400 and no_query.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    unauthenticated = await raw_client.post("/graphql", json={"query": "{ __typename }"})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_json_values_are_checked_to_the_last_key(client: httpx.AsyncClient, hostile_admin: str) -> None:
    """An override value is JSON: NUL is refused in nested strings and keys, literal or variable."""
    project = uuid.uuid4()
    create = f'opportunityProjectOverrideCreate(input: {{opportunityProjectRowId: "{project}", fieldName: "title", '
    documents = [
        ("mutation { " + create + 'overrideValue: {a: ["ok", "bad\\u0000"]}}) { errors { code } } }', {}),
        ("mutation($v: JSON) { " + create + "overrideValue: $v}) { errors { code } } }",
         {"v": {"nested": [{"bad\u0000key": 1}]}}),
        ("mutation($s: JSON) { " + create + "overrideValue: {a: $s}}) { errors { code } } }", {"s": "x\ud800"}),
    ]
    for document, variables in documents:
        response = await client.post("/graphql", content=json.dumps({"query": document, "variables": variables}),
                                     headers={"authorization": f"Bearer {hostile_admin}",
                                              "content-type": "application/json"})
        body = response.json()
        assert _codes(body) == ["BAD_USER_INPUT"], body
        assert body["errors"][0]["extensions"]["field"] == ["input", "overrideValue"]


async def test_hostile_text_written_in_the_document(client: httpx.AsyncClient, hostile_admin: str) -> None:
    """Literals, not variables: NUL is refused naming the argument; a lone surrogate cannot even be lexed."""
    nul = await _graphql(client, hostile_admin, {
        "query": '{ opportunityProjects(filter: {projectName: {contains: "a\\u0000b"}}) { totalCount } }'})
    assert _codes(nul) == ["BAD_USER_INPUT"] and nul["errors"][0]["extensions"]["field"] == [
        "filter", "projectName", "contains"]
    escaped = await _graphql(client, hostile_admin, {"query": '{ documents(search: "a\\uD800b") { totalCount } }'})
    assert _codes(escaped) == ["GRAPHQL_PARSE_FAILED"], escaped
    raw = json.dumps({"query": '{ documents(search: "a\ud800b") { totalCount } }'})  # the character itself
    response = await client.post("/graphql", content=raw, headers={
        "authorization": f"Bearer {hostile_admin}", "content-type": "application/json"})
    assert response.status_code == 200 and _codes(response.json()) in (["GRAPHQL_PARSE_FAILED"], ["BAD_USER_INPUT"])


async def test_get_requests_parse_their_variables_strictly(raw_client: httpx.AsyncClient, hostile_admin: str) -> None:
    for variables in ("[1]", "{nope", "[" * 5000 + "]" * 5000):
        params = {"query": "{ viewer { __typename } }", "variables": variables}
        response = await raw_client.get("/graphql", params=params, headers={"authorization": f"Bearer {hostile_admin}"})
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
