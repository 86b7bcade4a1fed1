"""Custom roles and role assignments (the permission to call each is declared by the GraphQL field).

Custom roles take any subset of the permission catalog (auth/permissions.py); the system roles are
kept by `gwm db upgrade` and cannot be edited or deleted. Nobody hands out more than they hold: a
role's permissions, and a role granted to a user, must lie within the caller's own tenant-wide
permissions, and an assignment is removed only by someone holding everything it grants.

An assignment is tenant-wide or on one opportunity project, and may expire: `expires_at` is
compared with the database clock on every request (auth/principal.py), so an expired assignment
grants nothing from that instant; `gwm jobs run` also ends the sessions it leaves without a role.

Each change runs in one unit of work (auth/audited.py): the roles or user_roles row, its
audit_logs row (action `auth.role.created`, `auth.role_assignment.granted`, ...; docs/api/audit.md)
and its change_history rows commit together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta
from auth.audited import caller_unit
from auth.exceptions import AuthRequestError
from auth.permissions import Permission
from auth.principal import Principal
from auth.service import AuthService
from models.errors import Conflict, NotFound
from models.identity import Role, UserRole
from models.unit_of_work import UnitOfWork

__all__ = ["create_role", "delete_role", "grant_role", "revoke_role", "update_role"]

MAX_NAME = 100
_CATALOG = frozenset(p.value for p in Permission)
_ROLE_COLUMNS = "id, tenant_id, name, description, is_system_role, permissions, created_at, updated_at"
_USER_ROLE_COLUMNS = "id, tenant_id, user_id, role_id, opportunity_project_id, assigned_by, assigned_at, expires_at"


def _permissions(values: Sequence[str], principal: Principal, *, added: Sequence[str] | None = None) -> list[str]:
    """`values` sorted, once each; each must be in the catalog, and each of `added` (default: all)
    held by the caller tenant-wide."""
    unknown = sorted(set(values) - _CATALOG)
    if unknown:
        raise AuthRequestError(
            400, "UNKNOWN_PERMISSION", f"{unknown[0]!r} is not a permission (docs/permissions.md lists them).",
            field="permissions",
        )
    beyond = sorted(set(values if added is None else added) - principal.grants.tenant_wide)
    if beyond:
        raise AuthRequestError(
            403, "PERMISSION_NOT_GRANTABLE", f"You cannot give a role {beyond[0]!r}: you do not hold it.",
            field="permissions",
        )
    return sorted(set(values))


def _name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > MAX_NAME:
        raise AuthRequestError(400, "INVALID_NAME", f"A role name has 1 to {MAX_NAME} characters.", field="name")
    return name


async def _role(conn: AsyncConnection, role_id: uuid.UUID, *, lock: bool = False, field: str = "id") -> Any:
    suffix = " FOR UPDATE" if lock else ""
    row = (await conn.execute(text(f"SELECT {_ROLE_COLUMNS} FROM roles WHERE id = :r{suffix}"), {"r": role_id})).first()  # noqa: S608
    if row is None:
        raise AuthRequestError(404, "NOT_FOUND", "There is no role with that id.", field=field)
    return row


def _editable(row: Any) -> None:
    if row.is_system_role:
        raise AuthRequestError(
            400, "SYSTEM_ROLE", f"{row.name!r} is a system role: it cannot be changed or deleted.", field="id"
        )


def _name_taken(name: str) -> AuthRequestError:
    return AuthRequestError(409, "NAME_TAKEN", f"A role named {name!r} exists already.", field="name")


def _unit(
    service: AuthService, principal: Principal, meta: RequestMeta, field: str, permission: Permission
) -> UnitOfWork:
    return caller_unit(service, principal, meta, field=field, permission=permission.value)


async def create_role(
    service: AuthService,
    principal: Principal,
    *,
    name: str,
    description: str | None,
    permissions: Sequence[str],
    meta: RequestMeta,
) -> Any:
    name = _name(name)
    granted = _permissions(permissions, principal)
    async with _unit(service, principal, meta, "roleCreate", Permission.ROLE_ADMIN) as uow:
        role = Role(tenant_id=principal.tenant_id, is_system_role=False, permissions=granted)
        uow.assign(role, {"name": name, "description": description})
        uow.add(role)
        uow.label(role, AuthEvent.ROLE_CREATED, f"custom role {name!r} created")
        try:
            await uow.flush()
        except Conflict:
            raise _name_taken(name) from None
        return await _role(uow.connection, role.id)


async def update_role(
    service: AuthService,
    principal: Principal,
    *,
    role_id: uuid.UUID,
    updated_at: datetime,
    name: str | None,
    description: str | None,
    permissions: Sequence[str] | None,
    meta: RequestMeta,
) -> Any:
    async with _unit(service, principal, meta, "roleUpdate", Permission.ROLE_ADMIN) as uow:
        role = await uow.lock(Role, role_id, field="id")
        _editable(role)
        await uow.lock(Role, role_id, updated_at=updated_at, field="id")
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = _name(name)
        if description is not None:
            values["description"] = description
        if permissions is not None:
            # Keeping permissions one does not hold is fine; adding them is not.
            added = sorted(set(permissions) - set(role.permissions))
            values["permissions"] = _permissions(permissions, principal, added=added)
        uow.assign(role, values)
        uow.label(role, AuthEvent.ROLE_UPDATED, f"custom role {role.name!r} changed")
        try:
            await uow.flush()
        except Conflict:
            raise _name_taken(name or "") from None
        return await _role(uow.connection, role_id)


async def delete_role(
    service: AuthService,
    principal: Principal,
    *,
    role_id: uuid.UUID,
    meta: RequestMeta,
    updated_at: datetime | None = None,
) -> None:
    """Delete a custom role nobody holds; with `updated_at` (the value read), CONFLICT if it changed since."""
    async with _unit(service, principal, meta, "roleDelete", Permission.ROLE_ADMIN) as uow:
        role = await uow.lock(Role, role_id, field="id")
        _editable(role)
        if updated_at is not None:
            await uow.lock(Role, role_id, updated_at=updated_at, field="id")
        in_use = await uow.connection.scalar(
            text(
                "SELECT (SELECT count(*) FROM user_roles WHERE role_id = :r)"
                " + (SELECT count(*) FROM api_keys WHERE role_id = :r AND revoked_at IS NULL)"
            ),
            {"r": role_id},
        )
        if in_use:
            raise AuthRequestError(
                409, "ROLE_IN_USE", f"{role.name!r} is still assigned ({in_use} assignments or API keys).", field="id"
            )
        await uow.delete(role)
        uow.label(role, AuthEvent.ROLE_DELETED, f"custom role {role.name!r} deleted")


async def grant_role(
    service: AuthService,
    principal: Principal,
    *,
    user_id: uuid.UUID,
    role_id: uuid.UUID,
    project_id: uuid.UUID | None,
    expires_at: datetime | None,
    meta: RequestMeta,
) -> Any:
    if expires_at is not None and expires_at <= service.now():
        raise AuthRequestError(400, "INVALID_EXPIRY", "expiresAt must lie in the future.", field="expiresAt")
    async with _unit(service, principal, meta, "userRoleGrant", Permission.USER_ADMIN) as uow:
        conn = uow.connection
        role = await _role(conn, role_id, field="roleId")
        if not set(role.permissions) <= principal.grants.tenant_wide:
            raise AuthRequestError(
                403, "ROLE_NOT_GRANTABLE", f"You cannot grant {role.name!r}: it carries permissions you do not "
                "hold.", field="roleId",
            )
        user = (
            await conn.execute(text("SELECT is_active, is_system FROM users WHERE id = :u"), {"u": user_id})
        ).first()
        if user is None or user.is_system:
            raise AuthRequestError(404, "NOT_FOUND", "There is no user with that id.", field="userId")
        if not user.is_active:
            raise AuthRequestError(400, "USER_INACTIVE", "The user is deactivated.", field="userId")
        if project_id is not None and not await conn.scalar(
            text("SELECT true FROM opportunity_projects WHERE id = :p"), {"p": project_id}
        ):
            raise AuthRequestError(
                404, "NOT_FOUND", "There is no opportunity project with that id.", field="opportunityProjectId"
            )
        assignment = UserRole(
            tenant_id=principal.tenant_id,
            user_id=user_id,
            role_id=role_id,
            opportunity_project_id=project_id,
            assigned_by=principal.user_id,
            expires_at=expires_at,
        )
        uow.add(assignment)
        uow.label(assignment, AuthEvent.ROLE_GRANTED, f"role {role.name!r} granted")
        try:
            await uow.flush()
        except Conflict:
            raise AuthRequestError(
                409, "ALREADY_ASSIGNED", "The user already has this role there; revoke it first to change it.",
                field="roleId",
            ) from None
        return (
            await conn.execute(
                text(f"SELECT {_USER_ROLE_COLUMNS} FROM user_roles WHERE id = :i"),  # noqa: S608
                {"i": assignment.id},
            )
        ).one()


async def revoke_role(
    service: AuthService, principal: Principal, *, user_role_id: uuid.UUID, meta: RequestMeta
) -> None:
    async with _unit(service, principal, meta, "userRoleRevoke", Permission.USER_ADMIN) as uow:
        try:
            assignment = await uow.lock(UserRole, user_role_id, field="id")
        except NotFound:
            raise AuthRequestError(404, "NOT_FOUND", "There is no role assignment with that id.", field="id") from None
        role = await _role(uow.connection, assignment.role_id)
        if not set(role.permissions) <= principal.grants.tenant_wide:
            raise AuthRequestError(
                403, "ROLE_NOT_GRANTABLE", f"You cannot revoke {role.name!r}: it carries permissions you do not hold.",
                field="id",
            )
        await uow.delete(assignment)
        uow.label(assignment, AuthEvent.ROLE_REVOKED, f"role {role.name!r} revoked")
