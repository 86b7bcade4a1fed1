"""models/audit_chain.py: appending, the canonical encoding, verifying, concurrency and key rotation."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import itertools
import secrets
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.audit_chain import (
    AUDIT_TABLE_NAMES,
    AuditChain,
    AuditChainError,
    TableReport,
    audit_table,
    canonical_message,
)
from models.db import create_engine, set_tenant
from tests.audit.conftest import append, rows_for, tampering
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef, create_tenant

UTC = datetime.UTC
_EST = datetime.timezone(datetime.timedelta(hours=-5))


def _key() -> bytes:
    return secrets.token_bytes(32)


async def _verify(
    engine: AsyncEngine, tenant: TenantRef, table: str, chain: AuditChain = TEST_AUDIT_CHAIN
) -> TableReport:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await set_tenant(conn, tenant.id)
            return await chain.verify(conn, audit_table(table))


# -- appending ----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", AUDIT_TABLE_NAMES)
async def test_appended_rows_are_numbered_linked_and_verify(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, table: str
) -> None:
    first = await append(app_engine, fresh_tenant, table, rows_for(table, fresh_tenant, 3))
    second = await append(app_engine, fresh_tenant, table, rows_for(table, fresh_tenant, 2))
    rows = first + second
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] is None
    assert all(r["prev_hash"] == p["row_hash"] for p, r in itertools.pairwise(rows))
    assert all(r["hash_key_id"] == "test1" and len(r["row_hash"]) == 32 for r in rows)
    report = await _verify(app_engine, fresh_tenant, table)
    assert report.ok and report.rows == 5 and report.head_seq == 5
    assert report.head_hash == rows[-1]["row_hash"]


async def test_the_stored_row_is_the_signed_row(app_engine: AsyncEngine, fresh_tenant: TenantRef) -> None:
    """Values whose stored form differs from Python's (jsonb numbers, inet, key order) still verify."""
    (written,) = await append(app_engine, fresh_tenant, "audit_logs", [{
        "action_type": "test.encoding",
        "entity_type": "organization",
        "ip_address": "::ffff:10.1.2.3",
        "user_agent": "Mozilla/5.0 (ünïcødé) \"quoted\"\n",
        "after_values": {"z": 1e16, "a": [1.0, 100, -0.0, 0.1, 10**30 + 1], "é": {"b": None, "a": True}},
        "before_values": ["text", 2.5e-7],
        "changed_fields": [],
        "response_status": 200,
        "timestamp_utc": datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=_EST),
        "change_reason": "trailing spaces beyond the column are dropped as varchar(255) would" + " " * 300,
    }])
    async with app_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        stored = (await conn.execute(
            audit_table("audit_logs").select().where(audit_table("audit_logs").c.id == written["id"])
        )).mappings().one()
    assert stored["after_values"]["z"] == 10**16  # jsonb gave back an integer for 1e16
    assert canonical_message(audit_table("audit_logs"), dict(stored)) == canonical_message(
        audit_table("audit_logs"), written
    )
    assert (await _verify(app_engine, fresh_tenant, "audit_logs")).ok


def test_the_canonical_encoding_is_pinned() -> None:
    row = {
        "id": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "tenant_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "seq": 2,
        "prev_hash": b"\xab" * 2,
        "row_hash": b"ignored",
        "hash_key_id": "k1",
        "action_type": "x",
        "entity_type": "y",
        "ip_address": ipaddress.ip_address("10.0.0.1"),
        "after_values": {"b": 100, "a": [0.5, "é"]},
        "access_granted": False,
        "risk_level": "low",
        "timestamp_utc": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "user_id": None,
    }
    assert canonical_message(audit_table("audit_logs"), row) == (
        b'gwm-audit-v1\n{"columns":{"access_granted":false,"action_type":"x","after_values":{"a":[5e-1,"\xc3\xa9"],'
        b'"b":1e2},"entity_type":"y","hash_key_id":"k1","id":"00000000-0000-4000-8000-000000000001",'
        b'"ip_address":"0a000001/32","prev_hash":"abab","risk_level":"low","seq":2,'
        b'"tenant_id":"00000000-0000-4000-8000-000000000002","timestamp_utc":"2026-01-02T03:04:05.000000Z"},'
        b'"table":"audit_logs"}'
    )
    # Every column counts, and so does the table.
    assert canonical_message(audit_table("audit_logs"), {**row, "seq": 3}) != canonical_message(
        audit_table("audit_logs"), row
    )
    edited = {**row, "after_values": {"b": 10**2 + 1, "a": [0.5, "é"]}}
    assert canonical_message(audit_table("audit_logs"), edited) != canonical_message(audit_table("audit_logs"), row)


