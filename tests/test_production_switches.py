"""Production switches (docs/deploy.md): security headers, CORS allow-list, no field suggestions,
introspection only for graphql:adhoc, the production limits (aliases through fragments, tokens, page
size), array batching refused.

Everything over HTTP through the whole application (httpx ASGITransport). A refused request runs no
SQL beyond the principal lookup: counted at the driver (tests/support/roundtrips.py) against the
round trips of `{ __typename }`, which is that lookup and nothing else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from schema.limits import DEVELOPMENT, PRODUCTION
from server.app import create_app
from server.graphiql import GRAPHIQL_PATH
from server.security import HSTS
from server.settings import Settings, SettingsError
from tests.conftest import Database
from tests.support.db import TEST_AUDIT_KEYS, TenantRef
from tests.support.graphql import gql, gql_response, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.roundtrips import count_round_trips

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = "https://crm.example.test"
REFUSED = "https://evil.example.test"


@pytest.fixture(scope="module")
def prod_app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url, environment="production", cors_origins=(ALLOWED,)))


@pytest.fixture(scope="module")
def dev_app(database: Database) -> Starlette:
    return create_app(settings_for(database.app_url))


@pytest.fixture
async def prod(prod_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(prod_app) as http:
        yield http


@pytest.fixture
async def dev(dev_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(dev_app) as http:
        yield http


@pytest.fixture
async def viewer(prod: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    return await sign_in(prod, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))


@pytest.fixture
async def analyst(prod: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    return await sign_in(prod, await make_login_user(owner_engine, fresh_tenant, roles=["BD Analyst"]))


async def _round_trips(client: httpx.AsyncClient, app: Starlette, body: Any, token: str) -> tuple[httpx.Response, int]:
    with count_round_trips(app.state.engine) as trips:
        response = await client.post("/graphql", json=body, headers={"authorization": f"Bearer {token}"})
    return response, len(trips)


async def _refused_without_sql(
    client: httpx.AsyncClient, app: Starlette, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The refusal's body, after checking it ran only the principal lookup's round trips."""
    await gql(client, "{ __typename }", token=token)
    _, baseline = await _round_trips(client, app, {"query": "{ __typename }"}, token)
    response, trips = await _round_trips(client, app, {"query": query, "variables": variables or {}}, token)
    assert trips == baseline, (trips, baseline)
    body: dict[str, Any] = response.json()
    assert body.get("data") is None, body
    assert body["errors"], body
    return body


# -- security headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/graphql", "/no-such-path", GRAPHIQL_PATH])
async def test_security_headers_on_every_response(prod: httpx.AsyncClient, path: str) -> None:
    response = await prod.get(path, headers={"accept": "application/json"})
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["strict-transport-security"] == HSTS  # the client speaks https
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "server" not in headers


async def test_graphiql_keeps_its_own_policy(prod: httpx.AsyncClient) -> None:
    response = await prod.get(GRAPHIQL_PATH)
    assert response.status_code == 200  # public: it carries the sign-in bar
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'self'") and policy.count("frame-ancestors") == 1
    assert response.headers.get_list("content-security-policy") == [policy]


