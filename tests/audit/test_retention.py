"""Retention purges and whole-tenant deletion: the only ways audit rows leave, both recorded."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_chain import PURGE_ACTION, AuditChainError, audit_table, delete_tenant
from models.db import set_tenant
from tests.audit.conftest import append, rows_for, tampering
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant

UTC = datetime.UTC
OLD = datetime.datetime(2020, 1, 1, tzinfo=UTC)
CUTOFF = datetime.datetime(2024, 1, 1, tzinfo=UTC)


async def _aged(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, list[dict[str, Any]]]:
    """Per table, 3 rows recorded in 2020 and 2 recorded now; change_history's last old row is a parent."""
    logs = await append(owner_engine, tenant, "audit_logs", rows_for("audit_logs", tenant, 3, timestamp_utc=OLD))
    perms = await append(
        owner_engine, tenant, "permission_audit", rows_for("permission_audit", tenant, 3, timestamp_utc=OLD)
    )
    changes = await append(
        owner_engine, tenant, "change_history", rows_for("change_history", tenant, 3, created_at=OLD)
    )
    logs += await append(owner_engine, tenant, "audit_logs", rows_for("audit_logs", tenant, 2))
    perms += await append(owner_engine, tenant, "permission_audit", rows_for("permission_audit", tenant, 2))
    changes += await append(
        owner_engine, tenant, "change_history",
        rows_for("change_history", tenant, 2, parent_change_id=changes[2]["id"]),
    )
    return {"audit_logs": logs, "change_history": changes, "permission_audit": perms}


async def _seqs(engine: AsyncEngine, tenant: TenantRef, table: str) -> list[int]:
    async with engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        return list((await conn.execute(text(f"SELECT seq FROM {table} ORDER BY seq"))).scalars())


async def test_a_purge_removes_old_rows_records_itself_and_verify_still_passes(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    await _aged(owner_engine, doomed)
    async with owner_engine.begin() as conn:
        report = await TEST_AUDIT_CHAIN.purge_before(conn, doomed.id, CUTOFF, requested_by="retention test")
    # change_history keeps its third row: a kept change still points at it as its parent.
    assert report.deleted == {"audit_logs": 3, "change_history": 2, "permission_audit": 3}
    assert await _seqs(owner_engine, doomed, "audit_logs") == [4, 5, 6]  # 6: the purge's own record
    assert await _seqs(owner_engine, doomed, "change_history") == [3, 4, 5]
    assert await _seqs(owner_engine, doomed, "permission_audit") == [4, 5]

    record = report.record
    assert record["action_type"] == PURGE_ACTION and record["seq"] == 6
    assert record["after_values"]["requested_by"] == "retention test"
    assert record["after_values"]["before"] == "2024-01-01T00:00:00.000000Z"
    assert record["after_values"]["tables"]["change_history"]["first_seq"] == 3
    run = await gwm("audit", "verify", "--tenant", doomed.subdomain)
    assert run.code == 0, run.out
    assert f"audit_logs tenant {doomed.id}: 3 rows (seq 4..6" in run.out

    # A row deleted from the start outside a purge no longer matches the recorded anchor.
    async with tampering(owner_engine, "permission_audit", doomed) as conn:
        await conn.execute(text("DELETE FROM permission_audit WHERE seq = 4"))
    run = await gwm("audit", "verify", "--tenant", doomed.subdomain)
    assert run.code == 1 and "permission_audit" in run.out and "seq 5" in run.out
    assert "gap: the oldest row should be seq 4" in run.out


async def test_a_forged_purge_record_is_caught(owner_engine: AsyncEngine, doomed: TenantRef) -> None:
    await _aged(owner_engine, doomed)
    async with owner_engine.begin() as conn:
        await TEST_AUDIT_CHAIN.purge_before(conn, doomed.id, CUTOFF, requested_by="retention test")
    async with tampering(owner_engine, "audit_logs", doomed) as conn:
        await conn.execute(text(
            "UPDATE audit_logs SET after_values = jsonb_set(after_values, '{tables,permission_audit,first_seq}', '5') "
            "WHERE action_type = :a"), {"a": PURGE_ACTION})
    async with owner_engine.begin() as conn:
        await set_tenant(conn, doomed.id)
        report = await TEST_AUDIT_CHAIN.verify(conn, audit_table("permission_audit"))
    assert report.fault is not None
    assert (report.fault.table, report.fault.reason) == ("audit_logs", "hash mismatch")


async def test_a_purge_keeps_the_newest_row_of_each_chain(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef, tmp_path: Any
) -> None:
    await append(owner_engine, doomed, "permission_audit", rows_for("permission_audit", doomed, 3, timestamp_utc=OLD))
    archive = str(tmp_path / "trail.jsonl")  # purge deletes only rows a verified archive holds
    assert (await gwm("audit", "archive", "--tenant", doomed.subdomain, "--before", "2030-01-01",
                      "--output", archive)).code == 0
    run = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", "2030-01-01", "--yes",
                    "--archive", archive)
    assert run.code == 0, run.err
    assert run.out == (
        f"{doomed.subdomain}: purged rows recorded before 2030-01-01T00:00:00+00:00: "
        "audit_logs 0, change_history 0, permission_audit 2\n"
    )
    assert await _seqs(owner_engine, doomed, "permission_audit") == [3]
    (row,) = await append(owner_engine, doomed, "permission_audit", rows_for("permission_audit", doomed, 1))
    assert row["seq"] == 4  # the chain carries on from the kept row
    # Purged again: the newest record accounts for every table, the older one is gone with its era.
    async with owner_engine.begin() as conn:
        await TEST_AUDIT_CHAIN.purge_before(conn, doomed.id, datetime.datetime(2100, 1, 1, tzinfo=UTC),
                                            requested_by="second purge")
    assert await _seqs(owner_engine, doomed, "audit_logs") == [1, 2]
    assert await _seqs(owner_engine, doomed, "permission_audit") == [4]
    assert (await gwm("audit", "verify", "--tenant", doomed.subdomain)).code == 0


