"""Fixtures for the authentication tests: the app over HTTP with a clock the test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from server.app import create_app
from tests.conftest import Database
from tests.support.clock import FakeClock
from tests.support.http import app_client, test_settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(database: Database, clock: FakeClock) -> Starlette:
    application = create_app(test_settings(database.app_url))
    application.state.auth.clock = clock
    return application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as http:
        yield http
