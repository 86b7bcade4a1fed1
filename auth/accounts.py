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
try again. A reset email is sent after the answer (`Mailer.send_later`), and a reset request does
the same work on every path (`request_password_reset`), so the answer is the same, and costs the
same lookups, KDF run and queued email, whether or not the account exists.

Administrative functions (`invite_user`, `resend_invitation`, `set_temporary_password`,
`unlock_user`, `deactivate_user`) do not check the caller's permission: the GraphQL layer's
declared permission (`user:admin`) does, before calling them. What they do check is the data:
an invitation cannot grant a role carrying permissions the inviter lacks, and a temporary password
or a deactivation cannot target a user who holds permissions the caller lacks (otherwise
`user:admin` alone would reach every other permission by taking over an administrator's account).
They act only inside the principal's tenant (row-level security and the tenant set from the
principal). Passwords and tokens never reach an audit row or a log.

Every write goes through a unit of work (auth/audited.py, models/unit_of_work.py): the users and
user_roles rows through its session, so the flush hook writes their audit_logs row (carrying the
event's name, e.g. `auth.user.deactivated`) and change_history rows in the same transaction; links
and sessions (outside the hook, decision W11) on its connection, with an event row in the same
transaction when nothing audited changed (a link sent again, a lockout cleared). A password hash is
recorded only as "[redacted]". Refusals (a wrong current password, a rejected link) are
side-effect rows that persist whatever the request does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, record_caller_event, record_event
from auth.audited import caller_unit, route_unit
from auth.exceptions import AuthRequestError
from auth.login import count_failure, tenant_by_subdomain
from auth.mailer import Mailer, MailerError, valid_address
from auth.passwords import normalize_password
from auth.permissions import Permission
from auth.policy import active_seats, load_policy
from auth.principal import Principal, PrincipalKind, load_grants
from auth.roles import guard_admins, lock_tenant, refusals_audited
from auth.service import AuthService
from auth.sessions import TerminationReason, terminate_user_sessions
from auth.tokens import digest, new_token
from models.credentials import AccountTokenPurpose
from models.db import set_tenant
from models.enums import RiskLevel
from models.errors import Conflict, NotFound
from models.identity import User, UserRole
from models.unit_of_work import UnitOfWork

__all__ = [
    "ACCOUNT_TOKEN_TTL",
    "INVITATION_PATH",
    "MAX_TOKEN_LENGTH",
    "RESET_PATH",
    "RESET_RESEND_INTERVAL",
    "Invitation",
    "accept_invitation",
    "change_password",
    "deactivate_user",
    "invitation_email",
    "invitation_link",
    "invite_in",
    "invite_user",
    "invitee",
    "reactivate_user",
    "reinvite_in",
    "request_password_reset",
    "resend_invitation",
    "reset_password",
    "set_temporary_password",
    "unlock_user",
    "update_user",
]

ACCOUNT_TOKEN_TTL = timedelta(hours=24)
# At most one usable reset token per user, and at most one reset email per user per interval:
# a request inside the interval sends nothing (same answer); a later one replaces the token.
RESET_RESEND_INTERVAL = timedelta(minutes=10)
INVITATION_PATH = "/auth/invitations/accept"
RESET_PATH = "/auth/password/reset"
RESET_REQUEST_PATH = "/auth/password/reset/request"
MAX_TOKEN_LENGTH = 200
MAX_NAME_LENGTH = 100

_log = logging.getLogger(__name__)
# The tenant set for a reset request naming an unknown tenant: row-level security finds nothing in it.
_NO_TENANT = uuid.UUID(int=0)
# What clears a lockout (AC-7): the failure count, its window and the lock itself.
_UNLOCKED: dict[str, Any] = {
    "failed_login_attempts": 0,
    "failed_login_window_started_at": None,
    "locked_until": None,
}
_TOKEN_INVALID = "This link is invalid, has expired or has already been used. Ask for a new one."  # noqa: S105
_ADMIN = Permission.USER_ADMIN.value


# --- public: token holders -------------------------------------------------------------------------


async def _redeem(uow: UnitOfWork, found: Any, password_hash: str, now: datetime) -> User:
    """Spend the token and set the password it allows (also clearing any lockout), or refuse."""
    if not await _consume(uow.connection, found.token_id, now):
        raise _invalid_token()
    user = await _locked_user(uow, found.user_id)
    if user is None or not user.is_active or user.is_system:
        raise _invalid_token()  # deactivated meanwhile: the rollback leaves the token unused
    uow.assign(
        user,
        {
            "password_hash": password_hash,
            "email_verified": True,
            "password_changed_at": now,
            "must_change_password": False,
            **_UNLOCKED,
        },
    )
    return user


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
    async with route_unit(service, found.tenant_id, meta, field=meta.endpoint or "/auth", actor=found.user_id) as uow:
        user = await _redeem(uow, found, password_hash, now)
        uow.label(user, AuthEvent.INVITATION_ACCEPTED, "invitation accepted: first password set")
        await _void_tokens(uow.connection, found.user_id, now)


async def request_password_reset(
    service: AuthService, *, subdomain: str, email: str, meta: RequestMeta
) -> None:
    """Email a reset link if the account exists and may use a password; the caller learns nothing.

    Every path does the same work before answering: one KDF run, the tenant lookup, the same two
    lookups in one transaction (the account, its latest link: in no tenant when the tenant is
    unknown), and one queued email (to the account, or built and dropped). Only writes differ:
    a link issued, and the audit row, which needs a known tenant.
    """
    mailer = _mailer(service)
    email = email.strip()
    # The KDF is the floor of the answer's cost on every path, as at sign-in (and slows floods).
    await service.hasher.verify_dummy(email)
    tenant_id = await tenant_by_subdomain(service, subdomain)
    wanted = email if email and len(email) <= 255 else ""
    now = service.now()
    token, token_hash = new_token()
    outcome = "no such account"
    recipient: tuple[str, str, str] | None = None  # (address, first name, tenant name)
    uow = route_unit(service, tenant_id or _NO_TENANT, meta, field=meta.endpoint or RESET_REQUEST_PATH)
    async with uow:
        # FOR UPDATE: two requests for one user take turns, so only one token can be issued.
        user = (
            await uow.connection.execute(
                text(
                    "SELECT u.id, u.email, u.first_name, u.is_active, u.is_system, u.is_saml_user,"
                    " u.password_hash IS NOT NULL AS has_password, t.name AS tenant_name"
                    " FROM users u JOIN tenants t ON t.id = u.tenant_id"
                    " WHERE u.tenant_id = :t AND lower(u.email) = lower(:e) FOR UPDATE OF u"
                ),
                {"t": tenant_id or _NO_TENANT, "e": wanted},
            )
        ).first()
        latest = await uow.connection.scalar(
            text(
                "SELECT max(created_at) FROM account_tokens WHERE user_id = :u AND purpose = :p"
                " AND used_at IS NULL AND expires_at > :now"
            ),
            {"u": user.id if user is not None else _NO_TENANT, "p": AccountTokenPurpose.PASSWORD_RESET.value,
             "now": now},
        )
        if user is None:
            pass
        elif not user.is_active or user.is_system or user.is_saml_user or not user.has_password:
            outcome = "account cannot use a password"
        elif latest is not None and now - latest < RESET_RESEND_INTERVAL:
            outcome = "a reset link was sent moments ago; nothing sent"
        else:
            # Replace: the new link is the only one that works.
            await uow.connection.execute(
                text("DELETE FROM account_tokens WHERE user_id = :u AND purpose = :p AND used_at IS NULL"),
                {"u": user.id, "p": AccountTokenPurpose.PASSWORD_RESET.value},
            )
            await _store_token(
                uow.connection, uow.tenant_id, user.id, AccountTokenPurpose.PASSWORD_RESET, token_hash, now,
                created_by=None,
            )
            recipient = (user.email, user.first_name, user.tenant_name)
            outcome = "reset link sent"
        if tenant_id is not None:  # an unknown tenant has no audit trail to write to
            # The account concerned, when there is one: a reset request is anonymous.
            uow.set_actor(user.id if user is not None else None)
            uow.record_event(
                AuthEvent.PASSWORD_RESET_REQUESTED,
                entity_type="user",
                entity_id=user.id if user is not None else None,
                granted=recipient is not None,
                risk=RiskLevel.LOW if user is not None else RiskLevel.MEDIUM,
                description=outcome,
            )
    # Delivered after the answer; a failure is logged, never shown (it would reveal the account).
    subject, body = _reset_email(service, *(recipient[1:] if recipient else ("", "")), token)
    try:
        if not _queue_email(service, mailer, recipient[0] if recipient else None, subject, body):
            _log.warning("password reset email dropped: too many emails pending")
    except MailerError:
        _log.warning("password reset email not sent: the stored address cannot receive email")


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
    async with route_unit(service, found.tenant_id, meta, field=meta.endpoint or "/auth", actor=found.user_id) as uow:
        user = await _redeem(uow, found, password_hash, now)
        ended = await terminate_user_sessions(
            uow.connection, found.user_id, TerminationReason.PASSWORD_CHANGED, now
        )
        await _void_tokens(uow.connection, found.user_id, now)
        uow.label(user, AuthEvent.PASSWORD_RESET,
            f"password reset by emailed link; lockout cleared; {ended} session(s) ended",
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
    async with caller_unit(service, principal, meta, field=meta.endpoint or "/auth/password/change") as uow:
        user = await _locked_user(uow, principal.user_id)
        if user is None or user.password_hash != account.password_hash:
            # Changed by another request since it was verified.
            raise AuthRequestError(409, "CONFLICT", "The password was changed meanwhile; sign in again.")
        uow.assign(
            user,
            {"password_hash": new_hash, "must_change_password": False, "password_changed_at": now, **_UNLOCKED},
        )
        ended = await terminate_user_sessions(
            uow.connection,
            principal.user_id,
            TerminationReason.PASSWORD_CHANGED,
            now,
            except_session=principal.session_id,
        )
        await _void_tokens(uow.connection, principal.user_id, now)
        forced = "forced change of a temporary password" if account.must_change_password else "password changed"
        uow.label(user, AuthEvent.PASSWORD_CHANGED, f"{forced}; {ended} other session(s) ended")


# --- administrators (permission checked by the caller) ---------------------------------------------


def _admin_uow(service: AuthService, principal: Principal, meta: RequestMeta, field: str) -> UnitOfWork:
    """The unit of work of an administrator's action on a user (who acted, under user:admin);
    `field` is the GraphQL mutation field that calls it."""
    return caller_unit(service, principal, meta, field=field, permission=_ADMIN)


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
    email, first_name, last_name = invitee(email, first_name, last_name)
    wanted = list(dict.fromkeys(role_names))
    now = service.now()
    try:
        async with _admin_uow(service, principal, meta, "userInvite") as uow:
            roles = await _roles_by_name(uow.connection, principal, wanted)
            invited = await invite_in(
                uow, email=email, first_name=first_name, last_name=last_name, roles=roles, now=now
            )
            # Sent before the commit: a refused email rolls everything back (see the module docstring).
            await _send(mailer, email, *_invitation_email(service, first_name, invited.tenant_name, invited.token))
    except Conflict:  # a concurrent invitation or sign-up took the address first
        raise _email_taken() from None
    return invited.user_id


@dataclass(frozen=True, slots=True)
class Invitation:
    """A user `invite_in` created, and the single-use token of its link (only its digest is stored)."""

    user_id: uuid.UUID
    email: str
    first_name: str
    tenant_name: str
    token: str = field(repr=False)


def invitee(email: str, first_name: str, last_name: str) -> tuple[str, str, str]:
    """The invitee's email and names, trimmed and checked (INVALID_EMAIL, INVALID_NAME)."""
    email = email.strip()
    if not valid_address(email):
        raise AuthRequestError(400, "INVALID_EMAIL", "Enter a valid email address.", field="email")
    return email, _name(first_name, "firstName"), _name(last_name, "lastName")


async def invite_in(
    uow: UnitOfWork,
    *,
    email: str,
    first_name: str,
    last_name: str,
    roles: Mapping[str, uuid.UUID],
    now: datetime,
) -> Invitation:
    """Create an invited user holding `roles` (name -> id, already checked) and its invitation link,
    in the unit of work's tenant and as its actor (`userInvite`, `gwm tenant create`).

    The values come from `invitee`. The caller delivers the link before leaving the unit of work
    (a refused email then rolls everything back) or, with no mail server, shows it to the operator.
    """
    conn = uow.connection
    tenant_id = uow.tenant_id
    # The tenant row lock serializes invitations, so two cannot both take the last seat.
    tenant = (
        await conn.execute(text("SELECT name, max_users FROM tenants WHERE id = :t FOR UPDATE"), {"t": tenant_id})
    ).one()
    taken = await conn.scalar(
        text("SELECT 1 FROM users WHERE tenant_id = :t AND lower(email) = lower(:e)"),
        {"t": tenant_id, "e": email},
    )
    if taken:
        raise _email_taken()
    if await active_seats(conn, tenant_id) >= tenant.max_users:
        raise AuthRequestError(
            409,
            "USER_LIMIT",
            f"The organization has reached its limit of {tenant.max_users} active users.",
        )
    user = User(
        tenant_id=tenant_id,
        email=email,
        first_name=first_name,
        last_name=last_name,
        is_active=True,
        email_verified=False,
        created_by=uow.actor_id,
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    uow.add(user)
    uow.label(user, AuthEvent.INVITATION_SENT, f"invited {email} with {', '.join(sorted(roles))}")
    await uow.flush()
    user_id = user.id
    for name, role_id in roles.items():
        assignment = UserRole(
            tenant_id=tenant_id,
            user_id=user_id,
            role_id=role_id,
            assigned_by=uow.actor_id,
            assigned_at=now,
        )
        uow.add(assignment)
        uow.label(assignment, AuthEvent.ROLE_GRANTED, f"role {name!r} granted by invitation")
    token = await _issue_token(
        conn, tenant_id, user_id, AccountTokenPurpose.INVITATION, now, created_by=uow.actor_id
    )
    await uow.flush()
    return Invitation(user_id=user_id, email=email, first_name=first_name, tenant_name=tenant.name, token=token)


async def resend_invitation(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Send a pending invitee a fresh link (the earlier ones stop working): invitations expire in 24 h."""
    mailer = _mailer(service)
    now = service.now()
    async with _admin_uow(service, principal, meta, "userResendInvitation") as uow:
        invited = await reinvite_in(uow, user_id, now)
        await _send(
            mailer, invited.email, *_invitation_email(service, invited.first_name, invited.tenant_name, invited.token)
        )


async def reinvite_in(uow: UnitOfWork, user_id: uuid.UUID, now: datetime) -> Invitation:
    """A fresh invitation link for a user who has not joined yet (the earlier links stop working),
    in the unit of work's tenant and as its actor (`resend_invitation`, `gwm user resend-invitation`);
    USER_NOT_FOUND or NOT_PENDING otherwise. The caller delivers the link as for `invite_in`."""
    conn = uow.connection
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
        conn, uow.tenant_id, user_id, AccountTokenPurpose.INVITATION, now, created_by=uow.actor_id
    )
    # Only a link (outside the hook, decision W11) changes: its event row commits with it.
    uow.record_event(
        AuthEvent.INVITATION_SENT,
        entity_type="user",
        entity_id=user_id,
        description=f"invitation sent again to {account.email}",
    )
    return Invitation(
        user_id=user_id, email=account.email, first_name=account.first_name, tenant_name=account.tenant_name,
        token=token,
    )


async def set_temporary_password(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, password: str, meta: RequestMeta
) -> None:
    """Give a user a password they must change at their next sign-in; ends their sessions. Aimed at
    a user holding more than the caller: refused and audited (INSUFFICIENT_PRIVILEGE)."""
    async with refusals_audited(service, principal, meta, "userSetTemporaryPassword",
                                permission=Permission.USER_ADMIN, entity_type="user", entity_id=user_id):
        await _set_temporary_password(service, principal, user_id=user_id, password=password, meta=meta)


async def _set_temporary_password(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, password: str, meta: RequestMeta
) -> None:
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
    async with _admin_uow(service, principal, meta, "userSetTemporaryPassword") as uow:
        user = await _locked_user(uow, user_id)
        if user is None:
            raise _user_not_found()
        if user.is_system:
            raise _system_user()
        uow.assign(
            user,
            {"password_hash": password_hash, "must_change_password": True, "password_changed_at": now, **_UNLOCKED},
        )
        ended = await terminate_user_sessions(uow.connection, user_id, TerminationReason.PASSWORD_CHANGED, now)
        await _void_tokens(uow.connection, user_id, now)
        uow.label(user, AuthEvent.TEMPORARY_PASSWORD_SET,
            "temporary password set; change required at next sign-in; lockout cleared;"
            f" {ended} session(s) ended",
        )


async def unlock_user(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Clear a lockout (AC-7) and the failure count."""
    async with _admin_uow(service, principal, meta, "userUnlock") as uow:
        await unlock_in(uow, user_id, service.now(), by="an administrator")


async def unlock_in(uow: UnitOfWork, user_id: uuid.UUID, now: datetime, *, by: str) -> bool:
    """Clear `user_id`'s lockout and failure count in `uow`, with its event row; True if it was locked.

    The columns are operational (the hook records no row for them alone), so the event row, in the
    same transaction, is the evidence. Also `gwm user unlock`'s work (server/cli.py).
    """
    user = await _locked_user(uow, user_id)
    if user is None:
        raise _user_not_found()
    if user.is_system:
        raise _system_user()
    was_locked = user.locked_until is not None and user.locked_until > now
    uow.assign(user, _UNLOCKED)
    uow.record_event(
        AuthEvent.ACCOUNT_UNLOCKED,
        entity_type="user",
        entity_id=user_id,
        description=f"unlocked by {by}" if was_locked else f"failure count cleared by {by} (was not locked)",
        details={"was_locked": was_locked},
    )
    return was_locked


async def deactivate_user(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Switch a user off: no sign-in of any kind, every session ended, pending links void. Never
    the tenant's last active Tenant Admin or last active holder of user:admin (LAST_ADMIN); the
    refusals that are escalation attempts are audited (auth/roles.py `refusals_audited`)."""
    async with refusals_audited(service, principal, meta, "userDeactivate", permission=Permission.USER_ADMIN,
                                entity_type="user", entity_id=user_id):
        await _deactivate_user(service, principal, user_id=user_id, meta=meta)


async def _deactivate_user(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    if user_id == principal.user_id:
        raise AuthRequestError(400, "CANNOT_DEACTIVATE_SELF", "You cannot deactivate your own account.")
    now = service.now()
    async with _admin_uow(service, principal, meta, "userDeactivate") as uow:
        await lock_tenant(uow.connection, principal.tenant_id)  # who administers the tenant: in turn
        user = await _locked_user(uow, user_id)
        if user is None:
            raise _user_not_found()
        if user.is_system:
            raise _system_user()
        await _require_outranks(uow.connection, principal, user_id, "deactivate")
        await guard_admins(uow.connection, field="userId", without_user=user_id)
        changed = uow.assign(user, {"is_active": False})
        ended = await terminate_user_sessions(uow.connection, user_id, TerminationReason.USER_DEACTIVATED, now)
        await _void_tokens(uow.connection, user_id, now)
        description = f"deactivated by an administrator; {ended} session(s) ended"
        if changed:
            uow.label(user, AuthEvent.USER_DEACTIVATED, description)
        else:  # already inactive: only sessions and links (outside the hook) changed
            uow.record_event(
                AuthEvent.USER_DEACTIVATED, entity_type="user", entity_id=user_id, risk=RiskLevel.MEDIUM,
                description=description + " (was already inactive)", details={"sessions_ended": ended},
            )


async def reactivate_user(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Switch a deactivated user back on (their roles are as they were; they sign in again).

    The user takes a seat again, so `tenants.max_users` holds as for an invitation (USER_LIMIT): the
    tenant row is locked first, so reactivations and invitations take turns and cannot both take
    the last seat. A user holding more than the caller is refused (INSUFFICIENT_PRIVILEGE, audited).
    """
    async with refusals_audited(service, principal, meta, "userReactivate", permission=Permission.USER_ADMIN,
                                entity_type="user", entity_id=user_id):
        async with _admin_uow(service, principal, meta, "userReactivate") as uow:
            tenant = await lock_tenant(uow.connection, principal.tenant_id)
            user = await _locked_user(uow, user_id)
            if user is None or user.is_system:
                raise _user_not_found()
            await _require_outranks(uow.connection, principal, user_id, "reactivate")
            if user.is_active:
                raise AuthRequestError(400, "USER_ACTIVE", "The user is active already.", field="userId")
            if await active_seats(uow.connection, principal.tenant_id) >= tenant.max_users:
                raise AuthRequestError(
                    409, "USER_LIMIT", f"The organization has reached its limit of {tenant.max_users} active users.",
                )
            uow.assign(user, {"is_active": True})
            uow.label(user, AuthEvent.USER_REACTIVATED, "reactivated by an administrator")


#: The profile fields a user changes (their own) or an administrator changes (another's).
PROFILE_FIELDS = ("first_name", "last_name", "title", "phone", "avatar_url")


class NotYours(AuthRequestError):
    """Another user's profile, without user:admin: answered as a user that does not exist."""

    def __init__(self) -> None:
        super().__init__(404, "USER_NOT_FOUND", "No such user.", field="userId")


async def update_user(
    service: AuthService,
    principal: Principal,
    *,
    user_id: uuid.UUID,
    updated_at: datetime,
    changes: dict[str, Any],
    meta: RequestMeta,
    check: Any = None,
) -> None:
    """Change a user's profile (PROFILE_FIELDS only: never roles, email or security state).

    One's own profile needs no permission; another user's needs user:admin tenant-wide and that the
    caller holds everything that user holds (INSUFFICIENT_PRIVILEGE, audited). Without user:admin,
    another user's profile is answered as missing (USER_NOT_FOUND) and the attempt is audited
    (auth.access.denied). `check(uow, values, row)`: the validation to run before writing.
    """
    unknown = sorted(set(changes) - set(PROFILE_FIELDS))
    if unknown:
        raise AuthRequestError(400, "NOT_A_PROFILE_FIELD", f"{unknown[0]!r} is not a profile field.", field=unknown[0])
    own = user_id == principal.user_id
    try:
        async with refusals_audited(service, principal, meta, "userUpdate",
                                    permission=None if own else Permission.USER_ADMIN,
                                    entity_type="user", entity_id=user_id):
            async with caller_unit(service, principal, meta, field="userUpdate",
                                   permission=None if own else _ADMIN) as uow:
                user = await _locked_user(uow, user_id)
                if user is None or user.is_system:
                    raise _user_not_found()
                if not own:
                    if _ADMIN not in principal.grants.tenant_wide:
                        raise NotYours()
                    await _require_outranks(uow.connection, principal, user_id, "change the profile of")
                await uow.lock(User, user_id, updated_at=updated_at, what="user", field="updated_at")
                values = dict(changes)
                for name in ("first_name", "last_name"):
                    if name in values:
                        values[name] = _name(values[name] or "", name)
                if check is not None:
                    await check(uow, values, user)
                if uow.assign(user, values):
                    uow.label(user, AuthEvent.USER_UPDATED,
                              "own profile changed" if own else "profile changed by an administrator")
                    await uow.flush()
    except NotYours:
        await record_caller_event(
            service.writer, principal, AuthEvent.ACCESS_DENIED, meta,
            entity_type="user", entity_id=user_id, granted=False, risk=RiskLevel.MEDIUM,
            permission=_ADMIN, status=403,
            description="mutation userUpdate refused: another user's profile needs user:admin",
        )
        raise _user_not_found() from None


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


async def _locked_user(uow: UnitOfWork, user_id: uuid.UUID) -> User | None:
    """The user row, locked until the end of the unit of work, or None when it does not exist."""
    try:
        return await uow.lock(User, user_id, what="user", field="userId")
    except NotFound:
        return None


def _queue_email(service: AuthService, mailer: Mailer, to: str | None, subject: str, body: str) -> bool:
    """Schedule one delivery after the answer; with no recipient the built message is dropped the
    same way (nothing reveals whether an account exists). Counted in `service.emails_queued`."""
    service.emails_queued += 1
    if to is None:
        return True
    return mailer.send_later(to, subject, body)


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
    await _store_token(conn, tenant_id, user_id, purpose, token_hash, now, created_by=created_by)
    return token


async def _store_token(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    purpose: AccountTokenPurpose,
    token_hash: str,
    now: datetime,
    *,
    created_by: uuid.UUID | None,
) -> None:
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
    return _url(service.public_url, path, token)


def _url(public_url: str, path: str, token: str) -> str:
    return f"{public_url.rstrip('/')}{path}?token={token}"  # token_urlsafe needs no quoting


def _invitation_email(service: AuthService, first_name: str, tenant_name: str, token: str) -> tuple[str, str]:
    return invitation_email(service.public_url, first_name, tenant_name, token)


def invitation_link(public_url: str, token: str) -> str:
    """The link of an invitation token: where the invitee chooses a first password."""
    return _url(public_url, INVITATION_PATH, token)


def invitation_email(public_url: str, first_name: str, tenant_name: str, token: str) -> tuple[str, str]:
    """The invitation's subject and body; the link is `public_url` + INVITATION_PATH + `?token=`."""
    subject = f"You are invited to {tenant_name} on GWM CRM"
    body = (
        f"Hello {first_name},\n\n"
        f"An administrator of {tenant_name} has invited you to GWM CRM. Choose your password here:\n\n"
        f"{invitation_link(public_url, token)}\n\n"
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
