"""`tenants.max_opportunity_projects`: creates stop at the limit, archived projects do not count,
and two creates racing for the last slot cannot both take it (resolvers/opportunities/mutations.py).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.db import TenantRef
from tests.writes.conftest import Caller, Rows, SignIn, mutate
from tests.writes.test_projects import ARCHIVE, CREATE


async def _set_limit(owner_engine: AsyncEngine, tenant: TenantRef, limit: int) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text("UPDATE tenants SET max_opportunity_projects = :n WHERE id = :t"), {"n": limit, "t": tenant.id}
        )


async def _create(client: httpx.AsyncClient, caller: Caller, name: str) -> dict[str, Any]:
    data = await mutate(client, caller, CREATE, {"input": {"projectName": name}})
    payload: dict[str, Any] = data["opportunityProjectCreate"]
    return payload


async def _counted(rows: Rows) -> int:
    found = await rows.one(
        "SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t AND archived_at IS NULL"
    )
    return int(found.n)


async def test_creates_stop_at_the_limit_and_archived_projects_do_not_count(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, fresh_tenant: TenantRef, owner_engine: AsyncEngine
) -> None:
    manager = await sign_in_as("Capture Manager")
    await _set_limit(owner_engine, fresh_tenant, 3)
    for n in range(2):
        await rows.project(project_name=f"Active {n}")
    for n in range(4):  # more archived projects than the limit: none of them counts
        await rows.project(project_name=f"Archived {n}", archived_at=datetime.now(UTC))

    third = await _create(client, manager, "Third")
    assert third["errors"] == [] and await _counted(rows) == 3

    over = await _create(client, manager, "Fourth")
    assert over["opportunityProject"] is None
    assert over["errors"] == [{
        "field": None,
        "code": "PROJECT_LIMIT",
        "message": "The organization has reached its limit of 3 opportunity projects; archive one or raise the limit.",
    }]
    assert await _counted(rows) == 3
    created = [log.after_values["project_name"] for log in await rows.audit(action="CREATE")]
    assert created == ["Third"]  # the refused create left no audit row either

    # Archiving one frees its slot.
    project = third["opportunityProject"]
    archive = {"input": {"rowId": project["rowId"], "updatedAt": project["updatedAt"]}}
    archived = await mutate(client, manager, ARCHIVE, archive)
    assert archived["opportunityProjectArchive"]["errors"] == []
    again = await _create(client, manager, "Fourth")
    assert again["errors"] == [] and await _counted(rows) == 3

    # A limit lowered below what the tenant has: nothing is archived, only new creates are refused.
    await _set_limit(owner_engine, fresh_tenant, 1)
    assert [e["code"] for e in (await _create(client, manager, "Fifth"))["errors"]] == ["PROJECT_LIMIT"]
    assert await _counted(rows) == 3


async def test_two_creates_racing_for_the_last_slot_one_wins(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, fresh_tenant: TenantRef, owner_engine: AsyncEngine
) -> None:
    """Both creates are held at the tenant row lock (taken here first), so both have passed every
    earlier step when it is released: without the lock, or with the count taken before it, both
    would see one free slot and both would commit."""
    first, second = await sign_in_as("Capture Manager"), await sign_in_as("Capture Manager")
    await _set_limit(owner_engine, fresh_tenant, 3)
    for n in range(2):
        await rows.project(project_name=f"Active {n}")

    async with owner_engine.connect() as holder:
        await set_tenant(holder, fresh_tenant.id)
        await holder.execute(text("SELECT 1 FROM tenants WHERE id = :t FOR NO KEY UPDATE"), {"t": fresh_tenant.id})
        racing = asyncio.gather(_create(client, first, "From first"), _create(client, second, "From second"))
        deadline = time.monotonic() + 8  # within the server's 10 s operation deadline
        async with owner_engine.connect() as watcher:
            while True:
                # The owner role cannot read other roles' queries or wait events; whom a backend
                # waits for (pg_blocking_pids) it can.
                waiting = await watcher.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND cardinality(pg_blocking_pids(pid)) > 0"
                ))
                await watcher.rollback()
                if waiting == 2:
                    break
                assert time.monotonic() < deadline, "the two creates never both waited for the tenant row lock"
                await asyncio.sleep(0.05)
        await holder.rollback()  # releases the lock: the creates take turns
        results = await racing

    winners = [r for r in results if r["errors"] == []]
    losers = [r for r in results if r["errors"]]
    assert len(winners) == 1 and len(losers) == 1
    assert [e["code"] for e in losers[0]["errors"]] == ["PROJECT_LIMIT"] and losers[0]["opportunityProject"] is None
    assert await _counted(rows) == 3
    stored = await rows.all("SELECT project_name FROM opportunity_projects WHERE tenant_id = :t")
    names = {r.project_name for r in stored}
    assert names == {"Active 0", "Active 1", winners[0]["opportunityProject"]["projectName"]}
