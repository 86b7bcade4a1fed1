"""Units of work for writes made outside a GraphQL mutation field: auth services, `/auth/*` routes,
single sign-on, jobs and the CLI.

Every write of an audited table (models/audit_trail.py `AUDITED`: users, roles, user_roles, ...)
goes through a `UnitOfWork` (models/unit_of_work.py), whose flush hook writes the change, its
audit_logs row and its change_history rows in one transaction. Tables the hook does not audit
(sessions, API keys, recovery codes, account tokens, linked identities; docs/decisions.md W11) are
written on the same transaction (`uow.connection`), with their event row queued by
`uow.record_event(...)`, so nothing is ever audited after COMMIT.

Three ways to open one, by who acts:

    # the signed-in caller (a GraphQL mutation implemented in auth/, an authenticated /auth route)
    async with caller_unit(service, principal, meta, field="roleCreate", permission="role:admin") as uow:
        role = Role(tenant_id=principal.tenant_id, name=name, permissions=[...])
        uow.add(role)
        uow.label(role, AuthEvent.ROLE_CREATED, f"custom role {name!r} created")

    # someone not signed in, acting on an account (invitation accept, password reset), or a
    # sign-in that provisions a user: the actor is that user once known (`uow.set_actor`)
    async with route_unit(service, tenant_id, meta, actor=user_id, field="/auth/password/reset") as uow:
        ...

    # the tenant's system user (jobs, CLI, SSO just-in-time provisioning): change_source SYSTEM,
    # changed_by_system_process = process; the system user id is looked up in the transaction
    async with system_unit(engine, chain, tenant_id, process="jobs.sweep", meta=None) as uow:
        user = await uow.lock(User, user_id)
        uow.assign(user, {"is_active": False})
        uow.label(user, AuthEvent.USER_DEACTIVATED, "inactive for 90 days")

Inside the block: `uow.session` (ORM, AuditedSession) for audited rows, `uow.connection` for
plain statements on unaudited tables (same transaction; a Core/textual INSERT/UPDATE/DELETE of an
audited table there is refused with `BypassRefused`), `uow.label(obj, action, description)` to
give a change its meaning (the audit row's action_type, e.g. `auth.role.created`; change_history
keeps create/update/delete), `uow.record_event(action, entity_type=, entity_id=, description=,
details=, risk=)` for unaudited tables. Leaving the block commits (a failure rolls everything
back, event rows included). Secrets: `REDACTION` records stored secret columns as "[redacted]"
and redacts secret-looking keys of `details` and of JSON values (auth.audit.redact).

Events that change no row (sign-in, sign-out, a refused sign-in, a denial) are not written here:
they stay side-effect rows (`auth.audit.record_event`), which persist when the request fails.

`append_event(conn, chain, ...)` appends one event row on a plain transaction that changed an
unaudited table (a session ended by its timeout, an API key's use recorded) without opening a
unit of work: the hot paths of authentication keep their one short transaction, and the event
still commits with the change.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audit import AuthEvent, RequestMeta, inet, redact
from models.audit_chain import AuditChain
from models.audit_log import AuditLog
from models.audit_trail import STORED_SECRETS, AuditContext, Redaction, wire_value
from models.enums import ChangeSource, RiskLevel
from models.identity import User
from models.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from auth.principal import Principal
    from auth.service import AuthService

__all__ = [
    "REDACTION",
    "append_event",
    "caller_context",
    "caller_unit",
    "route_context",
    "route_unit",
    "system_context",
    "system_unit",
]

#: What an audit row never holds in the clear: stored secret columns, secret-looking JSON keys.
REDACTION = Redaction(secret_columns=STORED_SECRETS, redact_json=redact)


def caller_context(
    principal: Principal, meta: RequestMeta | None, *, field: str, permission: str | None = None
) -> AuditContext:
    """The audit context of a write by the authenticated caller (`field`: the mutation or route)."""
    return AuditContext(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        session_id=principal.audit_session,
        ip_address=inet(meta.ip) if meta else None,
        user_agent=meta.user_agent if meta else None,
        request_id=meta.request_id if meta else None,
        endpoint=meta.endpoint if meta else None,
        http_method=meta.method if meta else None,
        field_name=field,
        permission=permission,
    )


def route_context(
    tenant_id: uuid.UUID,
    meta: RequestMeta | None,
    *,
    field: str,
    actor: uuid.UUID | None = None,
    session_id: uuid.UUID | str | None = None,
) -> AuditContext:
    """The audit context of a write by an unauthenticated request (`actor`: the account acted on,
    e.g. the user accepting an invitation; None until known, then `uow.set_actor`)."""
    return AuditContext(
        tenant_id=tenant_id,
        user_id=actor,
        session_id=None if session_id is None else str(session_id),
        ip_address=inet(meta.ip) if meta else None,
        user_agent=meta.user_agent if meta else None,
        request_id=meta.request_id if meta else None,
        endpoint=meta.endpoint if meta else None,
        http_method=meta.method if meta else None,
        field_name=field,
    )


def system_context(
    tenant_id: uuid.UUID, *, process: str, system_user_id: uuid.UUID | None = None, meta: RequestMeta | None = None
) -> AuditContext:
    """The audit context of a write by the tenant's system user on behalf of `process` (a job, the
    CLI, SSO provisioning): change_source SYSTEM, changed_by_system_process `process`."""
    return AuditContext(
        tenant_id=tenant_id,
        user_id=system_user_id,
        ip_address=inet(meta.ip) if meta else None,
        user_agent=meta.user_agent if meta else None,
        request_id=meta.request_id if meta else None,
        endpoint=meta.endpoint if meta else None,
        http_method=meta.method if meta else None,
        field_name=process,
        change_source=ChangeSource.SYSTEM,
        system_process=process[:100],
    )


def caller_unit(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta | None,
    *,
    field: str,
    permission: str | None = None,
) -> UnitOfWork:
    """A unit of work acting as the caller, on the service's engine and audit chain."""
    return UnitOfWork(
        service.engine,
        chain=service.writer.chain,
        context=caller_context(principal, meta, field=field, permission=permission),
        redaction=REDACTION,
    )


