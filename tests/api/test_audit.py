"""The audit trail through the read API: audit logs (polymorphic entity, filters, newest first),
change history (entity, user, parent/children tree, the `changeHistory(entityId:)` root),
permission audit; statement counts; other tenants' rows and ids never show."""

from __future__ import annotations

import base64
import json
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

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def _gid(type_name: str, row_id: Any) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def _audit_world(owner_engine: AsyncEngine, tenant: TenantRef, tenant_b: TenantRef) -> dict[str, Any]:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_b.id)
        foreign_org = await make(conn, "organizations", tenant_b)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        actor = await make(conn, "users", tenant, last_name="Actor")
        org = await make(conn, "organizations", tenant, name="Audited Org")
        project = await make(conn, "opportunity_projects", tenant)
        plan = await make(conn, "capture_plans", tenant, {"opportunity_projects": project.id})

        async def log(hours: float, action: str, entity_type: str, entity_id: Any, **columns: Any) -> Any:
            return await make(conn, "audit_logs", tenant, action_type=action, entity_type=entity_type,
                              entity_id=entity_id, timestamp_utc=_at(hours), **columns)

        logs = {
            "org": await log(1, "test.update", "organization", org.id, user_id=actor.id,
                             before_values=json.dumps({"name": "Old"}),
                             after_values=json.dumps({"name": "New"}),
                             changed_fields=json.dumps(["name"]), ip_address="10.0.0.7", risk_level="high",
                             request_id="req-1", http_method="POST", response_status=200),
            "plan": await log(2, "test.create", "capture_plan", plan.id, access_granted=False),
            "session": await log(3, "test.login", "session", uuid.uuid4(), user_id=actor.id),
            "foreign": await log(4, "test.update", "organization", foreign_org.id),
            "user": await log(5, "test.update", "user", actor.id, user_id=actor.id),
            "no_id": await log(6, "test.export", "organization", None),
        }
    return {"actor": actor, "org": org, "plan": plan, "logs": logs, "foreign_org": foreign_org}


LOGS = """
query ($filter: AuditLogFilter, $orderBy: [AuditLogOrder!], $first: Int, $after: String) {
  auditLogs(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes {
      rowId actionType entityType entityId accessGranted riskLevel ipAddress timestampUtc
      beforeValues afterValues changedFields requestId httpMethod responseStatus
      user { rowId }
      entity { __typename ... on Organization { rowId name } ... on CapturePlan { rowId }
               ... on User { rowId } }
    }
  }
}"""
MINE = {"actionType": {"contains": "test."}}


async def _logs(client: httpx.AsyncClient, token: str, **variables: Any) -> dict[str, Any]:
    page: dict[str, Any] = (await gql(client, LOGS, variables, token=token))["data"]["auditLogs"]
    return page


