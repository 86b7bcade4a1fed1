"""Reads behind `viewer` and the identity types.

Every statement runs in a transaction scoped to the principal's tenant (row-level security) and
also filters by tenant itself. Only non-secret columns are ever selected: password hashes, TOTP
secrets and token or key hashes are never loaded here, so they cannot leak into a response.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

import models
from auth.api_keys import ApiKeyRecord, get_api_key, list_api_keys
from auth.policy import load_policy
from auth.principal import Principal, PrincipalKind
from auth.service import AuthService
from models.db import RequestConnection, set_tenant
from resolvers.common.loaders import SECRET_COLUMNS

__all__ = [
    "ROLE_COLUMNS",
    "SESSION_COLUMNS",
    "USER_COLUMNS",
    "active_sessions",
    "api_keys",
    "caller_api_key",
    "role_assignments",
    "user",
]

# Every column but the stored secrets: the User node's relation fields read foreign keys from the row.
USER_COLUMNS = ", ".join(
    f"u.{c.name}" for c in models.User.__table__.c if ("users", c.name) not in SECRET_COLUMNS
)
# Every column of roles: the GraphQL Role node reads its relations' keys from the row.
ROLE_COLUMNS = "r.*"
SESSION_COLUMNS = (
    "s.id, s.user_id, s.created_at, s.last_activity_at, s.expires_at, host(s.ip_address) AS ip_address,"
    " s.user_agent, s.is_active, s.terminated_at, s.termination_reason, s.mfa_verified"
)


async def user(service: AuthService, principal: Principal, user_id: uuid.UUID) -> Any | None:
    """A user of the caller's tenant (non-secret columns), or None."""
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        return (
            await conn.execute(
                text(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = :u AND u.tenant_id = :t"),  # noqa: S608
                {"u": user_id, "t": principal.tenant_id},
            )
        ).first()


async def role_assignments(db: RequestConnection, principal: Principal) -> list[Any]:
    """The roles the caller acts with now: its unexpired assignments, or an API key's one role.

    Rows carry the role's columns plus `user_role_id` (the assignment's id; NULL for a key),
    `opportunity_project_id` (NULL: tenant-wide) and `expires_at` (of the assignment, or of the
    key). Expiry is judged like `load_grants` does. Read on the operation's connection (`db`), in the
    snapshot of its other reads.
    """
    if principal.kind is PrincipalKind.API_KEY:
        query = (
            f"SELECT {ROLE_COLUMNS}, NULL::uuid AS user_role_id,"  # noqa: S608
            " NULL::uuid AS opportunity_project_id, k.expires_at"
            " FROM api_keys k JOIN roles r ON r.id = k.role_id"
            " WHERE k.id = :k AND k.tenant_id = :t"
        )
        params: dict[str, Any] = {"k": principal.api_key_id, "t": principal.tenant_id}
    else:
        query = (
            f"SELECT {ROLE_COLUMNS}, ur.id AS user_role_id, ur.opportunity_project_id, ur.expires_at"  # noqa: S608
            " FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
            " WHERE ur.user_id = :u AND ur.tenant_id = :t"
            " AND (ur.expires_at IS NULL OR ur.expires_at > now())"
            " ORDER BY r.name, ur.opportunity_project_id NULLS FIRST"
        )
        params = {"u": principal.user_id, "t": principal.tenant_id}
    return list((await db.execute(text(query), params)).all())


async def active_sessions(db: RequestConnection, service: AuthService, principal: Principal) -> list[Any]:
    """The caller's sessions that still work: not ended, not past their absolute or idle timeout.

    An API key has no sessions. The idle timeout is the caller's own (shorter for administrators).
    Read on the operation's connection (`db`), in the snapshot of its other reads.
    """
    if principal.kind is PrincipalKind.API_KEY:
        return []
    now = service.now()
    policy = await load_policy(db, principal.tenant_id)  # type: ignore[arg-type]  # any executor works
    rows = await db.execute(
        text(
            f"SELECT {SESSION_COLUMNS} FROM user_sessions s"  # noqa: S608
            " WHERE s.user_id = :u AND s.tenant_id = :t AND s.is_active AND s.terminated_at IS NULL"
            " AND (s.expires_at IS NULL OR s.expires_at > :now) AND s.last_activity_at > :idle_since"
            " ORDER BY s.created_at DESC, s.id"
        ),
        {
            "u": principal.user_id,
            "t": principal.tenant_id,
            "now": now,
            "idle_since": now - policy.idle_timeout(admin=principal.grants.is_admin),
        },
    )
    return list(rows.all())


async def api_keys(
    service: AuthService, principal: Principal, *, include_revoked: bool
) -> list[ApiKeyRecord]:
    """The tenant's keys, newest first (revoked ones only when asked)."""
    return await list_api_keys(service, principal, include_revoked=include_revoked)


async def caller_api_key(service: AuthService, principal: Principal) -> ApiKeyRecord | None:
    """The key the caller authenticated with, if it is one."""
    if principal.api_key_id is None:
        return None
    return await get_api_key(service, principal, principal.api_key_id)
