"""SAM.gov "Get Opportunities Public API" v2: request building and response normalisation.

docs/samgov.md is the reference for what is sent, what `offset` is taken to mean and how every field
of a record is normalised (its table drives tests/sync/test_samgov_mapping.py). In short:

- `GET {base_url}/opportunities/v2/search` with `api_key`, `postedFrom`/`postedTo` (MM/dd/yyyy, both
  always sent, at most one year apart: checked before sending), `limit` (always sent, 1..1000; the
  API's default is 1) and `offset` (a record offset: 0, 1000, 2000, ...), plus the optional filters
  `solnum`, `noticeid`, `ptype` (repeated), `ncode`, `typeOfSetAside`.
- The envelope is `{totalRecords, opportunitiesData[]}`; a 404 ("No Data found") is an empty page.
- The lineage key is the solicitation number trimmed and upper-cased; `split_collisions` appends the
  agency (`@` + the first two segments of `fullParentPathCode`) where one number is used by several
  agencies; a notice without a number is keyed by its `noticeId` (the worker keeps the first one).

HTTP goes through the injected client (`HttpGet`): in the worker a `sync.calls.CallClient` (budget slot,
outbound guard, retries, call log), in the connector tests a plain `httpx.AsyncClient`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Final
from zoneinfo import ZoneInfo

import httpx

from sync.connectors.base import (
    ConnectorError,
    HttpGet,
    JSONObject,
    JSONValue,
    NormalisedNotice,
    Page,
    QueryError,
    SearchQuery,
    SearchResult,
    SearchWindow,
    SkippedRecord,
    page_through,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_LIMIT",
    "SEARCH_PATH",
    "SamGovConnector",
    "build_search_params",
    "check_window",
    "format_date",
    "lineage_key",
    "normalise_record",
    "parse_envelope",
    "split_collisions",
]

DEFAULT_BASE_URL: Final = "https://api.sam.gov"
SEARCH_PATH: Final = "/opportunities/v2/search"
MAX_LIMIT: Final = 1000
NO_SET_ASIDE: Final = frozenset({"", "NONE", "NULL"})
DESCRIPTION_NOT_FOUND: Final = "Description Not Found"
# SAM.gov shows times in US Eastern; a deadline written without an offset is read in that zone.
SAM_TIME_ZONE: Final = ZoneInfo("America/New_York")


def format_date(day: date) -> str:
    """MM/dd/yyyy, the only date format the API accepts."""
    return day.strftime("%m/%d/%Y")


def _one_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def check_window(window: SearchWindow) -> None:
    """Refuse a window the API would refuse: `postedTo` more than one calendar year after `postedFrom`."""
    if window.posted_to > _one_year_after(window.posted_from):
        raise QueryError("postedFrom and postedTo must be at most one year apart")


def build_search_params(
    api_key: str, query: SearchQuery, *, offset: int, limit: int
) -> list[tuple[str, str | int | float | bool | None]]:
    """The query string of one search request, in a stable order. Raises QueryError before sending."""
    if not api_key:
        raise QueryError("an api_key is required")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise QueryError("offset must not be negative")
    check_window(query.window)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("api_key", api_key),
        ("postedFrom", format_date(query.window.posted_from)),
        ("postedTo", format_date(query.window.posted_to)),
        ("limit", str(limit)),
        ("offset", str(offset)),
    ]
    if query.solicitation_number is not None:
        params.append(("solnum", query.solicitation_number.strip()))
    if query.notice_id is not None:
        params.append(("noticeid", query.notice_id.strip()))
    params.extend(("ptype", code) for code in query.notice_types)
    if query.naics_code is not None:
        params.append(("ncode", query.naics_code.strip()))
    if query.set_aside is not None:
        params.append(("typeOfSetAside", query.set_aside.strip()))
    return params


# --- normalisation -------------------------------------------------------------------------------


def clean_text(value: JSONValue) -> str | None:
    """Trimmed text; "", blanks, null and the string "null" become None; numbers become text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    return None if text == "" or text.lower() == "null" else text


def clean_tree(value: JSONValue) -> JSONValue:
    """Strings trimmed; empty strings, nulls, empty objects and empty lists dropped (None if nothing left)."""
    if isinstance(value, dict):
        cleaned = {key: clean_tree(item) for key, item in value.items()}
        kept: JSONObject = {key: item for key, item in cleaned.items() if item is not None}
        return kept or None
    if isinstance(value, list):
        items: list[JSONValue] = [item for item in (clean_tree(element) for element in value) if item is not None]
        return items or None
    if isinstance(value, str):
        return clean_text(value)
    return value


def parse_timestamp(value: JSONValue, *, end_of_day: bool = False) -> datetime | None:
    """A SAM.gov date or timestamp as an aware datetime: with an offset as written, without one in
    US Eastern; a bare date is that day's start (or its last second with `end_of_day`)."""
    text = clean_text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if len(text) == 10 and end_of_day:  # a bare YYYY-MM-DD
        parsed = datetime.combine(parsed.date(), time(23, 59, 59))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=SAM_TIME_ZONE)
    return parsed


