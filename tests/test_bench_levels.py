"""The bench's PostGraphile side reads documents by the gateway's access-level rule, and the bench database
is rebuilt when a migration file it ran has changed (bench/compare.py, bench/harness.py).

bench/compare.py connects PostGraphile as its own role (PGL_ROLE, a member of gwm_app) with a RESTRICTIVE
policy on documents (PGL_LEVEL_SQL). Here that role and policy are made in the test database and, for a named
reader, the uploader and another user, the documents the role reads must be exactly those the gateway's rule
(resolvers/common/scope.py ReadScope, a tenant-wide document:read) lets the same user read.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.permissions import Permission
from auth.principal import Grants, Principal, PrincipalKind
from models import Base
from models.db import set_tenant
from resolvers.common.scope import ReadScope
from server.embedded import bootstrap_database
from tests.conftest import Database
from tests.support.db import create_tenant
from tests.support.factories import make
from tests.support.http import make_login_user

BENCH = Path(__file__).resolve().parent.parent / "bench"
LEVELS = ("tenant", "project_team", "restricted", "confidential")


def _bench(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def _dsn(url: str, user: str | None = None) -> str:
    split = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    if user is not None:
        split = split._replace(netloc=f"{user}@{split.netloc.rpartition('@')[2]}")
    return urlunsplit(split)


@pytest.fixture
async def pgl_role(database: Database) -> AsyncIterator[str]:
    """The bench's PostGraphile role and its documents policy, made as compare.py makes them; dropped after."""
    compare = _bench("compare")
    su = await asyncpg.connect(_dsn(database.superuser_url))
    owner = await asyncpg.connect(_dsn(database.owner_url))
    try:
        await su.execute(compare.PGL_ROLE_SQL)
        await su.execute(compare.PGL_ROLE_SQL)  # idempotent
        await owner.execute(compare.PGL_LEVEL_SQL)
        await owner.execute(compare.PGL_LEVEL_SQL)
        yield str(compare.PGL_ROLE)
    finally:
        await owner.execute("DROP POLICY IF EXISTS bench_pgl_document_level ON public.documents")
        await owner.close()
        await su.execute(f"DROP ROLE IF EXISTS {compare.PGL_ROLE}")
        await su.close()


async def test_bench_policy_reads_what_the_gateway_rule_reads(
    database: Database, owner_engine: AsyncEngine, pgl_role: str
) -> None:
    tenant = await create_tenant(owner_engine, "Bench levels")
    users = {name: await make_login_user(owner_engine, tenant, roles=[]) for name in ("uploader", "reader", "other")}
    documents: dict[uuid.UUID, str] = {}
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant)
        refs = {"opportunity_projects": project.id, "users": users["uploader"].id}
        for level in LEVELS:
            for named in (False, True):
                row = await make(conn, "documents", tenant, refs, access_level=level,
                                 opportunity_project_id=project.id, uploaded_by=users["uploader"].id)
                documents[row.id] = level
                if named:
                    await conn.execute(
                        text("INSERT INTO document_readers (tenant_id, document_id, user_id, added_by)"
                             " VALUES (:t, :d, :u, :by)"),
                        {"t": tenant.id, "d": row.id, "u": users["reader"].id, "by": users["uploader"].id},
                    )
    table = Base.metadata.tables["documents"]
    seen: dict[str, set[uuid.UUID]] = {}
    for name, user in users.items():
        principal = Principal(PrincipalKind.SESSION, tenant.id, user.id,
                              Grants(tenant_wide=frozenset({str(Permission.DOCUMENT_READ)})))
        condition = ReadScope(principal).condition(table)
        statement = select(table.c.id).where(table.c.tenant_id == tenant.id)
        if condition is not None:
            statement = statement.where(condition)
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant.id)
            gateway = {row.id for row in await conn.execute(statement)}
        bench = await asyncpg.connect(_dsn(database.app_url, pgl_role))
        try:
            async with bench.transaction():
                await bench.execute("SELECT set_config('app.tenant_id', $1, true), set_config('bench.user_id', $2,"
                                    " true)", str(tenant.id), str(user.id))
                read = {r["id"] for r in await bench.fetch("SELECT id FROM documents")}
                restricted = await bench.fetchval("SELECT count(*) FROM documents WHERE access_level = 'restricted'")
        finally:
            await bench.close()
        assert read == gateway, name
        assert restricted == sum(1 for d in read if documents[d] == "restricted")
        seen[name] = read
    # Not vacuous: the uploader reads everything, the named reader its restricted and confidential documents,
    # another user none of those.
    assert seen["uploader"] == set(documents)
    assert {documents[d] for d in seen["other"]} == {"tenant", "project_team"}
    assert len(seen["other"]) == 4
    assert len(seen["reader"]) == 6


