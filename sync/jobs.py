"""The sync jobs the worker runs (`JOBS`, imported by `gwm sync` and `gwm serve --with-sync`).

- `source_search` (a source's `sync_schedules` row): one windowed SAM.gov search of everything
  posted since the last success (`postedFrom` = last success - 1 day, `postedTo` = today; the first
  run looks 30 days back; at most a year: `sync.saved_searches.window_for`), paged through
  (`limit` 1000, record offsets, up to `MAX_PAGES` requests). The notices of lineages the source's
  projects track are taken in (`sync.ingest.ingest`, with their descriptions); the others are left
  to saved searches. A search that stopped before its last page fails, so its window is searched
  again (the notices it did see are taken in all the same).
- `saved_search` (a saved search's row): `sync.saved_searches.run_saved_search` over the same
  budgeted search.
- `project_refresh` (a `polling_configurations` row): the project's own lineage by `solnum` (or by
  `noticeid` for a lineage without a solicitation number) over the last year, or since a day before
  the current version was posted. Found: taken in. Not found although the current version was
  posted inside the window searched: recorded once as `removed` (critical). A failure of the source
  sets the project's `sync_status` to `error` with the message; the next success sets it back.

Every call goes through `sync.calls.SyncCaller` with the budget of the source's API key: the slot is
reserved first, the outbound guard applies, the call is logged. No transaction is open across a
call: each job reads in a short transaction, calls, then writes through `sync.ingest`.
No budget left: the job is deferred to the budget's next window (`JobOutcome.deferred`), no error.

After each lineage is taken in, its attachments (`resourceLinks`) are taken in as documents when the
worker has a document store (`sync.attachments`, on the same caller and budget); a failure there is
logged, never the job's failure (sync/attachments.py says which are tried again on the next poll).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from auth.crypto import SecretBox
from models.db import set_tenant
from models.external_data import ExternalOpportunityData, ExternalOpportunitySource, PollingConfiguration
from models.opportunities import OpportunityProject
from models.sync import SyncSchedule
from sync.attachments import CallFetcher, attachment_settings, take_in_attachments
from sync.calls import BudgetExhausted, CallError, CallSettings, CallTarget, SyncCaller
from sync.connectors.base import ConnectorError, NormalisedNotice, QueryError, SearchQuery, SearchWindow
from sync.connectors.samgov import SamGovConnector, agency_split_code
from sync.ingest import (
    POLLED_STATUSES,
    DescriptionFetcher,
    DescriptionUnavailable,
    IngestResult,
    group_by_lineage,
    ingest,
    ingest_missing,
    mark_error,
    tracked_lineages,
)
from sync.saved_searches import run_saved_search, window_for
from sync.schedule import JobKind, JobOutcome
from sync.worker import JobContext, JobFunction

__all__ = [
    "JOBS",
    "MAX_PAGES",
    "SearchSummary",
    "api_key_of",
    "belongs_to_lineage",
    "project_refresh_job",
    "refresh_window",
    "saved_search_job",
    "source_search_job",
]

_log = logging.getLogger(__name__)

#: Requests one search may make: 100 pages of 1,000 records.
MAX_PAGES: Final = 100
_ONE_YEAR: Final = dt.timedelta(days=364)


# --- the source -----------------------------------------------------------------------------------


def _credentials_aad(tenant_id: uuid.UUID, source_id: uuid.UUID) -> bytes:
    # The associated data the credentials were sealed with (resolvers/external_data/mutations.py
    # `credentials_aad`; tests/sync/test_end_to_end.py seals with it and the jobs open with this).
    return f"source-credentials:{tenant_id}:{source_id}".encode()


def api_key_of(box: SecretBox, source: ExternalOpportunitySource) -> str | None:
    """The source's API key (its sealed credentials' `api_key`), None when it has none."""
    stored = source.api_credentials_encrypted or {}
    token = stored.get("sealed") if isinstance(stored, dict) else None
    if not token:
        return None
    opened = json.loads(box.decrypt(token, _credentials_aad(source.tenant_id, source.id)))
    key = opened.get("api_key") if isinstance(opened, dict) else None
    return key if isinstance(key, str) and key else None


@dataclass(frozen=True, slots=True)
class _Source:
    row: ExternalOpportunitySource
    api_key: str
    fingerprint: str


async def _source(ctx: JobContext) -> _Source | JobOutcome:
    """The job's source with its key, or the outcome when it cannot be searched."""
    async with AsyncSession(ctx.services.engine, expire_on_commit=False) as session:
        await set_tenant(await session.connection(), ctx.tenant_id)
        source = await session.get(ExternalOpportunitySource, ctx.job.external_source_id)
        await session.commit()  # a read: commit keeps the loaded rows (a rollback would expire them)
    if source is None or not source.is_active:
        return JobOutcome.done()  # gone or switched off since the claim: nothing to do
    api_key = api_key_of(ctx.services.secret_box, source)
    # the budget row as the API's source health reads it (resolvers/sync/sources.py source_fingerprint)
    fingerprint = ctx.key_fingerprint(api_key or f"source:{source.id}")
    if api_key is None:
        return JobOutcome.failed("The source has no api_key: only SAM.gov sources are searched.",
                                 key_fingerprint=fingerprint)
    return _Source(source, api_key, fingerprint)


