"""A live subscriber's access, read again when it may have changed: permissions and session state.

    access = await load_access(engine, tenant_id=t, user_id=u, session_id=s, recheck=timedelta(seconds=60))
    if access.state is not AccessState.OK: close (AccessState.close_code)
    sub = bus.subscribe(t, access.key, ...)
    # later, when access.stale(now) or an AccessEvent concerns the subscriber:
    access = await load_access(...); sub.rekey(access.key)

`valid_until` is the earliest of: the earliest `expires_at` of the role assignments behind the
permissions (an expired assignment grants nothing from that instant), the session's absolute
expiry and idle deadline, the API key's expiry, and `recheck` from now (the configured interval,
LiveConfig.session_recheck_seconds). Reading it touches nothing: a subscription is not session
activity, so a session used only by a subscription idles out like any other.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.policy import load_policy
from auth.principal import Grants, grants_from
from models.db import set_tenant

__all__ = ["Access", "AccessState", "PermissionKey", "load_access"]


class AccessState(StrEnum):
    OK = "ok"
    SESSION_ENDED = "session_ended"
    USER_DEACTIVATED = "user_deactivated"
    TENANT_DEACTIVATED = "tenant_deactivated"
    API_KEY_REVOKED = "api_key_revoked"

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code for a subscriber in this state (docs/api.md, Subscriptions)."""
        return {
            AccessState.OK: None,
            AccessState.SESSION_ENDED: 4401,
            AccessState.API_KEY_REVOKED: 4401,
            AccessState.USER_DEACTIVATED: 4403,
            AccessState.TENANT_DEACTIVATED: 4403,
        }[self]


@dataclass(frozen=True, slots=True)
class PermissionKey:
    """A hashable permission set: subscribers with equal keys (and tenant) share one read."""

    tenant_wide: frozenset[str]
    per_project: frozenset[tuple[uuid.UUID, frozenset[str]]]

    @classmethod
    def of(cls, grants: Grants) -> PermissionKey:
        return cls(grants.tenant_wide, frozenset(grants.per_project.items()))

    def grants(self) -> Grants:
        return Grants(self.tenant_wide, MappingProxyType(dict(self.per_project)))


@dataclass(frozen=True, slots=True)
class Access:
    state: AccessState
    grants: Grants
    valid_until: datetime
    checked_at: datetime

    @property
    def key(self) -> PermissionKey:
        return PermissionKey.of(self.grants)

    def stale(self, now: datetime) -> bool:
        """True from `valid_until` on: read it again."""
        return now >= self.valid_until


_SESSION = text(
    "SELECT is_active, terminated_at, expires_at, last_activity_at FROM user_sessions WHERE id = :s AND user_id = :u"
)
_USER = text("SELECT is_active, is_system FROM users WHERE id = :u")
_ASSIGNMENTS = text(
    "SELECT r.permissions, ur.opportunity_project_id, ur.expires_at FROM user_roles ur"
    " JOIN roles r ON r.id = ur.role_id"
    " WHERE ur.user_id = :u AND (ur.expires_at IS NULL OR ur.expires_at > now())"
)
_API_KEY = text(
    "SELECT k.revoked_at, k.expires_at, r.permissions FROM api_keys k JOIN roles r ON r.id = k.role_id"
    " WHERE k.id = :k"
)


async def load_access(
    engine: AsyncEngine,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    session_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    recheck: timedelta = timedelta(seconds=60),
) -> Access:
    """The subscriber's state and permissions now, and until when they hold (one short read)."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            await set_tenant(conn, tenant_id)
            now: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
            until = now + recheck
            policy = await load_policy(conn, tenant_id)

            def ended(state: AccessState) -> Access:
                return Access(state, Grants(), now, now)

            if not policy.tenant_active:
                return ended(AccessState.TENANT_DEACTIVATED)
            if api_key_id is not None:
                key = (await conn.execute(_API_KEY, {"k": api_key_id})).first()
                if key is None or key.revoked_at is not None or key.expires_at <= now:
                    return ended(AccessState.API_KEY_REVOKED)
                return Access(AccessState.OK, grants_from([(key.permissions, None)]), min(until, key.expires_at), now)
            user = (await conn.execute(_USER, {"u": user_id})).first()
            if user is None or not user.is_active or user.is_system:
                return ended(AccessState.USER_DEACTIVATED)
            rows = (await conn.execute(_ASSIGNMENTS, {"u": user_id})).all()
            grants = grants_from([(row.permissions, row.opportunity_project_id) for row in rows])
            for row in rows:
                if row.expires_at is not None:
                    until = min(until, row.expires_at)
            if session_id is not None:
                session = (await conn.execute(_SESSION, {"s": session_id, "u": user_id})).first()
                if session is None or not session.is_active or session.terminated_at is not None:
                    return ended(AccessState.SESSION_ENDED)
                idle_deadline = session.last_activity_at + policy.idle_timeout(admin=grants.is_admin)
                deadlines = [idle_deadline] + ([session.expires_at] if session.expires_at is not None else [])
                if now >= min(deadlines):
                    return ended(AccessState.SESSION_ENDED)
                until = min(until, *deadlines)
            return Access(AccessState.OK, grants, until, now)
