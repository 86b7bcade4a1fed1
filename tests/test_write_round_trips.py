"""Round trips to PostgreSQL per single-row mutation, counted at the driver (transaction control included).

Issue 18's goal 2: at most 8 round trips per single-row mutation, the authentication and the payload
included. Measured here for one update, one create and one archive of an opportunity project through
the HTTP app, after a warm-up so that every statement is prepared on the one pooled connection (the
steady state of a busy server). The listing of each is printed (`pytest -s`).
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
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models import OpportunityProject
from models.audit_log import AuditLog, ChangeHistory
from models.audit_trail import TrailError
from models.db import set_tenant
from models.unit_of_work import CHANNEL
from schema.writes import is_mutation_request
from server.app import create_app
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import RoundTrip, count_round_trips
from tests.writes.conftest import Rows
from tests.writes.test_unit_of_work import _uow

#: Issue 18, goal 2.
MAX_ROUND_TRIPS = 8
#: What each mutation takes: BEGIN (READ COMMITTED, read-write: the middleware saw a mutation), the
#: principal lookup, which sets the tenant (the write's first statement: the unit of work takes the
#: transaction over), the row locked and read, the write returning every column (no read-back), the
#: audit chains' locks and heads (one statement), the audit and history rows with the batch's
#: notification (one statement), COMMIT: 7. The payload is the row the write returned when the caller
#: reads every row of the table (a project-scoped caller's is read in the same transaction: 8). A create
#: checks its source, locks the tenant row and reads its live-project count in one statement instead of
#: reading a row.
CEILING = {"update": MAX_ROUND_TRIPS, "create": MAX_ROUND_TRIPS, "archive": MAX_ROUND_TRIPS}

UPDATE = """mutation ($input: OpportunityProjectUpdateInput!) {
  opportunityProjectUpdate(input: $input) {
    opportunityProject { rowId description priorityLevel updatedAt } errors { field code message }
  }
}"""
CREATE = """mutation ($input: OpportunityProjectCreateInput!) {
  opportunityProjectCreate(input: $input) { opportunityProject { rowId projectName updatedAt } errors { field code } }
}"""
ARCHIVE = """mutation ($input: OpportunityProjectArchiveInput!) {
  opportunityProjectArchive(input: $input) { opportunityProject { rowId archivedAt } errors { field code message } }
}"""
READ = """query Read { opportunityProjects(first: 5) { nodes { rowId } } }"""


@pytest.fixture
def app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url, db_pool_size=1))


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@pytest.fixture
async def token(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    return await sign_in(client, user)


async def _projects(owner_engine: AsyncEngine, tenant: TenantRef, count: int) -> list[tuple[uuid.UUID, str]]:
    made: list[tuple[uuid.UUID, str]] = []
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        for _ in range(count):
            project = await make(conn, "opportunity_projects", tenant)
            made.append((project.id, await _updated_at(conn, project.id)))
    return made


async def _updated_at(conn: Any, project_id: uuid.UUID) -> str:
    value = await conn.scalar(
        text("SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
             " FROM opportunity_projects WHERE id = :id"),
        {"id": project_id},
    )
    return str(value)


def _listing(trips: list[RoundTrip]) -> str:
    return "\n".join(str(t) for t in trips)


def _check(name: str, trips: list[RoundTrip], bound: int | None = None) -> None:
    print(f"\n{name}: {len(trips)} round trips\n{_listing(trips)}")
    assert trips, name
    assert trips[0].is_transaction_control and trips[-1].is_transaction_control, _listing(trips)
    # One transaction for the write, its audit rows and its payload: nothing read after the COMMIT.
    assert trips[-1].sql.strip().upper().startswith("COMMIT"), _listing(trips)
    limit = CEILING[name] if bound is None else bound
    assert len(trips) <= limit, f"{name}: {len(trips)} round trips\n{_listing(trips)}"


async def test_an_update_takes_at_most_eight_round_trips(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    projects = await _projects(owner_engine, fresh_tenant, 4)
    engine: AsyncEngine = app.state.engine
    for i, (project_id, seen) in enumerate(projects):
        variables = {"input": {"rowId": str(project_id), "updatedAt": seen,
                               "description": f"changed {i}", "priorityLevel": "HIGH"}}
        if i < len(projects) - 1:  # warm-up: every statement prepared on the pooled connection
            body = await gql(client, UPDATE, variables, token=token)
        else:
            with count_round_trips(engine) as counted:
                body = await gql(client, UPDATE, variables, token=token)
            trips = list(counted)
        payload = body["data"]["opportunityProjectUpdate"]
        assert payload["errors"] == [], payload
        assert payload["opportunityProject"]["description"] == f"changed {i}"
        assert payload["opportunityProject"]["updatedAt"] != seen
    _check("update", trips)
    assert trips[0].sql.startswith("BEGIN ISOLATION LEVEL READ COMMITTED"), _listing(trips)
    assert "gwm_request_session" in trips[1].sql, _listing(trips)
    assert not any(t.sql.strip().upper().startswith("ROLLBACK") for t in trips), _listing(trips)
    assert any("UPDATE opportunity_projects" in t.sql for t in trips), _listing(trips)
    assert any("COMMIT" in t.sql.upper() for t in trips if t.is_transaction_control), _listing(trips)


async def test_a_create_takes_at_most_eight_round_trips(
    client: httpx.AsyncClient, app: Starlette, token: str
) -> None:
    engine: AsyncEngine = app.state.engine
    for i in range(4):
        variables = {"input": {"projectName": f"Round trips {i} {uuid.uuid4().hex[:6]}"}}
        if i < 3:
            body = await gql(client, CREATE, variables, token=token)
        else:
            with count_round_trips(engine) as counted:
                body = await gql(client, CREATE, variables, token=token)
            trips = list(counted)
        payload = body["data"]["opportunityProjectCreate"]
        assert payload["errors"] == [], payload
        assert payload["opportunityProject"]["projectName"] == variables["input"]["projectName"]
    _check("create", trips)
    assert any("INSERT INTO opportunity_projects" in t.sql for t in trips), _listing(trips)


async def test_an_archive_takes_at_most_eight_round_trips(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    projects = await _projects(owner_engine, fresh_tenant, 4)
    engine: AsyncEngine = app.state.engine
    for i, (project_id, seen) in enumerate(projects):
        variables = {"input": {"rowId": str(project_id), "updatedAt": seen}}
        if i < len(projects) - 1:
            body = await gql(client, ARCHIVE, variables, token=token)
        else:
            with count_round_trips(engine) as counted:
                body = await gql(client, ARCHIVE, variables, token=token)
            trips = list(counted)
        payload = body["data"]["opportunityProjectArchive"]
        assert payload["errors"] == [], payload
        assert payload["opportunityProject"]["archivedAt"] is not None
    _check("archive", trips)


async def test_a_deferred_unit_appends_every_flush_at_once_with_its_one_notification(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, fresh_tenant: TenantRef, database: Database
) -> None:
    """`defer_audit_rows` (what the mutation kit's units use): the audit and history rows of two
    flushes are appended by one statement, which also sends the batch's one notification; the chain
    verifies, and the rows are those an undeferred unit records."""
    rows = Rows(owner_engine, fresh_tenant)
    first, second = await rows.project(), await rows.project()
    listener = await asyncpg.connect(database.app_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: received.put_nowait(str(args[3])))
    try:
        with count_round_trips(app_engine) as counted:
            async with _uow(app_engine, fresh_tenant) as uow:
                uow.defer_audit_rows()
                for project, title in ((first, "One"), (second, "Two")):
                    loaded = await uow.lock(OpportunityProject, project.id, updated_at=project.updated_at)
                    uow.assign(loaded, {"title": title})
                    await uow.flush()
                batch = uow.change_batch_id
        trips = list(counted)
        note = json.loads(await asyncio.wait_for(received.get(), timeout=10))
    finally:
        await listener.close()
    # A statement's first use is prepared first; the driver closes statements its cache evicts (earlier
    # tests' ones too): neither executes the statement named.
    executed = [t for t in trips if t.kind not in ("prepare", "close_statement")]
    appends = [t for t in executed if "INSERT INTO audit_logs" in t.sql]
    assert len(appends) == 1 and "pg_notify" in appends[0].sql, _listing(trips)
    assert sum("gwm_audit_chain_heads" in t.sql for t in executed) == 1, _listing(trips)
    assert not any(t.sql.lstrip().upper().startswith("SELECT PG_NOTIFY") for t in trips), _listing(trips)
    assert note == {"tenant": str(fresh_tenant.id), "batch": str(batch), "entities": [
        {"type": "opportunity_project", "id": str(first.id)}, {"type": "opportunity_project", "id": str(second.id)}]}
    assert received.empty()
    for project, title in ((first, "One"), (second, "Two")):
        (log,) = await rows.audit(project.id)
        assert log.after_values["title"] == title and log.request_id == "uow-test"
        (history,) = await rows.history(project.id)
        assert (history.field_name, history.new_value, history.change_batch_id) == ("title", title, batch)
    async with app_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        for table in (AuditLog.__table__, ChangeHistory.__table__):
            report = await TEST_AUDIT_CHAIN.verify(conn, table)
            assert report.fault is None and report.rows >= 2, report


async def test_after_the_announcement_a_change_of_another_entity_is_refused_and_leaves_nothing(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    rows = Rows(owner_engine, fresh_tenant)
    first, second = await rows.project(), await rows.project()
    with pytest.raises(TrailError, match="after its batch was announced"):
        async with _uow(app_engine, fresh_tenant) as uow:
            uow.defer_audit_rows()
            loaded = await uow.lock(OpportunityProject, first.id, updated_at=first.updated_at)
            uow.assign(loaded, {"title": "Announced"})
            await uow.flush(announce=True)
            other = await uow.lock(OpportunityProject, second.id, updated_at=second.updated_at)
            uow.assign(other, {"title": "Too late"})
    for project in (first, second):
        stored = await rows.one("SELECT title FROM opportunity_projects WHERE id = :p", p=project.id)
        assert stored.title == project.title
        assert await rows.audit(project.id) == [] and await rows.history(project.id) == []


# -- the mutation's authentication in the write's transaction ---------------------------------------


def _begins(trips: list[RoundTrip]) -> list[str]:
    return [t.sql for t in trips if t.sql.strip().upper().startswith("BEGIN")]


async def test_a_mutation_not_seen_before_is_authenticated_in_a_read_transaction_then_adopts_on_its_repeat(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    """The middleware begins the write's transaction only for a document it knows to be a mutation (one
    the schema parsed and validated before): the first request of a new document text takes the read
    path (its lookup rolled back, the unit of work's own BEGIN), the repeat the write path."""
    (first, seen), (second, seen_2) = await _projects(owner_engine, fresh_tenant, 2)
    engine: AsyncEngine = app.state.engine
    document = UPDATE.replace("mutation", f"mutation New{uuid.uuid4().hex[:8]}", 1)
    runs = []
    for project_id, at in ((first, seen), (second, seen_2)):
        variables = {"input": {"rowId": str(project_id), "updatedAt": at, "description": "fresh"}}
        with count_round_trips(engine) as counted:
            body = await gql(client, document, variables, token=token)
        assert body["data"]["opportunityProjectUpdate"]["errors"] == [], body
        runs.append(list(counted))
    cold, warm = runs
    assert _begins(cold)[0].startswith("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), _listing(cold)
    assert any(t.sql.strip().upper().startswith("ROLLBACK") for t in cold), _listing(cold)
    assert len(_begins(cold)) == 2, _listing(cold)
    assert _begins(warm) == ["BEGIN ISOLATION LEVEL READ COMMITTED;"], _listing(warm)
    assert not any(t.sql.strip().upper().startswith("ROLLBACK") for t in warm), _listing(warm)
    rows = Rows(owner_engine, fresh_tenant)
    for project_id in (first, second):
        stored = await rows.one("SELECT description FROM opportunity_projects WHERE id = :p", p=project_id)
        assert stored.description == "fresh"
        assert len(await rows.audit(project_id)) == 1 and len(await rows.history(project_id)) == 1


async def test_a_query_is_still_authenticated_in_a_repeatable_read_read_only_transaction(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    ((project_id, _),) = await _projects(owner_engine, fresh_tenant, 1)
    engine: AsyncEngine = app.state.engine
    # Both operations in one document: the one named decides; a query never gets a write transaction.
    both = READ + "\n" + UPDATE.replace("mutation", "mutation Write", 1)
    for _ in range(2):
        with count_round_trips(engine) as counted:
            body = await gql_body(client, both, {}, token=token, operation="Read")
        assert body["data"]["opportunityProjects"]["nodes"] == [{"rowId": str(project_id)}], body
        trips = list(counted)
        assert _begins(trips) == ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"], _listing(trips)
        assert not any("opportunity_projects SET" in t.sql for t in trips), _listing(trips)


async def test_two_mutations_in_one_document_the_first_adopts_the_lookup_and_the_second_begins_its_own(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    engine: AsyncEngine = app.state.engine
    rows = Rows(owner_engine, fresh_tenant)
    document = """mutation Two($a: OpportunityProjectUpdateInput!, $b: OpportunityProjectUpdateInput!) {
      a: opportunityProjectUpdate(input: $a) { opportunityProject { description } errors { code } }
      b: opportunityProjectUpdate(input: $b) { opportunityProject { description } errors { code } }
    }"""
    for round_ in range(2):  # the second run is begun for a write
        (first, seen), (second, seen_2) = await _projects(owner_engine, fresh_tenant, 2)
        variables = {"a": {"rowId": str(first), "updatedAt": seen, "description": f"a{round_}"},
                     "b": {"rowId": str(second), "updatedAt": seen_2, "description": f"b{round_}"}}
        with count_round_trips(engine) as counted:
            body = await gql(client, document, variables, token=token)
        trips = list(counted)
        assert body["data"]["a"] == {"opportunityProject": {"description": f"a{round_}"}, "errors": []}, body
        assert body["data"]["b"] == {"opportunityProject": {"description": f"b{round_}"}, "errors": []}, body
        assert sum(t.sql.strip().upper().startswith("COMMIT") for t in trips) == 2, _listing(trips)
        assert sum("gwm_request_session" in t.sql and t.kind != "prepare" for t in trips) == 1, _listing(trips)
        (log_a,), (log_b,) = await rows.audit(first), await rows.audit(second)
        (hist_a,), (hist_b,) = await rows.history(first), await rows.history(second)
        assert log_a.request_id == log_b.request_id  # one request,
        assert hist_a.change_batch_id != hist_b.change_batch_id  # each field its own unit (W13)
    assert _begins(trips)[0] == "BEGIN ISOLATION LEVEL READ COMMITTED;", _listing(trips)
    assert len(_begins(trips)) == 2 and _begins(trips)[1].startswith("BEGIN ISOLATION LEVEL READ COMMITTED;"), (
        _listing(trips))


async def test_a_refused_or_conflicting_mutation_begun_for_a_write_leaves_nothing_and_frees_the_connection(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    """One pooled connection (db_pool_size=1): a request whose write transaction was begun and then not
    used (permission refused), or rolled back (a stale updatedAt), must give it back, or the next hangs."""
    rows = Rows(owner_engine, fresh_tenant)
    viewer = await sign_in(client, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
    ((project_id, seen),) = await _projects(owner_engine, fresh_tenant, 1)
    stale = {"input": {"rowId": str(project_id), "updatedAt": "2001-01-01T00:00:00.000000+00:00",
                       "description": "stale"}}
    allowed = {"input": {"rowId": str(project_id), "updatedAt": seen, "description": "kept"}}
    for _ in range(3):  # from the second on, begun for a write
        refused = await gql_body(client, UPDATE, allowed, token=viewer)
        assert refused["data"]["opportunityProjectUpdate"] is None, refused
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN", refused
        body = await asyncio.wait_for(gql(client, UPDATE, stale, token=token), timeout=30)
        (error,) = body["data"]["opportunityProjectUpdate"]["errors"]
        assert error["code"] == "CONFLICT", body
    stored = await rows.one("SELECT description FROM opportunity_projects WHERE id = :p", p=project_id)
    assert stored.description != "kept" and stored.description != "stale"
    assert await rows.audit(project_id) == [] and await rows.history(project_id) == []
    body = await asyncio.wait_for(gql(client, UPDATE, allowed, token=token), timeout=30)
    assert body["data"]["opportunityProjectUpdate"]["opportunityProject"]["description"] == "kept", body


@pytest.mark.parametrize(
    "body",
    [
        b"", b"not json", b"[]", b'{"query": 1}', b'{"query": "mutation { x }", "operationName": 2}',
        b'{"query": "mutation M { opportunityProjectUpdate(input: {}) { errors { code } } }"}',  # never validated
        b'{"query": "query { viewer { rowId } }"}',
    ],
)
def test_a_body_not_certainly_a_known_mutation_is_not_one(body: bytes) -> None:
    assert is_mutation_request(body) is False


async def gql_body(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], *, token: str, operation: str | None = None
) -> dict[str, Any]:
    """The JSON body of a GraphQL POST whatever its status (a refused field is a 200 with errors)."""
    payload: dict[str, Any] = {"query": query, "variables": variables}
    if operation is not None:
        payload["operationName"] = operation
    response = await client.post("/graphql", json=payload, headers={"authorization": f"Bearer {token}"})
    result: dict[str, Any] = response.json()
    return result


async def test_a_create_checks_its_source_before_the_project_limit_in_one_statement(
    client: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, fresh_tenant: TenantRef, token: str
) -> None:
    """gwm_claim_project_slot (migration 0023) reads the source, the limit and the count at once; the
    refusals keep their order: a source that does not exist is VALIDATION on the field given, even when
    the organization is also at its limit; at the limit a valid create is PROJECT_LIMIT."""
    rows = Rows(owner_engine, fresh_tenant)
    source = await rows.make("external_opportunity_sources")
    create = """mutation ($input: OpportunityProjectCreateInput!) {
      opportunityProjectCreate(input: $input) { opportunityProject { rowId } errors { field code } }
    }"""
    missing = {"projectName": "Nowhere", "externalSourceRowId": str(uuid.uuid4()), "externalOpportunityId": "X-1"}
    body = await gql(client, create, {"input": missing}, token=token)
    assert body["data"]["opportunityProjectCreate"]["errors"] == [
        {"field": ["input", "externalSourceRowId"], "code": "VALIDATION"}], body
    named = {"projectName": "Somewhere", "externalSourceRowId": str(source.id), "externalOpportunityId": "X-2"}
    body = await gql(client, create, {"input": named}, token=token)
    assert body["data"]["opportunityProjectCreate"]["errors"] == [], body
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(
            text("UPDATE tenants SET max_opportunity_projects = (SELECT count(*) FROM opportunity_projects"
                 " WHERE tenant_id = :t AND archived_at IS NULL) WHERE id = :t"),
            {"t": fresh_tenant.id},
        )
    body = await gql(client, create, {"input": missing}, token=token)
    assert body["data"]["opportunityProjectCreate"]["errors"] == [
        {"field": ["input", "externalSourceRowId"], "code": "VALIDATION"}], body
    body = await gql(client, create, {"input": {**named, "externalOpportunityId": "X-3"}}, token=token)
    assert body["data"]["opportunityProjectCreate"]["errors"] == [{"field": None, "code": "PROJECT_LIMIT"}], body
    counted = await rows.one("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t")
    assert counted.n == 1
