"""The unit of work's own statements on the driver's connection (models/driver_sql.py, docs/decisions.md W30)
give what SQLAlchemy gives: the same rows and value types, the same objects, the same errors."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

import models.unit_of_work as unit_of_work
from models import OpportunityProject
from models.audit_trail import AuditContext
from models.driver_sql import fetch
from models.errors import Conflict, Invalid
from models.unit_of_work import UnitOfWork, _core_row_statement, _update_statement
from schema.writes import REDACTION
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.writes.conftest import Rows


def _uow(engine: AsyncEngine, tenant: TenantRef) -> UnitOfWork:
    context = AuditContext(tenant_id=tenant.id, user_id=tenant.system_user_id, system_process="test",
                           request_id="driver-statements")
    return UnitOfWork(engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION)


def _typed(values: dict[str, Any]) -> dict[str, tuple[Any, type]]:
    return {name: (value, type(value)) for name, value in values.items()}


async def test_a_returned_row_is_the_row_sqlalchemy_returns(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    """The same UPDATE ... RETURNING and locking SELECT through SQLAlchemy and on the driver: equal values
    of equal types in every column (result processors applied as SQLAlchemy applies them)."""
    project = await rows.project(win_probability_score=Decimal("10.50"), assigned_team_members=f'["{uuid.uuid4()}"]')
    async with _uow(app_engine, fresh_tenant) as uow:
        conn = uow.connection
        statement = _update_statement(OpportunityProject, ("title", "win_probability_score"))
        params = {"gwm_set_title": "Same", "gwm_set_win_probability_score": Decimal("7.5"), "gwm_row_id": project.id}
        # As the flush runs it (the audit trail's guard refuses the UPDATE of an audited table otherwise).
        through = dict(await uow._flush_statement(statement, params))
        driven = await uow._flush_statement(statement, params, direct=True)
        assert _typed(dict(driven)) == _typed(through)
        locking = _core_row_statement(OpportunityProject, False)
        read = {"gwm_row_id": project.id, "gwm_tenant_id": fresh_tenant.id}
        through = dict((await conn.execute(locking, read)).mappings().one())
        driven = await fetch(conn, locking, read)
        assert driven is not None and _typed(dict(driven[0])) == _typed(through)
        await uow.rollback()


async def test_a_locked_object_is_the_one_the_orm_loads(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lock` on the driver leaves the object as the ORM's load does: persistent in the session's identity
    map, every column loaded and committed, the same values; the audit trail knows the same row."""
    project = await rows.project(assigned_team_members=f'["{uuid.uuid4()}"]')

    async def locked(direct: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        if not direct:
            monkeypatch.setattr(unit_of_work, "_load_plan", lambda model: None)
        try:
            async with _uow(app_engine, fresh_tenant) as uow:
                obj = await uow.lock(OpportunityProject, project.id, updated_at=project.updated_at)
                state = inspect(obj)
                facts = {"persistent": state.persistent, "key": state.key, "modified": state.modified,
                         "committed": dict(state.committed_state), "expired": set(state.expired_attributes),
                         "unloaded": set(state.unloaded), "in_session": obj in uow.session,
                         "mapped": obj in uow.session.sync_session.identity_map.values()}
                values = {k: v for k, v in vars(obj).items() if k != "_sa_instance_state"}
                known = uow.stored("opportunity_projects", project.id)
                await uow.rollback()
        finally:
            monkeypatch.undo()
        return facts, _typed(values), known

    assert await locked(True) == await locked(False)


async def test_a_row_locked_twice_is_refreshed_in_place(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    """A row whose object the unit already holds is read by the ORM's load, which refreshes that object (the
    driver's path makes new objects only): one object per row, its unflushed change replaced by the row."""
    project = await rows.project(title="Stored")
    async with _uow(app_engine, fresh_tenant) as uow:
        first = await uow.find(OpportunityProject, project.id)
        first.title = "Unflushed"
        again = await uow.lock(OpportunityProject, project.id, updated_at=project.updated_at)
        assert again is first and again.title == "Stored" and not inspect(again).modified
        uow.assign(again, {"title": "Changed"})
    async with app_engine.connect() as conn:
        await conn.execute(text("SELECT set_config('app.tenant_id', :t, false)"), {"t": str(fresh_tenant.id)})
        stored = select(OpportunityProject.title).where(OpportunityProject.id == project.id)
        title = (await conn.execute(stored)).scalar()
    assert title == "Changed"


async def test_driver_errors_are_sqlalchemy_errors(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    """A refusal on the driver's connection is the DBAPIError SQLAlchemy raises for it (the unit of work
    turns it into the same domain error), and a lock wait past lock_timeout is a Conflict."""
    project = await rows.project()
    async with _uow(app_engine, fresh_tenant) as uow:
        statement = _update_statement(OpportunityProject, ("priority_level",))
        with pytest.raises(DBAPIError) as raised:
            await fetch(uow.connection, statement, {"gwm_set_priority_level": "bogus", "gwm_row_id": project.id})
        assert getattr(raised.value.orig, "sqlstate", None) == "23514"
        await uow.rollback()
    with pytest.raises(Invalid) as refused:
        async with _uow(app_engine, fresh_tenant) as uow:
            locked = await uow.lock(OpportunityProject, project.id, updated_at=project.updated_at)
            locked.priority_level = "bogus"
            await uow.flush()
    assert refused.value.field == "priority_level"
    async with _uow(app_engine, fresh_tenant) as holder:
        await holder.lock(OpportunityProject, project.id)
        with pytest.raises(Conflict):
            async with _uow(app_engine, fresh_tenant) as waiter:
                await waiter.connection.execute(text("SET LOCAL lock_timeout = '50ms'"))
                await waiter.lock(OpportunityProject, project.id)
        await holder.rollback()


async def test_fetch_leaves_a_connection_without_a_transaction_to_sqlalchemy(app_engine: AsyncEngine) -> None:
    """No transaction begun on the driver: nothing is sent, the caller runs the statement through SQLAlchemy."""
    async with app_engine.connect() as conn:
        assert await fetch(conn, select(text("1")), {}) is None


async def test_a_cancelled_driver_statement_invalidates_its_connection(
    app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """As SQLAlchemy does for a statement a cancellation interrupts: the connection, in an unknown state, is
    invalidated (never pooled again), and the unit of work rolls back."""
    uow = _uow(app_engine, fresh_tenant)
    with pytest.raises(TimeoutError):
        async with uow:
            driver: Any = (await uow.connection.get_raw_connection()).driver_connection
            await asyncio.wait_for(fetch(uow.connection, select(func.pg_catalog.pg_sleep(5)), {}), timeout=0.2)
    assert driver.is_closed()
    async with _uow(app_engine, fresh_tenant) as later:  # the pool gives a live connection
        assert await later.rows(select(text("1")), {}) == [(1,)]
