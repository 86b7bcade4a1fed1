"""Single sign-on accounts: which user an external identity (SAML or OIDC) signs in as.

Shared by the SAML ACS (auth/routes_saml.py) and OIDC bearer tokens (auth/oidc_login.py), once the
assertion or token has been verified. `resolve_user` runs inside the caller's transaction (tenant
set) and decides, in this order:

1. Match: `user_identities (provider, issuer, subject)`. This is the only way an identity finds
   its user once linked. The user must be active and not the tenant's system user.
2. Link by email: only when the tenant allows it (`security.sso_allow_email_linking`), the email
   is verified (OIDC `email_verified: true`; a SAML assertion from the tenant's pinned IdP counts
   as verified) and a user with that email (case-insensitive) exists, is active, is not the system
   user and has no other identity at the same issuer (an IdP re-assigning an address must not
   take over an account that is already linked).
3. Just-in-time provisioning: only when the tenant enables it (`security.sso_jit_provisioning`),
   with a verified email no user has yet, while the tenant's active users stay within
   `tenants.max_users` (checked under a row lock on the tenant, so concurrent sign-ins cannot
   overshoot), with the role `security.sso_jit_role`, which must exist and must not carry any
   `*:admin` permission: provisioning never creates an administrator.
4. Otherwise: refused.

Every refusal raises `SsoRefused` with a stable `SsoReason` (for audit rows; users see one generic
answer). `resolve_user` runs in the caller's unit of work (auth/audited.py): a provisioned user and
its role assignment are written through its session, so the flush hook records them
(`auth.user.provisioned`, `auth.role_assignment.granted`, with the tenant's system user as the
actor) with their history; a link (user_identities, outside the hook: decision W11) gets its event
row (`auth.saml.identity_linked` / `auth.oidc.identity_linked`) in the same transaction. A refusal
raised after a write (MFA not asserted) rolls the write back with its evidence.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, inet
from auth.audited import route_unit
from auth.exceptions import AuthError
from auth.policy import TenantSecurityPolicy, active_seats
from auth.principal import load_grants
from auth.sessions import create_session
from models.credentials import IdentityProvider
from models.enums import RiskLevel
from models.errors import Conflict
from models.identity import User, UserRole
from models.tenancy import system_user_id
from models.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from auth.service import AuthService

__all__ = [
    "ExternalIdentity",
    "Resolution",
    "SsoReason",
    "SsoRefused",
    "SsoUser",
    "normalize_email",
    "resolve_user",
    "start_sso_session",
]

# Column widths (user_identities.issuer/subject, users.email, users.first_name/last_name).
_MAX_ISSUER: Final = 500
_MAX_SUBJECT: Final = 255
_MAX_EMAIL: Final = 255
_MAX_NAME: Final = 100
# Identity use (and the user's last_login_at, which the inactivity job reads) is written at most
# this often per identity: OIDC resolves it on every request.
_TOUCH_INTERVAL: Final = timedelta(minutes=1)


class SsoReason(StrEnum):
    """Why an external identity was not let in. Stable strings for audit rows."""

    NOT_LINKED = "NOT_LINKED"  # no linked identity, no linkable user, provisioning off
    USER_INACTIVE = "USER_INACTIVE"  # the user is deactivated or is the tenant's system user
    IDENTITY_CONFLICT = "IDENTITY_CONFLICT"  # the email's user already has another identity at this issuer
    EMAIL_NOT_VERIFIED = "EMAIL_NOT_VERIFIED"  # linking or provisioning needs a verified email
    EMAIL_IN_USE = "EMAIL_IN_USE"  # provisioning: a user has this email and linking is not allowed
    NO_EMAIL = "NO_EMAIL"  # provisioning: the identity carries no usable email
    MAX_USERS = "MAX_USERS"  # provisioning: the tenant has max_users active users already
    JIT_ROLE = "JIT_ROLE"  # provisioning: sso_jit_role is missing or grants administration
    TRANSIENT_NAME_ID = "TRANSIENT_NAME_ID"  # SAML transient NameID: names no one beyond one session
    BAD_IDENTITY = "BAD_IDENTITY"  # issuer or subject empty or longer than we store
    MFA_NOT_ASSERTED = "MFA_NOT_ASSERTED"  # MFA is required and the IdP did not assert it


class SsoRefused(AuthError):
    """An external identity may not sign in; `reason_code` is for audit rows only."""

    def __init__(self, reason: SsoReason, user_id: uuid.UUID | None = None) -> None:
        super().__init__(str(reason))
        self.reason_code = str(reason)
        self.user_id = user_id


class Resolution(StrEnum):
    EXISTING = "existing"  # matched through user_identities
    LINKED = "linked"  # linked now to an existing user by email
    PROVISIONED = "provisioned"  # created now (just-in-time)


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """A verified identity from a tenant's IdP."""

    provider: IdentityProvider
    issuer: str  # SAML: the IdP entity id; OIDC: `iss`
    subject: str  # SAML: the NameID; OIDC: `sub`
    email: str | None = None
    email_verified: bool = False
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True, slots=True)
class SsoUser:
    user_id: uuid.UUID
    identity_id: uuid.UUID
    resolution: Resolution
    mfa_enabled: bool
    role: str | None = None  # the role given on provisioning


