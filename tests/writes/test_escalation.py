"""Acceptance item 4: privilege-escalation attempts are refused AND audited.

Granting a permission one does not hold, editing one's own roles, demoting or deactivating the last
administrator, removing `user:admin` from its last holder, changing a system role, weakening a
FedRAMP floor: each is answered with its error, changes nothing, and leaves one audit row
(`auth.privilege.refused`, access not granted, high risk; the FedRAMP floor:
`tenant.security_settings.refused`) that outlives the rolled-back change.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from strawberry.relay import to_base64

from auth.permissions import Permission
from models.db import set_tenant
from tests.support.db import TenantRef
from tests.writes.conftest import Caller, Rows, SignIn, mutate
from tests.writes.test_admin_mutations import SETTINGS_UPDATE, _enroll_mfa, _make_fedramp

ERRORS = "errors { field code message }"
ROLE_CREATE = f"""mutation($input: RoleCreateInput!) {{ roleCreate(input: $input) {{ role {{ rowId }} {ERRORS} }} }}"""
ROLE_UPDATE = f"""mutation($input: RoleUpdateInput!) {{
  roleUpdate(input: $input) {{ role {{ rowId permissions }} {ERRORS} }} }}"""
ROLE_DELETE = f"""mutation($input: RoleDeleteInput!) {{ roleDelete(input: $input) {{ deletedId {ERRORS} }} }}"""
GRANT = f"""mutation($input: UserRoleGrantInput!) {{
  userRoleGrant(input: $input) {{ userRole {{ rowId }} {ERRORS} }} }}"""
REVOKE = f"""mutation($input: UserRoleRevokeInput!) {{
  userRoleRevoke(input: $input) {{ deletedRowId {ERRORS} }} }}"""
DEACTIVATE = f"""mutation($input: UserDeactivateInput!) {{
  userDeactivate(input: $input) {{ user {{ rowId isActive }} {ERRORS} }} }}"""
TEMPORARY = f"""mutation($input: UserSetTemporaryPasswordInput!) {{
  userSetTemporaryPassword(input: $input) {{ user {{ rowId }} {ERRORS} }} }}"""

ALL = sorted(p.value for p in Permission)


async def _role(rows: Rows, name: str, permissions: list[str]) -> Any:
    return await rows.make("roles", name=name, permissions=json.dumps(permissions), is_system_role=False)


async def _assign(rows: Rows, user_id: Any, role_id: Any) -> Any:
    return await rows.make("user_roles", {"users": user_id, "roles": role_id})


async def _system_role(rows: Rows, name: str) -> Any:
    return await rows.one("SELECT * FROM roles WHERE tenant_id = :t AND name = :n AND is_system_role", n=name)


async def _assignment(rows: Rows, user_id: Any, role_name: str) -> Any:
    return await rows.one(
        "SELECT ur.* FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = :u AND r.name = :n",
        u=user_id, n=role_name,
    )


async def _refusals(rows: Rows) -> list[Any]:
    return await rows.all(
        "SELECT * FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.privilege.refused' ORDER BY seq"
    )


async def _roles_state(rows: Rows) -> list[Any]:
    return await rows.all(
        "SELECT r.id, r.name, r.permissions::text AS p, r.updated_at FROM roles r WHERE tenant_id = :t ORDER BY id"
    ) + await rows.all("SELECT id, user_id, role_id FROM user_roles WHERE tenant_id = :t ORDER BY id")


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def _expect_refused(
    rows: Rows, before: int, caller: Caller, field: str, code: str, entity_id: Any = None
) -> Any:
    """The one new `auth.privilege.refused` row: the caller's, naming the mutation and the code."""
    new = (await _refusals(rows))[before:]
    assert len(new) == 1, [tuple(r) for r in new]
    (row,) = new
    assert (row.user_id, row.access_granted, row.risk_level) == (caller.id, False, "high")
    assert row.operation_description.startswith(f"mutation {field} refused ({code})")
    assert row.after_values["refusal"] == code
    if entity_id is not None:
        assert row.entity_id == entity_id
    return row


