"""Activities and participants over GraphQL: create, update, complete, reassign, cancel; add and
remove participants. Audited (audit + history rows), never deleted (cancelled), refused before
anything is written, scoped to the project of the record the activity is about."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from models.audit_trail import AuditContext
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import validate
from schema.writes import REDACTION
from tests.support.audit_trail import expect_audit
from tests.support.db import TEST_AUDIT_CHAIN
from tests.support.validation import expect_refusal
from tests.writes.conftest import Rows, SignIn, codes, mutate, refused
from tests.writes.test_projects import _wire

FIELDS = (
    "id rowId entityType entityId subject status priority completionPercentage completedDate activityDate dueDate"
    " tags updatedAt assignee { rowId } updatedBy { rowId }"
)
ERRORS = "errors { field code message }"


def _doc(field: str, input_type: str, body: str) -> str:
    return f"mutation($input: {input_type}!) {{ {field}(input: $input) {{ {body} {ERRORS} }} }}"


CREATE = _doc("activityCreate", "ActivityCreateInput", f"activity {{ {FIELDS} }}")
UPDATE = _doc("activityUpdate", "ActivityUpdateInput", f"activity {{ {FIELDS} }}")
COMPLETE = _doc("activityComplete", "ActivityCompleteInput", f"activity {{ {FIELDS} }}")
REASSIGN = _doc("activityReassign", "ActivityReassignInput", f"activity {{ {FIELDS} }}")
CANCEL = _doc("activityCancel", "ActivityCancelInput", f"activity {{ {FIELDS} }}")
ADD = _doc(
    "activityParticipantAdd", "ActivityParticipantAddInput",
    "activityParticipant { rowId participantType participantId role }",
)
REMOVE = _doc("activityParticipantRemove", "ActivityParticipantRemoveInput", "deletedId deletedRowId")


def gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def _one(client: httpx.AsyncClient, caller: Any, document: str, values: dict[str, Any]) -> dict[str, Any]:
    data = await mutate(client, caller, document, {"input": values})
    (payload,) = data.values()
    assert isinstance(payload, dict)
    return payload


@pytest.mark.audits("activityCreate", "activityUpdate", "activityComplete", "activityReassign", "activityCancel")
async def test_an_activity_through_its_life(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    colleague = await sign_in_as("BD Analyst")
    project = await rows.project()
    payload = await _one(client, manager, CREATE, {
        "targetId": gid("OpportunityProject", project.id), "activityType": "meeting", "subject": "Industry day",
        "activityDate": "2026-01-10T15:00:00Z", "dueDate": "2026-01-12T15:00:00Z", "priority": "HIGH",
        "tags": ["navsea"], "assigneeRowId": str(manager.id),
    })
    assert payload["errors"] == []
    activity = payload["activity"]
    assert (activity["entityType"], activity["entityId"]) == ("OPPORTUNITY_PROJECT", str(project.id))
    assert (activity["status"], activity["priority"], activity["tags"]) == ("PENDING", "HIGH", ["navsea"])
    assert activity["assignee"]["rowId"] == str(manager.id)
    activity_id = uuid.UUID(activity["rowId"])
    await expect_audit(rows.engine, rows.tenant.id, "activityCreate", action="CREATE", entity_id=activity_id,
                       history={"subject", "activity_type", "priority", "assigned_to"}, user_id=manager.id,
                       rows_in_request=1)

    payload = await _one(client, manager, UPDATE, {
        "id": activity["id"], "updatedAt": activity["updatedAt"], "status": "IN_PROGRESS",
        "completionPercentage": 40, "tags": None})
    assert payload["errors"] == []
    activity = payload["activity"]
    assert (activity["status"], activity["completionPercentage"], activity["tags"]) == ("IN_PROGRESS", 40, [])
    assert activity["updatedBy"]["rowId"] == str(manager.id)
    await expect_audit(rows.engine, rows.tenant.id, "activityUpdate", action="UPDATE", entity_id=activity_id,
                       history={"status", "completion_percentage", "tags", "updated_by"}, user_id=manager.id)

    payload = await _one(client, manager, REASSIGN, {
        "rowId": str(activity_id), "updatedAt": activity["updatedAt"], "assigneeId": gid("User", colleague.id)})
    assert payload["errors"] == []
    activity = payload["activity"]
    assert activity["assignee"]["rowId"] == str(colleague.id)
    await expect_audit(rows.engine, rows.tenant.id, "activityReassign", action="activity.reassigned",
                       entity_id=activity_id, history={"assigned_to"}, user_id=manager.id)

    payload = await _one(client, manager, COMPLETE, {
        "rowId": str(activity_id), "updatedAt": activity["updatedAt"], "completedDate": "2026-01-11T09:30:00Z",
        "completionPercentage": 90})
    assert payload["errors"] == []
    activity = payload["activity"]
    assert (activity["status"], activity["completionPercentage"]) == ("COMPLETED", 90)
    assert activity["completedDate"].startswith("2026-01-11T09:30:00")
    await expect_audit(rows.engine, rows.tenant.id, "activityComplete", action="activity.completed",
                       entity_id=activity_id, history={"status", "completed_date", "completion_percentage"},
                       user_id=manager.id)

    # Reopening a completed activity clears its completed date.
    payload = await _one(client, manager, UPDATE, {
        "rowId": str(activity_id), "updatedAt": activity["updatedAt"], "status": "PENDING"})
    activity = payload["activity"]
    assert (activity["status"], activity["completedDate"]) == ("PENDING", None)

    payload = await _one(client, manager, CANCEL, {
        "rowId": str(activity_id), "updatedAt": activity["updatedAt"], "reason": "Event postponed"})
    assert payload["errors"] == []
    assert payload["activity"]["status"] == "CANCELLED"
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "activityCancel", action="activity.cancelled",
                                entity_id=activity_id, history={"status"}, user_id=manager.id)
    assert log.change_reason == "Event postponed" and log.permission_used == "activity:write"
    # Kept, never deleted.
    assert (await rows.one("SELECT status FROM activities WHERE id = :a", a=activity_id)).status == "cancelled"


@pytest.mark.audits("activityParticipantAdd", "activityParticipantRemove")
async def test_participants_are_added_once_and_removed(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    activity = await rows.make("activities", {"opportunity_projects": (await rows.project()).id})
    contact = await rows.make("contacts")
    payload = await _one(client, manager, ADD, {
        "activityRowId": str(activity.id), "participantId": gid("Contact", contact.id), "role": "speaker"})
    assert payload["errors"] == []
    participant = payload["activityParticipant"]
    assert (participant["participantType"], participant["participantId"]) == ("CONTACT", str(contact.id))
    participant_id = uuid.UUID(participant["rowId"])
    await expect_audit(rows.engine, rows.tenant.id, "activityParticipantAdd", action="CREATE",
                       entity_id=participant_id, history={"participant_id", "participant_type", "role"},
                       user_id=manager.id)
    # The same person twice: CONFLICT, nothing added.
    payload = await _one(client, manager, ADD, {
        "activityId": gid("Activity", activity.id), "participantRowId": str(contact.id),
        "participantType": "CONTACT"})
    assert _errors(payload) == [("CONFLICT", ["input", "participantRowId"])]
    # A user, by row id and type.
    payload = await _one(client, manager, ADD, {
        "activityRowId": str(activity.id), "participantRowId": str(manager.id), "participantType": "USER"})
    assert payload["errors"] == []

    payload = await _one(client, manager, REMOVE, {"rowId": str(participant_id)})
    assert payload["errors"] == [] and payload["deletedRowId"] == str(participant_id)
    assert payload["deletedId"] == gid("ActivityParticipant", participant_id)
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "activityParticipantRemove", action="DELETE",
                                entity_id=participant_id, history={"participant_id", "role"}, user_id=manager.id)
    assert log.before_values["participant_id"] == str(contact.id)
    assert await rows.all("SELECT 1 FROM activity_participants WHERE id = :p", p=participant_id) == []
    payload = await _one(client, manager, REMOVE, {"rowId": str(participant_id)})
    assert _errors(payload) == [("NOT_FOUND", ["input", "rowId"])]


async def test_activity_create_refusals(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    won = await rows.project(project_status="won")
    archived = await rows.project(archived_at=datetime(2026, 1, 1, tzinfo=UTC))
    plan_of_won = await rows.make("capture_plans", {"opportunity_projects": won.id})
    gone = await rows.make("users", is_active=False)
    archived_contact = await rows.make("contacts", is_active=False)
    archived_organization = await rows.make("organizations", is_active=False)
    deleted_document = await rows.make("documents", is_deleted=True, opportunity_project_id=project.id)
    archived_proposal = await rows.make("proposals", {"opportunity_projects": project.id},
                                        archived_at=datetime(2026, 1, 1, tzinfo=UTC))
    base = {"activityType": "call", "subject": "Call the CO"}
    target = {"targetRowId": str(project.id), "targetType": "OPPORTUNITY_PROJECT"}
    for values, expected in (
        ({"targetRowId": str(uuid.uuid4()), "targetType": "PROPOSAL"}, ("NOT_FOUND", ["input", "targetRowId"])),
        ({"targetId": gid("Proposal", uuid.uuid4())}, ("NOT_FOUND", ["input", "targetId"])),
        ({"targetId": gid("User", project.id)}, ("NOT_FOUND", ["input", "targetId"])),
        ({"targetRowId": str(project.id)}, ("VALIDATION", ["input", "targetType"])),
        ({}, ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("OpportunityProject", project.id), "targetRowId": str(project.id)},
         ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("OpportunityProject", project.id), "targetType": "CONTACT"},
         ("VALIDATION", ["input", "targetType"])),
        ({"targetRowId": str(project.id), "targetType": "USER"}, ("VALIDATION", ["input", "targetType"])),
        ({"targetId": gid("OpportunityProject", won.id)}, ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("CapturePlan", plan_of_won.id)}, ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("OpportunityProject", archived.id)}, ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("Contact", archived_contact.id)}, ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("Organization", archived_organization.id)}, ("VALIDATION", ["input", "targetId"])),
        ({"targetId": gid("Document", deleted_document.id)}, ("VALIDATION", ["input", "targetId"])),
        ({"targetRowId": str(archived_proposal.id), "targetType": "PROPOSAL"},
         ("VALIDATION", ["input", "targetRowId"])),
        ({**target, "status": "COMPLETED"}, ("VALIDATION", ["input", "status"])),
        ({**target, "completionPercentage": 101}, ("VALIDATION", ["input", "completionPercentage"])),
        ({**target, "completionPercentage": -1}, ("VALIDATION", ["input", "completionPercentage"])),
        ({**target, "activityDate": "2026-02-02T00:00:00Z", "dueDate": "2026-02-01T00:00:00Z"},
         ("VALIDATION", ["input", "dueDate"])),
        ({**target, "subject": " "}, ("VALIDATION", ["input", "subject"])),
        ({**target, "subject": "s" * 256}, ("VALIDATION", ["input", "subject"])),
        ({**target, "activityType": "t" * 101}, ("VALIDATION", ["input", "activityType"])),
        ({**target, "tags": ["a", "a"]}, ("VALIDATION", ["input", "tags"])),
        ({**target, "customFields": [1, 2]}, ("VALIDATION", ["input", "customFields"])),
        ({**target, "assigneeRowId": str(uuid.uuid4())}, ("VALIDATION", ["input", "assigneeRowId"])),
        ({**target, "assigneeId": gid("User", gone.id)}, ("VALIDATION", ["input", "assigneeId"])),
        ({**target, "assigneeRowId": str(rows.tenant.system_user_id)}, ("VALIDATION", ["input", "assigneeRowId"])),
    ):
        payload = await _one(client, manager, CREATE, {**base, **values})
        assert _errors(payload) == [expected], values
    assert await rows.all("SELECT 1 FROM activities WHERE tenant_id = :t") == []
    assert await rows.audit() == []


async def test_activity_change_refusals(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    refs = {"opportunity_projects": project.id}
    pending = await rows.make("activities", refs, activity_date=datetime(2026, 3, 1, tzinfo=UTC))
    cancelled = await rows.make("activities", refs, status="cancelled")
    completed = await rows.make("activities", refs, status="completed")
    stale = "2020-01-01T00:00:00.000000Z"
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    for document, values, expected in (
        (UPDATE, {"rowId": str(pending.id), "updatedAt": stale, "subject": "x"}, ("CONFLICT", ["input", "updatedAt"])),
        (UPDATE, {"rowId": str(uuid.uuid4()), "updatedAt": stale, "subject": "x"}, ("NOT_FOUND", ["input", "rowId"])),
        (UPDATE, {"id": gid("Proposal", pending.id), "updatedAt": stale}, ("NOT_FOUND", ["input", "id"])),
        (UPDATE, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at), "status": "CANCELLED"},
         ("VALIDATION", ["input", "status"])),
        (UPDATE, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at), "status": None},
         ("VALIDATION", ["input", "status"])),
        (UPDATE, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at),
                  "dueDate": "2026-02-01T00:00:00Z"}, ("VALIDATION", ["input", "dueDate"])),
        (UPDATE, {"rowId": str(cancelled.id), "updatedAt": _wire(cancelled.updated_at), "subject": "x"},
         ("VALIDATION", ["input", "rowId"])),
        (COMPLETE, {"rowId": str(pending.id), "updatedAt": stale}, ("CONFLICT", ["input", "updatedAt"])),
        (COMPLETE, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at), "completedDate": future},
         ("VALIDATION", ["input", "completedDate"])),
        (COMPLETE, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at),
                    "completedDate": "2026-02-01T00:00:00Z"}, ("VALIDATION", ["input", "completedDate"])),
        (COMPLETE, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at), "completionPercentage": 150},
         ("VALIDATION", ["input", "completionPercentage"])),
        (COMPLETE, {"rowId": str(completed.id), "updatedAt": _wire(completed.updated_at)},
         ("VALIDATION", ["input", "rowId"])),
        (COMPLETE, {"rowId": str(cancelled.id), "updatedAt": _wire(cancelled.updated_at)},
         ("VALIDATION", ["input", "rowId"])),
        (REASSIGN, {"rowId": str(pending.id), "updatedAt": stale}, ("CONFLICT", ["input", "updatedAt"])),
        (REASSIGN, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at)},
         ("VALIDATION", ["input", "assigneeId"])),  # unassigned already
        (REASSIGN, {"rowId": str(pending.id), "updatedAt": _wire(pending.updated_at),
                    "assigneeRowId": str(uuid.uuid4())}, ("VALIDATION", ["input", "assigneeRowId"])),
        (REASSIGN, {"rowId": str(completed.id), "updatedAt": _wire(completed.updated_at),
                    "assigneeRowId": str(manager.id)}, ("VALIDATION", ["input", "rowId"])),
        (CANCEL, {"rowId": str(pending.id), "updatedAt": stale}, ("CONFLICT", ["input", "updatedAt"])),
        (CANCEL, {"rowId": str(cancelled.id), "updatedAt": _wire(cancelled.updated_at)},
         ("VALIDATION", ["input", "rowId"])),
        (CANCEL, {"rowId": str(completed.id), "updatedAt": _wire(completed.updated_at)},
         ("VALIDATION", ["input", "rowId"])),
        (ADD, {"activityRowId": str(cancelled.id), "participantRowId": str(manager.id), "participantType": "USER"},
         ("VALIDATION", ["input", "activityRowId"])),
        (ADD, {"activityRowId": str(pending.id), "participantRowId": str(uuid.uuid4()), "participantType": "CONTACT"},
         ("NOT_FOUND", ["input", "participantRowId"])),
        (ADD, {"activityRowId": str(pending.id), "participantId": gid("User", uuid.uuid4())},
         ("NOT_FOUND", ["input", "participantId"])),
        (ADD, {"activityRowId": str(pending.id), "participantId": gid("Organization", uuid.uuid4())},
         ("NOT_FOUND", ["input", "participantId"])),
        (ADD, {"activityRowId": str(pending.id), "participantRowId": str(rows.tenant.system_user_id),
               "participantType": "USER"}, ("VALIDATION", ["input", "participantRowId"])),
        (ADD, {"activityRowId": str(pending.id), "participantRowId": str(manager.id), "participantType": "USER",
               "role": "r" * 51}, ("VALIDATION", ["input", "role"])),
        (ADD, {"activityRowId": str(uuid.uuid4()), "participantRowId": str(manager.id), "participantType": "USER"},
         ("NOT_FOUND", ["input", "activityRowId"])),
    ):
        payload = await _one(client, manager, document, values)
        assert _errors(payload) == [expected], (document, values)
    assert await rows.audit() == []


async def test_activity_permission_follows_the_project(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    mine, other = await rows.project(), await rows.project()
    proposal = await rows.make("proposals", {"opportunity_projects": mine.id})
    theirs = await rows.make("activities", {"opportunity_projects": other.id})
    organization = await rows.make("organizations")
    scoped = await sign_in_as("BD Analyst", on_project=mine.id)
    base = {"activityType": "task", "subject": "Outline"}
    payload = await _one(client, scoped, CREATE, {**base, "targetId": gid("Proposal", proposal.id)})
    assert payload["errors"] == []
    for target in (gid("OpportunityProject", other.id), gid("Organization", organization.id)):
        errors = await refused(client, scoped, CREATE, {"input": {**base, "targetId": target}})
        assert codes(errors) == ["FORBIDDEN"] and errors[0]["extensions"]["permission"] == "activity:write"
    errors = await refused(client, scoped, CANCEL, {"input": {
        "rowId": str(theirs.id), "updatedAt": _wire(theirs.updated_at)}})
    assert codes(errors) == ["FORBIDDEN"]
    # A viewer holds no activity:write anywhere; the refusal is audited.
    viewer = await sign_in_as("Viewer")
    errors = await refused(client, viewer, CREATE, {"input": {**base, "targetId": gid("OpportunityProject", mine.id)}})
    assert codes(errors) == ["FORBIDDEN"]
    assert [d.entity_type for d in await rows.denials()]
    assert await rows.audit(theirs.id) == []


def _uow(engine: AsyncEngine, tenant_id: uuid.UUID) -> UnitOfWork:
    return UnitOfWork(
        engine, chain=TEST_AUDIT_CHAIN, context=AuditContext(tenant_id=tenant_id, user_id=None), redaction=REDACTION
    )


@pytest.mark.validates("activities.assigned_to.active")
async def test_an_activity_is_assigned_to_an_active_person(app_engine: AsyncEngine, rows: Rows) -> None:
    inactive = await rows.make("users", is_active=False)
    for user in (inactive.id, rows.tenant.system_user_id):
        async with _uow(app_engine, rows.tenant.id) as uow:
            with pytest.raises(Exception) as refusal:
                await validate(uow, "activities", {"assigned_to": user})
        expect_refusal(refusal, "activities.assigned_to.active", field="assigned_to", code="VALIDATION")


async def test_a_retried_create_returns_what_the_first_created(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    contact = await rows.make("contacts")
    values = {"targetId": gid("OpportunityProject", project.id), "activityType": "call", "subject": "Call the CO",
              "idempotencyKey": str(uuid.uuid4())}
    first = await _one(client, manager, CREATE, values)
    again = await _one(client, manager, CREATE, values)
    assert first["errors"] == again["errors"] == []
    assert first["activity"]["rowId"] == again["activity"]["rowId"]
    reused = await _one(client, manager, CREATE, {**values, "subject": "Another call"})
    assert _errors(reused) == [("IDEMPOTENCY_KEY_REUSED", ["input", "idempotencyKey"])]
    activity_id = uuid.UUID(first["activity"]["rowId"])
    assert len(await rows.all("SELECT 1 FROM activities WHERE tenant_id = :t")) == 1

    join = {"activityId": gid("Activity", activity_id), "participantId": gid("Contact", contact.id),
            "idempotencyKey": str(uuid.uuid4())}
    first = await _one(client, manager, ADD, join)
    again = await _one(client, manager, ADD, join)
    assert first["errors"] == again["errors"] == []
    assert first["activityParticipant"]["rowId"] == again["activityParticipant"]["rowId"]


async def test_an_activity_can_be_about_each_kind_of_record(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    refs = {"opportunity_projects": project.id}
    targets = {
        "OPPORTUNITY_PROJECT": ("OpportunityProject", project.id),
        "ORGANIZATION": ("Organization", (await rows.make("organizations")).id),
        "CONTACT": ("Contact", (await rows.make("contacts")).id),
        "CAPTURE_PLAN": ("CapturePlan", (await rows.make("capture_plans", refs)).id),
        "PROPOSAL": ("Proposal", (await rows.make("proposals", refs)).id),
        "DOCUMENT": ("Document", (await rows.make("documents", opportunity_project_id=project.id)).id),
    }
    for entity_type, (node, row_id) in targets.items():
        for target in ({"targetId": gid(node, row_id)}, {"targetRowId": str(row_id), "targetType": entity_type}):
            payload = await _one(client, manager, CREATE, {**target, "activityType": "note", "subject": node})
            assert payload["errors"] == [], (target, payload)
            assert (payload["activity"]["entityType"], payload["activity"]["entityId"]) == (entity_type, str(row_id))
