"""Identity through the read API: Tenant, TenantConfiguration, User, Role, UserRole and UserSession
as nodes with their relations both ways, the viewer's tenant and its lists, the `users` and
`roles` roots, statement counts, and other tenants' ids giving null."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql
from tests.support.sqlcount import count_statements

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def _gid(type_name: str, row_id: Any) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _ids(connection: dict[str, Any]) -> list[str]:
    return [n["rowId"] for n in connection["nodes"]]


def _s(*rows: Any) -> list[str]:
    return [str(r.id) for r in rows]


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def _people(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, Any]:
    """Ada (created by Bob) and everything that points at her, plus a little that does not."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        bob = await make(conn, "users", tenant, first_name="Bob", last_name="Zed", email="bob@example.test")
        ada = await make(
            conn,
            "users",
            tenant,
            first_name="Ada",
            last_name="Lovelace",
            email="ada@example.test",
            created_by=bob.id,
            created_at=_at(1),
        )
        role = await make(
            conn, "roles", tenant, name="Pricing Lead", permissions=json.dumps(["b:read", "a:write"])
        )
        projects = [
            await make(
                conn, "opportunity_projects", tenant, assigned_capture_manager=ada.id, created_at=_at(i)
            )
            for i in range(2)
        ]
        side_project = await make(conn, "opportunity_projects", tenant, assigned_proposal_manager=ada.id)
        refs = {"users": ada.id, "roles": role.id, "opportunity_projects": projects[0].id}
        user_roles = [
            await make(conn, "user_roles", tenant, refs, assigned_by=bob.id, assigned_at=_at(2)),
            await make(
                conn,
                "user_roles",
                tenant,
                refs,
                opportunity_project_id=projects[1].id,
                expires_at=_at(1000),
                assigned_at=_at(3),
            ),
        ]
        sessions = [
            await make(
                conn,
                "user_sessions",
                tenant,
                refs,
                created_at=_at(i),
                ip_address="192.0.2.1",
                user_agent=f"agent {i}",
            )
            for i in range(2)
        ]
        documents = [
            await make(conn, "documents", tenant, uploaded_by=ada.id, created_at=_at(i)) for i in range(2)
        ]
        await make(conn, "documents", tenant, uploaded_by=ada.id, is_deleted=True)  # left out of lists
        assigned = [
            await make(conn, "activities", tenant, refs, assigned_to=ada.id, due_date=due)
            for due in (_at(48), None, _at(24))
        ]
        created = [
            await make(conn, "activities", tenant, refs, created_by=ada.id, created_at=_at(i))
            for i in range(2)
        ]
        audit = [
            await make(conn, "audit_logs", tenant, user_id=ada.id, timestamp_utc=_at(i)) for i in range(2)
        ]
        changes = [
            await make(
                conn, "change_history", tenant, refs, changed_by_user_id=ada.id, change_timestamp=_at(i)
            )
            for i in range(2)
        ]
        history = [
            await make(
                conn,
                "change_history",
                tenant,
                refs,
                entity_type="user",
                entity_id=ada.id,
                change_timestamp=_at(i),
            )
            for i in range(2)
        ]
        acknowledged = [
            await make(
                conn, "external_data_changes", tenant, refs, acknowledged_by=ada.id, acknowledged_at=_at(i)
            )
            for i in range(2)
        ]
        checks = [
            await make(conn, "permission_audit", tenant, user_id=ada.id, timestamp_utc=_at(i))
            for i in range(2)
        ]
    return {
        "ada": ada,
        "bob": bob,
        "role": role,
        "projects": projects,
        "side_project": side_project,
        "user_roles": user_roles,
        "sessions": sessions,
        "documents": documents,
        "assigned": assigned,
        "created": created,
        "audit": audit,
        "changes": changes,
        "history": history,
        "acknowledged": acknowledged,
        "checks": checks,
    }


USER = """
query ($id: ID!) { node(id: $id) { ... on User {
  rowId email firstName lastName isActive isSystem createdAt
  createdBy { rowId }
  userRoles { nodes { rowId } }
  userSessions { nodes { rowId } }
  opportunityProjectsAsCapture { nodes { rowId } }
  opportunityProjectsAsProposal { nodes { rowId } }
  documentsUploaded { nodes { rowId } }
  assignedActivities { nodes { rowId } }
  createdActivities { nodes { rowId } }
  auditLogs { nodes { rowId } }
  changesCreated { nodes { rowId } }
  changesAcknowledged { nodes { rowId } }
  permissionAudits { nodes { rowId } }
  history { nodes { rowId } }
} } }"""


