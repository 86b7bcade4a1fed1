"""Proposals over GraphQL: create, update, archive, restore; their entries (review stages,
compliance matrix rows, amendment impacts) set and removed one at a time under the proposal's row
lock, concurrent edits losing nothing; and the go/no-go decision of a capture plan."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, date, datetime, timedelta
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

PROPOSAL = (
    "id rowId proposalTitle status teamMembers submissionDate finalSubmittalDate reviewStages complianceMatrix"
    " amendmentImpactLog updatedAt archivedAt proposalManager { rowId } updatedBy { rowId }"
)
PLAN = "rowId goNoGoDecision decisionDate decisionRationale updatedAt updatedBy { rowId }"
ERRORS = "errors { field code message currentUpdatedAt }"


def _doc(field: str, input_type: str, body: str) -> str:
    return f"mutation($input: {input_type}!) {{ {field}(input: $input) {{ {body} {ERRORS} }} }}"


def _proposal_doc(field: str) -> str:
    return _doc(field, f"{field[0].upper()}{field[1:]}Input", f"proposal {{ {PROPOSAL} }}")


CREATE, UPDATE, ARCHIVE, RESTORE = (_proposal_doc(f) for f in (
    "proposalCreate", "proposalUpdate", "proposalArchive", "proposalRestore"))
STAGE_SET, STAGE_REMOVE, ROW_SET, ROW_REMOVE, IMPACT_SET, IMPACT_REMOVE = (_proposal_doc(f) for f in (
    "proposalReviewStageSet", "proposalReviewStageRemove", "proposalComplianceEntrySet",
    "proposalComplianceEntryRemove", "proposalAmendmentImpactSet", "proposalAmendmentImpactRemove"))
DECIDE = _doc("capturePlanDecide", "CapturePlanDecideInput", f"capturePlan {{ {PLAN} }}")
ARCHIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def gid(type_name: str, row_id: uuid.UUID) -> str:
    return base64.b64encode(f"{type_name}:{row_id}".encode()).decode()


def _errors(payload: dict[str, Any]) -> list[tuple[str, list[str] | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def _one(client: httpx.AsyncClient, caller: Any, document: str, values: dict[str, Any]) -> dict[str, Any]:
    data = await mutate(client, caller, document, {"input": values})
    (payload,) = data.values()
    assert isinstance(payload, dict)
    return payload


@pytest.mark.audits("proposalCreate", "proposalUpdate", "proposalArchive", "proposalRestore")
async def test_a_proposal_through_its_life(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Proposal Manager")
    writer = await sign_in_as("BD Analyst")
    project = await rows.project()
    payload = await _one(client, manager, CREATE, {
        "opportunityProjectId": gid("OpportunityProject", project.id), "proposalTitle": "Technical volume",
        "proposalManagerRowId": str(manager.id), "teamMemberIds": [gid("User", writer.id)],
        "finalSubmittalDate": "2026-06-01T17:00:00Z"})
    assert payload["errors"] == []
    proposal = payload["proposal"]
    assert (proposal["status"], proposal["teamMembers"], proposal["reviewStages"]) == ("DRAFT", [str(writer.id)], [])
    assert proposal["proposalManager"]["rowId"] == str(manager.id)
    proposal_id = uuid.UUID(proposal["rowId"])
    await expect_audit(rows.engine, rows.tenant.id, "proposalCreate", action="CREATE", entity_id=proposal_id,
                       history={"proposal_title", "proposal_manager", "team_members"}, user_id=manager.id,
                       rows_in_request=1)

    payload = await _one(client, manager, UPDATE, {
        "id": proposal["id"], "updatedAt": proposal["updatedAt"], "status": "PINK_TEAM",
        "teamMemberRowIds": [str(writer.id), str(manager.id)], "proposalManagerId": gid("User", writer.id)})
    assert payload["errors"] == []
    proposal = payload["proposal"]
    assert proposal["status"] == "PINK_TEAM" and proposal["proposalManager"]["rowId"] == str(writer.id)
    await expect_audit(rows.engine, rows.tenant.id, "proposalUpdate", action="UPDATE", entity_id=proposal_id,
                       history={"status", "team_members", "proposal_manager"}, user_id=manager.id)

    payload = await _one(client, manager, ARCHIVE, {
        "rowId": str(proposal_id), "updatedAt": proposal["updatedAt"], "reason": "Merged into volume I"})
    proposal = payload["proposal"]
    assert payload["errors"] == [] and proposal["archivedAt"] == proposal["updatedAt"]
    log, _ = await expect_audit(rows.engine, rows.tenant.id, "proposalArchive", action="ARCHIVE",
                                entity_id=proposal_id, history={"archived_at"}, user_id=manager.id)
    assert log.change_reason == "Merged into volume I"
    # Archived: frozen, entries too.
    payload = await _one(client, manager, UPDATE, {
        "rowId": str(proposal_id), "updatedAt": proposal["updatedAt"], "proposalTitle": "x"})
    assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]
    payload = await _one(client, manager, ROW_SET, {"rowId": str(proposal_id), "entry": {
        "ref": "L.1", "requirement": "r", "status": "OPEN"}})
    assert _errors(payload) == [("VALIDATION", ["input", "rowId"])]

    payload = await _one(client, manager, RESTORE, {"rowId": str(proposal_id), "updatedAt": proposal["updatedAt"]})
    assert payload["errors"] == [] and payload["proposal"]["archivedAt"] is None
    await expect_audit(rows.engine, rows.tenant.id, "proposalRestore", action="RESTORE", entity_id=proposal_id,
                       history={"archived_at"}, user_id=manager.id)
    stored = await rows.one("SELECT archived_by, updated_by FROM proposals WHERE id = :p", p=proposal_id)
    assert (stored.archived_by, stored.updated_by) == (None, manager.id)


@pytest.mark.audits(
    "proposalReviewStageSet", "proposalReviewStageRemove", "proposalComplianceEntrySet",
    "proposalComplianceEntryRemove", "proposalAmendmentImpactSet", "proposalAmendmentImpactRemove",
)
async def test_entries_are_set_replaced_and_removed_one_at_a_time(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Proposal Manager")
    project = await rows.project()
    proposal = await rows.make(
        "proposals", {"opportunity_projects": project.id},
        compliance_matrix='{"rows": [{"ref": "M.2", "requirement": "Legacy", "status": "x"}]}',
        review_stages='[{"stage": "pink_team", "scheduled": "2026-02-01", "status": "scheduled"}]',
    )
    target = {"rowId": str(proposal.id)}

    payload = await _one(client, manager, STAGE_SET, {**target, "updatedAt": _wire(proposal.updated_at), "entry": {
        "stage": "RED_TEAM", "scheduled": "2026-03-01", "status": "COMPLETED", "completed": "2026-03-02",
        "outcome": "Strong technical approach", "leadId": gid("User", manager.id)}})
    assert payload["errors"] == []
    assert payload["proposal"]["reviewStages"] == [
        {"stage": "pink_team", "scheduled": "2026-02-01", "status": "scheduled"},
        {"stage": "red_team", "scheduled": "2026-03-01", "status": "completed", "completed": "2026-03-02",
         "outcome": "Strong technical approach", "lead": str(manager.id)},
    ]
    await expect_audit(rows.engine, rows.tenant.id, "proposalReviewStageSet", action="proposal.review_stage.set",
                       entity_id=proposal.id, history={"review_stages", "updated_by"}, user_id=manager.id)
    # Replaced in place, by its key.
    payload = await _one(client, manager, STAGE_SET, {**target, "entry": {
        "stage": "PINK_TEAM", "scheduled": "2026-02-03", "status": "IN_PROGRESS"}})
    assert [s["stage"] for s in payload["proposal"]["reviewStages"]] == ["pink_team", "red_team"]
    assert payload["proposal"]["reviewStages"][0] == {
        "stage": "pink_team", "scheduled": "2026-02-03", "status": "in_progress"}
    payload = await _one(client, manager, STAGE_REMOVE, {**target, "stage": "PINK_TEAM"})
    assert [s["stage"] for s in payload["proposal"]["reviewStages"]] == ["red_team"]
    await expect_audit(rows.engine, rows.tenant.id, "proposalReviewStageRemove",
                       action="proposal.review_stage.removed", entity_id=proposal.id, history={"review_stages"},
                       user_id=manager.id)

    payload = await _one(client, manager, ROW_SET, {**target, "entry": {
        "ref": "L.3.1", "requirement": "Technical approach, 30 pages", "status": "IN_PROGRESS", "volume": "I",
        "ownerRowId": str(manager.id)}})
    assert payload["errors"] == []
    assert payload["proposal"]["complianceMatrix"] == {"rows": [
        {"ref": "M.2", "requirement": "Legacy", "status": "x"},  # stored rows are kept as they are
        {"ref": "L.3.1", "requirement": "Technical approach, 30 pages", "status": "in_progress", "volume": "I",
         "owner": str(manager.id)},
    ]}
    await expect_audit(rows.engine, rows.tenant.id, "proposalComplianceEntrySet",
                       action="proposal.compliance_entry.set", entity_id=proposal.id,
                       history={"compliance_matrix"}, user_id=manager.id)
    payload = await _one(client, manager, ROW_REMOVE, {**target, "ref": "M.2"})
    assert [r["ref"] for r in payload["proposal"]["complianceMatrix"]["rows"]] == ["L.3.1"]
    await expect_audit(rows.engine, rows.tenant.id, "proposalComplianceEntryRemove",
                       action="proposal.compliance_entry.removed", entity_id=proposal.id,
                       history={"compliance_matrix"}, user_id=manager.id)

    payload = await _one(client, manager, IMPACT_SET, {**target, "entry": {
        "versionNumber": 2, "changedFields": ["response_deadline", "description"], "impact": "Schedule moved",
        "impactLevel": "HIGH"}})
    assert payload["errors"] == []
    (entry,) = payload["proposal"]["amendmentImpactLog"]
    assert {k: entry[k] for k in ("versionNumber", "changedFields", "impact", "impactLevel", "recordedBy")} == {
        "versionNumber": 2, "changedFields": ["response_deadline", "description"], "impact": "Schedule moved",
        "impactLevel": "high", "recordedBy": str(manager.id)}
    assert datetime.fromisoformat(entry["recordedAt"]) <= datetime.now(UTC)
    await expect_audit(rows.engine, rows.tenant.id, "proposalAmendmentImpactSet",
                       action="proposal.amendment_impact.set", entity_id=proposal.id,
                       history={"amendment_impact_log"}, user_id=manager.id)
    payload = await _one(client, manager, IMPACT_REMOVE, {**target, "versionNumber": 2})
    assert payload["proposal"]["amendmentImpactLog"] == []
    await expect_audit(rows.engine, rows.tenant.id, "proposalAmendmentImpactRemove",
                       action="proposal.amendment_impact.removed", entity_id=proposal.id,
                       history={"amendment_impact_log"}, user_id=manager.id)


async def test_concurrent_entry_edits_lose_nothing(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    """Twelve edits of one proposal's entries at once (three kinds, one request each): under the
    proposal's row lock each applies to the list the one before left, so every entry is there."""
    manager = await sign_in_as("Proposal Manager")
    proposal = await rows.make("proposals", {"opportunity_projects": (await rows.project()).id})
    target = {"rowId": str(proposal.id)}
    requests = [
        (ROW_SET, {**target, "entry": {"ref": f"L.{n}", "requirement": f"Requirement {n}", "status": "OPEN"}})
        for n in range(6)
    ] + [
        (STAGE_SET, {**target, "entry": {"stage": stage, "scheduled": "2026-04-01", "status": "SCHEDULED"}})
        for stage in ("PINK_TEAM", "RED_TEAM", "GOLD_TEAM")
    ] + [
        (IMPACT_SET, {**target, "entry": {"versionNumber": n, "changedFields": ["title"], "impact": "None"}})
        for n in (2, 3, 4)
    ]
    payloads = await asyncio.gather(*(_one(client, manager, doc, values) for doc, values in requests))
    assert [p["errors"] for p in payloads] == [[]] * len(requests)
    stored = await rows.one(
        "SELECT compliance_matrix, review_stages, amendment_impact_log FROM proposals WHERE id = :p", p=proposal.id)
    assert sorted(r["ref"] for r in stored.compliance_matrix["rows"]) == [f"L.{n}" for n in range(6)]
    assert sorted(s["stage"] for s in stored.review_stages) == ["gold_team", "pink_team", "red_team"]
    assert sorted(e["versionNumber"] for e in stored.amendment_impact_log) == [2, 3, 4]
    # One audited change per request, and the proposal's updated_at moved forward with each.
    logs = await rows.audit(proposal.id)
    assert len(logs) == len(requests) and len({log.request_id for log in logs}) == len(requests)
    history = await rows.all(
        "SELECT change_batch_id FROM change_history WHERE entity_id = :p AND field_name = 'updated_by'", p=proposal.id)
    assert len({h.change_batch_id for h in history}) <= len(requests)


