"""Change notifications, and faults: whatever fails before or at COMMIT leaves no change, no evidence
and no announcement behind.

A LISTEN connection (asyncpg, the server's role) collects `gwm_changes`. Notifications arrive in
commit order, so "none for the failed attempt" is checked without waiting on a clock: the next one
received after it belongs to the next committed mutation.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models import OpportunityProject
from models.db import set_tenant
from models.unit_of_work import CHANNEL
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import gql_response
from tests.support.http import app_client
from tests.support.http import test_settings as settings_for
from tests.writes.conftest import Caller, Rows, SignIn, mutate
from tests.writes.test_projects import CREATE, UPDATE, _wire
from tests.writes.test_unit_of_work import _uow


class Listener:
    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def __call__(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        self.received.put_nowait(json.loads(str(payload)))  # asyncpg gives the payload as str

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), timeout=10)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def listener(database: Database) -> AsyncIterator[Listener]:
    conn = await asyncpg.connect(_dsn(database.app_url))
    listening = Listener()
    await conn.add_listener(CHANNEL, listening)
    try:
        yield listening
    finally:
        await conn.close()


async def _update(client: httpx.AsyncClient, caller: Caller, row: Any, **values: Any) -> dict[str, Any]:
    data = await mutate(client, caller, UPDATE, {"input": {"id": str(row.id), "updatedAt": _wire(row.updated_at),
                                                            **values}})
    payload: dict[str, Any] = data["opportunityProjectUpdate"]
    return payload


async def _marker(client: httpx.AsyncClient, caller: Caller, listener: Listener, tenant: TenantRef) -> None:
    """A committed create: the next notification must be its own."""
    data = await mutate(client, caller, CREATE, {"input": {"projectName": "Marker"}})
    project_id = data["opportunityProjectCreate"]["opportunityProject"]["rowId"]
    note = await listener.next()
    assert note["tenant"] == str(tenant.id)
    assert note["entities"] == [{"type": "opportunity_project", "id": project_id}]


async def test_one_notification_per_committed_mutation(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, listener: Listener, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project()
    payload = await _update(client, manager, row, title="Announced")
    note = await listener.next()
    (history,) = await rows.history(row.id)
    assert note == {"tenant": str(fresh_tenant.id), "batch": str(history.change_batch_id),
                    "entities": [{"type": "opportunity_project", "id": str(row.id)}]}
    assert payload["errors"] == []
    # Refused (stale updatedAt) and no-op updates commit nothing, so announce nothing.
    stale = await _update(client, manager, row, title="Refused")
    assert [e["code"] for e in stale["errors"]] == ["CONFLICT"]
    unchanged = await mutate(client, manager, UPDATE, {"input": {
        "id": str(row.id), "updatedAt": payload["opportunityProject"]["updatedAt"], "title": "Announced"}})
    assert unchanged["opportunityProjectUpdate"]["errors"] == []
    await _marker(client, manager, listener, fresh_tenant)
    assert listener.received.empty()


async def _nothing_left(rows: Rows, row: Any, title: str) -> None:
    stored = await rows.one("SELECT title, updated_at FROM opportunity_projects WHERE id = :p", p=row.id)
    assert (stored.title, stored.updated_at) == (title, row.updated_at)
    assert await rows.audit(row.id) == [] and await rows.history(row.id) == []


def _masked(body: dict[str, Any]) -> None:
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR" and error["extensions"]["requestId"]
    assert "refused at commit" not in json.dumps(body) and "statement timeout" not in json.dumps(body)


async def test_a_constraint_violation_leaves_nothing(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, listener: Listener, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    source = await rows.make("external_opportunity_sources")
    taken = await rows.project(external_source_id=source.id)
    data = await mutate(client, manager, CREATE, {"input": {
        "projectName": "Clash", "externalSourceId": str(source.id),
        "externalOpportunityId": taken.external_opportunity_id}})
    assert data["opportunityProjectCreate"]["errors"][0]["code"] == "CONFLICT"
    assert await rows.all("SELECT id FROM opportunity_projects WHERE project_name = 'Clash' AND tenant_id = :t") == []
    assert await rows.audit() == [] and await rows.history() == []
    await _marker(client, manager, listener, fresh_tenant)


async def test_a_failure_at_commit_leaves_nothing(
    client: httpx.AsyncClient,
    sign_in_as: SignIn,
    rows: Rows,
    listener: Listener,
    fresh_tenant: TenantRef,
    owner_engine: AsyncEngine,
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project(title="Before")
    name = f"test_fail_at_commit_{uuid.uuid4().hex[:8]}"
    async with owner_engine.begin() as conn:
        await conn.execute(text(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.id = '{row.id}' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$"))
        await conn.execute(text(
            f"CREATE CONSTRAINT TRIGGER {name} AFTER UPDATE ON opportunity_projects"
            f" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}()"))
    try:
        response = await gql_response(client, UPDATE, {"input": {
            "id": str(row.id), "updatedAt": _wire(row.updated_at), "title": "After"}}, token=manager.token)
        _masked(response.json())
    finally:
        async with owner_engine.begin() as conn:
            await conn.execute(text(f"DROP TRIGGER {name} ON opportunity_projects"))
            await conn.execute(text(f"DROP FUNCTION {name}()"))
    await _nothing_left(rows, row, "Before")
    await _marker(client, manager, listener, fresh_tenant)


async def test_a_killed_backend_leaves_nothing(
    app_engine: AsyncEngine,
    database: Database,
    client: httpx.AsyncClient,
    sign_in_as: SignIn,
    rows: Rows,
    listener: Listener,
    fresh_tenant: TenantRef,
) -> None:
    row = await rows.project(title="Before")
    with pytest.raises(DBAPIError):
        async with _uow(app_engine, fresh_tenant) as uow:
            project = await uow.lock(OpportunityProject, row.id, updated_at=row.updated_at)
            uow.assign(project, {"title": "After"})
            await uow.flush()
            assert uow.audit_rows == (1, 1)  # the evidence is written, in the open transaction
            pid = (await uow.connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            admin = await asyncpg.connect(_dsn(database.superuser_url))
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
            finally:
                await admin.close()
    await _nothing_left(rows, row, "Before")
    # The pool recovers: the next unit of work gets a live connection.
    async with _uow(app_engine, fresh_tenant) as uow:
        uow.assign(await uow.lock(OpportunityProject, row.id), {"title": "Later"})
    note = await listener.next()
    assert note["entities"] == [{"type": "opportunity_project", "id": str(row.id)}]


@pytest.fixture(scope="module")
def impatient_app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url, db_statement_timeout_ms=300))


async def test_a_statement_timeout_leaves_nothing(
    impatient_app: Starlette,
    client: httpx.AsyncClient,
    sign_in_as: SignIn,
    rows: Rows,
    listener: Listener,
    fresh_tenant: TenantRef,
    owner_engine: AsyncEngine,
) -> None:
    manager = await sign_in_as("Capture Manager")
    row = await rows.project(title="Before")
    name = f"test_slow_{uuid.uuid4().hex[:8]}"
    async with owner_engine.begin() as conn:
        await conn.execute(text(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.id = '{row.id}' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$"))
        await conn.execute(text(
            f"CREATE TRIGGER {name} BEFORE UPDATE ON opportunity_projects FOR EACH ROW EXECUTE FUNCTION {name}()"))
    try:
        async with app_client(impatient_app) as impatient:
            response = await gql_response(impatient, UPDATE, {"input": {
                "id": str(row.id), "updatedAt": _wire(row.updated_at), "title": "After"}}, token=manager.token)
        _masked(response.json())
    finally:
        async with owner_engine.begin() as conn:
            await set_tenant(conn, fresh_tenant.id)
            await conn.execute(text(f"DROP TRIGGER {name} ON opportunity_projects"))
            await conn.execute(text(f"DROP FUNCTION {name}()"))
    await _nothing_left(rows, row, "Before")
    await _marker(client, manager, listener, fresh_tenant)


async def test_concurrent_http_updates_with_the_same_updated_at(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, listener: Listener, fresh_tenant: TenantRef
) -> None:
    first, second = await sign_in_as("Capture Manager"), await sign_in_as("Capture Manager")
    row = await rows.project(title="Start")
    results = await asyncio.gather(
        _update(client, first, row, title="From first"), _update(client, second, row, title="From second")
    )
    winners = [r for r in results if r["errors"] == []]
    losers = [r for r in results if r["errors"]]
    assert len(winners) == 1 and len(losers) == 1
    assert [e["code"] for e in losers[0]["errors"]] == ["CONFLICT"]
    title = winners[0]["opportunityProject"]["title"]
    assert (await rows.one("SELECT title FROM opportunity_projects WHERE id = :p", p=row.id)).title == title
    (log,) = await rows.audit(row.id)
    assert log.after_values["title"] == title
    note = await listener.next()
    assert note["entities"] == [{"type": "opportunity_project", "id": str(row.id)}]
    await _marker(client, first, listener, fresh_tenant)
