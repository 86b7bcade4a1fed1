"""Faults in the account writes outside GraphQL: an `/auth/*` route (a password change) and a job
(`gwm jobs run` deactivating an inactive account). Whatever fails before or at COMMIT (a constraint,
a deferred check at COMMIT, the backend killed mid-transaction, a statement timeout) leaves no
change, no audit row, no history and no side change of the tables outside the hook (the sessions
the write would have ended) behind; the next attempt, with the fault gone, succeeds.

Faults are real database objects on the users table aimed at one row (a CHECK constraint added NOT
VALID, a deferred constraint trigger, a trigger that terminates its own backend, a trigger that
sleeps past the statement timeout), dropped again after each case.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.audit import RequestMeta
from auth.sessions import create_session
from models.db import create_engine, set_tenant
from models.errors import DomainError
from models.side_effects import SideEffectWriter
from server.app import create_app
from server.jobs import sweep_tenant
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.http import LoginUser, app_client, make_login_user
from tests.support.http import test_settings as settings_for

FAULTS = ["constraint", "at_commit", "killed_backend", "statement_timeout"]
NEW_PASSWORD = "amber falcon meadow quartz"
TIMEOUT_MS = 300


@asynccontextmanager
async def fault(owner_engine: AsyncEngine, kind: str, user_id: uuid.UUID) -> AsyncIterator[None]:
    """Install `kind` on UPDATEs of the users row `user_id`; remove it on leaving."""
    name = f"test_fault_{uuid.uuid4().hex[:8]}"
    body = {
        "at_commit": "RAISE EXCEPTION 'refused at commit'",
        "killed_backend": "PERFORM pg_terminate_backend(pg_backend_pid())",
        "statement_timeout": "PERFORM pg_sleep(2)",
    }.get(kind)
    async with owner_engine.begin() as conn:
        if kind == "constraint":
            # Any change of this row breaks it; existing rows are not checked (NOT VALID).
            await conn.execute(text(
                f"ALTER TABLE users ADD CONSTRAINT {name} CHECK (id <> '{user_id}' OR updated_at < '2000-01-01')"
                " NOT VALID"))
        else:
            returns = "NULL" if kind == "at_commit" else "NEW"
            await conn.execute(text(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.id = '{user_id}' THEN {body}; END IF; RETURN {returns}; END $$"))
            when = (
                "CONSTRAINT TRIGGER {n} AFTER UPDATE ON users DEFERRABLE INITIALLY DEFERRED"
                if kind == "at_commit"
                else "TRIGGER {n} BEFORE UPDATE ON users"
            ).format(n=name)
            await conn.execute(text(f"CREATE {when} FOR EACH ROW EXECUTE FUNCTION {name}()"))
    try:
        yield
    finally:
        async with owner_engine.begin() as conn:
            if kind == "constraint":
                await conn.execute(text(f"ALTER TABLE users DROP CONSTRAINT {name}"))
            else:
                await conn.execute(text(f"DROP TRIGGER {name} ON users"))
                await conn.execute(text(f"DROP FUNCTION {name}()"))


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return rows


async def _evidence(owner_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID) -> tuple[list[Any], list[Any]]:
    """The audit rows about the user written by writes (not sign-ins), and its change_history."""
    audit = await _rows(
        owner_engine, tenant,
        "SELECT action_type FROM audit_logs WHERE entity_id = :u AND action_type NOT LIKE 'auth.login.%'", u=user_id,
    )
    history = await _rows(owner_engine, tenant, "SELECT field_name FROM change_history WHERE entity_id = :u", u=user_id)
    return audit, history


@pytest.fixture(scope="module")
def impatient_app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url, db_statement_timeout_ms=TIMEOUT_MS))


async def _sign_in(client: httpx.AsyncClient, user: LoginUser) -> str:
    response = await client.post("/auth/login", json=user.credentials())
    client.cookies.clear()
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.mark.parametrize("kind", FAULTS)
async def test_a_failed_password_change_leaves_nothing(
    kind: str,
    client: httpx.AsyncClient,
    impatient_app: Starlette,
    owner_engine: AsyncEngine,
    fresh_tenant: TenantRef,
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant)
    this, other = await _sign_in(client, user), await _sign_in(client, user)
    (before,) = await _rows(owner_engine, fresh_tenant, "SELECT * FROM users WHERE id = :u", u=user.id)
    body = {"currentPassword": user.password, "newPassword": NEW_PASSWORD}
    headers = {"authorization": f"Bearer {this}"}

    async with fault(owner_engine, kind, user.id):
        if kind == "statement_timeout":
            async with app_client(impatient_app) as impatient:
                response = await impatient.post("/auth/password/change", json=body, headers=headers)
        else:
            response = await client.post("/auth/password/change", json=body, headers=headers)
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "refused at commit" not in response.text and "canceling statement" not in response.text

    (after,) = await _rows(owner_engine, fresh_tenant, "SELECT * FROM users WHERE id = :u", u=user.id)
    assert (after.password_hash, after.password_changed_at, after.updated_at) == (
        before.password_hash, before.password_changed_at, before.updated_at
    )
    assert await _evidence(owner_engine, fresh_tenant, user.id) == ([], [])
    # The other session the change would have ended is still good.
    assert (await client.get("/auth/session", headers={"authorization": f"Bearer {other}"})).status_code == 200

    # With the fault gone the same request succeeds (after a killed backend, on a live connection),
    # and commits its change with its evidence.
    again = await client.post("/auth/password/change", json=body, headers=headers)
    assert again.status_code == 204, again.text
    audit, history = await _evidence(owner_engine, fresh_tenant, user.id)
    assert [a.action_type for a in audit] == ["auth.password.changed"]
    assert {h.field_name for h in history} >= {"password_hash", "password_changed_at"}
    assert (await client.get("/auth/session", headers={"authorization": f"Bearer {other}"})).status_code == 401


@pytest.mark.parametrize("kind", FAULTS)
async def test_a_failed_nightly_deactivation_leaves_nothing(
    kind: str, database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    now = datetime.now(UTC)
    stale = await make_login_user(
        owner_engine, fresh_tenant, created_at=now - timedelta(days=400), last_login_at=now - timedelta(days=200)
    )
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        _, session_id = await create_session(
            conn, tenant_id=fresh_tenant.id, user_id=stale.id, now=now - timedelta(minutes=5),
            absolute_timeout=timedelta(hours=8), mfa_verified=False, ip=None, user_agent=None,
            permissions_snapshot=None,
        )
    meta = RequestMeta(request_id=f"test-job-fault-{kind}", endpoint="gwm jobs run", method="JOB")
    engine = (
        create_engine(database.owner_url, pool_size=1, max_overflow=0, statement_timeout_ms=TIMEOUT_MS)
        if kind == "statement_timeout"
        else owner_engine
    )
    writer = SideEffectWriter(engine, TEST_AUDIT_CHAIN)
    try:
        async with fault(owner_engine, kind, stale.id):
            with pytest.raises((DBAPIError, DomainError)):
                await sweep_tenant(engine, writer, fresh_tenant.id, now=now, meta=meta)
    finally:
        if engine is not owner_engine:
            await engine.dispose()

    (user,) = await _rows(owner_engine, fresh_tenant, "SELECT is_active FROM users WHERE id = :u", u=stale.id)
    assert user.is_active is True
    (session,) = await _rows(
        owner_engine, fresh_tenant, "SELECT is_active, terminated_at FROM user_sessions WHERE id = :s", s=session_id
    )
    assert session.is_active and session.terminated_at is None
    assert await _evidence(owner_engine, fresh_tenant, stale.id) == ([], [])

    sweep = await sweep_tenant(owner_engine, SideEffectWriter(owner_engine, TEST_AUDIT_CHAIN), fresh_tenant.id,
                               now=now, meta=meta)
    assert (sweep.users_deactivated, sweep.sessions_ended) == (1, 1)
    audit, history = await _evidence(owner_engine, fresh_tenant, stale.id)
    assert [a.action_type for a in audit] == ["auth.user.deactivated"] and [h.field_name for h in history] == [
        "is_active"
    ]