def normalize_email(value: object) -> str | None:
    """A plausible email address (trimmed), or None. Case is kept; matching ignores it."""
    if not isinstance(value, str):
        return None
    email = value.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or len(email) > _MAX_EMAIL or any(c.isspace() for c in email):
        return None
    return email


_USER_COLUMNS = "u.id, u.is_active, u.is_system, u.mfa_enabled"


async def resolve_user(
    uow: UnitOfWork,
    policy: TenantSecurityPolicy,
    identity: ExternalIdentity,
    now: datetime,
) -> SsoUser:
    """The user `identity` signs in as (see the module docstring); raises SsoRefused.

    Runs in the caller's unit of work, whose tenant must be `policy.tenant_id`.
    """
    if (
        not identity.issuer
        or not identity.subject
        or len(identity.issuer) > _MAX_ISSUER
        or len(identity.subject) > _MAX_SUBJECT
    ):
        raise SsoRefused(SsoReason.BAD_IDENTITY)
    matched = await _match(uow, policy.tenant_id, identity, now)
    if matched is not None:
        return matched
    email = normalize_email(identity.email)
    if email is not None and policy.sso_allow_email_linking:
        linked = await _link_by_email(uow, policy.tenant_id, identity, email, now)
        if linked is not None:
            return linked
    if not policy.sso_jit_provisioning:
        raise SsoRefused(SsoReason.NOT_LINKED)
    if email is None:
        raise SsoRefused(SsoReason.NO_EMAIL)
    if not identity.email_verified:
        # The email becomes the user's unique sign-in key: an unverified one could squat an address.
        raise SsoRefused(SsoReason.EMAIL_NOT_VERIFIED)
    return await _provision(uow, policy, identity, email, now)


async def _match(
    uow: UnitOfWork, tenant_id: uuid.UUID, identity: ExternalIdentity, now: datetime
) -> SsoUser | None:
    conn = uow.connection
    row = (
        await conn.execute(
            text(
                f"SELECT ui.id AS identity_id, {_USER_COLUMNS} FROM user_identities ui"  # noqa: S608
                " JOIN users u ON u.tenant_id = ui.tenant_id AND u.id = ui.user_id"
                " WHERE ui.tenant_id = :t AND ui.provider = :p AND ui.issuer = :i AND ui.subject = :s"
            ),
            {"t": tenant_id, "p": identity.provider.value, "i": identity.issuer, "s": identity.subject},
        )
    ).first()
    if row is None:
        return None
    _require_usable(row)
    touched = await conn.scalar(
        text(
            "UPDATE user_identities SET last_used_at = :now WHERE id = :id"
            " AND (last_used_at IS NULL OR last_used_at <= :before) RETURNING id"
        ),
        {"id": row.identity_id, "now": now, "before": now - _TOUCH_INTERVAL},
    )
    if touched is not None:
        await _record_sign_in(uow, row.id, now)
    return SsoUser(
        user_id=row.id,
        identity_id=row.identity_id,
        resolution=Resolution.EXISTING,
        mfa_enabled=row.mfa_enabled,
    )


