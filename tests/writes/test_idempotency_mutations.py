"""`idempotencyKey` on the create mutations, over HTTP: retries, reuse, conflicts, scope, expiry."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import set_tenant
from models.idempotency import LOCK_CLASS, lock_scope
from tests.support.db import TenantRef, create_tenant
from tests.support.graphql import sign_in
from tests.support.http import make_login_user
from tests.writes.conftest import Caller, Rows, SignIn, mutate

PROJECT_CREATE = """
mutation($input: OpportunityProjectCreateInput!) {
  opportunityProjectCreate(input: $input) {
    opportunityProject { rowId projectName title }
    errors { field code message }
  }
}
"""
PROJECT_UPDATE = """
mutation($input: OpportunityProjectUpdateInput!) {
  opportunityProjectUpdate(input: $input) { opportunityProject { rowId } errors { code } }
}
"""
OVERRIDE_CREATE = """
mutation($input: OpportunityProjectOverrideCreateInput!) {
  opportunityProjectOverrideCreate(input: $input) {
    opportunityProjectOverride { rowId updatedAt }
    errors { field code message }
  }
}
"""
OVERRIDE_DELETE = """
mutation($input: OpportunityProjectOverrideDeleteInput!) {
  opportunityProjectOverrideDelete(input: $input) { deletedId errors { code } }
}
"""
PLAN_CREATE = """
mutation($input: CapturePlanCreateInput!) {
  capturePlanCreate(input: $input) { capturePlan { rowId planName } errors { field code message } }
}
"""
KEY_FIELD = ["input", "idempotencyKey"]


async def _create_project(
    client: httpx.AsyncClient, caller: Caller, key: str | None, **fields: Any
) -> dict[str, Any]:
    values = {"projectName": "Navy logistics modernization", **fields}
    if key is not None:
        values["idempotencyKey"] = key
    payload: dict[str, Any] = (await mutate(client, caller, PROJECT_CREATE, {"input": values}))[
        "opportunityProjectCreate"
    ]
    return payload


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def _count(rows: Rows, table: str) -> int:
    return len(await rows.all(f"SELECT 1 FROM {table} WHERE tenant_id = :t"))


async def test_a_retried_create_returns_the_first_project(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    key = str(uuid.uuid4())
    first = await _create_project(client, manager, key, title="NAVSUP IT")
    assert first["errors"] == []
    project_id = first["opportunityProject"]["rowId"]

    again = await _create_project(client, manager, key, title="NAVSUP IT")

    assert again == first
    assert [str(r.id) for r in await rows.all("SELECT id FROM opportunity_projects WHERE tenant_id = :t")] == [
        project_id
    ]
    (log,) = await rows.audit()
    assert (log.action_type, str(log.entity_id)) == ("CREATE", project_id)
    (stored,) = await rows.all("SELECT * FROM idempotency_keys WHERE tenant_id = :t")
    assert (stored.key, stored.mutation, stored.result_type, str(stored.result_id), stored.user_id) == (
        key, "opportunityProjectCreate", "opportunity_project", project_id, manager.id
    )


async def test_a_retry_reads_the_project_as_it_is_now(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    first = (await _create_project(client, manager, "now-1"))["opportunityProject"]
    (stored,) = await rows.all("SELECT updated_at FROM opportunity_projects WHERE tenant_id = :t")
    renamed = await mutate(client, manager, PROJECT_UPDATE, {"input": {
        "rowId": first["rowId"], "updatedAt": stored.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "projectName": "Renamed"}})
    assert renamed["opportunityProjectUpdate"]["errors"] == []

    again = await _create_project(client, manager, "now-1")

    assert again["opportunityProject"] == {**first, "projectName": "Renamed"}
    assert await _count(rows, "opportunity_projects") == 1


async def test_the_key_with_another_input_is_refused(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    await _create_project(client, manager, "reuse-1", title="NAVSUP IT")

    refused = await _create_project(client, manager, "reuse-1", title="Another title")

    assert refused["opportunityProject"] is None
    assert _errors(refused) == [("IDEMPOTENCY_KEY_REUSED", KEY_FIELD)]
    assert "different request" in refused["errors"][0]["message"]
    assert await _count(rows, "opportunity_projects") == 1 and len(await rows.audit()) == 1


async def test_the_key_with_another_mutation_is_refused(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = (await _create_project(client, manager, "shared-1"))["opportunityProject"]

    data = await mutate(client, manager, PLAN_CREATE, {"input": {
        "opportunityProjectRowId": project["rowId"], "planName": "Plan", "idempotencyKey": "shared-1"}})

    payload = data["capturePlanCreate"]
    assert payload["capturePlan"] is None and _errors(payload) == [("IDEMPOTENCY_KEY_REUSED", KEY_FIELD)]
    assert await _count(rows, "capture_plans") == 0


async def test_a_retry_while_the_first_is_running_is_a_conflict(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    # The first request holds the key's lock until its transaction ends; a test connection stands in.
    async with owner_engine.begin() as first:
        await set_tenant(first, fresh_tenant.id)
        await first.execute(
            text("SELECT pg_advisory_xact_lock(:c, hashtext(:s))"),
            {"c": LOCK_CLASS, "s": lock_scope(fresh_tenant.id, manager.id, "busy-1")},
        )
        busy = await asyncio.wait_for(_create_project(client, manager, "busy-1"), timeout=10)

        assert busy["opportunityProject"] is None and _errors(busy) == [("CONFLICT", KEY_FIELD)]
        assert "still running" in busy["errors"][0]["message"]
        assert await _count(rows, "opportunity_projects") == 0 and await _count(rows, "idempotency_keys") == 0

    # Once it has ended, the key is free.
    created = await _create_project(client, manager, "busy-1")
    assert created["errors"] == [] and await _count(rows, "opportunity_projects") == 1


async def test_other_users_and_tenants_have_their_own_keys(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine
) -> None:
    manager = await sign_in_as("Capture Manager")
    colleague = await sign_in_as("Capture Manager")
    other_tenant = await create_tenant(owner_engine)
    stranger_user = await make_login_user(owner_engine, other_tenant, roles=["Capture Manager"])
    stranger = Caller(stranger_user, await sign_in(client, stranger_user))

    mine = await _create_project(client, manager, "same-key", title="A")
    theirs = await _create_project(client, colleague, "same-key", title="B")
    elsewhere = await _create_project(client, stranger, "same-key", title="A")

    ids = {p["opportunityProject"]["rowId"] for p in (mine, theirs, elsewhere)}
    assert len(ids) == 3 and all(p["errors"] == [] for p in (mine, theirs, elsewhere))
    assert await _count(rows, "opportunity_projects") == 2 and await _count(rows, "idempotency_keys") == 2


async def test_an_expired_key_creates_again(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    first = await _create_project(client, manager, "old-1")
    async with owner_engine.begin() as conn:
        await set_tenant(conn, fresh_tenant.id)
        await conn.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'"))

    second = await _create_project(client, manager, "old-1")

    assert second["errors"] == []
    assert second["opportunityProject"]["rowId"] != first["opportunityProject"]["rowId"]
    (stored,) = await rows.all("SELECT result_id FROM idempotency_keys WHERE tenant_id = :t")
    assert str(stored.result_id) == second["opportunityProject"]["rowId"]


async def test_a_refused_create_leaves_no_key(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    refused = await _create_project(client, manager, "fix-1", projectName="   ")
    assert _errors(refused) == [("VALIDATION", ["input", "projectName"])]
    assert await _count(rows, "idempotency_keys") == 0

    # The corrected request with the same key is a new request, not a reuse.
    fixed = await _create_project(client, manager, "fix-1", projectName="Fixed name")
    assert fixed["errors"] == [] and fixed["opportunityProject"]["projectName"] == "Fixed name"


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_a_key_must_be_1_to_200_characters(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, key: str
) -> None:
    manager = await sign_in_as("Capture Manager")
    refused = await _create_project(client, manager, key)
    assert refused["opportunityProject"] is None and _errors(refused) == [("VALIDATION", KEY_FIELD)]
    assert await _count(rows, "opportunity_projects") == 0


async def test_override_create_is_idempotent_until_the_override_is_deleted(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    analyst = await sign_in_as("BD Analyst")
    project = await rows.project()
    values = {"opportunityProjectRowId": str(project.id), "fieldName": "title", "overrideValue": "Local title",
              "idempotencyKey": "ovr-1"}

    first = (await mutate(client, analyst, OVERRIDE_CREATE, {"input": values}))["opportunityProjectOverrideCreate"]
    again = (await mutate(client, analyst, OVERRIDE_CREATE, {"input": values}))["opportunityProjectOverrideCreate"]
    assert first["errors"] == [] and again == first  # not CONFLICT on the (project, field) unique key
    override = first["opportunityProjectOverride"]

    deleted = await mutate(client, analyst, OVERRIDE_DELETE, {"input": {
        "rowId": override["rowId"], "updatedAt": override["updatedAt"]}})
    assert deleted["opportunityProjectOverrideDelete"]["errors"] == []
    gone = (await mutate(client, analyst, OVERRIDE_CREATE, {"input": values}))["opportunityProjectOverrideCreate"]
    assert gone["opportunityProjectOverride"] is None and _errors(gone) == [("NOT_FOUND", KEY_FIELD)]
    assert await _count(rows, "opportunity_project_overrides") == 0


async def test_capture_plan_create_is_idempotent(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    values = {"opportunityProjectRowId": str(project.id), "planName": "Capture plan v1", "idempotencyKey": "plan-1"}

    first = (await mutate(client, manager, PLAN_CREATE, {"input": values}))["capturePlanCreate"]
    again = (await mutate(client, manager, PLAN_CREATE, {"input": values}))["capturePlanCreate"]

    assert first["errors"] == [] and again == first
    assert await _count(rows, "capture_plans") == 1
    assert [r.action_type for r in await rows.audit()] == ["CREATE"]
