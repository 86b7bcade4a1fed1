"""The account lifecycle: invitations, password resets and changes, temporary passwords, unlock, deactivation.

Emailed tokens (invitation, password reset) are 256-bit random values from `auth.tokens`; only
their SHA-256 is stored (`account_tokens`), they are valid for 24 hours and work once: they are
consumed with `UPDATE ... WHERE used_at IS NULL AND expires_at > now RETURNING`, so two requests
racing with the same token cannot both succeed. The holder presents only the token, so it is
found before the tenant is known through `gwm_account_token_by_hash()`. An unknown, expired, used
or wrong-purpose token gets one answer (400 TOKEN_INVALID).

An invited user is created active with no password: password sign-in refuses a NULL hash, so the
account can do nothing until the invitation is accepted (or the tenant's SSO signs it in, which is
what an invitation into an SSO tenant is for). Keeping `is_active` true means deactivation keeps
one meaning (an administrator or the inactivity job switched the person off), and the nightly
job disables invitations never accepted after the tenant's inactivity period, like any account.

The invitation email goes out before the transaction that creates the user commits: a mail
server that refuses it leaves no user behind (502 EMAIL_FAILED), so the administrator can simply
try again. A reset email is sent after the answer (`Mailer.send_later`), so the answer to a reset
request is the same, and takes about as long, whether or not the account exists.

Administrative functions (`invite_user`, `resend_invitation`, `set_temporary_password`,
`unlock_user`, `deactivate_user`) do not check the caller's permission: the GraphQL layer's
declared permission (`user:admin`) does, before calling them. What they do check is the data:
an invitation cannot grant a role carrying permissions the inviter lacks, and a temporary password
or a deactivation cannot target a user who holds permissions the caller lacks (otherwise
`user:admin` alone would reach every other permission by taking over an administrator's account).
They act only inside the principal's tenant (row-level security and the tenant set from the
principal), and each writes an audit row. Passwords and tokens never reach an audit row or a log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, record_caller_event, record_event
from auth.exceptions import AuthRequestError
from auth.login import count_failure, tenant_by_subdomain
from auth.mailer import Mailer, MailerError, valid_address
from auth.passwords import normalize_password
from auth.permissions import Permission
from auth.policy import active_seats, load_policy
from auth.principal import Principal, PrincipalKind, load_grants
from auth.service import AuthService
from auth.sessions import TerminationReason, terminate_user_sessions
from auth.tokens import digest, new_token
from models.credentials import AccountTokenPurpose
from models.db import set_tenant
from models.enums import RiskLevel

__all__ = [
    "ACCOUNT_TOKEN_TTL",
    "INVITATION_PATH",
    "MAX_TOKEN_LENGTH",
    "RESET_PATH",
    "RESET_RESEND_INTERVAL",
    "accept_invitation",
    "change_password",
    "deactivate_user",
    "invite_user",
    "request_password_reset",
    "resend_invitation",
    "reset_password",
    "set_temporary_password",
    "unlock_user",
]

ACCOUNT_TOKEN_TTL = timedelta(hours=24)
# At most one usable reset token per user, and at most one reset email per user per interval:
# a request inside the interval sends nothing (same answer); a later one replaces the token.
RESET_RESEND_INTERVAL = timedelta(minutes=10)
INVITATION_PATH = "/auth/invitations/accept"
RESET_PATH = "/auth/password/reset"
MAX_TOKEN_LENGTH = 200
MAX_NAME_LENGTH = 100

_TOKEN_INVALID = "This link is invalid, has expired or has already been used. Ask for a new one."  # noqa: S105
_ADMIN = Permission.USER_ADMIN.value


# --- public: token holders -------------------------------------------------------------------------


async def _redeem(conn: AsyncConnection, found: Any, password_hash: str, now: datetime) -> None:
    """Spend the token and set the password it allows (also clearing any lockout), or refuse."""
    if not await _consume(conn, found.token_id, now):
        raise _invalid_token()
    updated = await conn.execute(
        text(
            "UPDATE users SET password_hash = :h, email_verified = true, password_changed_at = :now,"
            " must_change_password = false, failed_login_attempts = 0,"
            " failed_login_window_started_at = NULL, locked_until = NULL"
            " WHERE id = :u AND is_active AND NOT is_system"
        ),
        {"u": found.user_id, "h": password_hash, "now": now},
    )
    if not updated.rowcount:
        raise _invalid_token()  # deactivated meanwhile: the rollback leaves the token unused


async def accept_invitation(service: AuthService, *, token: str, password: str, meta: RequestMeta) -> None:
    """Set the invited user's first password; the invitation is used up."""
    found = await _find_token(service, token, AccountTokenPurpose.INVITATION, meta)
    account = await _account(service, found.tenant_id, found.user_id)
    if account is None or not account.is_active or account.is_system or not account.tenant_active:
        await _token_rejected(service, found, meta, "account not usable")
    # A new account has no second factor yet, so the full minimum length applies.
    await _check_policy(service, password, mfa_enabled=False, account=account, field="password")
    password_hash = await service.hasher.hash(password)
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, found.tenant_id)
        await _redeem(conn, found, password_hash, now)
        await _void_tokens(conn, found.user_id, now)
    await record_event(
        service.writer,
        tenant_id=found.tenant_id,
        event=AuthEvent.INVITATION_ACCEPTED,
        meta=meta,
        user_id=found.user_id,
        entity_type="account_token",
        entity_id=found.token_id,
        status=204,
    )


