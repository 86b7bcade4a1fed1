"""Mutations of capture plans: create, update, archive (plans are evidence: never deleted).

Each field is one audited transaction (schema/writes.py). All three need capture_plan:write on
the plan's project (tenant-wide, or granted on that project). Updates and archives carry the
`updatedAt` the caller read: a stale one answers CONFLICT and changes nothing.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

import strawberry
from sqlalchemy import Table
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import CapturePlan as CapturePlanModel
from models import OpportunityProject as ProjectModel
from models.enums import CapturePlanStatus, GoNoGoDecision
from models.idempotency import idempotent
from resolvers.capture import mutations
from resolvers.opportunities.mutations import project_id_of
from schema.capture import CapturePlan
from schema.context import GraphQLContext, Info
from schema.errors import PAYLOAD_ERRORS, UserError, payload_or_errors
from schema.permissions import requires
from schema.writes import changes_of, describe_like, load, set_fields, write

__all__ = [
    "CaptureMutation",
    "CapturePlanArchiveInput",
    "CapturePlanArchivePayload",
    "CapturePlanCreateInput",
    "CapturePlanCreatePayload",
    "CapturePlanUpdateInput",
    "CapturePlanUpdatePayload",
]

_PLANS: Table = CapturePlanModel.__table__
_PROJECTS: Table = ProjectModel.__table__
_UNDER = ("input",)
_UPDATED_AT = "The updatedAt you read (exact to the microsecond); CONFLICT if the plan changed since."
_PERMISSIONS = (Permission.CAPTURE_PLAN_WRITE,)
_IDEMPOTENCY_KEY = (
    "1 to 200 characters, yours to choose (a UUID is best): a retry with the same key within 24 hours "
    "returns what the first request created, without creating again (docs/api.md, Idempotent creates)."
)


async def _project_named(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await project_id_of(context.loaders.db, _PROJECTS, value.opportunity_project_id)


async def _project_of_plan(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await project_id_of(context.loaders.db, _PLANS, value.id)


@strawberry.input(description="A new capture plan for an opportunity project (not archived).")
class CapturePlanCreateInput:
    opportunity_project_id: uuid.UUID = strawberry.field(description="The project's rowId.")
    plan_name: str = strawberry.field(description="1 to 255 characters.")
    status: CapturePlanStatus | None = strawberry.field(default=None, description="Default DRAFT.")
    go_no_go_decision: GoNoGoDecision | None = None
    decision_date: datetime.date | None = None
    decision_rationale: str | None = None
    win_strategy: str | None = None
    competitive_analysis: str | None = None
    external_data_considerations: str | None = None
    resource_requirements: str | None = None
    timeline: str | None = None
    external_deadlines: str | None = None
    external_data_impact_notes: str | None = None
    idempotency_key: str | None = strawberry.field(default=None, description=_IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to a capture plan: only the fields given change; null clears a field.")
class CapturePlanUpdateInput:
    id: uuid.UUID = strawberry.field(description="The plan's rowId.")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    plan_name: str | None = UNSET
    status: CapturePlanStatus | None = UNSET
    go_no_go_decision: GoNoGoDecision | None = UNSET
    decision_date: datetime.date | None = UNSET
    decision_rationale: str | None = UNSET
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
    id: uuid.UUID = strawberry.field(description="The plan's rowId.")
    updated_at: datetime.datetime = strawberry.field(description=_UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.type(description="What `capturePlanCreate` returns: its result, or the errors that prevented it.")
class CapturePlanCreatePayload:
    capture_plan: CapturePlan | None = strawberry.field(
        default=None, description="The capture plan created, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `capturePlanUpdate` returns: its result, or the errors that prevented it.")
class CapturePlanUpdatePayload:
    capture_plan: CapturePlan | None = strawberry.field(
        default=None, description="The capture plan as changed, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type(description="What `capturePlanArchive` returns: its result, or the errors that prevented it.")
class CapturePlanArchivePayload:
    capture_plan: CapturePlan | None = strawberry.field(
        default=None, description="The capture plan, now archived, as the caller may read it now;"
        " null when `errors` is not empty."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=PAYLOAD_ERRORS)


@strawberry.type
class CaptureMutation:
    @strawberry.mutation(
        description="Create a capture plan for an opportunity project.",
        extensions=[requires(Permission.CAPTURE_PLAN_WRITE, project=("input", _project_named))],
    )
    async def capture_plan_create(
        self,
        info: Info,
        input: Annotated[
            CapturePlanCreateInput,
            strawberry.argument(description="The project the plan is for and the plan's fields."),
        ],
    ) -> CapturePlanCreatePayload | None:
        async def work() -> CapturePlanCreatePayload:
            values = set_fields(input, skip=("idempotency_key",))
            plan_id = await write(
                info,
                lambda uow: idempotent(
                    uow, input.idempotency_key, mutation=info.field_name, values=values,
                    create=lambda: mutations.create_plan(uow, values),
                ),
                permissions=_PERMISSIONS,
            )
            return CapturePlanCreatePayload(capture_plan=await load(info, CapturePlan, plan_id))

        return await payload_or_errors(CapturePlanCreatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Change fields of a capture plan (not archived) read at updatedAt.",
        extensions=[requires(Permission.CAPTURE_PLAN_WRITE, project=("input", _project_of_plan))],
    )
    async def capture_plan_update(
        self,
        info: Info,
        input: Annotated[
            CapturePlanUpdateInput,
            strawberry.argument(description="The plan, the updatedAt read, and the fields to change."),
        ],
    ) -> CapturePlanUpdatePayload | None:
        async def work() -> CapturePlanUpdatePayload:
            changes = changes_of(input)
            plan_id = await write(
                info,
                lambda uow: mutations.update_plan(uow, input.id, input.updated_at, changes),
                permissions=_PERMISSIONS,
            )
            return CapturePlanUpdatePayload(capture_plan=await load(info, CapturePlan, plan_id))

        return await payload_or_errors(CapturePlanUpdatePayload, work(), under=_UNDER)

    @strawberry.mutation(
        description="Archive a capture plan read at updatedAt (capture plans are never deleted).",
        extensions=[requires(Permission.CAPTURE_PLAN_WRITE, project=("input", _project_of_plan))],
    )
    async def capture_plan_archive(
        self,
        info: Info,
        input: Annotated[CapturePlanArchiveInput, strawberry.argument(description="The plan and the updatedAt read.")],
    ) -> CapturePlanArchivePayload | None:
        async def work() -> CapturePlanArchivePayload:
            plan_id = await write(
                info,
                lambda uow: mutations.archive_plan(uow, input.id, input.updated_at),
                permissions=_PERMISSIONS,
                reason=input.reason,
            )
            return CapturePlanArchivePayload(capture_plan=await load(info, CapturePlan, plan_id))

        return await payload_or_errors(CapturePlanArchivePayload, work(), under=_UNDER)
