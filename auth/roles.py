"""Custom roles and role assignments (the permission to call each is declared by the GraphQL field).

Custom roles take any subset of the permission catalog (auth/permissions.py); the system roles are
kept by `gwm db upgrade` and cannot be edited or deleted. Nobody hands out more than they hold: a
role's permissions, and a role granted to a user, must lie within the caller's own tenant-wide
permissions, and an assignment is removed only by someone holding everything it grants.

An assignment is tenant-wide or on one opportunity project, and may expire: `expires_at` is
compared with the database clock on every request (auth/principal.py), so an expired assignment
grants nothing from that instant; `gwm jobs run` also ends the sessions it leaves without a role.

Each change writes its audit row (`record_event`) after the transaction committed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.audit import AuthEvent, RequestMeta, record_caller_event
from auth.exceptions import AuthRequestError
from auth.permissions import Permission
from auth.principal import Principal
from auth.service import AuthService
from models.db import set_tenant
from models.enums import RiskLevel

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


async def _audit(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta,
    event: AuthEvent,
    *,
    entity_type: str,
    entity_id: uuid.UUID,
    permission: Permission,
    description: str,
    details: dict[str, Any],
) -> None:
    await record_caller_event(
        service.writer,
        principal,
        event,
        meta,
        entity_type=entity_type,
        entity_id=entity_id,
        permission=permission.value,
        risk=RiskLevel.MEDIUM,
        description=description,
        details=details,
    )


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
    try:
        async with service.engine.begin() as conn:
            await set_tenant(conn, principal.tenant_id)
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO roles (tenant_id, name, description, is_system_role, permissions)"  # noqa: S608
                        " VALUES (:t, :n, :d, false, CAST(:p AS jsonb))"
                        f" RETURNING {_ROLE_COLUMNS}"
                    ),
                    {"t": principal.tenant_id, "n": name, "d": description, "p": json.dumps(granted)},
                )
            ).one()
    except IntegrityError:
        raise _name_taken(name) from None
    await _audit(
        service, principal, meta, AuthEvent.ROLE_CREATED, entity_type="role", entity_id=row.id,
        permission=Permission.ROLE_ADMIN, description=f"custom role {name!r} created",
        details={"name": name, "permissions": granted},
    )
    return row


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
    try:
        async with service.engine.begin() as conn:
            await set_tenant(conn, principal.tenant_id)
            before = await _role(conn, role_id, lock=True)
            _editable(before)
            if before.updated_at != updated_at:
                raise AuthRequestError(
                    409, "CONFLICT", "The role was changed since you read it; read it again.", field="updatedAt"
                )
            new_name = _name(name) if name is not None else before.name
            # Keeping permissions one does not hold is fine; adding them is not.
            new_permissions = list(before.permissions)
            if permissions is not None:
                added = sorted(set(permissions) - set(before.permissions))
                new_permissions = _permissions(permissions, principal, added=added)
            row = (
                await conn.execute(
                    text(
                        "UPDATE roles SET name = :n, description = :d, permissions = CAST(:p AS jsonb)"  # noqa: S608
                        f" WHERE id = :r RETURNING {_ROLE_COLUMNS}"
                    ),
                    {
                        "r": role_id,
                        "n": new_name,
                        "d": before.description if description is None else description,
                        "p": json.dumps(new_permissions),
                    },
                )
            ).one()
    except IntegrityError:
        raise _name_taken(name or "") from None
    await _audit(
        service, principal, meta, AuthEvent.ROLE_UPDATED, entity_type="role", entity_id=role_id,
        permission=Permission.ROLE_ADMIN, description=f"custom role {row.name!r} changed",
        details={
            "before": {"name": before.name, "permissions": list(before.permissions)},
            "after": {"name": row.name, "permissions": list(row.permissions)},
        },
    )
    return row


async def delete_role(service: AuthService, principal: Principal, *, role_id: uuid.UUID, meta: RequestMeta) -> None:
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        row = await _role(conn, role_id, lock=True)
        _editable(row)
        in_use = await conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM user_roles WHERE role_id = :r)"
                " + (SELECT count(*) FROM api_keys WHERE role_id = :r AND revoked_at IS NULL)"
            ),
            {"r": role_id},
        )
        if in_use:
            raise AuthRequestError(
                409, "ROLE_IN_USE", f"{row.name!r} is still assigned ({in_use} assignments or API keys).", field="id"
            )
        await conn.execute(text("DELETE FROM roles WHERE id = :r"), {"r": role_id})
    await _audit(
        service, principal, meta, AuthEvent.ROLE_DELETED, entity_type="role", entity_id=role_id,
        permission=Permission.ROLE_ADMIN, description=f"custom role {row.name!r} deleted",
        details={"name": row.name, "permissions": list(row.permissions)},
    )


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
    try:
        async with service.engine.begin() as conn:
            await set_tenant(conn, principal.tenant_id)
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
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO user_roles (tenant_id, user_id, role_id, opportunity_project_id, assigned_by,"  # noqa: S608
                        " expires_at) VALUES (:t, :u, :r, :p, :by, :e)"
                        f" RETURNING {_USER_ROLE_COLUMNS}"
                    ),
                    {
                        "t": principal.tenant_id,
                        "u": user_id,
                        "r": role_id,
                        "p": project_id,
                        "by": principal.user_id,
                        "e": expires_at,
                    },
                )
            ).one()
    except IntegrityError:
        raise AuthRequestError(
            409, "ALREADY_ASSIGNED", "The user already has this role there; revoke it first to change it.",
            field="roleId",
        ) from None
    await _audit(
        service, principal, meta, AuthEvent.ROLE_GRANTED, entity_type="user_role", entity_id=row.id,
        permission=Permission.USER_ADMIN, description=f"role {role.name!r} granted",
        details={
            "user_id": str(user_id),
            "role": role.name,
            "opportunity_project_id": None if project_id is None else str(project_id),
            "expires_at": None if expires_at is None else expires_at.isoformat(),
        },
    )
    return row


async def revoke_role(
    service: AuthService, principal: Principal, *, user_role_id: uuid.UUID, meta: RequestMeta
) -> None:
    async with service.engine.begin() as conn:
        await set_tenant(conn, principal.tenant_id)
        row = (
            await conn.execute(
                text(
                    "SELECT ur.user_id, ur.opportunity_project_id, r.name, r.permissions FROM user_roles ur"
                    " JOIN roles r ON r.id = ur.role_id WHERE ur.id = :i FOR UPDATE OF ur"
                ),
                {"i": user_role_id},
            )
        ).first()
        if row is None:
            raise AuthRequestError(404, "NOT_FOUND", "There is no role assignment with that id.", field="id")
        if not set(row.permissions) <= principal.grants.tenant_wide:
            raise AuthRequestError(
                403, "ROLE_NOT_GRANTABLE", f"You cannot revoke {row.name!r}: it carries permissions you do not hold.",
                field="id",
            )
        await conn.execute(text("DELETE FROM user_roles WHERE id = :i"), {"i": user_role_id})
    await _audit(
        service, principal, meta, AuthEvent.ROLE_REVOKED, entity_type="user_role", entity_id=user_role_id,
        permission=Permission.USER_ADMIN, description=f"role {row.name!r} revoked",
        details={
            "user_id": str(row.user_id),
            "role": row.name,
            "opportunity_project_id": None if row.opportunity_project_id is None else str(row.opportunity_project_id),
        },
    )