async def request_password_reset(
    service: AuthService, *, subdomain: str, email: str, meta: RequestMeta
) -> None:
    """Email a reset link if the account exists and may use a password; the caller learns nothing."""
    mailer = _mailer(service)
    tenant_id = await tenant_by_subdomain(service, subdomain)
    email = email.strip()
    if tenant_id is None or not email or len(email) > 255:
        return
    now = service.now()
    token: str | None = None
    async with service.engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        # FOR UPDATE: two requests for one user take turns, so only one token can be issued.
        user = (
            await conn.execute(
                text(
                    "SELECT u.id, u.email, u.first_name, u.is_active, u.is_system, u.is_saml_user,"
                    " u.password_hash IS NOT NULL AS has_password, t.name AS tenant_name"
                    " FROM users u JOIN tenants t ON t.id = u.tenant_id"
                    " WHERE u.tenant_id = :t AND lower(u.email) = lower(:e) FOR UPDATE OF u"
                ),
                {"t": tenant_id, "e": email},
            )
        ).first()
        if user is None:
            outcome = "no such account"
        elif not user.is_active or user.is_system or user.is_saml_user or not user.has_password:
            outcome = "account cannot use a password"
        else:
            latest = await conn.scalar(
                text(
                    "SELECT max(created_at) FROM account_tokens WHERE user_id = :u AND purpose = :p"
                    " AND used_at IS NULL AND expires_at > :now"
                ),
                {"u": user.id, "p": AccountTokenPurpose.PASSWORD_RESET.value, "now": now},
            )
            if latest is not None and now - latest < RESET_RESEND_INTERVAL:
                outcome = "a reset link was sent moments ago; nothing sent"
            else:
                # Replace: the new link is the only one that works.
                await conn.execute(
                    text(
                        "DELETE FROM account_tokens WHERE user_id = :u AND purpose = :p AND used_at IS NULL"
                    ),
                    {"u": user.id, "p": AccountTokenPurpose.PASSWORD_RESET.value},
                )
                token = await _issue_token(
                    conn, tenant_id, user.id, AccountTokenPurpose.PASSWORD_RESET, now, created_by=None
                )
                outcome = "reset link sent"
    if token is not None:
        assert user is not None
        # Delivered after the answer; a failure is logged, never shown (it would reveal the account).
        subject, body = _reset_email(service, user.first_name, user.tenant_name, token)
        try:
            if not mailer.send_later(user.email, subject, body):
                outcome = "reset link issued but not sent: too many emails pending"
        except MailerError:
            outcome = "reset link issued but not sent: the stored address cannot receive email"
    await record_event(
        service.writer,
        tenant_id=tenant_id,
        event=AuthEvent.PASSWORD_RESET_REQUESTED,
        meta=meta,
        user_id=user.id if user is not None else None,
        granted=token is not None,
        risk=RiskLevel.LOW if user is not None else RiskLevel.MEDIUM,
        description=outcome,
        status=202,
    )


