"""The principal: who is calling, for which tenant, with which permissions.

Permissions are loaded on every request from the caller's unexpired role assignments, so a role
change or an expiry applies at once; `user_sessions.permissions_snapshot` is an audit record only.
A tenant-wide assignment grants its role's permissions everywhere; a project-scoped one only on
that project (and what hangs under it).
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.permissions import Permission

__all__ = ["Grants", "Principal", "PrincipalKind", "grants_from", "grants_from_json", "load_grants", "load_role_grants"]

_ADMIN_PERMISSIONS = frozenset({Permission.TENANT_ADMIN.value, Permission.USER_ADMIN.value})


class PrincipalKind(StrEnum):
    SESSION = "session"
    OIDC = "oidc"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Grants:
    """Effective permissions: tenant-wide, and per opportunity project."""

    tenant_wide: frozenset[str] = frozenset()
    per_project: Mapping[uuid.UUID, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))

    def allows(self, permission: str, project_id: uuid.UUID | None = None) -> bool:
        if permission in self.tenant_wide:
            return True
        return project_id is not None and permission in self.per_project.get(project_id, frozenset())

    @property
    def is_admin(self) -> bool:
        """Holds a tenant administration permission (shorter idle timeout, AC-12)."""
        return bool(self.tenant_wide & _ADMIN_PERMISSIONS)

    def snapshot(self) -> dict[str, list[str]]:
        out = {"*": sorted(self.tenant_wide)}
        out.update({str(project): sorted(perms) for project, perms in self.per_project.items()})
        return out


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    tenant_id: uuid.UUID
    # The acting user; for an API key, the tenant's system user (the key is named in audit rows).
    user_id: uuid.UUID
    grants: Grants
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    # False until a session that needs MFA has passed it (or enrolled, where the tenant requires it).
    mfa_satisfied: bool = True
    mfa_enrollment_required: bool = False
    password_change_required: bool = False

    @property
    def audit_session(self) -> str | None:
        """What audit_logs.session_id records for this principal."""
        if self.session_id is not None:
            return str(self.session_id)
        if self.api_key_id is not None:
            return f"api_key:{self.api_key_id}"
        return None

    def allows(self, permission: Permission | str, project_id: uuid.UUID | None = None) -> bool:
        return self.grants.allows(str(permission), project_id)


_PARSED: OrderedDict[str, Grants] = OrderedDict()
_PARSED_SIZE = 1024


def grants_from_json(raw: str) -> Grants:
    """Grants from the JSON text the principal lookup returns: per role, [permissions, [project ids] or null,
    held tenant-wide].

    The text is what the database computed for this request (expired assignments already left out), so
    keeping the parsed value of the same text changes nothing but the cost: a caller holding hundreds of
    project-scoped assignments is not parsed again on every request. Bounded, least recently used out.
    """
    grants = _PARSED.get(raw)
    if grants is not None:
        _PARSED.move_to_end(raw)
        return grants
    rows: list[tuple[list[str] | None, uuid.UUID | str | None]] = []
    for permissions, projects, tenant_wide in json.loads(raw):  # one entry per role (migration 0012)
        if tenant_wide:
            rows.append((permissions, None))
        rows.extend((permissions, project) for project in projects or ())
    grants = grants_from(rows)
    _PARSED[raw] = grants
    if len(_PARSED) > _PARSED_SIZE:
        _PARSED.popitem(last=False)
    return grants


def grants_from(rows: list[tuple[list[str] | None, uuid.UUID | str | None]]) -> Grants:
    """Grants from (role permissions, project id or None) pairs of unexpired assignments."""
    return _grants(rows)


def _grants(rows: list[tuple[list[str] | None, uuid.UUID | str | None]]) -> Grants:
    tenant_wide: set[str] = set()
    per_project: dict[uuid.UUID, set[str]] = {}
    for permissions, project_id in rows:
        values = {p for p in (permissions or []) if isinstance(p, str)}
        if project_id is None:
            tenant_wide |= values
        else:  # a JSON-aggregated caller state gives the id as text
            per_project.setdefault(uuid.UUID(str(project_id)), set()).update(values)
    # Projects granted through the same role share one set (one object, hashed once).
    shared: dict[frozenset[str], frozenset[str]] = {}
    return Grants(
        frozenset(tenant_wide),
        MappingProxyType({k: shared.setdefault(frozenset(v), frozenset(v)) for k, v in per_project.items()}),
    )


async def load_grants(conn: AsyncConnection, user_id: uuid.UUID) -> Grants:
    """The user's effective permissions now (tenant set on `conn`); expired assignments grant nothing."""
    rows = await conn.execute(
        text(
            "SELECT r.permissions, ur.opportunity_project_id FROM user_roles ur"
            " JOIN roles r ON r.id = ur.role_id"
            " WHERE ur.user_id = :u AND (ur.expires_at IS NULL OR ur.expires_at > now())"
        ),
        {"u": user_id},
    )
    return _grants([(r.permissions, r.opportunity_project_id) for r in rows])


async def load_role_grants(conn: AsyncConnection, role_id: uuid.UUID) -> Grants:
    """One role's permissions, tenant-wide (an API key's scope)."""
    permissions = await conn.scalar(text("SELECT permissions FROM roles WHERE id = :r"), {"r": role_id})
    return _grants([(permissions, None)])
