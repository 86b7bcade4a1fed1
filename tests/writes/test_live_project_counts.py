"""`gwm_derived.tenant_project_counts` (migration 0025): the count of a tenant's unarchived projects that a
create's slot claim reads, kept by the database on every path that changes it, isolated per tenant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.db import TenantRef, create_tenant
from tests.writes.conftest import Rows, SignIn, mutate
from tests.writes.test_project_lifecycle import RESTORE
from tests.writes.test_projects import ARCHIVE, CREATE


async def _stored(app_engine: AsyncEngine, tenant: TenantRef) -> list[tuple[uuid.UUID, int]]:
    """Every counter row the server's role sees, in the tenant's transaction."""
    async with app_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        found = (
            await conn.execute(text("SELECT tenant_id, live_projects FROM gwm_derived.tenant_project_counts"))
        ).all()
        await conn.rollback()
    return [(row.tenant_id, int(row.live_projects)) for row in found]


async def _counted(rows: Rows) -> int:
    found = await rows.one(
        "SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t AND archived_at IS NULL"
    )
    return int(found.n)


async def test_the_counter_follows_every_change_of_a_tenants_unarchived_projects(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, fresh_tenant: TenantRef, app_engine: AsyncEngine,
    owner_engine: AsyncEngine,
) -> None:
    assert await _stored(app_engine, fresh_tenant) in ([], [(fresh_tenant.id, 0)])
    manager = await sign_in_as("Capture Manager")
    live = [await rows.project(project_name=f"Live {n}") for n in range(3)]
    await rows.project(project_name="Born archived", archived_at=datetime.now(UTC))
    assert await _stored(app_engine, fresh_tenant) == [(fresh_tenant.id, 3)] and await _counted(rows) == 3

    created = (await mutate(client, manager, CREATE, {"input": {"projectName": "Created"}}))["opportunityProjectCreate"]
    assert created["errors"] == []
    project = created["opportunityProject"]
    archived = await mutate(client, manager, ARCHIVE, {"input": {"rowId": project["rowId"],
                                                                 "updatedAt": project["updatedAt"]}})
    assert archived["opportunityProjectArchive"]["errors"] == []
    assert await _stored(app_engine, fresh_tenant) == [(fresh_tenant.id, 3)]

    restored = await mutate(client, manager, RESTORE, {"input": {
        "rowId": project["rowId"],
        "updatedAt": archived["opportunityProjectArchive"]["opportunityProject"]["updatedAt"]}})
    assert restored["opportunityProjectRestore"]["errors"] == []
    assert await _stored(app_engine, fresh_tenant) == [(fresh_tenant.id, 4)]

    # Changes made below the API (an operator's SQL, a tenant's deletion) count the same way; an update that
    # neither archives nor restores leaves it alone.
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(text("UPDATE opportunity_projects SET project_name = 'Renamed' WHERE id = :p"),
                           {"p": live[0].id})
        await conn.execute(text("UPDATE opportunity_projects SET archived_at = now() WHERE id = :p"),
                           {"p": live[1].id})
        await conn.execute(text("DELETE FROM opportunity_projects WHERE id = :p"), {"p": live[2].id})
    assert await _stored(app_engine, fresh_tenant) == [(fresh_tenant.id, 2)] and await _counted(rows) == 2


async def test_a_tenant_sees_only_its_own_counter_and_cannot_change_it(
    rows: Rows, fresh_tenant: TenantRef, app_engine: AsyncEngine, owner_engine: AsyncEngine
) -> None:
    other = await create_tenant(owner_engine)
    await Rows(owner_engine, other).project(project_name="Elsewhere")
    await rows.project(project_name="Here")
    assert await _stored(app_engine, fresh_tenant) == [(fresh_tenant.id, 1)]
    assert await _stored(app_engine, other) == [(other.id, 1)]
    for statement in (
        "UPDATE gwm_derived.tenant_project_counts SET live_projects = 0",
        "DELETE FROM gwm_derived.tenant_project_counts",
        f"INSERT INTO gwm_derived.tenant_project_counts VALUES ('{uuid.uuid4()}', 5)",
    ):
        async with app_engine.connect() as conn:
            await set_tenant(conn, fresh_tenant.id)
            with pytest.raises(DBAPIError, match="permission denied"):
                await conn.execute(text(statement))
            await conn.rollback()
    assert await _stored(app_engine, fresh_tenant) == [(fresh_tenant.id, 1)]
