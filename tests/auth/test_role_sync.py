"""The system-role sync (`gwm db upgrade`): roles brought back to the permission catalog through a
unit of work as the tenant's system user, each change with its audit row and history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audited import system_unit
from auth.permissions import SYSTEM_ROLES, SystemRole
from auth.provisioning import PROCESS, sync_system_roles
from models.db import set_tenant
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef


async def _rows(owner_engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = list((await conn.execute(text(sql), params)).all())
        await conn.rollback()
    return rows


async def _sync(owner_engine: AsyncEngine, tenant: TenantRef) -> int:
    async with system_unit(owner_engine, TEST_AUDIT_CHAIN, tenant.id, process=PROCESS) as uow:
        return await sync_system_roles(uow)


async def test_the_sync_restores_the_catalog_and_audits_each_change(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    assert await _sync(owner_engine, fresh_tenant) == 0  # a new tenant is in sync: nothing written
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM audit_logs") == []

    async with owner_engine.begin() as conn:  # drift: one role emptied, one gone
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(text("UPDATE roles SET permissions = '[]' WHERE name = 'Viewer'"))
        await conn.execute(text("DELETE FROM roles WHERE name = 'Auditor'"))

    assert await _sync(owner_engine, fresh_tenant) == 2
    roles = {
        r.name: r for r in await _rows(owner_engine, fresh_tenant, "SELECT id, name, permissions FROM roles")
    }
    for role, permissions in SYSTEM_ROLES.items():
        assert roles[role.value].permissions == sorted(p.value for p in permissions)
    audit = await _rows(
        owner_engine, fresh_tenant,
        "SELECT action_type, entity_id, user_id, operation_description FROM audit_logs ORDER BY seq",
    )
    assert {(a.action_type, a.entity_id) for a in audit} == {
        ("auth.role.updated", roles[SystemRole.VIEWER.value].id),
        ("auth.role.created", roles[SystemRole.AUDITOR.value].id),
    } and len(audit) == 2
    assert {a.user_id for a in audit} == {fresh_tenant.system_user_id}
    assert all(a.operation_description.startswith(f"{PROCESS}: system role") for a in audit)
    history = await _rows(
        owner_engine, fresh_tenant,
        "SELECT entity_id, field_name, change_source, changed_by_system_process, change_batch_id FROM change_history",
    )
    viewer = [h for h in history if h.entity_id == roles[SystemRole.VIEWER.value].id]
    assert [h.field_name for h in viewer] == ["permissions"]
    assert {(h.change_source, h.changed_by_system_process) for h in history} == {("system", PROCESS)}
    assert len({h.change_batch_id for h in history}) == 1  # one tenant, one transaction

    assert await _sync(owner_engine, fresh_tenant) == 0
    assert len(await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM audit_logs")) == 2
