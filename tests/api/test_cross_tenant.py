"""A caller of tenant A asking for tenant B's rows gets exactly what a non-existent id gives."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest
from graphql import GraphQLInputObjectType, GraphQLObjectType, get_named_type
from sqlalchemy.ext.asyncio import AsyncEngine

import schema.schema as schema_module
from models.db import set_tenant
from schema.entities import ENTITY_TARGETS
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import populate_every_table
from tests.support.graphql import gql, sign_in
from tests.support.http import make_login_user

TYPES = sorted((target[0], table.name) for target, table in ENTITY_TARGETS.values())


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


@pytest.fixture(scope="module")
async def tenants(owner_engine: AsyncEngine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("a", "b"):
        tenant = await create_tenant(owner_engine, f"Cross {name}")
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant.id)
            refs = await populate_every_table(conn, tenant)
        refs["tenants"] = tenant.id
        out[name] = (tenant, refs)
    return out


@pytest.fixture
async def token_a(client: httpx.AsyncClient, owner_engine: AsyncEngine, tenants: dict[str, Any]) -> str:
    tenant: TenantRef = tenants["a"][0]
    return await sign_in(client, await make_login_user(owner_engine, tenant, roles=["Tenant Admin"]))


@pytest.mark.parametrize(("type_name", "table"), TYPES)
async def test_node_and_nodes_give_null_for_another_tenants_id(
    client: httpx.AsyncClient, tenants: dict[str, Any], token_a: str, type_name: str, table: str
) -> None:
    own = tenants["a"][1][table]
    foreign = tenants["b"][1][table]
    missing = uuid.uuid4()
    query = "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    body = await gql(
        client, query, {"ids": [_gid(type_name, foreign), _gid(type_name, missing), _gid(type_name, own)]},
        token=token_a,
    )
    assert body["data"]["nodes"] == [None, None, {"id": _gid(type_name, own)}]
    single = await gql(client, "query ($id: ID!) { node(id: $id) { id } }", {"id": _gid(type_name, foreign)},
                       token=token_a)
    assert single["data"]["node"] is None


def _root_lists() -> list[tuple[str, str]]:
    """(root field, node type) for every top-level connection whose filter takes rowId."""
    query_type = schema_module.schema._schema.query_type
    assert query_type is not None
    out = []
    for name, field in query_type.fields.items():
        connection = get_named_type(field.type)
        if not (isinstance(connection, GraphQLObjectType) and name != "viewer" and "pageInfo" in connection.fields):
            continue
        filter_arg = field.args.get("filter")
        if filter_arg is None:
            continue
        filter_type = get_named_type(filter_arg.type)
        if isinstance(filter_type, GraphQLInputObjectType) and "rowId" in filter_type.fields:
            node_type = get_named_type(connection.fields["nodes"].type)
            out.append((name, node_type.name))
    return sorted(out)


def test_root_lists_are_found() -> None:
    assert len(_root_lists()) >= 2


@pytest.mark.parametrize(("field", "type_name"), _root_lists())
async def test_filters_cannot_reach_another_tenants_rows(
    client: httpx.AsyncClient, tenants: dict[str, Any], token_a: str, field: str, type_name: str
) -> None:
    table = next(t for name, t in TYPES if name == type_name)
    foreign = tenants["b"][1][table]
    query = f"query ($id: UUID!) {{ {field}(filter: {{rowId: {{in: [$id]}}}}) {{ totalCount nodes {{ rowId }} }} }}"
    body = await gql(client, query, {"id": str(foreign)}, token=token_a)
    assert body["data"][field] == {"totalCount": 0, "nodes": []}


async def test_the_api_never_reads_stored_secrets(
    executor_client: httpx.AsyncClient, executor_app: Any, tenants: dict[str, Any], token_a: str
) -> None:
    # The executor's own statements are what this counts (the compiled path: tests/test_compiled_reads.py).
    client, read_app = executor_client, executor_app
    from tests.support.sqlcount import count_statements

    query = """{ viewer { user { email userSessions(first: 5) { nodes { rowId } } } }
      users(first: 5) { nodes { email createdBy { email } } }
      externalOpportunitySources(first: 5) { nodes { sourceName } } }"""
    with count_statements(read_app.state.engine) as statements:
        await gql(client, query, token=token_a)
    operation = statements[max((i for i, s in enumerate(statements) if "set_config" in s), default=-1) + 1 :]
    assert len(operation) >= 3
    for secret in ("password_hash", "mfa_secret_encrypted", "session_token_hash", "api_credentials_encrypted"):
        assert not [s for s in operation if secret in s], secret