def _connector(
    ctx: JobContext, caller: SyncCaller, source: _Source, settings: CallSettings, *,
    project_id: uuid.UUID | None = None, polling_id: uuid.UUID | None = None,
    known_collisions: frozenset[str] = frozenset(),
) -> SamGovConnector:
    """A SAM.gov connector whose every call is a budgeted, guarded, logged call of `sync.calls`."""
    target = CallTarget(tenant_id=ctx.tenant_id, source_id=source.row.id, project_id=project_id,
                        polling_configuration_id=polling_id)
    budget = ctx.budget(source.api_key, hourly_cap=source.row.rate_limit_per_hour)
    return SamGovConnector(caller.http(target, settings, budget), api_key=source.api_key,
                           base_url=source.row.api_endpoint, known_collisions=known_collisions)


def _describer(connector: SamGovConnector) -> DescriptionFetcher:
    async def describe(url: str) -> str | None:
        try:
            return await connector.fetch_description(url)
        except ConnectorError as error:  # budget spent, source failing: the version goes without it
            raise DescriptionUnavailable(str(error)) from error

    return describe


def _call_outcome(error: ConnectorError | QueryError, fingerprint: str) -> JobOutcome:
    if isinstance(error, BudgetExhausted) and error.retry_at is not None:
        return JobOutcome.deferred(error.retry_at, key_fingerprint=fingerprint)
    retry_at = error.retry_at if isinstance(error, CallError) else None
    return JobOutcome.failed(str(error)[:2000], retry_at=retry_at, key_fingerprint=fingerprint)


async def _attachments(
    ctx: JobContext, caller: SyncCaller, source: _Source, settings: CallSettings, project_id: uuid.UUID,
    written: Sequence[uuid.UUID], *, polling_id: uuid.UUID | None = None,
) -> None:
    """The project's attachments taken in as documents (sync/attachments.py), on the same budget and
    guard; a failure is logged and tried again on the next poll, never the job's failure."""
    storage = ctx.services.storage
    if storage is None:
        return
    config = ctx.services.storage_config
    target = CallTarget(tenant_id=ctx.tenant_id, source_id=source.row.id, project_id=project_id,
                        polling_configuration_id=polling_id)
    fetch = CallFetcher(caller, target, attachment_settings(settings, config.max_upload_bytes),
                        ctx.budget(source.api_key, hourly_cap=source.row.rate_limit_per_hour), api_key=source.api_key)
    try:
        await take_in_attachments(ctx.services.engine, ctx.services.chain, storage, ctx.tenant_id, project_id,
                                  fetch=fetch, max_bytes=config.max_upload_bytes, now=ctx.now(), written=written,
                                  temp_dir=config.temp_dir)
    except Exception:
        _log.exception("sync: attachments of project %s could not be taken in", project_id)


def _caller(ctx: JobContext) -> SyncCaller:
    return SyncCaller(engine=ctx.services.engine, chain=ctx.services.chain, policy=ctx.services.outbound,
                      clock=ctx.clock)


# --- source search --------------------------------------------------------------------------------


@dataclass(slots=True)
class SearchSummary:
    """What one source search found and did (logged)."""

    received: int = 0
    lineages: int = 0
    tracked: int = 0
    written: int = 0
    failed: int = 0


async def _last_success(engine: AsyncEngine, tenant_id: uuid.UUID, schedule_id: uuid.UUID) -> dt.datetime | None:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        found: dt.datetime | None = await conn.scalar(
            select(SyncSchedule.last_success_at).where(SyncSchedule.id == schedule_id)
        )
        await conn.rollback()
    return found


async def _tracked(engine: AsyncEngine, tenant_id: uuid.UUID, source_id: uuid.UUID,
                   keys: Sequence[str] | None) -> dict[str, uuid.UUID]:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant_id)
        found = await tracked_lineages(conn, source_id, keys)
        await conn.rollback()
    return found