async def test_hsts_only_over_https_unless_forced(database: Database) -> None:
    for force, expected in ((False, None), (True, HSTS)):
        app = create_app(settings_for(database.app_url, force_hsts=force))
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as http:
            response = await http.get("/healthz")
        assert response.status_code == 200
        assert response.headers.get("strict-transport-security") == expected
        assert response.headers["x-content-type-options"] == "nosniff"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(database: Database) -> Iterator[str]:
    """`gwm serve` on a free port of 127.0.0.1 with the environment's defaults (GWM_ENV unset)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GWM_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=database.owner_url,
        GWM_APP_DATABASE_URL=database.app_url,
        GWM_SECRET_KEYS="k1:" + "A" * 43 + "=",
        GWM_AUDIT_KEYS=TEST_AUDIT_KEYS,
        GWM_LOG_LEVEL="warning",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--no-migrate", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"gwm serve exited with {proc.returncode}:\n{out}")
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("gwm serve did not answer /healthz within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.server
async def test_gwm_serve_sends_no_server_header_and_runs_the_production_profile(
    served: str, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    viewer = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert "server" not in health.headers
        assert health.headers["x-content-type-options"] == "nosniff"
        assert "strict-transport-security" not in health.headers  # plain http, GWM_HSTS unset
        login = await http.post("/auth/login", json=viewer.credentials())
        assert login.status_code == 200, login.text
        auth = {"authorization": f"Bearer {login.json()['token']}"}
        http.cookies.clear()
        refused = await http.post("/graphql", json={"query": "{ __schema { queryType { name } } }"}, headers=auth)
        assert "server" not in refused.headers
        (error,) = refused.json()["errors"]
        # Trusted documents are on by default in production: a Viewer runs registered documents only.
        assert error["extensions"]["code"] == "TRUSTED_DOCUMENT_REQUIRED"
        operation = (ROOT / "graphql" / "operations" / "viewer.graphql").read_text()
        ok = await http.post("/graphql", json={"query": operation}, headers=auth)
        assert ok.json()["data"]["viewer"]["roles"], ok.text


# -- CORS -----------------------------------------------------------------------------------------


def _preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }


async def test_cors_preflight_of_an_allowed_origin(prod: httpx.AsyncClient) -> None:
    response = await prod.options("/graphql", headers=_preflight(ALLOWED))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_cors_preflight_of_another_origin_is_refused_without_cors_headers(
    prod: httpx.AsyncClient, dev: httpx.AsyncClient
) -> None:
    # The production app allows one origin; the development app none (the default).
    for client, origin in ((prod, REFUSED), (dev, ALLOWED)):
        response = await client.options("/graphql", headers=_preflight(origin))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "CORS_ORIGIN_REFUSED"
        assert not [name for name in response.headers if name.startswith("access-control-")]


async def test_cors_requests_carry_the_header_only_for_an_allowed_origin(
    prod: httpx.AsyncClient, viewer: str
) -> None:
    auth = {"authorization": f"Bearer {viewer}"}
    allowed = await prod.post("/graphql", json={"query": "{ __typename }"}, headers={**auth, "origin": ALLOWED})
    assert allowed.status_code == 200 and allowed.json() == {"data": {"__typename": "Query"}}
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    refused = await prod.post("/graphql", json={"query": "{ __typename }"}, headers={**auth, "origin": REFUSED})
    assert not [name for name in refused.headers if name.startswith("access-control-")]


# -- no field suggestions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ organization { id } }", None),  # a field: "Did you mean organizations?"
        ("{ organizations(frist: 1) { nodes { id } } }", None),  # an argument
        ("query ($f: OrganizationFilte) { organizations(filter: $f) { nodes { id } } }", None),  # a type
        ("{ organizations(filter: {nme: {equalTo: \"x\"}}) { nodes { id } } }", None),  # an input field
    ],
)
async def test_no_field_suggestions(
    prod: httpx.AsyncClient, prod_app: Starlette, viewer: str, query: str, variables: dict[str, Any] | None
) -> None:
    body = await _refused_without_sql(prod, prod_app, viewer, query, variables)
    for error in body["errors"]:
        assert "Did you mean" not in error["message"], error
        assert error["message"].strip()


async def test_no_suggestion_in_a_variable_error(prod: httpx.AsyncClient, viewer: str) -> None:
    query = "query ($f: OrganizationFilter) { organizations(filter: $f) { nodes { id } } }"
    response = await gql_response(prod, query, {"f": {"nme": {"equalTo": "x"}}}, token=viewer)
    errors = response.json()["errors"]
    assert errors and all("Did you mean" not in e["message"] for e in errors), errors
    assert any("nme" in e["message"] for e in errors)


# -- introspection --------------------------------------------------------------------------------


async def test_introspection_refused_to_a_viewer(prod: httpx.AsyncClient, prod_app: Starlette, viewer: str) -> None:
    for query in (
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Query") { name } }',
        "{ ...F } fragment F on Query { __schema { types { name } } }",
        "{ organizations { ... on OrganizationConnection { __type: totalCount } } __type(name: \"X\") { name } }",
    ):
        body = await _refused_without_sql(prod, prod_app, viewer, query)
        (error,) = body["errors"]
        assert error["extensions"] == {"code": "FORBIDDEN", "permission": "graphql:adhoc"}
    assert (await gql(prod, "{ __typename }", token=viewer))["data"] == {"__typename": "Query"}


async def test_introspection_served_to_an_analyst(prod: httpx.AsyncClient, analyst: str) -> None:
    body = await gql(prod, "{ __schema { queryType { name } } }", token=analyst)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_development_serves_introspection_to_a_viewer(
    dev: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    token = await sign_in(dev, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))
    body = await gql(dev, "{ __schema { queryType { name } } }", token=token)
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


# -- production limits ----------------------------------------------------------------------------


def _aliases_in_fragment(count: int) -> str:
    """`count` aliases: half of them written in one fragment, which is spread twice."""
    inner = " ".join(f"a{i}: __typename" for i in range(count // 2))
    return f"{{ ...F ...F }} fragment F on Query {{ {inner} }}"


async def test_aliases_are_counted_through_fragment_spreads(
    prod: httpx.AsyncClient, prod_app: Starlette, viewer: str, dev: httpx.AsyncClient, dev_viewer: str
) -> None:
    assert PRODUCTION.max_aliases == 15 < DEVELOPMENT.max_aliases
    admitted = "{ ...F ...G } fragment F on Query { " + " ".join(f"a{i}: __typename" for i in range(8)) + " }"
    admitted += " fragment G on Query { " + " ".join(f"b{i}: __typename" for i in range(7)) + " }"
    assert len((await gql(prod, admitted, token=viewer))["data"]) == 15
    # 8 aliases written once, spread twice: 16.
    document = _aliases_in_fragment(16)
    assert document.count(":") == 8
    body = await _refused_without_sql(prod, prod_app, viewer, document)
    assert any("16 aliases found. Allowed: 15" in e["message"] for e in body["errors"]), body
    # The development profile admits it.
    assert (await gql(dev, document, token=dev_viewer))["data"] == {f"a{i}": "Query" for i in range(8)}


async def test_circular_fragments_are_refused_cleanly(
    prod: httpx.AsyncClient, prod_app: Starlette, viewer: str
) -> None:
    query = "{ ...A } fragment A on Query { a: __typename ...B } fragment B on Query { b: __typename ...A }"
    body = await _refused_without_sql(prod, prod_app, viewer, query)
    messages = " ".join(e["message"] for e in body["errors"])
    assert "Cannot spread fragment" in messages, body
    assert all(e.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR" for e in body["errors"])


def _tokens(document: str) -> int:
    from graphql.language import Lexer, Source, TokenKind

    lexer, count = Lexer(Source(document)), 0
    while lexer.advance().kind is not TokenKind.EOF:
        count += 1
    return count


def _typenames(tokens: int) -> str:
    """A document of exactly `tokens` tokens: operations of 5 tokens (`query Qn { __typename }`), the
    first with as many more `__typename`s as make up the rest (within the selection bound)."""
    count, rest = divmod(tokens, 5)
    first = "query Q0 { " + " ".join(["__typename"] * (1 + rest)) + " }"
    document = " ".join([first, *(f"query Q{i} {{ __typename }}" for i in range(1, count))])
    assert _tokens(document) == tokens
    return document


async def _run_q0(client: httpx.AsyncClient, document: str, token: str) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": document, "operationName": "Q0"}, headers={"authorization": f"Bearer {token}"}
    )
    body: dict[str, Any] = response.json()
    return body


async def test_token_limit(
    prod: httpx.AsyncClient, prod_app: Starlette, viewer: str, dev: httpx.AsyncClient, dev_viewer: str
) -> None:
    assert PRODUCTION.max_tokens == 2_000
    assert await _run_q0(prod, _typenames(2_000), viewer) == {"data": {"__typename": "Query"}}
    over = _typenames(2_001)
    # Admitted (and kept parsed) by the development profile first: the kept parse is not reused
    # under the tighter limit.
    assert await _run_q0(dev, over, dev_viewer) == {"data": {"__typename": "Query"}}
    await gql(prod, "{ __typename }", token=viewer)
    with count_round_trips(prod_app.state.engine) as baseline:
        await gql(prod, "{ __typename }", token=viewer)
    with count_round_trips(prod_app.state.engine) as trips:
        body = await _run_q0(prod, over, viewer)
    assert len(trips) == len(baseline)
    (error,) = body["errors"]
    assert "2000 tokens" in error["message"], error


@pytest.fixture
async def dev_viewer(dev: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    return await sign_in(dev, await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"]))


@pytest.mark.parametrize(
    ("query", "variables", "path"),
    [
        ("{ organizations(first: 10000) { nodes { id } } }", None, ["organizations"]),
        ("query ($n: Int) { organizations(last: $n) { nodes { id } } }", {"n": 10_000}, ["organizations"]),
        (
            "query ($n: Int = 10000) "
            "{ organizations { nodes { kids: childOrganizations(first: $n) { nodes { id } } } } }",
            None,
            ["organizations", "nodes", "kids"],
        ),
    ],
    ids=["literal", "variable", "nested-default"],
)
@pytest.mark.parametrize("profile", ["production", "development"])
async def test_a_page_of_ten_thousand_is_refused_before_sql(
    prod: httpx.AsyncClient,
    prod_app: Starlette,
    viewer: str,
    dev: httpx.AsyncClient,
    dev_app: Starlette,
    dev_viewer: str,
    profile: str,
    query: str,
    variables: dict[str, Any] | None,
    path: list[str],
) -> None:
    client, app, token = (prod, prod_app, viewer) if profile == "production" else (dev, dev_app, dev_viewer)
    body = await _refused_without_sql(client, app, token, query, variables)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    argument = "last" if "last:" in query else "first"
    assert error["message"] == f"`{argument}` must be between 0 and 100; got 10000."
    assert error["path"] == path  # the field's response path (no list index: nothing ran)


# -- array batching -------------------------------------------------------------------------------


async def test_array_batching_is_refused(prod: httpx.AsyncClient, prod_app: Starlette, viewer: str) -> None:
    _, baseline = await _round_trips(prod, prod_app, {"query": "{ __typename }"}, viewer)
    batch = [{"query": "{ __typename }"}, {"query": "{ __typename }"}]
    response, trips = await _round_trips(prod, prod_app, batch, viewer)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert trips <= baseline


# -- settings -------------------------------------------------------------------------------------


def test_settings_default_to_production_from_the_environment() -> None:
    assert Settings.from_env({}).limit_profile is PRODUCTION
    assert Settings.from_env({"GWM_ENV": "development"}).limit_profile is DEVELOPMENT
    assert Settings.from_env({}).cors_origins == ()
    origins = "https://a.example.test, http://127.0.0.1:5173/"
    settings = Settings.from_env({"GWM_CORS_ORIGINS": origins, "GWM_HSTS": "on"})
    assert settings.cors_origins == ("https://a.example.test", "http://127.0.0.1:5173")
    assert settings.force_hsts is True


@pytest.mark.parametrize(
    ("name", "value"),
    [("GWM_ENV", "staging"), ("GWM_CORS_ORIGINS", "*"), ("GWM_CORS_ORIGINS", "https://a.test/path"),
     ("GWM_CORS_ORIGINS", "null"), ("GWM_HSTS", "maybe")],
)
def test_bad_switch_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


# -- the same switches over WebSocket -------------------------------------------------------------


@pytest.mark.server
async def test_a_query_over_websocket_gets_the_production_switches(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    from tests.live.ws_support import live_server, ws_connect

    viewer = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
    analyst = await make_login_user(owner_engine, fresh_tenant, roles=["BD Analyst"])
    async with live_server(database.app_url, environment="production") as server:
        for user, allowed in ((viewer, False), (analyst, True)):
            token = await server.sign_in(user)
            async with ws_connect(server) as ws:
                assert (await ws.init({"authorization": f"Bearer {token}"}))["type"] == "connection_ack"
                await ws.subscribe("1", "{ __schema { queryType { name } } }")
                message = await ws.next_of("1")
                if allowed:
                    assert message["type"] == "next", message
                    assert message["payload"]["data"]["__schema"]["queryType"]["name"] == "Query"
                else:
                    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
                    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"], message
                await ws.subscribe("2", "{ organization { id } }")
                message = await ws.next_of("2")
                errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
                assert errors and all("Did you mean" not in e["message"] for e in errors), message
                await ws.send({"id": "3", "type": "subscribe", "payload": {
                    "query": _typenames(2_001), "operationName": "Q0", "variables": {}}})
                code, reason = await ws.closed()  # graphql-transport-ws: a document that does not parse
                assert code == 4400 and "more than 2000 tokens" in reason, (code, reason)


async def test_a_prepared_query_with_a_page_of_ten_thousand_is_refused_before_sql(
    prod: httpx.AsyncClient, prod_app: Starlette, viewer: str
) -> None:
    """The view's prepared fast path (schema/context.py) serves a repeated compiled query: a variable
    page over the maximum is refused there too, before any SQL of the operation."""
    query = "query Prepared($n: Int) { organizations(first: $n) { nodes { id } } }"
    for _ in range(3):
        assert (await gql(prod, query, {"n": 5}, token=viewer))["data"] == {"organizations": {"nodes": []}}
    body = await _refused_without_sql(prod, prod_app, viewer, query, {"n": 10_000})
    (error,) = body["errors"]
    assert error["message"] == "`first` must be between 0 and 100; got 10000."
