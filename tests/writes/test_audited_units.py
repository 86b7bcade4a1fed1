"""The units of work of auth/audited.py: labelled changes, event rows in the same transaction,
the system user as actor, and nothing left behind by a rollback."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from auth.audit import RequestMeta
from auth.audited import REDACTION, route_context, system_context, system_unit
from models import Role, User
from models.audit_trail import REDACTED, STORED_SECRETS
from models.enums import RiskLevel
from resolvers.common.loaders import SECRET_COLUMNS
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.writes.conftest import Rows


def test_route_and_system_contexts_carry_the_request_and_the_actor() -> None:
    tenant, user = uuid.uuid4(), uuid.uuid4()
    meta = RequestMeta(request_id="r-1", ip="::ffff:10.0.0.1", user_agent="ua", endpoint="/auth/x", method="POST")
    route = route_context(tenant, meta, field="/auth/x", actor=user, session_id=user)
    assert (route.tenant_id, route.user_id, route.session_id) == (tenant, user, str(user))
    assert (route.request_id, route.endpoint, route.http_method) == ("r-1", "/auth/x", "POST")
    assert route.field_name == "/auth/x"
    assert route.change_source.value == "user" and route.ip_address is not None
    system = system_context(tenant, process="jobs.nightly", system_user_id=user)
    assert (system.user_id, system.change_source.value, system.system_process) == (user, "system", "jobs.nightly")
    assert system.request_id is None and system.ip_address is None


def test_every_secret_the_api_hides_is_redacted_in_audit_rows() -> None:
    assert SECRET_COLUMNS <= STORED_SECRETS
    assert REDACTION.secret_columns == STORED_SECRETS


async def test_a_labelled_change_and_an_event_commit_together_as_the_system_user(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    async with system_unit(app_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, process="test.process") as uow:
        role = Role(tenant_id=fresh_tenant.id, name="Labelled", permissions=["project:read"])
        uow.add(role)
        uow.label(role, "auth.role.created", "custom role 'Labelled' created")
        uow.record_event(
            "auth.api_key.created", entity_type="api_key", entity_id=None, description="a key",
            details={"name": "k", "key_hash": "abc"}, risk=RiskLevel.MEDIUM,
        )
    assert uow.audit_rows == (2, 3)
    logs = await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t ORDER BY seq")
    assert [r.action_type for r in logs] == ["auth.role.created", "auth.api_key.created"]
    assert {r.user_id for r in logs} == {fresh_tenant.system_user_id}
    assert logs[0].entity_id == role.id and logs[0].after_values["name"] == "Labelled"
    assert logs[0].operation_description == "test.process: custom role 'Labelled' created"
    assert logs[1].after_values == {"name": "k", "key_hash": REDACTED}
    history = await rows.history(role.id)
    assert {h.field_name for h in history} == {"name", "permissions", "is_system_role"}
    assert {(h.change_source, h.changed_by_system_process, h.change_category) for h in history} == {
        ("system", "test.process", "create")
    }


async def test_a_failure_leaves_neither_the_change_nor_its_event(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    with pytest.raises(RuntimeError):
        async with system_unit(app_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, process="test.process") as uow:
            uow.add(Role(tenant_id=fresh_tenant.id, name="Gone", permissions=[]))
            uow.record_event("auth.api_key.created", entity_type="api_key", entity_id=uuid.uuid4())
            await uow.flush()
            raise RuntimeError("after the flush")
    assert await rows.all("SELECT id FROM roles WHERE tenant_id = :t AND name = 'Gone'") == []
    assert await rows.all("SELECT id FROM audit_logs WHERE tenant_id = :t") == []


async def test_a_secret_column_is_recorded_as_changed_never_with_its_value(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, rows: Rows
) -> None:
    user_id = (await rows.make("users")).id
    async with system_unit(app_engine, TEST_AUDIT_CHAIN, fresh_tenant.id, process="test.process") as uow:
        user = await uow.lock(User, user_id)
        uow.assign(user, {"mfa_secret_encrypted": "sealed-secret-value", "password_hash": "$argon2id$x"})
        uow.label(user, "auth.mfa.enrollment_started")
    (log,) = await rows.all("SELECT * FROM audit_logs WHERE tenant_id = :t AND entity_id = :e", e=user_id)
    assert log.action_type == "auth.mfa.enrollment_started"
    assert log.after_values["mfa_secret_encrypted"] == REDACTED
    assert log.after_values["password_hash"] == REDACTED
    values = await rows.all(
        "SELECT old_value, new_value FROM change_history WHERE tenant_id = :t AND entity_id = :e", e=user_id
    )
    assert {str(v.new_value) for v in values} == {REDACTED}
    async with app_engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM audit_logs WHERE after_values::text LIKE '%sealed-secret-value%'")
        )
    assert found == 0
