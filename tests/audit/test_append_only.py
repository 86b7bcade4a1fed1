"""The audit tables are append-only in the database, whoever asks (migration 0005, W3)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.audit_chain import AUDIT_TABLE_NAMES, audit_table
from models.db import set_tenant
from tests.audit.conftest import append, rows_for
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef

STATEMENTS = {
    "UPDATE": "UPDATE {table} SET tenant_id = tenant_id",
    "DELETE": "DELETE FROM {table}",
    "TRUNCATE": "TRUNCATE {table}",
}


@pytest.mark.parametrize("table", AUDIT_TABLE_NAMES)
@pytest.mark.parametrize("verb", STATEMENTS)
async def test_the_server_role_may_not_change_or_remove_audit_rows(
    app_conn: AsyncConnection, tenant_a: TenantRef, table: str, verb: str
) -> None:
    await TEST_AUDIT_CHAIN.append(app_conn, audit_table(table), rows_for(table, tenant_a, 1))
    with pytest.raises(DBAPIError, match="permission denied for table"):
        await app_conn.execute(text(STATEMENTS[verb].format(table=table)))


@pytest.mark.parametrize("table", AUDIT_TABLE_NAMES)
@pytest.mark.parametrize("verb", STATEMENTS)
async def test_the_owner_is_refused_by_the_trigger_outside_the_purge_functions(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef, table: str, verb: str
) -> None:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await TEST_AUDIT_CHAIN.append(conn, audit_table(table), rows_for(table, fresh_tenant, 2))
        with pytest.raises(DBAPIError, match=f"{table} is append-only: {verb} refused"):
            await conn.execute(text(STATEMENTS[verb].format(table=table)))
        await conn.rollback()


async def test_the_purge_flag_set_by_hand_never_allows_an_update(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await TEST_AUDIT_CHAIN.append(conn, audit_table("audit_logs"), rows_for("audit_logs", fresh_tenant, 1))
        await conn.execute(text("SELECT set_config('gwm.audit_purge', 'on', true)"))
        with pytest.raises(DBAPIError, match="audit_logs is append-only: UPDATE refused"):
            await conn.execute(text("UPDATE audit_logs SET action_type = 'forged'"))
        await conn.rollback()


async def test_deleting_a_tenant_directly_is_refused_once_it_has_audit_rows(
    owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    # The rows cascade from tenants: the trigger sees the cascade too; gwm_delete_tenant() is the way.
    await append(owner_engine, fresh_tenant, "audit_logs", rows_for("audit_logs", fresh_tenant, 1))
    with pytest.raises(DBAPIError, match="audit_logs is append-only: DELETE refused"):
        async with owner_engine.begin() as conn:
            await set_tenant(conn, fresh_tenant.id)
            await conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": fresh_tenant.id})


@pytest.mark.parametrize("function", ["gwm_audit_purge(:t, now())", "gwm_delete_tenant(:t)"])
async def test_the_server_role_may_not_call_the_purge_functions(
    app_conn: AsyncConnection, tenant_a: TenantRef, function: str
) -> None:
    with pytest.raises(DBAPIError, match="permission denied for function"):
        await app_conn.execute(text(f"SELECT * FROM {function}"), {"t": tenant_a.id})


async def test_a_user_with_audit_rows_is_deactivated_not_deleted(
    app_conn: AsyncConnection, tenant_a: TenantRef
) -> None:
    user = (
        await app_conn.execute(
            text("INSERT INTO users (tenant_id, email, first_name, last_name) "
                 "VALUES (:t, 'evidence@example.test', 'Eve', 'Dence') RETURNING id"),
            {"t": tenant_a.id},
        )
    ).scalar_one()
    await TEST_AUDIT_CHAIN.append(
        app_conn, audit_table("audit_logs"), rows_for("audit_logs", tenant_a, 1, user_id=user)
    )
    await app_conn.execute(text("SAVEPOINT before_delete"))
    with pytest.raises(IntegrityError, match="fk_audit_logs_tenant_id_user_id_users"):
        await app_conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": user})
    await app_conn.execute(text("ROLLBACK TO SAVEPOINT before_delete"))
    await app_conn.execute(text("UPDATE users SET is_active = false WHERE id = :u"), {"u": user})
    assert await app_conn.scalar(text("SELECT count(*) FROM audit_logs WHERE user_id = :u"), {"u": user}) == 1


async def test_the_audit_rows_user_references_are_restrict(app_conn: AsyncConnection) -> None:
    rows = await app_conn.execute(
        text(
            "SELECT conrelid::regclass::text AS referencing, confdeltype::text FROM pg_constraint"
            " WHERE contype = 'f' AND confrelid = 'users'::regclass"
            " AND conrelid IN ('audit_logs'::regclass, 'change_history'::regclass, 'permission_audit'::regclass)"
        )
    )
    assert sorted((r.referencing, r.confdeltype) for r in rows) == [
        ("audit_logs", "r"), ("change_history", "r"), ("permission_audit", "r"),
    ]


# -- inserts outside the chain --------------------------------------------------------------------


async def test_an_insert_without_a_hash_is_refused(app_conn: AsyncConnection, tenant_a: TenantRef) -> None:
    with pytest.raises(IntegrityError, match="audit_logs rows are written through the audit chain"):
        await app_conn.execute(
            text("INSERT INTO audit_logs (tenant_id, seq, action_type, entity_type) VALUES (:t, 1, 'x', 'y')"),
            {"t": tenant_a.id},
        )


async def test_an_insert_that_does_not_extend_the_chain_is_refused(
    app_conn: AsyncConnection, tenant_a: TenantRef
) -> None:
    (last,) = await TEST_AUDIT_CHAIN.append(
        app_conn, audit_table("audit_logs"), rows_for("audit_logs", tenant_a, 1)
    )
    forged = {"t": tenant_a.id, "h": b"\x01" * 32}
    insert = text(
        "INSERT INTO audit_logs (tenant_id, seq, prev_hash, row_hash, hash_key_id, action_type, entity_type) "
        "VALUES (:t, :seq, :prev, :h, 'test1', 'forged', 'organization')"
    )
    for seq, prev in ((last["seq"] + 2, last["row_hash"]), (last["seq"] + 1, b"\x02" * 32)):
        await app_conn.execute(text("SAVEPOINT forged"))
        with pytest.raises(IntegrityError, match="does not extend the chain"):
            await app_conn.execute(insert, {**forged, "seq": seq, "prev": prev})
        await app_conn.execute(text("ROLLBACK TO SAVEPOINT forged"))


async def test_a_chained_row_without_a_tenant_is_refused_by_row_level_security(app_engine: AsyncEngine) -> None:
    # A row that would start a chain passes the link trigger; row-level security still refuses it.
    with pytest.raises(DBAPIError, match="row-level security"):
        async with app_engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO audit_logs (tenant_id, seq, row_hash, hash_key_id, action_type, entity_type) "
                    "VALUES (gen_random_uuid(), 1, :h, 'test1', 'forged', 'organization')"
                ),
                {"h": b"\x01" * 32},
            )
