"""Fixtures for the read API: the app over HTTP, a signed-in caller per system role."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from server.app import create_app
from tests.conftest import Database
from tests.support.db import TenantRef
from tests.support.graphql import sign_in
from tests.support.http import app_client, make_login_user, test_settings


@pytest.fixture(scope="module")
def read_app(database: Database) -> Starlette:
    return create_app(test_settings(database.app_url))


@pytest.fixture
async def client(read_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(read_app) as http:
        yield http


@pytest.fixture(scope="module")
def executor_app(database: Database) -> Starlette:
    """The same API with the read compiler off: every field through the field-by-field executor (the
    path tests of its batching, N+1 included, need; the compiled path is tested on `read_app`)."""
    return create_app(test_settings(database.app_url, compiled_reads=False))


@pytest.fixture
async def executor_client(executor_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(executor_app) as http:
        yield http


@pytest.fixture
async def admin_token(client: httpx.AsyncClient, owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> str:
    user = await make_login_user(owner_engine, fresh_tenant, roles=["Tenant Admin"])
    return await sign_in(client, user)
