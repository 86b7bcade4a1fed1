"""`AuthService`: what every authentication path shares, and principal resolution.

Built once per process by the composition root (server/app.py) and reached by routes and
middleware through `request.app.state.auth`. Time comes from `clock` so that timeouts and
lockouts are decided by one source (and tests can move it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import AuthEvent, RequestMeta, record_event
from auth.audited import append_event
from auth.crypto import SecretBox
from auth.exceptions import Unauthenticated
from auth.mailer import Mailer
from auth.oidc import JwksCache
from auth.outbound import OutboundPolicy
from auth.passwords import PasswordHasher, PasswordPolicy
from auth.policy import TenantSecurityPolicy, policy_from
from auth.principal import Grants, Principal, PrincipalKind, grants_from, load_role_grants
from auth.sessions import SessionRecord, TerminationReason, find_session, terminate_session, touch_session
from auth.tokens import API_KEY_PREFIX, digest
from models.db import set_tenant
from models.enums import RiskLevel
from models.side_effects import SideEffectWriter
from models.tenancy import system_user_id

__all__ = ["AuthService", "Clock", "utcnow"]

Clock = Callable[[], datetime]
API_KEY_USE_RECORD_INTERVAL = timedelta(minutes=1)

# The caller's account flags, the tenant's policy inputs and the unexpired grants, in one round trip.
_CALLER_STATE = text(
    """
    SELECT u.id AS user_id, u.is_active, u.is_system, u.mfa_enabled, u.must_change_password,
           t.name AS tenant_name, t.fedramp_compliant, t.max_users, t.is_active AS tenant_active,
           (SELECT coalesce(jsonb_object_agg(c.config_key, c.config_value), '{}'::jsonb)
              FROM tenant_configurations c
             WHERE c.tenant_id = t.id AND c.config_key LIKE 'security.%' AND NOT c.is_encrypted) AS security,
           (SELECT coalesce(jsonb_agg(jsonb_build_array(r.permissions, ur.opportunity_project_id)), '[]'::jsonb)
              FROM user_roles ur JOIN roles r ON r.id = ur.role_id
             WHERE ur.user_id = :u AND (ur.expires_at IS NULL OR ur.expires_at > now())) AS grants
      FROM tenants t LEFT JOIN users u ON u.id = :u AND u.tenant_id = t.id
     WHERE t.id = :t
    """
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuthService:
    engine: AsyncEngine
    writer: SideEffectWriter
    hasher: PasswordHasher
    secret_box: SecretBox
    public_url: str
    session_cookie: str = "gwm_session"
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    clock: Clock = utcnow
    # Set by the composition root when configured: the email sender and the OIDC key cache.
    mailer: Mailer | None = None
    jwks: JwksCache | None = None
    # The operator's rules for every request to a URL a tenant sets (auth/outbound.py): the OIDC
    # key cache, discovery and the browser flow's token endpoint use it; tenant settings check URLs
    # with its static rules when they are saved.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    # Instrumentation, like the hasher's kdf_calls: emails the account lifecycle queued (a reset
    # request queues one on every path, whether or not the account exists).
    emails_queued: int = 0

    def now(self) -> datetime:
        return self.clock()

    # -- principal resolution -------------------------------------------------------------

    async def authenticate(self, credential: str, meta: RequestMeta) -> Principal:
        """The principal a bearer credential (session token, API key or OIDC JWT) stands for."""
        if credential.startswith(API_KEY_PREFIX):
            return await self._authenticate_api_key(credential, meta)
        if credential.count(".") == 2:
            from auth.oidc_login import authenticate_oidc

            return await authenticate_oidc(self, credential, meta)
        return await self.authenticate_session(credential, meta)

    async def authenticate_session(self, token: str, meta: RequestMeta) -> Principal:
        now = self.now()
        # One transaction: the pre-tenant lookup, then everything about the caller in its tenant.
        async with self.engine.begin() as conn:
            record = await find_session(conn, token)
            if record is None or not record.is_active or record.terminated_at is not None:
                raise Unauthenticated("INVALID_SESSION", "The session is not valid; sign in again.")
            await set_tenant(conn, record.tenant_id)
            # One statement for everything a request needs to know about its caller.
            state = (await conn.execute(_CALLER_STATE, {"u": record.user_id, "t": record.tenant_id})).one()
            user = state if state.user_id is not None else None
            policy = policy_from(
                record.tenant_id, state.tenant_name, state.fedramp_compliant, state.max_users,
                state.tenant_active, state.security,
            )
            grants = grants_from([(permissions, project) for permissions, project in state.grants])
            ended = self._session_end_reason(record, user, policy, grants, now)
            if ended is not None:
                await terminate_session(conn, record.session_id, ended, now)
                # The session's end and its event commit together (docs/decisions.md W11).
                await append_event(
                    conn, self.writer.chain, tenant_id=record.tenant_id, event=AuthEvent.SESSION_EXPIRED,
                    meta=meta, user_id=record.user_id, session_id=record.session_id, entity_type="user",
                    entity_id=record.user_id, description=f"session ended: {ended.value}",
                )
        if ended is not None:
            raise Unauthenticated("SESSION_EXPIRED", "The session has expired; sign in again.")
        assert user is not None
        await touch_session(self.engine, record, now)
        enrollment_required = policy.requires_mfa and not user.mfa_enabled
        return Principal(
            kind=PrincipalKind.SESSION,
            tenant_id=record.tenant_id,
            user_id=record.user_id,
            grants=grants,
            session_id=record.session_id,
            mfa_satisfied=record.mfa_verified or not (user.mfa_enabled or enrollment_required),
            mfa_enrollment_required=enrollment_required and not record.mfa_verified,
            password_change_required=user.must_change_password,
        )

    @staticmethod
    def _session_end_reason(
        record: SessionRecord,
        user: Row[Any] | None,
        policy: TenantSecurityPolicy,
        grants: Grants,
        now: datetime,
    ) -> TerminationReason | None:
        if user is None or not user.is_active or user.is_system:
            return TerminationReason.USER_DEACTIVATED
        if not policy.tenant_active:
            return TerminationReason.TENANT_DEACTIVATED
        if record.expires_at is not None and now >= record.expires_at:
            return TerminationReason.ABSOLUTE_TIMEOUT
        if now - record.last_activity_at >= policy.idle_timeout(admin=grants.is_admin):
            return TerminationReason.IDLE_TIMEOUT
        return None

    async def _authenticate_api_key(self, key: str, meta: RequestMeta) -> Principal:
        async with self.engine.connect() as conn:
            row = (await conn.execute(text("SELECT * FROM gwm_api_key_by_hash(:h)"), {"h": digest(key)})).first()
            await conn.rollback()
        now = self.now()
        if row is None:
            raise Unauthenticated("INVALID_API_KEY", "The API key is not valid.")
        if row.revoked_at is not None or now >= row.expires_at:
            await record_event(
                self.writer,
                tenant_id=row.tenant_id,
                event=AuthEvent.API_KEY_REJECTED,
                meta=meta,
                session_id=f"api_key:{row.api_key_id}",
                entity_type="api_key",
                entity_id=row.api_key_id,
                granted=False,
                risk=RiskLevel.MEDIUM,
                description="revoked" if row.revoked_at is not None else "expired",
            )
            raise Unauthenticated("INVALID_API_KEY", "The API key is not valid.")
        async with self.engine.begin() as conn:
            await set_tenant(conn, row.tenant_id)
            if not await conn.scalar(text("SELECT is_active FROM tenants WHERE id = :t"), {"t": row.tenant_id}):
                raise Unauthenticated("INVALID_API_KEY", "The API key is not valid.")
            grants = await load_role_grants(conn, row.role_id)
            used = await conn.scalar(
                text(
                    "UPDATE api_keys SET last_used_at = :now WHERE id = :k"
                    " AND (last_used_at IS NULL OR last_used_at <= :before) RETURNING id"
                ),
                {"k": row.api_key_id, "now": now, "before": now - API_KEY_USE_RECORD_INTERVAL},
            )
            if used is not None:  # at most one audit row a minute per key, like session activity
                # last_used_at and its event commit together (docs/decisions.md W11).
                await append_event(
                    conn, self.writer.chain, tenant_id=row.tenant_id, event=AuthEvent.API_KEY_USED, meta=meta,
                    session_id=f"api_key:{row.api_key_id}", entity_type="api_key", entity_id=row.api_key_id,
                )
        return Principal(
            kind=PrincipalKind.API_KEY,
            tenant_id=row.tenant_id,
            user_id=system_user_id(row.tenant_id),
            grants=grants,
            api_key_id=row.api_key_id,
        )