async def source_search_job(ctx: JobContext) -> JobOutcome:
    """The source's windowed search; the notices of tracked lineages taken in."""
    source = await _source(ctx)
    if isinstance(source, JobOutcome):
        return source
    engine, chain = ctx.services.engine, ctx.services.chain
    window = window_for(await _last_success(engine, ctx.tenant_id, ctx.job.job_id), ctx.started_at)
    # solicitation numbers known to collide across agencies: their lineages stay split
    collisions = frozenset(
        key.split("@", 1)[0] for key in await _tracked(engine, ctx.tenant_id, source.row.id, None) if "@" in key
    )
    settings = CallSettings.for_source(source.row)
    summary = SearchSummary()
    async with _caller(ctx) as caller:
        connector = _connector(ctx, caller, source, settings, known_collisions=collisions)
        try:
            result = await connector.search_all(SearchQuery(window=window), max_pages=MAX_PAGES)
        except (ConnectorError, QueryError) as error:
            return _call_outcome(error, source.fingerprint)
        groups = group_by_lineage(result.notices)
        tracked = await _tracked(engine, ctx.tenant_id, source.row.id, list(groups))
        summary.received, summary.lineages, summary.tracked = len(result.notices), len(groups), len(tracked)
        for key, project_id in sorted(tracked.items()):
            describe = _describer(_connector(ctx, caller, source, settings, project_id=project_id))
            try:
                outcome = await ingest(engine, chain, ctx.tenant_id, source.row.id, groups[key], now=ctx.now(),
                                       describe=describe, project_id=project_id)
            except Exception:  # one lineage's failure does not stop the others; the window is searched again
                _log.exception("sync: taking in lineage %s of source %s failed", key, source.row.id)
                summary.failed += 1
                continue
            summary.written += bool(outcome.wrote)
            await _attachments(ctx, caller, source, settings, project_id, outcome.versions)
    _log.info("sync: source %s searched %s..%s: %s", source.row.id, window.posted_from, window.posted_to, summary)
    if result.incomplete:
        return JobOutcome.failed(
            f"The search stopped before its last page ({result.pages} pages, totals {result.total_records_seen}).",
            key_fingerprint=source.fingerprint,
        )
    if summary.failed:
        return JobOutcome.failed(f"{summary.failed} lineage(s) could not be taken in.",
                                 key_fingerprint=source.fingerprint)
    return JobOutcome.done(key_fingerprint=source.fingerprint)


# --- saved search ---------------------------------------------------------------------------------


async def saved_search_job(ctx: JobContext) -> JobOutcome:
    """A saved search's windowed search, its matches turned into candidates."""
    source = await _source(ctx)
    if isinstance(source, JobOutcome):
        return source
    if ctx.job.saved_search_id is None:
        return JobOutcome.failed("a saved-search job without a saved search")
    last_success = await _last_success(ctx.services.engine, ctx.tenant_id, ctx.job.job_id)
    async with _caller(ctx) as caller:
        connector = _connector(ctx, caller, source, CallSettings.for_source(source.row))
        try:
            outcome = await run_saved_search(
                ctx.services.engine, ctx.services.chain, ctx.tenant_id, ctx.job.saved_search_id,
                search=lambda query: connector.search_all(query, max_pages=MAX_PAGES),
                now=ctx.started_at, last_success_at=last_success,
            )
        except (ConnectorError, QueryError) as error:
            return _call_outcome(error, source.fingerprint)
    if outcome.incomplete:
        return JobOutcome.failed("The search stopped before its last page.", key_fingerprint=source.fingerprint)
    return JobOutcome.done(key_fingerprint=source.fingerprint)


# --- project refresh ------------------------------------------------------------------------------


def belongs_to_lineage(notice: NormalisedNotice, key: str) -> bool:
    """Whether `notice` is a revision of the lineage `key` (split keys: `NUMBER@DEPT.SUBTIER`)."""
    if notice.lineage_key == key:
        return True
    base, _, agency = key.partition("@")
    notice_base = notice.lineage_key.partition("@")[0]
    if agency:
        return notice_base == base and agency_split_code(notice.raw) == agency
    return notice_base == base


def refresh_window(current_posted: dt.date | None, now: dt.datetime) -> SearchWindow:
    """Since a day before the current version was posted (at most a year back), to today."""
    today = now.astimezone(dt.UTC).date()
    start = today - _ONE_YEAR
    if current_posted is not None:
        start = min(max(start, current_posted - dt.timedelta(days=1)), today)
    return SearchWindow(posted_from=start, posted_to=today)


@dataclass(frozen=True, slots=True)
class _Refresh:
    polling: PollingConfiguration
    project: OpportunityProject
    notice_id: str | None
    posted: dt.date | None
    solicitation_number: str | None  # as the current version has it (SAM.gov's spelling)


