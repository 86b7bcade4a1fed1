"""A database of their own for the scheduler's tests, and builders of what the claim looks at.

The claim spans tenants, so these tests run on a database migrated for them alone (no other test's
sources or polling configurations are due there, and theirs are never leased by these tests).
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import create_engine, set_tenant
from server import migrate
from server.embedded import bootstrap_database
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef, create_tenant

__all__ = [
    "SECRET_KEYS",
    "SyncDb",
    "add_polling",
    "add_project",
    "add_saved_search",
    "add_source",
    "new_tenant",
    "sync_db",
]

#: GWM_SECRET_KEYS of these tests (and of the `gwm sync` processes they start).
SECRET_KEYS = "k1:" + base64.b64encode(b"s" * 32).decode()
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class SyncDb:
    database: Database  # URLs of the scheduler's own database
    owner: AsyncEngine
    app: AsyncEngine

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database.owner_url,
            "GWM_APP_DATABASE_URL": self.database.app_url,
            "GWM_SECRET_KEYS": SECRET_KEYS,
            "GWM_AUDIT_KEYS": TEST_AUDIT_KEYS,
        }


@pytest.fixture(scope="module")
async def sync_db(database: Database) -> AsyncIterator[SyncDb]:
    name = f"gwm_sync_{uuid.uuid4().hex[:8]}"
    await bootstrap_database(database.superuser_url, name)
    own = Database(
        superuser_url=database.superuser_url,
        owner_url=database.owner_url.replace(f"/{database.name}", f"/{name}", 1),
        app_url=database.app_url.replace(f"/{database.name}", f"/{name}", 1),
        name=name,
    )
    await migrate.upgrade(own.owner_url)
    owner = create_engine(own.owner_url, pool_size=2, max_overflow=2, application_name="gwm-test-sync-owner")
    app = create_engine(own.app_url, pool_size=4, max_overflow=16, application_name="gwm-test-sync-app")
    try:
        yield SyncDb(database=own, owner=owner, app=app)
    finally:
        await owner.dispose()
        await app.dispose()
        conn = await asyncpg.connect(database.superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _insert(engine: AsyncEngine, tenant: TenantRef, table: str, values: dict[str, object]) -> uuid.UUID:
    values = {"tenant_id": tenant.id, **values}
    cols = ", ".join(values)
    params = ", ".join(f":{k}" for k in values)
    async with engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        row_id = await conn.scalar(text(f"INSERT INTO {table} ({cols}) VALUES ({params}) RETURNING id"), values)
    assert isinstance(row_id, uuid.UUID)
    return row_id


async def add_source(
    engine: AsyncEngine, tenant: TenantRef, *, active: bool = True, endpoint: str = "https://api.sam.test"
) -> uuid.UUID:
    return await _insert(
        engine,
        tenant,
        "external_opportunity_sources",
        {
            "source_name": f"SAM {uuid.uuid4().hex[:6]}",
            "api_endpoint": endpoint,
            "api_version": "v2",
            "authentication_type": "api_key",
            "api_credentials_encrypted": "{}",
            "is_active": active,
            "created_by": tenant.system_user_id,
        },
    )


async def add_project(
    engine: AsyncEngine,
    tenant: TenantRef,
    source_id: uuid.UUID,
    *,
    status: str = "active",
    archived: bool = False,
) -> uuid.UUID:
    values: dict[str, object] = {
        "project_name": f"Project {uuid.uuid4().hex[:6]}",
        "external_source_id": source_id,
        "external_opportunity_id": f"SOL-{uuid.uuid4().hex[:8]}",
        "project_status": status,
        "created_by": tenant.system_user_id,
    }
    if archived:
        values |= {"archived_at": T0, "archived_by": tenant.system_user_id}
    return await _insert(engine, tenant, "opportunity_projects", values)


async def add_polling(
    engine: AsyncEngine,
    tenant: TenantRef,
    project_id: uuid.UUID,
    source_id: uuid.UUID,
    *,
    active: bool = True,
    next_poll: datetime | None = None,
) -> uuid.UUID:
    return await _insert(
        engine,
        tenant,
        "polling_configurations",
        {
            "opportunity_project_id": project_id,
            "external_source_id": source_id,
            "is_active": active,
            "next_poll_timestamp": next_poll,
            "created_by": tenant.system_user_id,
        },
    )


async def add_saved_search(
    engine: AsyncEngine, tenant: TenantRef, source_id: uuid.UUID, *, active: bool = True
) -> uuid.UUID:
    return await _insert(
        engine,
        tenant,
        "saved_searches",
        {
            "name": f"Search {uuid.uuid4().hex[:6]}",
            "external_source_id": source_id,
            "is_active": active,
            "created_by": tenant.system_user_id,
        },
    )


async def new_tenant(db: SyncDb, *, is_active: bool = True) -> TenantRef:
    return await create_tenant(db.owner, None, is_active=is_active)
