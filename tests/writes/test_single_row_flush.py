"""The unit of work's single-row UPDATE and INSERT (models/unit_of_work.py, docs/decisions.md W29) record
exactly what the ORM's flush records: the same change made once through each path gives the same audit
and history rows, and the object ends up as after a flush."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.attributes import instance_state

from models import OpportunityProject
from models.audit_trail import AuditContext
from models.unit_of_work import UnitOfWork, _insert_statement, _update_statement
from schema.writes import REDACTION
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.writes.conftest import Rows

# Columns that differ between two rows by nature (their identity, and instants of their own writes).
_OWN = {"id", "created_at", "updated_at", "external_opportunity_id"}


def _uow(engine: AsyncEngine, tenant: TenantRef) -> UnitOfWork:
    context = AuditContext(tenant_id=tenant.id, user_id=tenant.system_user_id, system_process="test",
                           request_id="single-row")
    return UnitOfWork(engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION)


def _values(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {k: v for k, v in values.items() if k not in _OWN}


def _log(row: Any) -> tuple[Any, ...]:
    return (row.action_type, row.entity_type, _values(row.before_values), _values(row.after_values),
            sorted(row.changed_fields), row.operation_description, row.risk_level, row.user_id)


def _history(rows: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((h.field_name, h.old_value, h.new_value, h.change_category, h.change_impact_level,
                   h.change_source, h.changed_by_system_process) for h in rows if h.field_name not in _OWN)


async def test_an_update_records_what_the_orm_flush_records(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    seed = {"win_probability_score": Decimal("10.50"), "title": "Before", "project_name": "Same"}
    direct, orm = await rows.project(**seed), await rows.project(**seed)
    change = {"win_probability_score": Decimal("7.5"), "title": "After", "assigned_team_members": [str(uuid.uuid4())]}
    hits = _update_statement.cache_info().hits + _update_statement.cache_info().misses
    async with _uow(app_engine, fresh_tenant) as uow:
        locked = await uow.lock(OpportunityProject, direct.id, updated_at=direct.updated_at)
        uow.assign(locked, change)
        await uow.flush()
        state = instance_state(locked)
        assert not state.modified and not state.expired_attributes and not uow.session.dirty
        assert locked.win_probability_score == Decimal("7.50")  # the row as stored, not the value given
    assert _update_statement.cache_info().hits + _update_statement.cache_info().misses == hits + 1
    async with _uow(app_engine, fresh_tenant) as uow:
        # Read without the unit's lock: the row is not known, so the ORM's flush (and its hook) writes it.
        (loaded,) = (await uow.session.execute(select(OpportunityProject).where(OpportunityProject.id == orm.id))).one()
        uow.assign(loaded, change)
    assert _update_statement.cache_info().hits + _update_statement.cache_info().misses == hits + 1
    (direct_log,), (orm_log,) = await rows.audit(direct.id), await rows.audit(orm.id)
    assert _log(direct_log) == _log(orm_log)
    assert direct_log.after_values["win_probability_score"] == "7.50"
    assert _history(await rows.history(direct.id)) == _history(await rows.history(orm.id))
    assert len(await rows.history(direct.id)) == 3


async def test_a_create_records_what_the_orm_flush_records(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    def project(name: str) -> OpportunityProject:
        return OpportunityProject(tenant_id=fresh_tenant.id, created_by=fresh_tenant.system_user_id,
                                  external_source_id=fresh_tenant.manual_source_id, external_opportunity_id=name,
                                  project_name="New", win_probability_score=Decimal("5"), assigned_team_members=None)

    inserts = _insert_statement.cache_info().hits + _insert_statement.cache_info().misses
    async with _uow(app_engine, fresh_tenant) as uow:
        direct = project("direct")
        uow.add(direct)
        await uow.flush()  # one new object: the unit's INSERT
        assert direct.id is not None and direct.assigned_team_members == []  # the server default, as stored
        assert not uow.session.new and instance_state(direct).key is not None
    assert _insert_statement.cache_info().hits + _insert_statement.cache_info().misses == inserts + 1
    async with _uow(app_engine, fresh_tenant) as uow:
        first, second = project("orm-1"), project("orm-2")
        uow.add(first)
        uow.add(second)  # two new objects: the ORM's flush
    assert _insert_statement.cache_info().hits + _insert_statement.cache_info().misses == inserts + 1
    (direct_log,), (orm_log,) = await rows.audit(direct.id), await rows.audit(first.id)
    assert _log(direct_log) == _log(orm_log) and direct_log.action_type == "CREATE"
    assert direct_log.after_values["win_probability_score"] == "5.00"
    assert _history(await rows.history(direct.id)) == _history(await rows.history(first.id))
