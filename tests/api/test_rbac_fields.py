"""Field-level permissions, generated from the SDL and held to docs/permissions.md.

Every field carrying `@requiresPermission` is asked for by a user of each system role: the field is
returned, or null with a FORBIDDEN error at its path, exactly as the docs' role matrix says. Meta
tests fail when the SDL and the docs' guarded-fields table disagree, when a guarded field has no
case, or when a guarded field is non-nullable.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
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
    Undefined,
    get_named_type,
)
from sqlalchemy.ext.asyncio import AsyncEngine

import schema.schema as schema_module
from auth.permissions import SYSTEM_ROLES, SystemRole
from auth.rules import READ_RULES
from models.db import set_tenant
from schema.entities import ENTITY_TARGETS
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import populate_every_table
from tests.support.graphql import gql_response, sign_in
from tests.support.http import make_login_user

DOCS = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"
GRAPHQL = schema_module.schema._schema
DIRECTIVE = "requiresPermission"
ROLES = [role.value for role in SystemRole]


# -- the SDL's guarded fields and the docs' tables ----------------------------------------------------


def _guarded() -> dict[str, tuple[str, str | None]]:
    """`Type.field` -> (permission, unlessOwnerOf) for every field the served schema guards."""
    out: dict[str, tuple[str, str | None]] = {}
    for type_name, graphql_type in GRAPHQL.type_map.items():
        if not isinstance(graphql_type, GraphQLObjectType) or type_name.startswith("__"):
            continue
        for field_name, field in graphql_type.fields.items():
            directive = _directive(field)
            if directive is not None:
                out[f"{type_name}.{field_name}"] = directive
    return out


def _directive(field: GraphQLField) -> tuple[str, str | None] | None:
    strawberry_field = field.extensions.get("strawberry-definition") if field.extensions else None
    for directive in getattr(strawberry_field, "directives", None) or ():
        if type(directive).__name__ == "RequiresPermission":
            owner = directive.unless_owner_of
            return directive.permission, owner if isinstance(owner, str) else None
    return None


def _section(title: str) -> str:
    text = DOCS.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/permissions.md has no section {title!r}"
    return match.group(1)


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def _documented_fields() -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for field, permission in _table_rows(_section("Guarded fields")):
        codes = re.findall(r"`([^`]+)`", permission)
        owner = re.search(r"unlessOwnerOf `(\w+)`", permission)
        out[field.strip("`")] = (codes[0], owner.group(1) if owner else None)
    return out


def _role_matrix() -> dict[str, set[str]]:
    """Role name -> permissions, as the docs' system-role table marks them."""
    section = _section("System roles")
    header = next(line for line in section.splitlines() if line.startswith("| permission"))
    names = [cell.strip() for cell in header.strip().strip("|").split("|")][1:]
    matrix: dict[str, set[str]] = {name: set() for name in names}
    for row in _table_rows(section):
        permission = row[0].strip("`")
        for name, cell in zip(names, row[1:], strict=True):
            if cell == "x":
                matrix[name].add(permission)
    return matrix


GUARDED = _guarded()


def test_the_sdl_and_the_docs_list_the_same_guarded_fields() -> None:
    assert _documented_fields() == GUARDED


def test_the_exported_sdl_prints_the_directive_on_every_guarded_field() -> None:
    sdl = (Path(__file__).resolve().parents[2] / "graphql" / "schema.graphql").read_text()
    printed = {f"{t}.{f}" for t, f in _sdl_directive_fields(sdl)}
    assert printed == set(GUARDED)


def _sdl_directive_fields(sdl: str) -> list[tuple[str, str]]:
    # Parsed, not read line by line: descriptions may mention the directive too.
    from graphql import ObjectTypeDefinitionNode, parse

    return [
        (definition.name.value, field.name.value)
        for definition in parse(sdl).definitions
        if isinstance(definition, ObjectTypeDefinitionNode)
        for field in definition.fields or ()
        if any(directive.name.value == DIRECTIVE for directive in field.directives or ())
    ]


def test_every_guarded_field_is_nullable() -> None:
    non_null = []
    for name in GUARDED:
        type_name, field_name = name.split(".")
        owner = GRAPHQL.type_map[type_name]
        assert isinstance(owner, GraphQLObjectType), name
        field_type = owner.fields[field_name].type
        if isinstance(field_type, GraphQLNonNull):
            non_null.append(name)
    assert non_null == []


def test_the_docs_role_matrix_is_the_code_s() -> None:
    assert _role_matrix() == {role.value: {p.value for p in perms} for role, perms in SYSTEM_ROLES.items()}


def test_the_docs_row_rules_are_the_code_s() -> None:
    documented = {}
    for row in _table_rows(_section("Row rules")):
        type_name, permission, project = row[0].strip("`"), row[1], row[2]
        codes = re.findall(r"`([^`]+)`", permission)
        documented[type_name] = (codes[0] if codes else None, project.startswith("yes"), row[3] != "-")
    tables = {target[0]: table.name for target, table in ENTITY_TARGETS.values()}
    actual = {}
    for type_name, table in tables.items():
        rule = READ_RULES[table]
        actual[type_name] = (
            None if rule.permission is None else rule.permission.value,
            rule.project is not None,
            rule.own is not None,
        )
    assert documented == actual


# -- every guarded field, every system role -----------------------------------------------------------


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


_TABLE_OF = {target[0]: table.name for target, table in ENTITY_TARGETS.values()}


