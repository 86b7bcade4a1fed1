"""graphql-transport-ws over a raw WebSocket against a real uvicorn on 127.0.0.1 (docs/api.md,
"Subscriptions"): the handshake rules, authentication in connection_init, every close code and limit.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import InvalidStatus

from auth.tokens import digest
from models.db import set_tenant
from tests.conftest import Database
from tests.live.ws_support import LiveServer, live_server, ws_connect
from tests.support.db import TenantRef
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

CHANGES = "subscription { changeBatchCommitted { batchId entities { entityType entityId } } }"


@pytest.fixture(scope="module")
async def server(database: Database) -> AsyncIterator[LiveServer]:
    async with live_server(
        database.app_url, ws_init_timeout_ms=700, ws_max_subscriptions=2, ws_max_connections_per_user=2
    ) as running:
        yield running


@pytest.fixture
async def token(server: LiveServer, owner_engine: AsyncEngine, tenant_a: TenantRef) -> str:
    user = await make_login_user(owner_engine, tenant_a, roles=("Viewer",))
    return await server.sign_in(user)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- the handshake -----------------------------------------------------------------------------


@pytest.mark.parametrize("subprotocols", [["graphql-ws"], []], ids=["legacy graphql-ws", "none"])
async def test_an_upgrade_without_graphql_transport_ws_is_refused_at_the_handshake(
    server: LiveServer, subprotocols: list[str]
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(server, subprotocols=subprotocols):
            pass
    assert refused.value.response.status_code == 403


async def test_a_cookie_upgrade_from_a_foreign_origin_is_refused_at_the_handshake(
    server: LiveServer, token: str
) -> None:
    cookie = {"cookie": f"gwm_session={token}"}
    for origin in ("http://evil.example", None):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server, headers=cookie, origin=origin):
                pass
        assert refused.value.response.status_code == 403
    # From the server's own public URL the cookie is the credential.
    async with ws_connect(server, headers=cookie, origin=server.http_url) as ws:
        assert await ws.init() == {"type": "connection_ack"}


async def test_without_the_cookie_any_origin_may_connect_and_authenticate_in_connection_init(
    server: LiveServer, token: str
) -> None:
    async with ws_connect(server, origin="http://elsewhere.example") as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
    async with ws_connect(server) as ws:
        assert (await ws.init({"token": token}))["type"] == "connection_ack"


# -- connection_init ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [{}, {"authorization": "Bearer not-a-token"}, {"token": "gwm_k_nope"}, {"authorization": "Basic x"}],
    ids=["none", "bad session", "bad api key", "not bearer"],
)
async def test_a_missing_or_refused_credential_closes_with_4403(server: LiveServer, payload: dict[str, str]) -> None:
    async with ws_connect(server) as ws:
        await ws.send({"type": "connection_init", "payload": payload})
        code, reason = await ws.closed()
    assert code == 4403
    assert reason.startswith("Forbidden")


async def test_an_init_timeout_closes_with_4408(server: LiveServer) -> None:
    async with ws_connect(server) as ws:
        code, _ = await ws.closed(wait=30)
    assert code == 4408


async def test_a_second_connection_init_closes_with_4429(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.send({"type": "connection_init", "payload": _bearer(token)})
        assert (await ws.closed())[0] == 4429


async def test_subscribe_before_the_ack_closes_with_4401(server: LiveServer) -> None:
    async with ws_connect(server) as ws:
        await ws.subscribe("1", CHANGES)
        assert (await ws.closed())[0] == 4401


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        '"text"',
        {"type": "unknown"},
        {"id": "1", "type": "subscribe"},
        {"id": "1", "type": "subscribe", "payload": {"query": 5}},
        {"id": {"x": 1}, "type": "subscribe", "payload": {"query": CHANGES}},
        {"id": "1", "type": "subscribe", "payload": {"query": CHANGES, "variables": [1]}},
        {"type": "complete"},
        {"id": "1", "type": "subscribe", "payload": {"query": "subscription {"}},
    ],
    ids=["not json", "array", "string", "unknown type", "no payload", "query not text", "id not text",
         "variables not object", "complete without id", "syntax error"],
)
async def test_an_invalid_message_closes_with_4400(server: LiveServer, token: str, message: object) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.send(message)
        assert (await ws.closed())[0] == 4400


async def test_binary_frames_close_with_4400(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.ws.send(b'{"type": "ping"}')
        assert (await ws.closed())[0] == 4400


async def test_ping_is_answered_with_pong(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.send({"type": "ping"})
        assert await ws.receive() == {"type": "pong"}


async def test_a_query_over_the_socket_is_read_with_the_callers_permissions(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.subscribe("q", "query { viewer { credential permissions } }")
        message = await ws.next_of("q")
        assert message["type"] == "next", message
        assert message["payload"]["data"]["viewer"]["credential"] == "SESSION"
        assert "opportunity:read" in message["payload"]["data"]["viewer"]["permissions"]
        assert "user:admin" not in message["payload"]["data"]["viewer"]["permissions"]
        assert (await ws.next_of("q"))["type"] == "complete"


async def test_a_mutation_over_the_socket_is_refused_with_an_error(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.subscribe("m", 'mutation { opportunityProjectCreate(input: {projectName: "x"}) { errors { code } } }')
        message = await ws.next_of("m")
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "BAD_REQUEST"
        await ws.send({"type": "ping"})
        assert await ws.receive() == {"type": "pong"}  # the connection stays usable


# -- limits ------------------------------------------------------------------------------------


async def test_a_duplicate_operation_id_closes_with_4409(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.subscribe("same", CHANGES)
        await ws.subscribe("same", CHANGES)
        assert (await ws.closed())[0] == 4409


async def test_subscriptions_past_the_per_connection_limit_get_an_error_message(
    server: LiveServer, token: str
) -> None:
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.subscribe("a", CHANGES)
        await ws.subscribe("b", CHANGES)
        await ws.subscribe("c", CHANGES)  # GWM_WS_MAX_SUBSCRIPTIONS=2 here
        refused = await ws.next_of("c")
        assert refused["type"] == "error"
        assert refused["payload"][0]["message"] == "Subscription limit reached"
        # The two running ones are untouched; completing one frees its slot.
        await ws.send({"id": "a", "type": "complete"})
        await asyncio.sleep(0.2)
        await ws.subscribe("d", CHANGES)
        assert await ws.quiet("d", 1.0) == []


async def test_connections_past_the_per_user_limit_close_with_4429(server: LiveServer, token: str) -> None:
    async with ws_connect(server) as first, ws_connect(server) as second:
        assert (await first.init(_bearer(token)))["type"] == "connection_ack"
        assert (await second.init(_bearer(token)))["type"] == "connection_ack"
        async with ws_connect(server) as third:  # GWM_WS_MAX_CONNECTIONS_PER_USER=2 here
            await third.send({"type": "connection_init", "payload": _bearer(token)})
            code, reason = await third.closed()
            assert (code, reason) == (4429, "Too many connections for this user")
    # Closed connections free their places.
    await asyncio.sleep(0.3)
    async with ws_connect(server) as again:
        assert (await again.init(_bearer(token)))["type"] == "connection_ack"


# -- the session -------------------------------------------------------------------------------


async def test_connection_init_is_not_session_activity(
    server: LiveServer, owner_engine: AsyncEngine, tenant_a: TenantRef, token: str
) -> None:
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=3)
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant_a.id)
        await conn.execute(
            text("UPDATE user_sessions SET last_activity_at = :t WHERE session_token_hash = :h"),
            {"t": earlier, "h": digest(token)},
        )
        touched = await conn.scalar(text("SELECT count(*) FROM user_sessions WHERE last_activity_at = :t"),
                                    {"t": earlier})
    assert touched == 1
    async with ws_connect(server) as ws:
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        await ws.subscribe("a", CHANGES)
        await asyncio.sleep(0.5)
    await asyncio.sleep(0.3)
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant_a.id)
        still = await conn.scalar(text("SELECT count(*) FROM user_sessions WHERE last_activity_at = :t"),
                                  {"t": earlier})
    assert still == 1


async def test_a_session_reaching_its_absolute_timeout_is_closed_with_4401(
    server: LiveServer, owner_engine: AsyncEngine, tenant_a: TenantRef, token: str
) -> None:
    """No event announces an expiry: the connection re-reads its access when it may have changed."""
    async with ws_connect(server) as ws:
        async with owner_engine.begin() as conn:
            await set_tenant(conn, tenant_a.id)
            await conn.execute(
                text("UPDATE user_sessions SET expires_at = now() + interval '2 seconds'"
                     " WHERE session_token_hash = :h"),
                {"h": digest(token)},
            )
        assert (await ws.init(_bearer(token)))["type"] == "connection_ack"
        code, reason = await ws.closed(wait=30)
    assert (code, reason) == (4401, "Access ended: session_ended")