async def _refresh_state(ctx: JobContext) -> _Refresh | None:
    async with AsyncSession(ctx.services.engine, expire_on_commit=False) as session:
        await set_tenant(await session.connection(), ctx.tenant_id)
        polling = await session.get(PollingConfiguration, ctx.job.job_id)
        project = None if polling is None else await session.get(OpportunityProject, polling.opportunity_project_id)
        current = None
        if project is not None:
            current = (
                await session.execute(
                    select(ExternalOpportunityData.notice_id, ExternalOpportunityData.posting_date,
                           ExternalOpportunityData.raw_json_data)
                    .where(ExternalOpportunityData.opportunity_project_id == project.id,
                           ExternalOpportunityData.is_current_version.is_(True))
                    .order_by(ExternalOpportunityData.version_number.desc())
                    .limit(1)
                )
            ).one_or_none()
        await session.commit()  # a read: commit keeps the loaded rows (a rollback would expire them)
    if polling is None or project is None:
        return None
    raw: Mapping[str, object] = current.raw_json_data if current is not None else {}
    number = raw.get("solicitationNumber")
    return _Refresh(
        polling=polling,
        project=project,
        notice_id=None if current is None else current.notice_id,
        posted=None if current is None else current.posting_date,
        solicitation_number=number.strip() if isinstance(number, str) and number.strip() else None,
    )


def _refresh_query(state: _Refresh, window: SearchWindow) -> SearchQuery:
    """By solicitation number; by notice id for a lineage without one (keyed by its noticeId)."""
    key = state.project.external_opportunity_id
    if state.solicitation_number is not None:
        return SearchQuery(window=window, solicitation_number=state.solicitation_number)
    if state.notice_id is not None:
        return SearchQuery(window=window, notice_id=state.notice_id)
    if _looks_like_notice_id(key):  # a pending project tracking a notice without a number
        return SearchQuery(window=window, notice_id=key)
    number = state.project.solicitation_number or key.partition("@")[0]
    return SearchQuery(window=window, solicitation_number=number.strip())


def _looks_like_notice_id(key: str) -> bool:
    """SAM.gov notice ids are 32 hexadecimal digits."""
    return len(key) == 32 and all(c in "0123456789abcdef" for c in key.lower())


async def project_refresh_job(ctx: JobContext) -> JobOutcome:
    """One tracked project's refresh by its solicitation number (see the module docstring)."""
    state = await _refresh_state(ctx)
    if state is None:
        return JobOutcome.done()
    project = state.project
    if project.archived_at is not None or project.project_status not in POLLED_STATUSES:
        return JobOutcome.done()  # no longer pursued
    source = await _source(ctx)
    if isinstance(source, JobOutcome):
        return source
    engine, chain = ctx.services.engine, ctx.services.chain
    window = refresh_window(state.posted, ctx.started_at)
    settings = CallSettings.for_source(source.row, state.polling)
    async with _caller(ctx) as caller:
        connector = _connector(ctx, caller, source, settings, project_id=project.id, polling_id=state.polling.id)
        try:
            found = await connector.search_all(_refresh_query(state, window), max_pages=MAX_PAGES)
        except (ConnectorError, QueryError) as error:
            outcome = _call_outcome(error, source.fingerprint)
            if not isinstance(error, BudgetExhausted):
                await mark_error(engine, chain, ctx.tenant_id, project.id, f"Refresh failed: {error}")
            return outcome
        notices = [n for n in found.notices if belongs_to_lineage(n, project.external_opportunity_id)]
        result: IngestResult
        if notices:
            result = await ingest(engine, chain, ctx.tenant_id, source.row.id, notices, now=ctx.now(),
                                  describe=_describer(connector), project_id=project.id)
            await _attachments(ctx, caller, source, settings, project.id, result.versions,
                               polling_id=state.polling.id)
        elif not found.incomplete and state.posted is not None and state.posted > window.posted_from:
            result = await ingest_missing(engine, chain, ctx.tenant_id, source.row.id, project.id, now=ctx.now())
        else:
            result = IngestResult(lineage_key=project.external_opportunity_id, project_id=project.id)
    _log.info("sync: project %s refreshed: %d notice(s), wrote %s", project.id, len(notices), result.wrote)
    if found.incomplete:
        return JobOutcome.failed("The refresh stopped before its last page.")
    return JobOutcome.done()


#: The job function of each kind of claimed job.
JOBS: Mapping[JobKind, JobFunction] = {
    JobKind.SOURCE_SEARCH: source_search_job,
    JobKind.SAVED_SEARCH: saved_search_job,
    JobKind.PROJECT_REFRESH: project_refresh_job,
}
