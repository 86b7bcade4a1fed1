"""The request connection `open()` begins on the driver (models/db.py RequestConnection).

The compiled read's whole request (the principal statement, the compiled statement, the rollback)
runs on asyncpg without SQLAlchemy's Connection; a fallback root field's statements through
SQLAlchemy join the same transaction; and a connection whose transaction did not end cleanly is
closed, never handed to the next request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import RequestConnection, create_engine, set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import count_round_trips

OPEN = "SELECT set_config('app.tenant_id', $1, true) AS tenant"
BY_ID = """query ($id: ID!) {
  node(id: $id) { ... on OpportunityProject { rowId projectName } }
}"""


def _tenant(row: asyncpg.Record) -> uuid.UUID | None:
    value = row["tenant"]
    return uuid.UUID(value) if value else None


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    # One connection: what one request leaves on it is what the next one gets.
    created = create_engine(database.app_url, pool_size=1, max_overflow=0, pool_timeout_s=5)
    yield created
    await created.dispose()


async def _next_checkout(engine: AsyncEngine) -> tuple[int, bool]:
    """The backend pid of the connection the pool hands out next, and whether it is inside a transaction."""
    pooled = await engine.raw_connection()
    try:
        driver = pooled.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        return driver.get_server_pid(), driver.is_in_transaction()
    finally:
        pooled.close()


async def test_sqlalchemy_statements_after_open_join_its_transaction(engine: AsyncEngine, tenant_a: TenantRef) -> None:
    db = RequestConnection(engine, None)
    with count_round_trips(engine) as trips:
        row = await db.open(OPEN, str(tenant_a.id), tenant_of=_tenant)
        assert row is not None and db.is_open and db.tenant_id == tenant_a.id
        snapshot = await db.fetchval("SELECT pg_current_snapshot()::text")
        through_sqlalchemy = (await db.execute(text(
            "SELECT pg_current_snapshot()::text, current_setting('transaction_isolation'),"
            " current_setting('transaction_read_only'), current_setting('app.tenant_id')"
        ))).one()
        async with db.driver() as driver:
            assert await driver.fetchval("SELECT current_setting('app.tenant_id')") == str(tenant_a.id)
        await db.close()
    assert tuple(through_sqlalchemy) == (snapshot, "repeatable read", "on", str(tenant_a.id))
    control = [t.sql.strip().upper() for t in trips if t.is_transaction_control]
    assert len(control) == 2 and control[0].startswith("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    assert control[1].startswith("ROLLBACK"), [str(t) for t in trips]
    assert not db.is_open and db.statements == 3
    assert (await _next_checkout(engine))[1] is False


async def test_a_statement_that_sets_no_tenant_ends_the_transaction_at_once(engine: AsyncEngine) -> None:
    db = RequestConnection(engine, None)
    with count_round_trips(engine) as trips:
        row = await db.open(OPEN, "", tenant_of=_tenant)
    assert row is not None and not db.is_open
    assert trips[-1].sql.strip().upper().startswith("ROLLBACK")
    with pytest.raises(RuntimeError, match="no tenant"):
        await db.fetchval("SELECT 1")
    assert (await _next_checkout(engine))[1] is False


async def test_a_failing_principal_statement_gives_the_connection_back_rolled_back(
    engine: AsyncEngine, tenant_a: TenantRef
) -> None:
    db = RequestConnection(engine, None)
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await db.open("SELECT no_such_function($1) AS tenant", str(tenant_a.id), tenant_of=_tenant)
    assert not db.is_open
    pid, in_transaction = await _next_checkout(engine)
    assert in_transaction is False
    # The same connection: a statement error is not a reason to close it.
    db = RequestConnection(engine, None)
    await db.open(OPEN, str(tenant_a.id), tenant_of=_tenant)
    assert await db.fetchval("SELECT pg_backend_pid()") == pid
    await db.close()


async def test_a_cancelled_read_closes_its_connection_instead_of_pooling_it(
    engine: AsyncEngine, tenant_a: TenantRef
) -> None:
    db = RequestConnection(engine, None)
    await db.open(OPEN, str(tenant_a.id), tenant_of=_tenant)
    pid = await db.fetchval("SELECT pg_backend_pid()")
    started = asyncio.Event()

    async def slow() -> Any:
        started.set()
        return await db.fetchval("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.close()  # does not raise; the transaction's state is unknown, so the connection goes
    next_pid, in_transaction = await _next_checkout(engine)
    assert in_transaction is False
    if next_pid == pid:  # asyncpg recovered the connection: then its transaction was rolled back
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_setting('app.tenant_id', true)")) in (None, "")


async def test_a_connection_lost_mid_request_is_replaced_and_close_does_not_raise(
    engine: AsyncEngine, database: Database, tenant_a: TenantRef
) -> None:
    db = RequestConnection(engine, None)
    await db.open(OPEN, str(tenant_a.id), tenant_of=_tenant)
    pid = await db.fetchval("SELECT pg_backend_pid()")
    superuser = create_engine(database.superuser_url, pool_size=1, max_overflow=0)
    try:
        async with superuser.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}) is True
    finally:
        await superuser.dispose()
    await db.close()  # the ROLLBACK fails on a closed socket: logged, the connection discarded
    next_pid, in_transaction = await _next_checkout(engine)
    assert next_pid != pid and in_transaction is False


@pytest.fixture
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url, db_pool_size=1))


async def test_a_compiled_by_id_request_runs_without_a_sqlalchemy_connection(
    app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        project = await make(conn, "opportunity_projects", fresh_tenant)
    engine: AsyncEngine = app.state.engine
    variables = {"id": _global_id(project.id)}
    async with app_client(app) as client:
        token = await sign_in(client, user)
        for _ in range(3):  # the second request onwards is answered from the prepared operation
            await gql(client, BY_ID, variables, token=token)
        connections: list[object] = []

        def connected(conn: object) -> None:
            connections.append(conn)

        event.listen(engine.sync_engine, "engine_connect", connected)
        try:
            with count_round_trips(engine) as trips:
                body = await _post(client, token, variables)
        finally:
            event.remove(engine.sync_engine, "engine_connect", connected)
    assert body["data"]["node"] == {"rowId": str(project.id), "projectName": project.project_name}
    assert connections == [] and len(trips) == 4, [str(t) for t in trips]
    assert trips[0].sql.upper().startswith("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    assert trips[-1].sql.strip().upper().startswith("ROLLBACK")


def _global_id(row_id: uuid.UUID) -> str:
    import base64

    return base64.b64encode(f"OpportunityProject:{row_id}".encode()).decode()


async def _post(client: httpx.AsyncClient, token: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": BY_ID, "variables": variables}, headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


async def test_an_overflow_connection_is_closed_on_its_return_and_the_pooled_one_kept(
    database: Database, tenant_a: TenantRef
) -> None:
    # One pooled connection and one overflow: the first returned goes back into the pool's queue (no I/O, no
    # greenlet), the second finds the queue full and is closed (through a greenlet, as the driver awaits).
    engine = create_engine(database.app_url, pool_size=1, max_overflow=1, pool_timeout_s=5)
    try:
        first, second = RequestConnection(engine, None), RequestConnection(engine, None)
        for db in (first, second):
            assert await db.open(OPEN, str(tenant_a.id), tenant_of=_tenant) is not None
        pids = [(await db.raw()).get_server_pid() for db in (first, second)]
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        await first.close()
        await second.close()
        assert engine.pool.checkedout() == 0 and engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        pid, in_transaction = await _next_checkout(engine)
        assert pid == pids[0] and not in_transaction
        assert not first.is_open and not second.is_open
    finally:
        await engine.dispose()
