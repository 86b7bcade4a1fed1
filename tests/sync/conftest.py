"""Fixtures for the connector tests: a fake SAM.gov on 127.0.0.1 reached through httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sync.connectors.samgov import SamGovConnector
from tests.sync.fake_samgov import API_KEY, FakeSamGov

BASE_URL = "http://127.0.0.1:8765"


@pytest.fixture
def fake() -> FakeSamGov:
    return FakeSamGov()


@pytest.fixture
async def client(fake: FakeSamGov) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()), base_url=BASE_URL) as http:
        yield http


def samgov(client: httpx.AsyncClient, *, limit: int = 1000, api_key: str = API_KEY) -> SamGovConnector:
    """A SAM.gov connector aimed at the fake."""
    return SamGovConnector(client, api_key=api_key, base_url=BASE_URL, limit=limit)