def _filler(graphql_type: GraphQLInputType) -> Any:
    """A value of `graphql_type` that passes validation (required input fields filled in)."""
    if isinstance(graphql_type, GraphQLNonNull):
        return _filler(graphql_type.of_type)
    if isinstance(graphql_type, GraphQLList):
        return []
    if isinstance(graphql_type, GraphQLEnumType):
        return next(iter(graphql_type.values))
    if isinstance(graphql_type, GraphQLInputObjectType):
        return {
            name: _filler(field.type)
            for name, field in graphql_type.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        }
    assert isinstance(graphql_type, GraphQLScalarType)
    return {
        "UUID": str(uuid.uuid4()),
        "String": f"rbac-{uuid.uuid4().hex[:8]}",
        "Int": 1,
        "Boolean": False,
        "DateTime": "2031-01-01T00:00:00.000000Z",
        "Date": "2031-01-01",
        "JSON": {},
        "Upload": _FILE,
    }[graphql_type.name]


_FILE = object()  # an Upload variable: the file goes in a GraphQL multipart request


def _files(value: Any, path: str) -> list[str]:
    """The paths of the Upload placeholders in `value`, replaced there by null (as the spec sends them)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if item is _FILE:
                value[key] = None
                found.append(f"{path}.{key}")
            else:
                found += _files(item, f"{path}.{key}")
    return found


async def _post(client: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str) -> httpx.Response:
    files = _files(variables, "variables")
    if not files:
        return await gql_response(client, query, variables, token=token)
    return await client.post(
        "/graphql",
        data={"operations": json.dumps({"query": query, "variables": variables}),
              "map": json.dumps({str(i): [p] for i, p in enumerate(files)})},
        files={str(i): ("rbac.txt", b"A plain text file.\n", "text/plain") for i in range(len(files))},
        headers={"authorization": f"Bearer {token}", "graphql-require-preflight": "1"},
    )


def _selection(graphql_type: Any) -> str:
    named = get_named_type(graphql_type)
    if isinstance(named, GraphQLObjectType):
        return " { __typename }"
    return ""


def _document(name: str, refs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A document asking for the guarded field `name` (Type.field), and its variables."""
    type_name, field_name = name.split(".")
    owner = GRAPHQL.type_map[type_name]
    assert isinstance(owner, GraphQLObjectType), name
    field = owner.fields[field_name]
    if type_name == "Mutation":
        declarations = ", ".join(f"${arg}: {arg_def.type}" for arg, arg_def in field.args.items())
        arguments = ", ".join(f"{arg}: ${arg}" for arg in field.args)
        variables = {arg: _filler(arg_def.type) for arg, arg_def in field.args.items()}
        call = f"{field_name}({arguments})" if arguments else field_name
        head = f"mutation ({declarations})" if declarations else "mutation"
        return f"{head} {{ {call}{_selection(field.type)} }}", variables
    if type_name == "Query":
        return f"{{ {field_name}{_selection(field.type)} }}", {}
    if type_name == "PipelineStageSummary":
        return f"{{ pipelineSummary {{ {field_name} }} }}", {}
    row_id = refs[_TABLE_OF[type_name]]
    query = f"query ($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ {field_name}{_selection(field.type)} }} }} }}"
    return query, {"id": _gid(type_name, row_id)}


def _result_path(name: str) -> list[str]:
    type_name, field_name = name.split(".")
    if type_name in {"Mutation", "Query"}:
        return [field_name]
    if type_name == "PipelineStageSummary":
        return ["pipelineSummary", 0, field_name]  # type: ignore[list-item]
    return ["node", field_name]


def _without_indices(path: list[Any]) -> tuple[str, ...]:
    return tuple(step for step in path if not isinstance(step, int))


def _value_at(data: Any, path: list[Any]) -> Any:
    for step in path:
        if data is None:
            return None
        data = data[step]
    return data


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine) -> tuple[TenantRef, dict[str, Any]]:
    tenant = await create_tenant(owner_engine, "RBAC fields")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs = await populate_every_table(conn, tenant)
    refs["tenants"] = tenant.id
    return tenant, refs


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    return {}


async def _token(client: httpx.AsyncClient, owner_engine: AsyncEngine, tenant: TenantRef, role: str,
                 cache: dict[str, str]) -> str:
    if role not in cache:
        cache[role] = await sign_in(client, await make_login_user(owner_engine, tenant, roles=[role]))
    return cache[role]


def test_every_guarded_field_has_a_case() -> None:
    for name in GUARDED:
        type_name = name.split(".")[0]
        assert type_name in {"Mutation", "Query", "PipelineStageSummary"} or type_name in _TABLE_OF, name


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(GUARDED))
async def test_a_guarded_field_is_served_or_forbidden_as_documented(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    world: tuple[TenantRef, dict[str, Any]],
    tokens: dict[str, str],
    name: str,
    role: str,
) -> None:
    tenant, refs = world
    permission, _owner = _documented_fields()[name]
    allowed = permission in _role_matrix()[role]
    query, variables = _document(name, refs)
    response = await _post(client, query, variables, await _token(client, owner_engine, tenant, role, tokens))
    assert response.status_code == 200, response.text
    body = response.json()
    path = _result_path(name)
    forbidden = [e for e in body.get("errors", []) if e.get("extensions", {}).get("code") == "FORBIDDEN"]
    if allowed:
        assert forbidden == [], body
        if name.split(".")[0] not in {"Mutation"}:
            assert "errors" not in body, body
    else:
        assert forbidden, body
        assert {_without_indices(e["path"]) for e in forbidden} == {_without_indices(path)}, body
        assert forbidden[0]["extensions"]["permission"] == permission
        assert _value_at(body.get("data"), path) is None
        if path[0] == "node":  # field denial: the rest of the object is served
            assert body["data"]["node"] is not None
