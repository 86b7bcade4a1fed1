"""The field mapping of docs/samgov.md, one case per quirk row of its table.

The table is parsed from the document; every row naming a quirk id must have a case here (and every
case a row), so the document and the normalisation cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync.connectors.base import NormalisedNotice, SearchQuery, SearchWindow, SkippedRecord
from sync.connectors.samgov import normalise_record, split_collisions
from tests.sync.conftest import samgov
from tests.sync.fake_samgov import FakeSamGov, notice

DOC = Path(__file__).resolve().parents[2] / "docs" / "samgov.md"
WINDOW = SearchWindow(date(2026, 1, 1), date(2026, 6, 30))


def quirk_rows() -> dict[str, str]:
    """Quirk id -> the row's SAM.gov field cell, from the "Field mapping" table."""
    text = DOC.read_text()
    section = text.split("## Field mapping", 1)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("SAM.gov field", "") or set(cells[0]) <= {"-"}:
            continue
        quirk = cells[3]
        if quirk != "—":
            assert re.fullmatch(r"[a-z0-9-]+", quirk), f"bad quirk id {quirk!r}"
            rows.setdefault(quirk, cells[0])
    return rows


def normalised(**overrides: Any) -> NormalisedNotice:
    result = normalise_record(notice(1, **overrides))
    assert isinstance(result, NormalisedNotice)
    return result


Case = Callable[[FakeSamGov, httpx.AsyncClient], Awaitable[None]]
CASES: dict[str, Case] = {}


def case(quirk: str) -> Callable[[Case], Case]:
    def register(function: Case) -> Case:
        CASES[quirk] = function
        return function

    return register


