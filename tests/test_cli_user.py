"""`gwm user unlock` and `gwm user grant-admin`, run as an operator runs them (a real `gwm` process
against the test database): a tenant whose only administrator is locked out or deactivated gets
back in, and every change is audited as the tenant's system user, with its history."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def _gwm(database: Database, *args: str) -> Ran:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return rows


async def _audit(owner_engine: AsyncEngine, tenant: TenantRef, action: str) -> list[Any]:
    return await _rows(
        owner_engine, tenant, "SELECT * FROM audit_logs WHERE action_type = :a ORDER BY seq", a=action
    )


async def _history(owner_engine: AsyncEngine, tenant: TenantRef) -> list[Any]:
    return await _rows(owner_engine, tenant, "SELECT * FROM change_history ORDER BY seq")


async def test_unlock_clears_a_lockout_and_reactivates_an_account(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    now = datetime.now(UTC)
    admin = await make_login_user(
        owner_engine, fresh_tenant, roles=["Tenant Admin"], locked_until=now + timedelta(minutes=30),
        failed_login_attempts=2,
    )
    gone = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"], is_active=False)

    ran = await _gwm(database, "user", "unlock", "--tenant", fresh_tenant.subdomain, "--email", admin.email.upper())
    assert ran.code == 0, ran.err
    assert ran.out.strip() == f"{admin.email} in {fresh_tenant.subdomain}: lockout cleared"
    (row,) = await _rows(
        owner_engine, fresh_tenant, "SELECT locked_until, failed_login_attempts FROM users WHERE id = :u", u=admin.id
    )
    assert (row.locked_until, row.failed_login_attempts) == (None, 0)
    (unlocked,) = await _audit(owner_engine, fresh_tenant, "auth.account.unlocked")
    assert (unlocked.user_id, unlocked.entity_id) == (fresh_tenant.system_user_id, admin.id)
    assert unlocked.after_values == {"was_locked": True}
    assert "gwm user unlock" in unlocked.operation_description and unlocked.http_method == "CLI"
    assert await _history(owner_engine, fresh_tenant) == []  # the lockout columns are operational

    # The way back in works: the administrator signs in.
    async with app_client(create_app(settings_for(database.app_url))) as client:
        signed_in = await client.post("/auth/login", json=admin.credentials())
    assert signed_in.status_code == 200, signed_in.text

    ran = await _gwm(database, "user", "unlock", "--tenant", str(fresh_tenant.id), "--email", gone.email)
    assert ran.code == 0, ran.err
    assert ran.out.strip().endswith("failure count cleared (was not locked), account reactivated")
    (reactivated,) = await _audit(owner_engine, fresh_tenant, "auth.user.reactivated")
    assert (reactivated.user_id, reactivated.entity_id) == (fresh_tenant.system_user_id, gone.id)
    assert reactivated.before_values["is_active"] is False and reactivated.after_values["is_active"] is True
    (history,) = await _history(owner_engine, fresh_tenant)
    assert (history.entity_id, history.field_name, history.old_value, history.new_value) == (
        gone.id, "is_active", False, True
    )
    assert (history.changed_by_user_id, history.changed_by_system_process, history.change_source) == (
        fresh_tenant.system_user_id, "gwm user unlock", "system"
    )
    # Both rows of the second command share its transaction's batch; the first wrote no history.
    assert history.change_batch_id is not None


async def test_unlock_respects_the_seat_limit(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    gone = await make_login_user(owner_engine, fresh_tenant, is_active=False)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(text("UPDATE tenants SET max_users = 0 WHERE id = :t"), {"t": fresh_tenant.id})
    ran = await _gwm(database, "user", "unlock", "--tenant", fresh_tenant.subdomain, "--email", gone.email)
    assert ran.code == 2 and "has no free seat (max_users 0)" in ran.err
    # Refused as a whole: not even the failure count's event row was written.
    assert await _audit(owner_engine, fresh_tenant, "auth.account.unlocked") == []
    (row,) = await _rows(owner_engine, fresh_tenant, "SELECT is_active FROM users WHERE id = :u", u=gone.id)
    assert row.is_active is False


async def test_grant_admin_gives_the_tenant_admin_role_once(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])

    ran = await _gwm(database, "user", "grant-admin", "--tenant", fresh_tenant.subdomain, "--email", user.email)
    assert ran.code == 0, ran.err
    assert ran.out.strip() == f"{user.email} in {fresh_tenant.subdomain}: 'Tenant Admin' granted"
    roles = await _rows(
        owner_engine, fresh_tenant,
        "SELECT r.name, ur.assigned_by, ur.opportunity_project_id FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " WHERE ur.user_id = :u ORDER BY r.name",
        u=user.id,
    )
    assert [(r.name, r.assigned_by, r.opportunity_project_id) for r in roles] == [
        ("Tenant Admin", fresh_tenant.system_user_id, None),
        ("Viewer", fresh_tenant.system_user_id, None),
    ]
    (granted,) = await _audit(owner_engine, fresh_tenant, "auth.role_assignment.granted")
    assert granted.entity_type == "user_role" and granted.user_id == fresh_tenant.system_user_id
    assert granted.after_values["user_id"] == str(user.id) and granted.risk_level == "high"
    assert "gwm user grant-admin" in granted.operation_description
    history = await _history(owner_engine, fresh_tenant)
    assert {h.field_name for h in history} >= {"user_id", "role_id", "assigned_by"}
    assert {(h.entity_id, h.change_category, h.change_source) for h in history} == {
        (granted.entity_id, "create", "system")
    }

    # Again: nothing to do, nothing written.
    again = await _gwm(database, "user", "grant-admin", "--tenant", fresh_tenant.subdomain, "--email", user.email)
    assert again.code == 0 and "already holds 'Tenant Admin': nothing changed" in again.out
    assert len(await _audit(owner_engine, fresh_tenant, "auth.role_assignment.granted")) == 1

    # The new administrator can administer: the grant holds on the next request.
    async with app_client(create_app(settings_for(database.app_url))) as client:
        token = (await client.post("/auth/login", json=user.credentials())).json()["token"]
        session = await client.get("/auth/session", headers={"authorization": f"Bearer {token}"})
    assert "user:admin" in session.json()["permissions"]


async def test_user_commands_refuse_what_they_cannot_find(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    system_email = (await _rows(owner_engine, fresh_tenant, "SELECT email FROM users WHERE is_system"))[0].email
    cases = [
        (("unlock", "--tenant", "no-such-tenant", "--email", "x@example.test"), "no tenant 'no-such-tenant'"),
        (("grant-admin", "--tenant", fresh_tenant.subdomain, "--email", "nobody@example.test"),
         f"no user 'nobody@example.test' in {fresh_tenant.subdomain}"),
        (("grant-admin", "--tenant", fresh_tenant.subdomain, "--email", system_email), "system user"),
        (("unlock", "--tenant", fresh_tenant.subdomain, "--email", system_email), "system user"),
    ]
    for args, message in cases:
        ran = await _gwm(database, "user", *args)
        assert ran.code == 2 and message in ran.err, (args, ran)
    missing_email = await _gwm(database, "user", "unlock", "--tenant", fresh_tenant.subdomain)
    assert missing_email.code == 2 and "--email" in missing_email.err
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM audit_logs") == []
