"""Mutations of capture plans: create, update, archive (plans are evidence: never deleted).

The go/no-go decision (decision, date, rationale) is not part of these inputs: it is recorded by
`capturePlanDecide` alone, its own audited change (schema/proposal_mutations.py).

Each field is one audited transaction (schema/writes.py). All three need capture_plan:write on
the plan's project (tenant-wide, or granted on that project). Updates and archives carry the
`updatedAt` the caller read: a stale one answers CONFLICT and changes nothing.
"""

from __future__ import annotations

import datetime
import uuid

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import CapturePlan as CapturePlanModel
from models import OpportunityProject as ProjectModel
from models.enums import CapturePlanStatus
from resolvers.capture import mutations
from schema.capture import CapturePlan
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Entity,
    creates,
    mutation,
    ref_id,
    ref_project,
    ref_row_id,
    removes,
    target_project,
    updates,
)
from schema.writes import describe_like

__all__ = [
    "CaptureMutation",
    "CapturePlanArchiveInput",
    "CapturePlanCreateInput",
    "CapturePlanUpdateInput",
]

_PLANS: Table = CapturePlanModel.__table__
_PROJECTS: Table = ProjectModel.__table__


@strawberry.input(description="A new capture plan for an opportunity project (not archived).")
class CapturePlanCreateInput:
    opportunity_project_id: relay.GlobalID | None = ref_id("OpportunityProject")
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    plan_name: str = strawberry.field(description="1 to 255 characters.")
    status: CapturePlanStatus | None = strawberry.field(default=None, description="Default DRAFT.")
    win_strategy: str | None = None
    competitive_analysis: str | None = None
    external_data_considerations: str | None = None
    resource_requirements: str | None = None
    timeline: str | None = None
    external_deadlines: str | None = None
    external_data_impact_notes: str | None = None
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a capture plan: only the fields given change; null clears a field.")
class CapturePlanUpdateInput:
    id: relay.GlobalID | None = ref_id("CapturePlan")
    row_id: uuid.UUID | None = ref_row_id("CapturePlan")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    plan_name: str | None = UNSET
    status: CapturePlanStatus | None = UNSET
    win_strategy: str | None = UNSET
    competitive_analysis: str | None = UNSET
    external_data_considerations: str | None = UNSET
    resource_requirements: str | None = UNSET
    timeline: str | None = UNSET
    external_deadlines: str | None = UNSET
    external_data_impact_notes: str | None = UNSET


describe_like(CapturePlanCreateInput, CapturePlan)
describe_like(CapturePlanUpdateInput, CapturePlan)


@strawberry.input(description="Archive a capture plan: it is kept (evidence) and hidden from default lists.")
class CapturePlanArchiveInput:
    id: relay.GlobalID | None = ref_id("CapturePlan")
    row_id: uuid.UUID | None = ref_row_id("CapturePlan")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.type
class CaptureMutation:
    capture_plan_create = mutation(
        "capturePlanCreate",
        input=CapturePlanCreateInput,
        input_description="The project the plan is for and the plan's fields.",
        permission=Permission.CAPTURE_PLAN_WRITE,
        project=ref_project("opportunity_project", _PROJECTS),
        run=creates(mutations.create_plan),
        idempotent=True,
        returns=Entity(CapturePlan, "capture plan created"),
        description="Create a capture plan for an opportunity project.",
    )
    capture_plan_update = mutation(
        "capturePlanUpdate",
        input=CapturePlanUpdateInput,
        input_description="The plan, the updatedAt read, and the fields to change.",
        permission=Permission.CAPTURE_PLAN_WRITE,
        project=target_project(_PLANS),
        run=updates(mutations.update_plan),
        returns=Entity(CapturePlan, "capture plan as changed"),
        description="Change fields of a capture plan (not archived) read at updatedAt.",
    )
    capture_plan_archive = mutation(
        "capturePlanArchive",
        input=CapturePlanArchiveInput,
        input_description="The plan and the updatedAt read.",
        permission=Permission.CAPTURE_PLAN_WRITE,
        project=target_project(_PLANS),
        run=removes(mutations.archive_plan),
        returns=Entity(CapturePlan, "capture plan, now archived"),
        description="Archive a capture plan read at updatedAt (capture plans are never deleted).",
    )