def _utc_iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _posted_date(value: JSONValue) -> str | None:
    text = clean_text(value)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).date().isoformat()  # the calendar day as published
    except ValueError:
        return None


def _set_aside(record: Mapping[str, JSONValue]) -> tuple[str | None, str | None]:
    code = clean_text(record.get("typeOfSetAside"))
    if code is None or code.upper() in NO_SET_ASIDE:
        return None, None
    return code.upper(), clean_text(record.get("typeOfSetAsideDescription"))


def _naics_codes(record: Mapping[str, JSONValue]) -> list[JSONValue]:
    codes: list[JSONValue] = []
    listed = record.get("naicsCodes")
    candidates: list[JSONValue] = list(listed) if isinstance(listed, list) else []
    if not candidates:
        candidates = [record.get("naicsCode")]
    for candidate in candidates:
        code = clean_text(candidate)
        if code is not None and code not in codes:
            codes.append(code)
    return codes


def _resource_links(value: JSONValue) -> list[JSONValue]:
    links = {text for text in (clean_text(item) for item in value) if text} if isinstance(value, list) else set()
    return list(sorted(links))


def _agency(record: Mapping[str, JSONValue]) -> JSONObject:
    names = [part.strip() for part in (clean_text(record.get("fullParentPathName")) or "").split(".") if part.strip()]
    codes = [part.strip() for part in (clean_text(record.get("fullParentPathCode")) or "").split(".") if part.strip()]
    return {
        "agency_path_name": ".".join(names) or None,
        "agency_path_code": ".".join(codes) or None,
        "department": names[0] if names else None,
        "sub_tier": names[1] if len(names) > 1 else None,
        "office": names[-1] if len(names) > 2 else None,
        "office_code": codes[-1] if len(codes) > 2 else None,
    }


def _active(value: JSONValue) -> bool | None:
    text = clean_text(value)
    if text is None:
        return None
    return {"YES": True, "NO": False}.get(text.upper())


def agency_split_code(record: Mapping[str, JSONValue]) -> str:
    """The agency part of a split lineage key: department and sub-tier codes of `fullParentPathCode`."""
    codes = [part.strip() for part in (clean_text(record.get("fullParentPathCode")) or "").split(".") if part.strip()]
    return ".".join(codes[:2]).upper() or "UNKNOWN"


def lineage_key(record: Mapping[str, JSONValue], *, split_by_agency: bool = False) -> str | None:
    """The solicitation number trimmed and upper-cased (with `@agency` when split); else the noticeId."""
    number = clean_text(record.get("solicitationNumber"))
    if number is not None:
        key = number.upper()
        return f"{key}@{agency_split_code(record)}" if split_by_agency else key
    return clean_text(record.get("noticeId"))


def normalise_record(record: Mapping[str, JSONValue]) -> NormalisedNotice | SkippedRecord:
    """One `opportunitiesData[]` element as a NormalisedNotice, or a SkippedRecord without noticeId."""
    notice_id = clean_text(record.get("noticeId"))
    if notice_id is None:
        return SkippedRecord(reason="NO_NOTICE_ID", raw=dict(record))
    notice_id = notice_id.lower()
    set_aside, set_aside_description = _set_aside(record)
    deadline = parse_timestamp(record.get("responseDeadLine"), end_of_day=True)
    description = clean_text(record.get("description"))
    is_url = description is not None and description.lower().startswith(("https://", "http://"))
    number = clean_text(record.get("solicitationNumber"))
    fields: JSONObject = {
        "notice_id": notice_id,
        "title": clean_text(record.get("title")),
        "solicitation_number": number,
        "notice_type": clean_text(record.get("type")),
        "base_type": clean_text(record.get("baseType")),
        "set_aside": set_aside,
        "set_aside_description": set_aside_description,
        "naics_codes": _naics_codes(record),
        "classification_code": clean_text(record.get("classificationCode")),
        "posted_date": _posted_date(record.get("postedDate")),
        "response_deadline": _utc_iso(deadline),
        "response_deadline_original": clean_text(record.get("responseDeadLine")),
        "archive_type": clean_text(record.get("archiveType")),
        "archive_date": _posted_date(record.get("archiveDate")),
        "active": _active(record.get("active")),
        **_agency(record),
        "organization_type": clean_text(record.get("organizationType")),
        "office_address": clean_tree(record.get("officeAddress")),
        "place_of_performance": clean_tree(record.get("placeOfPerformance")),
        "points_of_contact": clean_tree(record.get("pointOfContact")) or [],
        "award": clean_tree(record.get("award")),
        "resource_links": _resource_links(record.get("resourceLinks")),
        "description_url": description if is_url else None,
        "description_text": None if is_url else description,
        "additional_info_link": clean_text(record.get("additionalInfoLink")),
        "ui_link": clean_text(record.get("uiLink")),
    }
    key = lineage_key(record) or notice_id
    return NormalisedNotice(lineage_key=key, notice_id=notice_id, fields=fields, raw=dict(record))