async def _link_by_email(
    uow: UnitOfWork, tenant_id: uuid.UUID, identity: ExternalIdentity, email: str, now: datetime
) -> SsoUser | None:
    conn = uow.connection
    # Locked so that two identities cannot both pass the "no other identity" check for one user.
    row = (
        await conn.execute(
            text(
                f"SELECT {_USER_COLUMNS} FROM users u"  # noqa: S608
                " WHERE u.tenant_id = :t AND lower(u.email) = lower(:e) FOR NO KEY UPDATE"
            ),
            {"t": tenant_id, "e": email},
        )
    ).first()
    if row is None:
        return None
    if not identity.email_verified:
        raise SsoRefused(SsoReason.EMAIL_NOT_VERIFIED, row.id)
    _require_usable(row)
    other = await conn.scalar(
        text(
            "SELECT id FROM user_identities WHERE tenant_id = :t AND user_id = :u AND provider = :p"
            " AND issuer = :i LIMIT 1"
        ),
        {"t": tenant_id, "u": row.id, "p": identity.provider.value, "i": identity.issuer},
    )
    if other is not None:
        raise SsoRefused(SsoReason.IDENTITY_CONFLICT, row.id)
    identity_id = await _insert_identity(conn, tenant_id, row.id, identity, now)
    if identity_id is None:  # the same identity was linked concurrently: it is a match now
        return await _match(uow, tenant_id, identity, now)
    await _record_sign_in(uow, row.id, now)
    uow.set_actor(row.id)
    uow.record_event(
        AuthEvent.SAML_IDENTITY_LINKED
        if identity.provider is IdentityProvider.SAML
        else AuthEvent.OIDC_IDENTITY_LINKED,
        entity_type="user",
        entity_id=row.id,
        risk=RiskLevel.MEDIUM,
        description=f"{identity.provider.value} identity linked to an existing user by verified email",
        details={"provider": identity.provider.value, "issuer": identity.issuer, "subject": identity.subject},
    )
    return SsoUser(
        user_id=row.id, identity_id=identity_id, resolution=Resolution.LINKED, mfa_enabled=row.mfa_enabled
    )


async def _provision(
    uow: UnitOfWork, policy: TenantSecurityPolicy, identity: ExternalIdentity, email: str, now: datetime
) -> SsoUser:
    conn = uow.connection
    tenant_id = policy.tenant_id
    # One provisioning at a time per tenant, so the max_users count below stays true until commit.
    # NO KEY UPDATE does not block the foreign-key checks of ordinary inserts (KEY SHARE).
    max_users = await conn.scalar(
        text("SELECT max_users FROM tenants WHERE id = :t FOR NO KEY UPDATE"), {"t": tenant_id}
    )
    # A concurrent sign-in of the same identity may have provisioned it while we waited for the lock.
    matched = await _match(uow, tenant_id, identity, now)
    if matched is not None:
        return matched
    taken = await conn.scalar(
        text("SELECT id FROM users WHERE tenant_id = :t AND lower(email) = lower(:e)"),
        {"t": tenant_id, "e": email},
    )
    if taken is not None:
        raise SsoRefused(SsoReason.EMAIL_IN_USE, taken)
    if max_users is None or await active_seats(conn, tenant_id) >= int(max_users):
        raise SsoRefused(SsoReason.MAX_USERS)
    role = (
        await conn.execute(
            text("SELECT id, permissions FROM roles WHERE tenant_id = :t AND name = :r"),
            {"t": tenant_id, "r": policy.sso_jit_role},
        )
    ).first()
    if role is None or _grants_administration(role.permissions):
        raise SsoRefused(SsoReason.JIT_ROLE)
    system_user = system_user_id(tenant_id)
    first, last = _names(identity, email)
    is_saml = identity.provider is IdentityProvider.SAML
    uow.set_actor(system_user)  # the system provisions; the person signs in
    try:
        async with uow.session.begin_nested():
            user = User(
                tenant_id=tenant_id,
                email=email,
                first_name=first,
                last_name=last,
                password_hash=None,
                is_saml_user=is_saml,
                saml_id=identity.subject if is_saml else None,
                email_verified=True,
                last_login_at=now,
                created_by=system_user,
            )
            uow.add(user)
            uow.label(
                user,
                AuthEvent.USER_PROVISIONED,
                f"user provisioned just in time from {identity.provider.value} ({identity.issuer})"
                f" with role {policy.sso_jit_role}",
            )
            await uow.flush()
            assignment = UserRole(
                tenant_id=tenant_id, user_id=user.id, role_id=role.id, assigned_at=now, assigned_by=system_user
            )
            uow.add(assignment)
            uow.label(
                assignment, AuthEvent.ROLE_GRANTED, f"role {policy.sso_jit_role!r} granted by just-in-time provisioning"
            )
            await uow.flush()
            identity_id = await _insert_identity(conn, tenant_id, user.id, identity, now)
            if identity_id is None:
                raise _ConcurrentIdentity
            user_id = user.id
    except _ConcurrentIdentity:
        # Provisioned by a concurrent sign-in of the same identity (our insert is rolled back).
        matched = await _match(uow, tenant_id, identity, now)
        if matched is None:
            raise SsoRefused(SsoReason.NOT_LINKED) from None
        return matched
    except Conflict:
        # The email was taken meanwhile by a path that does not take the tenant lock (an invitation).
        raise SsoRefused(SsoReason.EMAIL_IN_USE) from None
    return SsoUser(
        user_id=user_id,
        identity_id=identity_id,
        resolution=Resolution.PROVISIONED,
        mfa_enabled=False,
        role=policy.sso_jit_role,
    )


