"""Projects beyond create/update/archive: the restore from the archive (and the project limit it
claims), a project created from an external source reference (sync status pending), and what a
closed project (an outcome status) refuses (resolvers/opportunities/closed.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.relay import to_base64

from models.db import set_tenant
from tests.support.audit_trail import expect_audit
from tests.support.db import TenantRef
from tests.writes.conftest import Caller, Rows, SignIn, mutate
from tests.writes.test_projects import ARCHIVE, CREATE, PROJECT_FIELDS, UPDATE

RESTORE = f"""
mutation Restore($input: OpportunityProjectRestoreInput!) {{
  opportunityProjectRestore(input: $input) {{
    opportunityProject {{ {PROJECT_FIELDS} }}
    errors {{ field code message currentUpdatedAt }}
  }}
}}
"""

OVERRIDE_CREATE = """
mutation($input: OpportunityProjectOverrideCreateInput!) {
  opportunityProjectOverrideCreate(input: $input) { opportunityProjectOverride { rowId } errors { field code message } }
}
"""
OVERRIDE_UPDATE = """
mutation($input: OpportunityProjectOverrideUpdateInput!) {
  opportunityProjectOverrideUpdate(input: $input) { opportunityProjectOverride { rowId } errors { field code message } }
}
"""
OVERRIDE_DELETE = """
mutation($input: OpportunityProjectOverrideDeleteInput!) {
  opportunityProjectOverrideDelete(input: $input) { deletedId errors { field code message } }
}
"""
PLAN_CREATE = """
mutation($input: CapturePlanCreateInput!) {
  capturePlanCreate(input: $input) { capturePlan { rowId } errors { field code message } }
}
"""


def _wire(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _set_limit(owner_engine: AsyncEngine, tenant: TenantRef, limit: int) -> None:
    async with owner_engine.begin() as conn:
        await set_tenant(conn, tenant.id)
        await conn.execute(
            text("UPDATE tenants SET max_opportunity_projects = :n WHERE id = :t"), {"n": limit, "t": tenant.id}
        )


async def _restore(client: httpx.AsyncClient, caller: Caller, row: Any, **extra: Any) -> dict[str, Any]:
    data = await mutate(client, caller, RESTORE, {"input": {
        "rowId": str(row.id), "updatedAt": _wire(row.updated_at), **extra}})
    payload: dict[str, Any] = data["opportunityProjectRestore"]
    return payload


async def _counted(rows: Rows) -> int:
    found = await rows.one(
        "SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t AND archived_at IS NULL"
    )
    return int(found.n)


# -- restore ----------------------------------------------------------------------------------------


@pytest.mark.audits("opportunityProjectRestore")
async def test_restore_brings_an_archived_project_back_with_its_evidence(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    archived = await rows.project(project_name="Back again", archived_at=datetime.now(UTC),
                                  archived_by=fresh_tenant.system_user_id)
    payload = await _restore(client, manager, archived, reason="archived by mistake")
    assert payload["errors"] == []
    project = payload["opportunityProject"]
    assert project["archivedAt"] is None and project["archivedBy"] is None
    stored = await rows.one("SELECT * FROM opportunity_projects WHERE id = :p", p=archived.id)
    assert stored.archived_at is None and stored.archived_by is None and stored.updated_at > archived.updated_at
    log, _ = await expect_audit(owner_engine, fresh_tenant.id, "opportunityProjectRestore", action="RESTORE",
                                entity_id=archived.id, history={"archived_at", "archived_by"}, user_id=manager.id)
    assert log.permission_used == "opportunity:archive"


async def test_restore_refuses_what_is_not_archived_missing_stale_or_unpermitted(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    live = await rows.project()
    payload = await _restore(client, manager, live)
    assert payload["opportunityProject"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("VALIDATION", ["input", "rowId"])]
    assert "not archived" in payload["errors"][0]["message"]

    archived = await rows.project(archived_at=datetime.now(UTC))
    stale = await mutate(client, manager, RESTORE, {"input": {
        "rowId": str(archived.id), "updatedAt": "2001-01-01T00:00:00.000000Z"}})
    (error,) = stale["opportunityProjectRestore"]["errors"]
    assert error["code"] == "CONFLICT" and error["currentUpdatedAt"] is not None

    missing = await mutate(client, manager, RESTORE, {"input": {
        "id": to_base64("OpportunityProject", uuid.uuid4()), "updatedAt": _wire(archived.updated_at)}})
    assert [e["code"] for e in missing["opportunityProjectRestore"]["errors"]] == ["NOT_FOUND"]
    assert (await rows.one("SELECT archived_at FROM opportunity_projects WHERE id = :p", p=archived.id)).archived_at

    viewer = await sign_in_as("Viewer")
    body = await client.post("/graphql", json={"query": RESTORE, "variables": {"input": {
        "rowId": str(archived.id), "updatedAt": _wire(archived.updated_at)}}},
        headers={"Authorization": f"Bearer {viewer.token}"})
    assert body.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await rows.one("SELECT archived_at FROM opportunity_projects WHERE id = :p", p=archived.id)).archived_at


async def test_restore_claims_a_slot_under_the_project_limit(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    await _set_limit(owner_engine, fresh_tenant, 2)
    await rows.project(project_name="One")
    await rows.project(project_name="Two")
    archived = await rows.project(project_name="Kept", archived_at=datetime.now(UTC))

    over = await _restore(client, manager, archived)
    assert over["opportunityProject"] is None
    assert over["errors"] == [{
        "field": None, "code": "PROJECT_LIMIT", "currentUpdatedAt": None,
        "message": "The organization has reached its limit of 2 opportunity projects; archive one or raise the limit.",
    }]
    assert await _counted(rows) == 2
    assert await rows.audit(archived.id) == []

    await _set_limit(owner_engine, fresh_tenant, 3)
    assert (await _restore(client, manager, archived))["errors"] == []
    assert await _counted(rows) == 3


async def test_a_restore_and_a_create_racing_for_the_last_slot_one_wins(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    first, second = await sign_in_as("Capture Manager"), await sign_in_as("Capture Manager")
    await _set_limit(owner_engine, fresh_tenant, 2)
    await rows.project(project_name="One")
    archived = await rows.project(project_name="Kept", archived_at=datetime.now(UTC))

    async with owner_engine.connect() as holder:  # both wait at the tenant row lock, then take turns
        await set_tenant(holder, fresh_tenant.id)
        await holder.execute(text("SELECT 1 FROM tenants WHERE id = :t FOR NO KEY UPDATE"), {"t": fresh_tenant.id})
        racing = asyncio.gather(
            _restore(client, first, archived),
            mutate(client, second, CREATE, {"input": {"projectName": "New"}}),
        )
        await asyncio.sleep(0.5)
        await holder.rollback()
        restored, created = await racing
    outcomes = [restored["errors"], created["opportunityProjectCreate"]["errors"]]
    assert sorted(len(e) for e in outcomes) == [0, 1]
    assert [e["code"] for errors in outcomes for e in errors] == ["PROJECT_LIMIT"]
    assert await _counted(rows) == 2


# -- created from an external source reference --------------------------------------------------------


@pytest.mark.parametrize("form", ["rowId", "globalId"])
async def test_a_project_from_an_external_source_waits_for_its_sync(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, form: str
) -> None:
    manager = await sign_in_as("Capture Manager")
    source = await rows.make("external_opportunity_sources")
    ref = ({"externalSourceRowId": str(source.id)} if form == "rowId"
           else {"externalSourceId": to_base64("ExternalOpportunitySource", source.id)})
    data = await mutate(client, manager, CREATE, {"input": {
        "projectName": "From SAM", **ref, "externalOpportunityId": "W912-25-R-0001"}})
    payload = data["opportunityProjectCreate"]
    assert payload["errors"] == []
    stored = await rows.one("SELECT * FROM opportunity_projects WHERE id = :p",
                            p=uuid.UUID(payload["opportunityProject"]["rowId"]))
    assert stored.external_source_id == source.id and stored.external_opportunity_id == "W912-25-R-0001"
    assert stored.sync_status == "pending"


async def test_an_external_reference_needs_its_opportunity_id_and_one_source_form(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    source = await rows.make("external_opportunity_sources")
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        ({"externalSourceRowId": str(source.id)}, "VALIDATION", ["input", "externalOpportunityId"]),
        ({"externalSourceRowId": str(source.id), "externalSourceId": to_base64("ExternalOpportunitySource", source.id),
          "externalOpportunityId": "X"}, "VALIDATION", ["input", "externalSourceId"]),
        ({"externalSourceId": to_base64("Contact", source.id), "externalOpportunityId": "X"}, "NOT_FOUND",
         ["input", "externalSourceId"]),
    ]
    for extra, code, field in cases:
        data = await mutate(client, manager, CREATE, {"input": {"projectName": "p", **extra}})
        payload = data["opportunityProjectCreate"]
        assert payload["opportunityProject"] is None, extra
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], extra
    assert (await rows.one("SELECT count(*) AS n FROM opportunity_projects WHERE tenant_id = :t")).n == 0


# -- closed projects ----------------------------------------------------------------------------------


async def _update(client: httpx.AsyncClient, caller: Caller, row_id: uuid.UUID, rows: Rows,
                  **changes: Any) -> dict[str, Any]:
    current = await rows.one("SELECT updated_at FROM opportunity_projects WHERE id = :p", p=row_id)
    data = await mutate(client, caller, UPDATE, {"input": {
        "rowId": str(row_id), "updatedAt": _wire(current.updated_at), **changes}})
    payload: dict[str, Any] = data["opportunityProjectUpdate"]
    return payload


@pytest.mark.parametrize("status", ["won", "lost", "no_bid", "cancelled_by_government", "withdrawn"])
async def test_a_closed_project_takes_only_a_status_change(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, status: str
) -> None:
    manager = await sign_in_as("Capture Manager")
    closed = await rows.project(project_status=status, project_name="Done")

    refused = await _update(client, manager, closed.id, rows, projectName="Renamed", priorityLevel="HIGH")
    assert refused["opportunityProject"] is None
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [("VALIDATION", ["input", "priorityLevel"])]
    assert "closed" in refused["errors"][0]["message"]

    # Correcting the outcome changes the status alone.
    other = "lost" if status != "lost" else "won"
    mixed = await _update(client, manager, closed.id, rows, projectStatus=other.upper(), title="t")
    assert [(e["code"], e["field"]) for e in mixed["errors"]] == [("VALIDATION", ["input", "title"])]
    corrected = await _update(client, manager, closed.id, rows, projectStatus=other.upper())
    assert corrected["errors"] == [] and corrected["opportunityProject"]["projectStatus"] == other.upper()

    # Reopening may carry other fields along; the project is open again.
    reopened = await _update(client, manager, closed.id, rows, projectStatus="ON_HOLD", projectName="Again")
    assert reopened["errors"] == []
    assert reopened["opportunityProject"]["projectName"] == "Again"
    changed = await _update(client, manager, closed.id, rows, priorityLevel="LOW")
    assert changed["errors"] == []
    stored = await rows.one("SELECT project_name, priority_level FROM opportunity_projects WHERE id = :p", p=closed.id)
    assert (stored.project_name, stored.priority_level) == ("Again", "low")


async def test_a_closed_project_takes_no_overrides_nor_capture_plans(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project(project_status="active")
    override = await rows.make("opportunity_project_overrides", {"opportunity_projects": project.id},
                               field_name="title", override_value='"Local"')
    await _update(client, manager, project.id, rows, projectStatus="WON")  # closing is an update like others
    before = await rows.all("SELECT * FROM opportunity_project_overrides WHERE tenant_id = :t")

    created = await mutate(client, manager, OVERRIDE_CREATE, {"input": {
        "opportunityProjectRowId": str(project.id), "fieldName": "description", "overrideValue": "x"}})
    (error,) = created["opportunityProjectOverrideCreate"]["errors"]
    assert (error["code"], error["field"]) == ("VALIDATION", ["input", "opportunityProjectRowId"])
    assert "closed (won)" in error["message"]
    updated = await mutate(client, manager, OVERRIDE_UPDATE, {"input": {
        "rowId": str(override.id), "updatedAt": _wire(override.updated_at), "overrideValue": "y"}})
    assert [(e["code"], e["field"]) for e in updated["opportunityProjectOverrideUpdate"]["errors"]] == [
        ("VALIDATION", ["input", "rowId"])]
    deleted = await mutate(client, manager, OVERRIDE_DELETE, {"input": {
        "rowId": str(override.id), "updatedAt": _wire(override.updated_at)}})
    assert deleted["opportunityProjectOverrideDelete"]["deletedId"] is None
    assert [e["code"] for e in deleted["opportunityProjectOverrideDelete"]["errors"]] == ["VALIDATION"]
    assert await rows.all("SELECT * FROM opportunity_project_overrides WHERE tenant_id = :t") == before

    plan = await mutate(client, manager, PLAN_CREATE, {"input": {
        "opportunityProjectRowId": str(project.id), "planName": "After the win"}})
    (error,) = plan["capturePlanCreate"]["errors"]
    assert (error["code"], error["field"]) == ("VALIDATION", ["input", "opportunityProjectRowId"])
    assert (await rows.one("SELECT count(*) AS n FROM capture_plans WHERE tenant_id = :t")).n == 0


async def test_a_closed_project_can_be_archived_and_restored_and_stays_closed(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project(project_status="no_bid")
    archived = await mutate(client, manager, ARCHIVE, {"input": {
        "rowId": str(project.id), "updatedAt": _wire(project.updated_at)}})
    assert archived["opportunityProjectArchive"]["errors"] == []
    row = await rows.one("SELECT * FROM opportunity_projects WHERE id = :p", p=project.id)
    restored = await _restore(client, manager, row)
    assert restored["errors"] == [] and restored["opportunityProject"]["projectStatus"] == "NO_BID"
    still = await _update(client, manager, project.id, rows, title="t")
    assert [e["code"] for e in still["errors"]] == ["VALIDATION"]


async def test_a_project_from_an_external_source_counts_under_the_limit_too(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    manager = await sign_in_as("Capture Manager")
    source = await rows.make("external_opportunity_sources")
    await _set_limit(owner_engine, fresh_tenant, 1)
    await rows.project(project_name="Only")
    data = await mutate(client, manager, CREATE, {"input": {
        "projectName": "From SAM", "externalSourceRowId": str(source.id), "externalOpportunityId": "N-2"}})
    payload = data["opportunityProjectCreate"]
    assert payload["opportunityProject"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("PROJECT_LIMIT", None)]
    assert await _counted(rows) == 1


async def test_a_new_row_waits_for_a_closing_in_progress_and_is_then_refused(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows, owner_engine: AsyncEngine, fresh_tenant: TenantRef
) -> None:
    """ensure_open reads the project FOR SHARE: a capture plan asked for while another transaction
    is closing the project waits for it, then reads the committed status and is refused. (A plain
    read would see the status before the closing and add a plan to a closed project.)"""
    manager = await sign_in_as("Capture Manager")
    project = await rows.project(project_status="active")
    async with owner_engine.connect() as closer:
        await set_tenant(closer, fresh_tenant.id)
        await closer.execute(text("UPDATE opportunity_projects SET project_status = 'won' WHERE id = :p"),
                             {"p": project.id})
        pending = asyncio.ensure_future(mutate(client, manager, PLAN_CREATE, {"input": {
            "opportunityProjectRowId": str(project.id), "planName": "Late"}}))
        waited = False
        for _ in range(100):
            blocked = await owner_engine.connect()
            try:
                count = await blocked.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND cardinality(pg_blocking_pids(pid)) > 0"))
            finally:
                await blocked.close()
            if count:
                waited = True
                break
            await asyncio.sleep(0.05)
        assert waited, "the capture plan did not wait for the closing transaction"
        assert not pending.done()
        await closer.commit()
        data = await pending
    (error,) = data["capturePlanCreate"]["errors"]
    assert (error["code"], error["field"]) == ("VALIDATION", ["input", "opportunityProjectRowId"])
    assert "closed (won)" in error["message"]
    assert (await rows.one("SELECT count(*) AS n FROM capture_plans WHERE tenant_id = :t")).n == 0