async def test_proposal_refusals(client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows) -> None:
    manager = await sign_in_as("Proposal Manager")
    project = await rows.project()
    lost = await rows.project(project_status="lost")
    archived_project = await rows.project(archived_at=ARCHIVED_AT)
    inactive = await rows.make("users", is_active=False)
    base = {"proposalTitle": "Volume I", "proposalManagerRowId": str(manager.id)}
    on = {"opportunityProjectRowId": str(project.id)}
    for values, expected in (
        ({**base, "opportunityProjectRowId": str(uuid.uuid4())}, ("NOT_FOUND", ["input", "opportunityProjectRowId"])),
        ({**base, "opportunityProjectId": gid("OpportunityProject", lost.id)},
         ("VALIDATION", ["input", "opportunityProjectId"])),
        ({**base, "opportunityProjectRowId": str(archived_project.id)},
         ("VALIDATION", ["input", "opportunityProjectRowId"])),
        ({**on, "proposalTitle": "x"}, ("VALIDATION", ["input", "proposalManagerId"])),
        ({**on, **base, "proposalTitle": "  "}, ("VALIDATION", ["input", "proposalTitle"])),
        ({**on, **base, "proposalTitle": "t" * 256}, ("VALIDATION", ["input", "proposalTitle"])),
        ({**on, "proposalTitle": "x", "proposalManagerRowId": str(inactive.id)},
         ("VALIDATION", ["input", "proposalManagerRowId"])),
        ({**on, "proposalTitle": "x", "proposalManagerId": gid("Contact", manager.id)},
         ("NOT_FOUND", ["input", "proposalManagerId"])),
        ({**on, **base, "teamMemberRowIds": [str(manager.id), str(manager.id)]},
         ("VALIDATION", ["input", "teamMemberRowIds"])),
        ({**on, **base, "teamMemberIds": [gid("User", inactive.id)]}, ("VALIDATION", ["input", "teamMemberIds"])),
        ({**on, **base, "teamMemberIds": [gid("Proposal", manager.id)]}, ("NOT_FOUND", ["input", "teamMemberIds"])),
        ({**on, **base, "teamMemberIds": [], "teamMemberRowIds": []}, ("VALIDATION", ["input", "teamMemberIds"])),
        ({**on, **base, "submissionDate": "2026-06-02T00:00:00Z", "finalSubmittalDate": "2026-06-01T00:00:00Z"},
         ("VALIDATION", ["input", "finalSubmittalDate"])),
    ):
        payload = await _one(client, manager, CREATE, values)
        assert _errors(payload) == [expected], values
    assert await rows.all("SELECT 1 FROM proposals WHERE tenant_id = :t") == []

    proposal = await rows.make("proposals", {"opportunity_projects": project.id}, proposal_manager=manager.id)
    of_archived = await rows.make("proposals", {"opportunity_projects": archived_project.id}, archived_at=ARCHIVED_AT)
    current: dict[str, Any] = {"rowId": str(proposal.id), "updatedAt": _wire(proposal.updated_at)}
    stale: dict[str, Any] = {"rowId": str(proposal.id), "updatedAt": "2020-01-01T00:00:00.000000Z"}
    stage: dict[str, Any] = {"stage": "RED_TEAM", "scheduled": "2026-03-01", "status": "SCHEDULED"}
    row: dict[str, Any] = {"ref": "L.1", "requirement": "Page limit", "status": "OPEN"}
    impact: dict[str, Any] = {"versionNumber": 2, "changedFields": ["title"], "impact": "Retitled"}
    cases: list[tuple[str, dict[str, Any], tuple[str, list[str]]]] = [
        (UPDATE, {**stale, "proposalTitle": "x"}, ("CONFLICT", ["input", "updatedAt"])),
        (UPDATE, {**current, "proposalManagerRowId": None}, ("VALIDATION", ["input", "proposalManagerRowId"])),
        (UPDATE, {**current, "status": None}, ("VALIDATION", ["input", "status"])),
        (UPDATE, {**current, "submissionDate": "2026-07-01T00:00:00Z", "finalSubmittalDate": "2026-06-01T00:00:00Z"},
         ("VALIDATION", ["input", "finalSubmittalDate"])),
        (ARCHIVE, stale, ("CONFLICT", ["input", "updatedAt"])),
        (RESTORE, current, ("VALIDATION", ["input", "rowId"])),
        (RESTORE, {"rowId": str(of_archived.id), "updatedAt": _wire(of_archived.updated_at)},
         ("VALIDATION", ["input", "rowId"])),
        (RESTORE, {"rowId": str(uuid.uuid4()), "updatedAt": _wire(proposal.updated_at)},
         ("NOT_FOUND", ["input", "rowId"])),
        (STAGE_SET, {**stale, "entry": stage}, ("CONFLICT", ["input", "updatedAt"])),
        (STAGE_SET, {"rowId": str(uuid.uuid4()), "entry": stage}, ("NOT_FOUND", ["input", "rowId"])),
        (STAGE_SET, {**current, "entry": {**stage, "completed": "2026-03-02"}},
         ("VALIDATION", ["input", "entry", "completed"])),
        (STAGE_SET, {**current, "entry": {**stage, "status": "COMPLETED", "completed": "2026-02-01"}},
         ("VALIDATION", ["input", "entry", "completed"])),
        (STAGE_SET, {**current, "entry": {**stage, "outcome": "o" * 2001}},
         ("VALIDATION", ["input", "entry", "outcome"])),
        (STAGE_SET, {**current, "entry": {**stage, "leadRowId": str(inactive.id)}},
         ("VALIDATION", ["input", "entry", "leadRowId"])),
        (STAGE_SET, {**current, "entry": {**stage, "leadId": gid("Contact", manager.id)}},
         ("NOT_FOUND", ["input", "entry", "leadId"])),
        (STAGE_REMOVE, {**current, "stage": "BLUE_TEAM"}, ("NOT_FOUND", ["input", "stage"])),
        (ROW_SET, {**current, "entry": {**row, "ref": " "}}, ("VALIDATION", ["input", "entry", "ref"])),
        (ROW_SET, {**current, "entry": {**row, "ref": "r" * 51}}, ("VALIDATION", ["input", "entry", "ref"])),
        (ROW_SET, {**current, "entry": {**row, "requirement": ""}}, ("VALIDATION", ["input", "entry", "requirement"])),
        (ROW_SET, {**current, "entry": {**row, "volume": "v" * 51}}, ("VALIDATION", ["input", "entry", "volume"])),
        (ROW_SET, {**current, "entry": {**row, "ownerRowId": str(uuid.uuid4())}},
         ("VALIDATION", ["input", "entry", "ownerRowId"])),
        (ROW_REMOVE, {**current, "ref": "L.9"}, ("NOT_FOUND", ["input", "ref"])),
        (IMPACT_SET, {**current, "entry": {**impact, "versionNumber": 0}},
         ("VALIDATION", ["input", "entry", "versionNumber"])),
        (IMPACT_SET, {**current, "entry": {**impact, "changedFields": ["a", "a"]}},
         ("VALIDATION", ["input", "entry", "changedFields"])),
        (IMPACT_SET, {**current, "entry": {**impact, "impact": " "}}, ("VALIDATION", ["input", "entry", "impact"])),
        (IMPACT_REMOVE, {**current, "versionNumber": 7}, ("NOT_FOUND", ["input", "versionNumber"])),
    ]
    for document, values, expected in cases:
        payload = await _one(client, manager, document, values)
        assert _errors(payload) == [expected], (document, values)
    assert await rows.audit() == []


