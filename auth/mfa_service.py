"""The second factor of a signed-in session: TOTP enrolment and verification, recovery codes.

The service behind `/auth/mfa/*` (auth/routes_mfa.py) and the GraphQL MFA mutations. Every
function takes the caller's `Principal` (a password session; anything else is refused with
NOT_A_SESSION) and writes one audit row per outcome, never with a code or a secret in it. Every
write runs in a unit of work (auth/audited.py): a change of the user row is recorded by the flush
hook (`auth.mfa.enrollment_started`, `auth.mfa.enabled`, with change_history; the sealed secret
as "[redacted]"), and the events of session and recovery-code changes (`auth.mfa.verified`,
`auth.mfa.recovery_code_used`, `auth.mfa.failed`, `auth.account.locked`) are written in the same
transaction as the change. Refusals that change nothing stay side-effect rows (`record_event`).

Enrolment: `start_enrollment` stores a new secret sealed with `SecretBox` (bound to the user id)
while `mfa_enabled` stays false; `confirm_enrollment` checks a code against it, turns MFA on,
replaces the recovery codes (shown once, stored as SHA-256) and marks the session verified.
Once MFA is on, enrolment is refused: otherwise a stolen session could swap the factor.

Verification: a TOTP code is accepted once. The accepted time step is written with
`UPDATE ... WHERE totp_last_step IS NULL OR totp_last_step < :step`, so of two requests racing
with the same code only one wins. A recovery code is spent the same way (`used_at IS NULL`).

TOTP is a one-time password authenticator: it stops password reuse and guessing, but a
real-time phishing proxy can relay a code. It is not phishing-resistant; tenants that need that
get it from their IdP through SSO.

Lockout (AC-7): a wrong TOTP or recovery code counts toward the same failure window as a wrong
password (`failed_login_attempts`, `failed_login_window_started_at`, `locked_until`, numbers
from the tenant's policy). The failure that reaches the threshold locks the account and ends the
failing session and every other session of the user still waiting for its second factor
(`account_locked`); sessions that already passed MFA stay, so someone holding only the password
cannot sign the real user out. While the account is locked a code is refused even when right and
the session presenting it is ended. Only a passed second factor resets the count (auth/login.py
leaves it alone for MFA users), so alternating sign-ins with guesses never gets past the limit.
A wrong code while confirming an enrolment is not counted: the secret was issued to that same
session a moment earlier, so there is nothing to guess.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, record_caller_event
from auth.audited import caller_unit
from auth.exceptions import AuthRequestError, DecryptionError
from auth.mfa import (
    generate_recovery_codes,
    hash_recovery_code,
    new_totp_secret,
    provisioning_uri,
    verify_totp,
)
from auth.policy import TenantSecurityPolicy, load_policy
from auth.principal import Principal, PrincipalKind
from auth.service import AuthService
from auth.sessions import TerminationReason
from models.access_events import AccessKind, access_ended
from models.db import set_tenant
from models.enums import RiskLevel
from models.identity import User

__all__ = [
    "ISSUER",
    "Enrollment",
    "confirm_enrollment",
    "start_enrollment",
    "totp_aad",
    "use_recovery_code",
    "verify_mfa",
]

ISSUER = "GWM CRM"
_log = logging.getLogger(__name__)

_CODE_INVALID = "The code is not valid."


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A pending TOTP enrolment: what the authenticator app needs. Both values carry the secret."""

    secret: str = field(repr=False)
    provisioning_uri: str = field(repr=False)


def totp_aad(user_id: uuid.UUID) -> bytes:
    """SecretBox associated data of a user's TOTP secret: a sealed secret opens for that user only."""
    return b"mfa-totp:" + user_id.bytes


@dataclass(frozen=True, slots=True)
class _UserState:
    email: str
    mfa_enabled: bool
    sealed_secret: str | None
    totp_last_step: int | None
    locked_until: datetime | None
    policy: TenantSecurityPolicy

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


class _SessionGone(Exception):
    """The session ended while its MFA step was being written: roll the step back."""


# -- enrolment --------------------------------------------------------------------------------