@case("no-notice-id")
async def _no_notice_id(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    for missing in ({"noticeId": None}, {"noticeId": "  "}):
        assert isinstance(normalise_record(notice(1, **missing)), SkippedRecord)
    without = notice(2)
    del without["noticeId"]
    fake.notices = [notice(1), without, notice(3, noticeId="")]
    page = await samgov(client).search(SearchQuery(WINDOW))
    assert [n.notice_id for n in page.notices] == [f"{1:032x}"]
    assert [s.reason for s in page.skipped] == ["NO_NOTICE_ID", "NO_NOTICE_ID"]
    assert page.received == 3


@case("duplicate-notice-id")
async def _duplicate_notice_id(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    small = samgov(client, limit=2)
    fake.notices = [notice(n) for n in range(1, 6)]

    def post_one_while_paging(server: FakeSamGov, offset: int) -> None:
        if offset == 2:  # a new notice arrives first: the tail of page one comes again
            server.notices.insert(0, notice(99))

    fake.before_page = post_one_while_paging
    result = await small.search_all(SearchQuery(WINDOW))
    ids = [n.notice_id for n in result.notices]
    assert len(ids) == len(set(ids)) == 5
    assert set(ids) == {f"{n:032x}" for n in range(1, 6)}
    assert result.duplicates == 1


@case("total-records-changes")
async def _total_records_changes(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    small = samgov(client, limit=2)
    fake.notices = [notice(n) for n in range(1, 5)]

    def grow(server: FakeSamGov, offset: int) -> None:
        if offset == 2:  # two more are posted at the end while paging
            server.notices.extend([notice(10), notice(11)])

    fake.before_page = grow
    result = await small.search_all(SearchQuery(WINDOW))
    assert result.total_records_seen == [4, 6, 6]
    assert len(result.notices) == 6 and not result.incomplete


@case("padded-strings")
async def _padded(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised(solicitationNumber="  n00024-26-r-1234 \t", title="\n  Hull repair  ")
    assert record.fields["solicitation_number"] == "n00024-26-r-1234"
    assert record.fields["title"] == "Hull repair"


@case("lineage-solicitation-number")
async def _lineage_number(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    first = normalised(solicitationNumber=" n00024-26-r-1234 ")
    amended = normalise_record(notice(2, solicitationNumber="N00024-26-R-1234"))
    assert isinstance(amended, NormalisedNotice)
    assert first.lineage_key == amended.lineage_key == "N00024-26-R-1234"
    assert first.notice_id != amended.notice_id


@case("lineage-agency-collision")
async def _lineage_collision(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    navy = notice(1, solicitationNumber="RFQ-1")
    gsa = notice(2, solicitationNumber="rfq-1 ", fullParentPathCode="047.4740.47PD51")
    other = notice(3, solicitationNumber="RFQ-2")
    fake.notices = [navy, gsa, other]
    result = await samgov(client).search_all(SearchQuery(WINDOW))
    keys = {n.notice_id: n.lineage_key for n in result.notices}
    assert keys == {f"{1:032x}": "RFQ-1@017.1700", f"{2:032x}": "RFQ-1@047.4740", f"{3:032x}": "RFQ-2"}
    # a number known to collide from earlier polls is split even when one agency answers alone
    alone = normalise_record(navy)
    assert isinstance(alone, NormalisedNotice)
    assert [n.lineage_key for n in split_collisions([alone], known=frozenset({"RFQ-1"}))] == ["RFQ-1@017.1700"]


@case("lineage-no-solicitation-number")
async def _lineage_no_number(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    for empty in (None, "", "   "):
        record = normalised(solicitationNumber=empty, type="Special Notice")
        assert record.lineage_key == record.notice_id == f"{1:032x}"
        assert record.fields["solicitation_number"] is None


@case("set-aside-empty")
async def _set_aside_empty(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised(typeOfSetAside="", typeOfSetAsideDescription="")
    assert (record.fields["set_aside"], record.fields["set_aside_description"]) == (None, None)


@case("set-aside-null")
async def _set_aside_null(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised(typeOfSetAside=None, typeOfSetAsideDescription=None)
    assert (record.fields["set_aside"], record.fields["set_aside_description"]) == (None, None)


@case("set-aside-none")
async def _set_aside_none(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    for code in ("NONE", " none "):
        record = normalised(typeOfSetAside=code, typeOfSetAsideDescription="No Set aside used")
        assert (record.fields["set_aside"], record.fields["set_aside_description"]) == (None, None)
    assert normalised(typeOfSetAside=" sba ").fields["set_aside"] == "SBA"


@case("naics-codes-list")
async def _naics_list(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised(naicsCode="336611", naicsCodes=[" 336611", "488390", "336611"])
    assert record.fields["naics_codes"] == ["336611", "488390"]


@case("naics-code-only")
async def _naics_single(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    assert normalised(naicsCode=" 541330 ", naicsCodes=None).fields["naics_codes"] == ["541330"]
    assert normalised(naicsCode="541330", naicsCodes=[]).fields["naics_codes"] == ["541330"]
    assert normalised(naicsCode=None, naicsCodes=None).fields["naics_codes"] == []


@case("date-only")
async def _date_only(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    assert normalised(postedDate="2026-02-02").fields["posted_date"] == "2026-02-02"


@case("date-with-time")
async def _date_with_time(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    assert normalised(postedDate="2018-05-09 23:45:22+00").fields["posted_date"] == "2018-05-09"
    assert normalised(postedDate="2018-05-09 23:45:22").fields["posted_date"] == "2018-05-09"


@case("deadline-with-offset")
async def _deadline_offset(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised(responseDeadLine="2026-03-02T16:00:00-05:00")
    assert record.fields["response_deadline"] == "2026-03-02T21:00:00Z"
    assert record.fields["response_deadline_original"] == "2026-03-02T16:00:00-05:00"
    assert normalised(responseDeadLine="2026-03-03T10:00:00+09:00").fields["response_deadline"] == (
        "2026-03-03T01:00:00Z"
    )


@case("deadline-without-offset")
async def _deadline_naive(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    # US Eastern: EST (-5) in March before the switch, EDT (-4) in July
    assert normalised(responseDeadLine="2026-03-02 16:00:00").fields["response_deadline"] == "2026-03-02T21:00:00Z"
    assert normalised(responseDeadLine="2026-07-01").fields["response_deadline"] == "2026-07-02T03:59:59Z"
    assert normalised(responseDeadLine="soon").fields["response_deadline"] is None


@case("place-of-performance-partial")
async def _place_partial(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    partial = {
        "streetAddress": "",
        "city": {"code": "", "name": "Norfolk "},
        "state": {"code": "VA", "name": None},
        "zip": None,
        "country": {},
    }
    assert normalised(placeOfPerformance=partial).fields["place_of_performance"] == {
        "city": {"name": "Norfolk"},
        "state": {"code": "VA"},
    }
    assert normalised(placeOfPerformance={"zip": "", "country": {"code": ""}}).fields["place_of_performance"] is None
    assert normalised(placeOfPerformance=None).fields["place_of_performance"] is None


@case("resource-links-null")
async def _resource_links_null(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    assert normalised(resourceLinks=None).fields["resource_links"] == []
    links = [
        "https://sam.gov/api/prod/opps/v3/opportunities/resources/files/b/download",
        " https://sam.gov/api/prod/opps/v3/opportunities/resources/files/a/download",
    ]
    assert normalised(resourceLinks=links).fields["resource_links"] == sorted(link.strip() for link in links)


@case("description-not-found")
async def _description_not_found(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised()
    url = record.fields["description_url"]
    assert isinstance(url, str) and url.startswith("https://api.sam.gov/prod/opportunities/v1/noticedesc")
    fake.descriptions = {"1": "Description Not Found", "2": "  <p>Hull repair, amendment 0001</p> "}
    base = "http://127.0.0.1:8765/prod/opportunities/v1/noticedesc"
    assert await samgov(client).fetch_description(f"{base}?noticeid=1") is None
    assert await samgov(client).fetch_description(f"{base}?noticeid=2") == "<p>Hull repair, amendment 0001</p>"
    assert await samgov(client).fetch_description(f"{base}?noticeid=3") is None  # 404
    assert ("noticeid", "2") in fake.description_requests[1] and ("api_key", "test-key") in fake.description_requests[1]


@case("string-null")
async def _string_null(fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    record = normalised(classificationCode="null", additionalInfoLink="NULL", typeOfSetAside="null")
    assert record.fields["classification_code"] is None
    assert record.fields["additional_info_link"] is None
    assert record.fields["set_aside"] is None


def test_every_quirk_row_has_a_case_and_every_case_a_row() -> None:
    rows = quirk_rows()
    assert len(rows) >= 15
    assert set(rows) - set(CASES) == set(), "quirk rows of docs/samgov.md without a test case"
    assert set(CASES) - set(rows) == set(), "test cases without a quirk row in docs/samgov.md"


@pytest.mark.parametrize("quirk", sorted(quirk_rows()))
async def test_quirk(quirk: str, fake: FakeSamGov, client: httpx.AsyncClient) -> None:
    assert quirk in CASES, f"docs/samgov.md names quirk {quirk!r} but no case handles it"
    await CASES[quirk](fake, client)