async def test_append_refuses_what_it_cannot_chain(
    app_conn: AsyncConnection, tenant_a: TenantRef, tenant_b: TenantRef
) -> None:
    logs = audit_table("audit_logs")
    row = rows_for("audit_logs", tenant_a, 1)[0]
    with pytest.raises(AuditChainError, match="belong to the audit chain"):
        await TEST_AUDIT_CHAIN.append(app_conn, logs, [{**row, "seq": 7}])
    with pytest.raises(AuditChainError, match="has no column"):
        await TEST_AUDIT_CHAIN.append(app_conn, logs, [{**row, "colour": "red"}])
    with pytest.raises(AuditChainError, match="in a transaction of tenant"):
        await TEST_AUDIT_CHAIN.append(app_conn, logs, [{**row, "tenant_id": tenant_b.id}])
    with pytest.raises(AuditChainError, match="action_type is required"):
        await TEST_AUDIT_CHAIN.append(app_conn, logs, [{"entity_type": "organization"}])
    with pytest.raises(AuditChainError, match="timezone-aware"):
        await TEST_AUDIT_CHAIN.append(app_conn, logs, [{**row, "timestamp_utc": datetime.datetime(2026, 1, 1)}])
    with pytest.raises(AuditChainError, match="not a chained audit table"):
        await TEST_AUDIT_CHAIN.append(app_conn, audit_table("audit_logs").metadata.tables["users"], [row])
    assert await TEST_AUDIT_CHAIN.append(app_conn, logs, []) == []


async def test_append_needs_a_tenant_and_read_committed(app_engine: AsyncEngine, fresh_tenant: TenantRef) -> None:
    logs = audit_table("audit_logs")
    rows = rows_for("audit_logs", fresh_tenant, 1)
    async with app_engine.connect() as conn:
        with pytest.raises(AuditChainError, match="no tenant is set"):
            await TEST_AUDIT_CHAIN.append(conn, logs, rows)
        await conn.rollback()
        await conn.execution_options(isolation_level="REPEATABLE READ")
        await set_tenant(conn, fresh_tenant.id)
        with pytest.raises(AuditChainError, match="READ COMMITTED transactions, not REPEATABLE READ"):
            await TEST_AUDIT_CHAIN.append(conn, logs, rows)
        await conn.rollback()


def test_keys_from_the_setting() -> None:
    one, two = (base64.b64encode(_key()).decode() for _ in range(2))
    chain = AuditChain.from_setting(f"new:{one}, old:{two.rstrip('=').replace('+', '-').replace('/', '_')}")
    assert chain.current_key_id == "new" and chain.key_ids == ("new", "old")
    assert one not in repr(chain) and "new" in repr(chain)
    for bad, message in (
        ("nokey", "not 'key_id:base64key'"),
        (f"a:{one},a:{two}", "appears twice"),
        ("a:!!!!", "not valid base64"),
        ("a:" + base64.b64encode(b"short").decode(), "exactly 32 bytes"),
        (f"bad id:{one}", "1-32 letters"),
    ):
        with pytest.raises(AuditChainError, match=message):
            AuditChain.from_setting(bad)


# -- concurrency --------------------------------------------------------------------------------


async def test_concurrent_appends_for_one_tenant_make_one_gapless_chain(
    database: Database, owner_engine: AsyncEngine
) -> None:
    workers, each = 8, 5
    tenant = await create_tenant(owner_engine)
    other = await create_tenant(owner_engine)
    engine = create_engine(database.app_url, pool_size=workers * 2, max_overflow=0)
    try:
        async def writer(target: TenantRef) -> None:
            for _ in range(each):
                async with engine.begin() as conn:
                    await set_tenant(conn, target.id)
                    await TEST_AUDIT_CHAIN.append(conn, audit_table("audit_logs"), rows_for("audit_logs", target, 2))
                    # Hold the transaction (and the tenant's lock) a moment, so writers really queue.
                    await conn.execute(text("SELECT pg_sleep(0.002)"))

        await asyncio.gather(*(writer(t) for _ in range(workers) for t in (tenant, other)))
        for target in (tenant, other):
            async with engine.begin() as conn:
                await set_tenant(conn, target.id)
                seqs = list((await conn.execute(text("SELECT seq FROM audit_logs ORDER BY seq"))).scalars())
            assert seqs == list(range(1, workers * each * 2 + 1))
            report = await _verify(engine, target, "audit_logs")
            assert report.ok, report
    finally:
        await engine.dispose()


