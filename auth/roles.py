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

Privilege rules (refused, and each refusal audited as `auth.privilege.refused`, high risk, in a
row of its own that outlives the rolled-back change: `refusals_audited`): nobody grants a
permission they do not hold; nobody grants or revokes their own roles (`OWN_ROLES`); system roles
are not changed; and the tenant keeps an administrator (`LAST_ADMIN`, `guard_admins`): the last
active holder of the Tenant Admin role keeps it and stays active, and `user:admin` keeps at least
one active holder, whether it would go by a revocation, a deactivation or a change of the role
that carries it. These writes lock the tenant row first, so two of them (e.g. two administrators
revoking each other) take turns and the second sees the first's result.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, record_caller_event
from auth.audited import caller_unit
from auth.exceptions import AuthRequestError
from auth.permissions import Permission, SystemRole
from auth.principal import Principal
from auth.service import AuthService
from models.access_events import AccessKind, access_ended
from models.enums import RiskLevel
from models.errors import Conflict, NotFound
from models.identity import Role, UserRole
from models.unit_of_work import UnitOfWork

__all__ = [
    "ESCALATION_CODES",
    "create_role",
    "delete_role",
    "grant_role",
    "guard_admins",
    "lock_tenant",
    "refusals_audited",
    "revoke_role",
    "update_role",
]

#: Refusals that are privilege-escalation attempts (or would leave the tenant without an
#: administrator): each is audited (`auth.privilege.refused`, high risk) besides being answered.
ESCALATION_CODES = frozenset({
    "PERMISSION_NOT_GRANTABLE",
    "ROLE_NOT_GRANTABLE",
    "INSUFFICIENT_PRIVILEGE",
    "SYSTEM_ROLE",
    "OWN_ROLES",
    "LAST_ADMIN",
})
_TENANT_ADMIN = SystemRole.TENANT_ADMIN.value
_USER_ADMIN = Permission.USER_ADMIN.value

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


@asynccontextmanager
async def refusals_audited(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta,
    field: str,
    *,
    permission: Permission | None,
    entity_type: str,
    entity_id: uuid.UUID | None,
) -> AsyncIterator[None]:
    """Answer a refusal of ESCALATION_CODES as raised, and record it first: one audit_logs row
    (`auth.privilege.refused`, access_granted false, risk high) written in its own transaction, so
    it stays while the refused change rolls back."""
    try:
        yield
    except AuthRequestError as exc:
        if exc.code in ESCALATION_CODES:
            await record_caller_event(
                service.writer, principal, AuthEvent.PRIVILEGE_REFUSED, meta,
                entity_type=entity_type, entity_id=entity_id, granted=False, risk=RiskLevel.HIGH,
                permission=None if permission is None else permission.value, status=exc.status,
                description=f"mutation {field} refused ({exc.code}): {exc.message}",
                details={"refusal": exc.code, "field": exc.field},  # not "code": a secret-looking key
            )
        raise


async def lock_tenant(conn: AsyncConnection, tenant_id: uuid.UUID) -> Any:
    """The tenant row (`max_users`), locked FOR NO KEY UPDATE until the end of the transaction: the
    writes that change who administers the tenant, or take a user seat, take turns here."""
    return (
        await conn.execute(
            text("SELECT id, name, max_users FROM tenants WHERE id = :t FOR NO KEY UPDATE"), {"t": tenant_id}
        )
    ).one()


async def guard_admins(
    conn: AsyncConnection,
    *,
    field: str,
    without_user: uuid.UUID | None = None,
    without_assignment: uuid.UUID | None = None,
    role_losing_user_admin: uuid.UUID | None = None,
) -> None:
    """LAST_ADMIN (on `field`) if the change described would leave the tenant without an active
    Tenant Admin, or without an active holder of `user:admin`, while it has one now.

    Holders are active people (not the system user) with an unexpired tenant-wide assignment.
    The change: `without_user` deactivated, `without_assignment` revoked, the role
    `role_losing_user_admin` no longer carrying `user:admin`. Call it after `lock_tenant`.
    """
    rows = (
        await conn.execute(
            text(
                "SELECT ur.user_id, ur.id AS assignment_id, ur.role_id,"
                " (r.is_system_role AND r.name = :admin) AS tenant_admin,"
                " (r.permissions @> CAST(:perm AS jsonb)) AS user_admin"
                " FROM user_roles ur JOIN users u ON u.id = ur.user_id JOIN roles r ON r.id = ur.role_id"
                " WHERE u.is_active AND NOT u.is_system AND ur.opportunity_project_id IS NULL"
                " AND (ur.expires_at IS NULL OR ur.expires_at > now())"
                " AND ((r.is_system_role AND r.name = :admin) OR r.permissions @> CAST(:perm AS jsonb))"
            ),
            {"admin": _TENANT_ADMIN, "perm": f'["{_USER_ADMIN}"]'},
        )
    ).all()
    kept = [r for r in rows if r.user_id != without_user and r.assignment_id != without_assignment]
    admins_now = {r.user_id for r in rows if r.tenant_admin}
    admins_after = {r.user_id for r in kept if r.tenant_admin}
    if admins_now and not admins_after:
        raise AuthRequestError(
            409, "LAST_ADMIN", f"This would leave the organization without an active {_TENANT_ADMIN}: give the role "
            "to someone else first.", field=field,
        )
    holders_now = {r.user_id for r in rows if r.user_admin}
    holders_after = {r.user_id for r in kept if r.user_admin and r.role_id != role_losing_user_admin}
    if holders_now and not holders_after:
        raise AuthRequestError(
            409, "LAST_ADMIN", f"This would leave nobody active holding {_USER_ADMIN!r}: give it to someone else "
            "first.", field=field,
        )


