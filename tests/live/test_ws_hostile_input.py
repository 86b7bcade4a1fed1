"""Hostile strings in subscription arguments, sent where a client sends them: over the WebSocket.

tests/api/test_hostile_input.py walks every string argument of queries and mutations over HTTP; the
subscription arguments are reached here instead. Each case must end in a clean `error` message for the
operation (a GraphQL error with a code), the connection staying open and usable, never a crash.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from graphql import GraphQLObjectType, get_named_type
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.schema import schema as served
from tests.conftest import Database
from tests.live.ws_support import LiveServer, live_server, ws_connect
from tests.support.db import TenantRef
from tests.support.http import make_login_user

pytestmark = pytest.mark.server

STRING_SCALARS = {"String", "ID", "UUID"}
HOSTILE = ["\x00", "a\x00b", "\ud800", "x" * 100_000, "' OR 1=1 --", "../../etc/passwd", "😀" * 10]


def _subscription_string_arguments() -> list[tuple[str, str, str]]:
    subscription = served._schema.subscription_type
    assert isinstance(subscription, GraphQLObjectType)
    out = []
    for name, field in subscription.fields.items():
        for arg_name, arg in field.args.items():
            scalar = get_named_type(arg.type)
            if scalar.name in STRING_SCALARS:
                out.append((name, arg_name, scalar.name))
    return out


CASES = [(f, a, s, i) for f, a, s in _subscription_string_arguments() for i in range(len(HOSTILE))]


@pytest.fixture(scope="module")
async def server(database: Database) -> AsyncIterator[LiveServer]:
    async with live_server(database.app_url) as running:
        yield running


def test_every_subscription_string_argument_has_cases() -> None:
    assert {(f, a) for f, a, _s, _i in CASES} == {(f, a) for f, a, _s in _subscription_string_arguments()}
    assert CASES, "the schema has subscription arguments holding strings"


@pytest.mark.parametrize(("field", "argument", "scalar", "case"), CASES,
                         ids=[f"{f}.{a}[{i}]" for f, a, _s, i in CASES])
async def test_a_hostile_string_gets_a_clean_error(
    server: LiveServer, owner_engine: AsyncEngine, tenant_a: TenantRef, field: str, argument: str, scalar: str,
    case: int,
) -> None:
    user = await make_login_user(owner_engine, tenant_a, roles=("Tenant Admin",))
    token = await server.sign_in(user)
    query = f"subscription ($v: {scalar}!) {{ {field}({argument}: $v) {{ __typename }} }}"
    async with ws_connect(server) as ws:
        ack = await ws.init({"authorization": f"Bearer {token}"})
        assert ack["type"] == "connection_ack"
        await ws.subscribe("1", query, {"v": HOSTILE[case]})
        message: dict[str, Any] = await ws.next_of("1")
        assert message["type"] == "error", message
        codes = {e.get("extensions", {}).get("code") for e in message["payload"]}
        assert codes <= {"BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"} and codes, message
        # The connection is still open and answers the next operation.
        await ws.send({"type": "ping"})
        pong = await ws.receive()
        assert pong["type"] == "pong"
