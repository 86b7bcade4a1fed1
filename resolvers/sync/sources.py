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

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from auth.audit import RequestMeta
from auth.audited import caller_unit
from auth.crypto import SecretBox
from auth.principal import Principal
from auth.service import AuthService
from models import ExternalOpportunitySource, SyncSchedule
from models.db import set_tenant
from models.enums import RiskLevel
from models.errors import DomainError, Invalid, NotFound
from models.unit_of_work import UnitOfWork
from resolvers.external_data.mutations import open_credentials
from resolvers.external_data.redaction import redact_text
from resolvers.opportunities.mutations import manual_source_id
from sync.calls import BudgetExhausted as BudgetExhausted_
from sync.calls import CallSettings, CallTarget, SyncCaller
from sync.connectors.base import ConnectorError, SearchQuery, SearchWindow
from sync.connectors.samgov import SamGovConnector
from sync.schedule import KeyBudget, budget_state, key_fingerprint

__all__ = [
    "BudgetExhausted",
    "ConnectionTest",
    "api_key_of",
    "poll_now",
    "pollable_source",
    "refuse_when_spent",
    "source_fingerprint",
    "test_connection",
]


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


def api_key_of(box: SecretBox, source: ExternalOpportunitySource) -> str | None:
    """The source's API key in the clear (credentials `api_key`), or None for a source without one."""
    key = open_credentials(box, source).get("api_key")
    return key or None


def source_fingerprint(fingerprint_hmac_key: bytes, source: ExternalOpportunitySource, api_key: str | None) -> str:
    """The fingerprint of the budget row the source's calls count against: its API key's (sources
    sharing a key share it); a source without a key has a budget of its own."""
    return key_fingerprint(fingerprint_hmac_key, api_key or f"source:{source.id}")


async def refuse_when_spent(conn: AsyncConnection, tenant_id: uuid.UUID, fingerprint: str, now: datetime) -> None:
    """BUDGET_EXHAUSTED when the key has no call left today."""
    state = await budget_state(conn, tenant_id, fingerprint, now)
    if state.left_today <= 0:
        raise BudgetExhausted(
            f"The source's API key has used all {state.daily_limit} calls of today's budget "
            f"({state.used_today} used); calls resume when the budget resets at 00:00 UTC."
        )


async def poll_now(
    uow: UnitOfWork, source_id: uuid.UUID, *, box: SecretBox, fingerprint_hmac_key: bytes, now: datetime
) -> uuid.UUID:
    """Make the source's windowed search due now (see the module docstring)."""
    source = await pollable_source(uow, source_id)
    fingerprint = source_fingerprint(fingerprint_hmac_key, source, api_key_of(box, source))
    await refuse_when_spent(uow.connection, uow.tenant_id, fingerprint, now)
    row = await _upsert_schedule(uow.connection, uow.tenant_id, source.id, fingerprint, due_now=True)
    uow.record_event(
        "sync.source.poll_requested",
        entity_type="source_schedule",
        entity_id=source.id,
        description=f"poll of source {source.source_name} requested now",
        details={"schedule_id": str(row.id), "next_poll_at": row.next_poll_at.isoformat()},
    )
    return source.id


async def _upsert_schedule(
    conn: AsyncConnection, tenant_id: uuid.UUID, source_id: uuid.UUID, fingerprint: str, *, due_now: bool
) -> Any:
    """The source's schedule row, made if missing (due now, as the sync claim makes it), with the
    key fingerprint its calls count against (so its health shows the budget); `due_now` moves an
    existing row's next poll to now too."""
    schedules = SyncSchedule.__table__
    changes: dict[str, Any] = {"key_fingerprint": fingerprint}
    if due_now:
        changes["next_poll_at"] = func.now()
    stmt: Any = (
        insert(schedules)
        .values(tenant_id=tenant_id, external_source_id=source_id, saved_search_id=None, next_poll_at=func.now(),
                key_fingerprint=fingerprint)
        .on_conflict_do_update(
            index_elements=[schedules.c.tenant_id, schedules.c.external_source_id, schedules.c.saved_search_id],
            set_=changes,
        )
        .returning(schedules.c.id, schedules.c.next_poll_at)
    )
    return (await conn.execute(stmt)).one()


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    """What a connection test found."""

    succeeded: bool
    http_status: int | None
    response_time_ms: int
    message: str | None