class _ConcurrentIdentity(Exception):
    pass


async def _insert_identity(
    conn: AsyncConnection, tenant_id: uuid.UUID, user_id: uuid.UUID, identity: ExternalIdentity, now: datetime
) -> uuid.UUID | None:
    identity_id: uuid.UUID | None = await conn.scalar(
        text(
            "INSERT INTO user_identities"
            " (tenant_id, user_id, provider, issuer, subject, last_used_at, created_at)"
            " VALUES (:t, :u, :p, :i, :s, :now, :now)"
            " ON CONFLICT (tenant_id, provider, issuer, subject) DO NOTHING RETURNING id"
        ),
        {
            "t": tenant_id,
            "u": user_id,
            "p": identity.provider.value,
            "i": identity.issuer,
            "s": identity.subject,
            "now": now,
        },
    )
    return identity_id


async def _record_sign_in(uow: UnitOfWork, user_id: uuid.UUID, now: datetime) -> None:
    # last_login_at is what the AC-2(3) inactivity job reads; OIDC users never "log in" otherwise.
    # An operational column: the hook writes no audit row for it alone.
    user = await uow.lock(User, user_id)
    if user.last_login_at is None or user.last_login_at < now:
        uow.assign(user, {"last_login_at": now})


def _require_usable(row: Any) -> None:
    if not row.is_active or row.is_system:
        raise SsoRefused(SsoReason.USER_INACTIVE, row.id)


def _grants_administration(permissions: object) -> bool:
    if not isinstance(permissions, list):
        return True  # unreadable: treat as the worst case
    return any(isinstance(p, str) and p.endswith(":admin") for p in permissions)


def _names(identity: ExternalIdentity, email: str) -> tuple[str, str]:
    first = (identity.first_name or "").strip()[:_MAX_NAME]
    last = (identity.last_name or "").strip()[:_MAX_NAME]
    if not first and not last:
        first = email.rpartition("@")[0][:_MAX_NAME]
    return first, last


async def start_sso_session(
    service: AuthService,
    tenant_id: uuid.UUID,
    policy: TenantSecurityPolicy,
    meta: RequestMeta,
    identity: ExternalIdentity,
    *,
    mfa_verified: bool,
    field: str,
) -> tuple[SsoUser, str, uuid.UUID]:
    """The end of a browser single sign-on (SAML or OpenID Connect): the user resolved (linked or
    provisioned) and a session opened, in one unit of work, so a link or a provisioning commits
    with its audit rows and the session. Returns the user, the session token and the session id;
    raises `SsoRefused` when the identity is not let in."""
    now = service.now()
    async with route_unit(service, tenant_id, meta, field=field) as uow:
        user = await resolve_user(uow, policy, identity, now)
        grants = await load_grants(uow.connection, user.user_id)
        token, session_id = await create_session(
            uow.connection,
            tenant_id=tenant_id,
            user_id=user.user_id,
            now=now,
            absolute_timeout=policy.absolute_timeout,
            mfa_verified=mfa_verified,
            ip=inet(meta.ip),
            user_agent=meta.user_agent,
            permissions_snapshot=grants.snapshot(),
        )
    return user, token, session_id
