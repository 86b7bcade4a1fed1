"""Capture plans and proposals through the read API: relations both ways, enums, roots (archived
hidden by default, filters, orders, pagination), statement counts, node across tenants."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _gid(type_name: str, row_id: Any) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


async def _pursuit(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, Any]:
    """Two projects; three plans and three proposals on the first, one of each on the second.

    Creation times are one hour apart in insertion order; the last plan and proposal are archived.
    """
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        author = await make(conn, "users", tenant, last_name="Author")
        editor = await make(conn, "users", tenant, last_name="Editor")
        manager = await make(conn, "users", tenant, last_name="Manager")
        projects = [await make(conn, "opportunity_projects", tenant) for _ in range(2)]
        p1, p2 = (p.id for p in projects)
        plan_specs = [
            (p1, "draft", None, None),
            (p1, "in_review", "pending", None),
            (p2, "approved", "go", None),
            (p1, "superseded", "no_go", T0 + timedelta(days=30)),
        ]
        plans = []
        for i, (project, status, decision, archived_at) in enumerate(plan_specs):
            plans.append(await make(
                conn, "capture_plans", tenant, {"opportunity_projects": project}, status=status,
                go_no_go_decision=decision, created_by=author.id, updated_by=editor.id if i % 2 else None,
                archived_at=archived_at, archived_by=editor.id if archived_at else None,
                created_at=T0 + timedelta(hours=i),
            ))
        proposal_specs = [
            (p1, "draft", author.id, None),
            (p2, "pink_team", manager.id, None),
            (p1, "submitted", manager.id, None),
            (p1, "withdrawn", author.id, T0 + timedelta(days=30)),
        ]
        proposals = []
        for i, (project, status, lead, archived_at) in enumerate(proposal_specs):
            proposals.append(await make(
                conn, "proposals", tenant, {"opportunity_projects": project}, status=status,
                proposal_manager=lead, created_by=author.id, team_members='["a@example.test"]',
                archived_at=archived_at, archived_by=editor.id if archived_at else None,
                created_at=T0 + timedelta(hours=i),
            ))
    return {
        "author": author, "editor": editor, "manager": manager, "projects": projects,
        "plans": plans, "proposals": proposals,
    }


PLAN = """
query ($id: ID!) {
  node(id: $id) {
    ... on CapturePlan {
      rowId planName status goNoGoDecision archivedAt
      opportunityProject { rowId }
      createdBy { rowId } updatedBy { rowId } archivedBy { rowId }
      history(first: 10) { nodes { rowId fieldName } }
    }
  }
}"""


async def test_capture_plan_fields_and_relations_both_ways(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _pursuit(owner_engine, fresh_tenant)
    plans, (p1, p2) = w["plans"], w["projects"]
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        refs = {"opportunity_projects": p1.id}
        changes = [
            await make(conn, "change_history", fresh_tenant, refs, entity_type="capture_plan",
                       entity_id=plans[3].id, field_name=name, change_timestamp=T0 + timedelta(minutes=m))
            for name, m in (("status", 1), ("go_no_go_decision", 2))
        ]
        # Same id under another entity type: not this plan's history.
        await make(conn, "change_history", fresh_tenant, refs, entity_type="proposal", entity_id=plans[3].id)

    body = await gql(client, PLAN, {"id": _gid("CapturePlan", plans[3].id)}, token=admin_token)
    plan = body["data"]["node"]
    assert plan["rowId"] == str(plans[3].id)
    assert plan["status"] == "SUPERSEDED" and plan["goNoGoDecision"] == "NO_GO"
    assert plan["archivedAt"] == "2026-03-31T09:00:00.000000Z"
    assert plan["opportunityProject"] == {"rowId": str(p1.id)}
    assert plan["createdBy"] == {"rowId": str(w["author"].id)}
    assert plan["updatedBy"] == {"rowId": str(w["editor"].id)}
    assert plan["archivedBy"] == {"rowId": str(w["editor"].id)}
    assert [h["rowId"] for h in plan["history"]["nodes"]] == [str(changes[1].id), str(changes[0].id)]

    body = await gql(client, PLAN, {"id": _gid("CapturePlan", plans[0].id)}, token=admin_token)
    first = body["data"]["node"]
    assert first["goNoGoDecision"] is None and first["updatedBy"] is None and first["archivedBy"] is None

    # The other direction: each project lists exactly its plans and proposals (archived ones too).
    reverse = """
    query ($ids: [ID!]!) { nodes(ids: $ids) { ... on OpportunityProject {
      rowId capturePlans(first: 10) { nodes { rowId } } proposals(first: 10) { nodes { rowId } } } } }"""
    nodes = (await gql(client, reverse, {"ids": [_gid("OpportunityProject", p.id) for p in (p1, p2)]},
                       token=admin_token))["data"]["nodes"]
    on_p1 = [p for p in plans if p.opportunity_project_id == p1.id]
    assert sorted(_ids(nodes[0]["capturePlans"])) == sorted(str(p.id) for p in on_p1)
    assert _ids(nodes[1]["capturePlans"]) == [str(plans[2].id)]
    props_p1 = [p for p in w["proposals"] if p.opportunity_project_id == p1.id]
    assert sorted(_ids(nodes[0]["proposals"])) == sorted(str(p.id) for p in props_p1)
    assert _ids(nodes[1]["proposals"]) == [str(w["proposals"][1].id)]


async def test_proposal_fields_and_relations(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _pursuit(owner_engine, fresh_tenant)
    query = """
    query ($id: ID!) { node(id: $id) { ... on Proposal {
      rowId proposalTitle status teamMembers reviewStages complianceMatrix archivedAt
      opportunityProject { rowId } proposalManager { rowId lastName } createdBy { rowId }
      updatedBy { rowId } archivedBy { rowId } } } }"""
    proposal = (await gql(client, query, {"id": _gid("Proposal", w["proposals"][1].id)}, token=admin_token))
    node = proposal["data"]["node"]
    assert node["rowId"] == str(w["proposals"][1].id) and node["status"] == "PINK_TEAM"
    assert node["teamMembers"] == ["a@example.test"] and node["reviewStages"] == []
    assert node["complianceMatrix"] is None and node["archivedAt"] is None
    assert node["opportunityProject"] == {"rowId": str(w["projects"][1].id)}
    assert node["proposalManager"] == {"rowId": str(w["manager"].id), "lastName": "Manager"}
    assert node["createdBy"] == {"rowId": str(w["author"].id)} and node["updatedBy"] is None
    archived = (await gql(client, query, {"id": _gid("Proposal", w["proposals"][3].id)}, token=admin_token))
    assert archived["data"]["node"]["archivedBy"] == {"rowId": str(w["editor"].id)}
    assert archived["data"]["node"]["status"] == "WITHDRAWN"


ROOT = """
query ($first: Int, $after: String, $last: Int, $before: String, $filter: CapturePlanFilter,
       $orderBy: [CapturePlanOrder!]) {
  capturePlans(first: $first, after: $after, last: $last, before: $before, filter: $filter,
               orderBy: $orderBy) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { rowId status }
  }
}"""


async def _plans(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    body = await gql(client, ROOT, variables, token=token)
    page: dict[str, Any] = body["data"]["capturePlans"]
    return page


async def test_capture_plans_root_hides_archived_and_filters(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _pursuit(owner_engine, fresh_tenant)
    plans, (p1, _p2) = w["plans"], w["projects"]
    ids = [str(p.id) for p in plans]

    default = await _plans(client, admin_token)
    # Newest first, archived left out.
    assert _ids(default) == [ids[2], ids[1], ids[0]] and default["totalCount"] == 3
    only_archived = await _plans(client, admin_token, filter={"archivedAt": {"isNull": False}})
    assert _ids(only_archived) == [ids[3]]
    both = await _plans(client, admin_token, filter={"includeArchived": True})
    assert _ids(both) == [ids[3], ids[2], ids[1], ids[0]] and both["totalCount"] == 4

    statuses = ["DRAFT", "APPROVED", "SUPERSEDED"]
    by_status = await _plans(client, admin_token, filter={"status": {"in": statuses}})
    assert _ids(by_status) == [ids[2], ids[0]]
    by_decision = await _plans(client, admin_token, filter={"goNoGoDecision": {"eq": "PENDING"}})
    assert _ids(by_decision) == [ids[1]]
    by_project = await _plans(client, admin_token, filter={"opportunityProjectId": {"eq": str(p1.id)}})
    assert _ids(by_project) == [ids[1], ids[0]]
    created = {"gte": "2026-03-01T10:00:00Z", "lt": "2026-03-01T11:00:00.000000Z"}
    assert _ids(await _plans(client, admin_token, filter={"createdAt": created})) == [ids[1]]
    some = {"rowId": {"in": [ids[0], ids[3]]}, "includeArchived": True}
    by_row = await _plans(client, admin_token, filter=some)
    assert _ids(by_row) == [ids[3], ids[0]]

    ordered = await _plans(client, admin_token, orderBy=[{"field": "STATUS", "direction": "DESC"}])
    assert [n["status"] for n in ordered["nodes"]] == ["IN_REVIEW", "DRAFT", "APPROVED"]
    by_project_then_status = await _plans(
        client, admin_token, filter={"includeArchived": True},
        orderBy=[{"field": "OPPORTUNITY_PROJECT_ID"}, {"field": "STATUS"}],
    )
    expected = sorted(plans, key=lambda p: (str(p.opportunity_project_id), p.status))
    assert _ids(by_project_then_status) == [str(p.id) for p in expected]


async def test_capture_plans_pagination_both_ways_across_inserts(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _pursuit(owner_engine, fresh_tenant)
    ids = [str(p.id) for p in w["plans"][:3]]
    first = await _plans(client, admin_token, first=2)
    assert _ids(first) == [ids[2], ids[1]] and first["pageInfo"]["hasNextPage"] is True
    # A newer plan arrives between the pages: the next page is unchanged (keyset, not offset).
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        refs = {"opportunity_projects": w["projects"][0].id}
        newest = await make(conn, "capture_plans", fresh_tenant, refs, created_at=T0 + timedelta(days=1))
    second = await _plans(client, admin_token, first=2, after=first["pageInfo"]["endCursor"])
    assert _ids(second) == [ids[0]] and second["pageInfo"] == {
        **second["pageInfo"], "hasNextPage": False, "hasPreviousPage": True,
    }
    back = await _plans(client, admin_token, last=2, before=second["pageInfo"]["startCursor"])
    assert _ids(back) == [ids[2], ids[1]] and back["pageInfo"]["hasPreviousPage"] is True
    before_all = await _plans(client, admin_token, last=5, before=back["pageInfo"]["startCursor"])
    assert _ids(before_all) == [str(newest.id)] and before_all["pageInfo"]["hasPreviousPage"] is False

    too_many = "{ capturePlans(first: 101) { nodes { rowId } } }"
    refused = await gql(client, too_many, token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "101" in refused["errors"][0]["message"]
    too_many = "{ proposals(last: 101) { nodes { rowId } } }"
    refused = await gql(client, too_many, token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    bad_cursor = '{ proposals(after: "nonsense") { nodes { rowId } } }'
    bad = await gql(client, bad_cursor, token=admin_token, errors=True)
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_proposals_root_filters_and_orders(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _pursuit(owner_engine, fresh_tenant)
    ids = [str(p.id) for p in w["proposals"]]
    query = """query ($filter: ProposalFilter, $orderBy: [ProposalOrder!]) {
      proposals(filter: $filter, orderBy: $orderBy) { totalCount nodes { rowId status } } }"""

    async def listed(**variables: Any) -> list[str]:
        return _ids((await gql(client, query, variables, token=admin_token))["data"]["proposals"])

    assert await listed() == [ids[2], ids[1], ids[0]]
    assert await listed(filter={"archivedAt": {"gte": "2026-03-31T00:00:00Z"}}) == [ids[3]]
    assert await listed(filter={"includeArchived": True}) == [ids[3], ids[2], ids[1], ids[0]]
    assert await listed(filter={"includeArchived": False, "status": {"eq": "WITHDRAWN"}}) == []
    assert await listed(filter={"proposalManager": {"eq": str(w["manager"].id)}}) == [ids[2], ids[1]]
    assert await listed(filter={"status": {"eq": "DRAFT"}}) == [ids[0]]
    assert await listed(filter={"opportunityProjectId": {"in": [str(w["projects"][1].id)]}}) == [ids[1]]
    assert await listed(filter={"createdAt": {"lte": "2026-03-01T10:00:00Z"}}) == [ids[1], ids[0]]
    ordered = await listed(orderBy=[{"field": "STATUS"}])
    assert ordered == [ids[0], ids[1], ids[2]]  # draft, pink_team, submitted


NESTED = """
query ($first: Int!) {
  capturePlans(first: $first) {
    nodes {
      rowId status
      opportunityProject { rowId }
      createdBy { email } updatedBy { email } archivedBy { email }
      history(first: 2) { totalCount nodes { rowId changedByUser { email } } }
    }
  }
  proposals(first: $first) {
    nodes { rowId proposalManager { email } opportunityProject { rowId } }
  }
}"""


async def test_nested_capture_lists_cost_the_same_statements_for_5_and_50(
    executor_client: httpx.AsyncClient, executor_app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    # The executor's own statements are what this counts (the compiled path: tests/test_compiled_reads.py).
    client, read_app = executor_client, executor_app
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        users = [await make(conn, "users", fresh_tenant) for _ in range(3)]
        projects = [await make(conn, "opportunity_projects", fresh_tenant) for _ in range(10)]
        for i in range(50):
            refs = {"opportunity_projects": projects[i % 10].id}
            plan = await make(conn, "capture_plans", fresh_tenant, refs, created_by=users[i % 3].id,
                              updated_by=users[(i + 1) % 3].id, created_at=T0 + timedelta(minutes=i))
            await make(conn, "proposals", fresh_tenant, refs, proposal_manager=users[i % 3].id,
                       created_at=T0 + timedelta(minutes=i))
            for _ in range(2):
                await make(conn, "change_history", fresh_tenant, refs, entity_type="capture_plan",
                           entity_id=plan.id, changed_by_user_id=users[i % 3].id)
    engine = read_app.state.engine
    counts = []
    for first in (5, 50):
        with count_statements(engine) as statements:
            body = await gql(client, NESTED, {"first": first}, token=admin_token)
        assert len(body["data"]["capturePlans"]["nodes"]) == first
        assert len(body["data"]["proposals"]["nodes"]) == first
        start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
        operation = statements[start + 1 :]
        counted = [s for s in operation if "count(" in s]
        counts.append((len(operation) - len(counted), len(counted)))
    # At most one statement per relation per level: capture plans, proposals, their projects, their
    # users (the three user fields and proposalManager share one batch), history pages, the
    # history's users (which may join the users batch); and one count (history totalCount).
    assert counts[0] == counts[1], counts
    assert counts[0][0] <= 6 and counts[0][1] == 1, counts
    node = body["data"]["capturePlans"]["nodes"][0]
    assert node["history"]["totalCount"] == 2 and node["archivedBy"] is None


async def test_node_of_another_tenant_is_null_like_a_missing_id(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_b: TenantRef,
    admin_token: str,
) -> None:
    mine = await _pursuit(owner_engine, fresh_tenant)
    theirs = await _pursuit(owner_engine, tenant_b)
    query = "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    ids = [
        _gid("CapturePlan", mine["plans"][0].id),
        _gid("CapturePlan", theirs["plans"][0].id),
        _gid("CapturePlan", uuid.uuid4()),
        _gid("Proposal", mine["proposals"][0].id),
        _gid("Proposal", theirs["proposals"][0].id),
    ]
    nodes = (await gql(client, query, {"ids": ids}, token=admin_token))["data"]["nodes"]
    assert nodes == [{"id": ids[0]}, None, None, {"id": ids[3]}, None]
    # Nor can a filter reach them.
    other_project = str(theirs["projects"][0].id)
    filter_ = {"opportunityProjectId": {"eq": other_project}, "includeArchived": True}
    filtered = await _plans(client, admin_token, filter=filter_)
    assert filtered["nodes"] == [] and filtered["totalCount"] == 0
