"""Keeps every tenant's system roles at the permission sets of `auth.permissions.SYSTEM_ROLES`.

Idempotent: `gwm db upgrade` (and `gwm serve`, after migrating) runs it for every tenant, and
tenant creation runs it for the new tenant. A role a tenant created itself with a system role's
name is taken over as that system role (its grants would otherwise shadow the catalog's).

Each tenant's sync is one unit of work acting as the tenant's system user (auth/audited.py): a
created or corrected role is written through its session, so its audit row (`auth.role.created`,
`auth.role.updated`) and change_history rows commit with it. A run that changes nothing writes
nothing.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import AuthEvent
from auth.audited import system_unit
from auth.permissions import SYSTEM_ROLES
from models.audit_chain import AuditChain
from models.identity import Role
from models.unit_of_work import UnitOfWork

__all__ = ["PROCESS", "sync_all_tenants", "sync_system_roles"]

#: The system process recorded on the audit and history rows of a sync.
PROCESS = "system role sync"


async def sync_system_roles(uow: UnitOfWork) -> int:
    """Create or correct the system roles of the unit of work's tenant; return how many changed."""
    names = [role.value for role in SYSTEM_ROLES]
    existing = {
        role.name: role
        for role in await uow.session.scalars(
            select(Role).where(Role.tenant_id == uow.tenant_id, Role.name.in_(names)).with_for_update()
        )
    }
    changed = 0
    for system_role, permissions in SYSTEM_ROLES.items():
        name = system_role.value
        values = {
            "description": f"System role: {name}. Its permissions are managed by GWM CRM.",
            "permissions": sorted(p.value for p in permissions),
            "is_system_role": True,
        }
        role = existing.get(name)
        if role is None:
            role = Role(tenant_id=uow.tenant_id, name=name, **values)
            uow.add(role)
            uow.label(role, AuthEvent.ROLE_CREATED, f"system role {name!r} created from the permission catalog")
            changed += 1
        elif uow.assign(role, values):
            uow.label(role, AuthEvent.ROLE_UPDATED, f"system role {name!r} brought to the permission catalog")
            changed += 1
    await uow.flush()
    return changed


async def sync_all_tenants(owner_engine: AsyncEngine, chain: AuditChain) -> int:
    """Run sync_system_roles for every tenant, one unit of work each; return how many tenants."""
    async with owner_engine.connect() as conn:
        tenant_ids: list[uuid.UUID] = list(
            (await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars().all()
        )
        await conn.rollback()
    for tenant_id in tenant_ids:
        async with system_unit(owner_engine, chain, tenant_id, process=PROCESS) as uow:
            await sync_system_roles(uow)
    return len(tenant_ids)
