"""The app in-process over HTTP (httpx.ASGITransport), with its lifespan, and sign-in helpers."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from auth.passwords import PasswordHasher
from models.db import set_tenant
from server.settings import Settings
from tests.support.db import TEST_AUDIT_KEYS, TenantRef
from tests.support.secrets import remember, request_hook, response_hook

__all__ = ["TEST_ITERATIONS", "LoginUser", "app_client", "make_login_user", "test_settings"]

# Tests hash with a low PBKDF2 count; tests/auth/test_passwords.py asserts the production one.
TEST_ITERATIONS = 1_000


def test_settings(app_url: str, **overrides: Any) -> Settings:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    values: dict[str, Any] = {
        "app_database_url": app_url,
        "password_iterations": TEST_ITERATIONS,
        "secret_keys": f"t1:{key}",
        "audit_keys": TEST_AUDIT_KEYS,
        "public_url": "http://127.0.0.1:8000",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def app_client(app: Starlette, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [request_hook], "response": [response_hook]}
        async with httpx.AsyncClient(
            transport=transport, base_url="https://testserver", event_hooks=hooks, **kwargs
        ) as client:
            yield client


@dataclass(frozen=True, slots=True)
class LoginUser:
    id: uuid.UUID
    tenant: TenantRef
    email: str
    password: str

    def credentials(self) -> dict[str, str]:
        return {"email": self.email, "password": self.password, "tenant": self.tenant.subdomain}


async def make_login_user(
    owner_engine: AsyncEngine,
    tenant: TenantRef,
    *,
    roles: Sequence[str] = ("Viewer",),
    password: str | None = None,
    **columns: Any,
) -> LoginUser:
    """A committed user with a password (hashed at the test count) and the named system roles."""
    password = password or f"correct horse {secrets.token_hex(6)} battery"
    remember(password)
    email = columns.pop("email", f"user-{uuid.uuid4().hex[:10]}@example.test")
    password_hash = await PasswordHasher(TEST_ITERATIONS).hash(password)
    values = {"tenant_id": tenant.id, "email": email, "first_name": "Test", "last_name": "User",
              "password_hash": password_hash, **columns}
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        cols = ", ".join(values)
        params = ", ".join(f":{k}" for k in values)
        user_id = await conn.scalar(text(f"INSERT INTO users ({cols}) VALUES ({params}) RETURNING id"), values)
        for role in roles:
            await conn.execute(
                text(
                    "INSERT INTO user_roles (tenant_id, user_id, role_id, assigned_by)"
                    " SELECT :t, :u, id, :by FROM roles WHERE tenant_id = :t AND name = :r"
                ),
                {"t": tenant.id, "u": user_id, "r": role, "by": tenant.system_user_id},
            )
    assert user_id is not None
    return LoginUser(id=user_id, tenant=tenant, email=email, password=password)


def dumps(value: Any) -> str:
    return json.dumps(value)
