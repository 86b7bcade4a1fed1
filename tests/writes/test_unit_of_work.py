"""The unit of work and its flush hook, used directly: what gets recorded, and what cannot bypass it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from models import ExternalOpportunitySource, OpportunityProject, TenantConfiguration, User
from models.audit_trail import (
    AUDITED,
    NOT_AUDITED,
    REDACTED,
    AuditContext,
    AuditedSession,
    BypassRefused,
    TrailError,
)
from models.base import Base
from models.db import set_tenant
from models.errors import Conflict, Invalid, NotFound
from models.unit_of_work import NOTIFY_LIMIT, UnitOfWork, notification_payload
from schema.writes import REDACTION
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.writes.conftest import Rows


def _uow(engine: AsyncEngine, tenant: TenantRef, **context: Any) -> UnitOfWork:
    values: dict[str, Any] = {"tenant_id": tenant.id, "user_id": tenant.system_user_id,
                              "system_process": "test", "request_id": "uow-test"}
    values.update(context)
    return UnitOfWork(engine, chain=TEST_AUDIT_CHAIN, context=AuditContext(**values), redaction=REDACTION)


def test_every_model_is_either_audited_or_excused() -> None:
    mapped = {mapper.class_ for mapper in Base.registry.mappers}
    assert set(AUDITED).isdisjoint(NOT_AUDITED)
    assert mapped == set(AUDITED) | set(NOT_AUDITED)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(lambda: update(OpportunityProject).values(title="bulk"), id="orm-update"),
        pytest.param(lambda: delete(OpportunityProject), id="orm-delete"),
        pytest.param(lambda: insert(OpportunityProject).from_select(
            ["tenant_id", "project_name", "external_source_id", "external_opportunity_id", "created_by"],
            select(OpportunityProject.tenant_id, OpportunityProject.project_name, OpportunityProject.external_source_id,
                   OpportunityProject.external_opportunity_id + "-copy", OpportunityProject.created_by),
        ), id="orm-insert-from-select"),
        pytest.param(lambda: update(OpportunityProject.__table__).values(title="core"), id="core-update"),
        pytest.param(lambda: text("UPDATE opportunity_projects SET title = 'raw'"), id="text-update"),
        pytest.param(lambda: text("delete from public.capture_plans"), id="text-delete"),
    ],
)
async def test_statements_that_would_bypass_the_hook_are_refused(
    statement: Any, app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    project = await rows.project(title="Untouched")
    with pytest.raises(BypassRefused):
        async with _uow(app_engine, fresh_tenant) as uow:
            await uow.session.execute(statement())
    with pytest.raises(BypassRefused):
        async with _uow(app_engine, fresh_tenant) as uow:
            await uow.connection.execute(statement())
    assert (await rows.one("SELECT title FROM opportunity_projects WHERE id = :p", p=project.id)).title == "Untouched"
    assert await rows.audit() == []


async def test_orm_bulk_insert_of_an_audited_model_is_refused(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    values = {"tenant_id": fresh_tenant.id, "project_name": "bulk", "external_source_id": fresh_tenant.manual_source_id,
              "external_opportunity_id": "B-1", "created_by": fresh_tenant.system_user_id}
    with pytest.raises(BypassRefused):
        async with _uow(app_engine, fresh_tenant) as uow:
            await uow.session.execute(insert(OpportunityProject), [values])
    assert await rows.all("SELECT id FROM opportunity_projects WHERE tenant_id = :t") == []


async def test_statements_on_tables_that_are_not_audited_pass(app_engine: AsyncEngine, fresh_tenant: TenantRef) -> None:
    async with _uow(app_engine, fresh_tenant) as uow:
        found = await uow.connection.execute(text("UPDATE user_sessions SET is_active = is_active WHERE false"))
        assert found.rowcount == 0


async def test_an_audited_session_outside_a_unit_of_work_cannot_flush(
    app_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    async with app_engine.connect() as conn:
        await conn.begin()
        session = AsyncSession(bind=conn, sync_session_class=AuditedSession)
        session.add(OpportunityProject(tenant_id=fresh_tenant.id, project_name="x", created_by=uuid.uuid4(),
                                       external_source_id=uuid.uuid4(), external_opportunity_id="x"))
        with pytest.raises(TrailError):
            await session.flush()
        await conn.rollback()


async def test_values_recorded_are_the_stored_ones(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    project = await rows.project(win_probability_score=Decimal("10.50"))
    async with _uow(app_engine, fresh_tenant) as uow:
        loaded = await uow.lock(OpportunityProject, project.id, updated_at=project.updated_at)
        uow.assign(loaded, {"win_probability_score": Decimal("7.5"), "assigned_team_members": [str(uuid.uuid4())]})
    stored = await rows.one("SELECT * FROM opportunity_projects WHERE id = :p", p=project.id)
    (log,) = await rows.audit(project.id)
    assert log.before_values["win_probability_score"] == "10.50"
    assert log.after_values["win_probability_score"] == "7.50"  # numeric(5,2) as stored, not Python's 7.5
    assert log.after_values["updated_at"] == stored.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert log.user_id == fresh_tenant.system_user_id and log.request_id == "uow-test"
    assert log.operation_description == "test: UPDATE opportunity_project"
    (history_row, members) = sorted(await rows.history(project.id), key=lambda h: h.field_name)
    assert history_row.field_name == "assigned_team_members" and history_row.new_value == stored.assigned_team_members
    assert (members.old_value, members.new_value) == ("10.50", "7.50")
    assert {history_row.changed_by_system_process, members.change_source} == {"test", "user"}


async def test_secrets_never_reach_the_audit_trail(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    user = await rows.make("users", password_hash="pbkdf2$old-hash-value")
    secret = "pbkdf2$new-hash-value"
    async with _uow(app_engine, fresh_tenant) as uow:
        loaded = await uow.lock(User, user.id)
        uow.assign(loaded, {"password_hash": secret, "title": "Director"})
        uow.add(TenantConfiguration(tenant_id=fresh_tenant.id, config_key="auth.oidc", config_type="json",
                                    config_value={"issuer": "https://idp.example", "client_secret": "s3cr3t"}))
    (changed,) = await rows.audit(user.id)
    assert changed.action_type == "UPDATE" and changed.risk_level == "high"
    assert "password_hash" in changed.changed_fields
    assert changed.before_values["password_hash"] == REDACTED == changed.after_values["password_hash"]
    (config,) = await rows.audit(action="CREATE")
    assert config.after_values["config_value"] == {"issuer": "https://idp.example", "client_secret": REDACTED}
    everything = json.dumps([[dict(r._mapping) for r in await rows.audit()],
                             [dict(r._mapping) for r in await rows.history()]], default=str)
    assert "new-hash-value" not in everything and "old-hash-value" not in everything and "s3cr3t" not in everything


async def test_operational_columns_alone_leave_no_audit_row(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    user = await rows.make("users")
    async with _uow(app_engine, fresh_tenant) as uow:
        loaded = await uow.lock(User, user.id)
        uow.assign(loaded, {"last_login_at": datetime.now(UTC), "failed_login_attempts": 2})
    assert await rows.audit(user.id) == []
    async with _uow(app_engine, fresh_tenant) as uow:
        loaded = await uow.lock(User, user.id)
        uow.assign(loaded, {"failed_login_attempts": 0, "first_name": "Renamed"})
    (log,) = await rows.audit(user.id)
    assert set(log.changed_fields) == {"failed_login_attempts", "first_name", "updated_at"}
    assert [h.field_name for h in await rows.history(user.id)] == ["first_name"]


async def test_database_refusals_become_domain_errors(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    project = await rows.project()
    with pytest.raises(Invalid) as refused:
        async with _uow(app_engine, fresh_tenant) as uow:
            loaded = await uow.lock(OpportunityProject, project.id)
            loaded.pipeline_stage = "phase_9"  # past the API's enum: the CHECK constraint refuses it
    assert refused.value.field == "pipeline_stage"
    with pytest.raises(Invalid) as refused:
        async with _uow(app_engine, fresh_tenant) as uow:
            uow.add(OpportunityProject(tenant_id=fresh_tenant.id, created_by=fresh_tenant.system_user_id,
                                       external_source_id=fresh_tenant.manual_source_id, external_opportunity_id="N"))
    assert refused.value.field == "project_name"  # NOT NULL
    with pytest.raises(NotFound):
        async with _uow(app_engine, fresh_tenant) as uow:
            await uow.lock(OpportunityProject, uuid.uuid4())
    with pytest.raises(Invalid) as refused:
        async with _uow(app_engine, fresh_tenant) as uow:
            uow.assign(await uow.lock(OpportunityProject, project.id), {"win_probability_score": Decimal("1000")})
    assert refused.value.field == "win_probability_score"
    with pytest.raises(Invalid) as refused:
        async with _uow(app_engine, fresh_tenant) as uow:
            (await uow.lock(OpportunityProject, project.id)).title = "t" * 501  # past assign(): varchar(500)
    assert refused.value.message == "A value does not fit its field."
    source = await rows.make("external_opportunity_sources")
    await rows.project(external_source_id=source.id)
    with pytest.raises(Conflict) as conflict:
        async with _uow(app_engine, fresh_tenant) as uow:
            await uow.delete(await uow.lock(ExternalOpportunitySource, source.id))
    assert conflict.value.message == "The external opportunity source is still referenced by opportunity projects."
    assert await rows.audit() == []


async def test_a_deadlock_is_a_conflict_to_retry(app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows) -> None:
    one, two = await rows.project(), await rows.project()
    first, second = _uow(app_engine, fresh_tenant), _uow(app_engine, fresh_tenant)
    await first.__aenter__()
    await second.__aenter__()
    try:
        await first.lock(OpportunityProject, one.id)
        await second.lock(OpportunityProject, two.id)
        # Each now waits for the other's row: PostgreSQL aborts one of them (after deadlock_timeout).
        outcomes = await asyncio.gather(
            first.lock(OpportunityProject, two.id), second.lock(OpportunityProject, one.id), return_exceptions=True
        )
    finally:
        await first.rollback()
        await second.rollback()
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], Conflict)
    assert refused[0].message == "The change collided with a concurrent one: retry."


async def test_concurrent_updates_with_the_same_updated_at_one_wins(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    project = await rows.project(title="Start")
    first, second = _uow(app_engine, fresh_tenant), _uow(app_engine, fresh_tenant)
    await first.__aenter__()
    await second.__aenter__()
    try:
        mine = await first.lock(OpportunityProject, project.id, updated_at=project.updated_at)
        # The second waits on the row lock while the first holds it...
        waiting = asyncio.create_task(second.lock(OpportunityProject, project.id, updated_at=project.updated_at))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        uow_assign = first.assign(mine, {"title": "First"})
        assert uow_assign == ["title"]
        await first.commit()
        # ...and once the first commits it sees the new updated_at: stale.
        with pytest.raises(Conflict):
            await waiting
    finally:
        await first.rollback()
        await second.rollback()
    assert (await rows.one("SELECT title FROM opportunity_projects WHERE id = :p", p=project.id)).title == "First"
    assert len(await rows.audit(project.id)) == 1


async def test_a_write_must_move_updated_at_forward(
    app_engine: AsyncEngine, owner_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    project = await rows.project()
    async with _uow(app_engine, fresh_tenant) as early:  # its transaction (and now()) starts here
        await asyncio.sleep(0.01)
        # A later transaction changes the row, and the client holds that newer updatedAt.
        async with owner_engine.begin() as conn:
            await set_tenant(conn, fresh_tenant.id)
            seen = (await conn.execute(text("UPDATE opportunity_projects SET title = 'newer' WHERE id = :p"
                                            " RETURNING updated_at"), {"p": project.id})).scalar_one()
        # Writing it here would stamp an updated_at older than the value the client saw: refused.
        with pytest.raises(Conflict):
            await early.lock(OpportunityProject, project.id, updated_at=seen)


async def test_on_commit_runs_after_a_commit_only(app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows) -> None:
    project = await rows.project()
    ran: list[str] = []

    async def note(what: str) -> None:
        ran.append(what)

    async with _uow(app_engine, fresh_tenant) as uow:
        uow.on_commit(lambda: note("committed"))
        uow.assign(await uow.lock(OpportunityProject, project.id), {"title": "t"})
    with pytest.raises(Conflict):
        async with _uow(app_engine, fresh_tenant) as uow:
            uow.on_commit(lambda: note("rolled back"))
            await uow.lock(OpportunityProject, project.id, updated_at=project.updated_at - timedelta(seconds=1))
    assert ran == ["committed"]


def test_a_notification_stays_under_the_postgresql_limit() -> None:
    tenant, batch = uuid.uuid4(), uuid.uuid4()
    few = [("opportunity_project", uuid.uuid4()) for _ in range(3)]
    small = json.loads(notification_payload(tenant, batch, few))
    assert small == {"tenant": str(tenant), "batch": str(batch),
                     "entities": [{"type": t, "id": str(i)} for t, i in few]}
    many = [("opportunity_project_override", uuid.uuid4()) for _ in range(500)]
    payload = notification_payload(tenant, batch, many)
    assert len(payload.encode()) <= NOTIFY_LIMIT < 8000
    cut = json.loads(payload)
    assert cut["truncated"] is True and cut["batch"] == str(batch)
    assert 0 < len(cut["entities"]) < 500
    assert cut["entities"] == [{"type": t, "id": str(i)} for t, i in many[: len(cut["entities"])]]
