"""The suite's listener on audited writes (tests/support/dml_guard.py) sees what it must, and only that."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audited import system_unit
from models import Role
from models.db import set_tenant
from models.side_effects import SideEffectWriter
from tests.support import dml_guard
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.writes.conftest import Rows


async def test_application_code_writing_an_audited_table_around_the_hook_is_caught(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    writer = SideEffectWriter(app_engine, TEST_AUDIT_CHAIN)
    with dml_guard.capture() as found:
        await writer.insert(
            fresh_tenant.id, Role.__table__,
            [{"tenant_id": fresh_tenant.id, "name": "Around the hook", "permissions": []}],
        )
    ((table, where),) = found
    assert table == "roles"
    assert where.startswith("models/side_effects.py:") and where.endswith(" insert")
    assert await rows.history() == []  # what the listener is for: a change without its evidence


async def test_writes_through_the_unit_of_work_ddl_and_test_fixtures_are_not_violations(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    with dml_guard.capture() as found:
        async with system_unit(app_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, process="test") as uow:
            uow.add(Role(tenant_id=fresh_tenant.id, name="Through the hook", permissions=[]))
        async with owner_engine.begin() as conn:  # a fixture's own statement (tests/)
            await set_tenant(conn, fresh_tenant.id)
            await conn.execute(text("UPDATE roles SET description = 'fixture' WHERE name = 'Through the hook'"))

        async def statement_text_in_ddl(conn: AsyncConnection) -> None:
            await conn.execute(text("SELECT 'UPDATE users SET x = 1'"))

        await SideEffectWriter(app_engine, TEST_AUDIT_CHAIN).run(fresh_tenant.id, statement_text_in_ddl)
    assert found == []


def test_the_allow_list_is_the_seed_and_tenant_transfer() -> None:
    assert dml_guard.ALLOWED == ("server/seed/", "server/tenant_transfer.py")
