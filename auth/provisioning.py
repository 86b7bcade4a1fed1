"""Keeps every tenant's system roles at the permission sets of `auth.permissions.SYSTEM_ROLES`.

Idempotent: `gwm db upgrade` (and `gwm serve`, after migrating) runs it for every tenant as the
schema owner, and tenant creation runs it for the new tenant. A role a tenant created itself
with a system role's name is taken over as that system role (its grants would otherwise shadow
the catalog's).
"""

from __future__ import annotations

import json
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.permissions import SYSTEM_ROLES
from models.db import set_tenant

__all__ = ["sync_all_tenants", "sync_system_roles"]

_UPSERT = text(
    """
    INSERT INTO roles (tenant_id, name, description, is_system_role, permissions)
    VALUES (:t, :name, :description, true, CAST(:permissions AS jsonb))
    ON CONFLICT (tenant_id, name) DO UPDATE
       SET permissions = EXCLUDED.permissions, is_system_role = true, description = EXCLUDED.description
     WHERE roles.permissions IS DISTINCT FROM EXCLUDED.permissions OR NOT roles.is_system_role
        OR roles.description IS DISTINCT FROM EXCLUDED.description
    """
)


async def sync_system_roles(conn: AsyncConnection, tenant_id: uuid.UUID) -> None:
    """Create or correct the system roles of one tenant (its tenant must be set on `conn`)."""
    for role, permissions in SYSTEM_ROLES.items():
        await conn.execute(
            _UPSERT,
            {
                "t": tenant_id,
                "name": role.value,
                "description": f"System role: {role.value}. Its permissions are managed by GWM CRM.",
                "permissions": json.dumps(sorted(p.value for p in permissions)),
            },
        )


async def sync_all_tenants(owner_engine: AsyncEngine) -> int:
    """Run sync_system_roles for every tenant, one transaction each; return how many."""
    async with owner_engine.connect() as conn:
        tenant_ids = (await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars().all()
        await conn.rollback()
    for tenant_id in tenant_ids:
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            await sync_system_roles(conn, tenant_id)
    return len(tenant_ids)
