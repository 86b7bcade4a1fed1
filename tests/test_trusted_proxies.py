"""GWM_TRUSTED_PROXIES decides whose X-Forwarded-For / Forwarded, X-Request-ID and traceparent count.

Served by a real uvicorn on 127.0.0.1 (the peer every request comes from): untrusted, a client's
X-Forwarded-For changes neither the address in its audit rows nor the rate-limit bucket it is
charged to; behind a trusted proxy the rightmost untrusted hop is the client address.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers

from models.db import set_tenant
from server.app import create_app
from server.proxies import TrustedProxies, client_address
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import sign_in
from tests.support.http import make_login_user
from tests.support.http import test_settings as settings_for
from tests.support.served import served

pytestmark = pytest.mark.server

CREATE = "mutation($input: OrganizationCreateInput!) { organizationCreate(input: $input) { organization { id } } }"
SPOOFED = "198.51.100.23"


def _scope(peer: str, headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, Any]:
    items = headers.items() if isinstance(headers, dict) else headers
    return {
        "type": "http", "client": (peer, 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in items],
    }


def _resolve(proxies: TrustedProxies, peer: str, headers: dict[str, str] | list[tuple[str, str]]) -> str | None:
    scope = _scope(peer, headers)
    return proxies.resolve(scope, Headers(scope=scope))


def test_the_client_address_is_the_rightmost_untrusted_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "2001:db8::/32"])
    # An untrusted peer: its headers are not read at all.
    assert _resolve(proxies, "203.0.113.5", {"x-forwarded-for": SPOOFED}) == "203.0.113.5"
    # A trusted peer: hops from the right, trusted ones skipped; what the client wrote further left is ignored.
    assert _resolve(proxies, "10.0.0.2", {"x-forwarded-for": f"{SPOOFED}, 203.0.113.5, 10.1.1.1"}) == "203.0.113.5"
    assert _resolve(proxies, "10.0.0.2", {"x-forwarded-for": "203.0.113.5"}) == "203.0.113.5"
    # Every X-Forwarded-For line counts, in order.
    assert _resolve(proxies, "10.0.0.2", [("x-forwarded-for", SPOOFED), ("x-forwarded-for", "203.0.113.9")]) == (
        "203.0.113.9"
    )
    # No header: the proxy itself; all hops trusted: the leftmost.
    assert _resolve(proxies, "10.0.0.2", {}) == "10.0.0.2"
    assert _resolve(proxies, "10.0.0.2", {"x-forwarded-for": "10.9.9.9, 10.1.1.1"}) == "10.9.9.9"
    # A malformed hop stops the walk at the last hop read.
    assert _resolve(proxies, "10.0.0.2", {"x-forwarded-for": f"{SPOOFED}, not-an-address, 10.1.1.1"}) == "10.1.1.1"
    # RFC 7239 Forwarded (when there is no X-Forwarded-For), IPv6 in brackets with a port, v4 with a port.
    assert _resolve(proxies, "10.0.0.2", {"forwarded": 'for=192.0.2.60;proto=https, for="[2001:db8::7]:4711"'}) == (
        "192.0.2.60"
    )
    assert _resolve(proxies, "10.0.0.2", {"forwarded": 'for="[2001:db9::7]:4711"'}) == "2001:db9::7"
    assert _resolve(proxies, "10.0.0.2", {"x-forwarded-for": "192.0.2.1:5555"}) == "192.0.2.1"
    # An IPv4-mapped IPv6 peer is its IPv4 address.
    assert _resolve(proxies, "::ffff:10.0.0.2", {"x-forwarded-for": "192.0.2.1"}) == "192.0.2.1"
    # Nothing trusted (the default): always the peer.
    assert _resolve(TrustedProxies([]), "10.0.0.2", {"x-forwarded-for": SPOOFED}) == "10.0.0.2"
    # client_address reads what the middleware stored, else the peer.
    assert client_address({"client": ("192.0.2.4", 1), "state": {"client_address": "192.0.2.9"}}) == "192.0.2.9"
    assert client_address({"client": ("192.0.2.4", 1)}) == "192.0.2.4"
    assert client_address({}) is None


async def _audit(owner_engine: AsyncEngine, tenant: TenantRef, request_id: str) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = (await conn.execute(
            text("SELECT host(ip_address) AS ip, request_id FROM audit_logs WHERE request_id = :r"),
            {"r": request_id},
        )).all()
        await conn.rollback()
    return list(rows)


async def _create(client: httpx.AsyncClient, token: str, headers: dict[str, str]) -> str:
    response = await client.post(
        "/graphql",
        json={"query": CREATE, "variables": {"input": {"name": f"Agency {uuid.uuid4().hex[:8]}"}}},
        headers={"authorization": f"Bearer {token}", **headers},
    )
    assert response.status_code == 200 and "errors" not in response.json(), response.text
    return response.headers["x-request-id"]


async def test_a_spoofed_forwarded_for_changes_neither_the_audit_address_nor_the_rate_limit_key(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])
    app = create_app(settings_for(
        database.app_url, rate_limit_per_address=4, rate_limit_per_user=10_000, rate_limit_per_tenant=10_000,
    ))
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        login = await client.post("/auth/login", json=user.credentials(), headers={"x-forwarded-for": SPOOFED})
        assert login.status_code == 200
        token = await sign_in(client, user)
        request_id = await _create(client, token, {"x-forwarded-for": SPOOFED, "forwarded": f"for={SPOOFED}"})
        # Three more root fields from "three other addresses": the same bucket, the fifth is refused.
        statuses = []
        for n in range(4):
            response = await client.post(
                "/graphql", json={"query": "{ viewer { __typename } }"},
                headers={"authorization": f"Bearer {token}", "x-forwarded-for": f"198.51.100.{n + 1}"},
            )
            statuses.append(response.status_code)
    rows = await _audit(owner_engine, fresh_tenant, request_id)
    assert rows and {row.ip for row in rows} == {"127.0.0.1"}
    signed_in = await _audit(owner_engine, fresh_tenant, login.headers["x-request-id"])  # the sign-in's event too
    assert signed_in and {row.ip for row in signed_in} == {"127.0.0.1"}
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429, statuses


async def test_behind_a_trusted_proxy_the_forwarded_client_is_audited_and_charged(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Capture Manager"])
    app = create_app(settings_for(
        database.app_url, trusted_proxies=("127.0.0.1/32",),
        rate_limit_per_address=4, rate_limit_per_user=10_000, rate_limit_per_tenant=10_000,
    ))
    async with served(app) as base, httpx.AsyncClient(base_url=base) as client:
        login = await client.post(
            "/auth/login", json=user.credentials(), headers={"x-forwarded-for": f"{SPOOFED}, 203.0.113.78"}
        )
        assert login.status_code == 200
        token = await sign_in(client, user)
        # The client wrote a hop of its own (left); the proxy appended the address it saw.
        request_id = await _create(client, token, {"x-forwarded-for": f"{SPOOFED}, 203.0.113.77"})
        statuses = []
        for n in range(6):  # six different clients behind the proxy: six buckets
            response = await client.post(
                "/graphql", json={"query": "{ viewer { __typename } }"},
                headers={"authorization": f"Bearer {token}", "x-forwarded-for": f"203.0.113.{n + 1}"},
            )
            statuses.append(response.status_code)
    rows = await _audit(owner_engine, fresh_tenant, request_id)
    assert rows and {row.ip for row in rows} == {"203.0.113.77"}
    signed_in = await _audit(owner_engine, fresh_tenant, login.headers["x-request-id"])
    assert signed_in and {row.ip for row in signed_in} == {"203.0.113.78"}
    assert statuses == [200] * 6