async def reset_password(service: AuthService, *, token: str, password: str, meta: RequestMeta) -> None:
    """Set a new password with a reset token; clears lockout and ends every session of the user."""
    found = await _find_token(service, token, AccountTokenPurpose.PASSWORD_RESET, meta)
    account = await _account(service, found.tenant_id, found.user_id)
    if (
        account is None
        or not account.is_active
        or account.is_system
        or account.is_saml_user
        or not account.tenant_active
    ):
        await _token_rejected(service, found, meta, "account not usable")
    await _check_policy(service, password, mfa_enabled=account.mfa_enabled, account=account, field="password")
    password_hash = await service.hasher.hash(password)
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, found.tenant_id)
        await _redeem(conn, found, password_hash, now)
        ended = await terminate_user_sessions(conn, found.user_id, TerminationReason.PASSWORD_CHANGED, now)
        await _void_tokens(conn, found.user_id, now)
    await record_event(
        service.writer,
        tenant_id=found.tenant_id,
        event=AuthEvent.PASSWORD_RESET,
        meta=meta,
        user_id=found.user_id,
        risk=RiskLevel.MEDIUM,
        description="password reset by emailed link; lockout cleared",
        details={"sessions_ended": ended},
        status=204,
    )


# --- the signed-in user ------------------------------------------------------------------------


async def change_password(
    service: AuthService, principal: Principal, *, current_password: str, new_password: str, meta: RequestMeta
) -> None:
    """Change one's own password; a wrong current password counts toward lockout (AC-7)."""
    if principal.kind is PrincipalKind.API_KEY:
        raise AuthRequestError(400, "NOT_A_USER", "An API key has no password to change.")
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        policy = await load_policy(conn, principal.tenant_id)
        account = await _account_in(conn, principal.user_id)
    if account is None or account.is_system:
        raise AuthRequestError(400, "NOT_A_USER", "This account has no password to change.")
    locked = account.locked_until is not None and account.locked_until > now
    verified = await service.hasher.verify(current_password, account.password_hash)
    if locked or not verified.ok:
        await count_failure(service, policy, principal.user_id, now, meta, locked=locked)
        await record_caller_event(
            service.writer,
            principal,
            AuthEvent.PASSWORD_CHANGE_REFUSED,
            meta,
            granted=False,
            risk=RiskLevel.MEDIUM,
            description="account locked" if locked else "wrong current password",
            status=400,
        )
        raise AuthRequestError(
            400,
            "PASSWORD_INVALID",
            "The current password is incorrect, or too many attempts have locked the account.",
            field="currentPassword",
        )
    if normalize_password(new_password) == normalize_password(current_password):
        # Matters most after a temporary password: the administrator knows the old one.
        raise AuthRequestError(
            400, "PASSWORD_POLICY", "Choose a password different from your current one.", field="newPassword"
        )
    await _check_policy(
        service, new_password, mfa_enabled=account.mfa_enabled, account=account, field="newPassword"
    )
    new_hash = await service.hasher.hash(new_password)
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        updated = await conn.execute(
            text(
                "UPDATE users SET password_hash = :h, must_change_password = false,"
                " password_changed_at = :now,"
                " failed_login_attempts = 0, failed_login_window_started_at = NULL, locked_until = NULL"
                " WHERE id = :u AND password_hash = :old"
            ),
            {"u": principal.user_id, "h": new_hash, "now": now, "old": account.password_hash},
        )
        if not updated.rowcount:  # changed by another request since it was verified
            raise AuthRequestError(409, "CONFLICT", "The password was changed meanwhile; sign in again.")
        ended = await terminate_user_sessions(
            conn,
            principal.user_id,
            TerminationReason.PASSWORD_CHANGED,
            now,
            except_session=principal.session_id,
        )
        await _void_tokens(conn, principal.user_id, now)
    await record_caller_event(
        service.writer,
        principal,
        AuthEvent.PASSWORD_CHANGED,
        meta,
        description="forced change of a temporary password" if account.must_change_password else None,
        details={"other_sessions_ended": ended},
        status=204,
    )


# --- administrators (permission checked by the caller) ---------------------------------------------


async def _audit_admin(
    service: AuthService,
    principal: Principal,
    event: AuthEvent,
    meta: RequestMeta,
    user_id: uuid.UUID,
    *,
    description: str,
    risk: RiskLevel = RiskLevel.LOW,
    details: dict[str, object] | None = None,
) -> None:
    """The audit row of an administrator's action on a user (who acted, on whom, under user:admin)."""
    await record_caller_event(
        service.writer,
        principal,
        event,
        meta,
        entity_id=user_id,
        permission=_ADMIN,
        risk=risk,
        description=description,
        details=details,
    )


