"""Password sign-in with lockout (AC-7) and session creation.

Every refusal looks the same to the caller (`LoginFailed`): unknown tenant, unknown email, SSO-only
or system account, disabled account, locked account, wrong password. Each of them runs the KDF
exactly once, so the time taken does not tell them apart either. A locked account refuses even
the right password. Failures are counted in one UPDATE statement, so concurrent attempts cannot
lose a count, and they persist whatever the response.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, inet, record_event
from auth.audited import route_unit
from auth.exceptions import LoginFailed
from auth.policy import TenantSecurityPolicy, load_policy
from auth.principal import load_grants
from auth.service import AuthService
from auth.sessions import create_session
from models.db import set_tenant
from models.enums import RiskLevel
from models.identity import User

__all__ = ["PASSWORD_REHASHED", "LoginResult", "count_failure", "password_login", "tenant_by_subdomain"]

#: audit_logs.action_type of the change of a stored hash raised to the current iteration count.
PASSWORD_REHASHED = "auth.password.rehashed"  # noqa: S105 (an action name)


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    session_id: uuid.UUID
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    expires_at: datetime
    mfa_required: bool
    mfa_enrollment_required: bool
    password_change_required: bool


async def tenant_by_subdomain(service: AuthService, subdomain: str) -> uuid.UUID | None:
    """The active tenant a subdomain names (before any tenant is set), or None."""
    if not subdomain or len(subdomain) > 100:
        return None
    async with service.engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM gwm_tenant_by_subdomain(:s)"), {"s": subdomain})).first()
        await conn.rollback()
    if row is None or not row.is_active:
        return None
    tenant_id: uuid.UUID = row.tenant_id
    return tenant_id


async def password_login(
    service: AuthService, *, subdomain: str, email: str, password: str, meta: RequestMeta
) -> LoginResult:
    tenant_id = await tenant_by_subdomain(service, subdomain)
    if tenant_id is None:
        await service.hasher.verify_dummy(password)
        raise LoginFailed
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        policy = await load_policy(conn, tenant_id)
        user = (
            await conn.execute(
                text(
                    "SELECT id, password_hash, is_active, is_system, locked_until, mfa_enabled,"
                    " must_change_password FROM users WHERE tenant_id = :t AND lower(email) = lower(:e)"
                ),
                {"t": tenant_id, "e": email.strip()},
            )
        ).first()
    usable = user is not None and user.is_active and not user.is_system and user.password_hash is not None
    if not usable:
        await service.hasher.verify_dummy(password)
        await record_event(
            service.writer,
            tenant_id=tenant_id,
            event=AuthEvent.LOGIN_FAILED,
            meta=meta,
            user_id=user.id if user is not None else None,
            granted=False,
            risk=RiskLevel.MEDIUM,
            description="unknown account" if user is None else "account cannot sign in with a password",
            status=401,
        )
        raise LoginFailed
    assert user is not None
    locked = user.locked_until is not None and user.locked_until > now
    result = await service.hasher.verify(password, user.password_hash)
    if locked or not result.ok:
        await count_failure(service, policy, user.id, now, meta, locked=locked)
        raise LoginFailed

    # Rehash (a raised iteration count) before the transaction: the KDF must not hold a connection.
    new_hash = await service.hasher.hash(password) if result.needs_rehash else None
    # A unit of work (auth/audited.py): the sign-in state is operational (no audit row of its own),
    # a rehash is a change of the stored secret, audited as such ("[redacted]").
    async with route_unit(service, tenant_id, meta, field="/auth/login", actor=user.id) as uow:
        row = await uow.lock(User, user.id)
        values: dict[str, object] = {"locked_until": None, "last_login_at": now}
        # An MFA user is not signed in until the second factor passes, so the AC-7 count is kept
        # (auth/mfa_service.py resets it): a right password between wrong codes must not reset it.
        if not row.mfa_enabled:
            values.update(failed_login_attempts=0, failed_login_window_started_at=None)
        if new_hash is not None:
            values["password_hash"] = new_hash
            uow.label(row, PASSWORD_REHASHED, "password rehashed at sign-in with the current iteration count")
        uow.assign(row, values)
        token, session_id, expires_at = await _open_session(uow.connection, service, policy, user.id, now, meta)
    mfa_enrollment_required = policy.requires_mfa and not user.mfa_enabled
    await record_event(
        service.writer,
        tenant_id=tenant_id,
        event=AuthEvent.LOGIN_SUCCEEDED,
        meta=meta,
        user_id=user.id,
        session_id=session_id,
        description="password" + (" (rehashed)" if new_hash else ""),
        details={"mfa_pending": user.mfa_enabled, "mfa_enrollment_required": mfa_enrollment_required},
        status=200,
    )
    return LoginResult(
        token=token,
        session_id=session_id,
        user_id=user.id,
        tenant_id=tenant_id,
        expires_at=expires_at,
        mfa_required=user.mfa_enabled,
        mfa_enrollment_required=mfa_enrollment_required,
        password_change_required=user.must_change_password,
    )


async def _open_session(
    conn: AsyncConnection,
    service: AuthService,
    policy: TenantSecurityPolicy,
    user_id: uuid.UUID,
    now: datetime,
    meta: RequestMeta,
) -> tuple[str, uuid.UUID, datetime]:
    grants = await load_grants(conn, user_id)
    token, session_id = await create_session(
        conn,
        tenant_id=policy.tenant_id,
        user_id=user_id,
        now=now,
        absolute_timeout=policy.absolute_timeout,
        mfa_verified=False,
        ip=inet(meta.ip),
        user_agent=meta.user_agent,
        permissions_snapshot=grants.snapshot(),
    )
    return token, session_id, now + policy.absolute_timeout



async def count_failure(
    service: AuthService,
    policy: TenantSecurityPolicy,
    user_id: uuid.UUID,
    now: datetime,
    meta: RequestMeta,
    *,
    locked: bool,
) -> None:
    """Count a failure in the current window; the threshold-th failure locks the account."""

    # Its own unit of work, committed whatever the request does next (the count must persist). The
    # row lock makes concurrent failures take turns, so none is lost. The columns are operational:
    # the lock's event row is the evidence, in the same transaction.
    field = meta.endpoint or "/auth/login"
    async with route_unit(service, policy.tenant_id, meta, field=field, actor=user_id) as uow:
        row = await uow.lock(User, user_id)
        started = row.failed_login_window_started_at
        values: dict[str, object] = {}
        if started is None or started <= now - policy.lockout_window:
            attempts = 1
            values["failed_login_window_started_at"] = now
        else:
            attempts = row.failed_login_attempts + 1
        values["failed_login_attempts"] = attempts
        if not locked and attempts >= policy.lockout_threshold:
            locked_until = now + policy.lockout_duration
            values = {"locked_until": locked_until, "failed_login_attempts": 0, "failed_login_window_started_at": None}
            uow.record_event(
                AuthEvent.ACCOUNT_LOCKED,
                entity_type="user",
                entity_id=user_id,
                granted=False,
                risk=RiskLevel.HIGH,
                description=(
                    f"{policy.lockout_threshold} failed sign-ins within {policy.lockout_window_minutes} minutes"
                ),
                details={"locked_until": locked_until.isoformat()},
            )
        uow.assign(row, values)
    await record_event(
        service.writer,
        tenant_id=policy.tenant_id,
        event=AuthEvent.LOGIN_FAILED,
        meta=meta,
        user_id=user_id,
        granted=False,
        risk=RiskLevel.MEDIUM,
        description="account locked" if locked else f"wrong password ({attempts} in window)",
        status=401,
    )

