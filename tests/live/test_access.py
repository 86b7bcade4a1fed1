"""A subscriber's access read again: permissions expire with the earliest assignment behind them,
ended sessions, deactivated users and tenants and revoked keys are told apart, nothing is touched."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audited import system_unit
from auth.permissions import SYSTEM_ROLES, SystemRole
from auth.sessions import TerminationReason, create_session, terminate_session
from live.access import AccessState, PermissionKey, load_access
from models.db import set_tenant
from models.tenancy import Tenant
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant
from tests.support.http import make_login_user

DAY = timedelta(days=1)


async def _db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        value: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
    return value


async def _grant(
    owner_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID, role: SystemRole, expires_at: datetime | None,
    project_id: uuid.UUID | None = None,
) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, expires_at)"
                " SELECT :t, :u, id, :by, :exp FROM roles WHERE tenant_id = :t AND name = :r"
            ),
            {"t": tenant.id, "u": user_id, "r": role.value, "by": tenant.system_user_id, "exp": expires_at},
        )


async def _session(app_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID, now: datetime) -> uuid.UUID:
    async with app_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        _, session_id = await create_session(
            conn, tenant_id=tenant.id, user_id=user_id, now=now, absolute_timeout=timedelta(hours=12),
            mfa_verified=True, ip=None, user_agent=None, permissions_snapshot={},
        )
    return session_id


async def test_permissions_hold_until_the_earliest_assignment_expires(
    app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant, roles=(SystemRole.VIEWER.value,))
    now = await _db_now(app_engine)
    soon, later = now + timedelta(minutes=5), now + timedelta(hours=2)
    await _grant(owner_engine, tenant, user.id, SystemRole.BD_ANALYST, soon)
    await _grant(owner_engine, tenant, user.id, SystemRole.AUDITOR, later)
    await _grant(owner_engine, tenant, user.id, SystemRole.TENANT_ADMIN, now - timedelta(minutes=1))  # expired

    access = await load_access(app_engine, tenant_id=tenant.id, user_id=user.id, recheck=DAY)
    assert access.state is AccessState.OK and access.state.close_code is None
    expected = {p.value for role in (SystemRole.VIEWER, SystemRole.BD_ANALYST, SystemRole.AUDITOR)
                for p in SYSTEM_ROLES[role]}
    assert access.grants.tenant_wide == expected  # the expired Tenant Admin assignment grants nothing
    assert access.valid_until == soon
    assert not access.stale(soon - timedelta(seconds=1)) and access.stale(soon)
    assert access.key == PermissionKey.of(access.grants) and access.key.grants() == access.grants

    # Without expiring assignments, the configured re-check interval bounds it.
    plain = await make_login_user(owner_engine, tenant, roles=(SystemRole.VIEWER.value,))
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=plain.id, recheck=timedelta(seconds=30))
    assert access.valid_until == access.checked_at + timedelta(seconds=30)


async def test_a_session_is_checked_without_being_touched(app_engine: AsyncEngine, owner_engine: AsyncEngine) -> None:
    tenant = await create_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant)
    now = await _db_now(app_engine)
    session_id = await _session(app_engine, tenant, user.id, now)

    access = await load_access(app_engine, tenant_id=tenant.id, user_id=user.id, session_id=session_id, recheck=DAY)
    assert access.state is AccessState.OK
    assert access.valid_until == now + timedelta(minutes=15)  # the idle deadline (default policy)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        touched = await conn.scalar(
            text("SELECT last_activity_at FROM user_sessions WHERE id = :s"), {"s": session_id}
        )
    assert touched == now  # a subscription is not session activity

    # Idle past the deadline: ended, though nothing was written.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text("UPDATE user_sessions SET last_activity_at = :t WHERE id = :s"),
            {"t": now - timedelta(minutes=16), "s": session_id},
        )
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=user.id, session_id=session_id)
    assert access.state is AccessState.SESSION_ENDED and access.state.close_code == 4401

    other = await _session(app_engine, tenant, user.id, now)
    async with app_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await terminate_session(conn, other, TerminationReason.REVOKED, now)
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=user.id, session_id=other)
    assert access.state is AccessState.SESSION_ENDED
    # Someone else's session id is not the caller's.
    stranger = await make_login_user(owner_engine, tenant)
    fresh = await _session(app_engine, tenant, user.id, await _db_now(app_engine))
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=stranger.id, session_id=fresh)
    assert access.state is AccessState.SESSION_ENDED


async def test_deactivated_users_and_tenants_and_revoked_keys(
    app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    tenant = await create_tenant(owner_engine)
    user = await make_login_user(owner_engine, tenant, is_active=False)
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=user.id)
    assert access.state is AccessState.USER_DEACTIVATED and access.state.close_code == 4403
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=tenant.system_user_id)
    assert access.state is AccessState.USER_DEACTIVATED  # the tenant's system user never subscribes

    now = await _db_now(app_engine)
    key_id = uuid.uuid4()
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text(
                "INSERT INTO api_keys (id, tenant_id, name, key_prefix, key_hash, role_id, expires_at, created_by)"
                " SELECT :k, :t, 'live', 'gwm_live', :h, id, :exp, :by FROM roles WHERE tenant_id = :t AND name = :r"
            ),
            {"k": key_id, "t": tenant.id, "h": uuid.uuid4().hex + uuid.uuid4().hex, "exp": now + timedelta(hours=1),
             "by": tenant.system_user_id, "r": SystemRole.VIEWER.value},
        )
    access = await load_access(
        app_engine, tenant_id=tenant.id, user_id=tenant.system_user_id, api_key_id=key_id, recheck=DAY
    )
    assert access.state is AccessState.OK
    assert access.grants.tenant_wide == {p.value for p in SYSTEM_ROLES[SystemRole.VIEWER]}
    assert access.valid_until == now + timedelta(hours=1)  # the key's expiry
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE id = :k"), {"k": key_id})
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=tenant.system_user_id, api_key_id=key_id)
    assert access.state is AccessState.API_KEY_REVOKED and access.state.close_code == 4401

    active = await make_login_user(owner_engine, tenant)
    async with system_unit(owner_engine, TEST_AUDIT_CHAIN, tenant.id, process="tests.live") as uow:
        uow.assign(await uow.lock(Tenant, tenant.id), {"is_active": False})
    access = await load_access(app_engine, tenant_id=tenant.id, user_id=active.id)
    assert access.state is AccessState.TENANT_DEACTIVATED and access.state.close_code == 4403