async def test_granting_a_permission_one_does_not_hold_is_refused_and_audited(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    # A user and role administrator who is not a tenant administrator (no tenant:admin, no audit:read).
    limited = await _role(rows, "Role keeper", [Permission.ROLE_ADMIN.value, Permission.USER_ADMIN.value,
                                                Permission.USER_READ.value])
    keeper = await sign_in_as()
    await _assign(rows, keeper.id, limited.id)
    other = await sign_in_as("Viewer")
    custom = await _role(rows, "Readers", [Permission.USER_READ.value])
    tenant_admin = await _system_role(rows, "Tenant Admin")
    admin = await sign_in_as("Tenant Admin")
    state = await _roles_state(rows)

    created = await mutate(client, keeper, ROLE_CREATE, {"input": {
        "name": "Escalated", "permissions": [Permission.TENANT_ADMIN.value]}})
    assert _errors(created["roleCreate"]) == [("PERMISSION_NOT_GRANTABLE", ["input", "permissions"])]
    await _expect_refused(rows, 0, keeper, "roleCreate", "PERMISSION_NOT_GRANTABLE")

    updated = await mutate(client, keeper, ROLE_UPDATE, {"input": {
        "rowId": str(custom.id), "updatedAt": custom.updated_at.isoformat(),
        "permissions": [Permission.USER_READ.value, Permission.AUDIT_READ.value]}})
    assert _errors(updated["roleUpdate"]) == [("PERMISSION_NOT_GRANTABLE", ["input", "permissions"])]
    await _expect_refused(rows, 1, keeper, "roleUpdate", "PERMISSION_NOT_GRANTABLE", custom.id)

    granted = await mutate(client, keeper, GRANT, {"input": {
        "userRowId": str(other.id), "roleId": to_base64("Role", tenant_admin.id)}})
    assert _errors(granted["userRoleGrant"]) == [("ROLE_NOT_GRANTABLE", ["input", "roleId"])]
    await _expect_refused(rows, 2, keeper, "userRoleGrant", "ROLE_NOT_GRANTABLE", other.id)

    # Acting on a user holding more than oneself: refused and audited too.
    password = await mutate(client, keeper, TEMPORARY, {"input": {
        "rowId": str(admin.id), "password": "a temporary one 4 the admin"}})
    assert _errors(password["userSetTemporaryPassword"]) == [("INSUFFICIENT_PRIVILEGE", ["input", "rowId"])]
    await _expect_refused(rows, 3, keeper, "userSetTemporaryPassword", "INSUFFICIENT_PRIVILEGE", admin.id)
    assert await _roles_state(rows) == state
    assert await rows.audit() == []  # no write of any table was audited as done


async def test_nobody_edits_their_own_roles(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    admin = await sign_in_as("Tenant Admin")
    await sign_in_as("Tenant Admin")  # not the last admin: only the own-roles rule refuses
    readers = await _role(rows, "Readers", [Permission.USER_READ.value])
    own = await _assignment(rows, admin.id, "Tenant Admin")
    state = await _roles_state(rows)

    granted = await mutate(client, admin, GRANT, {"input": {
        "userRowId": str(admin.id), "roleRowId": str(readers.id)}})
    assert _errors(granted["userRoleGrant"]) == [("OWN_ROLES", ["input", "userRowId"])]
    assert granted["userRoleGrant"]["userRole"] is None
    await _expect_refused(rows, 0, admin, "userRoleGrant", "OWN_ROLES", admin.id)

    revoked = await mutate(client, admin, REVOKE, {"input": {"id": to_base64("UserRole", own.id)}})
    assert _errors(revoked["userRoleRevoke"]) == [("OWN_ROLES", ["input", "id"])]
    assert revoked["userRoleRevoke"]["deletedRowId"] is None
    await _expect_refused(rows, 1, admin, "userRoleRevoke", "OWN_ROLES", own.id)
    assert await _roles_state(rows) == state


async def test_the_last_tenant_admin_is_neither_demoted_nor_deactivated(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    # Holds every permission through a custom role, so it outranks the admin, but is no Tenant Admin.
    everything = await _role(rows, "Everything", ALL)
    deputy = await sign_in_as()
    await _assign(rows, deputy.id, everything.id)
    assignment = await _assignment(rows, admin.id, "Tenant Admin")
    state = await _roles_state(rows)

    revoked = await mutate(client, deputy, REVOKE, {"input": {"rowId": str(assignment.id)}})
    assert _errors(revoked["userRoleRevoke"]) == [("LAST_ADMIN", ["input", "rowId"])]
    assert "without an active Tenant Admin" in revoked["userRoleRevoke"]["errors"][0]["message"]
    await _expect_refused(rows, 0, deputy, "userRoleRevoke", "LAST_ADMIN", assignment.id)

    deactivated = await mutate(client, deputy, DEACTIVATE, {"input": {"rowId": str(admin.id)}})
    assert _errors(deactivated["userDeactivate"]) == [("LAST_ADMIN", ["input", "rowId"])]
    await _expect_refused(rows, 1, deputy, "userDeactivate", "LAST_ADMIN", admin.id)
    assert (await rows.one("SELECT is_active FROM users WHERE id = :u", u=admin.id)).is_active is True
    assert await _roles_state(rows) == state

    # With a second Tenant Admin, either is allowed.
    second = await sign_in_as("Tenant Admin")
    done = await mutate(client, deputy, REVOKE, {"input": {"rowId": str(assignment.id)}})
    assert done["userRoleRevoke"]["errors"] == []
    last = await _assignment(rows, second.id, "Tenant Admin")
    again = await mutate(client, deputy, REVOKE, {"input": {"rowId": str(last.id)}})
    assert [e["code"] for e in again["userRoleRevoke"]["errors"]] == ["LAST_ADMIN"]
    assert len(await _refusals(rows)) == 3


async def test_an_expired_or_project_assignment_or_an_inactive_user_is_no_admin(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    everything = await _role(rows, "Everything", ALL)
    deputy = await sign_in_as()
    await _assign(rows, deputy.id, everything.id)
    tenant_admin = await _system_role(rows, "Tenant Admin")
    project = await rows.project()
    scoped, expired, inactive = await sign_in_as(), await sign_in_as(), await sign_in_as()
    await rows.make("user_roles", {"users": scoped.id, "roles": tenant_admin.id},
                    opportunity_project_id=project.id)
    await rows.make("user_roles", {"users": expired.id, "roles": tenant_admin.id},
                    expires_at=datetime(2001, 1, 1, tzinfo=UTC))
    await _assign(rows, inactive.id, tenant_admin.id)
    async with rows.engine.begin() as conn:
        await set_tenant(conn, rows.tenant.id)
        await conn.execute(text("UPDATE users SET is_active = false WHERE id = :u"), {"u": inactive.id})
    assignment = await _assignment(rows, admin.id, "Tenant Admin")
    revoked = await mutate(client, deputy, REVOKE, {"input": {"rowId": str(assignment.id)}})
    assert [e["code"] for e in revoked["userRoleRevoke"]["errors"]] == ["LAST_ADMIN"]


async def test_user_admin_keeps_a_holder(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    """A tenant without a Tenant Admin: `user:admin` cannot leave its last active holder, neither by
    a change of the role carrying it nor by a revocation or a deactivation."""
    keepers = await _role(rows, "Keepers", [Permission.ROLE_ADMIN.value, Permission.USER_ADMIN.value])
    keeper = await sign_in_as()
    await _assign(rows, keeper.id, keepers.id)
    state = await _roles_state(rows)

    updated = await mutate(client, keeper, ROLE_UPDATE, {"input": {
        "rowId": str(keepers.id), "updatedAt": keepers.updated_at.isoformat(),
        "permissions": [Permission.ROLE_ADMIN.value]}})
    assert _errors(updated["roleUpdate"]) == [("LAST_ADMIN", ["input", "permissions"])]
    assert "user:admin" in updated["roleUpdate"]["errors"][0]["message"]
    await _expect_refused(rows, 0, keeper, "roleUpdate", "LAST_ADMIN", keepers.id)
    assert await _roles_state(rows) == state

    # Another active holder through another role: now the role may drop it.
    others = await _role(rows, "Others", [Permission.USER_ADMIN.value])
    other = await sign_in_as()
    await _assign(rows, other.id, others.id)
    ok = await mutate(client, keeper, ROLE_UPDATE, {"input": {
        "rowId": str(keepers.id), "updatedAt": keepers.updated_at.isoformat(),
        "permissions": [Permission.ROLE_ADMIN.value]}})
    assert ok["roleUpdate"]["errors"] == [] and ok["roleUpdate"]["role"]["permissions"] == [Permission.ROLE_ADMIN.value]
    # `other` is now the last holder: its role cannot drop user:admin, nor can it revoke it itself.
    last = await mutate(client, keeper, ROLE_UPDATE, {"input": {
        "rowId": str(others.id), "updatedAt": others.updated_at.isoformat(), "permissions": []}})
    assert _errors(last["roleUpdate"]) == [("LAST_ADMIN", ["input", "permissions"])]
    await _expect_refused(rows, 1, keeper, "roleUpdate", "LAST_ADMIN", others.id)
    holder = await _assignment(rows, other.id, "Others")
    own = await mutate(client, other, REVOKE, {"input": {"rowId": str(holder.id)}})
    assert [e["code"] for e in own["userRoleRevoke"]["errors"]] == ["OWN_ROLES"]
    assert (await rows.one("SELECT permissions::text AS p FROM roles WHERE id = :r", r=others.id)).p == (
        f'["{Permission.USER_ADMIN.value}"]')


async def test_a_system_role_is_not_changed(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    admin = await sign_in_as("Tenant Admin")
    viewer_role = await _system_role(rows, "Viewer")
    state = await _roles_state(rows)
    data = await mutate(client, admin, ROLE_UPDATE, {"input": {
        "rowId": str(viewer_role.id), "updatedAt": viewer_role.updated_at.isoformat(), "permissions": ALL}})
    assert _errors(data["roleUpdate"]) == [("SYSTEM_ROLE", ["input", "rowId"])]
    await _expect_refused(rows, 0, admin, "roleUpdate", "SYSTEM_ROLE", viewer_role.id)
    deleted = await mutate(client, admin, ROLE_DELETE, {"input": {
        "id": to_base64("Role", viewer_role.id), "updatedAt": viewer_role.updated_at.isoformat()}})
    assert _errors(deleted["roleDelete"]) == [("SYSTEM_ROLE", ["input", "id"])]
    assert deleted["roleDelete"]["deletedId"] is None
    await _expect_refused(rows, 1, admin, "roleDelete", "SYSTEM_ROLE", viewer_role.id)
    assert await _roles_state(rows) == state


async def test_weakening_a_fedramp_floor_is_refused_and_audited(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    await _enroll_mfa(client, admin)
    await _make_fedramp(rows)
    before = await rows.all("SELECT * FROM tenant_configurations ORDER BY id")
    data = await mutate(client, admin, SETTINGS_UPDATE, {"input": {"updatedAt": None, "mfaRequired": False}})
    payload = data["tenantSecuritySettingsUpdate"]
    assert _errors(payload) == [("VALIDATION", ["input", "mfaRequired"])] and payload["securitySettings"] is None
    (row,) = await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t"
                            " AND action_type = 'tenant.security_settings.refused'")
    assert (row.user_id, row.access_granted, row.risk_level) == (admin.id, False, "high")
    assert await rows.all("SELECT * FROM tenant_configurations ORDER BY id") == before


async def test_two_admins_demoting_each_other_at_once_leave_one(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, fresh_tenant: TenantRef
) -> None:
    """Each revocation locks the tenant row first: the second sees the first's result (the other
    admin is gone) and is refused, so the tenant never ends without a Tenant Admin."""
    first, second = await sign_in_as("Tenant Admin"), await sign_in_as("Tenant Admin")
    of_first = await _assignment(rows, first.id, "Tenant Admin")
    of_second = await _assignment(rows, second.id, "Tenant Admin")
    async with rows.engine.connect() as holder:
        await set_tenant(holder, fresh_tenant.id)
        await holder.execute(text("SELECT 1 FROM tenants WHERE id = :t FOR NO KEY UPDATE"), {"t": fresh_tenant.id})
        racing = asyncio.gather(
            mutate(client, first, REVOKE, {"input": {"rowId": str(of_second.id)}}),
            mutate(client, second, REVOKE, {"input": {"rowId": str(of_first.id)}}),
        )
        await asyncio.sleep(0.5)
        await holder.rollback()
        results = await racing
    outcomes = sorted(tuple(e["code"] for e in r["userRoleRevoke"]["errors"]) for r in results)
    assert outcomes == [(), ("LAST_ADMIN",)]
    left = await rows.all(
        "SELECT ur.user_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE r.name = 'Tenant Admin'"
        " AND ur.tenant_id = :t"
    )
    assert len(left) == 1