async def start_enrollment(service: AuthService, principal: Principal, meta: RequestMeta) -> Enrollment:
    """Store a new (pending) TOTP secret for the caller and return it with its otpauth:// URI."""
    await _require_session(service, principal, meta, "enrolment")
    secret = new_totp_secret()
    sealed = service.secret_box.encrypt(secret.encode("ascii"), totp_aad(principal.user_id))
    async with caller_unit(service, principal, meta, field=_field(meta, "mfaEnrollmentStart")) as uow:
        user = await uow.lock(User, principal.user_id)
        tenant_name = await uow.connection.scalar(
            text("SELECT name FROM tenants WHERE id = :t"), {"t": principal.tenant_id}
        )
        email, enabled = user.email, user.mfa_enabled
        if not enabled:
            # A pending secret is simply replaced; steps accepted under an old secret mean nothing now.
            uow.assign(user, {"mfa_secret_encrypted": sealed, "totp_last_step": None})
            uow.label(user, AuthEvent.MFA_ENROLLMENT_STARTED, "TOTP secret issued (pending)")
    if enabled:
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(
                409,
                "MFA_ALREADY_ENABLED",
                "Multi-factor authentication is already on; an administrator must reset it"
                " before you can enroll again.",
            ),
            "enrolment refused: MFA already enabled",
        )
    uri = provisioning_uri(secret, account_name=email, issuer=f"{ISSUER} ({tenant_name})")
    return Enrollment(secret=secret, provisioning_uri=uri)


async def confirm_enrollment(
    service: AuthService, principal: Principal, code: str, meta: RequestMeta
) -> list[str]:
    """Turn MFA on with a code from the pending secret; return the new recovery codes (shown once)."""
    session_id = await _require_session(service, principal, meta, "enrolment confirmation")
    now = service.now()
    state = await _load(service, principal)
    if state.mfa_enabled:
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(409, "MFA_ALREADY_ENABLED", "Multi-factor authentication is already on."),
            "confirmation refused: MFA already enabled",
        )
    if state.sealed_secret is None:
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(
                409, "MFA_ENROLLMENT_NOT_STARTED", "Start the enrolment first (POST /auth/mfa/enroll)."
            ),
            "confirmation refused: no pending enrolment",
        )
    secret = await _open(service, principal, meta, state.sealed_secret)
    step = verify_totp(secret, code, last_accepted_step=state.totp_last_step, now=now)
    if step is None:
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(400, "MFA_CODE_INVALID", _CODE_INVALID, field="code"),
            "enrolment confirmation: wrong code",
        )
    codes = generate_recovery_codes()
    done = False
    try:
        # The user row (audited: `auth.mfa.enabled`), the new recovery codes and the session's
        # verified mark commit together.
        async with caller_unit(service, principal, meta, field=_field(meta, "mfaEnrollmentConfirm")) as uow:
            user = await uow.lock(User, principal.user_id)
            # Enabled, or re-enrolled with another secret, by a concurrent request: nothing to do.
            if not user.mfa_enabled and user.mfa_secret_encrypted == state.sealed_secret:
                uow.assign(user, {"mfa_enabled": True, "totp_last_step": step})
                uow.label(user, AuthEvent.MFA_ENABLED, f"TOTP enabled; {len(codes)} recovery codes issued")
                await _replace_recovery_codes(uow.connection, principal, codes, now)
                await _mark_verified(uow.connection, principal, session_id)
                done = True
    except _SessionGone:
        await _session_gone(service, principal, meta)
    if not done:
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(
                409, "MFA_ENROLLMENT_CHANGED", "The enrolment changed meanwhile; start it again."
            ),
            "confirmation refused: enrolment changed concurrently",
        )
    return codes


async def _replace_recovery_codes(
    conn: AsyncConnection, principal: Principal, codes: list[str], now: datetime
) -> None:
    await conn.execute(text("DELETE FROM mfa_recovery_codes WHERE user_id = :u"), {"u": principal.user_id})
    await conn.execute(
        text(
            "INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash, created_at)"
            " VALUES (:t, :u, :h, :now)"
        ),
        [
            {"t": principal.tenant_id, "u": principal.user_id, "h": hash_recovery_code(c), "now": now}
            for c in codes
        ],
    )


