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
    data = await mutate(client, caller, UPDATE, {"input": {"rowId": str(row.id), "updatedAt": _wire(row.updated_at),
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
        "rowId": str(row.id), "updatedAt": payload["opportunityProject"]["updatedAt"], "title": "Announced"}})
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
        "projectName": "Clash", "externalSourceRowId": str(source.id),
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
            "rowId": str(row.id), "updatedAt": _wire(row.updated_at), "title": "After"}}, token=manager.token)
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
                "rowId": str(row.id), "updatedAt": _wire(row.updated_at), "title": "After"}}, token=manager.token)
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


# -- identity and role writes (auth/roles.py, auth/mfa_service.py through auth/audited.py) ---------

ROLE_CREATE = """mutation ($input: RoleCreateInput!) {
  roleCreate(input: $input) { role { rowId } errors { code field } } }"""
ROLE_UPDATE = """mutation ($input: RoleUpdateInput!) {
  roleUpdate(input: $input) { role { rowId name } errors { code field } } }"""
USER_ROLE_GRANT = """mutation ($input: UserRoleGrantInput!) {
  userRoleGrant(input: $input) { userRole { rowId } errors { code field } } }"""
MFA_START = "mutation { mfaEnrollmentStart { enrollment { secret } errors { code } } }"


async def _role_marker(client: httpx.AsyncClient, caller: Caller, listener: Listener, tenant: TenantRef) -> None:
    """A committed role: the next notification must be its own (nothing was announced before it)."""
    data = await mutate(client, caller, ROLE_CREATE, {"input": {"name": f"Marker {uuid.uuid4().hex[:6]}",
                                                                "permissions": []}})
    role_id = data["roleCreate"]["role"]["rowId"]
    note = await listener.next()
    assert note["tenant"] == str(tenant.id) and note["entities"] == [{"type": "role", "id": role_id}]


async def _no_trail(rows: Rows, entity_id: uuid.UUID, *, but: tuple[str, ...] = ()) -> None:
    """No audit row about `entity_id` (but the events named in `but`), and no history."""
    found = await rows.all("SELECT action_type FROM audit_logs WHERE tenant_id = :t AND entity_id = :e", e=entity_id)
    assert [r.action_type for r in found if r.action_type not in but] == []
    assert await rows.history(entity_id) == []


async def test_constraint_violations_of_role_and_assignment_writes_leave_nothing(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, listener: Listener, fresh_tenant: TenantRef
) -> None:
    admin = await sign_in_as("Tenant Admin")
    role = await rows.make("roles", name="Before", permissions='["user:read"]')
    data = await mutate(client, admin, ROLE_UPDATE, {"input": {
        "rowId": str(role.id), "updatedAt": _wire(role.updated_at), "name": "Viewer"}})  # uq (tenant, name)
    assert data["roleUpdate"]["errors"] == [{"code": "NAME_TAKEN", "field": ["input", "name"]}]
    assert (await rows.one("SELECT name FROM roles WHERE id = :r", r=role.id)).name == "Before"
    await _no_trail(rows, role.id)

    user = await rows.make("users")
    grant = {"input": {"userRowId": str(user.id), "roleRowId": str(role.id)}}
    first = await mutate(client, admin, USER_ROLE_GRANT, grant)
    assignment = uuid.UUID(first["userRoleGrant"]["userRole"]["rowId"])
    assert (await listener.next())["entities"] == [{"type": "user_role", "id": str(assignment)}]
    again = await mutate(client, admin, USER_ROLE_GRANT, grant)  # uq (user, role, project)
    assert again["userRoleGrant"]["errors"] == [{"code": "ALREADY_ASSIGNED", "field": ["input", "roleRowId"]}]
    assert len(await rows.all("SELECT id FROM user_roles WHERE user_id = :u", u=user.id)) == 1
    granted = await rows.all(
        "SELECT id FROM audit_logs WHERE tenant_id = :t AND action_type = 'auth.role_assignment.granted'")
    assert len(granted) == 1
    await _role_marker(client, admin, listener, fresh_tenant)


_FAULTS = {
    # A deferred constraint trigger: the statement passes, COMMIT fails.
    "commit": ("CONSTRAINT TRIGGER {name} AFTER UPDATE ON {table} DEFERRABLE INITIALLY DEFERRED",
               "RAISE EXCEPTION 'refused at commit'", "NULL"),
    # The backend running the unit of work is terminated in the middle of its flush.
    "killed": ("TRIGGER {name} BEFORE UPDATE ON {table}", "PERFORM pg_terminate_backend(pg_backend_pid())", "NEW"),
    # The update outlives the statement timeout of the impatient app.
    "timeout": ("TRIGGER {name} BEFORE UPDATE ON {table}", "PERFORM pg_sleep(2)", "NEW"),
}


async def _fault(owner_engine: AsyncEngine, fault: str, table: str, row_id: uuid.UUID) -> str:
    name = f"test_fault_{uuid.uuid4().hex[:8]}"
    trigger, action, result = _FAULTS[fault]
    async with owner_engine.begin() as conn:
        await conn.execute(text(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.id = '{row_id}' THEN {action}; END IF; RETURN {result}; END $$"))
        await conn.execute(text(
            f"CREATE {trigger.format(name=name, table=table)} FOR EACH ROW EXECUTE FUNCTION {name}()"))
    return name


async def _unfault(owner_engine: AsyncEngine, name: str, table: str) -> None:
    async with owner_engine.begin() as conn:
        await conn.execute(text(f"DROP TRIGGER {name} ON {table}"))
        await conn.execute(text(f"DROP FUNCTION {name}()"))


@pytest.mark.parametrize("fault", list(_FAULTS))
@pytest.mark.parametrize("write", ["roleUpdate", "mfaEnrollmentStart"])
async def test_a_fault_in_a_role_or_identity_write_leaves_nothing(
    fault: str,
    write: str,
    impatient_app: Starlette,
    client: httpx.AsyncClient,
    sign_in_as: SignIn,
    rows: Rows,
    listener: Listener,
    fresh_tenant: TenantRef,
    owner_engine: AsyncEngine,
) -> None:
    admin = await sign_in_as("Tenant Admin")
    if write == "roleUpdate":
        role = await rows.make("roles", name="Before", permissions='["user:read"]')
        table, target = "roles", role.id
        document, variables = ROLE_UPDATE, {"input": {
            "rowId": str(role.id), "updatedAt": _wire(role.updated_at), "name": "After"}}
    else:
        table, target, document, variables = "users", admin.id, MFA_START, {}
    name = await _fault(owner_engine, fault, table, target)
    try:
        if fault == "timeout":
            async with app_client(impatient_app) as impatient:
                response = await gql_response(impatient, document, variables, token=admin.token)
        else:
            response = await gql_response(client, document, variables, token=admin.token)
        _masked(response.json())
    finally:
        await _unfault(owner_engine, name, table)
    if write == "roleUpdate":
        assert (await rows.one("SELECT name FROM roles WHERE id = :r", r=target)).name == "Before"
    else:
        stored = await rows.one("SELECT mfa_secret_encrypted FROM users WHERE id = :u", u=target)
        assert stored.mfa_secret_encrypted is None
    await _no_trail(rows, target, but=("auth.login.succeeded",))
    # Nothing was announced, and the app (its pool included, after a killed backend) goes on.
    await _role_marker(client, admin, listener, fresh_tenant)
    assert listener.received.empty()
