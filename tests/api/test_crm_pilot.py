"""Organizations and contacts through the read API: lists, nesting, node, filters, statement counts."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

QUERY = """
query ($first: Int, $after: String) {
  organizations(first: $first, after: $after, orderBy: [{field: NAME}]) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      id rowId name
      parentOrganization { rowId name }
      childOrganizations(first: 5) { totalCount nodes { name } }
      contacts(first: 3) { nodes { lastName organization { name } } }
      createdBy { rowId email }
    }
  }
}
"""


async def _orgs(owner_engine: AsyncEngine, tenant: TenantRef, count: int) -> list[Row[Any]]:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        parent = await make(conn, "organizations", tenant, name="Agency 000")
        orgs = [parent]
        for i in range(1, count):
            org = await make(conn, "organizations", tenant, name=f"Agency {i:03}", parent_organization_id=parent.id)
            orgs.append(org)
            for j in range(2):
                await make(conn, "contacts", tenant, organization_id=org.id, last_name=f"Contact{i:03}-{j}")
    return orgs


async def test_nested_list_costs_the_same_statements_for_5_and_50(
    executor_client: httpx.AsyncClient, executor_app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    # The executor's own statements are what this counts (the compiled path: tests/test_compiled_reads.py).
    client, read_app = executor_client, executor_app
    await _orgs(owner_engine, fresh_tenant, 50)
    engine = read_app.state.engine
    counts = []
    for first in (5, 50):
        with count_statements(engine) as statements:
            body = await gql(client, QUERY, {"first": first}, token=admin_token)
        nodes = body["data"]["organizations"]["nodes"]
        assert len(nodes) == first
        # The operation's statements follow its set_config, if it set the tenant itself (the request's
        # caller lookup sets it on the driver, unseen here).
        start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
        operation = statements[start + 1 :]
        counts.append(len([s for s in operation if "count(" not in s]))
    # organizations; their parents, child pages, contact pages and creators; the contacts' organizations
    assert counts[0] == counts[1] == 6, counts
    first = nodes[0]
    assert first["name"] == "Agency 000" and first["childOrganizations"]["totalCount"] == 49
    assert [n["name"] for n in first["childOrganizations"]["nodes"]] == [f"Agency {i:03}" for i in range(1, 6)]
    assert nodes[1]["parentOrganization"]["name"] == "Agency 000"
    assert [c["lastName"] for c in nodes[1]["contacts"]["nodes"]] == ["Contact001-0", "Contact001-1"]
    assert body["data"]["organizations"]["totalCount"] == 50


async def test_node_and_cross_tenant(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str,
    tenant_b: TenantRef,
) -> None:
    orgs = await _orgs(owner_engine, fresh_tenant, 2)
    listed = await gql(client, "{ organizations(first: 2) { nodes { id rowId } } }", token=admin_token)
    gid = listed["data"]["organizations"]["nodes"][0]["id"]
    found = await gql(client, "query ($id: ID!) { node(id: $id) { id ... on Organization { name } } }",
                      {"id": gid}, token=admin_token)
    assert found["data"]["node"]["name"] == "Agency 000"
    other = await _orgs(owner_engine, tenant_b, 1)
    import base64

    foreign = base64.b64encode(f"Organization:{other[0].id}".encode()).decode()
    missing = base64.b64encode(f"Organization:{orgs[0].id.hex[:8]}-0000-0000-0000-000000000000".encode()).decode()
    for gid_ in (foreign, missing):
        result = await gql(client, "query ($id: ID!) { node(id: $id) { id } }", {"id": gid_}, token=admin_token)
        assert result["data"]["node"] is None


async def test_filters_and_pagination(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    await _orgs(owner_engine, fresh_tenant, 12)
    seen = []
    after = None
    while True:
        body = await gql(client, QUERY, {"first": 5, "after": after}, token=admin_token)
        page = body["data"]["organizations"]
        seen += [n["name"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == sorted(seen) and len(seen) == 12
    filtered = await gql(
        client, '{ organizations(filter: {name: {contains: "agency 01"}}) { nodes { name } } }', token=admin_token
    )
    assert [n["name"] for n in filtered["data"]["organizations"]["nodes"]] == ["Agency 010", "Agency 011"]
    refused = await gql(client, "{ organizations(first: 101) { nodes { name } } }", token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
