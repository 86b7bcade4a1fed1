"""Matrix factories of the pursuit mutations: activities and participants, proposals and their
entries, and the go/no-go decision of a capture plan (tests/support/mutation_matrix.py).

Everything is built under `ctx.tenant`, and rows are named through `ctx.target` / `ctx.ref`, so the
cross-tenant test (built under another tenant) and both Relay id shapes are exercised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.support.mutation_matrix import Case, Factory, Kind, MatrixContext, matrix


def _activities(field: str, *, kind: Kind, action: str, history: set[str]) -> Callable[[Factory], Factory]:
    return matrix(field, kind=kind, table="activities", entity_type="activity", action=action,
                  permission="activity:write", denied_role="Viewer", history=history,
                  actor_roles=("Capture Manager",))


def _proposals(field: str, *, kind: Kind, action: str, history: set[str]) -> Callable[[Factory], Factory]:
    return matrix(field, kind=kind, table="proposals", entity_type="proposal", action=action,
                  permission="proposal:write", denied_role="BD Analyst", history=history,
                  actor_roles=("Proposal Manager",))


async def _activity(ctx: MatrixContext, **values: Any) -> Any:
    project = await ctx.make("opportunity_projects")
    return await ctx.make("activities", {"opportunity_projects": project.id}, **values)


async def _proposal(ctx: MatrixContext, **values: Any) -> Any:
    project = await ctx.make("opportunity_projects")
    return await ctx.make("proposals", {"opportunity_projects": project.id}, **values)


# -- activities --------------------------------------------------------------------------------------


@_activities("activityCreate", kind="create", action="CREATE", history={"subject", "activity_type"})
async def activity_create(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    return Case({"input": {
        **ctx.ref("target", project.id, node="OpportunityProject"), "targetType": "OPPORTUNITY_PROJECT",
        "activityType": "meeting", "subject": f"Matrix {uuid.uuid4().hex[:8]}",
    }}, tables=("opportunity_projects",))


@_activities("activityUpdate", kind="update", action="UPDATE", history={"subject"})
async def activity_update(ctx: MatrixContext) -> Case:
    row = await _activity(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "subject": "Changed"}}, entity_id=row.id)


@_activities("activityComplete", kind="update", action="activity.completed",
             history={"status", "completed_date", "completion_percentage"})
async def activity_complete(ctx: MatrixContext) -> Case:
    row = await _activity(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


@_activities("activityReassign", kind="update", action="activity.reassigned", history={"assigned_to"})
async def activity_reassign(ctx: MatrixContext) -> Case:
    row = await _activity(ctx)
    user = await ctx.user("BD Analyst")
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), **ctx.ref("assignee", user.id, node="User")}},
                entity_id=row.id, tables=("users",))


@_activities("activityCancel", kind="update", action="activity.cancelled", history={"status"})
async def activity_cancel(ctx: MatrixContext) -> Case:
    row = await _activity(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "reason": "Matrix"}}, entity_id=row.id)


@matrix("activityParticipantAdd", kind="create", table="activity_participants", entity_type="activity_participant",
        action="CREATE", permission="activity:write", denied_role="Viewer", actor_roles=("Capture Manager",),
        history={"participant_id", "participant_type"})
async def participant_add(ctx: MatrixContext) -> Case:
    activity = await _activity(ctx)
    contact = await ctx.make("contacts")
    return Case({"input": {
        **ctx.ref("activity", activity.id), **ctx.ref("participant", contact.id, node="Contact"),
        "participantType": "CONTACT", "role": "attendee",
    }}, tables=("activities", "contacts"))


@matrix("activityParticipantRemove", kind="delete", table="activity_participants",
        entity_type="activity_participant", action="DELETE", permission="activity:write", denied_role="Viewer",
        actor_roles=("Capture Manager",), history={"participant_id", "participant_type"},
        immutable="participants are link rows without updated_at: added and removed, never updated (W14)")
async def participant_remove(ctx: MatrixContext) -> Case:
    activity = await _activity(ctx)
    contact = await ctx.make("contacts")
    row = await ctx.make("activity_participants", {"activities": activity.id}, participant_type="contact",
                         participant_id=contact.id)
    return Case({"input": ctx.target(row.id)}, entity_id=row.id, tables=("activities",))


# -- proposals ---------------------------------------------------------------------------------------


@_proposals("proposalCreate", kind="create", action="CREATE", history={"proposal_title", "proposal_manager"})
async def proposal_create(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    manager = await ctx.user("Proposal Manager")
    return Case({"input": {
        **ctx.ref("opportunityProject", project.id), **ctx.ref("proposalManager", manager.id, node="User"),
        "proposalTitle": f"Matrix {uuid.uuid4().hex[:8]}",
    }}, tables=("opportunity_projects",))


@_proposals("proposalUpdate", kind="update", action="UPDATE", history={"proposal_title"})
async def proposal_update(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "proposalTitle": "Changed"}},
                entity_id=row.id)


@_proposals("proposalArchive", kind="archive", action="ARCHIVE", history={"archived_at"})
async def proposal_archive(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "reason": "Matrix"}}, entity_id=row.id)


@_proposals("proposalRestore", kind="restore", action="RESTORE", history={"archived_at"})
async def proposal_restore(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx, archived_at=datetime(2026, 1, 1, tzinfo=UTC))
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row)}}, entity_id=row.id)


_STAGES = '[{"stage": "red_team", "scheduled": "2026-03-01", "status": "scheduled"}]'
_MATRIX = '{"rows": [{"ref": "L.1", "requirement": "Page limit", "status": "open"}]}'
_LOG = '[{"versionNumber": 2, "changedFields": ["title"], "impact": "Retitled"}]'


@_proposals("proposalReviewStageSet", kind="update", action="proposal.review_stage.set", history={"review_stages"})
async def stage_set(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx)
    return Case({"input": {**ctx.target(row.id), "entry": {
        "stage": "PINK_TEAM", "scheduled": "2026-02-01", "status": "SCHEDULED"}}}, entity_id=row.id)


@_proposals("proposalReviewStageRemove", kind="update", action="proposal.review_stage.removed",
             history={"review_stages"})
async def stage_remove(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx, review_stages=_STAGES)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "stage": "RED_TEAM"}}, entity_id=row.id)


@_proposals("proposalComplianceEntrySet", kind="update", action="proposal.compliance_entry.set",
             history={"compliance_matrix"})
async def compliance_set(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx)
    return Case({"input": {**ctx.target(row.id), "entry": {
        "ref": "L.3.1", "requirement": "Technical approach", "status": "OPEN"}}}, entity_id=row.id)


@_proposals("proposalComplianceEntryRemove", kind="update", action="proposal.compliance_entry.removed",
             history={"compliance_matrix"})
async def compliance_remove(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx, compliance_matrix=_MATRIX)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "ref": "L.1"}}, entity_id=row.id)


@_proposals("proposalAmendmentImpactSet", kind="update", action="proposal.amendment_impact.set",
             history={"amendment_impact_log"})
async def impact_set(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx)
    return Case({"input": {**ctx.target(row.id), "entry": {
        "versionNumber": 3, "changedFields": ["response_deadline"], "impact": "Two more weeks"}}}, entity_id=row.id)


@_proposals("proposalAmendmentImpactRemove", kind="update", action="proposal.amendment_impact.removed",
             history={"amendment_impact_log"})
async def impact_remove(ctx: MatrixContext) -> Case:
    row = await _proposal(ctx, amendment_impact_log=_LOG)
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "versionNumber": 2}}, entity_id=row.id)


# -- capture plans: the go/no-go decision ----------------------------------------------------------------


@matrix("capturePlanDecide", kind="update", table="capture_plans", entity_type="capture_plan",
        action="capture_plan.decided", permission="capture_plan:write", denied_role="BD Analyst",
        history={"go_no_go_decision", "decision_date", "decision_rationale"}, actor_roles=("Capture Manager",))
async def plan_decide(ctx: MatrixContext) -> Case:
    project = await ctx.make("opportunity_projects")
    row = await ctx.make("capture_plans", {"opportunity_projects": project.id})
    return Case({"input": {**ctx.target(row.id), **ctx.updated_at(row), "decision": "GO",
                           "rationale": "Strong past performance"}}, entity_id=row.id)