def _own_roles(principal: Principal, user_id: uuid.UUID, field: str) -> None:
    if user_id == principal.user_id:
        raise AuthRequestError(
            403, "OWN_ROLES", "You cannot change your own roles: another administrator has to.", field=field
        )


async def _create_role(
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


async def _update_role(
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
        await lock_tenant(uow.connection, principal.tenant_id)
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
            if _USER_ADMIN in role.permissions and _USER_ADMIN not in values["permissions"]:
                await guard_admins(uow.connection, field="permissions", role_losing_user_admin=role_id)
        if "permissions" in uow.assign(role, values):  # every holder's permissions change
            await access_ended(uow.connection, AccessKind.ROLE_CHANGED, tenant_id=principal.tenant_id, role_id=role_id)
        uow.label(role, AuthEvent.ROLE_UPDATED, f"custom role {role.name!r} changed")
        try:
            await uow.flush()
        except Conflict:
            raise _name_taken(name or "") from None
        return await _role(uow.connection, role_id)


async def _delete_role(
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


async def _grant_role(
    service: AuthService,
    principal: Principal,
    *,
    user_id: uuid.UUID,
    role_id: uuid.UUID,
    project_id: uuid.UUID | None,
    expires_at: datetime | None,
    meta: RequestMeta,
) -> Any:
    _own_roles(principal, user_id, "userId")
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
        await access_ended(
            conn, AccessKind.ROLE_CHANGED, tenant_id=principal.tenant_id, user_id=user_id, role_id=role_id
        )
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


async def _revoke_role(
    service: AuthService, principal: Principal, *, user_role_id: uuid.UUID, meta: RequestMeta
) -> None:
    async with _unit(service, principal, meta, "userRoleRevoke", Permission.USER_ADMIN) as uow:
        await lock_tenant(uow.connection, principal.tenant_id)
        try:
            assignment = await uow.lock(UserRole, user_role_id, field="id")
        except NotFound:
            raise AuthRequestError(404, "NOT_FOUND", "There is no role assignment with that id.", field="id") from None
        _own_roles(principal, assignment.user_id, "id")
        role = await _role(uow.connection, assignment.role_id)
        if not set(role.permissions) <= principal.grants.tenant_wide:
            raise AuthRequestError(
                403, "ROLE_NOT_GRANTABLE", f"You cannot revoke {role.name!r}: it carries permissions you do not hold.",
                field="id",
            )
        await guard_admins(uow.connection, field="id", without_assignment=user_role_id)
        await uow.delete(assignment)
        uow.label(assignment, AuthEvent.ROLE_REVOKED, f"role {role.name!r} revoked")
        await access_ended(
            uow.connection, AccessKind.ROLE_CHANGED, tenant_id=principal.tenant_id, user_id=assignment.user_id,
            role_id=assignment.role_id,
        )


# -- the public calls: each refusal of ESCALATION_CODES is audited ----------------------------------------


async def create_role(service: AuthService, principal: Principal, *, meta: RequestMeta, **values: Any) -> Any:
    """A custom role (`name`, `description`, `permissions`); see `_create_role`."""
    async with refusals_audited(service, principal, meta, "roleCreate", permission=Permission.ROLE_ADMIN,
                                entity_type="role", entity_id=None):
        return await _create_role(service, principal, meta=meta, **values)


async def update_role(
    service: AuthService, principal: Principal, *, role_id: uuid.UUID, meta: RequestMeta, **values: Any
) -> Any:
    """Change a custom role (`updated_at`, `name`, `description`, `permissions`)."""
    async with refusals_audited(service, principal, meta, "roleUpdate", permission=Permission.ROLE_ADMIN,
                                entity_type="role", entity_id=role_id):
        return await _update_role(service, principal, role_id=role_id, meta=meta, **values)


async def delete_role(
    service: AuthService, principal: Principal, *, role_id: uuid.UUID, meta: RequestMeta,
    updated_at: datetime | None = None,
) -> None:
    """Delete a custom role nobody holds; with `updated_at` (the value read), CONFLICT if it changed since."""
    async with refusals_audited(service, principal, meta, "roleDelete", permission=Permission.ROLE_ADMIN,
                                entity_type="role", entity_id=role_id):
        await _delete_role(service, principal, role_id=role_id, meta=meta, updated_at=updated_at)


async def grant_role(
    service: AuthService, principal: Principal, *, user_id: uuid.UUID, meta: RequestMeta, **values: Any
) -> Any:
    """Grant a role (`role_id`, `project_id`, `expires_at`) to another user."""
    async with refusals_audited(service, principal, meta, "userRoleGrant", permission=Permission.USER_ADMIN,
                                entity_type="user", entity_id=user_id):
        return await _grant_role(service, principal, user_id=user_id, meta=meta, **values)


async def revoke_role(
    service: AuthService, principal: Principal, *, user_role_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Take a role assignment of another user away (never the tenant's last administrator's)."""
    async with refusals_audited(service, principal, meta, "userRoleRevoke", permission=Permission.USER_ADMIN,
                                entity_type="user_role", entity_id=user_role_id):
        await _revoke_role(service, principal, user_role_id=user_role_id, meta=meta)
