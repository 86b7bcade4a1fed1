"""The query side of a saved search (sync/saved_searches.py): which SAM.gov requests a search makes,
what it matches of what comes back, and the window of a run. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from sync.connectors.base import NormalisedNotice, SearchWindow
from sync.connectors.samgov import normalise_record
from sync.saved_searches import Criteria, candidate_values, keywords_of, matches, search_queries, window_for
from tests.sync.fake_samgov import notice

WINDOW = SearchWindow(posted_from=date(2026, 1, 1), posted_to=date(2026, 2, 1))


def _notice(**overrides: Any) -> NormalisedNotice:
    found = normalise_record(notice(1, **overrides))
    assert isinstance(found, NormalisedNotice)
    return found


def test_criteria_are_normalised() -> None:
    criteria = Criteria.of(naics_codes=[" 541512", "541512", ""], set_aside_codes=["sba ", "8a"],
                           notice_types=["O", " k"], title_keywords=["Cloud  hosting", "cloud"], agency="  ")
    assert criteria == Criteria(naics_codes=("541512",), set_aside_codes=("SBA", "8A"), notice_types=("o", "k"),
                                title_keywords=("cloud", "hosting"), agency=None)
    assert keywords_of("Cyber-security, O&M / Ops!") == ("cyber-security", "o", "m", "ops")


def test_one_request_per_full_naics_code_and_the_set_aside_only_when_single() -> None:
    queries = search_queries(Criteria.of(naics_codes=["541512", "541519"], set_aside_codes=["SBA"],
                                         notice_types=["o", "k"]), WINDOW)
    assert [(q.naics_code, q.set_aside, q.notice_types) for q in queries] == [
        ("541512", "SBA", ("o", "k")), ("541519", "SBA", ("o", "k"))]
    assert all(q.window == WINDOW for q in queries)
    # a prefix cannot be sent (ncode is exact): one request without it; two set-asides: none sent
    (query,) = search_queries(Criteria.of(naics_codes=["5415", "541512"], set_aside_codes=["SBA", "8A"]), WINDOW)
    assert (query.naics_code, query.set_aside) == (None, None)
    (query,) = search_queries(Criteria(), WINDOW)
    assert (query.naics_code, query.set_aside, query.notice_types) == (None, None, ())


@pytest.mark.parametrize(
    ("criteria", "overrides", "expected"),
    [
        (Criteria.of(naics_codes=["5415"]), {"naicsCode": "541512", "naicsCodes": ["541512"]}, True),
        (Criteria.of(naics_codes=["5415"]), {}, False),  # 336611
        (Criteria.of(set_aside_codes=["8a", "sba"]), {"typeOfSetAside": " sba "}, True),
        (Criteria.of(set_aside_codes=["8A"]), {"typeOfSetAside": "SBA"}, False),
        (Criteria.of(set_aside_codes=["SBA"]), {"typeOfSetAside": "NONE"}, False),
        (Criteria.of(notice_types=["r"]), {"type": "Sources Sought"}, True),
        (Criteria.of(notice_types=["r"]), {"type": "Solicitation"}, False),
        (Criteria.of(notice_types=["r"]), {"type": None}, True),  # unknown type: the API filtered it
        (Criteria.of(title_keywords=["cloud", "HOSTING"]), {"title": "Cloud hosting services"}, True),
        (Criteria.of(title_keywords=["cloud", "backup"]), {"title": "Cloud hosting services"}, False),
        (Criteria.of(title_keywords=["cloud"]), {"title": "Cloudy skies"}, False),  # words, not substrings
        (Criteria.of(agency="navy"), {}, True),
        (Criteria.of(agency="1700"), {}, True),  # agency codes match too
        (Criteria.of(agency="army"), {}, False),
    ],
)
def test_what_a_search_matches(criteria: Criteria, overrides: dict[str, Any], expected: bool) -> None:
    assert matches(criteria, _notice(**overrides)) is expected


def test_a_candidate_keeps_the_latest_notice_s_columns() -> None:
    values = candidate_values(_notice(title="  Padded title  ", responseDeadLine="2026-03-02T16:00:00-05:00",
                                      solicitationNumber=" sol-9 "))
    assert values["lineage_key"] == "SOL-9" and values["notice_id"] == f"{1:032x}"
    assert (values["title"], values["solicitation_number"], values["notice_type"]) == (
        "Padded title", "sol-9", "Solicitation")
    assert values["agency"] == "DEPT OF DEFENSE.DEPT OF THE NAVY.NAVSEA.NAVSEA HQ"
    assert values["posted_date"] == date(2026, 2, 2)
    assert values["response_deadline"] == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    assert values["raw_json_data"]["title"] == "  Padded title  "


def test_the_window_of_a_run() -> None:
    now = datetime(2026, 2, 10, 3, 0, tzinfo=UTC)
    assert window_for(None, now) == SearchWindow(posted_from=date(2026, 1, 11), posted_to=date(2026, 2, 10))
    last = datetime(2026, 2, 8, 23, 30, tzinfo=UTC)
    assert window_for(last, now) == SearchWindow(posted_from=date(2026, 2, 7), posted_to=date(2026, 2, 10))
    long_ago = datetime(2024, 1, 1, tzinfo=UTC)
    assert window_for(long_ago, now).posted_from == date(2025, 2, 11)  # at most a year (SAM.gov's limit)
