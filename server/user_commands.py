"""`gwm user unlock` and `gwm user grant-admin`: the way back for a tenant locked out of itself.

A tenant whose only administrator is locked out (AC-7) or deactivated has no one left who may
unlock or grant anything through the API. An operator with the database runs:

    gwm user unlock --tenant T --email E        clear the lockout and failure count; reactivate a
                                                deactivated account (within the tenant's max_users)
    gwm user grant-admin --tenant T --email E   give the user the Tenant Admin role, tenant-wide
    gwm user resend-invitation --tenant T --email E
                                                a fresh invitation link for a user who has not
                                                joined (the first administrator's expired, say):
                                                emailed with GWM_SMTP_HOST, printed without

T is the tenant's subdomain or id; E matches the user's email case-insensitively. Each command is
one unit of work acting as the tenant's system user (auth/audited.py, change source "system",
process "gwm user ..."), as the schema owner with the tenant set: the change commits with its
audit row (`auth.account.unlocked`, `auth.user.reactivated`, `auth.role_assignment.granted`) and
its change_history rows, or not at all. A command that finds nothing to do writes nothing and
says so. Errors (no such tenant or user, the system user, no seat left) exit 2 with one line.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.accounts import reinvite_in, unlock_in
from auth.audit import AuthEvent, RequestMeta
from auth.audited import system_unit
from auth.exceptions import AuthRequestError
from auth.mailer import Mailer
from auth.permissions import SystemRole
from auth.policy import active_seats
from models.audit_chain import AuditChain
from models.db import set_tenant
from models.identity import Role, User, UserRole
from models.unit_of_work import UnitOfWork
from server.tenant_commands import CommandError as DeliveryError
from server.tenant_commands import deliver

__all__ = ["USER_REACTIVATED", "CommandError", "grant_admin", "resend_invitation", "unlock"]

#: audit_logs.action_type of an account switched back on.
USER_REACTIVATED = "auth.user.reactivated"


class CommandError(Exception):
    """A refusal the operator can act on; the message is printed as is."""


@dataclass(frozen=True, slots=True)
class _Target:
    tenant_id: uuid.UUID
    subdomain: str


async def unlock(engine: AsyncEngine, chain: AuditChain, tenant: str, email: str) -> str:
    """Clear the lockout of `email` in `tenant` and reactivate the account if it is switched off."""
    target = await _tenant(engine, tenant)
    process = "gwm user unlock"
    async with system_unit(engine, chain, target.tenant_id, process=process, meta=_meta(process)) as uow:
        user = await _user(uow, email, target)
        now = datetime.now(UTC)
        try:
            was_locked = await unlock_in(uow, user.id, now, by=f"the operator ({process})")
        except AuthRequestError as exc:
            raise CommandError(exc.message) from None
        reactivated = False
        if not user.is_active:
            limit = await uow.connection.scalar(
                text("SELECT max_users FROM tenants WHERE id = :t FOR UPDATE"), {"t": target.tenant_id}
            )
            if await active_seats(uow.connection, target.tenant_id) >= int(limit or 0):
                raise CommandError(
                    f"{user.email} is deactivated and {target.subdomain} has no free seat"
                    f" (max_users {limit}): deactivate another user or raise the limit first"
                )
            uow.assign(user, {"is_active": True})
            uow.label(user, USER_REACTIVATED, f"reactivated by the operator ({process})")
            reactivated = True
    done = [
        "lockout cleared" if was_locked else "failure count cleared (was not locked)",
        *(["account reactivated"] if reactivated else []),
    ]
    return f"{user.email} in {target.subdomain}: {', '.join(done)}"


async def grant_admin(engine: AsyncEngine, chain: AuditChain, tenant: str, email: str) -> str:
    """Give `email` in `tenant` the Tenant Admin role, tenant-wide (nothing if it holds it already)."""
    target = await _tenant(engine, tenant)
    process = "gwm user grant-admin"
    role_name = SystemRole.TENANT_ADMIN.value
    async with system_unit(engine, chain, target.tenant_id, process=process, meta=_meta(process)) as uow:
        user = await _user(uow, email, target)
        role = await uow.session.scalar(select(Role).where(Role.tenant_id == target.tenant_id, Role.name == role_name))
        if role is None:
            raise CommandError(f"{target.subdomain} has no {role_name!r} role: run `gwm db upgrade` first")
        held = await uow.session.scalar(
            select(func.count())
            .select_from(UserRole)
            .where(
                UserRole.user_id == user.id,
                UserRole.role_id == role.id,
                UserRole.opportunity_project_id.is_(None),
                (UserRole.expires_at.is_(None)) | (UserRole.expires_at > func.now()),
            )
        )
        if held:
            return f"{user.email} in {target.subdomain} already holds {role_name!r}: nothing changed"
        assignment = UserRole(
            tenant_id=target.tenant_id,
            user_id=user.id,
            role_id=role.id,
            assigned_by=uow.actor_id,
            assigned_at=datetime.now(UTC),
        )
        uow.add(assignment)
        uow.label(assignment, AuthEvent.ROLE_GRANTED, f"role {role_name!r} granted by the operator ({process})")
    inactive = "" if user.is_active else " (the account is deactivated: `gwm user unlock` reactivates it)"
    return f"{user.email} in {target.subdomain}: {role_name!r} granted{inactive}"


async def resend_invitation(
    engine: AsyncEngine, chain: AuditChain, tenant: str, email: str, *, public_url: str, mailer: Mailer | None
) -> str:
    """A fresh invitation link for `email` in `tenant`, who has not joined yet; the earlier links stop
    working. Emailed with `mailer` (before the commit), else returned in the message to print."""
    target = await _tenant(engine, tenant)
    process = "gwm user resend-invitation"
    async with system_unit(engine, chain, target.tenant_id, process=process, meta=_meta(process)) as uow:
        user = await _user(uow, email, target)
        try:
            invited = await reinvite_in(uow, user.id, datetime.now(UTC))
            link = await deliver(invited, public_url=public_url, mailer=mailer, undone="the earlier link still works")
        except AuthRequestError as exc:
            raise CommandError(f"{user.email} in {target.subdomain}: {exc.message}") from None
        except DeliveryError as exc:
            raise CommandError(str(exc)) from None
    if link is None:
        return f"{user.email} in {target.subdomain}: a new invitation was emailed; earlier links no longer work"
    return (
        f"{user.email} in {target.subdomain}: SMTP is not configured (GWM_SMTP_HOST), so no email was sent:"
        f" give them this single-use link yourself (earlier links no longer work):\n{link}"
    )


def _meta(process: str) -> RequestMeta:
    return RequestMeta(request_id=f"cli-{uuid.uuid4()}", endpoint=process, method="CLI")


async def _tenant(engine: AsyncEngine, wanted: str) -> _Target:
    """The tenant `wanted` names (subdomain or id), active or not; CommandError if none."""
    async with engine.connect() as conn:
        ids = list((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await conn.rollback()
        for tenant_id in ids:  # row-level security: each tenant's row is read with its tenant set
            await set_tenant(conn, tenant_id)
            subdomain = await conn.scalar(text("SELECT subdomain FROM tenants WHERE id = :t"), {"t": tenant_id})
            await conn.rollback()
            if wanted.strip().lower() in {str(tenant_id), str(subdomain).lower()}:
                return _Target(tenant_id, str(subdomain))
    raise CommandError(f"no tenant {wanted!r} (give its subdomain or id)")


async def _user(uow: UnitOfWork, email: str, target: _Target) -> User:
    """The user with `email` (case-insensitive), locked for the rest of the unit of work."""
    found = await uow.session.scalar(
        select(User.id).where(User.tenant_id == target.tenant_id, func.lower(User.email) == email.strip().lower())
    )
    if found is None:
        raise CommandError(f"no user {email!r} in {target.subdomain}")
    user = await uow.lock(User, found)
    if user.is_system:
        raise CommandError("the system user is not a person and cannot be changed")
    return user
