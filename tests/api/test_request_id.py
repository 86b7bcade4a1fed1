"""The request id is the server's own unless the peer is a trusted proxy (GWM_TRUSTED_PROXIES).

A client that reuses an id must not merge two requests in the audit trail nor, through
permission_audit's unique key (tenant, request id, permission, path), lose a denial.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from schema.errors import describe_exception
from server.app import create_app
from server.settings import Settings, SettingsError
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import gql_response, sign_in
from tests.support.http import app_client, make_login_user
from tests.support.http import test_settings as settings_for

DENIED = "{ apiKeys { __typename } }"  # a Viewer lacks api_key:admin: one denial per request
CLIENT_ID = "client-chosen-request-id-0001"


async def _denials(owner_engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID) -> list[tuple[str, str]]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        rows = (await conn.execute(
            text("SELECT request_id, field_path FROM permission_audit WHERE user_id = :u ORDER BY seq"),
            {"u": user_id},
        )).all()
        await conn.rollback()
    return [(r.request_id, r.field_path) for r in rows]


async def _send_twice(client: httpx.AsyncClient, token: str) -> list[str]:
    ids = []
    for _ in range(2):
        response = await client.post("/graphql", json={"query": DENIED}, headers={
            "authorization": f"Bearer {token}", "x-request-id": CLIENT_ID})
        assert response.status_code == 200
        assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        ids.append(response.headers["x-request-id"])
    return ids


async def test_an_untrusted_peer_cannot_choose_the_request_id(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
    token = await sign_in(client, user)
    ids = await _send_twice(client, token)
    assert CLIENT_ID not in ids and ids[0] != ids[1]
    assert all(uuid.UUID(i) for i in ids)
    # Two requests, two denials, each under its own request's id.
    assert await _denials(owner_engine, fresh_tenant, user.id) == [(ids[0], "apiKeys"), (ids[1], "apiKeys")]


async def test_a_trusted_proxy_passes_its_request_id_on(
    database: Database, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    app = create_app(settings_for(database.app_url, trusted_proxies=("127.0.0.0/8",)))
    async with app_client(app) as client:  # its peer is 127.0.0.1
        user = await make_login_user(owner_engine, fresh_tenant, roles=["Viewer"])
        token = await sign_in(client, user)
        response = await gql_response(client, "{ viewer { __typename } }", token=token)
        assert response.headers["x-request-id"] != CLIENT_ID  # no header: the server's own
        ids = await _send_twice(client, token)
    assert ids == [CLIENT_ID, CLIENT_ID]
    # The proxy's id is trusted as given; when it comes again, the second request's denial is still
    # recorded, under that id with a suffix (permission_audit's key holds the request id).
    denials = await _denials(owner_engine, fresh_tenant, user.id)
    assert [path for _, path in denials] == ["apiKeys", "apiKeys"]
    assert denials[0][0] == CLIENT_ID and denials[1][0].startswith(CLIENT_ID + "+")


def test_trusted_proxies_setting() -> None:
    settings = Settings.from_env({"GWM_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7 ,::1"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.168.1.7/32", "::1/128")
    assert Settings.from_env({}).trusted_proxies == ()
    with pytest.raises(SettingsError, match="GWM_TRUSTED_PROXIES"):
        Settings.from_env({"GWM_TRUSTED_PROXIES": "10.0.0.0/8,proxy.example"})


async def test_database_errors_carry_no_bound_values(app_engine: AsyncEngine) -> None:
    """Engines hide bound parameters; the log line of a database error quotes no value at all."""
    secret = "someone.secret@example.test"
    async with app_engine.connect() as conn:
        with pytest.raises(DBAPIError) as caught:
            statement = text("SELECT CAST(CAST(:v AS text) AS integer) WHERE :w = 'x'")
            await conn.execute(statement, {"v": secret, "w": secret})
    assert "parameters hidden" in str(caught.value)
    assert f"'{secret}'" not in str(caught.value).split("[SQL:")[1]  # nothing after the statement
    logged = describe_exception(caught.value)
    assert secret not in logged and "SQLSTATE 22P02" in logged
