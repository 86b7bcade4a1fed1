"""The audit trail of the identity and administration mutations: one row per change, named by its
`auth.*` action, with change_history for the audited tables (roles, user_roles, users) and none for
the others (API keys, sessions), and never a secret (docs/api/audit.md lists the actions)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pyotp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef
from tests.support.graphql import sign_in
from tests.support.http import make_login_user
from tests.writes.conftest import Caller, Rows, SignIn, mutate

ROLE_CREATE = """mutation ($input: RoleCreateInput!) {
  roleCreate(input: $input) { role { rowId updatedAt } errors { code } } }"""
ROLE_UPDATE = """mutation ($input: RoleUpdateInput!) {
  roleUpdate(input: $input) { role { rowId updatedAt } errors { code } } }"""
ROLE_DELETE = """mutation ($input: RoleDeleteInput!) { roleDelete(input: $input) { deletedId errors { code } } }"""
GRANT = """mutation ($input: UserRoleGrantInput!) {
  userRoleGrant(input: $input) { userRole { rowId } errors { code } } }"""
REVOKE = """mutation ($input: UserRoleRevokeInput!) { userRoleRevoke(input: $input) { deletedId errors { code } } }"""
KEY_CREATE = """mutation ($input: ApiKeyCreateInput!) {
  apiKeyCreate(input: $input) { key apiKey { id } errors { code } } }"""
KEY_REVOKE = """mutation ($id: UUID!) { apiKeyRevoke(input: {id: $id}) { apiKey { id } errors { code } } }"""
SESSION_REVOKE = """mutation ($s: UUID!) { sessionRevoke(input: {rowId: $s}) { session { id } errors { code } } }"""
MFA_START = """mutation { mfaEnrollmentStart { enrollment { secret } errors { code } } }"""
MFA_CONFIRM = """mutation ($c: String!) {
  mfaEnrollmentConfirm(input: {code: $c}) { recoveryCodes errors { code } } }"""


async def _role(client: httpx.AsyncClient, admin: Caller, name: str) -> dict[str, str]:
    data = await mutate(client, admin, ROLE_CREATE, {"input": {"name": name, "permissions": ["user:read"]}})
    assert data["roleCreate"]["errors"] == []
    role: dict[str, str] = data["roleCreate"]["role"]
    return role


@pytest.mark.audits("roleCreate", "roleUpdate", "roleDelete")
async def test_a_role_s_life_is_audited_with_its_history(
    client: httpx.AsyncClient, sign_in_as: SignIn, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    admin = await sign_in_as("Tenant Admin")
    role = await _role(client, admin, "Audited role")
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "roleCreate", action="auth.role.created",
                                entity_id=role["rowId"], history={"name", "permissions"}, user_id=admin.id,
                                rows_in_request=1)
    assert log.entity_type == "role" and log.after_values["name"] == "Audited role"
    assert log.permission_used == "role:admin" and log.risk_level == "high"

    data = await mutate(client, admin, ROLE_UPDATE, {"input": {
        "rowId": role["rowId"], "updatedAt": role["updatedAt"], "name": "Renamed", "permissions": ["user:read"]}})
    assert data["roleUpdate"]["errors"] == []
    log, history = await expect_audit(owner_engine, fresh_tenant.id, "roleUpdate", action="auth.role.updated",
                                      entity_id=role["rowId"], history={"name"}, user_id=admin.id, rows_in_request=1)
    assert log.before_values["name"] == "Audited role" and log.after_values["name"] == "Renamed"
    assert [(h.field_name, h.old_value, h.new_value) for h in history] == [("name", "Audited role", "Renamed")]

    renamed = data["roleUpdate"]["role"]
    data = await mutate(client, admin, ROLE_DELETE, {"input": {"rowId": role["rowId"],
                                                               "updatedAt": renamed["updatedAt"]}})
    assert data["roleDelete"]["errors"] == []
    log, history = await expect_audit(owner_engine, fresh_tenant.id, "roleDelete", action="auth.role.deleted",
                                      entity_id=role["rowId"], history={"name", "permissions"}, rows_in_request=1)
    assert log.after_values is None and log.before_values["name"] == "Renamed"
    assert {h.change_category for h in history} == {"delete"}


@pytest.mark.audits("userRoleGrant", "userRoleRevoke")
async def test_a_role_assignment_s_grant_and_revocation_are_audited_with_their_history(
    client: httpx.AsyncClient, sign_in_as: SignIn, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    admin = await sign_in_as("Tenant Admin")
    role = await _role(client, admin, "Assigned role")
    user = await make_login_user(owner_engine, fresh_tenant, roles=[])
    data = await mutate(client, admin, GRANT, {"input": {"userRowId": str(user.id), "roleRowId": role["rowId"]}})
    assignment = data["userRoleGrant"]["userRole"]["rowId"]
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "userRoleGrant",
                                action="auth.role_assignment.granted", entity_id=assignment,
                                history={"user_id", "role_id", "assigned_by"}, user_id=admin.id, rows_in_request=1)
    assert log.entity_type == "user_role" and log.after_values["user_id"] == str(user.id)

    data = await mutate(client, admin, REVOKE, {"input": {"rowId": assignment}})
    assert data["userRoleRevoke"]["errors"] == []
    log, history = await expect_audit(owner_engine, fresh_tenant.id, "userRoleRevoke",
                                      action="auth.role_assignment.revoked", entity_id=assignment,
                                      history={"user_id", "role_id"}, user_id=admin.id, rows_in_request=1)
    assert log.before_values["role_id"] == role["rowId"] and {h.change_category for h in history} == {"delete"}


@pytest.mark.audits("apiKeyCreate", "apiKeyRevoke")
async def test_an_api_key_s_creation_and_revocation_are_events_in_their_own_transaction(
    client: httpx.AsyncClient, sign_in_as: SignIn, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    admin = await sign_in_as("Tenant Admin")
    data = await mutate(client, admin, KEY_CREATE, {"input": {"name": "ci", "roleName": "Viewer", "expiresInDays": 7}})
    key, key_id = data["apiKeyCreate"]["key"], data["apiKeyCreate"]["apiKey"]["id"]
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "apiKeyCreate", action="auth.api_key.created",
                                entity_id=key_id, history=None, user_id=admin.id, rows_in_request=1)
    assert log.entity_type == "api_key" and log.after_values["role"] == "Viewer"
    assert key not in str(tuple(log)) and key[4:12] not in str(log.after_values.get("key_hash"))

    data = await mutate(client, admin, KEY_REVOKE, {"id": key_id})
    assert data["apiKeyRevoke"]["errors"] == []
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "apiKeyRevoke", action="auth.api_key.revoked",
                                entity_id=key_id, history=None, user_id=admin.id, rows_in_request=1)
    assert log.permission_used == "api_key:admin"


@pytest.mark.audits("sessionRevoke")
async def test_revoking_another_user_s_session_is_an_event_of_that_session(
    client: httpx.AsyncClient, sign_in_as: SignIn, owner_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    other = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
    await sign_in(client, other)
    session = await rows.one("SELECT id FROM user_sessions WHERE user_id = :u", u=other.id)
    data = await mutate(client, admin, SESSION_REVOKE, {"s": str(session.id)})
    assert data["sessionRevoke"]["errors"] == []
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "sessionRevoke", action="auth.session.revoked",
                                entity_id=session.id, history=None, user_id=admin.id, rows_in_request=1)
    assert log.entity_type == "session" and log.after_values["session_user_id"] == str(other.id)
    assert log.permission_used == "user:admin" and log.risk_level == "medium"
    ended = await rows.one("SELECT termination_reason FROM user_sessions WHERE id = :s", s=session.id)
    assert ended.termination_reason == "revoked"


@pytest.mark.audits("mfaEnrollmentStart", "mfaEnrollmentConfirm")
async def test_mfa_enrolment_is_audited_on_the_user_without_its_secret(
    client: httpx.AsyncClient, sign_in_as: SignIn, owner_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    user = await sign_in_as("Viewer")
    data = await mutate(client, user, MFA_START)
    secret = data["mfaEnrollmentStart"]["enrollment"]["secret"]
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "mfaEnrollmentStart",
                                action="auth.mfa.enrollment_started", entity_id=user.id,
                                history={"mfa_secret_encrypted"}, secrets={"mfa_secret_encrypted"}, user_id=user.id,
                                rows_in_request=1)
    assert log.entity_type == "user"

    data = await mutate(client, user, MFA_CONFIRM, {"c": pyotp.TOTP(secret).now()})
    codes = data["mfaEnrollmentConfirm"]["recoveryCodes"]
    assert data["mfaEnrollmentConfirm"]["errors"] == [] and len(codes) == 10
    log, history = await expect_audit(owner_engine, fresh_tenant.id, "mfaEnrollmentConfirm",
                                      action="auth.mfa.enabled", entity_id=user.id, history={"mfa_enabled"},
                                      user_id=user.id, rows_in_request=1)
    assert log.before_values["mfa_enabled"] is False and log.after_values["mfa_enabled"] is True
    assert "totp_last_step" not in {h.field_name for h in history}  # operational: no history row
    trail = str([tuple(r) for r in await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t")])
    trail += str([tuple(r) for r in await rows.all("SELECT * FROM change_history WHERE tenant_id = :t")])
    assert secret not in trail and not any(code in trail for code in codes)
    assert uuid.UUID(str(log.entity_id)) == user.id


async def test_an_enrolment_changed_while_it_is_confirmed_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, sign_in_as: SignIn, owner_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    user = await sign_in_as("Viewer")
    secret = (await mutate(client, user, MFA_START))["mfaEnrollmentStart"]["enrollment"]["secret"]
    async with owner_engine.connect() as blocker:
        await set_tenant(blocker, fresh_tenant.id)
        await blocker.execute(text("SELECT id FROM users WHERE id = :u FOR UPDATE"), {"u": user.id})
        confirm = asyncio.create_task(mutate(client, user, MFA_CONFIRM, {"c": pyotp.TOTP(secret).now()}))
        async with owner_engine.connect() as watcher:  # the confirmation waits for the user row
            for _ in range(200):
                waiting = await watcher.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert waiting, (confirm.done() and confirm.result())
        # Meanwhile, another enrolment replaced the pending secret.
        await blocker.execute(text("UPDATE users SET mfa_secret_encrypted = 'another' WHERE id = :u"),
                              {"u": user.id})
        await blocker.commit()
    data = await confirm
    assert data["mfaEnrollmentConfirm"]["errors"] == [{"code": "MFA_ENROLLMENT_CHANGED"}]
    stored = await rows.one("SELECT mfa_enabled FROM users WHERE id = :u", u=user.id)
    assert stored.mfa_enabled is False
    assert await rows.all("SELECT id FROM mfa_recovery_codes WHERE user_id = :u", u=user.id) == []
    actions = [r.action_type for r in await rows.all(
        "SELECT action_type FROM audit_logs WHERE tenant_id = :t AND entity_id = :u ORDER BY seq", u=user.id)]
    assert "auth.mfa.enabled" not in actions and actions[-1] == "auth.mfa.failed"