async def test_bench_policy_leaves_gwm_app_alone(database: Database, pgl_role: str) -> None:
    """The policy is for the bench role only: gwm_app's policies on documents are what the migrations made."""
    conn = await asyncpg.connect(_dsn(database.owner_url))
    try:
        rows = await conn.fetch(
            "SELECT polname, polpermissive, polroles::regrole[]::text[] AS roles FROM pg_policy"
            " WHERE polrelid = 'public.documents'::regclass AND polname = 'bench_pgl_document_level'"
        )
    finally:
        await conn.close()
    assert [(r["polpermissive"], r["roles"]) for r in rows] == [(False, [pgl_role])]


async def test_harness_notices_a_changed_migration_file(database: Database) -> None:
    harness = _bench("harness")
    owner = await asyncpg.connect(_dsn(database.owner_url))
    try:
        await owner.execute(f'COMMENT ON DATABASE "{database.name}" IS NULL')
        assert await harness._changed_migrations(database.owner_url) == ["(unrecorded)"]
        await harness._record_migrations(database.owner_url)
        assert await harness._changed_migrations(database.owner_url) == []
        files = harness.migration_files()
        changed = sorted(files)[-1]
        files[changed] = "0" * 64  # as if that revision had run with other contents
        mark = "gwm-bench migrations " + json.dumps(files)
        literal = await owner.fetchval("SELECT quote_literal($1::text)", mark)
        await owner.execute(f'COMMENT ON DATABASE "{database.name}" IS {literal}')
        assert await harness._changed_migrations(database.owner_url) == [changed]
    finally:
        await owner.execute(f'COMMENT ON DATABASE "{database.name}" IS NULL')
        await owner.close()


async def test_harness_rebuilds_an_embedded_database_empty(database: Database) -> None:
    """_rebuild drops the bench database (ending its sessions) and creates it again, empty and owned by the
    owner role; a database never migrated counts as not changed."""
    harness = _bench("harness")
    if "host=" not in database.app_url:
        pytest.skip("the rebuild is for the embedded cluster (a unix socket); this run uses an external one")
    name = f"gwm_bench_{uuid.uuid4().hex[:8]}"
    await bootstrap_database(database.superuser_url, name)
    app_url = database.app_url.replace(f"/{database.name}?", f"/{name}?", 1)
    owner_url = database.owner_url.replace(f"/{database.name}?", f"/{name}?", 1)
    try:
        owner = await asyncpg.connect(_dsn(owner_url))
        try:
            await owner.execute("CREATE TABLE alembic_version (version_num text)")
            assert await harness._changed_migrations(owner_url) == ["(unrecorded)"]
            await harness._rebuild(app_url)  # ends this open session too
            assert owner.is_closed() or not await _alive(owner)
        finally:
            if not owner.is_closed():
                owner.terminate()
        assert await harness._changed_migrations(owner_url) == []
    finally:
        su = await asyncpg.connect(_dsn(database.superuser_url))
        try:
            await su.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await su.close()


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_statement_count_pairs_a_process_with_its_backends(database: Database) -> None:
    """compare.py counts only the statements of the measured server's backends: `ss` pairs a process's
    unix-socket connections with their backends' pids, and another client's backends are not among them."""
    import psutil

    compare = _bench("compare")
    if "host=" not in database.app_url:
        pytest.skip("backends are paired over unix sockets; this run uses an external cluster over TCP")
    conn = await asyncpg.connect(_dsn(database.app_url))
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import asyncio, asyncpg, sys\n"
        "async def main():\n"
        "    c = await asyncpg.connect(sys.argv[1])\n"
        "    print(await c.fetchval('SELECT pg_backend_pid()'), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())", _dsn(database.app_url), stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert other.stdout is not None
        other_backend = int(await asyncio.wait_for(other.stdout.readline(), 60))
        mine = await conn.fetchval("SELECT pg_backend_pid()")
        # A process's backends and its children's (uvicorn's or Node's workers), no one else's.
        assert {mine, other_backend} <= compare.backend_pids(psutil.Process())
        assert compare.backend_pids(psutil.Process(other.pid)) == {other_backend}
    finally:
        other.kill()
        await other.wait()
        await conn.close()


async def test_statement_count_leaves_out_the_listeners_keepalive(database: Database) -> None:
    """The gateway's LISTEN connection (application_name gwm-listen) is found, to be left out of the count."""
    from live.listener import APPLICATION_NAME

    compare = _bench("compare")
    listener = await asyncpg.connect(_dsn(database.app_url), server_settings={"application_name": APPLICATION_NAME})
    request = await asyncpg.connect(_dsn(database.app_url))
    try:
        db = compare.Database(None, _dsn(database.superuser_url), None, "")
        found = await compare.listener_pids(db)
        assert await listener.fetchval("SELECT pg_backend_pid()") in found
        assert await request.fetchval("SELECT pg_backend_pid()") not in found
        assert await compare.listener_pids(compare.Database(None, None, None, "")) == set()
    finally:
        await listener.close()
        await request.close()
