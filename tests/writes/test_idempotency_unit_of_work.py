"""`idempotent` inside a unit of work: the key, the entity and its audit rows commit together.

The unit of work is the one the mutations use (models/unit_of_work.py), on the server's role;
the entity is an organization, created through the unit of work's session like any audited write.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models import Organization
from models.audit_trail import AuditContext
from models.db import set_tenant
from models.errors import Invalid, NotFound
from models.idempotency import IdempotencyInProgress, IdempotencyKeyReused, idempotent
from models.unit_of_work import UnitOfWork
from schema.writes import REDACTION
from tests.support.db import TEST_AUDIT_CHAIN, TenantRef
from tests.support.http import make_login_user

MUTATION = "organizationCreate"


@pytest.fixture
async def user(owner_engine: AsyncEngine, fresh_tenant: TenantRef) -> uuid.UUID:
    return (await make_login_user(owner_engine, fresh_tenant)).id


def _uow(engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID) -> UnitOfWork:
    return UnitOfWork(
        engine,
        chain=TEST_AUDIT_CHAIN,
        context=AuditContext(tenant_id=tenant.id, user_id=user_id, field_name=MUTATION),
        redaction=REDACTION,
    )


def _organization(uow: UnitOfWork, name: str) -> Callable[[], Awaitable[uuid.UUID]]:
    async def create() -> uuid.UUID:
        org = Organization(tenant_id=uow.tenant_id, name=name, created_by=uow.actor_id)
        uow.add(org)
        await uow.flush()
        return org.id

    return create


async def _create(
    engine: AsyncEngine, tenant: TenantRef, user_id: uuid.UUID, key: str | None, name: str
) -> tuple[uuid.UUID, UnitOfWork]:
    async with _uow(engine, tenant, user_id) as uow:
        org_id = await idempotent(uow, key, mutation=MUTATION, values={"name": name}, create=_organization(uow, name))
    return org_id, uow


async def _rows(engine: AsyncEngine, tenant: TenantRef, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        await set_tenant(conn, tenant.id)
        found = list((await conn.execute(text(sql), {"t": tenant.id, **params})).all())
        await conn.rollback()
    return found


async def test_a_retry_returns_the_first_entity_and_writes_nothing(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    first, first_uow = await _create(app_engine, fresh_tenant, user, "retry-1", "Acme")
    again, retry_uow = await _create(app_engine, fresh_tenant, user, "retry-1", "Acme")

    assert again == first
    assert first_uow.audit_rows[0] == 1 and first_uow.entities == [("organization", first)]
    # The retry wrote no audit row and announced nothing.
    assert retry_uow.committed and retry_uow.audit_rows == (0, 0) and retry_uow.entities == []
    assert [r.id for r in await _rows(owner_engine, fresh_tenant, "SELECT id FROM organizations")] == [first]
    logs = await _rows(owner_engine, fresh_tenant, "SELECT action_type, entity_id FROM audit_logs WHERE tenant_id = :t")
    assert [(r.action_type, r.entity_id) for r in logs] == [("CREATE", first)]
    (key,) = await _rows(owner_engine, fresh_tenant, "SELECT * FROM idempotency_keys")
    assert (key.result_type, key.result_id, key.user_id, key.mutation) == ("organization", first, user, MUTATION)


async def test_without_a_key_every_call_creates(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    first, _ = await _create(app_engine, fresh_tenant, user, None, "Acme")
    second, _ = await _create(app_engine, fresh_tenant, user, None, "Acme")
    assert first != second
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM idempotency_keys") == []


async def test_another_input_with_the_key_is_refused_and_rolls_back(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    first, _ = await _create(app_engine, fresh_tenant, user, "reuse-1", "Acme")
    with pytest.raises(IdempotencyKeyReused):
        await _create(app_engine, fresh_tenant, user, "reuse-1", "Acme Federal")
    assert [r.id for r in await _rows(owner_engine, fresh_tenant, "SELECT id FROM organizations")] == [first]
    assert len(await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM audit_logs WHERE tenant_id = :t")) == 1


async def test_a_retry_during_the_first_unit_of_work_is_a_conflict(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    created, release = asyncio.Event(), asyncio.Event()

    async def first() -> uuid.UUID:
        async with _uow(app_engine, fresh_tenant, user) as uow:
            create = _organization(uow, "Acme")

            async def slow_create() -> uuid.UUID:
                org_id = await create()
                created.set()
                await release.wait()  # the first request is still running
                return org_id

            return await idempotent(uow, "busy-1", mutation=MUTATION, values={"name": "Acme"}, create=slow_create)

    running = asyncio.create_task(first())
    await asyncio.wait_for(created.wait(), timeout=10)
    with pytest.raises(IdempotencyInProgress) as conflict:
        await asyncio.wait_for(_create(app_engine, fresh_tenant, user, "busy-1", "Acme"), timeout=5)
    assert conflict.value.code == "CONFLICT"
    release.set()
    org_id = await running

    assert (await _create(app_engine, fresh_tenant, user, "busy-1", "Acme"))[0] == org_id
    assert len(await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM organizations")) == 1


async def test_a_failed_create_leaves_neither_key_nor_entity_nor_audit_row(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    with pytest.raises(Invalid):
        async with _uow(app_engine, fresh_tenant, user) as uow:
            create = _organization(uow, "Acme")

            async def failing_create() -> uuid.UUID:
                await create()  # flushed and audited within the transaction...
                raise Invalid("refused after the insert", field="name")  # ...then refused

            await idempotent(uow, "fails-1", mutation=MUTATION, values={"name": "Acme"}, create=failing_create)

    for table in ("idempotency_keys", "organizations", "audit_logs"):
        assert await _rows(owner_engine, fresh_tenant, f"SELECT 1 FROM {table} WHERE tenant_id = :t") == [], table
    retried, _ = await _create(app_engine, fresh_tenant, user, "fails-1", "Acme")
    assert [r.id for r in await _rows(owner_engine, fresh_tenant, "SELECT id FROM organizations")] == [retried]


async def test_a_retry_after_the_entity_was_deleted_is_not_found(
    owner_engine: AsyncEngine, app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    org_id, _ = await _create(app_engine, fresh_tenant, user, "gone-1", "Acme")
    async with _uow(app_engine, fresh_tenant, user) as uow:
        org = await uow.lock(Organization, org_id)
        await uow.delete(org)

    with pytest.raises(NotFound) as gone:
        await _create(app_engine, fresh_tenant, user, "gone-1", "Acme")
    assert gone.value.field == "idempotency_key" and "has been deleted since" in gone.value.message
    assert await _rows(owner_engine, fresh_tenant, "SELECT 1 FROM organizations") == []


async def test_a_create_must_return_the_entity_it_wrote(
    app_engine: AsyncEngine, fresh_tenant: TenantRef, user: uuid.UUID
) -> None:
    async def not_written() -> uuid.UUID:
        return uuid.uuid4()

    with pytest.raises(RuntimeError, match="no audited row it wrote"):
        async with _uow(app_engine, fresh_tenant, user) as uow:
            await idempotent(uow, "bug-1", mutation=MUTATION, values={}, create=not_written)
