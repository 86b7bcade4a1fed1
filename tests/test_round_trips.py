"""Round trips to PostgreSQL per GraphQL request, counted at the driver (transaction control included).

A read request is one REPEATABLE READ READ ONLY transaction: BEGIN, one statement that resolves the
caller from its token hash and sets the tenant (migration 0010), the reads, ROLLBACK. The writes the
check may need (activity at most once a minute, an ended session) run in transactions of their own,
never while the read connection is held. The counts measured here are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from models.db import RequestConnection, set_tenant
from server.app import create_app
from tests.conftest import Database
from tests.support.clock import FakeClock
from tests.support.db import TenantRef
from tests.support.factories import make
from tests.support.graphql import gql, gql_response, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import RoundTrip, count_round_trips

BY_ID = """query SmallProject($id: ID!) {
  node(id: $id) {
    ... on OpportunityProject { id: rowId projectName solicitationNumber agencyName pipelineStage }
  }
}"""
LIST = "{ opportunityProjects(first: 5) { nodes { rowId projectName } } }"
CREATE_KEY = """mutation ($input: ApiKeyCreateInput!) {
  apiKeyCreate(input: $input) { key errors { field code message } }
}"""
CREATE_ORGANIZATION = """mutation ($name: String!) {
  organizationCreate(input: {name: $name}) { organization { rowId name } errors { field code message } }
}"""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(database: Database, clock: FakeClock) -> Starlette:
    # One pooled connection: after a warm-up every statement is prepared on it, so what is counted
    # is the steady state of a busy server, not a connection's first use.
    application = create_app(settings_for(database.app_url, db_pool_size=1))
    application.state.auth.clock = clock
    return application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    return await sign_in(client, user)


@pytest.fixture
async def project_id(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> uuid.UUID:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        for _ in range(3):
            project = await make(conn, "opportunity_projects", fresh_tenant)
    project_uuid: uuid.UUID = project.id
    return project_uuid


def _global_id(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _engine(app: Starlette) -> AsyncEngine:
    engine: AsyncEngine = app.state.engine
    return engine


async def _counted(
    client: httpx.AsyncClient, app: Starlette, query: str, variables: dict[str, Any] | None, token: str
) -> tuple[dict[str, Any], list[RoundTrip]]:
    for _ in range(3):  # warm the pooled connection's statement cache
        await gql(client, query, variables, token=token)
    with count_round_trips(_engine(app)) as trips:
        body = await gql(client, query, variables, token=token)
    return body, list(trips)


def _transactions(trips: list[RoundTrip]) -> list[list[RoundTrip]]:
    """The trips split into transactions; fails if one begins before the previous one ended."""
    transactions: list[list[RoundTrip]] = []
    open_ = False
    for trip in trips:
        word = trip.sql.strip().rstrip(";").split(None, 1)[0].upper() if trip.is_transaction_control else ""
        if word == "BEGIN":
            assert not open_, f"a transaction began while another was open:\n{_listing(trips)}"
            transactions.append([])
            open_ = True
        assert open_, f"a statement outside any transaction:\n{_listing(trips)}"
        transactions[-1].append(trip)
        if word in {"COMMIT", "ROLLBACK"}:
            open_ = False
    assert not open_, _listing(trips)
    return transactions


def _listing(trips: list[RoundTrip]) -> str:
    return "\n".join(str(t) for t in trips)


def _assert_read_transaction(trips: list[RoundTrip], lookup: str) -> list[RoundTrip]:
    """BEGIN (repeatable read, read only), the lookup, the reads, ROLLBACK; returns the reads."""
    begin, principal, *reads, rollback = trips
    assert begin.is_transaction_control and "REPEATABLE READ" in begin.sql.upper(), _listing(trips)
    assert "READ ONLY" in begin.sql.upper(), _listing(trips)
    assert principal.kind == "bind_execute" and lookup in principal.sql and "set_config" in principal.sql
    assert rollback.is_transaction_control and rollback.sql.strip().upper().startswith("ROLLBACK")
    assert reads and not [t for t in reads if t.is_transaction_control or t.kind == "prepare"], _listing(trips)
    return reads


def _compiled(body: dict[str, Any], key: str) -> bool:
    return key in (body.get("extensions") or {}).get("compiled", [])


@pytest.mark.parametrize(("name", "query"), [("by id", BY_ID), ("list", LIST)])
async def test_a_read_is_one_transaction_begun_by_the_principal_lookup(
    client: httpx.AsyncClient, app: Starlette, admin_token: str, project_id: uuid.UUID, name: str, query: str
) -> None:
    variables = {"id": _global_id("OpportunityProject", project_id)} if query is BY_ID else None
    body, trips = await _counted(client, app, query, variables, admin_token)
    if query is BY_ID:
        assert body["data"]["node"]["id"] == str(project_id)
    else:
        assert len(body["data"]["opportunityProjects"]["nodes"]) == 3
    (transaction,) = _transactions(trips)  # no second transaction, no second connection
    reads = _assert_read_transaction(transaction, "gwm_request_session")
    # The authentication part is BEGIN + the lookup + ROLLBACK; the rest are the operation's reads.
    root = "node" if query is BY_ID else "opportunityProjects"
    compiled = _compiled(body, root)
    print(f"\n{name}: {len(trips)} round trips = 3 (BEGIN, principal, ROLLBACK) + {len(reads)} read(s);"
          f" compiled: {compiled}")
    if compiled:  # the compiled path reads a root field with one statement
        assert len(trips) <= 4, _listing(trips)


async def test_activity_is_written_at_most_once_a_minute_after_the_read_transaction(
    client: httpx.AsyncClient, app: Starlette, admin_token: str, project_id: uuid.UUID, clock: FakeClock,
    owner_engine: AsyncEngine, fresh_tenant: TenantRef,
) -> None:
    variables = {"id": _global_id("OpportunityProject", project_id)}
    await _counted(client, app, BY_ID, variables, admin_token)
    clock.advance(minutes=2)
    with count_round_trips(_engine(app)) as trips:
        await gql(client, BY_ID, variables, token=admin_token)
    read, write = _transactions(list(trips))
    _assert_read_transaction(read, "gwm_request_session")
    assert any("UPDATE user_sessions SET last_activity_at" in t.sql for t in write), _listing(write)
    assert write[-1].sql.strip().upper().startswith("COMMIT")
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        touched = await conn.scalar(
            text("SELECT last_activity_at FROM user_sessions WHERE session_token_hash = encode(sha256(:t), 'hex')"),
            {"t": admin_token.encode()},
        )
    assert touched == clock()
    # Within the minute: nothing is written.
    clock.advance(seconds=30)
    with count_round_trips(_engine(app)) as trips:
        await gql(client, BY_ID, variables, token=admin_token)
    (read,) = _transactions(list(trips))
    _assert_read_transaction(read, "gwm_request_session")


async def test_an_ended_session_is_refused_and_terminated_after_the_read_transaction(
    client: httpx.AsyncClient, app: Starlette, admin_token: str, clock: FakeClock
) -> None:
    await gql(client, LIST, token=admin_token)
    clock.advance(days=2)  # past every idle and absolute timeout
    with count_round_trips(_engine(app)) as trips:
        response = await gql_response(client, LIST, token=admin_token)
    assert response.status_code == 401 and response.json()["error"]["code"] == "SESSION_EXPIRED"
    lookup, write = _transactions(list(trips))
    assert [t.kind for t in lookup] == ["query", "bind_execute", "query"], _listing(lookup)  # no reads
    assert any("UPDATE user_sessions SET is_active = false" in t.sql for t in write), _listing(write)
    assert write[-1].sql.strip().upper().startswith("COMMIT")
    # Terminated: the next request is refused as an invalid session, without any write.
    with count_round_trips(_engine(app)) as trips:
        response = await gql_response(client, LIST, token=admin_token)
    assert response.status_code == 401 and response.json()["error"]["code"] == "INVALID_SESSION"
    assert len(_transactions(list(trips))) == 1


async def test_an_api_key_read_is_one_transaction_and_its_use_is_recorded_once_a_minute(
    client: httpx.AsyncClient, app: Starlette, admin_token: str, project_id: uuid.UUID, clock: FakeClock,
    owner_engine: AsyncEngine, fresh_tenant: TenantRef,
) -> None:
    created = await gql(
        client, CREATE_KEY, {"input": {"name": "rt", "roleName": "BD Analyst", "expiresInDays": 30}},
        token=admin_token,
    )
    key = created["data"]["apiKeyCreate"]["key"]
    variables = {"id": _global_id("OpportunityProject", project_id)}
    body, trips = await _counted(client, app, BY_ID, variables, key)
    assert body["data"]["node"]["id"] == str(project_id)
    (transaction,) = _transactions(trips)
    reads = _assert_read_transaction(transaction, "gwm_request_api_key")
    print(f"\nby id with an API key: {len(trips)} round trips = 3 + {len(reads)} read(s)")
    clock.advance(minutes=2)
    with count_round_trips(_engine(app)) as trips:
        await gql(client, BY_ID, variables, token=key)
    read, write = _transactions(list(trips))
    _assert_read_transaction(read, "gwm_request_api_key")
    assert any("UPDATE api_keys SET last_used_at" in t.sql for t in write), _listing(write)
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        used = await conn.scalar(text("SELECT count(*) FROM api_keys WHERE last_used_at = :now"), {"now": clock()})
    assert used == 1


async def test_a_mutation_releases_the_lookup_transaction_and_its_payload_reads_what_it_wrote(
    client: httpx.AsyncClient, app: Starlette, admin_token: str
) -> None:
    name = f"Org {uuid.uuid4().hex[:8]}"
    with count_round_trips(_engine(app)) as trips:
        body = await gql(client, CREATE_ORGANIZATION, {"name": name}, token=admin_token)
    payload = body["data"]["organizationCreate"]
    assert payload["errors"] == [] and payload["organization"]["name"] == name
    transactions = _transactions(list(trips))  # one after another: never two connections at once
    lookup, *rest = transactions
    assert "gwm_request_session" in lookup[1].sql and lookup[-1].sql.strip().upper().startswith("ROLLBACK")
    (unit,) = [t for t in rest if any("INSERT INTO organizations" in s.sql for s in t)]
    assert unit[-1].sql.strip().upper().startswith("COMMIT")
    # The payload is the row the write returned (a caller reading every organization: the loader could
    # return nothing else), so it is not read at all (issue 18); nor re-read after the COMMIT.
    assert not any("FROM organizations" in t.sql and "INSERT" not in t.sql for t in unit), _listing(list(trips))
    assert rest.index(unit) == len(rest) - 1, _listing(list(trips))
    # The next request reads it in a new snapshot.
    listed = await gql(client, "{ organizations(first: 50) { nodes { name } } }", token=admin_token)
    assert name in [n["name"] for n in listed["data"]["organizations"]["nodes"]]


async def test_the_counter_sees_transaction_control_prepares_and_raw_driver_use(
    app_engine: AsyncEngine, tenant_a: TenantRef
) -> None:
    db = RequestConnection(app_engine, tenant_a.id)
    with count_round_trips(app_engine) as trips:
        await db.execute(text("SELECT count(*) FROM users"))
        async with db.driver() as driver:
            assert await driver.fetchval("SELECT current_setting('app.tenant_id')") == str(tenant_a.id)
        raw = await db.raw()
        assert await raw.fetchval("SELECT 1") == 1
        await db.close()
    kinds = [t.kind for t in trips]
    # BEGIN, set_config and the count (each prepared on first use, or not), the two raw reads, ROLLBACK.
    assert trips[0].is_transaction_control and trips[-1].is_transaction_control, _listing(list(trips))
    assert kinds.count("bind_execute") >= 4 and db.statements == 3
    assert any("current_setting('app.tenant_id')" in t.sql for t in trips)
    # A RequestConnection without a tenant refuses to open one on its own.
    with pytest.raises(RuntimeError, match="no tenant"):
        await RequestConnection(app_engine, None).execute(text("SELECT 1"))


async def test_no_connection_is_held_while_a_slow_body_arrives(
    client: httpx.AsyncClient, app: Starlette, admin_token: str
) -> None:
    half = asyncio.Event()
    rest = asyncio.Event()
    document = json.dumps({"query": LIST}).encode()

    async def body() -> AsyncIterator[bytes]:
        yield document[:10]
        half.set()
        await rest.wait()
        yield document[10:]

    request = asyncio.create_task(
        client.post(
            "/graphql", content=body(),
            headers={"authorization": f"Bearer {admin_token}", "content-type": "application/json"},
        )
    )
    await half.wait()
    await asyncio.sleep(0.05)
    assert _engine(app).pool.checkedout() == 0  # type: ignore[attr-defined]
    rest.set()
    response = await request
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    assert _engine(app).pool.checkedout() == 0  # type: ignore[attr-defined]


_ROOT = Path(__file__).resolve().parents[1]
_OPERATIONS = sorted(
    [*(_ROOT / "graphql" / "operations").glob("*.graphql"), *(_ROOT / "bench/queries/gateway").glob("*.graphql")]
)


def _read_operations() -> list[Any]:
    return [
        pytest.param(path, id=f"{path.parent.name}/{path.name}")
        for path in _OPERATIONS
        if not path.read_text().lstrip().startswith("mutation") and "\nmutation" not in path.read_text()
    ]


@pytest.mark.parametrize("path", _read_operations())
async def test_every_read_operation_is_one_transaction_with_a_statement_per_compiled_root_field(
    client: httpx.AsyncClient, app: Starlette, admin_token: str, project_id: uuid.UUID, path: Path
) -> None:
    document = path.read_text()
    variables: dict[str, Any] = {"id": _global_id("OpportunityProject", project_id), "search": "plan"}
    operation = graphql.parse(document).definitions[0]
    assert isinstance(operation, graphql.OperationDefinitionNode)
    declared = {v.variable.name.value for v in operation.variable_definitions or ()}
    variables = {k: v for k, v in variables.items() if k in declared}
    roots = [
        (s.alias or s.name).value for s in operation.selection_set.selections if isinstance(s, graphql.FieldNode)
    ]
    body, trips = await _counted(client, app, document, variables, admin_token)
    (transaction,) = _transactions(trips)
    reads = _assert_read_transaction(transaction, "gwm_request_session")
    compiled = [key for key in roots if _compiled(body, key)]
    print(f"\n{path.name}: {len(trips)} round trips = 3 + {len(reads)} read(s); compiled {compiled} of {roots}")
    if compiled == roots:  # one statement per root field, transaction control and the lookup included
        assert len(trips) <= 3 + len(roots), _listing(trips)