async def test_user_lists_everything_that_points_at_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _people(owner_engine, fresh_tenant)
    body = await gql(client, USER, {"id": _gid("User", w["ada"].id)}, token=admin_token)
    user = body["data"]["node"]
    assert user["rowId"] == str(w["ada"].id) and user["email"] == "ada@example.test"
    assert user["createdAt"] == "2026-05-04T09:00:00.000000Z" and user["createdBy"] == {
        "rowId": str(w["bob"].id)
    }
    ur, ss = w["user_roles"], w["sessions"]
    assert _ids(user["userRoles"]) == _s(ur[0], ur[1])  # oldest assignment first
    assert _ids(user["userSessions"]) == _s(ss[1], ss[0])  # newest first
    assert _ids(user["opportunityProjectsAsCapture"]) == _s(w["projects"][1], w["projects"][0])
    assert _ids(user["opportunityProjectsAsProposal"]) == _s(w["side_project"])
    assert _ids(user["documentsUploaded"]) == _s(w["documents"][1], w["documents"][0])
    a = w["assigned"]
    assert _ids(user["assignedActivities"]) == _s(a[2], a[0], a[1])  # soonest due first, undated last
    assert _ids(user["createdActivities"]) == _s(w["created"][1], w["created"][0])
    assert _ids(user["auditLogs"]) == _s(w["audit"][1], w["audit"][0])
    assert _ids(user["changesCreated"]) == _s(w["changes"][1], w["changes"][0])
    assert _ids(user["changesAcknowledged"]) == _s(w["acknowledged"][1], w["acknowledged"][0])
    assert _ids(user["permissionAudits"]) == _s(w["checks"][1], w["checks"][0])
    assert _ids(user["history"]) == _s(w["history"][1], w["history"][0])
    # Bob: none of Ada's rows.
    bob = (await gql(client, USER, {"id": _gid("User", w["bob"].id)}, token=admin_token))["data"]["node"]
    assert bob["createdBy"] is None and bob["userRoles"]["nodes"] == [] and bob["auditLogs"]["nodes"] == []