async def invite_user(
    service: AuthService,
    principal: Principal,
    *,
    email: str,
    first_name: str,
    last_name: str,
    role_names: Sequence[str],
    meta: RequestMeta,
) -> uuid.UUID:
    """Create a user with the named roles and email them a single-use link to choose a password."""
    mailer = _mailer(service)
    email = email.strip()
    if not valid_address(email):
        raise AuthRequestError(400, "INVALID_EMAIL", "Enter a valid email address.", field="email")
    first_name = _name(first_name, "firstName")
    last_name = _name(last_name, "lastName")
    wanted = list(dict.fromkeys(role_names))
    now = service.now()
    try:
        async with service.engine.begin() as conn:
            await set_tenant(conn, principal.tenant_id)
            # The tenant row lock serializes invitations, so two cannot both take the last seat.
            tenant = (
                await conn.execute(
                    text("SELECT name, max_users FROM tenants WHERE id = :t FOR UPDATE"),
                    {"t": principal.tenant_id},
                )
            ).one()
            roles = await _roles_by_name(conn, principal, wanted)
            taken = await conn.scalar(
                text("SELECT 1 FROM users WHERE tenant_id = :t AND lower(email) = lower(:e)"),
                {"t": principal.tenant_id, "e": email},
            )
            if taken:
                raise _email_taken()
            if await active_seats(conn, principal.tenant_id) >= tenant.max_users:
                raise AuthRequestError(
                    409,
                    "USER_LIMIT",
                    f"The organization has reached its limit of {tenant.max_users} active users.",
                )
            user_id: uuid.UUID | None = await conn.scalar(
                text(
                    "INSERT INTO users (tenant_id, email, first_name, last_name, is_active, email_verified,"
                    " created_by, created_at, updated_at, password_changed_at)"
                    " VALUES (:t, :e, :f, :l, true, false, :by, :now, :now, :now) RETURNING id"
                ),
                {
                    "t": principal.tenant_id,
                    "e": email,
                    "f": first_name,
                    "l": last_name,
                    "by": principal.user_id,
                    "now": now,
                },
            )
            assert user_id is not None
            for role_id in roles.values():
                await conn.execute(
                    text(
                        "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, assigned_at)"
                        " VALUES (:t, :u, :r, :by, :now)"
                    ),
                    {
                        "t": principal.tenant_id,
                        "u": user_id,
                        "r": role_id,
                        "by": principal.user_id,
                        "now": now,
                    },
                )
            token = await _issue_token(
                conn,
                principal.tenant_id,
                user_id,
                AccountTokenPurpose.INVITATION,
                now,
                created_by=principal.user_id,
            )
            # Sent before the commit: a refused email rolls everything back (see the module docstring).
            await _send(mailer, email, *_invitation_email(service, first_name, tenant.name, token))
    except IntegrityError as exc:  # a concurrent invitation or sign-up took the address first
        if "uq_users_tenant_id_lower_email" in str(exc.orig) or "uq_users_tenant_id_email" in str(exc.orig):
            raise _email_taken() from None
        raise
    await _audit_admin(
        service, principal, AuthEvent.INVITATION_SENT, meta, user_id,
        description=f"invited {email}",
        details={"email": email, "roles": sorted(roles)},
    )
    return user_id


