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
from auth.exceptions import LoginFailed
from auth.policy import TenantSecurityPolicy, load_policy
from auth.principal import load_grants
from auth.service import AuthService
from auth.sessions import create_session
from models.db import set_tenant
from models.enums import RiskLevel

__all__ = ["LoginResult", "count_failure", "password_login", "tenant_by_subdomain"]


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
    async with service.engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        # An MFA user is not signed in until the second factor passes, so the AC-7 count is kept
        # (auth/mfa_service.py resets it): a right password between wrong codes must not reset it.
        await conn.execute(
            text(
                "UPDATE users SET"
                " failed_login_attempts = CASE WHEN mfa_enabled THEN failed_login_attempts ELSE 0 END,"
                " failed_login_window_started_at ="
                " CASE WHEN mfa_enabled THEN failed_login_window_started_at ELSE NULL END,"
                " locked_until = NULL, last_login_at = :now,"
                " password_hash = coalesce(CAST(:h AS varchar), password_hash) WHERE id = :u"
            ),
            {"u": user.id, "now": now, "h": new_hash},
        )
        token, session_id, expires_at = await _open_session(conn, service, policy, user.id, now, meta)
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

    async def work(conn: AsyncConnection) -> tuple[int, datetime | None]:
        row = (
            await conn.execute(
                text(
                    """
                    UPDATE users SET
                      failed_login_window_started_at = CASE
                        WHEN failed_login_window_started_at IS NULL
                          OR failed_login_window_started_at <= CAST(:now AS timestamptz) - CAST(:window AS interval)
                        THEN CAST(:now AS timestamptz) ELSE failed_login_window_started_at END,
                      failed_login_attempts = CASE
                        WHEN failed_login_window_started_at IS NULL
                          OR failed_login_window_started_at <= CAST(:now AS timestamptz) - CAST(:window AS interval)
                        THEN 1 ELSE failed_login_attempts + 1 END
                    WHERE id = :u
                    RETURNING failed_login_attempts
                    """
                ),
                {"u": user_id, "now": now, "window": policy.lockout_window},
            )
        ).one()
        attempts = int(row.failed_login_attempts)
        locked_until = None
        if not locked and attempts >= policy.lockout_threshold:
            locked_until = now + policy.lockout_duration
            await conn.execute(
                text(
                    "UPDATE users SET locked_until = :until, failed_login_attempts = 0,"
                    " failed_login_window_started_at = NULL WHERE id = :u"
                ),
                {"u": user_id, "until": locked_until},
            )
        return attempts, locked_until

    attempts, locked_until = await service.writer.run(policy.tenant_id, work)
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
    if locked_until is not None:
        await record_event(
            service.writer,
            tenant_id=policy.tenant_id,
            event=AuthEvent.ACCOUNT_LOCKED,
            meta=meta,
            user_id=user_id,
            granted=False,
            risk=RiskLevel.HIGH,
            description=f"{policy.lockout_threshold} failed sign-ins within {policy.lockout_window_minutes} minutes",
            details={"locked_until": locked_until.isoformat()},
        )
