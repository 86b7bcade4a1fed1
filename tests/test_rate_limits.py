"""Rate limits (auth/rate_limits.py, schema/rate_limit_extension.py; docs/api.md "Rate limits").

GraphQL operations are charged their root fields (aliases and root fragments counted) per client
address, user and tenant in process; sign-in and the other sensitive operations through PostgreSQL,
shared by every app instance. A refusal is 429 with Retry-After and a RATE_LIMITED error, answered
before any SQL beyond the principal lookup. Every test speaks from client addresses of its own (the
shared buckets outlive an app), and builds its app with the limits it exercises.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from graphql import parse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.rate_limits import PERIOD_SECONDS, LocalBuckets, RateLimitConfig, Refusal
from models.db import set_tenant
from schema.compiled.runner import PreparedCache
from schema.rate_limit_extension import root_fields
from server.app import create_app
from server.settings import Settings
from tests.conftest import Database
from tests.support.db import TenantRef, create_tenant
from tests.support.factories import make
from tests.support.graphql import sign_in
from tests.support.http import LoginUser, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import RoundTrip, count_round_trips
from tests.support.secrets import request_hook, response_hook

VIEWER = "{ viewer { __typename } }"
BY_ID = (
    "query LimitedProject($id: ID!) { node(id: $id) { __typename"
    " ... on OpportunityProject { rowId projectName } } }"
)

_next_address = iter(range(1, 1_000_000))


def new_address() -> str:
    """A client address no other test (nor earlier run against the same database) used."""
    n = next(_next_address)
    return f"10.{uuid.uuid4().int % 200 + 20}.{n // 250 % 250}.{n % 250 + 1}"


def app_with(database: Database, **limits: Any) -> Starlette:
    return create_app(settings_for(database.app_url, **limits))


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """The app's lifespan, and a factory of clients each speaking from a client address of its own."""
    clients: list[httpx.AsyncClient] = []

    def client_from(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        client = httpx.AsyncClient(
            transport=transport, base_url="https://testserver",
            event_hooks={"request": [request_hook], "response": [response_hook]},
        )
        clients.append(client)
        return client

    async with app.router.lifespan_context(app):
        try:
            yield client_from
        finally:
            for client in clients:
                await client.aclose()


async def post(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers={"authorization": f"Bearer {token}"}
    )


def assert_refused(response: httpx.Response, scope: str) -> int:
    """A 429 with Retry-After and a RATE_LIMITED error naming `scope`; returns the Retry-After seconds."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= PERIOD_SECONDS
    body = response.json()
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "RATE_LIMITED", "limit": scope, "retryAfter": retry_after}, body
    assert body.get("data") is None
    return retry_after


@pytest.fixture
async def users(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> tuple[LoginUser, LoginUser]:
    one = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    two = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    return one, two


# -- counting ---------------------------------------------------------------------------------------


def _cost(document: str, operation: str | None = None) -> int:
    from schema.rate_limit_extension import _operation

    parsed = parse(document)
    chosen = _operation(parsed, operation)
    assert chosen is not None
    return len(root_fields(parsed, chosen))


def test_root_fields_count_aliases_and_root_fragments() -> None:
    thirty = "{ " + " ".join(f"a{i}: viewer {{ __typename }}" for i in range(30)) + " }"
    assert _cost(thirty) == 30
    assert _cost("{ viewer { __typename } __typename }") == 1
    assert _cost("{ viewer { __typename } viewer { __typename } }") == 1  # one response key, one execution
    spread = (
        "query Q { ...Roots ... on Query { c: viewer { __typename } } }"
        " fragment Roots on Query { a: viewer { __typename } b: viewer { __typename } ...More }"
        " fragment More on Query { d: viewer { __typename } }"
    )
    assert _cost(spread) == 4
    two = "query A { viewer { __typename } } query B { x: viewer { __typename } y: roles { __typename } }"
    assert (_cost(two, "A"), _cost(two, "B")) == (1, 2)
    cycle = "{ ...F } fragment F on Query { viewer { __typename } ...F }"  # refused by validation; counted finitely
    assert _cost(cycle) == 1


def test_local_buckets_refill_and_charge_all_or_nothing() -> None:
    now = [1000.0]
    buckets = LocalBuckets(clock=lambda: now[0])
    narrow, wide = ("address", b"a", 2), ("tenant", b"t", 10)
    assert buckets.take([narrow, wide], 1) is None
    assert buckets.take([narrow, wide], 1) is None
    refusal = buckets.take([narrow, wide], 1)
    assert refusal == Refusal("address", 30)  # one unit comes back every 60 / 2 seconds
    # The refusal spent nothing of the tenant's bucket: 8 units are left of its 10.
    for _ in range(8):
        assert buckets.take([wide], 1) is None
    assert buckets.take([wide], 1) is not None
    now[0] += 30
    assert buckets.take([narrow], 1) is None
    assert buckets.take([narrow], 5) is not None  # an operation costs at most the whole bucket: still 1 left short
    now[0] += 60
    assert buckets.take([narrow], 5) is None  # clamped to the bucket (2): admitted once it is full


def test_settings_give_production_and_development_defaults_and_the_process_share() -> None:
    production = Settings.from_env({"GWM_ENV": "production", "GWM_WORKERS": "4"}).rate_limits
    assert (production.per_address, production.per_user, production.per_tenant) == (6_000, 1_200, 12_000)
    assert (production.sensitive_per_address, production.sensitive_per_user, production.sensitive_per_tenant) == (
        30, 10, 600
    )
    assert production.processes == 4 and production.share(1_200) == 300
    development = Settings.from_env({"GWM_ENV": "development"}).rate_limits
    assert development.per_user == 100_000 and development.sensitive_per_address == 10_000
    assert Settings().rate_limits == development  # what tests build in code
    tuned = Settings.from_env({
        "GWM_ENV": "production", "GWM_RATE_LIMIT_PER_ADDRESS": "0", "GWM_RATE_LIMIT_PER_USER": "500",
        "GWM_RATE_LIMIT_PROCESSES": "3", "GWM_SENSITIVE_LIMIT_PER_TENANT": "50",
    }).rate_limits
    assert tuned == RateLimitConfig(0, 500, 12_000, 3, 30, 10, 50)
    assert tuned.share(0) == 0 and tuned.share(500) == 167
    from server.settings import SettingsError

    with pytest.raises(SettingsError, match="GWM_RATE_LIMIT_PER_USER"):
        Settings.from_env({"GWM_RATE_LIMIT_PER_USER": "-1"})
    with pytest.raises(SettingsError, match="GWM_RATE_LIMIT_PROCESSES"):
        Settings.from_env({"GWM_RATE_LIMIT_PROCESSES": "0"})


# -- per address, per user, per tenant ---------------------------------------------------------------


async def test_per_client_address(database: Database, users: tuple[LoginUser, LoginUser]) -> None:
    app = app_with(database, rate_limit_per_address=3)
    async with running(app) as client_from:
        here, there = client_from(new_address()), client_from(new_address())
        one, two = await sign_in(here, users[0]), await sign_in(here, users[1])
        assert (await post(here, one, VIEWER)).status_code == 200
        assert (await post(here, two, VIEWER)).status_code == 200
        assert (await post(here, one, VIEWER)).status_code == 200
        assert_refused(await post(here, two, VIEWER), "address")  # another user, the same address
        assert (await post(there, two, VIEWER)).status_code == 200  # the same user from elsewhere


async def test_per_user(database: Database, users: tuple[LoginUser, LoginUser]) -> None:
    app = app_with(database, rate_limit_per_user=2)
    async with running(app) as client_from:
        here, there = client_from(new_address()), client_from(new_address())
        one, two = await sign_in(here, users[0]), await sign_in(here, users[1])
        assert (await post(here, one, VIEWER)).status_code == 200
        assert (await post(there, one, VIEWER)).status_code == 200
        assert_refused(await post(there, one, VIEWER), "user")  # the user, from any address
        assert (await post(here, two, VIEWER)).status_code == 200  # another user of the tenant


async def test_per_tenant(
    database: Database, owner_engine: AsyncEngine, users: tuple[LoginUser, LoginUser]
) -> None:
    other = await make_login_user(owner_engine, await create_tenant(owner_engine), roles=["Tenant Admin"])
    app = app_with(database, rate_limit_per_tenant=3)
    async with running(app) as client_from:
        a, b, c = client_from(new_address()), client_from(new_address()), client_from(new_address())
        one, two, elsewhere = await sign_in(a, users[0]), await sign_in(b, users[1]), await sign_in(c, other)
        assert (await post(a, one, VIEWER)).status_code == 200
        assert (await post(b, two, VIEWER)).status_code == 200
        assert (await post(a, one, VIEWER)).status_code == 200
        assert_refused(await post(b, two, VIEWER), "tenant")
        assert (await post(c, elsewhere, VIEWER)).status_code == 200  # another tenant's budget


async def test_aliases_and_root_fragments_are_counted(database: Database, users: tuple[LoginUser, LoginUser]) -> None:
    thirty = "{ " + " ".join(f"a{i}: viewer {{ __typename }}" for i in range(30)) + " }"
    fifteen = (
        "query { ...Half } fragment Half on Query { "
        + " ".join(f"b{i}: viewer {{ __typename }}" for i in range(15)) + " }"
    )
    app = app_with(database, rate_limit_per_user=45)
    async with running(app) as client_from:
        client = client_from(new_address())
        token = await sign_in(client, users[0])
        first = await post(client, token, thirty)
        assert first.status_code == 200 and len(first.json()["data"]) == 30
        assert_refused(await post(client, token, thirty), "user")  # 30 + 30 > 45, though one request
        assert (await post(client, token, fifteen)).status_code == 200  # 30 + 15: the whole minute
        assert_refused(await post(client, token, VIEWER), "user")


# -- both view paths, and nothing run after a refusal -----------------------------------------------------


async def _project(owner_engine: AsyncEngine, tenant: TenantRef) -> str:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        project = await make(conn, "opportunity_projects", tenant)
    return base64.b64encode(f"OpportunityProject:{project.id}".encode()).decode()


def _only_the_principal_lookup(trips: list[RoundTrip]) -> None:
    """The transaction of the caller's lookup (BEGIN, the lookup, ROLLBACK): nothing else reached the database."""
    listing = "\n".join(str(t) for t in trips)
    statements = [t for t in trips if not t.is_transaction_control]
    assert statements and all("gwm_request_session" in t.sql for t in statements), listing
    assert trips[0].sql.strip().upper().startswith("BEGIN"), listing
    assert trips[-1].sql.strip().upper().startswith("ROLLBACK"), listing


@pytest.mark.parametrize("compiled_reads", [True, False], ids=["prepared path", "executor path"])
async def test_both_view_paths_charge_alike_and_refuse_before_any_sql(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    users: tuple[LoginUser, LoginUser], compiled_reads: bool,
) -> None:
    node_id = await _project(owner_engine, fresh_tenant)
    app = app_with(database, rate_limit_per_user=3, compiled_reads=compiled_reads)
    engine: AsyncEngine = app.state.engine
    async with running(app) as client_from:
        client = client_from(new_address())
        token = await sign_in(client, users[0])
        prepared = app.state.graphql.prepared
        hits = prepared.hits if isinstance(prepared, PreparedCache) else 0
        for _ in range(3):
            response = await post(client, token, BY_ID, {"id": node_id})
            assert response.status_code == 200 and response.json()["data"]["node"]["projectName"], response.text
        if compiled_reads:
            assert isinstance(prepared, PreparedCache)
            assert prepared.hits == hits + 2  # the repeats were served by the prepared path, and charged
        with count_round_trips(engine) as trips:
            refused = await post(client, token, BY_ID, {"id": node_id})
        assert_refused(refused, "user")
        _only_the_principal_lookup(list(trips))
        if compiled_reads:
            assert isinstance(prepared, PreparedCache) and prepared.hits == hits + 2  # refused, not served
        # A mutation is refused the same way, before its transaction does anything but find the caller.
        with count_round_trips(engine) as trips:
            mutation = await post(
                client, token, 'mutation { organizationCreate(input: {name: "Never"}) { organization { rowId } } }'
            )
        assert_refused(mutation, "user")
        _only_the_principal_lookup(list(trips))
    async with owner_engine.connect() as conn:
        await set_tenant(conn, fresh_tenant.id)
        assert await conn.scalar(text("SELECT count(*) FROM organizations WHERE name = 'Never'")) == 0


# -- sensitive operations: counted in PostgreSQL ----------------------------------------------------------


async def test_sign_in_is_counted_in_postgresql_across_app_instances(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    first, second = app_with(database, sensitive_limit_per_address=3), app_with(database, sensitive_limit_per_address=3)
    address = new_address()
    wrong = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.test", "password": "not it",
             "tenant": users[0].tenant.subdomain}
    async with running(first) as on_first, running(second) as on_second:
        a, b = on_first(address), on_second(address)
        assert (await a.post("/auth/login", json=wrong)).status_code == 401
        assert (await b.post("/auth/login", json=wrong)).status_code == 401
        assert (await a.post("/auth/login", json=users[0].credentials())).status_code == 200
        a.cookies.clear()
        second_engine: AsyncEngine = second.state.engine
        with count_round_trips(second_engine) as trips:
            refused = await b.post("/auth/login", json=users[0].credentials())  # the right password, too late
        assert refused.status_code == 429, refused.text
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= PERIOD_SECONDS
        assert refused.json()["error"]["code"] == "RATE_LIMITED" and "token" not in refused.text
        # Only the shared counter was asked: no tenant, user or password lookup, no audit row.
        statements = [t for t in trips if not t.is_transaction_control]
        assert statements and all("gwm_rate.take" in t.sql for t in statements), [str(t) for t in trips]
        assert (await on_first(new_address()).post("/auth/login", json=users[0].credentials())).status_code == 200


async def test_sign_in_is_limited_per_account_and_per_tenant(
    database: Database, owner_engine: AsyncEngine, users: tuple[LoginUser, LoginUser]
) -> None:
    app = app_with(database, sensitive_limit_per_user=2, sensitive_limit_per_tenant=3)
    async with running(app) as client_from:
        one, two, three, four = (client_from(new_address()) for _ in range(4))
        target = {**users[0].credentials(), "password": "wrong"}
        assert (await one.post("/auth/login", json=target)).status_code == 401
        upper = {**target, "email": target["email"].upper()}  # the same account however it is spelled
        assert (await two.post("/auth/login", json=upper)).status_code == 401
        refused = await three.post("/auth/login", json=users[0].credentials())
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "per user" in refused.json()["error"]["message"]
        # The tenant's third attempt (another account) passes; its fourth is refused from any address.
        assert (await three.post("/auth/login", json=users[1].credentials())).status_code == 200
        refused = await four.post("/auth/login", json=users[1].credentials())
        assert refused.status_code == 429 and "per tenant" in refused.json()["error"]["message"]
    # The refused attempts did not count toward the lockout (AC-7): the account still signs in.
    async with running(app_with(database)) as client_from:
        assert (await client_from(new_address()).post("/auth/login", json=users[0].credentials())).status_code == 200


async def test_password_reset_request_is_a_sensitive_route(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    app = app_with(database, sensitive_limit_per_address=1)
    async with running(app) as client_from:
        client = client_from(new_address())
        body = {"email": users[0].email, "tenant": users[0].tenant.subdomain}
        assert (await client.post("/auth/password/reset/request", json=body)).status_code in (202, 503)
        refused = await client.post("/auth/password/reset/request", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert refused.json()["error"]["code"] == "RATE_LIMITED"


async def test_api_key_creation_is_counted_in_postgresql(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    create = "mutation ($input: ApiKeyCreateInput!) { apiKeyCreate(input: $input) { key errors { code } } }"
    variables = {"input": {"name": "limited", "roleName": "BD Analyst", "expiresInDays": 30}}
    first, second = app_with(database, sensitive_limit_per_user=1), app_with(database, sensitive_limit_per_user=1)
    async with running(first) as on_first, running(second) as on_second:
        a, b = on_first(new_address()), on_second(new_address())
        token = await sign_in(a, users[0])
        created = await post(a, token, create, variables)
        assert created.status_code == 200 and created.json()["data"]["apiKeyCreate"]["key"], created.text
        assert_refused(await post(b, token, create, variables), "user")  # the other instance knows
        assert (await post(b, token, VIEWER)).status_code == 200  # ordinary traffic is not affected


async def test_limits_above_fifty_concurrent_requests(database: Database, users: tuple[LoginUser, LoginUser]) -> None:
    import asyncio

    app = app_with(
        database, rate_limit_per_address=60, rate_limit_per_user=60, rate_limit_per_tenant=60, db_pool_timeout_ms=60_000
    )
    async with running(app) as client_from:
        client = client_from(new_address())
        token = await sign_in(client, users[0])
        statuses = [r.status_code for r in await asyncio.gather(*(post(client, token, VIEWER) for _ in range(55)))]
        assert statuses == [200] * 55


async def test_password_change_is_charged_to_the_signed_in_user(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    app = app_with(database, sensitive_limit_per_user=1)
    async with running(app) as client_from:
        client = client_from(new_address())
        token = await sign_in(client, users[0])  # charged to the account (tenant + email), not the user
        change = {"currentPassword": "not the password", "newPassword": "a new correct horse battery staple"}
        headers = {"authorization": f"Bearer {token}"}
        first = await client.post("/auth/password/change", json=change, headers=headers)
        assert first.status_code in (400, 401, 403) and first.json()["error"]["code"] != "RATE_LIMITED"
        refused = await client.post("/auth/password/change", json=change, headers=headers)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "per user" in refused.json()["error"]["message"]


async def test_shared_buckets_admit_exactly_the_limit_under_concurrency(app_engine: AsyncEngine) -> None:
    import asyncio

    from auth.rate_limits import RateLimiter

    limiter = RateLimiter(RateLimitConfig(sensitive_per_address=5, sensitive_per_user=0, sensitive_per_tenant=0),
                          app_engine)
    address = new_address()
    outcomes = await asyncio.gather(*(limiter.charge_sensitive(address, user=None, tenant=None) for _ in range(12)))
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 7
    assert all(o.scope == "address" and o.sensitive and 1 <= o.retry_after <= PERIOD_SECONDS for o in refused)
    # All or nothing: a bucket with room is not charged when another refuses.
    other = f"account-{uuid.uuid4().hex}"
    assert await limiter.charge_sensitive(address, user=other, tenant=None) is not None
    roomy = RateLimiter(RateLimitConfig(sensitive_per_address=0, sensitive_per_user=1), app_engine)
    assert await roomy.charge_sensitive(address, user=other, tenant=None) is None


async def test_a_spoofed_forwarded_for_does_not_change_the_key(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    app = app_with(database, rate_limit_per_address=2)  # no trusted proxy: the peer is the client
    async with running(app) as client_from:
        client = client_from(new_address())
        token = await sign_in(client, users[0])
        for spoofed in ("203.0.113.1", "203.0.113.2"):
            response = await client.post(
                "/graphql", json={"query": VIEWER},
                headers={"authorization": f"Bearer {token}", "x-forwarded-for": spoofed, "forwarded": f"for={spoofed}"},
            )
            assert response.status_code == 200
        refused = await client.post(
            "/graphql", json={"query": VIEWER},
            headers={"authorization": f"Bearer {token}", "x-forwarded-for": "203.0.113.3"},
        )
        assert_refused(refused, "address")


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    proxy = new_address()
    app = app_with(database, rate_limit_per_address=1, trusted_proxies=(f"{proxy}/32",))
    async with running(app) as client_from:
        balancer = client_from(proxy)
        token = await sign_in(balancer, users[0])
        clients = [new_address(), new_address()]

        async def via(client: str) -> httpx.Response:
            return await balancer.post(
                "/graphql", json={"query": VIEWER},
                headers={"authorization": f"Bearer {token}", "x-forwarded-for": f"198.51.100.9, {client}"},
            )

        assert (await via(clients[0])).status_code == 200
        assert (await via(clients[1])).status_code == 200  # another client behind the same balancer
        assert_refused(await via(clients[0]), "address")
    # A sign-in through the balancer is counted against the forwarded client too (the shared buckets).
    other = app_with(database, sensitive_limit_per_address=1, trusted_proxies=(f"{proxy}/32",))
    async with running(other) as client_from:
        balancer = client_from(proxy)
        wrong = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.test", "password": "x",
                 "tenant": users[0].tenant.subdomain}
        forwarded = {"x-forwarded-for": new_address()}
        assert (await balancer.post("/auth/login", json=wrong, headers=forwarded)).status_code == 401
        assert (await balancer.post("/auth/login", json=wrong, headers=forwarded)).status_code == 429
        elsewhere = {"x-forwarded-for": new_address()}
        assert (await balancer.post("/auth/login", json=wrong, headers=elsewhere)).status_code == 401


@pytest.mark.server
async def test_operations_over_websocket_are_charged_like_requests(
    database: Database, users: tuple[LoginUser, LoginUser]
) -> None:
    from tests.live.ws_support import live_server, ws_connect

    async with live_server(database.app_url, rate_limit_per_user=3) as server:
        token = await server.sign_in(users[0])
        await server.graphql(token, VIEWER)  # 1 over HTTP
        async with ws_connect(server) as ws:
            assert await ws.init({"authorization": f"Bearer {token}"}) == {"type": "connection_ack"}
            await ws.subscribe("q1", VIEWER)  # 2
            assert (await ws.next_of("q1"))["type"] == "next"
            await ws.subscribe("q2", "query { a: viewer { __typename } b: viewer { __typename } }")  # 2 more: refused
            refused = await ws.next_of("q2")
            assert refused["type"] == "error", refused
            (error,) = refused["payload"]
            assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["limit"] == "user"
            await ws.subscribe("q3", VIEWER)  # 3: the refusal spent nothing
            assert (await ws.next_of("q3"))["type"] == "next"
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            assert_refused(await post(client, token, VIEWER), "user")  # the same budget over HTTP


@pytest.mark.parametrize("compiled_reads", [True, False], ids=["prepared path", "executor path"])
async def test_a_refusal_keeps_429_in_either_media_type(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef,
    users: tuple[LoginUser, LoginUser], compiled_reads: bool,
) -> None:
    node_id = await _project(owner_engine, fresh_tenant)
    app = app_with(database, rate_limit_per_user=2, compiled_reads=compiled_reads)
    async with running(app) as client_from:
        client = client_from(new_address())
        token = await sign_in(client, users[0])
        for accept in ("application/graphql-response+json", "application/json"):
            response = await client.post(
                "/graphql", json={"query": BY_ID, "variables": {"id": node_id}},
                headers={"authorization": f"Bearer {token}", "accept": accept},
            )
            assert response.status_code == 200, response.text
        for accept in ("application/graphql-response+json", "application/json"):
            refused = await client.post(
                "/graphql", json={"query": BY_ID, "variables": {"id": node_id}},
                headers={"authorization": f"Bearer {token}", "accept": accept},
            )
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1, refused.text
            assert refused.headers["content-type"].startswith(accept)
            assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


def test_an_ipv6_client_is_limited_by_its_64() -> None:
    from auth.rate_limits import address_key

    assert address_key("10.1.2.3") == "10.1.2.3"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::9") == "2001:db8:1:3::/64"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"  # an IPv4 client seen through a dual-stack socket
    assert address_key(None) is None


async def test_addresses_of_one_ipv6_64_share_a_budget(database: Database, users: tuple[LoginUser, LoginUser]) -> None:
    prefix = f"2001:db8:{uuid.uuid4().int % 0xFFFF:x}:{uuid.uuid4().int % 0xFFFF:x}"
    app = app_with(database, rate_limit_per_address=2)
    async with running(app) as client_from:
        one, two = client_from(f"{prefix}::1"), client_from(f"{prefix}:aa:bb:cc:dd")
        token = await sign_in(one, users[0])
        assert (await post(one, token, VIEWER)).status_code == 200
        assert (await post(two, token, VIEWER)).status_code == 200
        assert_refused(await post(two, token, VIEWER), "address")
        assert (await post(client_from("2001:db8:ffff:ffff::1"), token, VIEWER)).status_code == 200  # another /64