async def test_audit_logs_newest_first_with_their_entity_and_user(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_b: TenantRef,
    admin_token: str,
) -> None:
    w = await _audit_world(owner_engine, fresh_tenant, tenant_b)
    logs, actor = w["logs"], w["actor"]
    page = await _logs(client, admin_token, filter=MINE)
    order = ["no_id", "user", "foreign", "session", "plan", "org"]
    assert _ids(page) == [str(logs[k].id) for k in order] and page["totalCount"] == 6
    by_key = dict(zip(order, page["nodes"], strict=True))

    org = by_key["org"]
    assert org["entity"] == {"__typename": "Organization", "rowId": str(w["org"].id), "name": "Audited Org"}
    assert org["user"] == {"rowId": str(actor.id)}
    assert org["beforeValues"] == {"name": "Old"} and org["afterValues"] == {"name": "New"}
    assert org["changedFields"] == ["name"] and org["riskLevel"] == "HIGH" and org["ipAddress"] == "10.0.0.7"
    assert org["timestampUtc"] == "2026-04-01T13:00:00.000000Z" and org["entityType"] == "organization"
    assert (org["requestId"], org["httpMethod"], org["responseStatus"]) == ("req-1", "POST", 200)
    assert by_key["plan"]["entity"] == {"__typename": "CapturePlan", "rowId": str(w["plan"].id)}
    assert by_key["plan"]["user"] is None and by_key["plan"]["accessGranted"] is False
    assert by_key["plan"]["riskLevel"] == "LOW" and by_key["plan"]["beforeValues"] is None
    assert by_key["user"]["entity"] == {"__typename": "User", "rowId": str(actor.id)}
    # Not an entity type, another tenant's id, no id: null, exactly like a missing row.
    assert by_key["session"]["entity"] is None and by_key["session"]["entityType"] == "session"
    assert by_key["foreign"]["entity"] is None and by_key["foreign"]["entityId"] == str(w["foreign_org"].id)
    assert by_key["no_id"]["entity"] is None and by_key["no_id"]["entityId"] is None

    # The other direction: the user's audit logs, newest first.
    query = "query ($id: ID!) { node(id: $id) { ... on User { auditLogs(first: 10) { nodes { rowId } } } } }"
    body = await gql(client, query, {"id": _gid("User", actor.id)}, token=admin_token)
    assert _ids(body["data"]["node"]["auditLogs"]) == [str(logs[k].id) for k in ("user", "session", "org")]


async def test_audit_logs_filters_orders_and_pages(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_b: TenantRef,
    admin_token: str,
) -> None:
    w = await _audit_world(owner_engine, fresh_tenant, tenant_b)
    logs, actor = w["logs"], w["actor"]

    async def ids(**filters: Any) -> list[str]:
        return _ids(await _logs(client, admin_token, filter={**MINE, **filters}))

    def expected(*keys: str) -> list[str]:
        return [str(logs[k].id) for k in keys]

    assert await ids(actionType={"eq": "test.update"}) == expected("user", "foreign", "org")
    assert await ids(actionType={"in": ["test.login", "test.export"]}) == expected("no_id", "session")
    assert await ids(entityType={"eq": "organization"}) == expected("no_id", "foreign", "org")
    assert await ids(entityId={"eq": str(w["plan"].id)}) == expected("plan")
    assert await ids(entityId={"isNull": True}) == expected("no_id")
    assert await ids(userId={"eq": str(actor.id)}) == expected("user", "session", "org")
    assert await ids(accessGranted={"eq": False}) == expected("plan")
    assert await ids(riskLevel={"eq": "HIGH"}) == expected("org")
    window = {"gte": "2026-04-01T14:00:00Z", "lt": "2026-04-01T17:00:00+00:00"}
    assert await ids(timestampUtc=window) == expected("foreign", "session", "plan")

    ordered = await _logs(client, admin_token, filter=MINE,
                          orderBy=[{"field": "ACTION_TYPE"}, {"field": "TIMESTAMP_UTC", "direction": "ASC"}])
    assert _ids(ordered) == expected("plan", "no_id", "session", "org", "foreign", "user")

    first = await _logs(client, admin_token, filter=MINE, first=4)
    assert first["pageInfo"]["hasNextPage"] is True
    rest = await _logs(client, admin_token, filter=MINE, first=4, after=first["pageInfo"]["endCursor"])
    assert _ids(first) + _ids(rest) == expected("no_id", "user", "foreign", "session", "plan", "org")
    assert rest["pageInfo"]["hasNextPage"] is False
    too_many = "{ auditLogs(first: 101) { nodes { rowId } } }"
    refused = await gql(client, too_many, token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # Another tenant's rows never show, whatever the filter.
    foreign = await ids(entityId={"eq": str(w["foreign_org"].id)})
    assert foreign == expected("foreign")  # our row about their id, not their rows
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_b.id)
        theirs = await make(conn, "audit_logs", tenant_b, action_type="test.theirs",
                            entity_type="organization")
    assert await ids(rowId={"eq": str(theirs.id)}) == []
    body = await gql(client, "query ($id: ID!) { node(id: $id) { id } }", {"id": _gid("AuditLog", theirs.id)},
                     token=admin_token)
    assert body["data"]["node"] is None