async def test_role_assignments_and_sessions_point_back(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _people(owner_engine, fresh_tenant)
    ur = w["user_roles"]
    query = """query ($ids: [ID!]!) { nodes(ids: $ids) {
      ... on UserRole { rowId assignedAt expiresAt user { rowId } role { rowId } opportunityProject { rowId }
                        assignedBy { rowId } }
      ... on Role { rowId name permissions isSystemRole userRoles { totalCount nodes { rowId } } }
      ... on UserSession { rowId ipAddress userAgent isActive current user { rowId } }
    } }"""
    ids = [
        _gid("UserRole", ur[0].id),
        _gid("UserRole", ur[1].id),
        _gid("Role", w["role"].id),
        _gid("UserSession", w["sessions"][1].id),
    ]
    first, second, role, session = (await gql(client, query, {"ids": ids}, token=admin_token))["data"][
        "nodes"
    ]
    ada, bob = str(w["ada"].id), str(w["bob"].id)
    assert first == {
        "rowId": str(ur[0].id),
        "assignedAt": "2026-05-04T10:00:00.000000Z",
        "expiresAt": None,
        "user": {"rowId": ada},
        "role": {"rowId": str(w["role"].id)},
        "opportunityProject": None,
        "assignedBy": {"rowId": bob},
    }
    assert second["opportunityProject"] == {"rowId": str(w["projects"][1].id)}
    assert second["expiresAt"] == "2026-06-15T00:00:00.000000Z"
    assert second["assignedBy"] == {"rowId": str(fresh_tenant.system_user_id)}
    assert role["name"] == "Pricing Lead" and role["permissions"] == ["a:write", "b:read"]
    assert role["isSystemRole"] is False
    assert role["userRoles"]["totalCount"] == 2 and _ids(role["userRoles"]) == _s(ur[0], ur[1])
    assert session == {
        "rowId": str(w["sessions"][1].id),
        "ipAddress": "192.0.2.1",
        "userAgent": "agent 1",
        "isActive": True,
        "current": False,
        "user": {"rowId": ada},
    }


async def test_viewer_tenant_is_a_node_with_the_tenants_lists(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    w = await _people(owner_engine, fresh_tenant)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        orgs = [await make(conn, "organizations", fresh_tenant, name=n) for n in ("Beta", "Alpha")]
        await make(conn, "contacts", fresh_tenant, organization_id=orgs[0].id)
        await make(conn, "external_opportunity_sources", fresh_tenant, source_name="SAM.gov")
        await make(conn, "document_categories", fresh_tenant, name="RFPs")
        plain = await make(
            conn,
            "tenant_configurations",
            fresh_tenant,
            config_key="b.timezone",
            config_value=json.dumps({"tz": "America/New_York"}),
        )
        sealed = await make(
            conn,
            "tenant_configurations",
            fresh_tenant,
            config_key="a.smtp_password",
            config_value=json.dumps("ciphertext-abc"),
            is_encrypted=True,
        )
    # field -> (table, extra condition, order): what each list must return, read back with SQL.
    lists = {
        "users": ("users", "", "last_name, first_name, id"),
        "roles": ("roles", "", "name, id"),
        "organizations": ("organizations", "", "name, id"),
        "contacts": ("contacts", "", "last_name, first_name, id"),
        "opportunityProjects": ("opportunity_projects", "", "created_at DESC, id"),
        "documents": ("documents", "AND NOT is_deleted", "created_at DESC, id"),
        "documentCategories": ("document_categories", "", "name, id"),
        "activities": ("activities", "", "created_at DESC, id"),
        "auditLogs": ("audit_logs", "", "timestamp_utc DESC, id"),
        "externalOpportunitySources": ("external_opportunity_sources", "", "source_name, id"),
        "tenantConfigurations": ("tenant_configurations", "", "config_key, id"),
    }
    selection = " ".join(f"{name}(first: 100) {{ totalCount nodes {{ rowId }} }}" for name in lists)
    query = f"""{{ viewer {{ tenant {{
      id rowId name subdomain planType maxUsers isActive fedrampCompliant createdAt
      {selection}
      configs: tenantConfigurations {{ nodes {{ rowId configKey configType isEncrypted configValue }} }}
      history {{ totalCount }}
    }} }} }}"""
    tenant = (await gql(client, query, token=admin_token))["data"]["viewer"]["tenant"]
    assert tenant["rowId"] == str(fresh_tenant.id) and tenant["subdomain"] == fresh_tenant.subdomain
    assert tenant["planType"] == "standard" and tenant["maxUsers"] == 100 and tenant["isActive"] is True
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        for name, (table, condition, order) in lists.items():
            sql = f"SELECT id FROM {table} WHERE tenant_id = :t {condition} ORDER BY {order}"
            expected = [str(r[0]) for r in await conn.execute(text(sql), {"t": fresh_tenant.id})]
            assert expected, name
            assert _ids(tenant[name]) == expected, name
            assert tenant[name]["totalCount"] == len(expected), name
        await conn.rollback()
    assert str(w["ada"].id) in _ids(tenant["users"]) and str(fresh_tenant.system_user_id) in _ids(
        tenant["users"]
    )
    assert _ids(tenant["organizations"])[:2] == _s(orgs[1], orgs[0])
    assert tenant["configs"]["nodes"] == [
        {
            "rowId": str(sealed.id),
            "configKey": "a.smtp_password",
            "configType": "json",
            "isEncrypted": True,
            "configValue": None,
        },
        {
            "rowId": str(plain.id),
            "configKey": "b.timezone",
            "configType": "json",
            "isEncrypted": False,
            "configValue": {"tz": "America/New_York"},
        },
    ]
    assert tenant["history"]["totalCount"] == 0
    # The tenant is a node like any other, and so are its configuration entries.
    found = await gql(
        client,
        "query ($ids: [ID!]!) { nodes(ids: $ids) { id ... on Tenant { rowId }"
        " ... on TenantConfiguration { configValue } } }",
        {"ids": [tenant["id"], _gid("TenantConfiguration", sealed.id)]},
        token=admin_token,
    )
    assert found["data"]["nodes"] == [
        {"id": tenant["id"], "rowId": str(fresh_tenant.id)},
        {"id": _gid("TenantConfiguration", sealed.id), "configValue": None},
    ]


async def test_viewer_assignments_link_to_their_user_role(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    query = """{ viewer {
      user { id rowId userRoles { nodes { rowId role { name } } } userSessions { nodes { rowId current } } }
      roles { role { id rowId name } userRole { rowId user { rowId } } opportunityProjectId expiresAt }
      sessions { id rowId current user { rowId } }
    } }"""
    viewer = (await gql(client, query, token=admin_token))["data"]["viewer"]
    (assignment,) = viewer["roles"]
    (user_role,) = viewer["user"]["userRoles"]["nodes"]
    assert assignment["role"]["name"] == "Tenant Admin" == user_role["role"]["name"]
    assert assignment["userRole"] == {"rowId": user_role["rowId"], "user": {"rowId": viewer["user"]["rowId"]}}
    (session,) = viewer["sessions"]
    assert session["current"] is True and session["user"] == {"rowId": viewer["user"]["rowId"]}
    assert viewer["user"]["userSessions"]["nodes"] == [{"rowId": session["rowId"], "current": True}]
    node = await gql(
        client,
        "query ($id: ID!) { node(id: $id) { ... on UserSession { rowId } } }",
        {"id": session["id"]},
        token=admin_token,
    )
    assert node["data"]["node"] == {"rowId": session["rowId"]}


USERS = """
query ($first: Int, $after: String, $last: Int, $before: String, $filter: UserFilter,
       $orderBy: [UserOrder!]) {
  users(first: $first, after: $after, last: $last, before: $before, filter: $filter, orderBy: $orderBy) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { rowId lastName }
  }
}"""


async def test_users_and_roles_roots_filter_order_and_page(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef, admin_token: str
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        people = [
            await make(
                conn,
                "users",
                fresh_tenant,
                first_name=first,
                last_name=last,
                email=email,
                is_active=active,
                created_at=_at(hours),
            )
            for first, last, email, active, hours in (
                ("Grace", "Hopper", "grace@navy.example.test", True, 3),
                ("Alan", "Turing", "alan@bletchley.example.test", False, 1),
                ("Annie", "Easley", "annie@nasa.example.test", True, 2),
                ("Ada", "Hopper", "ada.h@navy.example.test", True, 4),
            )
        ]
    grace, alan, annie, ada = people

    async def ids(**variables: Any) -> list[str]:
        return _ids((await gql(client, USERS, variables, token=admin_token))["data"]["users"])

    assert await ids(filter={"email": {"contains": "NAVY.example"}}) == _s(
        ada, grace
    )  # last, then first name
    assert await ids(filter={"isActive": {"eq": False}}) == _s(alan)
    assert await ids(filter={"lastName": {"eq": "Hopper"}, "isActive": {"eq": True}}) == _s(ada, grace)
    assert await ids(filter={"lastName": {"in": ["Turing", "Easley"]}}) == _s(annie, alan)
    mine = {"email": {"contains": ".example.test"}, "isSystem": {"eq": False}}
    assert await ids(
        filter={**mine, "createdAt": {"gte": "2026-05-04T09:00:00Z", "lt": "2026-05-04T11:00Z"}}
    ) == (_s(annie, alan))
    by_email = await ids(
        filter={"rowId": {"in": _s(*people)}}, orderBy=[{"field": "EMAIL", "direction": "DESC"}]
    )
    assert by_email == _s(grace, annie, alan, ada)
    by_created = await ids(filter={"rowId": {"in": _s(*people)}}, orderBy=[{"field": "CREATED_AT"}])
    assert by_created == _s(alan, annie, grace, ada)
    descending = [{"field": "LAST_NAME", "direction": "DESC"}]
    by_name = await ids(filter={"rowId": {"in": _s(*people)}}, orderBy=descending)
    assert (
        by_name[0] == str(alan.id)
        and set(by_name[1:3]) == set(_s(ada, grace))
        and by_name[3] == str(annie.id)
    )

    everyone = await ids(first=100)
    page = (await gql(client, USERS, {"first": 2}, token=admin_token))["data"]["users"]
    assert _ids(page) == everyone[:2] and page["totalCount"] == len(everyone)
    nxt = await gql(client, USERS, {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=admin_token)
    assert _ids(nxt["data"]["users"]) == everyone[2:4]
    back = await ids(last=2, before=nxt["data"]["users"]["pageInfo"]["startCursor"])
    assert back == everyone[:2]
    refused = await gql(client, "{ users(first: 101) { nodes { rowId } } }", token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    refused = await gql(client, "{ roles(last: 101) { nodes { rowId } } }", token=admin_token, errors=True)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    roles_query = """query ($filter: RoleFilter, $orderBy: [RoleOrder!]) {
      roles(filter: $filter, orderBy: $orderBy) { totalCount nodes { rowId name isSystemRole } } }"""
    roles = (await gql(client, roles_query, token=admin_token))["data"]["roles"]
    names = [r["name"] for r in roles["nodes"]]
    assert names == sorted(names) and "Tenant Admin" in names and roles["totalCount"] == len(names)
    custom = await gql(client, roles_query, {"filter": {"isSystemRole": {"eq": False}}}, token=admin_token)
    assert custom["data"]["roles"]["nodes"] == []
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        pricing = await make(conn, "roles", fresh_tenant, name="Pricing Lead")
    found = await gql(client, roles_query, {"filter": {"name": {"contains": "pricing"}}}, token=admin_token)
    assert found["data"]["roles"]["nodes"] == [
        {"rowId": str(pricing.id), "name": "Pricing Lead", "isSystemRole": False}
    ]
    ordered = await gql(
        client, roles_query, {"orderBy": [{"field": "IS_SYSTEM_ROLE"}, {"field": "NAME"}]}, token=admin_token
    )
    assert ordered["data"]["roles"]["nodes"][0]["name"] == "Pricing Lead"


NESTED = """
query ($first: Int!) {
  users(first: $first, filter: {email: {contains: "bulk"}}) {
    nodes {
      rowId createdBy { email }
      userRoles(first: 3) {
        totalCount nodes { role { name userRoles(first: 1) { nodes { rowId } } } assignedBy { email } }
      }
      userSessions(first: 2) { nodes { rowId current } }
      auditLogs(first: 2) { nodes { rowId } }
      changesCreated(first: 2) { nodes { rowId } }
      history(first: 2) { nodes { rowId } }
    }
  }
}"""


async def test_nested_identity_lists_cost_the_same_statements_for_5_and_50(
    client: httpx.AsyncClient,
    read_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    admin_token: str,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        roles = [await make(conn, "roles", fresh_tenant) for _ in range(2)]
        creator = await make(conn, "users", fresh_tenant)
        for i in range(50):
            user = await make(
                conn, "users", fresh_tenant, email=f"bulk{i:02}@example.test", created_by=creator.id
            )
            for role in roles:
                await make(conn, "user_roles", fresh_tenant, {"users": user.id, "roles": role.id})
            await make(conn, "user_sessions", fresh_tenant, {"users": user.id})
            await make(conn, "audit_logs", fresh_tenant, user_id=user.id)
    engine = read_app.state.engine
    counts = []
    for first in (5, 50):
        with count_statements(engine) as statements:
            body = await gql(client, NESTED, {"first": first}, token=admin_token)
        nodes = body["data"]["users"]["nodes"]
        assert len(nodes) == first
        start = max((i for i, s in enumerate(statements) if "set_config" in s), default=-1)
        operation = statements[start + 1 :]
        counted = [s for s in operation if "count(" in s]
        counts.append((len(operation) - len(counted), len(counted)))
    # users; their creators, role pages, session pages, audit pages, change pages, history pages;
    # the roles and the assigners; the roles' own assignment pages. One count (userRoles).
    assert counts[0] == counts[1], counts
    assert counts[0][0] <= 10 and counts[0][1] == 1, counts
    assert nodes[0]["userRoles"]["totalCount"] == 2 and len(nodes[0]["userSessions"]["nodes"]) == 1


async def test_another_tenants_identity_rows_are_null_like_missing_ids(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
    tenant_b: TenantRef,
    admin_token: str,
) -> None:
    theirs = await _people(owner_engine, tenant_b)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_b.id)
        config = await make(conn, "tenant_configurations", tenant_b)
    ids = [
        _gid("Tenant", tenant_b.id),
        _gid("User", theirs["ada"].id),
        _gid("Role", theirs["role"].id),
        _gid("UserRole", theirs["user_roles"][0].id),
        _gid("UserSession", theirs["sessions"][0].id),
        _gid("TenantConfiguration", config.id),
        _gid("User", uuid.uuid4()),
        _gid("Tenant", fresh_tenant.id),
    ]
    nodes = (
        await gql(client, "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids}, token=admin_token)
    )["data"]["nodes"]
    assert nodes == [None] * 7 + [{"id": ids[-1]}]
    filtered = await gql(
        client, USERS, {"filter": {"rowId": {"in": [str(theirs["ada"].id)]}}}, token=admin_token
    )
    assert filtered["data"]["users"] == {**filtered["data"]["users"], "totalCount": 0, "nodes": []}
    roles = await gql(
        client, '{ roles(filter: {name: {eq: "Pricing Lead"}}) { nodes { rowId } } }', token=admin_token
    )
    assert roles["data"]["roles"]["nodes"] == []
