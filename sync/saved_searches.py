"""Saved searches: a tenant's standing SAM.gov query, turned into candidates by a sync job.

A saved search holds NAICS codes, a set-aside, keywords that must all appear in a notice's title
and an agency (matched against the notice's agency path, names or codes). SAM.gov filters by NAICS
(`ncode`, one code per request) and set-aside (`typeOfSetAside`) itself; it has no parameter for
words in titles or for an agency by name, so those are matched here on what it returned.

`search_queries` builds the requests of one run (one per NAICS code, or one without a code);
`matches` decides whether a returned notice is a candidate; `candidate_values` is what a candidate
row keeps of it. `run_saved_search` is the job: it searches through the caller-supplied `search`
(the job wires it to the budgeted, guarded calls of sync/calls.py), drops lineages a project
already tracks (`tracked`), and writes the candidates. A lineage already listed as a candidate is
refreshed (its latest notice), never listed twice, and a dismissed or tracked candidate keeps its
decision.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth.audited import system_unit
from models import SavedSearch, SavedSearchCandidate
from models.audit_chain import AuditChain
from models.db import set_tenant
from models.enums import CandidateStatus
from sync.connectors.base import JSONValue, NormalisedNotice, SearchQuery, SearchResult, SearchWindow
from sync.ingest import tracked_lineages

__all__ = [
    "FIRST_WINDOW_DAYS",
    "NOTICE_TYPE_NAMES",
    "PROCESS",
    "Criteria",
    "RunOutcome",
    "SavedSearchJob",
    "candidate_values",
    "collect",
    "keywords_of",
    "load_saved_search",
    "matches",
    "run_saved_search",
    "search_queries",
    "store_candidates",
    "window_for",
]

_WORD = re.compile(r"\w[\w/-]*", re.UNICODE)


def keywords_of(text: str | None) -> tuple[str, ...]:
    """The words of a keywords text, lower-cased, each once, in order ("" and None: none)."""
    seen: list[str] = []
    for word in _WORD.findall((text or "").lower()):
        if word not in seen:
            seen.append(word)
    return tuple(seen)


#: SAM.gov procurement type codes (`ptype`) and the notice types (`type`) they stand for.
NOTICE_TYPE_NAMES: Mapping[str, str] = {
    "o": "solicitation",
    "p": "presolicitation",
    "k": "combined synopsis/solicitation",
    "r": "sources sought",
    "s": "special notice",
    "g": "sale of surplus property",
    "i": "intent to bundle requirements (dod-funded)",
    "a": "award notice",
    "u": "justification and approval (j&a)",
}
#: A full NAICS code: SAM.gov filters by it (`ncode`); a shorter prefix is matched here.
_FULL_NAICS = 6


@dataclass(frozen=True, slots=True)
class Criteria:
    """What a saved search asks for: each list is ORed within itself, the parts given ANDed; an
    empty list or a null agency does not filter."""

    naics_codes: tuple[str, ...] = ()
    set_aside_codes: tuple[str, ...] = ()
    notice_types: tuple[str, ...] = ()
    title_keywords: tuple[str, ...] = ()
    agency: str | None = None

    @classmethod
    def of(
        cls,
        *,
        naics_codes: Iterable[str] = (),
        set_aside_codes: Iterable[str] = (),
        notice_types: Iterable[str] = (),
        title_keywords: Iterable[str] = (),
        agency: str | None = None,
    ) -> Criteria:
        def listed(values: Iterable[str], fold: Callable[[str], str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(fold(v.strip()) for v in values if isinstance(v, str) and v.strip()))

        words: list[str] = []
        for phrase in title_keywords:
            words.extend(word for word in keywords_of(phrase) if word not in words)
        return cls(
            naics_codes=listed(naics_codes, str),
            set_aside_codes=listed(set_aside_codes, str.upper),
            notice_types=listed(notice_types, str.lower),
            title_keywords=tuple(words),
            agency=(agency or "").strip() or None,
        )


def search_queries(criteria: Criteria, window: SearchWindow) -> list[SearchQuery]:
    """The SAM.gov searches of one run. The API takes one `ncode` and one `typeOfSetAside` per
    request: one request per full NAICS code (any code shorter than six digits, a prefix, means one
    request without `ncode`), the set-aside sent only when the search names exactly one; notice
    types go as repeated `ptype`. What the API cannot filter is matched by `matches`."""
    codes = criteria.naics_codes
    per_code: Sequence[str | None] = (
        codes if codes and all(len(code) == _FULL_NAICS for code in codes) else (None,)
    )
    aside = criteria.set_aside_codes[0] if len(criteria.set_aside_codes) == 1 else None
    return [
        SearchQuery(window=window, naics_code=code, set_aside=aside, notice_types=criteria.notice_types)
        for code in per_code
    ]


def _text(value: JSONValue) -> str:
    return value if isinstance(value, str) else ""


def matches(criteria: Criteria, notice: NormalisedNotice) -> bool:
    """Whether `notice` answers the saved search (checked here whatever the API filtered)."""
    fields = notice.fields
    if criteria.naics_codes:
        codes = fields.get("naics_codes")
        listed = [str(code) for code in codes] if isinstance(codes, list) else []
        if not any(code.startswith(prefix) for code in listed for prefix in criteria.naics_codes):
            return False
    if criteria.set_aside_codes and _text(fields.get("set_aside")).upper() not in criteria.set_aside_codes:
        return False
    if criteria.notice_types:
        names = {NOTICE_TYPE_NAMES.get(code, code) for code in criteria.notice_types}
        kind = _text(fields.get("notice_type")).lower()
        if kind and kind not in names:
            return False
    if criteria.title_keywords:
        words = set(keywords_of(_text(fields.get("title"))))
        if not all(word in words for word in criteria.title_keywords):
            return False
    if criteria.agency is not None:
        wanted = criteria.agency.casefold()
        where = " ".join(
            _text(fields.get(key)) for key in ("agency_path_name", "agency_path_code", "department", "sub_tier")
        ).casefold()
        if wanted not in where:
            return False
    return True


def _day(value: JSONValue) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _instant(value: JSONValue) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        return None


def _clip(value: JSONValue, limit: int) -> str | None:
    text = _text(value).strip()
    return text[:limit] or None


def candidate_values(notice: NormalisedNotice) -> dict[str, Any]:
    """The columns a candidate keeps of the notice (its latest revision seen)."""
    fields = notice.fields
    return {
        "lineage_key": notice.lineage_key,
        "notice_id": notice.notice_id,
        "solicitation_number": _clip(fields.get("solicitation_number"), 255),
        "title": _clip(fields.get("title"), 500),
        "agency": _clip(fields.get("agency_path_name"), 500),
        "notice_type": _clip(fields.get("notice_type"), 100),
        "posted_date": _day(fields.get("posted_date")),
        "response_deadline": _instant(fields.get("response_deadline")),
        "raw_json_data": dict(notice.raw),
    }


@dataclass(slots=True)
class RunOutcome:
    """What one run of a saved search did."""

    searched: int = 0  # requests' notices received (de-duplicated by noticeId)
    matched: int = 0  # answering the criteria
    tracked: int = 0  # left out: a project already tracks the lineage
    created: int = 0  # new candidates
    refreshed: int = 0  # candidates already listed, updated to the latest notice
    incomplete: bool = False  # a search stopped before its last page


Search = Callable[[SearchQuery], Awaitable[SearchResult]]


async def collect(
    criteria: Criteria, window: SearchWindow, search: Search
) -> tuple[list[NormalisedNotice], RunOutcome]:
    """Run the searches of `criteria` over `window` through `search`; the matching notices, one per
    lineage (the latest posted revision wins), and the counts so far."""
    outcome = RunOutcome()
    by_lineage: dict[str, NormalisedNotice] = {}
    seen: set[str] = set()
    for query in search_queries(criteria, window):
        result = await search(query)
        outcome.incomplete = outcome.incomplete or result.incomplete
        for notice in result.notices:
            if notice.notice_id in seen:
                continue
            seen.add(notice.notice_id)
            outcome.searched += 1
            if not matches(criteria, notice):
                continue
            outcome.matched += 1
            known = by_lineage.get(notice.lineage_key)
            if known is None or _text(notice.fields.get("posted_date")) >= _text(known.fields.get("posted_date")):
                by_lineage[notice.lineage_key] = notice
    return list(by_lineage.values()), outcome


#: Days searched back on a saved search's first run (later runs: from the last success - 1 day).
FIRST_WINDOW_DAYS = 30
PROCESS = "sync.saved_search"


@dataclass(frozen=True, slots=True)
class SavedSearchJob:
    """What a run needs of its saved search (read by `load_saved_search`)."""

    saved_search_id: uuid.UUID
    tenant_id: uuid.UUID
    external_source_id: uuid.UUID
    criteria: Criteria
    is_active: bool


async def load_saved_search(conn: AsyncConnection, saved_search_id: uuid.UUID) -> SavedSearchJob | None:
    """The saved search on `conn` (tenant set), or None when it is gone."""
    row = (
        await conn.execute(select(SavedSearch.__table__).where(SavedSearch.__table__.c.id == saved_search_id))
    ).first()
    if row is None:
        return None
    return SavedSearchJob(
        saved_search_id=row.id,
        tenant_id=row.tenant_id,
        external_source_id=row.external_source_id,
        criteria=Criteria.of(
            naics_codes=row.naics_codes or (),
            set_aside_codes=row.set_aside_codes or (),
            notice_types=row.notice_types or (),
            title_keywords=row.title_keywords or (),
            agency=row.agency,
        ),
        is_active=row.is_active,
    )


def window_for(last_success_at: datetime | None, now: datetime) -> SearchWindow:
    """postedFrom = the last success - 1 day (first run: `FIRST_WINDOW_DAYS` back), postedTo = today,
    at most a year (what SAM.gov accepts)."""
    today = now.astimezone(UTC).date()
    start = today - timedelta(days=FIRST_WINDOW_DAYS) if last_success_at is None else (
        last_success_at.astimezone(UTC).date() - timedelta(days=1)
    )
    return SearchWindow(posted_from=max(start, today - timedelta(days=364)), posted_to=today)


async def store_candidates(
    conn: AsyncConnection, job: SavedSearchJob, notices: Sequence[NormalisedNotice], now: datetime,
    outcome: RunOutcome,
) -> None:
    """Write the candidates of one run on `conn` (a unit of work's connection, tenant set).

    Lineages a project of the source tracks are left out, and a candidate still new whose lineage
    is tracked now is marked tracked (with that project). A lineage already listed is refreshed
    (latest notice, last seen), keeping its status, and keeps the search that found it first;
    a new one is inserted as new.
    """
    keys = [notice.lineage_key for notice in notices]
    tracked = await tracked_lineages(conn, job.external_source_id, keys)
    table = SavedSearchCandidate.__table__
    for key, project_id in tracked.items():
        await conn.execute(
            update(table)
            .where(table.c.tenant_id == job.tenant_id, table.c.lineage_key == key,
                   table.c.status == CandidateStatus.NEW.value)
            .values(status=CandidateStatus.TRACKED.value, opportunity_project_id=project_id, decided_at=now)
        )
    for notice in notices:
        if notice.lineage_key in tracked:
            outcome.tracked += 1
            continue
        values = candidate_values(notice)
        stmt = insert(table).values(
            tenant_id=job.tenant_id, saved_search_id=job.saved_search_id, first_seen_at=now, last_seen_at=now,
            **values,
        )
        refreshed = {name: stmt.excluded[name] for name in values if name != "lineage_key"}
        upsert: Any = stmt.on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.lineage_key],
            set_={**refreshed, "last_seen_at": now},
        ).returning(literal_column("(xmax = 0)").label("inserted"))
        inserted = bool((await conn.execute(upsert)).scalar())
        if inserted:
            outcome.created += 1
        else:
            outcome.refreshed += 1


async def run_saved_search(
    engine: AsyncEngine,
    chain: AuditChain,
    tenant_id: uuid.UUID,
    saved_search_id: uuid.UUID,
    *,
    search: Search,
    now: datetime,
    window: SearchWindow | None = None,
    last_success_at: datetime | None = None,
) -> RunOutcome:
    """One run of a saved search: read it (a short transaction), search through `search` with no
    transaction open (the job wires `search` to the budgeted calls of sync/calls.py), then write the
    candidates in one unit of work as the tenant's system user. `window` defaults to `window_for`.
    An inactive or deleted search does nothing."""
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        job = await load_saved_search(conn, saved_search_id)
        await conn.rollback()
    if job is None or not job.is_active:
        return RunOutcome()
    notices, outcome = await collect(job.criteria, window or window_for(last_success_at, now), search)
    async with system_unit(engine, chain, tenant_id, process=PROCESS) as uow:
        await store_candidates(uow.connection, job, notices, now, outcome)
    return outcome
