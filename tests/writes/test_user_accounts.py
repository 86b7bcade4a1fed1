"""userUpdate (one's own profile, or another's with user:admin) and userReactivate (within the
tenant's max_users, acceptance item 3) over HTTP: the rows, the audit trail, every refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.relay import to_base64

from models.db import set_tenant
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef
from tests.writes.conftest import Caller, Rows, SignIn, codes, mutate, refused

ERRORS = "errors { field code message currentUpdatedAt }"
UPDATE = f"""mutation($input: UserUpdateInput!) {{
  userUpdate(input: $input) {{ user {{ rowId firstName lastName title phone avatarUrl updatedAt }} {ERRORS} }} }}"""
REACTIVATE = f"""mutation($input: UserReactivateInput!) {{
  userReactivate(input: $input) {{ user {{ rowId isActive }} {ERRORS} }} }}"""


def _wire(row: Any) -> str:
    return str(row.updated_at.isoformat())


async def _user(rows: Rows, user_id: Any) -> Any:
    return await rows.one("SELECT * FROM users WHERE id = :u", u=user_id)


async def _update(client: httpx.AsyncClient, caller: Caller, rows: Rows, user_id: Any, **changes: Any) -> Any:
    row = await _user(rows, user_id)
    data = await mutate(client, caller, UPDATE, {"input": {"rowId": str(user_id), "updatedAt": _wire(row), **changes}})
    return data["userUpdate"]


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


# -- userUpdate ---------------------------------------------------------------------------------------


@pytest.mark.audits("userUpdate")
async def test_a_user_changes_their_own_profile(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    viewer = await sign_in_as("Viewer")
    payload = await _update(client, viewer, rows, viewer.id, firstName=" Grace ", title="Capture lead",
                            avatarUrl="https://cdn.example.test/grace.png")
    assert payload["errors"] == []
    assert (payload["user"]["firstName"], payload["user"]["title"]) == ("Grace", "Capture lead")
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "userUpdate", action="auth.user.updated",
                                entity_id=viewer.id, history={"first_name", "title", "avatar_url"}, user_id=viewer.id)
    assert log.operation_description.endswith("own profile changed") or "own profile" in log.operation_description
    # Null clears an optional field; nothing changed writes nothing.
    cleared = await _update(client, viewer, rows, viewer.id, title=None)
    assert cleared["errors"] == [] and cleared["user"]["title"] is None
    count = len(await rows.all("SELECT 1 FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.user.updated'"))
    same = await _update(client, viewer, rows, viewer.id, title=None)
    assert same["errors"] == []
    assert len(await rows.all(
        "SELECT 1 FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.user.updated'")) == count


async def test_profile_values_are_checked_before_anything_is_written(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    viewer = await sign_in_as("Viewer")
    before = await _user(rows, viewer.id)
    for changes, code, field in (
        ({"firstName": "  "}, "INVALID_NAME", "firstName"),
        ({"lastName": "x" * 101}, "INVALID_NAME", "lastName"),
        ({"firstName": None}, "INVALID_NAME", "firstName"),
        ({"title": "t" * 151}, "VALIDATION", "title"),
        ({"avatarUrl": "javascript:alert(1)"}, "VALIDATION", "avatarUrl"),
        ({"avatarUrl": "http://plain.example.test/a.png"}, "VALIDATION", "avatarUrl"),
    ):
        payload = await _update(client, viewer, rows, viewer.id, **changes)
        assert _errors(payload) == [(code, ["input", field])], changes
        assert payload["user"] is None
    stale = await mutate(client, viewer, UPDATE, {"input": {
        "id": to_base64("User", viewer.id), "updatedAt": "2001-01-01T00:00:00+00:00", "title": "x"}})
    (error,) = stale["userUpdate"]["errors"]
    assert (error["code"], error["field"]) == ("CONFLICT", ["input", "updatedAt"]) and error["currentUpdatedAt"]
    assert await _user(rows, viewer.id) == before


async def test_roles_and_email_are_not_profile_fields(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    viewer = await sign_in_as("Viewer")
    row = await _user(rows, viewer.id)
    for extra in ({"roles": ["Tenant Admin"]}, {"email": "other@example.test"}, {"isActive": True}):
        errors = await refused(client, viewer, UPDATE, {"input": {"rowId": str(viewer.id), "updatedAt": _wire(row),
                                                                  **extra}})
        assert "not to include unknown field" in errors[0]["message"], errors
    assert await _user(rows, viewer.id) == row


async def test_another_users_profile_is_missing_without_user_admin_and_audited(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager, other = await sign_in_as("Capture Manager"), await sign_in_as("Viewer")
    before = await _user(rows, other.id)
    payload = await _update(client, manager, rows, other.id, title="Intruded")
    assert _errors(payload) == [("USER_NOT_FOUND", ["input", "rowId"])] and payload["user"] is None
    assert await _user(rows, other.id) == before
    (denial,) = await rows.denials()
    assert (denial.user_id, denial.entity_id, denial.access_granted) == (manager.id, other.id, False)
    assert "userUpdate" in denial.operation_description


async def test_an_administrator_changes_another_profile_unless_it_outranks_them(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin, viewer = await sign_in_as("Tenant Admin"), await sign_in_as("Viewer")
    payload = await _update(client, admin, rows, viewer.id, phone="+1 555 0101")
    assert payload["errors"] == [] and payload["user"]["phone"] == "+1 555 0101"
    (log,) = await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.user.updated'")
    assert log.user_id == admin.id and log.permission_used == "user:admin"

    # A user administrator without everything the Tenant Admin holds cannot touch the admin's profile.
    keepers = await rows.make("roles", name="Keepers", permissions='["user:admin", "user:read"]')
    keeper = await sign_in_as()
    await rows.make("user_roles", {"users": keeper.id, "roles": keepers.id})
    before = await _user(rows, admin.id)
    refusal = await _update(client, keeper, rows, admin.id, title="Demoted")
    assert _errors(refusal) == [("INSUFFICIENT_PRIVILEGE", ["input", "rowId"])]
    assert await _user(rows, admin.id) == before
    (audited,) = await rows.all(
        "SELECT * FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.privilege.refused'")
    assert (audited.user_id, audited.entity_id, audited.risk_level) == (keeper.id, admin.id, "high")


# -- userReactivate -----------------------------------------------------------------------------------


async def _set_max_users(owner_engine: AsyncEngine, tenant: TenantRef, limit: int) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text("UPDATE tenants SET max_users = :n WHERE id = :t"), {"n": limit, "t": tenant.id})


async def _active(rows: Rows) -> int:
    found = await rows.one("SELECT count(*) AS n FROM users WHERE tenant_id = :t AND is_active AND NOT is_system")
    return int(found.n)


async def _reactivate(client: httpx.AsyncClient, caller: Caller, user_id: Any) -> dict[str, Any]:
    data = await mutate(client, caller, REACTIVATE, {"input": {"rowId": str(user_id)}})
    payload: dict[str, Any] = data["userReactivate"]
    return payload


@pytest.mark.audits("userReactivate")
async def test_reactivation_switches_a_user_back_on_within_max_users(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    admin = await sign_in_as("Tenant Admin")
    gone = await rows.make("users", is_active=False)
    await _set_max_users(owner_engine, fresh_tenant, await _active(rows))

    full = await _reactivate(client, admin, gone.id)
    assert full["user"] is None
    assert [(e["code"], e["field"]) for e in full["errors"]] == [("USER_LIMIT", None)]
    assert (await _user(rows, gone.id)).is_active is False

    await _set_max_users(owner_engine, fresh_tenant, await _active(rows) + 1)
    payload = await _reactivate(client, admin, gone.id)
    assert payload["errors"] == [] and payload["user"]["isActive"] is True
    await expect_audit(owner_engine, fresh_tenant.id, "userReactivate", action="auth.user.reactivated",
                       entity_id=gone.id, history={"is_active"}, user_id=admin.id)

    again = await _reactivate(client, admin, gone.id)
    assert _errors(again) == [("USER_ACTIVE", ["input", "rowId"])]
    missing = await mutate(client, admin, REACTIVATE, {"input": {"id": to_base64("User", fresh_tenant.id)}})
    assert [e["code"] for e in missing["userReactivate"]["errors"]] == ["USER_NOT_FOUND"]
    system = await _reactivate(client, admin, fresh_tenant.system_user_id)
    assert [e["code"] for e in system["errors"]] == ["USER_NOT_FOUND"]
    manager = await sign_in_as("Capture Manager")
    assert codes(await refused(client, manager, REACTIVATE, {"input": {"rowId": str(gone.id)}})) == ["FORBIDDEN"]


async def test_two_reactivations_racing_for_the_last_seat_one_wins(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    first, second = await sign_in_as("Tenant Admin"), await sign_in_as("Tenant Admin")
    one, two = await rows.make("users", is_active=False), await rows.make("users", is_active=False)
    await _set_max_users(owner_engine, fresh_tenant, await _active(rows) + 1)
    async with owner_engine.connect() as holder:
        await set_tenant(holder, fresh_tenant.id)
        await holder.execute(text("SELECT 1 FROM tenants WHERE id = :t FOR NO KEY UPDATE"), {"t": fresh_tenant.id})
        racing = asyncio.gather(_reactivate(client, first, one.id), _reactivate(client, second, two.id))
        await asyncio.sleep(0.5)
        await holder.rollback()
        results = await racing
    assert sorted(tuple(e["code"] for e in r["errors"]) for r in results) == [(), ("USER_LIMIT",)]
    assert [(await _user(rows, u)).is_active for u in (one.id, two.id)].count(True) == 1


async def test_reactivating_a_user_holding_more_than_the_caller_is_refused_and_audited(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    admin = await sign_in_as("Tenant Admin")
    await sign_in_as("Tenant Admin")
    async with rows.engine.begin() as conn:
        await set_tenant(conn, rows.tenant.id)
        await conn.execute(text("UPDATE users SET is_active = false WHERE id = :u"), {"u": admin.id})
    keepers = await rows.make("roles", name="Keepers", permissions='["user:admin", "user:read"]')
    keeper = await sign_in_as()
    await rows.make("user_roles", {"users": keeper.id, "roles": keepers.id})
    payload = await _reactivate(client, keeper, admin.id)
    assert _errors(payload) == [("INSUFFICIENT_PRIVILEGE", ["input", "rowId"])]
    assert (await _user(rows, admin.id)).is_active is False
    (audited,) = await rows.all(
        "SELECT * FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.privilege.refused'")
    assert audited.user_id == keeper.id and audited.entity_id == admin.id
