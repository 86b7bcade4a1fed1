"""A source's health as the API shows it to tenant admins, batched per request.

The source row itself carries the connection state the calls keep true (sync/calls.py:
connection_status, consecutive_errors, last_error_message, last_successful_call); the source's
schedule row (sync_schedules, saved_search_id NULL) says when its next windowed search is due and
which API key budget it draws on (`key_fingerprint`); that key's budget row (sync_key_budgets)
holds today's count. "Today" is the budget's UTC day: a count of an earlier day is 0 now.
Neither table has a row before the sync worker first sees the source: then nothing is scheduled
and the budget is unknown (calls used 0, calls left and the limit null). The average response time
and success rate are those of sync/calls.py `call_statistics` (the source's last 100 logged calls),
read for every source of a request in one statement.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiodataloader import DataLoader
from sqlalchemy import Table, and_, bindparam, case, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from models import SyncKeyBudget, SyncSchedule
from resolvers.common.loaders import Loaders
from sync.calls import STATISTICS_WINDOW, CallStatistics

__all__ = [
    "CallStatistics",
    "Health",
    "ScheduleState",
    "budget_today",
    "call_statistics_by_source",
    "health_of",
    "schedule_by_source",
    "utc_day_start",
]

_SCHEDULES: Table = SyncSchedule.__table__
_BUDGETS: Table = SyncKeyBudget.__table__


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A source's schedule row and its key's budget (None where there is no row)."""

    next_poll_at: datetime.datetime | None
    last_success_at: datetime.datetime | None
    daily_limit: int | None
    calls_used_today: int


@dataclass(frozen=True, slots=True)
class Health:
    connection_status: str
    consecutive_errors: int
    last_successful_call: datetime.datetime | None
    last_error_message: str | None
    calls_used_today: int
    calls_left_today: int | None
    daily_limit: int | None
    next_poll_at: datetime.datetime | None
    last_success_at: datetime.datetime | None
    calls: CallStatistics


def utc_day_start(now: Any = None) -> Any:
    """SQL: the start of the current UTC day (the budget's daily window)."""
    moment = func.now() if now is None else now
    return func.timezone("UTC", func.date_trunc("day", func.timezone("UTC", moment)))


def budget_today(budgets: Table = _BUDGETS) -> Any:
    """SQL: the calls a budget row counted today (0 when its day is an earlier one)."""
    return case(
        (and_(budgets.c.day_started_at.is_not(None), budgets.c.day_started_at >= utc_day_start()),
         budgets.c.day_count),
        else_=0,
    )


def schedule_by_source(loaders: Loaders) -> DataLoader[uuid.UUID, ScheduleState | None]:
    """Source id -> its schedule and its key's budget today (None: no schedule row yet)."""

    async def batch(keys: Sequence[uuid.UUID]) -> list[ScheduleState | None]:
        s, b = _SCHEDULES, _BUDGETS
        stmt = (
            select(
                s.c.external_source_id, s.c.next_poll_at, s.c.last_success_at,
                b.c.daily_limit, budget_today(b).label("used"),
            )
            .select_from(
                s.outerjoin(b, and_(b.c.tenant_id == s.c.tenant_id, b.c.key_fingerprint == s.c.key_fingerprint))
            )
            .where(
                s.c.tenant_id == loaders.tenant_id,
                s.c.external_source_id.in_(set(keys)),
                s.c.saved_search_id.is_(None),
            )
        )
        found = {
            row.external_source_id: ScheduleState(
                next_poll_at=row.next_poll_at,
                last_success_at=row.last_success_at,
                daily_limit=row.daily_limit,
                calls_used_today=int(row.used or 0),
            )
            for row in (await loaders.db.execute(stmt)).all()
        }
        return [found.get(key) for key in keys]

    return loaders.custom(("sync", "schedule_by_source"), batch)


# The statistics of sync/calls.py `call_statistics` (the last STATISTICS_WINDOW calls of a source),
# for every source of the batch in one statement.
_STATISTICS = text(
    "SELECT ids.id AS source_id, recent.calls, recent.average, recent.rate"
    " FROM unnest(:ids) AS ids(id) CROSS JOIN LATERAL ("
    "   SELECT count(*) AS calls,"
    "          round(avg(processing_time_ms) FILTER (WHERE http_status IS NOT NULL)) AS average,"
    "          round(100.0 * avg(success::int), 2) AS rate"
    "     FROM (SELECT processing_time_ms, http_status, success FROM api_integration_logs"
    "            WHERE tenant_id = :t AND external_source_id = ids.id"
    "            ORDER BY api_call_timestamp DESC, created_at DESC LIMIT :n) last_calls) recent"
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))


def call_statistics_by_source(loaders: Loaders) -> DataLoader[uuid.UUID, CallStatistics]:
    """Source id -> the count, average response time and success rate of its last calls."""

    async def batch(keys: Sequence[uuid.UUID]) -> list[CallStatistics]:
        rows = await loaders.db.execute(_STATISTICS, {"ids": list(set(keys)), "t": loaders.tenant_id,
                                                      "n": STATISTICS_WINDOW})
        found = {
            row.source_id: CallStatistics(
                calls=int(row.calls),
                average_response_time_ms=None if row.average is None else int(row.average),
                success_rate_percentage=None if row.rate is None else row.rate,
            )
            for row in rows.all()
        }
        return [found[key] for key in keys]

    return loaders.custom(("sync", "call_statistics_by_source"), batch)


def health_of(source: Any, state: ScheduleState | None, calls: CallStatistics) -> Health:
    """The health of `source` (a row of external_opportunity_sources) given its schedule state."""
    used = 0 if state is None else state.calls_used_today
    limit = None if state is None else state.daily_limit
    return Health(
        connection_status=source.connection_status,
        consecutive_errors=source.consecutive_errors,
        last_successful_call=source.last_successful_call,
        last_error_message=source.last_error_message,
        calls_used_today=used,
        calls_left_today=None if limit is None else max(limit - used, 0),
        daily_limit=limit,
        next_poll_at=None if state is None else state.next_poll_at,
        last_success_at=None if state is None else state.last_success_at,
        calls=calls,
    )
