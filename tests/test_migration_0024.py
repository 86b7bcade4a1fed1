"""Migration 0024 (docs/decisions.md W28): the grants of assignments made before it are stored by it, and going
down gives the lookup its live aggregation back. (tests/test_migrations.py runs every revision down and up and
compares the whole public schema; this is what it cannot see: the data.)"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import create_engine, set_tenant
from server import migrate
from server.embedded import bootstrap_database
from tests.conftest import Database
from tests.support.db import create_tenant


@pytest.fixture
async def scratch(database: Database) -> AsyncIterator[tuple[str, str]]:
    """(owner URL, app URL) of a database of its own in the session's cluster."""
    name = f"gwm_mig_{uuid.uuid4().hex[:8]}"
    await bootstrap_database(database.superuser_url, name)
    owner = database.owner_url.replace(f"/{database.name}", f"/{name}", 1)
    yield owner, owner.replace("gwm_owner@", "gwm_app@", 1)
    conn = await asyncpg.connect(database.superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _value(grants: str) -> list[tuple[tuple[str, ...], tuple[str, ...], bool]]:
    return sorted((tuple(p), tuple(sorted(projects or ())), bool(w)) for p, projects, w in json.loads(grants))


async def _lookup(app: AsyncEngine, token_hash: str) -> str:
    async with app.connect() as conn:
        grants = await conn.scalar(text("SELECT grants FROM gwm_request_session(:h)"), {"h": token_hash})
    assert isinstance(grants, str)
    return grants


async def test_0024_stores_the_grants_already_there_and_goes_down_to_the_live_lookup(
    scratch: tuple[str, str],
) -> None:
    owner_url, app_url = scratch
    await migrate.upgrade(owner_url, "0023")
    owner = create_engine(owner_url, pool_size=1, max_overflow=0)
    app = create_engine(app_url, pool_size=1, max_overflow=0)
    try:
        tenant = await create_tenant(owner)
        token_hash = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        async with owner.begin() as conn:
            await set_tenant(conn, tenant.id)
            user = await conn.scalar(text(
                "INSERT INTO users (tenant_id, email, first_name, last_name) VALUES (:t, 'm@example.test', 'M', 'M')"
                " RETURNING id"), {"t": tenant.id})
            await conn.execute(text(
                "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by, expires_at)"
                " SELECT :t, :u, r.id, :by, CASE WHEN r.name = 'Viewer' THEN now() + interval '1 day' END"
                " FROM roles r WHERE r.tenant_id = :t AND r.name IN ('Viewer', 'Capture Manager')"),
                {"t": tenant.id, "u": user, "by": tenant.system_user_id})
            await conn.execute(text(
                "INSERT INTO user_sessions (tenant_id, user_id, session_token_hash, expires_at)"
                " VALUES (:t, :u, :h, now() + interval '1 hour')"), {"t": tenant.id, "u": user, "h": token_hash})
        before = await _lookup(app, token_hash)
        assert before.count("[[") == 2  # two roles

        await migrate.upgrade(owner_url, "0024")
        async with owner.connect() as conn:
            await set_tenant(conn, tenant.id)
            row = (await conn.execute(text(
                "SELECT gs.grants, gs.valid_until, (SELECT g.grants FROM gwm_principal.user_grants(:t, :u) g) AS live,"
                " (SELECT min(expires_at) FROM user_roles WHERE user_id = :u) AS expiry"
                " FROM gwm_principal.user_grant_sets gs WHERE gs.user_id = :u"), {"t": tenant.id, "u": user})).one()
        assert row.grants == row.live and row.valid_until == row.expiry
        assert await _lookup(app, token_hash) == row.live
        assert _value(row.live) == _value(before)  # the same value; only the order of roles may differ

        await migrate.downgrade(owner_url, "0023")
        assert await _lookup(app, token_hash) == before
        async with owner.connect() as conn:
            assert await conn.scalar(text("SELECT to_regnamespace('gwm_principal')")) is None
        await migrate.upgrade(owner_url, "0024")
        assert await _lookup(app, token_hash) == row.live
    finally:
        await owner.dispose()
        await app.dispose()
