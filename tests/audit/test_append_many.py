"""AuditChain.append_many: several chains in two round trips (migration 0017's gwm_audit_chain_heads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_chain import AuditChainError, audit_table
from models.db import create_engine, set_tenant
from tests.audit.conftest import append, rows_for
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.roundtrips import count_round_trips


async def _verify(engine: AsyncEngine, tenant: TenantRef, *tables: str) -> dict[str, int]:
    rows: dict[str, int] = {}
    async with engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        for table in tables:
            report = await TEST_AUDIT_CHAIN.verify(conn, audit_table(table))
            assert report.ok, str(report)
            rows[table] = report.rows
    return rows


@pytest.fixture
async def one_connection(database: Database) -> AsyncIterator[AsyncEngine]:
    """The server's role through a pool of one connection: what was prepared on it stays prepared."""
    engine = create_engine(database.app_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def test_two_chains_take_two_round_trips_and_both_verify(
    one_connection: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    app_engine = one_connection
    await append(app_engine, fresh_tenant, "audit_logs", rows_for("audit_logs", fresh_tenant, 1))
    logs, history = audit_table("audit_logs"), audit_table("change_history")

    async def both(audits: int, changes: int) -> list[list[dict[str, Any]]]:
        async with app_engine.begin() as conn:
            await set_tenant(conn, fresh_tenant.id)
            written: list[list[dict[str, Any]]] = await conn.run_sync(TEST_AUDIT_CHAIN.append_many_sync, [
                (logs, rows_for("audit_logs", fresh_tenant, audits)),
                (history, rows_for("change_history", fresh_tenant, changes)),
            ])
            return written

    await both(1, 2)  # the statements prepared on the pooled connection (one per number of rows)
    with count_round_trips(app_engine) as counted:
        written = await both(1, 2)
    trips = list(counted)
    assert [len(rows) for rows in written] == [1, 2]
    assert [row["seq"] for row in written[0]] == [3]  # after the two appended before it
    assert [row["seq"] for row in written[1]] == [3, 4]
    assert written[1][1]["prev_hash"] == written[1][0]["row_hash"]
    listing = "\n".join(str(t) for t in trips)
    # BEGIN, the tenant, the locks and heads, both tables' rows, COMMIT.
    assert len(trips) == 5, listing
    assert "gwm_audit_chain_heads" in trips[2].sql and "appended_change_history" in trips[3].sql, listing
    assert await _verify(app_engine, fresh_tenant, "audit_logs", "change_history") == {
        "audit_logs": 3, "change_history": 4}


async def test_tables_are_named_once_each_in_the_lock_order(app_engine: AsyncEngine, fresh_tenant: TenantRef) -> None:
    logs, history = audit_table("audit_logs"), audit_table("change_history")
    async with app_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        wrong: list[list[tuple[Table, list[dict[str, Any]]]]] = [[(history, []), (logs, [])], [(logs, []), (logs, [])]]
        for batches in wrong:
            with pytest.raises(AuditChainError, match="once each, in the order"):
                await conn.run_sync(TEST_AUDIT_CHAIN.append_many_sync, batches)
        # Nothing to append: no statement at all.
        with count_round_trips(app_engine) as trips:
            assert await conn.run_sync(TEST_AUDIT_CHAIN.append_many_sync, [(logs, []), (history, [])]) == [[], []]
        assert list(trips) == []


async def test_a_batch_past_the_parameter_limit_is_inserted_table_by_table(
    app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    logs, history = audit_table("audit_logs"), audit_table("change_history")
    many = 30_000 // len(history.columns) + 10
    async with app_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        written = await conn.run_sync(TEST_AUDIT_CHAIN.append_many_sync, [
            (logs, rows_for("audit_logs", fresh_tenant, 1)), (history, rows_for("change_history", fresh_tenant, many)),
        ])
    assert [len(rows) for rows in written] == [1, many]
    assert await _verify(app_engine, fresh_tenant, "audit_logs", "change_history") == {
        "audit_logs": 1, "change_history": many}


async def test_concurrent_appends_see_the_head_the_lock_holder_committed(
    app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """Each waits for the (tenant, table) locks and then reads the heads: a fresh snapshot after the lock,
    so the eight chains of appends stay gapless and linked."""
    logs, history = audit_table("audit_logs"), audit_table("change_history")

    async def one() -> None:
        async with app_engine.begin() as conn:
            await set_tenant(conn, fresh_tenant.id)
            await conn.run_sync(TEST_AUDIT_CHAIN.append_many_sync, [
                (logs, rows_for("audit_logs", fresh_tenant, 1)),
                (history, rows_for("change_history", fresh_tenant, 2)),
            ])
            await asyncio.sleep(0.01)  # hold the locks a little: the others queue behind them

    await asyncio.gather(*(one() for _ in range(8)))
    assert await _verify(app_engine, fresh_tenant, "audit_logs", "change_history") == {
        "audit_logs": 8, "change_history": 16}