# -- verification ------------------------------------------------------------------------------


async def verify_mfa(service: AuthService, principal: Principal, code: str, meta: RequestMeta) -> None:
    """Accept a TOTP code once and mark the session as having passed MFA; 401 MFA_CODE_INVALID otherwise."""
    session_id = await _require_session(service, principal, meta, "verification")
    now = service.now()
    state = await _load(service, principal)
    if not state.mfa_enabled or state.sealed_secret is None:
        await _not_enabled(service, principal, meta)
    assert state.sealed_secret is not None
    if state.locked(now):
        await _refuse_locked(service, principal, meta, now)
    secret = await _open(service, principal, meta, state.sealed_secret)
    step = verify_totp(secret, code, last_accepted_step=state.totp_last_step, now=now)
    accepted = False
    if step is not None:
        try:
            async with caller_unit(service, principal, meta, field=_field(meta, "/auth/mfa/verify")) as uow:
                # The user row is locked, then the step compared: of two requests with the same
                # code, the second waits, then finds totp_last_step already at that step.
                user = await uow.lock(User, principal.user_id)
                last = user.totp_last_step
                if user.mfa_enabled and (last is None or last < step) and not _locked(user.locked_until, now):
                    uow.assign(
                        user,
                        {"totp_last_step": step, "failed_login_attempts": 0, "failed_login_window_started_at": None},
                    )
                    await _mark_verified(uow.connection, principal, session_id)
                    uow.record_event(
                        AuthEvent.MFA_VERIFIED, entity_type="session", entity_id=session_id,
                        description="TOTP code accepted",
                    )
                    accepted = True
        except _SessionGone:
            await _session_gone(service, principal, meta)
    if not accepted:
        reason = "wrong code" if step is None else "code already used"
        await count_failure(service, principal, meta, state.policy, now, reason)


async def use_recovery_code(service: AuthService, principal: Principal, code: str, meta: RequestMeta) -> int:
    """Spend one recovery code in place of a TOTP code; return how many unused ones remain."""
    session_id = await _require_session(service, principal, meta, "recovery code")
    now = service.now()
    state = await _load(service, principal)
    if not state.mfa_enabled:
        await _not_enabled(service, principal, meta)
    if state.locked(now):
        await _refuse_locked(service, principal, meta, now)
    try:
        code_hash: str | None = hash_recovery_code(code)
    except ValueError:
        code_hash = None
    remaining: int | None = None
    if code_hash is not None:
        try:
            # The spent code, the reset counters, the session's verified mark and the
            # `auth.mfa.recovery_code_used` row commit together.
            async with caller_unit(service, principal, meta, field=_field(meta, "/auth/mfa/recovery")) as uow:
                conn = uow.connection
                # An 80-bit random code needs no constant-time comparison: the lookup is by its
                # SHA-256, and learning how a guess's digest compares says nothing about a valid code.
                used = await conn.scalar(
                    text(
                        "UPDATE mfa_recovery_codes SET used_at = :now"
                        " WHERE user_id = :u AND code_hash = :h AND used_at IS NULL RETURNING id"
                    ),
                    {"u": principal.user_id, "h": code_hash, "now": now},
                )
                if used is not None:
                    user = await uow.lock(User, principal.user_id)
                    uow.assign(user, {"failed_login_attempts": 0, "failed_login_window_started_at": None})
                    await _mark_verified(conn, principal, session_id)
                    left = await conn.scalar(
                        text("SELECT count(*) FROM mfa_recovery_codes WHERE user_id = :u AND used_at IS NULL"),
                        {"u": principal.user_id},
                    )
                    remaining = int(left or 0)
                    uow.record_event(
                        AuthEvent.MFA_RECOVERY_CODE_USED, entity_type="mfa_recovery_code", entity_id=used,
                        description="recovery code spent", risk=RiskLevel.MEDIUM, details={"remaining": remaining},
                    )
        except _SessionGone:
            await _session_gone(service, principal, meta)
    if remaining is None:
        await count_failure(service, principal, meta, state.policy, now, "wrong or used recovery code")
    assert remaining is not None
    return remaining


