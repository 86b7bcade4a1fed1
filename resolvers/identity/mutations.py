"""Changes behind the identity mutations: session revocation, MFA enrolment, API keys, users.

Each function takes the service, the principal and the request's audit metadata, does the work
through the `auth` package (which audits it) and returns rows or records. Refusals the caller can
fix are `AuthRequestError`s; schema/errors.py turns them into UserErrors. Permissions are declared
on the GraphQL fields (schema/permissions.py), never checked here; what stays here is scope: every
statement is limited to the caller's tenant, so another tenant's id is simply not found.

`auth.mfa_service` and `auth.accounts` are imported inside the functions that use them, so the
schema builds (and exports) without importing the whole account lifecycle at startup.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from auth.api_keys import ApiKeyRecord, create_api_key, revoke_api_key
from auth.audit import AuthEvent, RequestMeta, record_caller_event
from auth.audited import caller_unit
from auth.exceptions import AuthRequestError
from auth.permissions import Permission
from auth.principal import Principal
from auth.service import AuthService
from auth.sessions import TerminationReason, terminate_session
from models.db import set_tenant
from models.enums import RiskLevel
from resolvers.identity.queries import SESSION_COLUMNS, user

__all__ = [
    "api_key_create",
    "api_key_revoke",
    "mfa_enrollment_confirm",
    "mfa_enrollment_start",
    "session_owner",
    "session_revoke",
    "user_deactivate",
    "user_invite",
    "user_set_temporary_password",
    "user_unlock",
]


# -- sessions ----------------------------------------------------------------------------------


async def session_owner(
    service: AuthService, principal: Principal, session_id: uuid.UUID
) -> uuid.UUID | None:
    """Whose session `session_id` is, within the caller's tenant (None: no such session here)."""
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        owner: uuid.UUID | None = await conn.scalar(
            text("SELECT user_id FROM user_sessions WHERE id = :s AND tenant_id = :t"),
            {"s": session_id, "t": principal.tenant_id},
        )
    return owner


async def session_revoke(
    service: AuthService, principal: Principal, session_id: uuid.UUID, meta: RequestMeta
) -> Any:
    """End a session of the caller's tenant now (reason `revoked`); returns its row.

    The session's end and its `auth.session.revoked` row commit together (one unit of work). Another
    user's session needs user:admin: without it, the session is answered as missing (NOT_FOUND, as
    a session that does not exist), and the refusal is audited (auth.access.denied).
    """
    now = service.now()
    try:
        return await _revoke_session(service, principal, session_id, meta, now)
    except _NotYours:
        await record_caller_event(
            service.writer, principal, AuthEvent.ACCESS_DENIED, meta,
            entity_type="session", entity_id=session_id, granted=False, risk=RiskLevel.MEDIUM,
            permission=Permission.USER_ADMIN.value, status=403,
            description="mutation sessionRevoke refused: another user's session needs user:admin",
        )
        raise _no_session() from None


class _NotYours(Exception):
    """The session is another user's and the caller lacks user:admin."""


def _no_session() -> AuthRequestError:
    return AuthRequestError(404, "NOT_FOUND", "There is no session with that id.", field="sessionId")


async def _revoke_session(
    service: AuthService, principal: Principal, session_id: uuid.UUID, meta: RequestMeta, now: Any
) -> Any:
    async with caller_unit(service, principal, meta, field="sessionRevoke") as uow:
        conn = uow.connection
        owner = await conn.scalar(
            text("SELECT user_id FROM user_sessions WHERE id = :s AND tenant_id = :t FOR UPDATE"),
            {"s": session_id, "t": principal.tenant_id},
        )
        if owner is None:
            raise _no_session()
        if owner != principal.user_id and not principal.allows(Permission.USER_ADMIN):
            raise _NotYours
        if not await terminate_session(conn, session_id, TerminationReason.REVOKED, now):
            raise AuthRequestError(
                409, "SESSION_ALREADY_ENDED", "The session had already ended.", field="sessionId"
            )
        row = (
            await conn.execute(
                text(f"SELECT {SESSION_COLUMNS} FROM user_sessions s WHERE s.id = :s"),  # noqa: S608
                {"s": session_id},
            )
        ).one()
        own = owner == principal.user_id
        uow.set_permission(None if own else Permission.USER_ADMIN.value)
        uow.record_event(
            AuthEvent.SESSION_REVOKED,
            entity_type="session",
            entity_id=session_id,
            risk=RiskLevel.LOW if own else RiskLevel.MEDIUM,
            description="own session revoked" if own else "session of another user revoked",
            details={"session_user_id": owner, "termination_reason": TerminationReason.REVOKED.value},
        )
    return row


# -- MFA ---------------------------------------------------------------------------------------


async def mfa_enrollment_start(service: AuthService, principal: Principal, meta: RequestMeta) -> Any:
    from auth.mfa_service import start_enrollment

    return await start_enrollment(service, principal, meta)


async def mfa_enrollment_confirm(
    service: AuthService, principal: Principal, code: str, meta: RequestMeta
) -> list[str]:
    from auth.mfa_service import confirm_enrollment

    return await confirm_enrollment(service, principal, code, meta)


# -- API keys ----------------------------------------------------------------------------------


async def api_key_create(
    service: AuthService,
    principal: Principal,
    *,
    name: str,
    role_name: str,
    expires_in_days: int,
    meta: RequestMeta,
) -> tuple[ApiKeyRecord, str]:
    return await create_api_key(
        service, principal, name=name, role_name=role_name, expires_in_days=expires_in_days, meta=meta
    )


async def api_key_revoke(
    service: AuthService, principal: Principal, key_id: uuid.UUID, meta: RequestMeta
) -> ApiKeyRecord:
    return await revoke_api_key(service, principal, key_id, meta=meta)


# -- users -------------------------------------------------------------------------------------


async def _user_after(service: AuthService, principal: Principal, user_id: uuid.UUID) -> Any:
    row = await user(service, principal, user_id)
    if row is None:  # the account call succeeded, so the user exists in the caller's tenant
        raise RuntimeError("a user the account service just changed is not visible")
    return row


async def user_invite(
    service: AuthService,
    principal: Principal,
    *,
    email: str,
    first_name: str,
    last_name: str,
    role_names: list[str],
    meta: RequestMeta,
) -> Any:
    from auth import accounts

    user_id = await accounts.invite_user(
        service, principal, email=email, first_name=first_name, last_name=last_name, role_names=role_names,
        meta=meta,
    )
    return await _user_after(service, principal, user_id)


async def user_unlock(
    service: AuthService, principal: Principal, user_id: uuid.UUID, meta: RequestMeta
) -> Any:
    from auth import accounts

    await accounts.unlock_user(service, principal, user_id=user_id, meta=meta)
    return await _user_after(service, principal, user_id)


async def user_deactivate(
    service: AuthService, principal: Principal, user_id: uuid.UUID, meta: RequestMeta
) -> Any:
    from auth import accounts

    await accounts.deactivate_user(service, principal, user_id=user_id, meta=meta)
    return await _user_after(service, principal, user_id)


async def user_set_temporary_password(
    service: AuthService, principal: Principal, user_id: uuid.UUID, password: str, meta: RequestMeta
) -> Any:
    from auth import accounts

    await accounts.set_temporary_password(service, principal, user_id=user_id, password=password, meta=meta)
    return await _user_after(service, principal, user_id)
