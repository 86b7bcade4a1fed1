"""`AuthService`: what every authentication path shares, and principal resolution.

Built once per process by the composition root (server/app.py) and reached by routes and
middleware through `request.app.state.auth`. Time comes from `clock` so that timeouts and
lockouts are decided by one source (and tests can move it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import AuthEvent, RequestMeta, record_event
from auth.audited import append_event
from auth.crypto import SecretBox
from auth.exceptions import Unauthenticated
from auth.mailer import Mailer
from auth.oidc import JwksCache
from auth.outbound import OutboundPolicy
from auth.passwords import PasswordHasher, PasswordPolicy
from auth.policy import TenantSecurityPolicy, policy_from_text
from auth.principal import Grants, Principal, PrincipalKind, grants_from, grants_from_json
from auth.sessions import (
    ACTIVITY_WRITE_INTERVAL,
    SessionRecord,
    TerminationReason,
    terminate_session,
    touch_session,
)
from auth.tokens import API_KEY_PREFIX, digest
from models.db import RequestConnection, set_tenant
from models.enums import RiskLevel
from models.side_effects import SideEffectWriter
from models.tenancy import system_user_id

__all__ = ["AuthService", "Clock", "utcnow"]

Clock = Callable[[], datetime]
API_KEY_USE_RECORD_INTERVAL = timedelta(minutes=1)

# The first statement of a request's read transaction (REPEATABLE READ, READ ONLY): the caller's
# session or API key with everything the principal is built from (migration 0010), and the tenant
# setting for the rest of the transaction, so the reads that follow share the lookup's snapshot.
_REQUEST_SESSION = (
    "SELECT p.session_id, p.user_id, p.tenant_id, p.created_at, p.last_activity_at, p.expires_at, p.is_active,"
    " p.terminated_at, p.mfa_verified, p.user_found, p.user_active, p.user_is_system, p.mfa_enabled,"
    " p.must_change_password, p.tenant_name, p.fedramp_compliant, p.max_users, p.tenant_active,"
    # The grants and the security settings as text: parsed once per distinct value (grants_from_json,
    # policy_from_text), not on every request.
    " p.security::text AS security,"
    " p.grants::text AS grants, set_config('app.tenant_id', p.tenant_id::text, true) AS tenant_setting"
    " FROM gwm_request_session($1) AS p"
)
_REQUEST_API_KEY = (
    "SELECT p.*, set_config('app.tenant_id', p.tenant_id::text, true) AS tenant_setting"
    " FROM gwm_request_api_key($1) AS p"
)
# A read transaction's statements keep one generic plan per prepared statement (decision Q8): the same
# lookup, also setting `plan_cache_mode` for the rest of the transaction, with no round trip of its own.
_GENERIC_PLANS = "set_config('plan_cache_mode', 'force_generic_plan', true) AS plan_mode, "
_READ_SESSION = _REQUEST_SESSION.replace("SELECT ", "SELECT " + _GENERIC_PLANS, 1)
_READ_API_KEY = _REQUEST_API_KEY.replace("SELECT ", "SELECT " + _GENERIC_PLANS, 1)


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
        principal, db = await self.authenticate_request(credential, meta)
        if db is not None:
            await db.close()
        return principal

    async def authenticate_request(
        self, credential: str, meta: RequestMeta, *, write: bool = False
    ) -> tuple[Principal, RequestConnection | None]:
        """The principal a bearer credential stands for, with the read transaction it was resolved in.

        A session token or an API key is resolved by the first statement of a REPEATABLE READ READ
        ONLY transaction (BEGIN, that statement), which also sets the tenant: the connection comes
        back open for the request's reads, and the caller closes it. An OIDC JWT is verified as
        before and comes without one. Writes the check needs run in transactions of their own: an
        ended session's termination before refusing it, the once-a-minute activity records after
        the read connection is closed.

        `write=True` (a mutation): the transaction is begun READ COMMITTED and read-write instead, for
        the mutation's first unit of work to take over (models/db.py `RequestConnection.detach`): the
        lookup is the write's first statement, with no transaction of its own.
        """
        if not credential.startswith(API_KEY_PREFIX) and credential.count(".") == 2:
            from auth.oidc_login import authenticate_oidc

            return await authenticate_oidc(self, credential, meta), None
        db = RequestConnection(self.engine, None, read_only=True, write=write)
        try:
            if credential.startswith(API_KEY_PREFIX):
                principal = await self._api_key_principal(db, credential, meta)
            else:
                principal = await self._session_principal(db, credential, meta)
        except BaseException:
            await db.close()
            raise
        return principal, db

    async def authenticate_session(self, token: str, meta: RequestMeta) -> Principal:
        """The principal a session token stands for (its read transaction closed)."""
        db = RequestConnection(self.engine, None, read_only=True)
        try:
            return await self._session_principal(db, token, meta)
        finally:
            await db.close()

    async def _session_principal(self, db: RequestConnection, token: str, meta: RequestMeta) -> Principal:
        now = self.now()
        lookup = _REQUEST_SESSION if db.for_write else _READ_SESSION
        row = await db.open(lookup, digest(token), tenant_of=_live_session_tenant)
        if row is None or _live_session_tenant(row) is None:
            raise Unauthenticated("INVALID_SESSION", "The session is not valid; sign in again.")
        record = SessionRecord(
            session_id=row["session_id"],
            user_id=row["user_id"],
            tenant_id=row["tenant_id"],
            created_at=row["created_at"],
            last_activity_at=row["last_activity_at"],
            expires_at=row["expires_at"],
            is_active=row["is_active"],
            terminated_at=row["terminated_at"],
            mfa_verified=row["mfa_verified"],
        )
        policy = policy_from_text(
            record.tenant_id, row["tenant_name"], row["fedramp_compliant"], row["max_users"], row["tenant_active"],
            row["security"],
        )
        grants = grants_from_json(row["grants"])
        user_active = row["user_found"] and row["user_active"] and not row["user_is_system"]
        ended = self._session_end_reason(record, user_active, policy, grants, now)
        if ended is not None:
            await db.close()
            async with self.engine.begin() as conn:
                await set_tenant(conn, record.tenant_id)
                if await terminate_session(conn, record.session_id, ended, now):
                    # The session's end and its event commit together (docs/decisions.md W11).
                    await append_event(
                        conn, self.writer.chain, tenant_id=record.tenant_id, event=AuthEvent.SESSION_EXPIRED,
                        meta=meta, user_id=record.user_id, session_id=record.session_id, entity_type="user",
                        entity_id=record.user_id, description=f"session ended: {ended.value}",
                    )
            raise Unauthenticated("SESSION_EXPIRED", "The session has expired; sign in again.")
        if now - record.last_activity_at >= ACTIVITY_WRITE_INTERVAL:
            db.after_close(partial(touch_session, self.engine, record, now))
        enrollment_required = policy.requires_mfa and not row["mfa_enabled"]
        if not db.for_write:  # this snapshot is the grants' (compiled reads may read them there: models/db.py)
            db.grants_user = record.user_id
        return Principal(
            kind=PrincipalKind.SESSION,
            tenant_id=record.tenant_id,
            user_id=record.user_id,
            grants=grants,
            session_id=record.session_id,
            mfa_satisfied=record.mfa_verified or not (row["mfa_enabled"] or enrollment_required),
            mfa_enrollment_required=enrollment_required and not record.mfa_verified,
            password_change_required=row["must_change_password"],
        )

    @staticmethod
    def _session_end_reason(
        record: SessionRecord,
        user_active: bool,
        policy: TenantSecurityPolicy,
        grants: Grants,
        now: datetime,
    ) -> TerminationReason | None:
        if not user_active:  # deactivated, deleted, or the tenant's system user
            return TerminationReason.USER_DEACTIVATED
        if not policy.tenant_active:
            return TerminationReason.TENANT_DEACTIVATED
        if record.expires_at is not None and now >= record.expires_at:
            return TerminationReason.ABSOLUTE_TIMEOUT
        if now - record.last_activity_at >= policy.idle_timeout(admin=grants.is_admin):
            return TerminationReason.IDLE_TIMEOUT
        return None

    async def _api_key_principal(self, db: RequestConnection, key: str, meta: RequestMeta) -> Principal:
        now = self.now()

        def usable(row: asyncpg.Record) -> uuid.UUID | None:
            live = row["revoked_at"] is None and now < row["expires_at"] and row["tenant_active"]
            return row["tenant_id"] if live else None

        row = await db.open(_REQUEST_API_KEY if db.for_write else _READ_API_KEY, digest(key), tenant_of=usable)
        if row is None:
            raise Unauthenticated("INVALID_API_KEY", "The API key is not valid.")
        if row["revoked_at"] is not None or now >= row["expires_at"]:
            await record_event(
                self.writer,
                tenant_id=row["tenant_id"],
                event=AuthEvent.API_KEY_REJECTED,
                meta=meta,
                session_id=f"api_key:{row['api_key_id']}",
                entity_type="api_key",
                entity_id=row["api_key_id"],
                granted=False,
                risk=RiskLevel.MEDIUM,
                description="revoked" if row["revoked_at"] is not None else "expired",
            )
            raise Unauthenticated("INVALID_API_KEY", "The API key is not valid.")
        if not row["tenant_active"]:
            raise Unauthenticated("INVALID_API_KEY", "The API key is not valid.")
        if row["last_used_at"] is None or row["last_used_at"] <= now - API_KEY_USE_RECORD_INTERVAL:
            db.after_close(partial(self._record_api_key_use, row["tenant_id"], row["api_key_id"], now, meta))
        return Principal(
            kind=PrincipalKind.API_KEY,
            tenant_id=row["tenant_id"],
            user_id=system_user_id(row["tenant_id"]),
            grants=grants_from([(row["permissions"], None)]),
            api_key_id=row["api_key_id"],
        )

    async def _record_api_key_use(
        self, tenant_id: uuid.UUID, api_key_id: uuid.UUID, now: datetime, meta: RequestMeta
    ) -> None:
        """last_used_at, and its event, at most once a minute per key (like session activity)."""
        async with self.engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            used = await conn.scalar(
                text(
                    "UPDATE api_keys SET last_used_at = :now WHERE id = :k"
                    " AND (last_used_at IS NULL OR last_used_at <= :before) RETURNING id"
                ),
                {"k": api_key_id, "now": now, "before": now - API_KEY_USE_RECORD_INTERVAL},
            )
            if used is not None:
                # last_used_at and its event commit together (docs/decisions.md W11).
                await append_event(
                    conn, self.writer.chain, tenant_id=tenant_id, event=AuthEvent.API_KEY_USED, meta=meta,
                    session_id=f"api_key:{api_key_id}", entity_type="api_key", entity_id=api_key_id,
                )


def _live_session_tenant(row: asyncpg.Record) -> uuid.UUID | None:
    """The session's tenant while the session is open (not ended, not deactivated)."""
    live: bool = row["is_active"] and row["terminated_at"] is None
    tenant_id: uuid.UUID = row["tenant_id"]
    return tenant_id if live else None