# -- shared steps -----------------------------------------------------------------------------


async def _require_session(
    service: AuthService, principal: Principal, meta: RequestMeta, what: str
) -> uuid.UUID:
    if principal.kind is not PrincipalKind.SESSION or principal.session_id is None:
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(
                400,
                "NOT_A_SESSION",
                "Multi-factor authentication belongs to password sessions;"
                " API keys and SSO tokens do not use it.",
            ),
            f"{what} refused: {principal.kind.value} credential",
        )
    assert principal.session_id is not None
    return principal.session_id


async def _load(service: AuthService, principal: Principal) -> _UserState:
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        row = (
            await conn.execute(
                text(
                    "SELECT email, mfa_enabled, mfa_secret_encrypted, totp_last_step, locked_until"
                    " FROM users WHERE id = :u"
                ),
                {"u": principal.user_id},
            )
        ).one()
        policy = await load_policy(conn, principal.tenant_id)
    return _UserState(
        email=row.email,
        mfa_enabled=row.mfa_enabled,
        sealed_secret=row.mfa_secret_encrypted,
        totp_last_step=row.totp_last_step,
        locked_until=row.locked_until,
        policy=policy,
    )


async def _open(service: AuthService, principal: Principal, meta: RequestMeta, sealed: str) -> str:
    try:
        return service.secret_box.decrypt(sealed, totp_aad(principal.user_id)).decode("ascii")
    except DecryptionError:
        # A key that is no longer configured, or a sealed value moved from another user's row.
        # Not the user's doing, so not counted as a failure; an operator must look at it.
        _log.error(
            "tenant %s user %s: stored TOTP secret failed authentication",
            principal.tenant_id,
            principal.user_id,
        )
        await _refuse(
            service,
            principal,
            meta,
            AuthRequestError(
                503,
                "MFA_UNAVAILABLE",
                "Your second factor cannot be checked right now; contact your administrator.",
            ),
            "stored TOTP secret failed authentication",
            risk=RiskLevel.HIGH,
        )


def _field(meta: RequestMeta, mutation: str) -> str:
    """What the audit rows name as the operation: the GraphQL mutation, or the /auth/mfa route."""
    endpoint = meta.endpoint
    return mutation if not endpoint or endpoint == "/graphql" else endpoint


def _locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > now


async def _mark_verified(conn: AsyncConnection, principal: Principal, session_id: uuid.UUID) -> None:
    marked = await conn.scalar(
        text(
            "UPDATE user_sessions SET mfa_verified = true"
            " WHERE id = :s AND user_id = :u AND terminated_at IS NULL RETURNING id"
        ),
        {"s": session_id, "u": principal.user_id},
    )
    if marked is None:
        raise _SessionGone


async def count_failure(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta,
    policy: TenantSecurityPolicy,
    now: datetime,
    reason: str,
) -> NoReturn:
    """Count a failed second factor in the AC-7 window; the threshold-th failure locks the account.

    Its own unit of work, committed although the request fails: the counters (operational columns
    of users: no change_history), the sessions ended and the `auth.mfa.failed` (and
    `auth.account.locked`) rows commit together.
    """
    async with caller_unit(service, principal, meta, field=_field(meta, "/auth/mfa/verify")) as uow:
        user = await uow.lock(User, principal.user_id)
        attempts: int | None = None
        locked_until: datetime | None = None
        ended = 0
        if _locked(user.locked_until, now):  # locked meanwhile (e.g. by a concurrent failure): this session ends too
            ended = await _end_pending_sessions(uow.connection, principal, now)
        else:
            # A window that started at or before `stale` is over: this failure starts a new one.
            window = user.failed_login_window_started_at
            if window is None or window <= now - policy.lockout_window:
                window, attempts = now, 1
            else:
                attempts = user.failed_login_attempts + 1
            if attempts < policy.lockout_threshold:
                uow.assign(user, {"failed_login_window_started_at": window, "failed_login_attempts": attempts})
            else:
                locked_until = now + policy.lockout_duration
                uow.assign(
                    user,
                    {"locked_until": locked_until, "failed_login_attempts": 0, "failed_login_window_started_at": None},
                )
                ended = await _end_pending_sessions(uow.connection, principal, now)
        described = f"{reason} ({attempts} in window)" if attempts is not None else f"{reason}; account locked"
        uow.record_event(
            AuthEvent.MFA_FAILED, entity_type="user", entity_id=principal.user_id, description=described,
            granted=False, risk=RiskLevel.MEDIUM,
        )
        if locked_until is not None:
            uow.record_event(
                AuthEvent.ACCOUNT_LOCKED,
                entity_type="user",
                entity_id=principal.user_id,
                description=f"{policy.lockout_threshold} failed sign-in attempts (password or second factor)"
                f" within {policy.lockout_window_minutes} minutes",
                granted=False,
                risk=RiskLevel.HIGH,
                details={"locked_until": locked_until, "sessions_ended": ended},
            )
    # The same answer whether or not this failure locked the account; the session, if ended, says
    # so on its next request.
    raise AuthRequestError(401, "MFA_CODE_INVALID", _CODE_INVALID, field="code")


