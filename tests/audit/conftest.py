"""Fixtures for the audit chain: tenants that are deleted afterwards, the real `gwm` CLI, tampering."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_chain import AuditChain, audit_table, delete_tenant
from models.db import set_tenant
from server.cli import main
from server.embedded import bootstrap_database
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TEST_AUDIT_KEYS, TenantRef, create_tenant

# A minimal valid row per audit table (the tenant's system user where a user is required).
ROWS: dict[str, Callable[[TenantRef, int], dict[str, Any]]] = {
    "audit_logs": lambda t, n: {"action_type": f"test.{n}", "entity_type": "organization"},
    "change_history": lambda t, n: {
        "entity_type": "opportunity_project",
        "entity_id": uuid.uuid4(),
        "field_name": f"field_{n}",
        "change_source": "user",
    },
    "permission_audit": lambda t, n: {
        "user_id": t.system_user_id,
        "resource_type": "opportunity_project",
        "permission_checked": "opportunity:read",
        "permission_granted": False,
        "request_id": f"req-{uuid.uuid4()}",
    },
}


def rows_for(table: str, tenant: TenantRef, count: int, **columns: Any) -> list[dict[str, Any]]:
    return [{**ROWS[table](tenant, n), **columns} for n in range(count)]


async def append(
    engine: AsyncEngine,
    tenant: TenantRef,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    chain: AuditChain = TEST_AUDIT_CHAIN,
) -> list[dict[str, Any]]:
    """Append and commit, in a transaction of its own."""
    async with engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        return await chain.append(conn, audit_table(table), rows)


@asynccontextmanager
async def tampering(owner_engine: AsyncEngine, table: str, tenant: TenantRef) -> AsyncIterator[Any]:
    """As the owner, with the append-only trigger disabled: what someone holding the database can do."""
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER trg_{table}_append_only"))
        yield conn
        await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER trg_{table}_append_only"))


@pytest.fixture
async def doomed(owner_engine: AsyncEngine) -> AsyncIterator[TenantRef]:
    """A committed tenant deleted (audit trail and all) at the end: its chain may be left broken."""
    tenant = await create_tenant(owner_engine)
    yield tenant
    async with owner_engine.begin() as conn:
        await delete_tenant(conn, tenant.id)


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def gwm(
    database: Database, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """`gwm ARGS` through server.cli.main (in a thread: it runs its own event loop), as an operator would."""
    monkeypatch.setenv("DATABASE_URL", database.owner_url)
    monkeypatch.setenv("GWM_APP_DATABASE_URL", database.app_url)
    monkeypatch.setenv("GWM_AUDIT_KEYS", TEST_AUDIT_KEYS)

    async def run(*argv: str, keys: str | None = None) -> Run:
        if keys is not None:
            monkeypatch.setenv("GWM_AUDIT_KEYS", keys)
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))
        finally:
            monkeypatch.setenv("GWM_AUDIT_KEYS", TEST_AUDIT_KEYS)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
async def scratch_owner_url(database: Database) -> AsyncIterator[str]:
    """A database of its own in the session's cluster, for migrating down and up."""
    name = f"gwm_audit_{uuid.uuid4().hex[:8]}"
    await bootstrap_database(database.superuser_url, name)
    yield database.owner_url.replace(f"/{database.name}", f"/{name}", 1)
    conn = await asyncpg.connect(database.superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
