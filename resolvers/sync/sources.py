"""A source's poll-now and connection test (tenant admins), within its API key's daily budget.

`poll_now` makes the source's windowed search due at once: its schedule row's `next_poll_at`
becomes now (the row is made if the sync worker has not made it yet), a lease a worker holds is
left alone (that worker is polling it right now). It is refused with BUDGET_EXHAUSTED when the
key has no call left today: the poll could only fail. The request is an event row of the
caller's unit of work (the schedule is operational state, not an audited table).

`test_connection` makes one call to the source through sync/calls.py, the path every sync call
takes: a slot of the key's budget reserved first (BUDGET_EXHAUSTED when none is left, nothing
sent), the outbound guard, the source's timeout, the call log and the source's health. No
transaction is open during the call. The outcome is an event row written afterwards in a unit
of work of the caller.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert

from models import ExternalOpportunitySource, SyncKeyBudget, SyncSchedule
from models.errors import DomainError, Invalid
from models.unit_of_work import UnitOfWork
from resolvers.opportunities.mutations import manual_source_id
from resolvers.sync.health import budget_today

__all__ = ["BudgetExhausted", "budget_left", "poll_now", "pollable_source", "refuse_when_spent"]


class BudgetExhausted(DomainError):
    """The source's API key has used every call of its daily budget."""

    code = "BUDGET_EXHAUSTED"


async def pollable_source(uow: UnitOfWork, source_id: uuid.UUID) -> ExternalOpportunitySource:
    """The source, if it can be polled (active, not the Manual entry source); else Invalid on `id`."""
    source = await uow.find(ExternalOpportunitySource, source_id, what="external source", field="id")
    if source_id == manual_source_id(uow.tenant_id):
        raise Invalid('The "Manual entry" source is not polled.', field="id")
    if not source.is_active:
        raise Invalid("The source is inactive: activate it to poll it.", field="id")
    return source


async def budget_left(uow: UnitOfWork, source_id: uuid.UUID) -> tuple[int, int] | None:
    """(calls used today, daily limit) of the source's key, or None while its budget is unknown."""
    s, b = SyncSchedule.__table__, SyncKeyBudget.__table__
    row = (
        await uow.connection.execute(
            select(budget_today(b).label("used"), b.c.daily_limit)
            .select_from(s.join(b, and_(b.c.tenant_id == s.c.tenant_id, b.c.key_fingerprint == s.c.key_fingerprint)))
            .where(s.c.tenant_id == uow.tenant_id, s.c.external_source_id == source_id, s.c.saved_search_id.is_(None))
        )
    ).first()
    return None if row is None else (int(row.used), int(row.daily_limit))


def refuse_when_spent(budget: tuple[int, int] | None) -> None:
    """BUDGET_EXHAUSTED when the key has no call left today."""
    if budget is not None and budget[0] >= budget[1]:
        used, limit = budget
        raise BudgetExhausted(
            f"The source's API key has used all {limit} calls of today's budget ({used} used); "
            "polls resume when the budget resets at 00:00 UTC."
        )


async def poll_now(uow: UnitOfWork, source_id: uuid.UUID) -> uuid.UUID:
    """Make the source's windowed search due now (see the module docstring)."""
    source = await pollable_source(uow, source_id)
    refuse_when_spent(await budget_left(uow, source_id))
    schedules = SyncSchedule.__table__
    stmt: Any = (
        insert(schedules)
        .values(tenant_id=uow.tenant_id, external_source_id=source.id, saved_search_id=None, next_poll_at=func.now())
        .on_conflict_do_update(
            index_elements=[schedules.c.tenant_id, schedules.c.external_source_id, schedules.c.saved_search_id],
            set_={"next_poll_at": func.now()},
        )
        .returning(schedules.c.id, schedules.c.next_poll_at)
    )
    row = (await uow.connection.execute(stmt)).one()
    uow.record_event(
        "sync.source.poll_requested",
        entity_type="source_schedule",
        entity_id=source.id,
        description=f"poll of source {source.source_name} requested now",
        details={"schedule_id": str(row.id), "next_poll_at": row.next_poll_at.isoformat()},
    )
    return source.id
