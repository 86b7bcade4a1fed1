"""The statement counter that N+1 tests rely on counts what the engine really sends."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.support.sqlcount import assert_sql_count, count_statements


async def test_counts_each_statement(app_engine: AsyncEngine, tenant_a: TenantRef) -> None:
    with count_statements(app_engine) as statements:
        async with app_engine.connect() as conn:
            await set_tenant(conn, tenant_a.id)
            await conn.execute(text("SELECT 1"))
            await conn.execute(text("SELECT count(*) FROM users"))
            await conn.rollback()
    # set_config, the two SELECTs (BEGIN/ROLLBACK are not cursor executions)
    assert len(statements) == 3
    assert "set_config" in statements[0]


async def test_assert_sql_count_fails_on_a_different_count(app_engine: AsyncEngine) -> None:
    with pytest.raises(AssertionError, match="expected 1 SQL statements, got 2"):
        with assert_sql_count(app_engine, 1):
            async with app_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await conn.execute(text("SELECT 2"))
    with assert_sql_count(app_engine, 1):
        async with app_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
