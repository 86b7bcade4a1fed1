"""The connector protocol and the normalised record every connector produces.

A connector answers two questions over HTTP: which notices were posted in a window (`search`, one
page at a time; `search_all` pages through) and what one notice or solicitation looks like now
(`fetch`). It never writes anything: versioning, change detection and the database are the worker's.

Every record comes back as a `NormalisedNotice`: the lineage key (the identity of the opportunity
across its revisions, stored in the project's `external_opportunity_id`), the `notice_id` of this
revision, the normalised fields (JSON values only, so a canonical hash can be taken of them) and the
raw record as received.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, TypeAlias

import httpx

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"
JSONObject: TypeAlias = dict[str, JSONValue]
#: Query parameters as the connectors build them (in order; a name may repeat).
QueryParams: TypeAlias = list[tuple[str, str | int | float | bool | None]]


class HttpGet(Protocol):
    """How a connector fetches: `sync.calls.CallClient` in the worker (budget slot, outbound guard,
    retries, call log and source health), or a plain `httpx.AsyncClient` in the connector tests."""

    async def get(self, url: httpx.URL | str, *, params: QueryParams | None = None) -> httpx.Response:
        """GET `url` with `params` merged into its query."""
        ...


class ConnectorError(Exception):
    """A source answered something the connector cannot use (HTTP error, malformed body)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class QueryError(ValueError):
    """A query the source would refuse (window too long, dates reversed, bad limit): never sent."""


@dataclass(frozen=True, slots=True)
class SearchWindow:
    """The posted-date window of a search, both ends inclusive."""

    posted_from: date
    posted_to: date

    def __post_init__(self) -> None:
        if self.posted_from > self.posted_to:
            raise QueryError("postedFrom is after postedTo")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to search for. Filters a connector does not support are ignored by it."""

    window: SearchWindow
    solicitation_number: str | None = None
    notice_id: str | None = None
    notice_types: tuple[str, ...] = ()
    naics_code: str | None = None
    set_aside: str | None = None


@dataclass(frozen=True, slots=True)
class NormalisedNotice:
    """One revision of one external notice, normalised."""

    lineage_key: str
    notice_id: str
    fields: Mapping[str, JSONValue]
    raw: Mapping[str, JSONValue]


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A record the connector could not use, and why (e.g. `NO_NOTICE_ID`)."""

    reason: str
    raw: Mapping[str, JSONValue]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a search as the source answered it."""

    notices: tuple[NormalisedNotice, ...]
    total_records: int
    offset: int
    limit: int
    received: int
    skipped: tuple[SkippedRecord, ...] = ()


@dataclass(slots=True)
class SearchResult:
    """A whole search, paged through: notices de-duplicated by `notice_id` (first one kept)."""

    notices: list[NormalisedNotice] = field(default_factory=list)
    skipped: list[SkippedRecord] = field(default_factory=list)
    duplicates: int = 0
    pages: int = 0
    total_records_seen: list[int] = field(default_factory=list)
    # True when paging stopped before the last announced total was reached (an empty page early).
    incomplete: bool = False


class Connector(Protocol):
    """What a sync worker needs from a source."""

    async def search(self, query: SearchQuery, *, offset: int = 0) -> Page:
        """One page of notices matching `query`, starting at `offset` (in the source's meaning)."""
        ...

    async def search_all(self, query: SearchQuery, *, max_pages: int = ...) -> SearchResult:
        """Every page of `query`, de-duplicated; at most `max_pages` requests."""
        ...

    async def fetch(self, query: SearchQuery) -> Sequence[NormalisedNotice]:
        """The current revision(s) of one notice or solicitation (`query` names it)."""
        ...


async def page_through(
    fetch_page: Callable[[int], Awaitable[Page]],
    *,
    max_pages: int,
    next_offset: Callable[[int, Page], int] | None = None,
) -> SearchResult:
    """Request pages from offset 0 until the source's last announced `totalRecords` is reached.

    - The total is re-read on every page (it can change while paging: notices are posted and
      archived meanwhile); paging stops when the next offset reaches the latest total, or at the
      first empty page (then `incomplete` says whether the total promised more).
    - A `notice_id` seen on an earlier page is counted in `duplicates` and dropped (first kept).
    - `next_offset(offset, page)` defaults to record offsets: the offset plus the records received.
    """
    advance = next_offset or (lambda offset, page: offset + page.received)
    result = SearchResult()
    seen: set[str] = set()
    offset = 0
    while True:
        if result.pages >= max_pages:
            result.incomplete = True
            break
        page = await fetch_page(offset)
        result.pages += 1
        result.total_records_seen.append(page.total_records)
        result.skipped.extend(page.skipped)
        for notice in page.notices:
            if notice.notice_id in seen:
                result.duplicates += 1
                continue
            seen.add(notice.notice_id)
            result.notices.append(notice)
        if page.received == 0:
            result.incomplete = offset < page.total_records
            break
        offset = advance(offset, page)
        if offset >= page.total_records:
            break
    return result


def get_path(record: Mapping[str, JSONValue], path: str) -> JSONValue:
    """The value at a dotted path (`a.b.0.c`: keys, and list indexes as integers); None if absent."""
    current: JSONValue = dict(record)
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
    return current