async def test_each_table_and_tenant_has_its_own_chain(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, owner_engine: AsyncEngine
) -> None:
    other = await create_tenant(owner_engine)
    await append(app_engine, fresh_tenant, "audit_logs", rows_for("audit_logs", fresh_tenant, 3))
    (theirs,) = await append(app_engine, other, "audit_logs", rows_for("audit_logs", other, 1))
    (history,) = await append(app_engine, fresh_tenant, "change_history", rows_for("change_history", fresh_tenant, 1))
    assert theirs["seq"] == 1 and theirs["prev_hash"] is None
    assert history["seq"] == 1 and history["prev_hash"] is None


# -- verifying ----------------------------------------------------------------------------------


async def test_rows_before_the_chain_are_listed_as_unchained(
    owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    """The migration gives existing rows a seq and no hash; the chain continues after them."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, doomed.id)
        await conn.execute(text("ALTER TABLE audit_logs DISABLE TRIGGER trg_audit_logs_chain_link"))
        await conn.execute(
            text("INSERT INTO audit_logs (tenant_id, seq, action_type, entity_type) "
                 "VALUES (:t, 1, 'old', 'user'), (:t, 2, 'old', 'user')"),
            {"t": doomed.id},
        )
        await conn.execute(text("ALTER TABLE audit_logs ENABLE TRIGGER trg_audit_logs_chain_link"))
    (row,) = await append(owner_engine, doomed, "audit_logs", rows_for("audit_logs", doomed, 1))
    assert row["seq"] == 3 and row["prev_hash"] is None
    report = await _verify(owner_engine, doomed, "audit_logs")
    assert report.ok and report.rows == 3 and report.unchained == 2
    assert "2 unchained before migration 0005" in str(report)

    # Passing the first signed row off as one from before the migration breaks the next link.
    await append(owner_engine, doomed, "audit_logs", rows_for("audit_logs", doomed, 1))
    async with tampering(owner_engine, "audit_logs", doomed) as conn:
        await conn.execute(text("UPDATE audit_logs SET row_hash = NULL, hash_key_id = NULL WHERE seq = 3"))
    fault = (await _verify(owner_engine, doomed, "audit_logs")).fault
    assert fault is not None and (fault.seq, fault.reason) == (4, "broken link")


@pytest.mark.parametrize(
    ("change", "seq", "reason"),
    [
        ("UPDATE change_history SET field_name = 'edited' WHERE seq = 3", 3, "hash mismatch"),
        ("UPDATE change_history SET tenant_id = tenant_id, change_impact_level = 'high' WHERE seq = 1", 1,
         "hash mismatch"),
        ("DELETE FROM change_history WHERE seq IN (2, 3)", 4, "gap"),
        ("DELETE FROM change_history WHERE seq = 1", 2, "unanchored start"),
        ("UPDATE change_history SET prev_hash = (SELECT row_hash FROM change_history WHERE seq = 1) WHERE seq = 4",
         4, "broken link"),
        ("UPDATE change_history SET row_hash = NULL, hash_key_id = NULL, prev_hash = NULL WHERE seq = 5", 5,
         "unchained row"),
    ],
)
async def test_verify_names_the_first_row_that_does_not_fit(
    owner_engine: AsyncEngine, doomed: TenantRef, change: str, seq: int, reason: str
) -> None:
    rows = await append(owner_engine, doomed, "change_history", rows_for("change_history", doomed, 5))
    async with tampering(owner_engine, "change_history", doomed) as conn:
        await conn.execute(text(change))
    report = await _verify(owner_engine, doomed, "change_history")
    fault = report.fault
    assert fault is not None and (fault.seq, fault.reason) == (seq, reason), fault
    assert fault.row_id == rows[seq - 1]["id"] and fault.table == "change_history" and fault.tenant_id == doomed.id


async def test_rotation_old_rows_verify_while_their_key_is_listed(
    owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    old_key, new_key = _key(), _key()
    table = "permission_audit"
    before = AuditChain({"old": old_key})
    after = AuditChain({"new": new_key, "old": old_key})
    old_rows = await append(owner_engine, doomed, table, rows_for(table, doomed, 2), before)
    new_rows = await append(owner_engine, doomed, table, rows_for(table, doomed, 2), after)
    assert [r["hash_key_id"] for r in old_rows + new_rows] == ["old", "old", "new", "new"]
    assert new_rows[0]["prev_hash"] == old_rows[-1]["row_hash"]
    assert (await _verify(owner_engine, doomed, table, after)).ok

    dropped = await _verify(owner_engine, doomed, table, AuditChain({"new": new_key}))
    fault = dropped.fault
    assert fault is not None and (fault.seq, fault.reason) == (1, "unknown key id") and "'old'" in fault.detail
    # The wrong key under the right name: the hash does not match.
    wrong = await _verify(owner_engine, doomed, table, AuditChain({"new": new_key, "old": _key()}))
    assert wrong.fault is not None and (wrong.fault.seq, wrong.fault.reason) == (1, "hash mismatch")
