"""Sessions: opaque tokens, idle and absolute timeouts, termination.

The token is shown once (login response, cookie) and only its SHA-256 is stored. A session is
resolved before the tenant is known, through `gwm_session_by_token_hash()`; everything after that
runs under the session's tenant. A request resolves its session with `gwm_request_session()` as the
first statement of its read transaction instead (auth/service.py). `last_activity_at` is written at
most once a minute per session, in its own short transaction after that read transaction has ended,
so read-only requests stay read-only.

Sessions are not audited by the flush hook (docs/decisions.md W11): the functions here take the
caller's connection, and a caller that ends or changes a session writes the event row in that same
transaction (a unit of work's `connection` with `record_event`, or `auth.audited.append_event`),
never after COMMIT. Sign-in and sign-out themselves are side-effect events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.tokens import digest, new_token
from models.access_events import AccessKind, access_ended
from models.db import set_tenant

__all__ = [
    "ACTIVITY_WRITE_INTERVAL",
    "SessionRecord",
    "TerminationReason",
    "create_session",
    "find_session",
    "terminate_session",
    "terminate_user_sessions",
    "touch_session",
]

ACTIVITY_WRITE_INTERVAL = timedelta(minutes=1)


class TerminationReason(StrEnum):
    LOGOUT = "logout"
    IDLE_TIMEOUT = "idle_timeout"
    ABSOLUTE_TIMEOUT = "absolute_timeout"
    REVOKED = "revoked"
    PASSWORD_CHANGED = "password_changed"
    USER_DEACTIVATED = "user_deactivated"
    TENANT_DEACTIVATED = "tenant_deactivated"
    ROLE_EXPIRED = "role_assignment_expired"
    # Too many failed second-factor attempts locked the account (auth/mfa_service.py).
    ACCOUNT_LOCKED = "account_locked"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: uuid.UUID
    user_id: uuid.UUID
    tenant_id: uuid.UUID
    created_at: datetime
    last_activity_at: datetime
    expires_at: datetime | None
    is_active: bool
    terminated_at: datetime | None
    mfa_verified: bool


async def create_session(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    absolute_timeout: timedelta,
    mfa_verified: bool,
    ip: str | None,
    user_agent: str | None,
    permissions_snapshot: object,
) -> tuple[str, uuid.UUID]:
    """Insert a session (tenant set on `conn`); return its token (shown once) and id."""
    token, token_hash = new_token()
    session_id = await conn.scalar(
        text(
            "INSERT INTO user_sessions (tenant_id, user_id, session_token_hash, created_at, last_activity_at,"
            " expires_at, ip_address, user_agent, mfa_verified, permissions_snapshot)"
            " VALUES (:t, :u, :h, :now, :now, :exp, CAST(:ip AS inet), :ua, :mfa, CAST(:snap AS jsonb))"
            " RETURNING id"
        ),
        {
            "t": tenant_id,
            "u": user_id,
            "h": token_hash,
            "now": now,
            "exp": now + absolute_timeout,
            "ip": ip,
            "ua": user_agent,
            "mfa": mfa_verified,
            "snap": _json(permissions_snapshot),
        },
    )
    assert session_id is not None
    return token, session_id


def _json(value: object) -> str:
    import json

    return json.dumps(value)


async def find_session(conn: AsyncConnection, token: str) -> SessionRecord | None:
    """The session a presented token names, whatever its state (no tenant needed)."""
    row = (await conn.execute(text("SELECT * FROM gwm_session_by_token_hash(:h)"), {"h": digest(token)})).first()
    if row is None:
        return None
    return SessionRecord(
        session_id=row.session_id,
        user_id=row.user_id,
        tenant_id=row.tenant_id,
        created_at=row.created_at,
        last_activity_at=row.last_activity_at,
        expires_at=row.expires_at,
        is_active=row.is_active,
        terminated_at=row.terminated_at,
        mfa_verified=row.mfa_verified,
    )


async def touch_session(engine: AsyncEngine, record: SessionRecord, now: datetime) -> None:
    """Record activity, at most once a minute per session, in its own transaction."""
    if now - record.last_activity_at < ACTIVITY_WRITE_INTERVAL:
        return
    async with engine.begin() as conn:
        await set_tenant(conn, record.tenant_id)
        await conn.execute(
            text(
                "UPDATE user_sessions SET last_activity_at = :now"
                " WHERE id = :s AND last_activity_at < :now AND terminated_at IS NULL"
            ),
            {"s": record.session_id, "now": now},
        )


async def terminate_session(
    conn: AsyncConnection, session_id: uuid.UUID, reason: TerminationReason, now: datetime
) -> bool:
    """End one session (tenant set on `conn`); False if it had already ended."""
    result = await conn.execute(
        text(
            "UPDATE user_sessions SET is_active = false, terminated_at = :now, termination_reason = :r"
            " WHERE id = :s AND terminated_at IS NULL"
        ),
        {"s": session_id, "r": reason.value, "now": now},
    )
    if not result.rowcount:
        return False
    # Live subscribers of this session are closed once this transaction commits (live/listener.py).
    await access_ended(conn, AccessKind.SESSION_ENDED, session_id=session_id, reason=reason.value)
    return True


async def terminate_user_sessions(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    reason: TerminationReason,
    now: datetime,
    *,
    except_session: uuid.UUID | None = None,
) -> int:
    """End every open session of a user but `except_session`; return how many."""
    result = await conn.execute(
        text(
            "UPDATE user_sessions SET is_active = false, terminated_at = :now, termination_reason = :r"
            " WHERE user_id = :u AND terminated_at IS NULL AND (CAST(:keep AS uuid) IS NULL OR id <> :keep)"
        ),
        {"u": user_id, "r": reason.value, "now": now, "keep": except_session},
    )
    # Announced even when no session was open: a deactivated user's OIDC or API-key subscribers end too.
    deactivated = reason is TerminationReason.USER_DEACTIVATED
    kind = AccessKind.USER_DEACTIVATED if deactivated else AccessKind.USER_SESSIONS_ENDED
    await access_ended(conn, kind, user_id=user_id, except_session=except_session, reason=reason.value)
    return int(result.rowcount)
