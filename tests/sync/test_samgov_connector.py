"""The SAM.gov connector against the fake server (httpx.ASGITransport, no network): requests as
docs/samgov.md says, paging through more than 1,000 records, de-duplication, errors."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from sync.connectors.base import ConnectorError, QueryError, SearchQuery, SearchWindow
from sync.connectors.samgov import MAX_LIMIT, SamGovConnector, build_search_params, check_window, format_date
from tests.sync.conftest import BASE_URL, samgov
from tests.sync.fake_samgov import FakeSamGov, notice

WINDOW = SearchWindow(date(2026, 1, 1), date(2026, 6, 30))


async def test_pages_through_more_than_a_thousand_records(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    fake.notices = [notice(n) for n in range(1, 2501)]
    result = await samgov(client).search_all(SearchQuery(WINDOW))
    assert len(result.notices) == 2500
    assert len({n.notice_id for n in result.notices}) == 2500
    assert result.pages == 3 and not result.incomplete and result.duplicates == 0
    offsets = [dict(request)["offset"] for request in fake.requests]
    limits = [dict(request)["limit"] for request in fake.requests]
    assert offsets == ["0", "1000", "2000"]
    assert limits == ["1000", "1000", "1000"]


async def test_an_exact_multiple_of_the_limit_ends_without_an_empty_page(
    fake: FakeSamGov, client: httpx.AsyncClient
) -> None:
    fake.notices = [notice(n) for n in range(1, 2001)]
    result = await samgov(client).search_all(SearchQuery(WINDOW))
    assert len(result.notices) == 2000 and result.pages == 2


async def test_an_empty_page_before_the_total_marks_the_search_incomplete(
    fake: FakeSamGov, client: httpx.AsyncClient
) -> None:
    fake.notices = [notice(n) for n in range(1, 6)]

    def vanish(server: FakeSamGov, offset: int) -> None:
        if offset == 0:  # from the next request on, the API answers empty pages
            server.answer = lambda request: Response(
                b'{"totalRecords": 5, "opportunitiesData": []}', media_type="application/json"
            )

    fake.before_page = vanish
    result = await samgov(client, limit=2).search_all(SearchQuery(WINDOW))
    assert len(result.notices) == 2 and result.incomplete


async def test_max_pages_bounds_a_search(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    fake.notices = [notice(n) for n in range(1, 11)]
    result = await samgov(client, limit=2).search_all(SearchQuery(WINDOW), max_pages=3)
    assert result.pages == 3 and result.incomplete and len(result.notices) == 6


async def test_request_parameters(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    fake.notices = [notice(1, _ptype="o", typeOfSetAside="SBA"), notice(2, _ptype="k")]
    query = SearchQuery(
        SearchWindow(date(2026, 1, 5), date(2026, 3, 7)),
        solicitation_number=" SOL-00001 ",
        notice_types=("o", "k"),
        naics_code="336611",
        set_aside="SBA",
    )
    found = await samgov(client).fetch(query)
    assert [n.notice_id for n in found] == [f"{1:032x}"]
    assert fake.requests == [
        [
            ("api_key", "test-key"),
            ("postedFrom", "01/05/2026"),
            ("postedTo", "03/07/2026"),
            ("limit", "1000"),
            ("offset", "0"),
            ("solnum", "SOL-00001"),
            ("ptype", "o"),
            ("ptype", "k"),
            ("ncode", "336611"),
            ("typeOfSetAside", "SBA"),
        ]
    ]
    by_id = await samgov(client).fetch(SearchQuery(WINDOW, notice_id=f"{2:032x}"))
    assert [n.notice_id for n in by_id] == [f"{2:032x}"]
    assert ("noticeid", f"{2:032x}") in fake.requests[-1]


def test_dates_are_sent_as_month_day_year() -> None:
    assert format_date(date(2026, 2, 3)) == "02/03/2026"


@pytest.mark.parametrize(
    ("posted_from", "posted_to", "allowed"),
    [
        (date(2025, 3, 1), date(2026, 3, 1), True),  # exactly one year
        (date(2025, 3, 1), date(2026, 3, 2), False),
        (date(2024, 2, 29), date(2025, 2, 28), True),
        (date(2024, 2, 29), date(2025, 3, 1), False),
        (date(2026, 1, 1), date(2026, 1, 1), True),
    ],
)
def test_the_window_is_at_most_one_year(posted_from: date, posted_to: date, allowed: bool) -> None:
    window = SearchWindow(posted_from, posted_to)
    if allowed:
        check_window(window)
    else:
        with pytest.raises(QueryError, match="at most one year apart"):
            check_window(window)


async def test_a_window_over_a_year_is_refused_before_sending(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    with pytest.raises(QueryError, match="at most one year apart"):
        await samgov(client).search(SearchQuery(SearchWindow(date(2025, 1, 1), date(2026, 1, 2))))
    assert fake.requests == []


def test_a_reversed_window_is_refused() -> None:
    with pytest.raises(QueryError, match="postedFrom is after postedTo"):
        SearchWindow(date(2026, 2, 1), date(2026, 1, 1))


@pytest.mark.parametrize(
    ("limit", "offset", "api_key"), [(0, 0, "k"), (MAX_LIMIT + 1, 0, "k"), (10, -1, "k"), (10, 0, "")]
)
def test_bad_limits_offsets_and_keys_are_refused(limit: int, offset: int, api_key: str) -> None:
    with pytest.raises(QueryError):
        build_search_params(api_key, SearchQuery(WINDOW), offset=offset, limit=limit)


def test_a_connector_limit_over_a_thousand_is_refused(client: httpx.AsyncClient) -> None:
    with pytest.raises(QueryError, match="limit"):
        SamGovConnector(client, api_key="k", limit=1001)


async def test_fetch_needs_a_solicitation_number_or_notice_id(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    with pytest.raises(QueryError, match="fetch needs"):
        await samgov(client).fetch(SearchQuery(WINDOW))
    assert fake.requests == []


async def test_the_fake_refuses_what_the_api_refuses(client: httpx.AsyncClient) -> None:
    """The fake checks requests like the API, so a connector bug cannot pass unnoticed."""
    url = f"{BASE_URL}/opportunities/v2/search"
    ok = {"api_key": "test-key", "postedFrom": "01/01/2026", "postedTo": "02/01/2026"}
    assert (await client.get(url, params={**ok, "postedFrom": "2026-01-01"})).json()["errorMessage"] == (
        "Invalid Date Entered. Expected date format is MM/dd/yyyy"
    )
    assert (await client.get(url, params={**ok, "postedTo": "02/01/2027"})).status_code == 400
    assert (await client.get(url, params={"api_key": "test-key"})).status_code == 400
    assert (await client.get(url, params={**ok, "limit": "1001"})).status_code == 400
    assert (await client.get(url, params={**ok, "api_key": "wrong"})).status_code == 403
    assert len((await client.get(url, params=ok)).json()["opportunitiesData"]) == 0


async def test_a_wrong_key_is_a_connector_error(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    with pytest.raises(ConnectorError, match="An invalid api_key was supplied") as raised:
        await samgov(client, api_key="wrong").search(SearchQuery(WINDOW))
    assert raised.value.status_code == 403


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, b'{"message": "Internal Server Error"}', "SAM.gov answered 500: Internal Server Error"),
        (429, b'{"error": {"code": "OVER_RATE_LIMIT", "message": "too many"}}', "SAM.gov answered 429: too many"),
        (200, b"{not json", "malformed JSON"),
        (200, b"[1, 2]", "not an object"),
        (200, b'{"opportunitiesData": []}', "totalRecords"),
        (200, b'{"totalRecords": 3, "opportunitiesData": {"a": 1}}', "not a list"),
    ],
)
async def test_unusable_answers_are_connector_errors(
    fake: FakeSamGov, client: httpx.AsyncClient, status: int, body: bytes, message: str
) -> None:
    def answer(request: Request) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    fake.answer = answer
    with pytest.raises(ConnectorError, match=message):
        await samgov(client).search(SearchQuery(WINDOW))


async def test_not_found_and_null_data_are_empty_pages(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    fake.answer = lambda request: Response(b'{"errorMessage": "No Data found"}', status_code=404)
    page = await samgov(client).search(SearchQuery(WINDOW))
    assert (page.total_records, page.notices) == (0, ())
    fake.answer = lambda request: Response(b'{"totalRecords": "0", "opportunitiesData": null}')
    page = await samgov(client).search(SearchQuery(WINDOW))
    assert (page.total_records, page.received) == (0, 0)