async def resend_invitation(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Send a pending invitee a fresh link (the earlier ones stop working): invitations expire in 24 h."""
    mailer = _mailer(service)
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        account = await _account_in(conn, user_id, lock=True)
        if account is None:
            raise _user_not_found()
        pending = (
            account.is_active
            and not account.is_system
            and not account.is_saml_user
            and account.password_hash is None
            and account.last_login_at is None
        )
        if not pending:
            raise AuthRequestError(
                409, "NOT_PENDING", "This user has already joined or cannot be invited; nothing was sent."
            )
        await conn.execute(
            text("DELETE FROM account_tokens WHERE user_id = :u AND purpose = :p AND used_at IS NULL"),
            {"u": user_id, "p": AccountTokenPurpose.INVITATION.value},
        )
        token = await _issue_token(
            conn,
            principal.tenant_id,
            user_id,
            AccountTokenPurpose.INVITATION,
            now,
            created_by=principal.user_id,
        )
        await _send(
            mailer, account.email, *_invitation_email(service, account.first_name, account.tenant_name, token)
        )
    await _audit_admin(
        service, principal, AuthEvent.INVITATION_SENT, meta, user_id,
        description=f"invitation sent again to {account.email}",
    )


async def set_temporary_password(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, password: str, meta: RequestMeta
) -> None:
    """Give a user a password they must change at their next sign-in; ends their sessions."""
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        account = await _account_in(conn, user_id)
        if account is None:
            raise _user_not_found()
        if account.is_system:
            raise _system_user()
        if account.is_saml_user:
            # A local password would let the account bypass the tenant's SSO (and its MFA).
            raise AuthRequestError(
                400, "SSO_USER", "This user signs in through SSO and has no password to set."
            )
        await _require_outranks(conn, principal, user_id, "set a password for")
    await _check_policy(service, password, mfa_enabled=account.mfa_enabled, account=account, field="password")
    password_hash = await service.hasher.hash(password)
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        await conn.execute(
            text(
                "UPDATE users SET password_hash = :h, must_change_password = true,"
                " password_changed_at = :now,"
                " failed_login_attempts = 0, failed_login_window_started_at = NULL, locked_until = NULL"
                " WHERE id = :u AND NOT is_system"
            ),
            {"u": user_id, "h": password_hash, "now": now},
        )
        ended = await terminate_user_sessions(conn, user_id, TerminationReason.PASSWORD_CHANGED, now)
        await _void_tokens(conn, user_id, now)
    await _audit_admin(
        service, principal, AuthEvent.TEMPORARY_PASSWORD_SET, meta, user_id,
        risk=RiskLevel.MEDIUM,
        description="temporary password set; change required at next sign-in; lockout cleared",
        details={"sessions_ended": ended},
    )


async def unlock_user(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Clear a lockout (AC-7) and the failure count."""
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        account = await _account_in(conn, user_id, lock=True)
        if account is None:
            raise _user_not_found()
        if account.is_system:
            raise _system_user()
        await conn.execute(
            text(
                "UPDATE users SET locked_until = NULL, failed_login_attempts = 0,"
                " failed_login_window_started_at = NULL WHERE id = :u"
            ),
            {"u": user_id},
        )
    was_locked = account.locked_until is not None and account.locked_until > now
    await _audit_admin(
        service, principal, AuthEvent.ACCOUNT_UNLOCKED, meta, user_id,
        description="unlocked by an administrator"
        if was_locked
        else "failure count cleared (was not locked)",
        details={"was_locked": was_locked},
    )


async def deactivate_user(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Switch a user off: no sign-in of any kind, every session ended, pending links void."""
    if user_id == principal.user_id:
        raise AuthRequestError(400, "CANNOT_DEACTIVATE_SELF", "You cannot deactivate your own account.")
    now = service.now()
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        account = await _account_in(conn, user_id, lock=True)
        if account is None:
            raise _user_not_found()
        if account.is_system:
            raise _system_user()
        await _require_outranks(conn, principal, user_id, "deactivate")
        await conn.execute(text("UPDATE users SET is_active = false WHERE id = :u"), {"u": user_id})
        ended = await terminate_user_sessions(conn, user_id, TerminationReason.USER_DEACTIVATED, now)
        await _void_tokens(conn, user_id, now)
    await _audit_admin(
        service, principal, AuthEvent.USER_DEACTIVATED, meta, user_id,
        risk=RiskLevel.MEDIUM,
        description="deactivated by an administrator"
        + ("" if account.is_active else " (was already inactive)"),
        details={"sessions_ended": ended},
    )


# --- helpers ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    token_id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    purpose: str


@dataclass(frozen=True, slots=True)
class _Account:
    email: str
    first_name: str
    password_hash: str | None
    is_active: bool
    is_system: bool
    is_saml_user: bool
    mfa_enabled: bool
    must_change_password: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    tenant_name: str
    tenant_active: bool


def _invalid_token() -> AuthRequestError:
    return AuthRequestError(400, "TOKEN_INVALID", _TOKEN_INVALID, field="token")


def _email_taken() -> AuthRequestError:
    return AuthRequestError(
        409, "EMAIL_TAKEN", "A user with this email address already exists.", field="email"
    )


def _user_not_found() -> AuthRequestError:
    return AuthRequestError(404, "USER_NOT_FOUND", "No such user.", field="userId")


def _system_user() -> AuthRequestError:
    return AuthRequestError(400, "SYSTEM_USER", "The system user is not a person and cannot be changed.")


def _mailer(service: AuthService) -> Mailer:
    if service.mailer is None:
        raise AuthRequestError(
            503,
            "EMAIL_NOT_CONFIGURED",
            "Email is not configured on this server (GWM_SMTP_HOST); ask an operator.",
        )
    return service.mailer


async def _send(mailer: Mailer, to: str, subject: str, body: str) -> None:
    try:
        await mailer.send(to, subject, body)
    except MailerError as exc:
        raise AuthRequestError(
            502, "EMAIL_FAILED", "The email could not be sent; nothing was changed. Try again."
        ) from exc


def _name(value: str, field: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise AuthRequestError(
            400, "INVALID_NAME", f"Enter a name of 1 to {MAX_NAME_LENGTH} characters.", field=field
        )
    return value


async def _roles_by_name(
    conn: AsyncConnection, principal: Principal, names: list[str]
) -> dict[str, uuid.UUID]:
    """The roles' ids; each must exist and grant nothing the inviter lacks (no escalation by invitation)."""
    rows = (
        await conn.execute(text("SELECT name, id, permissions FROM roles WHERE name = ANY(:n)"), {"n": names})
    ).all()
    found: dict[str, uuid.UUID] = {r.name: r.id for r in rows}
    unknown = [n for n in names if n not in found]
    if unknown:
        raise AuthRequestError(400, "UNKNOWN_ROLE", f"No role is named {unknown[0]!r}.", field="roles")
    for row in rows:
        if not _within(set(row.permissions or ()), principal):
            raise AuthRequestError(
                403,
                "ROLE_NOT_GRANTABLE",
                f"You cannot grant {row.name!r}: it carries permissions you do not hold.",
                field="roles",
            )
    return found


def _within(permissions: set[str], principal: Principal) -> bool:
    return permissions <= principal.grants.tenant_wide


async def _require_outranks(
    conn: AsyncConnection, principal: Principal, user_id: uuid.UUID, action: str
) -> None:
    """Refuse to act on a user holding permissions the caller lacks.

    Without this, `user:admin` alone would let its holder set a tenant administrator's password
    and sign in as them (or switch every administrator off).
    """
    target = await load_grants(conn, user_id)
    held = set(target.tenant_wide).union(*target.per_project.values())
    if not _within(held, principal):
        raise AuthRequestError(
            403,
            "INSUFFICIENT_PRIVILEGE",
            f"You cannot {action} a user who holds permissions you do not hold.",
            field="userId",
        )


async def _issue_token(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    purpose: AccountTokenPurpose,
    now: datetime,
    *,
    created_by: uuid.UUID | None,
) -> str:
    token, token_hash = new_token()
    await conn.execute(
        text(
            "INSERT INTO account_tokens"
            " (tenant_id, user_id, purpose, token_hash, expires_at, created_by, created_at)"
            " VALUES (:t, :u, :p, :h, :exp, :by, :now)"
        ),
        {
            "t": tenant_id,
            "u": user_id,
            "p": purpose.value,
            "h": token_hash,
            "exp": now + ACCOUNT_TOKEN_TTL,
            "by": created_by,
            "now": now,
        },
    )
    return token


async def _find_token(
    service: AuthService, token: str, purpose: AccountTokenPurpose, meta: RequestMeta
) -> _Token:
    """The usable token `token` names, or TOKEN_INVALID (unknown, used, expired, other purpose alike)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise _invalid_token()
    async with service.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT * FROM gwm_account_token_by_hash(:h)"), {"h": digest(token)})
        ).first()
        await conn.rollback()
    if row is None:
        raise _invalid_token()  # no tenant to write an audit row to
    found = _Token(token_id=row.token_id, tenant_id=row.tenant_id, user_id=row.user_id, purpose=row.purpose)
    if row.purpose != purpose.value:
        await _token_rejected(service, found, meta, f"{row.purpose} token presented as {purpose.value}")
    if row.used_at is not None:
        await _token_rejected(service, found, meta, "already used")
    if row.expires_at <= service.now():
        await _token_rejected(service, found, meta, "expired")
    return found


async def _token_rejected(service: AuthService, found: _Token, meta: RequestMeta, reason: str) -> NoReturn:
    await record_event(
        service.writer,
        tenant_id=found.tenant_id,
        event=AuthEvent.ACCOUNT_TOKEN_REJECTED,
        meta=meta,
        user_id=found.user_id,
        entity_type="account_token",
        entity_id=found.token_id,
        granted=False,
        risk=RiskLevel.MEDIUM,
        description=f"{found.purpose}: {reason}",
        status=400,
    )
    raise _invalid_token()


async def _consume(conn: AsyncConnection, token_id: uuid.UUID, now: datetime) -> bool:
    consumed = await conn.scalar(
        text(
            "UPDATE account_tokens SET used_at = :now"
            " WHERE id = :id AND used_at IS NULL AND expires_at > :now"
            " RETURNING id"
        ),
        {"id": token_id, "now": now},
    )
    return consumed is not None


async def _void_tokens(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> None:
    """Outstanding links stop working once the password is set by other means or the account ends."""
    await conn.execute(
        text("UPDATE account_tokens SET used_at = :now WHERE user_id = :u AND used_at IS NULL"),
        {"u": user_id, "now": now},
    )


_ACCOUNT_SQL = (
    "SELECT u.email, u.first_name, u.password_hash, u.is_active, u.is_system, u.is_saml_user, u.mfa_enabled,"
    " u.must_change_password, u.locked_until, u.last_login_at,"
    " t.name AS tenant_name, t.is_active AS tenant_active"
    " FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.id = :u"
)


async def _account_in(conn: AsyncConnection, user_id: uuid.UUID, *, lock: bool = False) -> _Account | None:
    row = (
        await conn.execute(text(_ACCOUNT_SQL + (" FOR UPDATE OF u" if lock else "")), {"u": user_id})
    ).first()
    return None if row is None else _Account(**row._asdict())


async def _account(service: AuthService, tenant_id: uuid.UUID, user_id: uuid.UUID) -> _Account | None:
    async with service.engine.begin() as conn:
        await set_tenant(conn, tenant_id)
        return await _account_in(conn, user_id)


async def _check_policy(
    service: AuthService, password: str, *, mfa_enabled: bool, account: _Account, field: str
) -> None:
    """PASSWORD_POLICY with the first violation; context: the tenant's name, the email's local part."""
    user_inputs = [account.tenant_name, account.email.rsplit("@", 1)[0]]
    violations = await asyncio.to_thread(
        service.password_policy.check, password, mfa_enabled=mfa_enabled, user_inputs=user_inputs
    )
    if violations:
        raise AuthRequestError(400, "PASSWORD_POLICY", violations[0].message, field=field)


def _link(service: AuthService, path: str, token: str) -> str:
    return f"{service.public_url.rstrip('/')}{path}?token={token}"  # token_urlsafe needs no quoting


def _invitation_email(service: AuthService, first_name: str, tenant_name: str, token: str) -> tuple[str, str]:
    subject = f"You are invited to {tenant_name} on GWM CRM"
    body = (
        f"Hello {first_name},\n\n"
        f"An administrator of {tenant_name} has invited you to GWM CRM. Choose your password here:\n\n"
        f"{_link(service, INVITATION_PATH, token)}\n\n"
        f"The link works once and expires in {_hours(ACCOUNT_TOKEN_TTL)} hours. "
        "If you did not expect this invitation, ignore this message.\n"
    )
    return _one_line(subject), body


def _reset_email(service: AuthService, first_name: str, tenant_name: str, token: str) -> tuple[str, str]:
    subject = f"Reset your GWM CRM password ({tenant_name})"
    body = (
        f"Hello {first_name},\n\n"
        "Someone, hopefully you, asked to reset your GWM CRM password. Choose a new one here:\n\n"
        f"{_link(service, RESET_PATH, token)}\n\n"
        f"The link works once and expires in {_hours(ACCOUNT_TOKEN_TTL)} hours; using it signs you out "
        "everywhere. If you did not ask for this, ignore this message: your password stays as it is.\n"
    )
    return _one_line(subject), body


def _hours(delta: timedelta) -> int:
    return int(delta.total_seconds() // 3600)


def _one_line(value: str) -> str:
    """Tenant names are administrator input: never let one break out of the Subject header."""
    return " ".join(value.split())