async def _end_pending_sessions(conn: AsyncConnection, principal: Principal, now: datetime) -> int:
    """End the caller's session and every session of the user that has not passed MFA."""
    result = await conn.execute(
        text(
            "UPDATE user_sessions SET is_active = false, terminated_at = :now, termination_reason = :r"
            " WHERE user_id = :u AND terminated_at IS NULL AND (id = :s OR NOT mfa_verified)"
        ),
        {
            "u": principal.user_id,
            "s": principal.session_id,
            "r": TerminationReason.ACCOUNT_LOCKED.value,
            "now": now,
        },
    )
    if result.rowcount and principal.session_id is not None:  # live subscribers of that session end too
        await access_ended(
            conn, AccessKind.SESSION_ENDED, tenant_id=principal.tenant_id, session_id=principal.session_id,
            reason=TerminationReason.ACCOUNT_LOCKED.value,
        )
    return int(result.rowcount)


async def _refuse_locked(
    service: AuthService, principal: Principal, meta: RequestMeta, now: datetime
) -> NoReturn:
    """A locked account's code is refused, right or wrong, and the session presenting it ends."""
    async with caller_unit(service, principal, meta, field=_field(meta, "/auth/mfa/verify")) as uow:
        await _end_pending_sessions(uow.connection, principal, now)
        uow.record_event(
            AuthEvent.MFA_FAILED, entity_type="user", entity_id=principal.user_id,
            description="code refused: account locked; session ended", granted=False, risk=RiskLevel.MEDIUM,
        )
    raise AuthRequestError(401, "MFA_CODE_INVALID", _CODE_INVALID, field="code")


async def _not_enabled(service: AuthService, principal: Principal, meta: RequestMeta) -> NoReturn:
    await _refuse(
        service,
        principal,
        meta,
        AuthRequestError(
            409,
            "MFA_NOT_ENABLED",
            "Multi-factor authentication is not enabled for this account;"
            " enroll first (POST /auth/mfa/enroll).",
        ),
        "refused: MFA not enabled",
    )


async def _session_gone(service: AuthService, principal: Principal, meta: RequestMeta) -> NoReturn:
    await _refuse(
        service,
        principal,
        meta,
        AuthRequestError(401, "INVALID_SESSION", "The session is not valid; sign in again."),
        "refused: session ended during the MFA step",
    )


async def _refuse(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta,
    error: AuthRequestError,
    description: str,
    *,
    risk: RiskLevel = RiskLevel.MEDIUM,
) -> NoReturn:
    await _audit(
        service,
        principal,
        meta,
        AuthEvent.MFA_FAILED,
        description,
        granted=False,
        risk=risk,
        status=error.status,
    )
    raise error


async def _audit(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta,
    event: AuthEvent,
    description: str,
    *,
    granted: bool = True,
    risk: RiskLevel = RiskLevel.LOW,
    details: Mapping[str, Any] | None = None,
    status: int | None = None,
) -> None:
    await record_caller_event(
        service.writer,
        principal,
        event,
        meta,
        granted=granted,
        risk=risk,
        description=description,
        details=details,
        status=status,
    )
