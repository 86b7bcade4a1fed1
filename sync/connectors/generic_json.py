"""A generic connector for an internal HTTP JSON endpoint with a configurable field mapping.

The endpoint answers a JSON object; `GenericJsonMapping` says where the records are (`items_path`),
where the total is (`total_path`, optional: without it paging stops at the first short page), which
dotted path holds each record's id and lineage value, and which dotted path feeds each normalised
field (`fields`: normalised name -> dotted path such as `agency.office.name` or `links.0.href`).
Paging sends `offset_param` / `limit_param`; the offset is a record offset. The posted window is sent
as ISO dates in `from_param` / `to_param`. Values are trimmed; empty strings become None.

HTTP goes through the injected client (`HttpGet`): in the worker a `sync.calls.CallClient` (budget slot,
outbound guard, retries, call log), in the connector tests a plain `httpx.AsyncClient`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    SkippedRecord,
    get_path,
    page_through,
)

__all__ = ["GenericJsonConnector", "GenericJsonMapping"]


@dataclass(frozen=True, slots=True)
class GenericJsonMapping:
    """Where things are in the endpoint's answer (dotted paths) and how to page it."""

    items_path: str
    id_path: str
    fields: Mapping[str, str]
    lineage_path: str | None = None
    total_path: str | None = None
    offset_param: str = "offset"
    limit_param: str = "limit"
    from_param: str = "postedFrom"
    to_param: str = "postedTo"
    solicitation_param: str = "solnum"
    id_param: str = "id"
    limit: int = 100
    extra_params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise QueryError("limit must be at least 1")
        for name, path in {"items_path": self.items_path, "id_path": self.id_path, **self.fields}.items():
            if not path or any(part == "" for part in path.split(".")):
                raise QueryError(f"the path of {name} is not a dotted path: {path!r}")


def _clean(value: JSONValue) -> JSONValue:
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    return value


def _text(value: JSONValue) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


class GenericJsonConnector:
    """A connector for a JSON endpoint described by a `GenericJsonMapping`."""

    def __init__(self, client: HttpGet, *, url: str, mapping: GenericJsonMapping) -> None:
        self._client = client
        self._url = url
        self._mapping = mapping

    def normalise(self, record: Mapping[str, JSONValue]) -> NormalisedNotice | SkippedRecord:
        """One record through the mapping; skipped when it has no id."""
        mapping = self._mapping
        notice_id = _text(get_path(record, mapping.id_path))
        if notice_id is None:
            return SkippedRecord(reason="NO_NOTICE_ID", raw=dict(record))
        lineage = _text(get_path(record, mapping.lineage_path)) if mapping.lineage_path else None
        fields: JSONObject = {name: _clean(get_path(record, path)) for name, path in mapping.fields.items()}
        fields["notice_id"] = notice_id
        return NormalisedNotice(
            lineage_key=lineage.upper() if lineage else notice_id,
            notice_id=notice_id,
            fields=fields,
            raw=dict(record),
        )

    def _params(self, query: SearchQuery, offset: int) -> list[tuple[str, str | int | float | bool | None]]:
        mapping = self._mapping
        params: list[tuple[str, str | int | float | bool | None]] = [
            (mapping.from_param, query.window.posted_from.isoformat()),
            (mapping.to_param, query.window.posted_to.isoformat()),
            (mapping.offset_param, str(offset)),
            (mapping.limit_param, str(mapping.limit)),
        ]
        if query.solicitation_number is not None:
            params.append((mapping.solicitation_param, query.solicitation_number.strip()))
        if query.notice_id is not None:
            params.append((mapping.id_param, query.notice_id.strip()))
        params.extend(mapping.extra_params.items())
        return params

    async def search(self, query: SearchQuery, *, offset: int = 0) -> Page:
        """One page from record `offset`."""
        if offset < 0:
            raise QueryError("offset must not be negative")
        response = await self._client.get(self._url, params=self._params(query, offset))
        if response.status_code != httpx.codes.OK:
            raise ConnectorError(f"the endpoint answered {response.status_code}", status_code=response.status_code)
        try:
            document = json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as error:
            raise ConnectorError(f"the endpoint answered malformed JSON: {error}") from error
        if not isinstance(document, dict):
            raise ConnectorError("the endpoint answered JSON that is not an object")
        items = get_path(document, self._mapping.items_path)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ConnectorError(f"{self._mapping.items_path} is not a list")
        notices: list[NormalisedNotice] = []
        skipped: list[SkippedRecord] = []
        for item in items:
            normalised = (
                self.normalise(item)
                if isinstance(item, dict)
                else SkippedRecord(reason="NOT_AN_OBJECT", raw={"value": item})
            )
            if isinstance(normalised, NormalisedNotice):
                notices.append(normalised)
            else:
                skipped.append(normalised)
        if self._mapping.total_path is None:
            # Without a total, a full page promises one more.
            total = offset + len(items) + (1 if len(items) >= self._mapping.limit else 0)
        else:
            raw_total = get_path(document, self._mapping.total_path)
            if not isinstance(raw_total, int) or isinstance(raw_total, bool) or raw_total < 0:
                raise ConnectorError(f"{self._mapping.total_path} is not a usable total")
            total = raw_total
        return Page(
            notices=tuple(notices),
            total_records=total,
            offset=offset,
            limit=self._mapping.limit,
            received=len(items),
            skipped=tuple(skipped),
        )

    async def search_all(self, query: SearchQuery, *, max_pages: int = 100) -> SearchResult:
        """Every page, de-duplicated by id."""
        return await page_through(lambda offset: self.search(query, offset=offset), max_pages=max_pages)

    async def fetch(self, query: SearchQuery) -> Sequence[NormalisedNotice]:
        """The records for one solicitation number or id."""
        if query.solicitation_number is None and query.notice_id is None:
            raise QueryError("fetch needs a solicitation number or a notice id")
        return (await self.search_all(query)).notices
