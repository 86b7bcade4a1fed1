"""Cases generated from the schema itself: every Node type and every relation field, on real rows.

- every type implementing Node is fetched by `node(id:)` and found in a list (its root connection, or the
  relation connection that lists it);
- every relation field (to-one, to-many, polymorphic; both directions are separate fields) is read on data
  with at least two related rows, and the exact ids must come back;
- a meta-test fails when the SDL gains a Node type or a relation-like field that no case covers.

The relation registry (schema/relations.RELATIONS) says which table and column each field reads, so
the data for a case is built from that, through the row factories.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest
from graphql import GraphQLNamedType, GraphQLObjectType, get_named_type, is_interface_type
from sqlalchemy.ext.asyncio import AsyncEngine

import schema.schema as schema_module
from models.db import set_tenant
from schema.entities import ENTITY_TARGETS
from schema.relations import RELATIONS, Relation
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make, populate_every_table
from tests.support.graphql import gql, sign_in
from tests.support.http import make_login_user

GRAPHQL_SCHEMA = schema_module.schema._schema
NODE_TYPES = {
    name: t
    for name, t in GRAPHQL_SCHEMA.type_map.items()
    if isinstance(t, GraphQLObjectType) and any(i.name == "Node" for i in t.interfaces)
}
# Fields that return a Node or a connection but are not foreign-key relations; each with its reason.
NOT_RELATIONS: dict[tuple[str, str], str] = {
    ("OpportunityProject", "currentExternalData"): "domain field: the current version, tested in test_opportunities",
    ("Notification", "opportunityProject"): "an inbox item's project as the caller may read it: test_notifications",
}
TABLE_OF_TYPE = {target[0]: table.name for target, table in ENTITY_TARGETS.values()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _global_id(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _is_connection(t: GraphQLNamedType) -> bool:
    return t.name.endswith("Connection") and isinstance(t, GraphQLObjectType) and "pageInfo" in t.fields


def _relation_like_fields() -> set[tuple[str, str]]:
    out = set()
    for type_name, t in NODE_TYPES.items():
        for field_name, field in t.fields.items():
            target = get_named_type(field.type)
            if (
                target.name in NODE_TYPES
                or (is_interface_type(target) and target.name == "Node")
                or _is_connection(target)
            ):
                out.add((type_name, field_name))
    return out


def _registered() -> dict[tuple[str, str], Relation]:
    return {(cls, _camel(attr)): rel for (cls, attr), rel in RELATIONS.items()}


def test_every_relation_like_field_has_a_case() -> None:
    uncovered = sorted(_relation_like_fields() - set(_registered()) - set(NOT_RELATIONS))
    assert uncovered == [], f"fields returning nodes or connections without a generated case: {uncovered}"


def test_every_entity_is_a_node_type() -> None:
    assert set(TABLE_OF_TYPE) <= set(NODE_TYPES), sorted(set(TABLE_OF_TYPE) - set(NODE_TYPES))


def _where_values(relation: Relation) -> dict[str, str]:
    """`where_key` strings like "entity_type=opportunity_project" as column values for the children."""
    out = {}
    for part in filter(None, relation.where.split(",")):
        column, sep, value = part.partition("=")
        if sep:
            out[column.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
async def world(read_app: Any, owner_engine: AsyncEngine) -> dict[str, Any]:
    """A tenant with one row in every table, and a signed-in Tenant Admin."""
    tenant = await create_tenant(owner_engine, "SDL cases")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs = await populate_every_table(conn, tenant)
    return {"tenant": tenant, "refs": refs}


async def _token(client: httpx.AsyncClient, owner_engine: AsyncEngine, tenant: TenantRef) -> str:
    user = await make_login_user(owner_engine, tenant, roles=["Tenant Admin"])
    return await sign_in(client, user)


def _cases() -> list[tuple[str, str]]:
    return sorted(_registered())


@pytest.mark.parametrize(("type_name", "field_name"), _cases())
async def test_relation_returns_exactly_the_related_rows(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any], type_name: str, field_name: str
) -> None:
    relation = _registered()[(type_name, field_name)]
    tenant: TenantRef = world["tenant"]
    refs = dict(world["refs"])
    parent_table = TABLE_OF_TYPE[type_name]
    if parent_table == "tenants":
        await _tenant_relation(client, owner_engine, relation, field_name)
        return
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        if relation.kind == "many":
            parent = await make(conn, parent_table, tenant, await _own_refs(conn, tenant, parent_table, refs, ""))
            refs[parent_table] = parent.id
            fixed = _where_values(relation)
            children = [
                await make(
                    conn,
                    relation.table,
                    tenant,
                    await _own_refs(conn, tenant, relation.table, refs, parent_table),
                    **{relation.column: parent.id, **fixed},
                )
                for _ in range(2)
            ]
            expected: Any = sorted(str(c.id) for c in children)
            selection = f"{field_name}(first: 50) {{ nodes {{ rowId }} }}"
        elif relation.kind == "one":
            # `tenant` names the caller's own tenant; everything else gets a fresh target row.
            target = tenant if relation.table == "tenants" else await make(conn, relation.table, tenant, refs)
            # Two rows that point at the target, so the batch holds more than one key.
            parents = [
                await make(
                    conn,
                    parent_table,
                    tenant,
                    await _own_refs(conn, tenant, parent_table, refs, relation.table),
                    **{relation.column: target.id},
                )
                for _ in range(2)
            ]
            parent = parents[0]
            expected = str(target.id)
            selection = f"{field_name} {{ ... on Node {{ id }} }}"
        else:  # polymorphic: one parent per allowed target type, each must resolve to its own target
            cases = []
            for kind in relation.table.split(","):
                target_type, target_table = ENTITY_TARGETS[kind][0][0], ENTITY_TARGETS[kind][1].name
                target_id = (
                    tenant.id
                    if target_table == "tenants"
                    else (
                        await make(conn, target_table, tenant, await _own_refs(conn, tenant, target_table, refs, ""))
                    ).id
                )
                row = await make(
                    conn,
                    parent_table,
                    tenant,
                    await _own_refs(conn, tenant, parent_table, refs, ""),
                    **{relation.where: kind, relation.column: target_id},
                )
                cases.append((row.id, _global_id(target_type, target_id)))
    if relation.kind == "polymorphic":
        token = await _token(client, owner_engine, tenant)
        query = f"query ($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ {field_name} {{ id }} }} }} }}"
        for row_id, expected_gid in cases:
            body = await gql(client, query, {"id": _global_id(type_name, row_id)}, token=token)
            assert body["data"]["node"][field_name] == {"id": expected_gid}
        return
    token = await _token(client, owner_engine, tenant)
    query = f"query ($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ {selection} }} }} }}"
    body = await gql(client, query, {"id": _global_id(type_name, parent.id)}, token=token)
    node = body["data"]["node"]
    assert node is not None, f"{type_name} {parent.id} not found through node()"
    value = node[field_name]
    if relation.kind == "many":
        assert sorted(n["rowId"] for n in value["nodes"]) == expected
    else:
        target_type = relation.target[0] if relation.target else ""
        assert value is not None and value["id"] == _global_id(target_type, uuid.UUID(expected))


async def _own_refs(conn: Any, tenant: TenantRef, table: str, refs: dict[str, Any], keep: str) -> dict[str, Any]:
    """Refs for one more row of `table`: a role grant is unique per (user, role, project), so each grant
    made here gets a user and a role of its own (except the one the case is about)."""
    out = dict(refs)
    if table == "user_roles":
        for kind in ("users", "roles"):
            if kind != keep:
                out[kind] = (await make(conn, kind, tenant, refs)).id
    return out


async def _tenant_relation(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, relation: Relation, field_name: str
) -> None:
    """A tenant's list: a tenant of its own with two more rows; the list must be exactly its rows."""
    from sqlalchemy import text

    tenant = await create_tenant(owner_engine, "SDL tenant case")
    token = await _token(client, owner_engine, tenant)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs = await populate_every_table(conn, tenant)
        fixed = _where_values(relation)
        if fixed:  # e.g. history: rows about the tenant itself
            made = [
                await make(conn, relation.table, tenant, refs, **{relation.column: tenant.id, **fixed})
                for _ in range(2)
            ]
            expected = sorted(str(r.id) for r in made)
        else:  # the tenant's whole list: every row of the table in this tenant
            await make(
                conn,
                relation.table,
                tenant,
                await _own_refs(conn, tenant, relation.table, refs, ""),
            )
            expected = sorted(str(r) for r in (await conn.execute(text(f"SELECT id FROM {relation.table}"))).scalars())
    assert len(expected) >= 2
    selection = f"{field_name}(first: 100) {{ nodes {{ rowId }} }}"
    query = f"query ($id: ID!) {{ node(id: $id) {{ ... on Tenant {{ {selection} }} }} }}"
    body = await gql(client, query, {"id": _global_id("Tenant", tenant.id)}, token=token)
    assert sorted(n["rowId"] for n in body["data"]["node"][field_name]["nodes"]) == expected


