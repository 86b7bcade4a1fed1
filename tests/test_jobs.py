"""The nightly sweep (`gwm jobs run`): inactive accounts (AC-2(3)), expired role assignments, purges.

Committed data under a fresh tenant; the sweep runs as the schema owner like the CLI does. Most
tests sweep only their own tenant (`sweep_tenant`) so other tests' data is left alone; one runs
the whole job, and one the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audit import RequestMeta
from auth.sessions import create_session
from models.db import set_tenant
from models.side_effects import SideEffectWriter
from server.jobs import TenantSweep, run_nightly, sweep_tenant
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TEST_AUDIT_KEYS, TenantRef
from tests.support.http import make_login_user

ROOT = Path(__file__).resolve().parent.parent
META = RequestMeta(request_id="test-nightly-job", endpoint="gwm jobs run", method="JOB")


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def _sweep(owner_engine: AsyncEngine, tenant: TenantRef, now: datetime) -> TenantSweep:
    writer = SideEffectWriter(owner_engine, TEST_AUDIT_CHAIN)
    return await sweep_tenant(owner_engine, writer, tenant.id, now=now, meta=META)


async def _user(
    owner_engine: AsyncEngine,
    tenant: TenantRef,
    *,
    created: datetime,
    last_login: datetime | None,
    **cols: Any,
) -> uuid.UUID:
    user = await make_login_user(owner_engine, tenant, created_at=created, last_login_at=last_login, **cols)
    return user.id


async def _session(
    owner_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID, now: datetime
) -> uuid.UUID:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        _, session_id = await create_session(
            conn,
            tenant_id=tenant.id,
            user_id=user_id,
            now=now,
            absolute_timeout=timedelta(hours=12),
            mfa_verified=True,
            ip=None,
            user_agent=None,
            permissions_snapshot={},
        )
    return session_id


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return rows


async def _exec(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text(sql), params)


async def _active(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[uuid.UUID, bool]:
    rows = await _rows(owner_engine, tenant, "SELECT id, is_active FROM users")
    return {r.id: r.is_active for r in rows}


async def test_inactive_accounts_are_disabled_and_their_sessions_end(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, now: datetime
) -> None:
    days = timedelta(days=1)
    stale = await _user(owner_engine, fresh_tenant, created=now - 400 * days, last_login=now - 91 * days)
    recent = await _user(owner_engine, fresh_tenant, created=now - 400 * days, last_login=now - 89 * days)
    never_old = await _user(owner_engine, fresh_tenant, created=now - 91 * days, last_login=None)
    never_new = await _user(owner_engine, fresh_tenant, created=now - 10 * days, last_login=None)
    # Signs in through SSO only: the linked identity's last use counts as a sign-in.
    sso = await _user(owner_engine, fresh_tenant, created=now - 400 * days, last_login=now - 200 * days)
    await _exec(
        owner_engine,
        fresh_tenant,
        "INSERT INTO user_identities (tenant_id, user_id, provider, issuer, subject, last_used_at)"
        " VALUES (:t, :u, 'oidc', 'https://idp.example', 'sub-1', :used)",
        t=fresh_tenant.id,
        u=sso,
        used=now - 2 * days,
    )
    # The system user never signs in and must stay.
    await _exec(
        owner_engine, fresh_tenant, "UPDATE users SET created_at = :c WHERE is_system", c=now - 400 * days
    )
    stale_session = await _session(owner_engine, fresh_tenant, stale, now - timedelta(hours=1))
    recent_session = await _session(owner_engine, fresh_tenant, recent, now - timedelta(hours=1))

    sweep = await _sweep(owner_engine, fresh_tenant, now)

    assert sweep.users_deactivated == 2 and sweep.sessions_ended == 1
    active = await _active(owner_engine, fresh_tenant)
    assert active[stale] is False and active[never_old] is False
    assert active[recent] and active[never_new] and active[sso] and active[fresh_tenant.system_user_id]
    sessions = {
        r.id: r
        for r in await _rows(
            owner_engine, fresh_tenant, "SELECT id, is_active, termination_reason FROM user_sessions"
        )
    }
    assert (
        sessions[stale_session].termination_reason == "user_deactivated"
        and not sessions[stale_session].is_active
    )
    assert sessions[recent_session].termination_reason is None

    audit = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT user_id, entity_id, operation_description, after_values, risk_level FROM audit_logs"
        " WHERE action_type = 'auth.user.deactivated'",
    )
    assert {r.entity_id for r in audit} == {stale, never_old}
    assert {r.user_id for r in audit} == {fresh_tenant.system_user_id}  # the system acted
    assert all("AC-2(3)" in r.operation_description and r.risk_level == "high" for r in audit)
    assert all(r.after_values["is_active"] is False for r in audit)
    by_user = {r.entity_id: r.operation_description for r in audit}
    assert by_user[stale].endswith("1 session(s) ended")
    assert f"last seen {(now - 91 * days).isoformat()}" in by_user[never_old]
    # The history of each change, in the same transaction, by the system process.
    history = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT entity_id, field_name, old_value, new_value, changed_by_user_id, changed_by_system_process,"
        " change_source FROM change_history WHERE entity_type = 'user'",
    )
    assert sorted((h.entity_id, h.field_name, h.old_value, h.new_value) for h in history) == sorted(
        [(stale, "is_active", True, False), (never_old, "is_active", True, False)]
    )
    assert {(h.changed_by_user_id, h.changed_by_system_process, h.change_source) for h in history} == {
        (fresh_tenant.system_user_id, "gwm jobs run", "system")
    }

    again = await _sweep(owner_engine, fresh_tenant, now)  # nothing left to do, nothing audited twice
    assert again == TenantSweep()
    assert len(await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM audit_logs")) == len(audit)


async def test_the_tenants_inactivity_setting_applies(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, now: datetime
) -> None:
    await _exec(
        owner_engine,
        fresh_tenant,
        "INSERT INTO tenant_configurations (tenant_id, config_key, config_value, config_type)"
        " VALUES (:t, 'security.inactive_disable_days', CAST(:v AS jsonb), 'integer')",
        t=fresh_tenant.id,
        v=json.dumps(30),
    )
    forty = await _user(
        owner_engine, fresh_tenant, created=now - timedelta(days=300), last_login=now - timedelta(days=40)
    )
    twenty = await _user(
        owner_engine, fresh_tenant, created=now - timedelta(days=300), last_login=now - timedelta(days=20)
    )

    assert (await _sweep(owner_engine, fresh_tenant, now)).users_deactivated == 1
    active = await _active(owner_engine, fresh_tenant)
    assert active[forty] is False and active[twenty] is True


async def test_expired_role_assignments_are_removed_and_their_sessions_end(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, now: datetime
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer", "Capture Manager"])
    keeps = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
    await _exec(
        owner_engine,
        fresh_tenant,
        "UPDATE user_roles SET expires_at = :e FROM roles r"
        " WHERE r.id = user_roles.role_id AND user_roles.user_id = :u AND r.name = 'Capture Manager'",
        e=now - timedelta(minutes=1),
        u=user.id,
    )
    # Expiring later: untouched.
    await _exec(
        owner_engine,
        fresh_tenant,
        "UPDATE user_roles SET expires_at = :e WHERE user_id = :u",
        e=now + timedelta(days=1),
        u=keeps.id,
    )
    session = await _session(owner_engine, fresh_tenant, user.id, now - timedelta(minutes=5))
    other_session = await _session(owner_engine, fresh_tenant, keeps.id, now - timedelta(minutes=5))

    sweep = await _sweep(owner_engine, fresh_tenant, now)

    assert sweep.role_assignments_expired == 1 and sweep.sessions_ended == 1
    roles = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " WHERE ur.user_id IN (:a, :b)",
        a=user.id,
        b=keeps.id,
    )
    assert sorted((r.user_id == user.id, r.name) for r in roles) == [(False, "Viewer"), (True, "Viewer")]
    reasons = dict(
        (r.id, r.termination_reason)
        for r in await _rows(owner_engine, fresh_tenant, "SELECT id, termination_reason FROM user_sessions")
    )
    assert reasons[session] == "role_assignment_expired" and reasons[other_session] is None
    (audit,) = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT user_id, entity_type, entity_id, before_values, after_values, operation_description"
        " FROM audit_logs WHERE action_type = 'auth.role_assignment.expired'",
    )
    assert audit.entity_type == "user_role" and audit.user_id == fresh_tenant.system_user_id
    assert audit.before_values["user_id"] == str(user.id) and audit.after_values is None
    assert audit.operation_description == "gwm jobs run: role 'Capture Manager' expired"
    assert audit.before_values["expires_at"] == (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    deleted = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT field_name, change_category FROM change_history WHERE entity_id = :a",
        a=audit.entity_id,
    )
    assert {h.field_name for h in deleted} >= {"user_id", "role_id"}
    assert {h.change_category for h in deleted} == {"delete"}


async def test_expired_tokens_and_saml_state_are_purged(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, now: datetime
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    past, future = now - timedelta(seconds=1), now + timedelta(hours=1)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        for name, expires in (("old", past), ("new", future)):
            await _insert_state(conn, fresh_tenant, user.id, name, expires)

    sweep = await _sweep(owner_engine, fresh_tenant, now)

    assert (sweep.account_links_purged, sweep.saml_requests_purged, sweep.saml_assertions_purged) == (1, 1, 1)
    left = await _rows(
        owner_engine,
        fresh_tenant,
        "SELECT (SELECT array_agg(token_hash) FROM account_tokens) AS tokens,"
        " (SELECT array_agg(request_id) FROM saml_authn_requests) AS requests,"
        " (SELECT array_agg(assertion_id) FROM saml_assertions_seen) AS assertions",
    )
    assert (left[0].tokens, left[0].requests, left[0].assertions) == (["new" * 16], ["new"], ["new"])


async def _insert_state(
    conn: AsyncConnection, tenant: TenantRef, user_id: uuid.UUID, name: str, expires: datetime
) -> None:
    await conn.execute(
        text(
            "INSERT INTO account_tokens (tenant_id, user_id, purpose, token_hash, expires_at)"
            " VALUES (:t, :u, 'password_reset', :h, :e)"
        ),
        {"t": tenant.id, "u": user_id, "h": name * 16, "e": expires},
    )
    await conn.execute(
        text("INSERT INTO saml_authn_requests (tenant_id, request_id, expires_at) VALUES (:t, :r, :e)"),
        {"t": tenant.id, "r": name, "e": expires},
    )
    await conn.execute(
        text(
            "INSERT INTO saml_assertions_seen (tenant_id, assertion_id, not_on_or_after) VALUES (:t, :a, :e)"
        ),
        {"t": tenant.id, "a": name, "e": expires},
    )


async def test_run_nightly_visits_every_tenant(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, tenant_a: TenantRef, now: datetime
) -> None:
    stale = await _user(owner_engine, fresh_tenant, created=now - timedelta(days=200), last_login=None)
    report = await run_nightly(owner_engine, TEST_AUDIT_CHAIN, now=now)
    assert report.tenants >= 2 and report.failed == []
    assert report.totals.users_deactivated >= 1
    assert (await _active(owner_engine, fresh_tenant))[stale] is False
    assert "nightly sweep over" in str(report)


def test_gwm_jobs_run_from_the_command_line(database: Database) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
    )
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "jobs", "run"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "nightly sweep over" in result.stdout and "users deactivated" in result.stdout
