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
from typing import Annotated, Any

import strawberry
from sqlalchemy import Table
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import OpportunityProject as ProjectModel
from models import OpportunityProjectOverride as OverrideModel
from models.enums import PipelineStage, Priority, ProjectStatus
from models.idempotency import idempotent
from resolvers.opportunities import mutations
from schema.context import GraphQLContext, Info
from schema.errors import PAYLOAD_ERRORS, UserError, payload_or_errors
from schema.opportunities import OpportunityProject, OpportunityProjectOverride
from schema.permissions import requires
from schema.scalars import JSON
from schema.writes import changes_of, describe_like, load, requires_for_input, set_fields, write

__all__ = [
    "OpportunitiesMutation",
    "OpportunityProjectArchiveInput",
    "OpportunityProjectArchivePayload",
    "OpportunityProjectCreateInput",
    "OpportunityProjectCreatePayload",
    "OpportunityProjectOverrideCreateInput",
    "OpportunityProjectOverrideCreatePayload",
    "OpportunityProjectOverrideDeleteInput",
    "OpportunityProjectOverrideDeletePayload",
    "OpportunityProjectOverrideUpdateInput",
    "OpportunityProjectOverrideUpdatePayload",
    "OpportunityProjectUpdateInput",
    "OpportunityProjectUpdatePayload",
]

_PROJECTS: Table = ProjectModel.__table__
_OVERRIDES: Table = OverrideModel.__table__
_UNDER = ("input",)
_UPDATED_AT = "The updatedAt you read (exact to the microsecond); CONFLICT if the row changed since."
_SCORE = "0 to 100, two decimal places; needs opportunity.score:write."
_IDEMPOTENCY_KEY = (
    "1 to 200 characters, yours to choose (a UUID is best): a retry with the same key within 24 hours "
    "returns what the first request created, without creating again (docs/api.md, Idempotent creates)."
)


# -- permission lookups: the project the input's target belongs to ----------------------------------


async def _project_of_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await mutations.project_id_of(context.loaders.db, _PROJECTS, value.id)