@pytest.mark.parametrize("type_name", sorted(TABLE_OF_TYPE))
async def test_every_node_type_is_found_by_node(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any], type_name: str
) -> None:
    tenant: TenantRef = world["tenant"]
    table = TABLE_OF_TYPE[type_name]
    row_id = tenant.id if table == "tenants" else world["refs"].get(table)
    if row_id is None:
        pytest.fail(f"no {table} row was made for {type_name}")
    token = await _token(client, owner_engine, tenant)
    query = f"query ($id: ID!) {{ node(id: $id) {{ id ... on {type_name} {{ rowId }} }} }}"
    body = await gql(client, query, {"id": _global_id(type_name, row_id)}, token=token)
    assert body["data"]["node"] == {"id": _global_id(type_name, row_id), "rowId": str(row_id)}


def test_every_foreign_key_is_a_field_on_both_sides() -> None:
    """Each foreign key between two entity tables: a to-one field on the child, a list on the parent."""
    import models

    one = {(cls, rel.column) for (cls, _), rel in RELATIONS.items() if rel.kind == "one"}
    many = {(cls, rel.table, rel.column) for (cls, _), rel in RELATIONS.items() if rel.kind == "many"}
    missing = []
    for table_name, table in models.Base.metadata.tables.items():
        child = next((t for t, name in TABLE_OF_TYPE.items() if name == table_name), None)
        if child is None:
            continue
        for fk in table.foreign_key_constraints:
            columns = [c.name for c in fk.columns if c.name != "tenant_id"] or ["tenant_id"]
            parent = next((t for t, name in TABLE_OF_TYPE.items() if name == fk.referred_table.name), None)
            if parent is None:
                continue
            if (child, columns[0]) not in one:
                missing.append(f"{child}: no to-one field over {columns[0]}")
            if (parent, table_name, columns[0]) not in many:
                missing.append(f"{parent}: no list of {table_name} over {columns[0]}")
    assert missing == []
