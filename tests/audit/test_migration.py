"""Migration 0005 on a database that already has audit rows, and `gwm db reset` over a chained trail."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from models.audit_chain import AUDIT_TABLE_NAMES, audit_table
from models.db import create_engine, set_tenant
from server import migrate
from tests.audit.conftest import append, rows_for
from tests.support.db import TEST_AUDIT_CHAIN, TEST_AUDIT_KEYS, create_tenant

ROOT = Path(__file__).resolve().parents[2]


async def test_rows_written_before_0005_are_numbered_and_the_chain_follows(scratch_owner_url: str) -> None:
    await migrate.upgrade(scratch_owner_url, "0004")
    engine = create_engine(scratch_owner_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            tenant_id = await conn.scalar(text("SELECT gen_random_uuid()"))
            await set_tenant(conn, tenant_id)
            await conn.execute(
                text("INSERT INTO tenants (id, name, subdomain, plan_type) VALUES (:t, 'Old', 'old-trail', 'x')"),
                {"t": tenant_id},
            )
            for hour in (3, 1, 2):  # numbered by when they were recorded, not by insertion order
                await conn.execute(
                    text("INSERT INTO audit_logs (tenant_id, action_type, entity_type, timestamp_utc) "
                         "VALUES (:t, :a, 'user', make_timestamptz(2020, 1, 1, :h, 0, 0, 'UTC'))"),
                    {"t": tenant_id, "a": f"legacy.{hour}", "h": hour},
                )
        await engine.dispose()
        await migrate.upgrade(scratch_owner_url)

        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            legacy = (await conn.execute(text("SELECT seq, action_type, row_hash FROM audit_logs ORDER BY seq"))).all()
            assert [tuple(r) for r in legacy] == [(1, "legacy.1", None), (2, "legacy.2", None), (3, "legacy.3", None)]
            (row,) = await TEST_AUDIT_CHAIN.append(conn, audit_table("audit_logs"), [{"action_type": "new",
                                                                                       "entity_type": "user"}])
            assert (row["seq"], row["prev_hash"]) == (4, None)
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            report = await TEST_AUDIT_CHAIN.verify(conn, audit_table("audit_logs"))
        assert report.ok and (report.rows, report.unchained) == (4, 3)
        assert "3 unchained before migration 0005" in str(report)

        # Down and up again with the rows in place: the chain columns go and come back.
        await engine.dispose()
        await migrate.downgrade(scratch_owner_url, "0004")
        await migrate.upgrade(scratch_owner_url)
        async with engine.begin() as conn:
            await set_tenant(conn, tenant_id)
            assert list((await conn.execute(text("SELECT seq FROM audit_logs ORDER BY seq"))).scalars()) == [1, 2, 3, 4]
    finally:
        await engine.dispose()


async def test_gwm_db_reset_works_over_a_chained_trail(scratch_owner_url: str) -> None:
    await migrate.upgrade(scratch_owner_url)
    engine = create_engine(scratch_owner_url, pool_size=1, max_overflow=0)
    try:
        tenant = await create_tenant(engine, "Doomed")
        for table in AUDIT_TABLE_NAMES:
            await append(engine, tenant, table, rows_for(table, tenant, 2))
        await engine.dispose()
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "GWM_APP_DATABASE_URL"}}
        env.update(
            DATABASE_URL=scratch_owner_url,
            GWM_APP_DATABASE_URL=scratch_owner_url.replace("gwm_owner@", "gwm_app@", 1),
            GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        )
        reset = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "server.cli", "db", "reset", "--yes", "--skip-seed"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert reset.returncode == 0, reset.stderr
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM gwm_tenant_ids()")) == 0
    finally:
        await engine.dispose()