async def _history(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, Any]:
    """A capture plan's change of two fields (a parent change and its two children), an older
    change by the system, and a change of another record."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        editor = await make(conn, "users", tenant, last_name="Editor")
        project = await make(conn, "opportunity_projects", tenant)
        plan = await make(conn, "capture_plans", tenant, {"opportunity_projects": project.id})
        other = await make(conn, "capture_plans", tenant, {"opportunity_projects": project.id})
        refs = {"opportunity_projects": None}
        batch = uuid.uuid4()

        async def change(minutes: int, field: str, **columns: Any) -> Any:
            values = {"entity_type": "capture_plan", "entity_id": plan.id, "field_name": field,
                      "change_timestamp": T0 + timedelta(minutes=minutes), **columns}
            return await make(conn, "change_history", tenant, refs, **values)

        system = await change(1, "timeline", change_source="system", changed_by_system_process="nightly",
                              old_value=json.dumps(None), new_value=json.dumps("Q3"))
        parent = await change(10, "plan_name", changed_by_user_id=editor.id, change_batch_id=batch,
                              old_value=json.dumps("Old"), new_value=json.dumps("New"),
                              change_impact_level="high")
        children = [
            await change(11 + i, field, changed_by_user_id=editor.id, change_batch_id=batch,
                         parent_change_id=parent.id)
            for i, field in enumerate(("win_strategy", "competitive_analysis"))
        ]
        elsewhere = await make(conn, "change_history", tenant, refs, entity_type="capture_plan",
                               entity_id=other.id, field_name="status",
                               change_timestamp=T0 + timedelta(minutes=30))
    return {"editor": editor, "plan": plan, "other": other, "system": system, "parent": parent,
            "children": children, "elsewhere": elsewhere}


CHANGES = """
query ($entityId: UUID!, $first: Int, $after: String, $last: Int, $before: String,
       $filter: ChangeHistoryFilter, $orderBy: [ChangeHistoryOrder!]) {
  changeHistory(entityId: $entityId, first: $first, after: $after, last: $last, before: $before,
                filter: $filter, orderBy: $orderBy) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes {
      rowId entityType entityId fieldName oldValue newValue changeSource changeImpactLevel
      changedBySystemProcess changeBatchId
      entity { __typename ... on CapturePlan { rowId } }
      changedByUser { rowId }
      parentChange { rowId }
      childChanges(first: 10) { totalCount nodes { rowId } }
    }
  }
}"""


async def test_change_history_root_newest_first_with_its_tree(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    h = await _history(owner_engine, fresh_tenant)
    children = h["children"]
    body = await gql(client, CHANGES, {"entityId": str(h["plan"].id)}, token=admin_token)
    page = body["data"]["changeHistory"]
    expected = [children[1], children[0], h["parent"], h["system"]]
    assert _ids(page) == [str(c.id) for c in expected] and page["totalCount"] == 4
    nodes = {n["rowId"]: n for n in page["nodes"]}
    parent = nodes[str(h["parent"].id)]
    assert parent["entityType"] == "CAPTURE_PLAN" and parent["entityId"] == str(h["plan"].id)
    assert parent["entity"] == {"__typename": "CapturePlan", "rowId": str(h["plan"].id)}
    assert parent["oldValue"] == "Old" and parent["newValue"] == "New"
    assert parent["changeSource"] == "USER" and parent["changeImpactLevel"] == "HIGH"
    assert parent["changedByUser"] == {"rowId": str(h["editor"].id)} and parent["parentChange"] is None
    assert parent["childChanges"]["totalCount"] == 2
    assert _ids(parent["childChanges"]) == [str(c.id) for c in children]  # oldest first
    for child in children:
        assert nodes[str(child.id)]["parentChange"] == {"rowId": str(h["parent"].id)}
        assert nodes[str(child.id)]["changeBatchId"] == parent["changeBatchId"] is not None
    system = nodes[str(h["system"].id)]
    assert system["changedByUser"] is None and system["changedBySystemProcess"] == "nightly"
    assert system["changeSource"] == "SYSTEM" and system["oldValue"] is None
    assert system["newValue"] == "Q3"

    # The same rows through the entity's own `history` field.
    query = "query ($id: ID!) { node(id: $id) { ... on CapturePlan { history { nodes { rowId } } } } }"
    own = await gql(client, query, {"id": _gid("CapturePlan", h["plan"].id)}, token=admin_token)
    assert _ids(own["data"]["node"]["history"]) == [str(c.id) for c in expected]
    # And the user's side: the changes the editor made, newest first.
    query = "query ($id: ID!) { node(id: $id) { ... on User { changesCreated { nodes { rowId } } } } }"
    mine = await gql(client, query, {"id": _gid("User", h["editor"].id)}, token=admin_token)
    assert _ids(mine["data"]["node"]["changesCreated"]) == [str(c.id) for c in (*children[::-1], h["parent"])]


async def test_change_history_root_filters_orders_and_pages(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_b: TenantRef,
    admin_token: str,
) -> None:
    h = await _history(owner_engine, fresh_tenant)
    plan = str(h["plan"].id)

    async def ids(**variables: Any) -> list[str]:
        body = await gql(client, CHANGES, {"entityId": plan, **variables}, token=admin_token)
        return _ids(body["data"]["changeHistory"])

    children, parent, system = h["children"], h["parent"], h["system"]
    assert await ids(filter={"fieldName": {"eq": "plan_name"}}) == [str(parent.id)]
    assert await ids(filter={"changeSource": {"eq": "SYSTEM"}}) == [str(system.id)]
    by_editor = {"changedByUserId": {"eq": str(h["editor"].id)}, "fieldName": {"contains": "WIN_"}}
    assert await ids(filter=by_editor) == [str(children[0].id)]
    until = {"changeTimestamp": {"lte": "2026-04-01T12:10:00Z"}}
    assert await ids(filter=until) == [str(parent.id), str(system.id)]
    assert await ids(filter={"entityType": {"eq": "CONTACT"}}) == []
    assert await ids(orderBy=[{"field": "CHANGE_TIMESTAMP", "direction": "ASC"}]) == [
        str(c.id) for c in (system, parent, *children)
    ]
    body = await gql(client, CHANGES, {"entityId": plan, "first": 3}, token=admin_token)
    first = body["data"]["changeHistory"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert await ids(first=3, after=first["pageInfo"]["endCursor"]) == [str(system.id)]
    back = await ids(last=2, before=first["pageInfo"]["endCursor"])
    assert back == [str(children[1].id), str(children[0].id)]
    refused = await gql(client, CHANGES, {"entityId": plan, "first": 101}, token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    # Another tenant's record: empty, exactly like an id that does not exist.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_b.id)
        theirs = await make(conn, "organizations", tenant_b)
        await make(conn, "change_history", tenant_b, {"opportunity_projects": None},
                   entity_type="organization", entity_id=theirs.id)
    for entity_id in (theirs.id, uuid.uuid4()):
        body = await gql(client, CHANGES, {"entityId": str(entity_id)}, token=admin_token)
        page = body["data"]["changeHistory"]
        assert page["nodes"] == [] and page["totalCount"] == 0


async def test_permission_audit_rows_both_ways(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        user = await make(conn, "users", fresh_tenant)
        rows = [
            await make(conn, "permission_audit", fresh_tenant, user_id=user.id,
                       timestamp_utc=T0 + timedelta(hours=i), role_used="Viewer", denial_reason="missing",
                       ip_address="2001:db8::1")
            for i in range(2)
        ]
    query = """query ($id: ID!) { node(id: $id) { ... on User {
      permissionAudits(first: 5) { nodes { rowId resourceType permissionChecked permissionGranted roleUsed
        denialReason ipAddress user { rowId } } } } } }"""
    body = await gql(client, query, {"id": _gid("User", user.id)}, token=admin_token)
    nodes = body["data"]["node"]["permissionAudits"]["nodes"]
    assert [n["rowId"] for n in nodes] == [str(rows[1].id), str(rows[0].id)]
    assert nodes[0] == {
        "rowId": str(rows[1].id), "resourceType": "opportunity_project",
        "permissionChecked": "opportunity:read", "permissionGranted": False, "roleUsed": "Viewer",
        "denialReason": "missing", "ipAddress": "2001:db8::1", "user": {"rowId": str(user.id)},
    }
    found = await gql(client, "query ($id: ID!) { node(id: $id) { ... on PermissionAudit { rowId } } }",
                      {"id": _gid("PermissionAudit", rows[0].id)}, token=admin_token)
    assert found["data"]["node"] == {"rowId": str(rows[0].id)}


NESTED = """
query ($first: Int!, $entityId: UUID!) {
  auditLogs(first: $first, filter: {actionType: {eq: "test.bulk"}}) {
    nodes {
      rowId user { email }
      entity { __typename ... on Organization { name } ... on Contact { lastName } ... on User { email } }
    }
  }
  changeHistory(entityId: $entityId, first: $first) {
    nodes {
      rowId changedByUser { email } parentChange { rowId }
      childChanges(first: 2) { totalCount nodes { rowId changedByUser { email } } }
      entity { ... on Organization { name } }
    }
  }
}"""


async def test_audit_lists_cost_the_same_statements_for_5_and_50(
    client: httpx.AsyncClient, read_app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        users = [await make(conn, "users", fresh_tenant) for _ in range(3)]
        org = await make(conn, "organizations", fresh_tenant)
        contact = await make(conn, "contacts", fresh_tenant)
        targets = [("organization", org.id), ("contact", contact.id), ("user", users[0].id)]
        for i in range(50):
            entity_type, entity_id = targets[i % 3]
            await make(conn, "audit_logs", fresh_tenant, action_type="test.bulk", entity_type=entity_type,
                       entity_id=entity_id, user_id=users[i % 3].id, timestamp_utc=T0 + timedelta(minutes=i))
            parent = await make(conn, "change_history", fresh_tenant, {"opportunity_projects": None},
                                entity_type="organization", entity_id=org.id,
                                changed_by_user_id=users[i % 3].id,
                                change_timestamp=T0 + timedelta(minutes=i))
            for _ in range(2):
                await make(conn, "change_history", fresh_tenant, {"opportunity_projects": None},
                           entity_type="organization", entity_id=contact.id, parent_change_id=parent.id,
                           changed_by_user_id=users[(i + 1) % 3].id)
    engine = read_app.state.engine
    counts = []
    for first in (5, 50):
        with count_statements(engine) as statements:
            body = await gql(client, NESTED, {"first": first, "entityId": str(org.id)}, token=admin_token)
        assert len(body["data"]["auditLogs"]["nodes"]) == first
        assert len(body["data"]["changeHistory"]["nodes"]) == first
        start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
        operation = statements[start + 1 :]
        counted = [s for s in operation if "count(" in s]
        counts.append((len(operation) - len(counted), len(counted)))
    # At most one statement per relation per level, whatever the number of rows: the two roots; users,
    # organizations, contacts (the polymorphic entities, one batch per target table), parent changes,
    # child pages, the children's users; and one count (childChanges totalCount).
    assert counts[0] == counts[1], counts
    assert counts[0][0] <= 9 and counts[0][1] == 1, counts
    node = body["data"]["changeHistory"]["nodes"][0]
    assert node["childChanges"]["totalCount"] == 2 and node["entity"] == {"name": org.name}
