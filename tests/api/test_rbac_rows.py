"""Row denial and project scope: a role on one project reads that project's subtree and nothing else.

Also: filters and orders on fields the caller may not read are refused; denials are audited once
per (request, permission, path) with their count, outside the read's own transaction.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import gql, gql_response, sign_in
from tests.support.http import LoginUser, make_login_user
from tests.support.roundtrips import count_round_trips


def _gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


async def _project_subtree(conn: Any, tenant: TenantRef, refs: dict[str, Any]) -> dict[str, uuid.UUID]:
    """A project with one row of everything that hangs under it."""
    project = await make(conn, "opportunity_projects", tenant, refs, win_probability_score=40)
    under = {**refs, "opportunity_projects": project.id}
    out = {"project": project.id}
    for table in ("external_opportunity_data", "external_data_changes", "opportunity_project_overrides",
                  "opportunity_project_contacts", "capture_plans", "proposals"):
        out[table] = (await make(conn, table, tenant, under)).id
    out["documents"] = (await make(conn, "documents", tenant, under, opportunity_project_id=project.id)).id
    out["activity"] = (
        await make(conn, "activities", tenant, under, entity_type="opportunity_project", entity_id=project.id)
    ).id
    out["plan_activity"] = (
        await make(conn, "activities", tenant, under, entity_type="capture_plan", entity_id=out["capture_plans"])
    ).id
    return out


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine) -> dict[str, Any]:
    tenant = await create_tenant(owner_engine, "RBAC rows")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs: dict[str, Any] = {}
        for table in ("users", "organizations", "contacts", "external_opportunity_sources", "document_categories"):
            refs[table] = (await make(conn, table, tenant, refs)).id
        refs["roles"] = await conn.scalar(text("SELECT id FROM roles WHERE name = 'Capture Manager'"))
        one = await _project_subtree(conn, tenant, refs)
        other = await _project_subtree(conn, tenant, refs)
    return {"tenant": tenant, "refs": refs, "one": one, "other": other}


async def _scoped_user(
    owner_engine: AsyncEngine, world: dict[str, Any], expires_at: dt.datetime | None = None
) -> LoginUser:
    """A user whose only role is Capture Manager on project `one`."""
    tenant: TenantRef = world["tenant"]
    user = await make_login_user(owner_engine, tenant, roles=[])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by, expires_at)"
                " VALUES (:t, :u, :r, :p, :by, :e)"
            ),
            {"t": tenant.id, "u": user.id, "r": world["refs"]["roles"], "p": world["one"]["project"],
             "by": tenant.system_user_id, "e": expires_at},
        )
    return user


SUBTREE_QUERY = """
query ($one: UUID!, $other: UUID!) {
  opportunityProjects(filter: {rowId: {in: [$one, $other]}}) { totalCount nodes { rowId winProbabilityScore } }
  capturePlans { totalCount nodes { rowId winStrategy opportunityProject { rowId } } }
  proposals { totalCount nodes { rowId } }
  documents { totalCount nodes { rowId } }
  activities { totalCount nodes { rowId } }
  externalDataChanges { totalCount nodes { rowId } }
  organizations { totalCount }
  contacts { totalCount }
  externalOpportunitySources { totalCount }
  users { totalCount nodes { rowId } }
  auditLogs { totalCount }
  viewer { projectPermissions { opportunityProjectId permissions opportunityProject { rowId } } }
}
"""

NESTED_QUERY = """
query ($id: ID!) {
  node(id: $id) {
    ... on OpportunityProject {
      rowId
      externalOpportunityData { totalCount }
      externalDataChanges { totalCount }
      overrides { totalCount }
      contacts { totalCount nodes { contact { rowId } } }
      capturePlans { totalCount nodes { activities { totalCount } } }
      proposals { totalCount }
      documents { totalCount }
      activities { totalCount }
      externalSource { rowId }
    }
  }
}
"""


async def test_a_project_scoped_capture_manager_sees_its_project_subtree_and_nothing_else(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    user = await _scoped_user(owner_engine, world)
    token = await sign_in(client, user)
    one, other = world["one"], world["other"]
    body = await gql(client, SUBTREE_QUERY, {"one": str(one["project"]), "other": str(other["project"])}, token=token)
    data = body["data"]
    assert data["opportunityProjects"]["totalCount"] == 1
    (project,) = data["opportunityProjects"]["nodes"]
    assert project["rowId"] == str(one["project"]) and project["winProbabilityScore"] is not None
    assert data["capturePlans"]["nodes"][0]["opportunityProject"] == {"rowId": str(one["project"])}
    assert [n["rowId"] for n in data["capturePlans"]["nodes"]] == [str(one["capture_plans"])]
    assert [n["rowId"] for n in data["proposals"]["nodes"]] == [str(one["proposals"])]
    assert [n["rowId"] for n in data["documents"]["nodes"]] == [str(one["documents"])]
    assert sorted(n["rowId"] for n in data["activities"]["nodes"]) == sorted(
        [str(one["activity"]), str(one["plan_activity"])]
    )
    assert [n["rowId"] for n in data["externalDataChanges"]["nodes"]] == [str(one["external_data_changes"])]
    # Tenant-level data is not under the project: a project-scoped role does not reach it.
    for field in ("organizations", "contacts", "externalOpportunitySources", "auditLogs"):
        assert data[field]["totalCount"] == 0, field
    assert data["users"]["nodes"] == [{"rowId": str(user.id)}]  # only the caller's own account
    (scoped,) = data["viewer"]["projectPermissions"]
    assert scoped["opportunityProjectId"] == str(one["project"])
    assert scoped["opportunityProject"] == {"rowId": str(one["project"])}
    assert "capture_plan.strategy:read" in scoped["permissions"] and "opportunity:read" in scoped["permissions"]

    nested = await gql(client, NESTED_QUERY, {"id": _gid("OpportunityProject", one["project"])}, token=token)
    project = nested["data"]["node"]
    for field in ("externalOpportunityData", "externalDataChanges", "overrides", "contacts", "capturePlans",
                  "proposals", "documents", "activities"):
        assert project[field]["totalCount"] == 1, field
    assert project["contacts"]["nodes"] == [{"contact": None}]  # contacts are tenant-level
    assert project["capturePlans"]["nodes"] == [{"activities": {"totalCount": 1}}]
    assert project["externalSource"] is None

    for key, type_name in (("project", "OpportunityProject"), ("capture_plans", "CapturePlan"),
                           ("proposals", "Proposal"), ("documents", "Document"), ("activity", "Activity"),
                           ("opportunity_project_overrides", "OpportunityProjectOverride"),
                           ("external_opportunity_data", "ExternalOpportunityData")):
        ids = [_gid(type_name, one[key]), _gid(type_name, other[key])]
        found = await gql(client, "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids}, token=token)
        assert found["data"]["nodes"] == [{"id": ids[0]}, None], type_name
    hidden = await gql(client, NESTED_QUERY, {"id": _gid("OpportunityProject", other["project"])}, token=token)
    assert hidden["data"]["node"] is None


async def test_a_project_scoped_grant_ends_when_it_expires(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    token = await sign_in(client, await _scoped_user(owner_engine, world, expires_at=expires))
    variables = {"one": str(world["one"]["project"]), "other": str(world["other"]["project"])}
    before = await gql(client, SUBTREE_QUERY, variables, token=token)
    assert before["data"]["opportunityProjects"]["totalCount"] == 1
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.3)
    after = await gql(client, SUBTREE_QUERY, variables, token=token)
    data = after["data"]
    for field in ("opportunityProjects", "capturePlans", "proposals", "documents", "activities",
                  "externalDataChanges"):
        assert data[field]["totalCount"] == 0, field
    assert data["viewer"]["projectPermissions"] == []
    node = await gql(client, NESTED_QUERY, {"id": _gid("OpportunityProject", world["one"]["project"])}, token=token)
    assert node["data"]["node"] is None


# -- filters and orders on guarded fields ---------------------------------------------------------------


async def test_filtering_or_ordering_on_a_field_the_caller_may_not_read_is_refused(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    token = await sign_in(client, await make_login_user(owner_engine, world["tenant"], roles=["Viewer"]))
    for query, field in (
        ("{ opportunityProjects(filter: {winProbabilityScore: {gte: \"10\"}}) { totalCount } }", "opportunityProjects"),
        ("{ pipelineSummary(filter: {winProbabilityScore: {isNull: false}}) { stage } }", "pipelineSummary"),
    ):
        body = await gql(client, query, token=token, errors=True)
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "FORBIDDEN", "permission": "opportunity.score:read"}
        assert error["path"] == [field]
        assert "winProbabilityScore" in error["message"]
        assert body["data"] is None or body["data"].get(field) is None
    ordered = await gql(client, "{ opportunityProjects(orderBy: [{field: WIN_PROBABILITY_SCORE}]) { totalCount } }",
                        token=token, errors=True)
    (error,) = ordered["errors"]
    assert error["extensions"] == {"code": "FORBIDDEN", "permission": "opportunity.score:read"}
    assert "winProbabilityScore" in error["message"]
    # Filtering on a field it may read is fine.
    ok = await gql(client, "{ opportunityProjects(filter: {projectName: {contains: \"x\"}}) { totalCount } }",
                   token=token)
    assert ok["data"]["opportunityProjects"]["totalCount"] >= 0


async def test_a_score_filter_needs_the_permission_on_every_project_the_list_shows(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    """Scores readable on one project only, projects readable on all: filtering would reveal the rest."""
    tenant: TenantRef = world["tenant"]
    admin = await sign_in(client, await make_login_user(owner_engine, tenant, roles=["Tenant Admin"]))
    created = await gql(
        client,
        "mutation ($input: RoleCreateInput!) { roleCreate(input: $input) { role { rowId } errors { code } } }",
        {"input": {"name": f"Score reader {uuid.uuid4().hex[:6]}", "permissions": ["opportunity.score:read"]}},
        token=admin,
    )
    role_id = created["data"]["roleCreate"]["role"]["rowId"]
    user = await make_login_user(owner_engine, tenant, roles=["Viewer"])
    granted = await gql(
        client,
        "mutation ($input: UserRoleGrantInput!) {"
        " userRoleGrant(input: $input) { userRole { rowId } errors { code } } }",
        {"input": {"userRowId": str(user.id), "roleRowId": role_id,
                   "opportunityProjectRowId": str(world["one"]["project"])}},
        token=admin,
    )
    assert granted["data"]["userRoleGrant"]["errors"] == []
    token = await sign_in(client, user)
    query = """query ($one: UUID!, $other: UUID!) {
      opportunityProjects(filter: {rowId: {in: [$one, $other]}}) { nodes { rowId winProbabilityScore } } }"""
    body = await gql_response(client, query, {"one": str(world["one"]["project"]),
                                              "other": str(world["other"]["project"])}, token=token)
    payload = body.json()
    scores = {n["rowId"]: n["winProbabilityScore"] for n in payload["data"]["opportunityProjects"]["nodes"]}
    assert scores[str(world["one"]["project"])] is not None and scores[str(world["other"]["project"])] is None
    (error,) = payload["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN" and error["path"][-1] == "winProbabilityScore"
    refused = await gql(client, "{ opportunityProjects(orderBy: [], filter: {winProbabilityScore: {gte: \"1\"}})"
                                " { totalCount } }", token=token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # An aggregate of the scores over every project is refused the same way.
    summary = await gql(client, "{ pipelineSummary { stage weightedEstimatedValueMax } }", token=token, errors=True)
    assert {e["extensions"]["code"] for e in summary["errors"]} == {"FORBIDDEN"}
    assert all(row["weightedEstimatedValueMax"] is None for row in summary["data"]["pipelineSummary"])

    # A capture manager on that one project only reads one project: there the filter is fine.
    scoped = await sign_in(client, await _scoped_user(owner_engine, world))
    allowed = await gql(client, "{ opportunityProjects(filter: {winProbabilityScore: {gte: \"1\"}}) { totalCount } }",
                        token=scoped)
    assert allowed["data"]["opportunityProjects"]["totalCount"] == 1
    summary = await gql(client, "{ pipelineSummary { projectCount weightedEstimatedValueMax } }", token=scoped)
    assert sum(row["projectCount"] for row in summary["data"]["pipelineSummary"]) == 1


async def test_a_caller_who_reads_the_scores_sorts_by_them_page_by_page(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, world: dict[str, Any]
) -> None:
    token = await sign_in(client, await make_login_user(owner_engine, world["tenant"], roles=["Capture Manager"]))
    query = """query ($after: String) {
      opportunityProjects(first: 1, after: $after, orderBy: [{field: WIN_PROBABILITY_SCORE, direction: DESC}]) {
        nodes { rowId winProbabilityScore } pageInfo { hasNextPage endCursor } } }"""
    seen, after = [], None
    while True:
        page = (await gql(client, query, {"after": after}, token=token))["data"]["opportunityProjects"]
        seen += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    async with owner_engine.connect() as conn:
        await set_tenant(conn, world["tenant"].id)
        expected = [
            str(r.id) for r in await conn.execute(text(
                "SELECT id FROM opportunity_projects WHERE archived_at IS NULL"
                " ORDER BY win_probability_score DESC NULLS FIRST, id"
            ))
        ]
    assert [n["rowId"] for n in seen] == expected


# -- the permission audit -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def hundred(owner_engine: AsyncEngine) -> TenantRef:
    tenant = await create_tenant(owner_engine, "RBAC audit")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs: dict[str, Any] = {}
        refs["users"] = (await make(conn, "users", tenant, refs)).id
        refs["external_opportunity_sources"] = (await make(conn, "external_opportunity_sources", tenant, refs)).id
        for _ in range(100):
            await make(conn, "opportunity_projects", tenant, refs, win_probability_score=55)
    return tenant


async def test_denials_leave_one_audit_row_per_request_permission_and_path(
    client: httpx.AsyncClient, read_app: Any, owner_engine: AsyncEngine, hundred: TenantRef
) -> None:
    token = await sign_in(client, await make_login_user(owner_engine, hundred, roles=["Viewer"]))
    query = """{ opportunityProjects(first: 100) { nodes { projectName winProbabilityScore pursuitHealthScore } }
                 auditLogs { totalCount } }"""
    with count_round_trips(read_app.state.engine) as trips:
        response = await gql_response(client, query, token=token)
    body = response.json()
    nodes = body["data"]["opportunityProjects"]["nodes"]
    assert len(nodes) == 100 and all(n["winProbabilityScore"] is None for n in nodes)
    assert len(body["errors"]) == 200
    request_id = response.headers["x-request-id"]
    async with owner_engine.connect() as conn:
        await set_tenant(conn, hundred.id)
        rows = (
            await conn.execute(
                text(
                    "SELECT permission_checked, field_path, denied_count, resource_type, permission_granted"
                    " FROM permission_audit WHERE request_id = :r ORDER BY field_path"
                ),
                {"r": request_id},
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("audit:read", "auditLogs", 1, "Query", False),
        ("opportunity.score:read", "opportunityProjects.nodes.pursuitHealthScore", 100, "OpportunityProject", False),
        ("opportunity.score:read", "opportunityProjects.nodes.winProbabilityScore", 100, "OpportunityProject", False),
    ]
    # The read ran in its read-only transaction; the audit rows were written after it, in their own.
    transactions: list[list[str]] = []
    for trip in trips:
        entry = " ".join(trip.sql.split())
        if entry.upper().startswith("BEGIN"):
            transactions.append([entry])
        elif transactions:
            transactions[-1].append(entry)
    (read,) = [t for t in transactions if any("opportunity_projects" in s for s in t)]
    (write,) = [t for t in transactions if any("INSERT INTO permission_audit" in s for s in t)]
    assert "READ ONLY" in read[0].upper() and not any(s.lstrip().upper().startswith("INSERT") for s in read)
    assert write[0].upper().startswith("BEGIN") and write[-1].upper().startswith("COMMIT")
    assert transactions.index(read) < transactions.index(write)