def split_collisions(
    notices: Iterable[NormalisedNotice], *, known: frozenset[str] = frozenset()
) -> list[NormalisedNotice]:
    """Split the lineage keys of solicitation numbers several agencies use (seen together here, or
    `known` to collide from earlier polls): `NUMBER` becomes `NUMBER@DEPT.SUBTIER`."""
    listed = list(notices)
    agencies: dict[str, set[str]] = {}
    for notice in listed:
        if notice.fields.get("solicitation_number") is not None:
            agencies.setdefault(notice.lineage_key, set()).add(agency_split_code(notice.raw))
    colliding = {key for key, seen in agencies.items() if len(seen) > 1} | set(known)
    return [
        dataclasses.replace(notice, lineage_key=lineage_key(notice.raw, split_by_agency=True) or notice.lineage_key)
        if notice.lineage_key in colliding and notice.fields.get("solicitation_number") is not None
        else notice
        for notice in listed
    ]


def parse_envelope(body: bytes, *, offset: int, limit: int) -> Page:
    """The response envelope as a Page; ConnectorError when it is not the documented shape."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ConnectorError(f"SAM.gov answered malformed JSON: {error}") from error
    if not isinstance(document, dict):
        raise ConnectorError("SAM.gov answered JSON that is not an object")
    total = document.get("totalRecords")
    if isinstance(total, str) and total.strip().isdigit():
        total = int(total)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise ConnectorError("SAM.gov answered without a usable totalRecords")
    data = document.get("opportunitiesData")
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ConnectorError("SAM.gov answered an opportunitiesData that is not a list")
    notices: list[NormalisedNotice] = []
    skipped: list[SkippedRecord] = []
    for element in data:
        if not isinstance(element, dict):
            skipped.append(SkippedRecord(reason="NOT_AN_OBJECT", raw={"value": element}))
            continue
        normalised = normalise_record(element)
        (notices if isinstance(normalised, NormalisedNotice) else skipped).append(normalised)  # type: ignore[arg-type]
    return Page(
        notices=tuple(notices),
        total_records=total,
        offset=offset,
        limit=limit,
        received=len(data),
        skipped=tuple(skipped),
    )


def _error_message(response: httpx.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(document, dict):
        for key in ("errorMessage", "message", "error"):
            value = document.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                return value
    return response.text[:200]


class SamGovConnector:
    """The SAM.gov v2 connector over an injected client (`HttpGet`)."""

    def __init__(
        self,
        client: HttpGet,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        limit: int = MAX_LIMIT,
        known_collisions: frozenset[str] = frozenset(),
    ) -> None:
        if not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        self._client = client
        self._api_key = api_key
        self._url = base_url.rstrip("/") + SEARCH_PATH
        self._limit = limit
        self._known_collisions = known_collisions

    async def search(self, query: SearchQuery, *, offset: int = 0) -> Page:
        """One page (`limit` records from record `offset`)."""
        params = build_search_params(self._api_key, query, offset=offset, limit=self._limit)
        response = await self._client.get(self._url, params=params)
        if response.status_code == httpx.codes.NOT_FOUND:  # "No Data found"
            return Page(notices=(), total_records=0, offset=offset, limit=self._limit, received=0)
        if response.status_code != httpx.codes.OK:
            raise ConnectorError(
                f"SAM.gov answered {response.status_code}: {_error_message(response)}",
                status_code=response.status_code,
            )
        return parse_envelope(response.content, offset=offset, limit=self._limit)

    async def search_all(self, query: SearchQuery, *, max_pages: int = 100) -> SearchResult:
        """Every page, de-duplicated by noticeId, with colliding solicitation numbers split."""
        result = await page_through(lambda offset: self.search(query, offset=offset), max_pages=max_pages)
        result.notices = split_collisions(result.notices, known=self._known_collisions)
        return result

    async def fetch(self, query: SearchQuery) -> Sequence[NormalisedNotice]:
        """The current revision(s) for a `solnum` or `noticeid` query."""
        if query.solicitation_number is None and query.notice_id is None:
            raise QueryError("fetch needs a solicitation number or a notice id")
        return (await self.search_all(query)).notices

    async def fetch_description(self, url: str) -> str | None:
        """The text behind a record's `description` URL (one API call); None when "Description Not Found"."""
        response = await self._client.get(httpx.URL(url).copy_merge_params({"api_key": self._api_key}))
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.status_code != httpx.codes.OK:
            raise ConnectorError(
                f"SAM.gov answered {response.status_code}: {_error_message(response)}",
                status_code=response.status_code,
            )
        text = response.text
        try:
            document = response.json()
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("description"), str):
            text = document["description"]
        text = text.strip()
        return None if not text or text == DESCRIPTION_NOT_FOUND else text