async def test_purge_needs_confirmation_and_a_valid_time(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    refused = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", "2020-01-01")
    assert refused.code == 2 and "run again with --yes" in refused.err
    bad = await gwm("audit", "purge", "--tenant", doomed.subdomain, "--before", "last tuesday", "--yes")
    assert bad.code == 2 and "is not an ISO date or time" in bad.err
    async with owner_engine.begin() as conn:
        with pytest.raises(AuditChainError, match="timezone-aware"):
            await TEST_AUDIT_CHAIN.purge_before(conn, doomed.id, datetime.datetime(2020, 1, 1), requested_by="x")


async def test_deleting_a_tenant_removes_its_trail_and_logs_the_heads(
    owner_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await create_tenant(owner_engine)
    head = (await append(owner_engine, tenant, "audit_logs", rows_for("audit_logs", tenant, 2)))[-1]
    await append(owner_engine, tenant, "change_history", rows_for("change_history", tenant, 1))
    with caplog.at_level(logging.WARNING, logger="models.audit_chain"):
        async with owner_engine.begin() as conn:
            deletion = await delete_tenant(conn, tenant.id)
    assert deletion.subdomain == tenant.subdomain
    assert deletion.audit_rows == {"audit_logs": 2, "change_history": 1, "permission_audit": 0}
    assert deletion.heads["audit_logs"] == (2, head["row_hash"].hex())
    assert deletion.heads["permission_audit"] == (0, None)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "models.audit_chain"]
    assert message.startswith(f"tenant {tenant.id} ({tenant.subdomain}) deleted with its audit trail: ")
    assert f"audit_logs 2 rows, head seq 2 hash {head['row_hash'].hex()}" in message
    async with owner_engine.connect() as conn:
        assert tenant.id not in set((await conn.execute(text("SELECT tenant_id FROM gwm_tenant_ids()"))).scalars())
        await set_tenant(conn, tenant.id)
        assert await conn.scalar(text("SELECT count(*) FROM audit_logs")) == 0
        with pytest.raises(AuditChainError, match="no tenant"):
            await delete_tenant(conn, tenant.id)
        await conn.rollback()