async def _project_named(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await mutations.project_id_of(context.loaders.db, _PROJECTS, value.opportunity_project_id)


async def _project_of_override(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await mutations.project_id_of(context.loaders.db, _OVERRIDES, value.id)


# -- projects -------------------------------------------------------------------------------------


@strawberry.input(description="A new opportunity project.")
class OpportunityProjectCreateInput:
    project_name: str = strawberry.field(description="1 to 255 characters.")
    internal_reference_number: str | None = None
    external_source_id: uuid.UUID | None = strawberry.field(
        default=None,
        description="The source the opportunity comes from; left out: the tenant's Manual entry source "
        "(the project is then a manual entry).",
    )
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
    idempotency_key: str | None = strawberry.field(default=None, description=_IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a project: only the fields given change; null clears a field.")
class OpportunityProjectUpdateInput:
    id: uuid.UUID = strawberry.field(description="The project's rowId.")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
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
    id: uuid.UUID = strawberry.field(description="The project's rowId.")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.type(description="What `opportunityProjectCreate` returns: its result, or the errors that prevented it.")
class OpportunityProjectCreatePayload:
    opportunity_project: OpportunityProject | None = strawberry.field(
        default=None, description="The opportunity project created, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `opportunityProjectUpdate` returns: its result, or the errors that prevented it.")
class OpportunityProjectUpdatePayload:
    opportunity_project: OpportunityProject | None = strawberry.field(
        default=None, description="The opportunity project as changed, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `opportunityProjectArchive` returns: its result, or the errors that prevented it.")
class OpportunityProjectArchivePayload:
    opportunity_project: OpportunityProject | None = strawberry.field(
        default=None, description="The opportunity project, now archived, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


# -- overrides ------------------------------------------------------------------------------------


@strawberry.input(description="A local value that wins over the source's value of one project field.")
class OpportunityProjectOverrideCreateInput:
    opportunity_project_id: uuid.UUID = strawberry.field(description="The project's rowId.")
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
    idempotency_key: str | None = strawberry.field(default=None, description=_IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to an override: only the fields given change.")
class OpportunityProjectOverrideUpdateInput:
    id: uuid.UUID = strawberry.field(description="The override's rowId.")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    override_value: JSON | None = UNSET
    override_reason: str | None = UNSET
    is_active: bool | None = UNSET


describe_like(OpportunityProjectOverrideCreateInput, OpportunityProjectOverride)
describe_like(OpportunityProjectOverrideUpdateInput, OpportunityProjectOverride)


@strawberry.input(description="Delete an override: the field's effective value falls back to the source's.")
class OpportunityProjectOverrideDeleteInput:
    id: uuid.UUID = strawberry.field(description="The override's rowId.")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)


@strawberry.type(
    description="What `opportunityProjectOverrideCreate` returns: its result, or the errors that prevented it."
)
class OpportunityProjectOverrideCreatePayload:
    opportunity_project_override: OpportunityProjectOverride | None = strawberry.field(
        default=None, description="The override created, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(
    description="What `opportunityProjectOverrideUpdate` returns: its result, or the errors that prevented it."
)
class OpportunityProjectOverrideUpdatePayload:
    opportunity_project_override: OpportunityProjectOverride | None = strawberry.field(
        default=None, description="The override as changed, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(
    description="What `opportunityProjectOverrideDelete` returns: its result, or the errors that prevented it."
)
class OpportunityProjectOverrideDeletePayload:
    deleted_id: uuid.UUID | None = strawberry.field(default=None, description="The deleted override's rowId.")
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


def _score_permissions(value: Any, *, nulls: bool) -> tuple[Permission, ...]:
    for name in mutations.SCORE_FIELDS:
        given = getattr(value, name, UNSET)
        if given is not UNSET and (nulls or given is not None):
            return (Permission.OPPORTUNITY_WRITE, Permission.OPPORTUNITY_SCORE_WRITE)
    return (Permission.OPPORTUNITY_WRITE,)


_PROJECT_INPUT = ("input", _project_of_project)
_OVERRIDE_INPUT = ("input", _project_of_override)


@strawberry.type
class OpportunitiesMutation:
    @strawberry.mutation(
        description="Create an opportunity project (a manual entry unless a source is named).",
        extensions=[
            requires(Permission.OPPORTUNITY_WRITE),
            requires_for_input(Permission.OPPORTUNITY_SCORE_WRITE, mutations.SCORE_FIELDS, nulls=False),
        ],
    )
    async def opportunity_project_create(
        self,
        info: Info,
        input: Annotated[OpportunityProjectCreateInput, strawberry.argument(description="The new project's fields.")],
    ) -> OpportunityProjectCreatePayload | None:
        async def work() -> OpportunityProjectCreatePayload:
            values = set_fields(input, skip=("idempotency_key",))
            project_id = await write(
                info,
                lambda uow: idempotent(
                    uow, input.idempotency_key, mutation=info.field_name, values=values,
                    create=lambda: mutations.create_project(uow, values),
                ),
                permissions=_score_permissions(input, nulls=False),
            )
            return OpportunityProjectCreatePayload(opportunity_project=await load(info, OpportunityProject, project_id))

        return await payload_or_errors(OpportunityProjectCreatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Change fields of an opportunity project (not archived) read at updatedAt.",
        extensions=[
            requires(Permission.OPPORTUNITY_WRITE, project=_PROJECT_INPUT),
            requires_for_input(Permission.OPPORTUNITY_SCORE_WRITE, mutations.SCORE_FIELDS, project=_PROJECT_INPUT),
        ],
    )
    async def opportunity_project_update(
        self,
        info: Info,
        input: Annotated[
            OpportunityProjectUpdateInput,
            strawberry.argument(description="The project, the updatedAt read, and the fields to change."),
        ],
    ) -> OpportunityProjectUpdatePayload | None:
        async def work() -> OpportunityProjectUpdatePayload:
            changes = changes_of(input)
            project_id = await write(
                info,
                lambda uow: mutations.update_project(uow, input.id, input.updated_at, changes),
                permissions=_score_permissions(input, nulls=True),
            )
            return OpportunityProjectUpdatePayload(opportunity_project=await load(info, OpportunityProject, project_id))

        return await payload_or_errors(OpportunityProjectUpdatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Archive an opportunity project read at updatedAt (projects are never deleted).",
        extensions=[requires(Permission.OPPORTUNITY_ARCHIVE, project=_PROJECT_INPUT)],
    )
    async def opportunity_project_archive(
        self,
        info: Info,
        input: Annotated[
            OpportunityProjectArchiveInput, strawberry.argument(description="The project and the updatedAt read.")
        ],
    ) -> OpportunityProjectArchivePayload | None:
        async def work() -> OpportunityProjectArchivePayload:
            project_id = await write(
                info,
                lambda uow: mutations.archive_project(uow, input.id, input.updated_at),
                permissions=(Permission.OPPORTUNITY_ARCHIVE,),
                reason=input.reason,
            )
            return OpportunityProjectArchivePayload(
                opportunity_project=await load(info, OpportunityProject, project_id)
            )

        return await payload_or_errors(OpportunityProjectArchivePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Override one field of a project with a local value.",
        extensions=[requires(Permission.OPPORTUNITY_WRITE, project=("input", _project_named))],
    )
    async def opportunity_project_override_create(
        self,
        info: Info,
        input: Annotated[
            OpportunityProjectOverrideCreateInput,
            strawberry.argument(description="The project, the field to override, its value and the reason."),
        ],
    ) -> OpportunityProjectOverrideCreatePayload | None:
        async def work() -> OpportunityProjectOverrideCreatePayload:
            values = set_fields(input, skip=("idempotency_key",))
            override_id = await write(
                info,
                lambda uow: idempotent(
                    uow, input.idempotency_key, mutation=info.field_name, values=values,
                    create=lambda: mutations.create_override(uow, values),
                ),
                permissions=(Permission.OPPORTUNITY_WRITE,),
            )
            return OpportunityProjectOverrideCreatePayload(
                opportunity_project_override=await load(info, OpportunityProjectOverride, override_id)
            )

        return await payload_or_errors(OpportunityProjectOverrideCreatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Change an override read at updatedAt (its value, reason, or whether it is active).",
        extensions=[requires(Permission.OPPORTUNITY_WRITE, project=_OVERRIDE_INPUT)],
    )
    async def opportunity_project_override_update(
        self,
        info: Info,
        input: Annotated[
            OpportunityProjectOverrideUpdateInput,
            strawberry.argument(description="The override, the updatedAt read, and the fields to change."),
        ],
    ) -> OpportunityProjectOverrideUpdatePayload | None:
        async def work() -> OpportunityProjectOverrideUpdatePayload:
            changes = changes_of(input)
            override_id = await write(
                info,
                lambda uow: mutations.update_override(uow, input.id, input.updated_at, changes),
                permissions=(Permission.OPPORTUNITY_WRITE,),
            )
            return OpportunityProjectOverrideUpdatePayload(
                opportunity_project_override=await load(info, OpportunityProjectOverride, override_id)
            )

        return await payload_or_errors(OpportunityProjectOverrideUpdatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Delete an override read at updatedAt.",
        extensions=[requires(Permission.OPPORTUNITY_WRITE, project=_OVERRIDE_INPUT)],
    )
    async def opportunity_project_override_delete(
        self,
        info: Info,
        input: Annotated[
            OpportunityProjectOverrideDeleteInput,
            strawberry.argument(description="The override and the updatedAt read."),
        ],
    ) -> OpportunityProjectOverrideDeletePayload | None:
        async def work() -> OpportunityProjectOverrideDeletePayload:
            deleted = await write(
                info,
                lambda uow: mutations.delete_override(uow, input.id, input.updated_at),
                permissions=(Permission.OPPORTUNITY_WRITE,),
            )
            return OpportunityProjectOverrideDeletePayload(deleted_id=deleted)

        return await payload_or_errors(OpportunityProjectOverrideDeletePayload, work(), under=_UNDER)