@pytest.mark.audits("capturePlanDecide")
async def test_the_go_no_go_decision_is_its_own_audited_change(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Capture Manager")
    project = await rows.project()
    plan = await rows.make("capture_plans", {"opportunity_projects": project.id})
    archived = await rows.make("capture_plans", {"opportunity_projects": project.id}, archived_at=ARCHIVED_AT)
    current = {"rowId": str(plan.id), "updatedAt": _wire(plan.updated_at)}
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    for values, expected in (
        ({**current, "decision": "GO"}, ("VALIDATION", ["input", "rationale"])),
        ({**current, "decision": "NO_GO", "rationale": "  "}, ("VALIDATION", ["input", "rationale"])),
        ({**current, "decision": "GO", "rationale": "r" * 10_001}, ("VALIDATION", ["input", "rationale"])),
        ({**current, "decision": "GO", "rationale": "Fits", "decisionDate": tomorrow},
         ("VALIDATION", ["input", "decisionDate"])),
        ({**current, "decision": "PENDING", "rationale": "Wait"}, ("VALIDATION", ["input", "rationale"])),
        ({**current, "decision": "PENDING", "decisionDate": "2026-01-01"}, ("VALIDATION", ["input", "decisionDate"])),
        ({**current, "updatedAt": "2020-01-01T00:00:00.000000Z", "decision": "GO", "rationale": "Fits"},
         ("CONFLICT", ["input", "updatedAt"])),
        ({"rowId": str(archived.id), "updatedAt": _wire(archived.updated_at), "decision": "GO", "rationale": "x"},
         ("VALIDATION", ["input", "rowId"])),
        ({"id": gid("Proposal", plan.id), "updatedAt": _wire(plan.updated_at), "decision": "GO", "rationale": "x"},
         ("NOT_FOUND", ["input", "id"])),
    ):
        payload = await _one(client, manager, DECIDE, values)
        assert _errors(payload) == [expected], values
    assert await rows.audit() == []

    payload = await _one(client, manager, DECIDE, {
        "id": gid("CapturePlan", plan.id), "updatedAt": _wire(plan.updated_at), "decision": "GO",
        "decisionDate": "2026-01-15", "rationale": "Incumbent weak on transition", "reason": "Gate review 2"})
    assert payload["errors"] == []
    decided = payload["capturePlan"]
    assert (decided["goNoGoDecision"], decided["decisionDate"], decided["decisionRationale"]) == (
        "GO", "2026-01-15", "Incumbent weak on transition")
    log, history = await expect_audit(
        rows.engine, rows.tenant.id, "capturePlanDecide", action="capture_plan.decided", entity_id=plan.id,
        history={"go_no_go_decision", "decision_date", "decision_rationale"}, user_id=manager.id, rows_in_request=1)
    assert log.change_reason == "Gate review 2" and log.permission_used == "capture_plan:write"
    assert {h.field_name: h.change_impact_level for h in history}["go_no_go_decision"] == "high"
    # The same decision again changes nothing: refused.
    payload = await _one(client, manager, DECIDE, {
        "rowId": str(plan.id), "updatedAt": decided["updatedAt"], "decision": "GO", "decisionDate": "2026-01-15",
        "rationale": "Incumbent weak on transition"})
    assert _errors(payload) == [("VALIDATION", ["input", "decision"])]
    # PENDING withdraws it (date and rationale cleared); without a date, GO is dated today.
    payload = await _one(client, manager, DECIDE, {
        "rowId": str(plan.id), "updatedAt": decided["updatedAt"], "decision": "PENDING"})
    assert (payload["capturePlan"]["decisionDate"], payload["capturePlan"]["decisionRationale"]) == (None, None)
    payload = await _one(client, manager, DECIDE, {
        "rowId": str(plan.id), "updatedAt": payload["capturePlan"]["updatedAt"], "decision": "NO_GO",
        "rationale": "Price to win out of reach"})
    assert payload["capturePlan"]["decisionDate"] is not None
    # A proposal manager holds no capture_plan:write.
    errors = await refused(client, await sign_in_as("Proposal Manager"), DECIDE, {"input": {
        "rowId": str(plan.id), "updatedAt": payload["capturePlan"]["updatedAt"], "decision": "GO", "rationale": "x"}})
    assert codes(errors) == ["FORBIDDEN"] and errors[0]["extensions"]["permission"] == "capture_plan:write"


async def test_proposal_permission_follows_the_project(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    mine, other = await rows.project(), await rows.project()
    theirs = await rows.make("proposals", {"opportunity_projects": other.id})
    scoped = await sign_in_as("Proposal Manager", on_project=mine.id)
    payload = await _one(client, scoped, CREATE, {
        "opportunityProjectRowId": str(mine.id), "proposalTitle": "Mine", "proposalManagerRowId": str(scoped.id)})
    assert payload["errors"] == []
    errors = await refused(client, scoped, CREATE, {"input": {
        "opportunityProjectRowId": str(other.id), "proposalTitle": "x", "proposalManagerRowId": str(scoped.id)}})
    assert codes(errors) == ["FORBIDDEN"] and errors[0]["extensions"]["permission"] == "proposal:write"
    for document, values in (
        (UPDATE, {"updatedAt": _wire(theirs.updated_at), "proposalTitle": "x"}),
        (ROW_SET, {"entry": {"ref": "L.1", "requirement": "r", "status": "OPEN"}}),
    ):
        errors = await refused(client, scoped, document, {"input": {"rowId": str(theirs.id), **values}})
        assert codes(errors) == ["FORBIDDEN"]
    viewer = await sign_in_as("Viewer")
    errors = await refused(client, viewer, STAGE_REMOVE, {"input": {"rowId": str(theirs.id), "stage": "RED_TEAM"}})
    assert codes(errors) == ["FORBIDDEN"]
    assert await rows.audit(theirs.id) == []
    assert len(await rows.denials()) == 4


@pytest.mark.validates("proposals.proposal_manager.active")
async def test_a_proposal_manager_is_an_active_person(app_engine: AsyncEngine, rows: Rows) -> None:
    inactive = await rows.make("users", is_active=False)
    for user in (inactive.id, rows.tenant.system_user_id):
        context = AuditContext(tenant_id=rows.tenant.id, user_id=None)
        async with UnitOfWork(app_engine, chain=TEST_AUDIT_CHAIN, context=context, redaction=REDACTION) as uow:
            with pytest.raises(Exception) as refusal:
                await validate(uow, "proposals", {"proposal_manager": user})
        expect_refusal(refusal, "proposals.proposal_manager.active", field="proposal_manager", code="VALIDATION")


async def test_a_retried_proposal_create_returns_the_first_proposal(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    manager = await sign_in_as("Proposal Manager")
    project = await rows.project()
    values = {"opportunityProjectRowId": str(project.id), "proposalTitle": "Volume II",
              "proposalManagerId": gid("User", manager.id), "teamMemberIds": [gid("User", manager.id)],
              "idempotencyKey": str(uuid.uuid4())}
    first_payload = await _one(client, manager, CREATE, values)
    again = await _one(client, manager, CREATE, values)
    assert first_payload["errors"] == again["errors"] == []
    assert first_payload["proposal"]["rowId"] == again["proposal"]["rowId"]
    assert len(await rows.all("SELECT 1 FROM proposals WHERE tenant_id = :t")) == 1


async def test_concurrent_edits_read_at_one_updated_at_let_one_through(
    client: httpx.AsyncClient, sign_in_as: SignIn, rows: Rows
) -> None:
    """With `updatedAt` given, entry edits are optimistic like any update: of two made from the same
    read, one applies and the other is CONFLICT with the proposal's current updatedAt."""
    manager = await sign_in_as("Proposal Manager")
    proposal = await rows.make("proposals", {"opportunity_projects": (await rows.project()).id})
    read = {"rowId": str(proposal.id), "updatedAt": _wire(proposal.updated_at)}
    payloads = await asyncio.gather(*(
        _one(client, manager, ROW_SET, {**read, "entry": {"ref": ref, "requirement": "r", "status": "OPEN"}})
        for ref in ("L.1", "L.2")
    ))
    outcomes = sorted(_errors(p)[0][0] if p["errors"] else "OK" for p in payloads)
    assert outcomes == ["CONFLICT", "OK"], payloads
    (refused_payload,) = [p for p in payloads if p["errors"]]
    stored = await rows.one("SELECT compliance_matrix, updated_at FROM proposals WHERE id = :p", p=proposal.id)
    assert len(stored.compliance_matrix["rows"]) == 1
    current = refused_payload["errors"][0]["currentUpdatedAt"]
    assert datetime.fromisoformat(current.replace("Z", "+00:00")) == stored.updated_at