async def _read_source(engine: AsyncEngine, tenant_id: uuid.UUID, source_id: uuid.UUID) -> ExternalOpportunitySource:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        await set_tenant(await session.connection(), tenant_id)
        source = await session.get(ExternalOpportunitySource, source_id)
        if source is not None:
            session.expunge(source)
        await session.rollback()
    if source is None or source.tenant_id != tenant_id:
        raise NotFound("There is no external source with that id.", field="id")
    if source_id == manual_source_id(tenant_id):
        raise Invalid('The "Manual entry" source makes no calls.', field="id")
    if not source.is_active:
        raise Invalid("The source is inactive: activate it to test it.", field="id")
    return source


async def test_connection(
    service: AuthService,
    principal: Principal,
    meta: RequestMeta | None,
    source_id: uuid.UUID,
    *,
    fingerprint_hmac_key: bytes,
    field: str,
    permission: str,
    timer: Callable[[], float] = time.perf_counter,
) -> ConnectionTest:
    """One call to the source (a one-record search for a key-authenticated SAM.gov-style source, a GET
    of its endpoint otherwise) through sync/calls.py, then the caller's event row."""
    tenant_id = principal.tenant_id
    source = await _read_source(service.engine, tenant_id, source_id)
    api_key = api_key_of(service.secret_box, source)
    fingerprint = source_fingerprint(fingerprint_hmac_key, source, api_key)
    budget = KeyBudget(service.engine, tenant_id, fingerprint, hourly_cap=source.rate_limit_per_hour)
    target = CallTarget(tenant_id=tenant_id, source_id=source.id)
    settings = CallSettings.for_source(source, retry_attempts=0)
    status: int | None = None
    message: str | None = None
    started = timer()
    async with SyncCaller(engine=service.engine, chain=service.writer.chain, policy=service.outbound,
                          clock=service.now) as caller:
        try:
            if api_key is not None:
                connector = SamGovConnector(caller.http(target, settings, budget), api_key=api_key,
                                            base_url=source.api_endpoint, limit=1)
                today = service.now().astimezone(UTC).date()
                await connector.search(SearchQuery(window=SearchWindow(posted_from=today, posted_to=today)))
                status = 200
            else:
                response = await caller.request(target, settings, budget, "GET", source.api_endpoint)
                status = response.status_code
                if status >= 400:
                    message = f"The source answered HTTP {status}."
        except BudgetExhausted_ as exhausted:
            raise BudgetExhausted(
                "The source's API key has no call left in its budget (the test is one call): try again after "
                f"{exhausted.retry_at.isoformat() if exhausted.retry_at else 'the budget resets'}."
            ) from None
        except ConnectorError as error:
            status = error.status_code
            message = redact_text(str(error)) or "The call failed."
    elapsed = max(0, round((timer() - started) * 1000))
    outcome = ConnectionTest(succeeded=message is None, http_status=status, response_time_ms=elapsed, message=message)
    async with caller_unit(service, principal, meta, field=field, permission=permission) as uow:
        await _upsert_schedule(uow.connection, tenant_id, source.id, fingerprint, due_now=False)
        uow.record_event(
            "sync.source.connection_tested",
            entity_type="source_connection_test",
            entity_id=source.id,
            description=f"connection to source {source.source_name} tested: "
            f"{'succeeded' if outcome.succeeded else 'failed'}",
            details={"succeeded": outcome.succeeded, "http_status": status, "response_time_ms": elapsed,
                     "message": message},
            risk=RiskLevel.LOW,
        )
    return outcome
