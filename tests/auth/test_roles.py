"""Custom roles and role assignments through GraphQL: what works, and every refusal."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.relay import to_base64

from auth.permissions import SYSTEM_ROLES, SystemRole
from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.graphql import audit_rows, gql, sign_in
from tests.support.http import LoginUser, make_login_user

CREATE = """mutation ($input: RoleCreateInput!) {
  roleCreate(input: $input) { role { rowId name permissions isSystemRole updatedAt } errors { field code message } }
}"""
UPDATE = """mutation ($input: RoleUpdateInput!) {
  roleUpdate(input: $input) {
    role { rowId name permissions updatedAt } errors { field code message currentUpdatedAt }
  }
}"""
DELETE = """mutation ($input: RoleDeleteInput!) {
  roleDelete(input: $input) { deletedId deletedRowId errors { field code message } }
}"""
GRANT = """mutation ($input: UserRoleGrantInput!) {
  userRoleGrant(input: $input) {
    userRole { rowId expiresAt opportunityProject { rowId } role { name } user { rowId } } errors { field code message }
  }
}"""
REVOKE = """mutation ($input: UserRoleRevokeInput!) {
  userRoleRevoke(input: $input) { deletedId deletedRowId errors { field code message } }
}"""


LONG_AGO = "2020-01-01T00:00:00.000000Z"


async def _role_id(owner_engine: AsyncEngine, tenant: TenantRef, name: str) -> str:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        return str(await conn.scalar(text("SELECT id FROM roles WHERE name = :n"), {"n": name}))


async def _project(owner_engine: AsyncEngine, tenant: TenantRef) -> str:
    from tests.support.factories import make

    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        refs: dict[str, Any] = {}
        refs["users"] = (await make(conn, "users", tenant, refs)).id
        refs["external_opportunity_sources"] = (await make(conn, "external_opportunity_sources", tenant, refs)).id
        return str((await make(conn, "opportunity_projects", tenant, refs)).id)


@pytest.fixture
async def admin(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> LoginUser:
    return await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, admin: LoginUser) -> str:
    return await sign_in(client, admin)


def _errors(body: dict[str, Any], field: str) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = body["data"][field]["errors"]
    return errors


async def test_a_custom_role_is_created_changed_and_deleted_with_audit_rows(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, admin_token: str
) -> None:
    body = await gql(client, CREATE, {"input": {"name": " Pricing desk ", "description": "prices",
                                                "permissions": ["opportunity:read", "opportunity.score:read",
                                                                "opportunity:read"]}}, token=admin_token)
    role = body["data"]["roleCreate"]["role"]
    assert body["data"]["roleCreate"]["errors"] == []
    assert role["name"] == "Pricing desk" and role["isSystemRole"] is False
    assert role["permissions"] == ["opportunity.score:read", "opportunity:read"]

    changed = await gql(client, UPDATE, {"input": {"id": to_base64("Role", role["rowId"]),
                                                   "updatedAt": role["updatedAt"],
                                                   "name": "Pricing", "permissions": ["opportunity:read"]}},
                        token=admin_token)
    updated = changed["data"]["roleUpdate"]["role"]
    stale = await gql(client, DELETE, {"input": {"rowId": role["rowId"], "updatedAt": role["updatedAt"]}},
                      token=admin_token)
    (conflict,) = _errors(stale, "roleDelete")
    assert (conflict["field"], conflict["code"]) == (["input", "updatedAt"], "CONFLICT")
    assert updated["name"] == "Pricing" and updated["permissions"] == ["opportunity:read"]

    deleted = await gql(client, DELETE, {"input": {"rowId": role["rowId"], "updatedAt": updated["updatedAt"]}},
                        token=admin_token)
    assert deleted["data"]["roleDelete"] == {
        "deletedId": to_base64("Role", role["rowId"]), "deletedRowId": role["rowId"], "errors": []
    }
    events = {a: await audit_rows(owner_engine, admin.tenant.id, a)
              for a in ("auth.role.created", "auth.role.updated", "auth.role.deleted")}
    for action, rows in events.items():
        (row,) = rows
        assert row.user_id == admin.id and row.permission_used == "role:admin", action
        assert str(row.entity_id) == role["rowId"]
    assert events["auth.role.updated"][0].before_values["name"] == "Pricing desk"
    assert events["auth.role.updated"][0].after_values["name"] == "Pricing"


async def test_role_refusals(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, admin_token: str
) -> None:
    tenant = admin.tenant
    viewer_role = await _role_id(owner_engine, tenant, "Viewer")
    cases = [
        (CREATE, {"name": "Bad", "permissions": ["opportunity:fly"]}, "roleCreate",
         ["input", "permissions"], "UNKNOWN_PERMISSION"),
        (CREATE, {"name": "   ", "permissions": []}, "roleCreate", ["input", "name"], "INVALID_NAME"),
        (CREATE, {"name": "x" * 101, "permissions": []}, "roleCreate", ["input", "name"], "INVALID_NAME"),
        (CREATE, {"name": "Viewer", "permissions": []}, "roleCreate", ["input", "name"], "NAME_TAKEN"),
        (UPDATE, {"rowId": viewer_role, "updatedAt": "2030-01-01T00:00:00.000000Z", "name": "Mine"}, "roleUpdate",
         ["input", "rowId"], "SYSTEM_ROLE"),
        (UPDATE, {"rowId": str(uuid.uuid4()), "updatedAt": "2030-01-01T00:00:00.000000Z"}, "roleUpdate",
         ["input", "rowId"], "NOT_FOUND"),
        (DELETE, {"rowId": viewer_role, "updatedAt": LONG_AGO}, "roleDelete", ["input", "rowId"], "SYSTEM_ROLE"),
        (DELETE, {"id": to_base64("Role", uuid.uuid4()), "updatedAt": LONG_AGO}, "roleDelete", ["input", "id"],
         "NOT_FOUND"),
        (DELETE, {"id": to_base64("User", viewer_role), "updatedAt": LONG_AGO}, "roleDelete", ["input", "id"],
         "NOT_FOUND"),
        (DELETE, {"updatedAt": LONG_AGO}, "roleDelete", ["input", "id"], "VALIDATION"),
        (DELETE, {"id": to_base64("Role", viewer_role), "rowId": viewer_role, "updatedAt": LONG_AGO}, "roleDelete",
         ["input", "id"], "VALIDATION"),
    ]
    for query, variables, field, path, code in cases:
        body = await gql(client, query, {"input": variables}, token=admin_token)
        (error,) = _errors(body, field)
        assert (error["field"], error["code"]) == (path, code), (variables, error)
        assert error["message"]

    created = await gql(client, CREATE, {"input": {"name": "Stale", "permissions": []}}, token=admin_token)
    role = created["data"]["roleCreate"]["role"]
    first = await gql(client, UPDATE, {"input": {"rowId": role["rowId"], "updatedAt": role["updatedAt"],
                                                 "description": "one"}}, token=admin_token)
    assert first["data"]["roleUpdate"]["errors"] == []
    stale = await gql(client, UPDATE, {"input": {"rowId": role["rowId"], "updatedAt": role["updatedAt"],
                                                 "description": "two"}}, token=admin_token)
    (error,) = _errors(stale, "roleUpdate")
    assert (error["field"], error["code"]) == (["input", "updatedAt"], "CONFLICT")
    fresh = first["data"]["roleUpdate"]["role"]
    assert error["currentUpdatedAt"] == fresh["updatedAt"]  # merge and retry without reading the role again
    taken = await gql(client, UPDATE, {"input": {"rowId": role["rowId"], "updatedAt": fresh["updatedAt"],
                                                 "name": "Viewer"}}, token=admin_token)
    assert [e["code"] for e in _errors(taken, "roleUpdate")] == ["NAME_TAKEN"]

    # A role in use cannot be deleted.
    user = await make_login_user(owner_engine, tenant, roles=[])
    grant = await gql(client, GRANT, {"input": {"userRowId": str(user.id), "roleRowId": role["rowId"]}},
                      token=admin_token)
    assert grant["data"]["userRoleGrant"]["errors"] == []
    in_use = await gql(client, DELETE, {"input": {"rowId": role["rowId"], "updatedAt": fresh["updatedAt"]}},
                       token=admin_token)
    assert [e["code"] for e in _errors(in_use, "roleDelete")] == ["ROLE_IN_USE"]


async def test_no_escalation_through_roles(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin_token: str, admin: LoginUser
) -> None:
    tenant = admin.tenant
    created = await gql(client, CREATE, {"input": {"name": "Role admin", "permissions": ["role:admin", "user:admin",
                                                                                          "user:read"]}},
                        token=admin_token)
    role_admin_role = created["data"]["roleCreate"]["role"]["rowId"]
    delegate = await make_login_user(owner_engine, tenant, roles=[])
    await gql(client, GRANT, {"input": {"userRowId": str(delegate.id), "roleRowId": role_admin_role}},
              token=admin_token)
    token = await sign_in(client, delegate)

    body = await gql(client, CREATE, {"input": {"name": "Sneaky", "permissions": ["audit:read"]}}, token=token)
    (error,) = _errors(body, "roleCreate")
    assert (error["field"], error["code"]) == (["input", "permissions"], "PERMISSION_NOT_GRANTABLE")

    own = await gql(client, CREATE, {"input": {"name": "Small", "permissions": ["user:read"]}}, token=token)
    small = own["data"]["roleCreate"]["role"]
    widened = await gql(client, UPDATE, {"input": {"rowId": small["rowId"], "updatedAt": small["updatedAt"],
                                                   "permissions": ["user:read", "tenant:admin"]}}, token=token)
    assert [e["code"] for e in _errors(widened, "roleUpdate")] == ["PERMISSION_NOT_GRANTABLE"]

    admin_role = await _role_id(owner_engine, tenant, "Tenant Admin")
    victim = await make_login_user(owner_engine, tenant, roles=[])
    body = await gql(client, GRANT, {"input": {"userRowId": str(victim.id), "roleRowId": admin_role}}, token=token)
    (error,) = _errors(body, "userRoleGrant")
    assert (error["field"], error["code"]) == (["input", "roleRowId"], "ROLE_NOT_GRANTABLE")

    # Nor can it take away an assignment carrying more than it holds.
    held = await gql(client, GRANT, {"input": {"userRowId": str(victim.id), "roleRowId": admin_role}},
                     token=admin_token)
    assignment = held["data"]["userRoleGrant"]["userRole"]["rowId"]
    body = await gql(client, REVOKE, {"input": {"rowId": assignment}}, token=token)
    assert [e["code"] for e in _errors(body, "userRoleRevoke")] == ["ROLE_NOT_GRANTABLE"]


async def test_assignments_on_a_project_with_expiry_and_their_refusals(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, admin: LoginUser, admin_token: str
) -> None:
    tenant = admin.tenant
    project = await _project(owner_engine, tenant)
    role = await _role_id(owner_engine, tenant, "Capture Manager")
    user = await make_login_user(owner_engine, tenant, roles=[])
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = await gql(client, GRANT, {"input": {"userRowId": str(user.id), "roleRowId": role,
                                               "opportunityProjectRowId": project, "expiresAt": expires}},
                     token=admin_token)
    assignment = body["data"]["userRoleGrant"]["userRole"]
    assert assignment["opportunityProject"] == {"rowId": project}
    assert assignment["expiresAt"] == expires and assignment["role"] == {"name": "Capture Manager"}
    token = await sign_in(client, user)
    viewer = await gql(
        client,
        "query ($p: UUID!, $other: UUID!) { viewer { permissions onProject: permissions(opportunityProjectId: $p)"
        " elsewhere: permissions(opportunityProjectId: $other)"
        " projectPermissions { opportunityProjectId permissions } } }",
        {"p": project, "other": str(uuid.uuid4())},
        token=token,
    )
    assert viewer["data"]["viewer"]["permissions"] == [] and viewer["data"]["viewer"]["elsewhere"] == []
    assert viewer["data"]["viewer"]["onProject"] == sorted(
        p.value for p in SYSTEM_ROLES[SystemRole.CAPTURE_MANAGER]
    )
    (scoped,) = viewer["data"]["viewer"]["projectPermissions"]
    assert scoped["opportunityProjectId"] == project and "opportunity:write" in scoped["permissions"]

    past = "2020-01-01T00:00:00.000000Z"
    inactive = await make_login_user(owner_engine, tenant, roles=[], is_active=False)
    cases = [
        ({"userRowId": str(user.id), "roleRowId": role, "opportunityProjectRowId": project}, ["input", "roleRowId"],
         "ALREADY_ASSIGNED"),
        ({"userRowId": str(user.id), "roleRowId": role, "expiresAt": past}, ["input", "expiresAt"], "INVALID_EXPIRY"),
        ({"userRowId": str(uuid.uuid4()), "roleRowId": role}, ["input", "userRowId"], "NOT_FOUND"),
        ({"userRowId": str(tenant.system_user_id), "roleRowId": role}, ["input", "userRowId"], "NOT_FOUND"),
        ({"userRowId": str(inactive.id), "roleRowId": role}, ["input", "userRowId"], "USER_INACTIVE"),
        ({"userRowId": str(user.id), "roleRowId": str(uuid.uuid4())}, ["input", "roleRowId"], "NOT_FOUND"),
        ({"userRowId": str(user.id), "roleRowId": role, "opportunityProjectRowId": str(uuid.uuid4())},
         ["input", "opportunityProjectRowId"], "NOT_FOUND"),
        ({"userId": to_base64("User", user.id), "roleId": to_base64("Role", role),
          "opportunityProjectId": to_base64("OpportunityProject", uuid.uuid4())},
         ["input", "opportunityProjectId"], "NOT_FOUND"),
    ]
    for variables, path, code in cases:
        result = await gql(client, GRANT, {"input": variables}, token=admin_token)
        (error,) = _errors(result, "userRoleGrant")
        assert (error["field"], error["code"]) == (path, code), variables

    revoked = await gql(client, REVOKE, {"input": {"rowId": assignment["rowId"]}}, token=admin_token)
    assert revoked["data"]["userRoleRevoke"] == {
        "deletedId": to_base64("UserRole", assignment["rowId"]), "deletedRowId": assignment["rowId"], "errors": []
    }
    again = await gql(client, REVOKE, {"input": {"rowId": assignment["rowId"]}}, token=admin_token)
    assert [e["code"] for e in _errors(again, "userRoleRevoke")] == ["NOT_FOUND"]
    after = await gql(client, "{ viewer { projectPermissions { opportunityProjectId } } }", token=token)
    assert after["data"]["viewer"]["projectPermissions"] == []
    (granted,) = await audit_rows(owner_engine, tenant.id, "auth.role_assignment.granted")
    assert granted.after_values["opportunity_project_id"] == project and granted.permission_used == "user:admin"
    assert len(await audit_rows(owner_engine, tenant.id, "auth.role_assignment.revoked")) == 1


async def test_roles_and_assignments_need_their_permissions(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    token = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"]))
    for query, field, variables in (
        (CREATE, "roleCreate", {"name": "x", "permissions": []}),
        (GRANT, "userRoleGrant", {"userRowId": str(uuid.uuid4()), "roleRowId": str(uuid.uuid4())}),
    ):
        body = await gql(client, query, {"input": variables}, token=token, errors=True)
        assert body["data"] == {field: None}
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
