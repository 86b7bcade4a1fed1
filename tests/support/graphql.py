"""GraphQL over HTTP for tests: sign in, post a document, read audit rows."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from tests.support.http import LoginUser

__all__ = ["audit_rows", "gql", "gql_response", "sign_in"]


async def sign_in(client: httpx.AsyncClient, user: LoginUser) -> str:
    """A session token for `user` (password sign-in through /auth/login)."""
    response = await client.post("/auth/login", json=user.credentials())
    assert response.status_code == 200, response.text
    client.cookies.clear()  # each request names its credential explicitly
    token: str = response.json()["token"]
    return token


async def gql_response(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, *, token: str
) -> httpx.Response:
    return await client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"authorization": f"Bearer {token}"},
    )


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str,
    errors: bool = False,
) -> dict[str, Any]:
    """The response body; fails on top-level errors unless `errors=True` (then it requires some)."""
    response = await gql_response(client, query, variables, token=token)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    if errors:
        assert body.get("errors"), body
    else:
        assert "errors" not in body, body
    return body


async def audit_rows(owner_engine: AsyncEngine, tenant_id: uuid.UUID, action: str) -> list[Any]:
    async with owner_engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        rows = (
            await conn.execute(
                text(
                    "SELECT * FROM audit_logs WHERE tenant_id = :t AND action_type = :a"
                    " ORDER BY timestamp_utc, id"
                ),
                {"t": tenant_id, "a": action},
            )
        ).all()
        await conn.rollback()
    return list(rows)
