"""`gwm audit verify`: one line per tenant and table, the first bad row named, exit 1."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.audit.conftest import append, rows_for, tampering
from tests.support.db import TEST_AUDIT_KEYS, TenantRef, create_tenant


async def _chains(owner_engine: AsyncEngine, tenant: TenantRef) -> dict[str, list[dict[str, Any]]]:
    return {
        table: await append(owner_engine, tenant, table, rows_for(table, tenant, count))
        for table, count in (("audit_logs", 4), ("change_history", 3), ("permission_audit", 2))
    }


async def test_a_clean_chain_passes_and_the_heads_are_printed(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    rows = await _chains(owner_engine, doomed)
    run = await gwm("audit", "verify", "--tenant", doomed.subdomain)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert len(lines) == 4, run.out
    for line, (table, written) in zip(lines, rows.items(), strict=False):
        head = written[-1]
        assert line == (
            f"{doomed.subdomain}: {table} tenant {doomed.id}: {len(written)} rows "
            f"(seq 1..{head['seq']}, head {head['row_hash'].hex()}): ok"
        )
    assert lines[-1] == f"verified 1 tenant(s), {sum(map(len, rows.values()))} audit rows: ok"


async def test_an_altered_row_is_named_and_verify_fails(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    rows = await _chains(owner_engine, doomed)
    altered = rows["audit_logs"][1]
    async with tampering(owner_engine, "audit_logs", doomed) as conn:
        await conn.execute(text("UPDATE audit_logs SET access_granted = false WHERE id = :id"), {"id": altered["id"]})
    run = await gwm("audit", "verify", "--tenant", str(doomed.id))
    assert run.code == 1
    failed = [line for line in run.out.splitlines() if "FAILED" in line]
    assert failed[0].endswith(
        f"FAILED at audit_logs tenant {doomed.id} seq 2 id {altered['id']}: hash mismatch: "
        "the row differs from what was signed"
    )
    assert failed[-1] == f"verified 1 tenant(s), {1 + 3 + 2} audit rows: FAILED in 1 table(s)"
    assert len(failed) == 2  # the other two tables still pass


async def test_a_deleted_row_in_the_middle_is_a_gap(gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef) -> None:
    rows = await _chains(owner_engine, doomed)
    async with tampering(owner_engine, "change_history", doomed) as conn:
        await conn.execute(text("DELETE FROM change_history WHERE id = :id"), {"id": rows["change_history"][1]["id"]})
    run = await gwm("audit", "verify", "--tenant", doomed.subdomain)
    assert run.code == 1
    after = rows["change_history"][2]
    assert f"FAILED at change_history tenant {doomed.id} seq 3 id {after['id']}: gap: seq 2 missing" in run.out


async def test_tenant_limits_verify_and_an_unknown_tenant_is_an_error(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    other = await create_tenant(owner_engine)
    await _chains(owner_engine, other)
    run = await gwm("audit", "verify", "--tenant", other.subdomain.upper())
    assert run.code == 0
    assert {line.split(":")[0] for line in run.out.splitlines()[:-1]} == {other.subdomain}
    assert str(doomed.id) not in run.out

    missing = await gwm("audit", "verify", "--tenant", "no-such-tenant")
    assert missing.code == 2 and "no tenant 'no-such-tenant'" in missing.err


async def test_a_key_missing_from_the_setting_is_reported(
    gwm: Any, owner_engine: AsyncEngine, doomed: TenantRef
) -> None:
    await _chains(owner_engine, doomed)
    other_key = "other:" + base64.b64encode(secrets.token_bytes(32)).decode()
    run = await gwm("audit", "verify", "--tenant", doomed.subdomain, keys=other_key)
    assert run.code == 1
    assert "seq 1 id" in run.out and "unknown key id: signed with key 'test1', which is not configured" in run.out
    rotated = await gwm("audit", "verify", "--tenant", doomed.subdomain, keys=f"{other_key},{TEST_AUDIT_KEYS}")
    assert rotated.code == 0, rotated.out


async def test_bad_audit_keys_are_a_settings_error(gwm: Any) -> None:
    run = await gwm("audit", "verify", keys="k1:tooshort")
    assert run.code == 2 and "gwm: audit key 'k1' must be exactly 32 bytes" in run.err