def route_unit(
    service: AuthService,
    tenant_id: uuid.UUID,
    meta: RequestMeta | None,
    *,
    field: str,
    actor: uuid.UUID | None = None,
    session_id: uuid.UUID | str | None = None,
) -> UnitOfWork:
    """A unit of work for an unauthenticated request (see `route_context`)."""
    return UnitOfWork(
        service.engine,
        chain=service.writer.chain,
        context=route_context(tenant_id, meta, field=field, actor=actor, session_id=session_id),
        redaction=REDACTION,
    )


@asynccontextmanager
async def system_unit(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    *,
    process: str,
    meta: RequestMeta | None = None,
    notify: bool = True,
) -> AsyncIterator[UnitOfWork]:
    """A unit of work acting as the tenant's system user (looked up inside the transaction)."""
    async with UnitOfWork(
        engine, chain=chain, context=system_context(tenant_id, process=process, meta=meta), redaction=REDACTION,
        notify=notify,
    ) as uow:
        system_user = await uow.connection.scalar(
            select(User.id).where(User.tenant_id == tenant_id, User.is_system.is_(True))
        )
        uow.set_actor(system_user)
        yield uow


async def append_event(
    conn: AsyncConnection,
    chain: AuditChain,
    *,
    tenant_id: uuid.UUID,
    event: AuthEvent,
    meta: RequestMeta | None,
    entity_type: str,
    entity_id: uuid.UUID | None,
    user_id: uuid.UUID | None = None,
    session_id: uuid.UUID | str | None = None,
    description: str | None = None,
    details: Mapping[str, Any] | None = None,
    risk: RiskLevel = RiskLevel.LOW,
) -> None:
    """Append one event row on `conn`'s open transaction (its tenant set, READ COMMITTED), so it
    commits, or rolls back, with the change it describes."""
    row = {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "session_id": None if session_id is None else str(session_id),
        "ip_address": inet(meta.ip) if meta else None,
        "user_agent": meta.user_agent if meta else None,
        "action_type": event.value,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "operation_description": description,
        "after_values": None if details is None else REDACTION.redact_json(wire_value(dict(details))),
        "access_granted": True,
        "risk_level": risk.value,
        "request_id": meta.request_id if meta else None,
        "api_endpoint": meta.endpoint if meta else None,
        "http_method": meta.method if meta else None,
    }
    await chain.append(conn, AuditLog.__table__, [row])
