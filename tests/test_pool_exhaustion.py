"""Behaviour under load: a bounded pool whose exhaustion answers 503 with Retry-After, and the
idle-in-transaction timeout beside the statement timeout."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.db import create_engine
from server.app import create_app
from server.overload import PoolExhaustion, retry_after_seconds
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for

POOL_TIMEOUT_MS = 1_500
QUERY = {"query": "{ viewer { user { id } } }"}


def test_retry_after_rounds_the_pool_wait_up_to_whole_seconds() -> None:
    assert retry_after_seconds(1) == 1
    assert retry_after_seconds(1_000) == 1
    assert retry_after_seconds(1_500) == 2
    assert retry_after_seconds(30_000) == 30


async def test_an_exhausted_pool_answers_503_with_retry_after_then_serves_once_released(
    database: Database, owner_engine: AsyncEngine, tenant_a: TenantRef
) -> None:
    user = await make_login_user(owner_engine, tenant_a)
    settings = settings_for(database.app_url, db_pool_size=2, db_max_overflow=0, db_pool_timeout_ms=POOL_TIMEOUT_MS)
    app = create_app(settings)
    engine = app.state.engine
    async with app_client(app, timeout=60) as client:
        signed_in = await client.post("/auth/login", json=user.credentials())
        assert signed_in.status_code == 200, signed_in.text
        auth = {"authorization": f"Bearer {signed_in.json()['token']}"}
        ok = await client.post("/graphql", json=QUERY, headers=auth)
        assert ok.status_code == 200, ok.text
        assert body_id(ok.json())

        # Every connection the process may open is taken.
        held: list[AsyncConnection] = [await engine.connect() for _ in range(2)]
        try:
            assert engine.pool.checkedout() == 2
            started = time.monotonic()
            refused = await client.post("/graphql", json=QUERY, headers=auth)
            waited = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "2"  # 1.5 s rounded up
            body = refused.json()
            assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert body["error"]["requestId"] == refused.headers["x-request-id"]
            # The configured bound was waited, and not much more (generous: the machine is shared).
            assert waited >= POOL_TIMEOUT_MS / 1000 * 0.95
            assert waited < 30

            # A public route that needs the database (sign-in) is refused the same way, not with a 500.
            login = await client.post("/auth/login", json=user.credentials())
            assert login.status_code == 503, login.text
            assert login.headers["retry-after"] == "2"
            assert engine.pool.checkedout() == 2  # the refusals took nothing and left nothing checked out
        finally:
            for conn in held:
                await conn.close()

        again = await client.post("/graphql", json=QUERY, headers=auth)
        assert again.status_code == 200, again.text
        assert body_id(again.json()) == body_id(ok.json())
        assert engine.pool.checkedout() == 0

    middleware = _pool_middleware(app)
    assert middleware is not None and middleware.refused == 2


async def test_requests_waiting_less_than_the_bound_are_served_not_refused(
    database: Database, owner_engine: AsyncEngine, tenant_a: TenantRef
) -> None:
    """A connection freed within the acquire timeout serves the waiting request (no 503 below the bound)."""
    user = await make_login_user(owner_engine, tenant_a)
    settings = settings_for(database.app_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_ms=20_000)
    app = create_app(settings)
    async with app_client(app, timeout=60) as client:
        signed_in = await client.post("/auth/login", json=user.credentials())
        assert signed_in.status_code == 200, signed_in.text
        auth = {"authorization": f"Bearer {signed_in.json()['token']}"}
        held = await app.state.engine.connect()
        pending = asyncio.create_task(client.post("/graphql", json=QUERY, headers=auth))
        await asyncio.sleep(0.5)
        assert not pending.done()  # waiting for the pool
        await held.close()
        response = await asyncio.wait_for(pending, 30)
        assert response.status_code == 200, response.text


def body_id(body: dict[str, object]) -> object:
    data = body["data"]
    assert isinstance(data, dict)
    viewer = data["viewer"]
    assert isinstance(viewer, dict)
    return viewer["user"]["id"]


def _pool_middleware(app: object) -> PoolExhaustion | None:
    """The PoolExhaustion instance of the built middleware stack."""
    layer = getattr(app, "middleware_stack", None)
    while layer is not None:
        if isinstance(layer, PoolExhaustion):
            return layer
        layer = getattr(layer, "app", None)
    return None


async def test_the_server_role_carries_the_idle_in_transaction_timeout_beside_the_statement_timeout(
    database: Database,
) -> None:
    settings = settings_for(database.app_url, db_idle_in_transaction_timeout_ms=7_000, db_statement_timeout_ms=9_000)
    app = create_app(settings)
    async with app.state.engine.connect() as conn:
        idle = await conn.scalar(text("SELECT current_setting('idle_in_transaction_session_timeout')"))
        statement = await conn.scalar(text("SELECT current_setting('statement_timeout')"))
    await app.state.engine.dispose()
    assert (idle, statement) == ("7s", "9s")
    default = settings_for(database.app_url)
    assert default.db_idle_in_transaction_timeout_ms == 60_000


async def test_a_transaction_left_idle_past_the_timeout_is_ended_by_the_server(database: Database) -> None:
    engine = create_engine(database.app_url, pool_size=1, max_overflow=0, idle_in_transaction_timeout_ms=300)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))  # the transaction is open now
            backend = await conn.scalar(text("SELECT pg_backend_pid()"))
            await asyncio.sleep(1.5)
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(text("SELECT 1"))
            # PostgreSQL ended the session (FATAL idle-in-transaction timeout); the driver finds it closed.
            message = str(caught.value.orig)
            assert "idle-in-transaction" in message or "connection is closed" in message, message
        async with engine.connect() as conn:  # the pool hands out a working connection again
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != backend
            gone = await conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": backend})
            assert gone == 0  # the idle session's backend has exited
    finally:
        await engine.dispose()

    # Without the timeout the same pause is harmless: the statement after it runs.
    patient = create_engine(database.app_url, pool_size=1, max_overflow=0)
    try:
        async with patient.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await asyncio.sleep(1.5)
            assert await conn.scalar(text("SELECT 2")) == 2
    finally:
        await patient.dispose()


async def test_a_websocket_connection_init_on_an_exhausted_pool_is_closed_with_1013(
    database: Database, owner_engine: AsyncEngine, tenant_a: TenantRef
) -> None:
    from tests.live.ws_support import live_server, ws_connect

    user = await make_login_user(owner_engine, tenant_a)
    async with live_server(database.app_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_ms=1_000) as server:
        token = await server.sign_in(user)
        held = await server.app.state.engine.connect()
        try:
            async with ws_connect(server) as ws:
                await ws.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
                assert await ws.closed(30) == (1013, "The server is busy; try again later")
        finally:
            await held.close()
        async with ws_connect(server) as ws:  # released: the same credential is accepted
            assert (await ws.init({"authorization": f"Bearer {token}"}))["type"] == "connection_ack"
