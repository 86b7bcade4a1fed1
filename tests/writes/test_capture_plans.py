"""capturePlanCreate / Update / Archive: audited, archived never deleted, scoped to the plan's project."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from strawberry.relay import to_base64

from tests.support.audit_trail import expect_audit
from tests.writes.conftest import Rows, SignIn, codes, mutate, refused
from tests.writes.test_projects import _wire

FIELDS = "rowId planName status goNoGoDecision decisionDate updatedAt archivedAt updatedBy { rowId }"
CREATE = f"""
mutation($input: CapturePlanCreateInput!) {{
  capturePlanCreate(input: $input) {{ capturePlan {{ {FIELDS} }} errors {{ field code message }} }}
}}
"""
UPDATE = f"""
mutation($input: CapturePlanUpdateInput!) {{
  capturePlanUpdate(input: $input) {{ capturePlan {{ {FIELDS} }} errors {{ field code message }} }}
}}
"""
ARCHIVE = f"""
mutation($input: CapturePlanArchiveInput!) {{
  capturePlanArchive(input: $input) {{ capturePlan {{ {FIELDS} }} errors {{ field code message }} }}
}}
"""

ARCHIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


@pytest.mark.audits("capturePlanCreate", "capturePlanUpdate", "capturePlanArchive")
async def test_a_plan_through_its_life(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    data = await mutate(client, manager, CREATE, {"input": {
        "opportunityProjectRowId": str(project.id), "planName": "Capture plan v1", "winStrategy": "Price to win"}})
    plan = data["capturePlanCreate"]["capturePlan"]
    assert plan["status"] == "DRAFT" and plan["updatedBy"] is None
    plan_id = uuid.UUID(plan["rowId"])
    (created,) = await rows.audit(plan_id)
    assert created.action_type == "CREATE" and created.permission_used == "capture_plan:write"
    assert created.after_values["win_strategy"] == "Price to win"
    await expect_audit(rows.engine, rows.tenant.id, "capturePlanCreate", action="CREATE", entity_id=plan_id,
                       history={"plan_name", "win_strategy"}, user_id=manager.id)

    data = await mutate(client, manager, UPDATE, {"input": {
        "rowId": str(plan_id), "updatedAt": plan["updatedAt"], "timeline": "Gate review in May", "status": "APPROVED"}})
    plan = data["capturePlanUpdate"]["capturePlan"]
    assert plan["status"] == "APPROVED" and plan["goNoGoDecision"] is None
    assert plan["updatedBy"]["rowId"] == str(manager.id)
    _, updated = await rows.audit(plan_id)
    assert updated.before_values["status"] == "draft" and updated.after_values["status"] == "approved"
    history = {h.field_name: h for h in await rows.history(plan_id) if h.change_category == "update"}
    assert set(history) == {"timeline", "status", "updated_by"}
    assert history["timeline"].new_value == "Gate review in May"
    await expect_audit(rows.engine, rows.tenant.id, "capturePlanUpdate", action="UPDATE", entity_id=plan_id,
                       history={"timeline", "status"}, user_id=manager.id)
    # The go/no-go decision has one way in: capturePlanDecide (its own audited change), not an update.
    refused_decision = await refused(client, manager, UPDATE, {"input": {
        "rowId": str(plan_id), "updatedAt": plan["updatedAt"], "goNoGoDecision": "GO"}})
    assert codes(refused_decision) == ["BAD_USER_INPUT"]

    data = await mutate(client, manager, ARCHIVE, {"input": {"rowId": str(plan_id), "updatedAt": plan["updatedAt"]}})
    plan = data["capturePlanArchive"]["capturePlan"]
    assert plan["archivedAt"] == plan["updatedAt"]
    assert [log.action_type for log in await rows.audit(plan_id)] == ["CREATE", "UPDATE", "ARCHIVE"]
    await expect_audit(rows.engine, rows.tenant.id, "capturePlanArchive", action="ARCHIVE", entity_id=plan_id,
                       history={"archived_at"}, user_id=manager.id)
    assert (await rows.one("SELECT archived_by FROM capture_plans WHERE id = :p", p=plan_id)).archived_by == manager.id


async def test_capture_plan_errors(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    archived_project = await rows.project(archived_at=ARCHIVED_AT)
    for values, expected in (
        ({"opportunityProjectRowId": str(uuid.uuid4()), "planName": "x"},
         ("NOT_FOUND", ["input", "opportunityProjectRowId"])),
        ({"opportunityProjectRowId": str(archived_project.id), "planName": "x"},
         ("VALIDATION", ["input", "opportunityProjectRowId"])),
        ({"opportunityProjectRowId": str(project.id), "planName": ""}, ("VALIDATION", ["input", "planName"])),
        ({"opportunityProjectRowId": str(project.id), "planName": "p" * 300}, ("VALIDATION", ["input", "planName"])),
    ):
        data = await mutate(client, manager, CREATE, {"input": values})
        assert _errors(data["capturePlanCreate"]) == [expected], values
    plan = await rows.make("capture_plans", {"opportunity_projects": project.id})
    stale = "2020-01-01T00:00:00.000000Z"
    for document, extra in ((UPDATE, {"planName": "x"}), (ARCHIVE, {})):
        data = await mutate(client, manager, document, {"input": {"rowId": str(plan.id), "updatedAt": stale, **extra}})
        (payload,) = data.values()
        assert _errors(payload) == [("CONFLICT", ["input", "updatedAt"])]
        missing = {"rowId": str(uuid.uuid4()), "updatedAt": stale, **extra}
        data = await mutate(client, manager, document, {"input": missing})
        (payload,) = data.values()
        assert _errors(payload) == [("NOT_FOUND", ["input", "rowId"])]
    data = await mutate(client, manager, UPDATE, {"input": {
        "rowId": str(plan.id), "updatedAt": _wire(plan.updated_at), "planName": None}})
    assert _errors(data["capturePlanUpdate"]) == [("VALIDATION", ["input", "planName"])]
    archived = await rows.make("capture_plans", {"opportunity_projects": project.id},
                               archived_at=ARCHIVED_AT)
    for document, extra in ((UPDATE, {"planName": "x"}), (ARCHIVE, {})):
        data = await mutate(client, manager, document, {"input": {
            "rowId": str(archived.id), "updatedAt": _wire(archived.updated_at), **extra}})
        (payload,) = data.values()
        assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]
    assert await rows.audit() == []


async def test_capture_plan_permission_follows_the_project(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    mine, other = await rows.project(), await rows.project()
    theirs = await rows.make("capture_plans", {"opportunity_projects": other.id})
    manager = await sign_in_as("Capture Manager", on_project=mine.id)
    data = await mutate(client, manager, CREATE, {"input": {"opportunityProjectRowId": str(mine.id), "planName": "Ok"}})
    assert data["capturePlanCreate"]["errors"] == []
    errors = await refused(client, manager, CREATE,
                           {"input": {"opportunityProjectRowId": str(other.id), "planName": "x"}})
    assert codes(errors) == ["FORBIDDEN"]
    for document, extra in ((UPDATE, {"planName": "x"}), (ARCHIVE, {})):
        errors = await refused(client, manager, document, {"input": {
            "rowId": str(theirs.id), "updatedAt": _wire(theirs.updated_at), **extra}})
        assert codes(errors) == ["FORBIDDEN"]
    # A BD analyst holds no capture_plan:write anywhere.
    analyst = await sign_in_as("BD Analyst")
    errors = await refused(client, analyst, CREATE,
                           {"input": {"opportunityProjectRowId": str(mine.id), "planName": "x"}})
    assert errors[0]["extensions"]["permission"] == "capture_plan:write"
    assert await rows.audit(theirs.id) == []


RELAY_UPDATE = """
mutation($input: CapturePlanUpdateInput!) {
  capturePlanUpdate(input: $input) {
    capturePlan { id rowId planName updatedAt } errors { field code message currentUpdatedAt }
  }
}
"""


async def test_plans_are_named_by_global_id_or_row_id_exactly_one(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    """Relay conventions (docs/decisions.md W21), shown on the capture plan mutations."""
    project = await rows.project()
    manager = await sign_in_as("Capture Manager")
    project_gid = to_base64("OpportunityProject", project.id)
    data = await mutate(client, manager, CREATE, {"input": {"opportunityProjectId": project_gid, "planName": "By id"}})
    assert data["capturePlanCreate"]["errors"] == []
    plan_id = data["capturePlanCreate"]["capturePlan"]["rowId"]
    for values, expected in (
        ({"opportunityProjectId": project_gid, "opportunityProjectRowId": str(project.id)},
         ("VALIDATION", ["input", "opportunityProjectId"])),
        ({}, ("VALIDATION", ["input", "opportunityProjectId"])),
        ({"opportunityProjectId": to_base64("CapturePlan", project.id)},
         ("NOT_FOUND", ["input", "opportunityProjectId"])),
        ({"opportunityProjectId": to_base64("OpportunityProject", uuid.uuid4())},
         ("NOT_FOUND", ["input", "opportunityProjectId"])),
        ({"opportunityProjectRowId": str(uuid.uuid4())}, ("NOT_FOUND", ["input", "opportunityProjectRowId"])),
    ):
        data = await mutate(client, manager, CREATE, {"input": {**values, "planName": "x"}})
        assert data["capturePlanCreate"]["capturePlan"] is None
        assert _errors(data["capturePlanCreate"]) == [expected], values

    plan_gid = to_base64("CapturePlan", plan_id)
    read = await rows.one("SELECT updated_at FROM capture_plans WHERE id = :p", p=plan_id)
    data = await mutate(client, manager, RELAY_UPDATE, {"input": {
        "id": plan_gid, "updatedAt": _wire(read.updated_at), "planName": "Renamed"}})
    changed = data["capturePlanUpdate"]["capturePlan"]
    assert data["capturePlanUpdate"]["errors"] == [] and changed["id"] == plan_gid
    # A stale updatedAt: CONFLICT, with the plan's updatedAt now to merge with and retry.
    data = await mutate(client, manager, RELAY_UPDATE, {"input": {
        "rowId": plan_id, "updatedAt": _wire(read.updated_at), "planName": "Lost"}})
    assert data["capturePlanUpdate"]["capturePlan"] is None
    (conflict,) = data["capturePlanUpdate"]["errors"]
    assert (conflict["code"], conflict["field"]) == ("CONFLICT", ["input", "updatedAt"])
    assert conflict["currentUpdatedAt"] == changed["updatedAt"]
    data = await mutate(client, manager, RELAY_UPDATE, {"input": {
        "rowId": plan_id, "updatedAt": conflict["currentUpdatedAt"], "planName": "Merged"}})
    assert data["capturePlanUpdate"]["errors"] == []
    assert data["capturePlanUpdate"]["capturePlan"]["planName"] == "Merged"
    data = await mutate(client, manager, RELAY_UPDATE, {"input": {
        "id": plan_gid, "rowId": plan_id, "updatedAt": conflict["currentUpdatedAt"], "planName": "x"}})
    assert _errors(data["capturePlanUpdate"]) == [("VALIDATION", ["input", "id"])]
    data = await mutate(client, manager, RELAY_UPDATE, {"input": {
        "id": project_gid, "updatedAt": conflict["currentUpdatedAt"], "planName": "x"}})
    assert _errors(data["capturePlanUpdate"]) == [("NOT_FOUND", ["input", "id"])]
    # A UUID where a global id belongs is not a global id at all: refused before anything runs.
    errors = await refused(client, manager, UPDATE, {"input": {
        "id": plan_id, "updatedAt": conflict["currentUpdatedAt"], "planName": "x"}})
    assert codes(errors) == ["BAD_USER_INPUT"]
    names = [r.plan_name for r in await rows.all("SELECT plan_name FROM capture_plans WHERE tenant_id = :t")]
    assert names == ["Merged"]
