"""Mutations of opportunity projects and their field overrides.

Each field is one audited transaction (schema/writes.py): the audit trail records every row it
changes, and its payload reads the committed state. Permissions, declared on the fields:

    opportunityProjectCreate            opportunity:write (tenant-wide: there is no project yet)
    opportunityProjectUpdate            opportunity:write on the project
    opportunityProjectArchive           opportunity:archive on the project
    opportunityProjectOverride{Create,Update,Delete}   opportunity:write on the project
    any score field in the input        opportunity.score:write as well (on the project)

Updates, archives and deletes carry the `updatedAt` the caller read: a stale one answers CONFLICT
and changes nothing.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any

import strawberry
from sqlalchemy import Table
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import OpportunityProject as ProjectModel
from models import OpportunityProjectOverride as OverrideModel
from models.enums import PipelineStage, Priority, ProjectStatus
from resolvers.opportunities import mutations
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Deleted,
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
from schema.opportunities import OpportunityProject, OpportunityProjectOverride
from schema.scalars import JSON
from schema.writes import describe_like, requires_for_input

__all__ = [
    "OpportunitiesMutation",
    "OpportunityProjectArchiveInput",
    "OpportunityProjectCreateInput",
    "OpportunityProjectOverrideCreateInput",
    "OpportunityProjectOverrideDeleteInput",
    "OpportunityProjectOverrideUpdateInput",
    "OpportunityProjectUpdateInput",
]

_PROJECTS: Table = ProjectModel.__table__
_OVERRIDES: Table = OverrideModel.__table__
_SCORE = "0 to 100, two decimal places; needs opportunity.score:write."


# -- projects -------------------------------------------------------------------------------------


@strawberry.input(description="A new opportunity project.")
class OpportunityProjectCreateInput:
    project_name: str = strawberry.field(description="1 to 255 characters.")
    internal_reference_number: str | None = None
    external_source_id: relay.GlobalID | None = ref_id(
        "ExternalOpportunitySource",
        required=False,
        description="The source the opportunity comes from (its global id; or externalSourceRowId): the project "
        "is then a reference to that source's opportunity, stored with syncStatus PENDING until the source's "
        "next sync fills it. Left out: the tenant's Manual entry source (a manual entry, syncStatus MANUAL).",
    )
    external_source_row_id: uuid.UUID | None = ref_row_id("ExternalOpportunitySource")
    external_opportunity_id: str | None = strawberry.field(
        default=None,
        description="The opportunity's id at its source: required with externalSourceId; for a manual "
        "entry MANUAL-<uuid> unless given. Unique per source (CONFLICT).",
    )
    external_opportunity_url: str | None = None
    solicitation_number: str | None = None
    agency_name: str | None = None
    contracting_office: str | None = None
    title: str | None = None
    description: str | None = None
    project_status: ProjectStatus | None = strawberry.field(default=None, description="Default ACTIVE.")
    pipeline_stage: PipelineStage | None = strawberry.field(default=None, description="Default PHASE_0.")
    priority_level: Priority | None = strawberry.field(default=None, description="Default MEDIUM.")
    win_probability_score: Decimal | None = strawberry.field(default=None, description=_SCORE)
    strategic_value_score: Decimal | None = strawberry.field(default=None, description=_SCORE)
    pursuit_health_score: Decimal | None = strawberry.field(default=None, description=_SCORE)
    assigned_capture_manager: uuid.UUID | None = strawberry.field(default=None, description="A user's rowId.")
    assigned_proposal_manager: uuid.UUID | None = strawberry.field(default=None, description="A user's rowId.")
    assigned_team_members: list[uuid.UUID] | None = strawberry.field(default=None, description="Users' rowIds.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a project: only the fields given change; null clears a field.")
class OpportunityProjectUpdateInput:
    id: relay.GlobalID | None = ref_id("OpportunityProject")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    project_name: str | None = UNSET
    internal_reference_number: str | None = UNSET
    external_opportunity_url: str | None = UNSET
    solicitation_number: str | None = UNSET
    agency_name: str | None = UNSET
    contracting_office: str | None = UNSET
    title: str | None = UNSET
    description: str | None = UNSET
    project_status: ProjectStatus | None = UNSET
    pipeline_stage: PipelineStage | None = UNSET
    priority_level: Priority | None = UNSET
    win_probability_score: Decimal | None = strawberry.field(default=UNSET, description=_SCORE)
    strategic_value_score: Decimal | None = strawberry.field(default=UNSET, description=_SCORE)
    pursuit_health_score: Decimal | None = strawberry.field(default=UNSET, description=_SCORE)
    assigned_capture_manager: uuid.UUID | None = strawberry.field(
        default=UNSET, description="The capture manager's user rowId; null: nobody."
    )
    assigned_proposal_manager: uuid.UUID | None = strawberry.field(
        default=UNSET, description="The proposal manager's user rowId; null: nobody."
    )
    assigned_team_members: list[uuid.UUID] | None = UNSET


describe_like(OpportunityProjectCreateInput, OpportunityProject)
describe_like(OpportunityProjectUpdateInput, OpportunityProject)


@strawberry.input(description="Archive a project: it is kept (evidence) and hidden from default lists.")
class OpportunityProjectArchiveInput:
    id: relay.GlobalID | None = ref_id("OpportunityProject")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


# -- overrides ------------------------------------------------------------------------------------


@strawberry.input(description="A local value that wins over the source's value of one project field.")
class OpportunityProjectOverrideCreateInput:
    opportunity_project_id: relay.GlobalID | None = ref_id("OpportunityProject")
    opportunity_project_row_id: uuid.UUID | None = ref_row_id("OpportunityProject")
    field_name: str = strawberry.field(
        description="One of the effective fields, by column name: title, description, solicitation_status, "
        "set_aside_type, naics_codes, estimated_value_min, estimated_value_max, posting_date, "
        "response_due_date, place_of_performance. One override per project and field (CONFLICT)."
    )
    override_value: JSON | None = strawberry.field(
        default=None,
        description="Readable as the field's type (decimals as strings such as \"1250000.00\", dates as "
        "YYYY-MM-DD, instants ISO 8601 with an offset); null: the field has no value."
    )
    override_reason: str | None = None
    is_active: bool | None = strawberry.field(default=True, description="Default true.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to an override: only the fields given change.")
class OpportunityProjectOverrideUpdateInput:
    id: relay.GlobalID | None = ref_id("OpportunityProjectOverride")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProjectOverride")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    override_value: JSON | None = UNSET
    override_reason: str | None = UNSET
    is_active: bool | None = UNSET


describe_like(OpportunityProjectOverrideCreateInput, OpportunityProjectOverride)
describe_like(OpportunityProjectOverrideUpdateInput, OpportunityProjectOverride)


@strawberry.input(description="Delete an override: the field's effective value falls back to the source's.")
class OpportunityProjectOverrideDeleteInput:
    id: relay.GlobalID | None = ref_id("OpportunityProjectOverride")
    row_id: uuid.UUID | None = ref_row_id("OpportunityProjectOverride")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)


def _score_permissions(value: Any, *, nulls: bool) -> tuple[Permission, ...]:
    for name in mutations.SCORE_FIELDS:
        given = getattr(value, name, UNSET)
        if given is not UNSET and (nulls or given is not None):
            return (Permission.OPPORTUNITY_WRITE, Permission.OPPORTUNITY_SCORE_WRITE)
    return (Permission.OPPORTUNITY_WRITE,)


_PROJECT_INPUT = target_project(_PROJECTS)
_OVERRIDE_INPUT = target_project(_OVERRIDES)


@strawberry.type
class OpportunitiesMutation:
    opportunity_project_create = mutation(
        "opportunityProjectCreate",
        input=OpportunityProjectCreateInput,
        input_description="The new project's fields.",
        permission=Permission.OPPORTUNITY_WRITE,
        extensions=[requires_for_input(Permission.OPPORTUNITY_SCORE_WRITE, mutations.SCORE_FIELDS, nulls=False)],
        audit_permissions=lambda value: _score_permissions(value, nulls=False),
        run=creates(mutations.create_project),
        idempotent=True,
        returns=Entity(OpportunityProject, "opportunity project created"),
        description="Create an opportunity project (a manual entry unless a source is named).",
    )
    opportunity_project_update = mutation(
        "opportunityProjectUpdate",
        input=OpportunityProjectUpdateInput,
        input_description="The project, the updatedAt read, and the fields to change.",
        permission=Permission.OPPORTUNITY_WRITE,
        project=_PROJECT_INPUT,
        extensions=[
            requires_for_input(Permission.OPPORTUNITY_SCORE_WRITE, mutations.SCORE_FIELDS, project=_PROJECT_INPUT)
        ],
        audit_permissions=lambda value: _score_permissions(value, nulls=True),
        run=updates(mutations.update_project),
        returns=Entity(OpportunityProject, "opportunity project as changed"),
        description="Change fields of an opportunity project (not archived) read at updatedAt.",
    )
    opportunity_project_archive = mutation(
        "opportunityProjectArchive",
        input=OpportunityProjectArchiveInput,
        input_description="The project and the updatedAt read.",
        permission=Permission.OPPORTUNITY_ARCHIVE,
        project=_PROJECT_INPUT,
        run=removes(mutations.archive_project),
        returns=Entity(OpportunityProject, "opportunity project, now archived"),
        description="Archive an opportunity project read at updatedAt (projects are never deleted).",
    )
    opportunity_project_override_create = mutation(
        "opportunityProjectOverrideCreate",
        input=OpportunityProjectOverrideCreateInput,
        input_description="The project, the field to override, its value and the reason.",
        permission=Permission.OPPORTUNITY_WRITE,
        project=ref_project("opportunity_project", _PROJECTS),
        run=creates(mutations.create_override),
        idempotent=True,
        returns=Entity(OpportunityProjectOverride, "override created"),
        description="Override one field of a project with a local value.",
    )
    opportunity_project_override_update = mutation(
        "opportunityProjectOverrideUpdate",
        input=OpportunityProjectOverrideUpdateInput,
        input_description="The override, the updatedAt read, and the fields to change.",
        permission=Permission.OPPORTUNITY_WRITE,
        project=_OVERRIDE_INPUT,
        run=updates(mutations.update_override),
        returns=Entity(OpportunityProjectOverride, "override as changed"),
        description="Change an override read at updatedAt (its value, reason, or whether it is active).",
    )
    opportunity_project_override_delete = mutation(
        "opportunityProjectOverrideDelete",
        input=OpportunityProjectOverrideDeleteInput,
        input_description="The override and the updatedAt read.",
        permission=Permission.OPPORTUNITY_WRITE,
        project=_OVERRIDE_INPUT,
        run=removes(mutations.delete_override),
        returns=Deleted(OpportunityProjectOverride, "override"),
        description="Delete an override read at updatedAt.",
    )
