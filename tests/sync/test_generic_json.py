"""The generic JSON connector against a small internal endpoint (httpx.ASGITransport, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync.connectors.base import ConnectorError, QueryError, SearchQuery, SearchWindow, get_path
from sync.connectors.generic_json import GenericJsonConnector, GenericJsonMapping

WINDOW = SearchWindow(date(2026, 1, 1), date(2026, 3, 31))
URL = "http://127.0.0.1:8766/api/opportunities"


def record(number: int, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "ref": {"id": f"OPP-{number}", "rfp": f" rfp-{number} "},
        "name": f"  Opportunity {number} ",
        "buyer": {"office": {"name": "Regional Office"}},
        "documents": [{"href": f"https://files.example/{number}.pdf"}],
        "due": "2026-04-01T12:00:00Z",
    }
    item.update(overrides)
    return item


class Endpoint:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.requests: list[list[tuple[str, str]]] = []
        self.broken: bytes | None = None

    async def handle(self, request: Request) -> Response:
        self.requests.append(list(request.query_params.multi_items()))
        if self.broken is not None:
            return Response(self.broken, media_type="application/json")
        start = int(request.query_params["start"])
        size = int(request.query_params["size"])
        return JSONResponse({"result": {"items": self.items[start : start + size], "count": len(self.items)}})


MAPPING = GenericJsonMapping(
    items_path="result.items",
    total_path="result.count",
    id_path="ref.id",
    lineage_path="ref.rfp",
    fields={"title": "name", "office": "buyer.office.name", "first_document": "documents.0.href", "due": "due"},
    offset_param="start",
    limit_param="size",
    limit=2,
    extra_params={"status": "open"},
)


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
async def http(endpoint: Endpoint) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/api/opportunities", endpoint.handle)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        yield client


async def test_maps_fields_by_dotted_path_and_pages(endpoint: Endpoint, http: httpx.AsyncClient) -> None:
    endpoint.items = [record(n) for n in range(1, 6)] + [record(7, ref={"rfp": "x"})]
    result = await GenericJsonConnector(http, url=URL, mapping=MAPPING).search_all(SearchQuery(WINDOW))
    assert [n.notice_id for n in result.notices] == ["OPP-1", "OPP-2", "OPP-3", "OPP-4", "OPP-5"]
    assert [s.reason for s in result.skipped] == ["NO_NOTICE_ID"]
    first = result.notices[0]
    assert first.lineage_key == "RFP-1"
    assert dict(first.fields) == {
        "title": "Opportunity 1",
        "office": "Regional Office",
        "first_document": "https://files.example/1.pdf",
        "due": "2026-04-01T12:00:00Z",
        "notice_id": "OPP-1",
    }
    assert result.pages == 3 and not result.incomplete
    assert endpoint.requests[1] == [
        ("postedFrom", "2026-01-01"),
        ("postedTo", "2026-03-31"),
        ("start", "2"),
        ("size", "2"),
        ("status", "open"),
    ]


async def test_without_a_total_a_short_page_ends_the_search(endpoint: Endpoint, http: httpx.AsyncClient) -> None:
    endpoint.items = [record(n) for n in range(1, 5)]
    mapping = GenericJsonMapping(
        items_path="result.items",
        id_path="ref.id",
        fields={"title": "name"},
        offset_param="start",
        limit_param="size",
        limit=2,
    )
    result = await GenericJsonConnector(http, url=URL, mapping=mapping).search_all(SearchQuery(WINDOW))
    assert len(result.notices) == 4 and result.pages == 3 and not result.incomplete
    assert result.notices[0].lineage_key == "OPP-1"  # no lineage path: the id


async def test_fetch_sends_the_solicitation_number(endpoint: Endpoint, http: httpx.AsyncClient) -> None:
    endpoint.items = [record(1)]
    connector = GenericJsonConnector(http, url=URL, mapping=MAPPING)
    assert [n.notice_id for n in await connector.fetch(SearchQuery(WINDOW, solicitation_number=" RFP-1 "))] == ["OPP-1"]
    assert ("solnum", "RFP-1") in endpoint.requests[0]
    with pytest.raises(QueryError, match="fetch needs"):
        await connector.fetch(SearchQuery(WINDOW))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{oops", "malformed JSON"),
        (b'"text"', "not an object"),
        (b'{"result": {"items": {}, "count": 1}}', "result.items is not a list"),
        (b'{"result": {"items": [], "count": "many"}}', "result.count is not a usable total"),
    ],
)
async def test_unusable_answers_are_connector_errors(
    endpoint: Endpoint, http: httpx.AsyncClient, body: bytes, message: str
) -> None:
    endpoint.broken = body
    with pytest.raises(ConnectorError, match=message):
        await GenericJsonConnector(http, url=URL, mapping=MAPPING).search(SearchQuery(WINDOW))


async def test_an_error_status_is_a_connector_error(http: httpx.AsyncClient) -> None:
    connector = GenericJsonConnector(http, url="http://127.0.0.1:8766/missing", mapping=MAPPING)
    with pytest.raises(ConnectorError, match="answered 404") as raised:
        await connector.search(SearchQuery(WINDOW))
    assert raised.value.status_code == 404


def test_a_mapping_with_an_empty_path_is_refused() -> None:
    with pytest.raises(QueryError, match="title"):
        GenericJsonMapping(items_path="items", id_path="id", fields={"title": "a..b"})
    with pytest.raises(QueryError, match="limit"):
        GenericJsonMapping(items_path="items", id_path="id", fields={}, limit=0)


def test_get_path() -> None:
    document: dict[str, Any] = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert get_path(document, "a.b.1.c") == 2
    assert get_path(document, "a.b.-1.c") == 2
    assert get_path(document, "a.b.5.c") is None
    assert get_path(document, "a.x.c") is None
    assert get_path(document, "a.b.c") is None
