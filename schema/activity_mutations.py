"""Mutations of activities and their participants.

Activities: create, update, complete, reassign, cancel (never deleted: a cancelled activity is
kept, docs/decisions.md W14). Participants: add and remove (link rows, truly deleted). All need
`activity:write`; for an activity about a project, or about a capture plan, proposal or document
of a project, a grant on that project counts (as for reading it, docs/permissions.md).

An activity's target is polymorphic: `targetId` is the global id of an OpportunityProject,
Organization, Contact, CapturePlan, Proposal or Document, or `targetRowId` with `targetType`.
A participant is a User or a Contact: `participantId`, or `participantRowId` with `participantType`.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import strawberry
from sqlalchemy import Table, select
from strawberry import relay
from strawberry.types.unset import UNSET
from strawberry.utils.str_converters import to_camel_case

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from auth.permissions import Permission
from models import Activity as ActivityModel
from models import ActivityParticipant as ParticipantModel
from models.enums import ACTIVITY_ENTITY_TYPES, ActivityStatus, EntityType, ParticipantType, Priority
from models.errors import DomainError, Invalid, NotFound
from models.unit_of_work import UnitOfWork
from resolvers.activities import mutations
from resolvers.opportunities.mutations import project_id_of
from schema import mutation_kit
from schema.activities import Activity, ActivityParticipant
from schema.context import GraphQLContext
from schema.mutation_kit import (
    IDEMPOTENCY_KEY,
    UPDATED_AT,
    Args,
    Deleted,
    Entity,
    mutation,
    node_id,
    removes,
    resolve_ref_leniently,
    row_id,
    updates,
)
from schema.scalars import JSON
from schema.writes import describe_like

__all__ = [
    "ActivityCancelInput",
    "ActivityCompleteInput",
    "ActivityCreateInput",
    "ActivityMutation",
    "ActivityParticipantAddInput",
    "ActivityParticipantRemoveInput",
    "ActivityReassignInput",
    "ActivityUpdateInput",
]

_ACTIVITIES: Table = ActivityModel.__table__
_PARTICIPANTS: Table = ParticipantModel.__table__
_PERMISSION = Permission.ACTIVITY_WRITE

# GraphQL node type -> activities.entity_type, and back.
_TARGET_NODES: Mapping[str, str] = {
    "OpportunityProject": EntityType.OPPORTUNITY_PROJECT.value,
    "Organization": EntityType.ORGANIZATION.value,
    "Contact": EntityType.CONTACT.value,
    "CapturePlan": EntityType.CAPTURE_PLAN.value,
    "Proposal": EntityType.PROPOSAL.value,
    "Document": EntityType.DOCUMENT.value,
}
assert set(_TARGET_NODES.values()) == {t.value for t in ACTIVITY_ENTITY_TYPES}
_TARGET_TABLES: Mapping[str, str] = {
    EntityType.OPPORTUNITY_PROJECT.value: "opportunity_projects",
    EntityType.CAPTURE_PLAN.value: "capture_plans",
    EntityType.PROPOSAL.value: "proposals",
    EntityType.DOCUMENT.value: "documents",
}
_PARTICIPANT_NODES: Mapping[str, str] = {"User": ParticipantType.USER.value, "Contact": ParticipantType.CONTACT.value}

T = TypeVar("T")


# -- polymorphic references -----------------------------------------------------------------------


def _polymorphic(
    value: Any, name: str, nodes: Mapping[str, str], kinds: str, *, lenient: bool = False
) -> tuple[str, uuid.UUID] | None:
    """(kind, row id) from `<name>Id` (a global id of one of `nodes`) or `<name>RowId` with `<name>Type`.

    Exactly one of the two ids; with a global id, a `<name>Type` given must agree. Refusals name
    the field at fault (VALIDATION; NOT_FOUND for a global id of another type).
    """
    given = getattr(value, f"{name}_id", UNSET)
    raw = getattr(value, f"{name}_row_id", UNSET)
    kind = getattr(value, f"{name}_type", UNSET)
    kind = None if kind in (None, UNSET) else kind.value
    camel = to_camel_case(name)
    try:
        if given not in (None, UNSET) and raw not in (None, UNSET):
            raise Invalid(f"Give {camel}Id or {camel}RowId, not both.", field=f"{name}_id")
        if given not in (None, UNSET):
            found = nodes.get(given.type_name)
            if found is None:
                raise NotFound(f"{camel}Id must be the global id of one of: {kinds}.", field=f"{name}_id")
            if kind is not None and kind != found:
                raise Invalid(f"{camel}Type does not match the type of {camel}Id.", field=f"{name}_type")
            try:
                return found, uuid.UUID(given.node_id)
            except ValueError:
                raise NotFound(f"There is no record with that {camel}Id.", field=f"{name}_id") from None
        if raw not in (None, UNSET):
            if kind is None:
                raise Invalid(f"{camel}Type is required with {camel}RowId.", field=f"{name}_type")
            return kind, raw
        raise Invalid(f"Give {camel}Id or {camel}RowId.", field=f"{name}_id")
    except DomainError:
        if lenient:
            return None
        raise


async def _renamed(work: Awaitable[T], names: Mapping[str, str]) -> T:
    """Run `work`; a refusal on a column in `names` is reported on the input field it came from."""
    try:
        return await work
    except DomainError as exc:
        if exc.field is not None and exc.field in names:
            exc.field = names[exc.field]
        raise


async def _project_of_target(context: GraphQLContext, kind: str, entity_id: uuid.UUID) -> uuid.UUID | None:
    """The project whose grants count for an activity about (kind, entity_id); None: tenant-wide only."""
    table_name = _TARGET_TABLES.get(kind)
    if table_name is None:
        return None
    table = _ACTIVITIES.metadata.tables[table_name]
    return await project_id_of(context.loaders.db, table, entity_id)


async def _project_of_activity(context: GraphQLContext, activity_id: uuid.UUID | None) -> uuid.UUID | None:
    if activity_id is None:
        return None
    db = context.loaders.db
    row = (
        await db.execute(
            select(_ACTIVITIES.c.entity_type, _ACTIVITIES.c.entity_id).where(
                _ACTIVITIES.c.id == activity_id, _ACTIVITIES.c.tenant_id == db.tenant_id
            )
        )
    ).first()
    return None if row is None else await _project_of_target(context, row.entity_type, row.entity_id)


async def _new_target_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    found = _polymorphic(value, "target", _TARGET_NODES, "", lenient=True)
    return None if found is None else await _project_of_target(context, *found)


async def _target_activity_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await _project_of_activity(context, resolve_ref_leniently(value))


async def _referenced_activity_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    return await _project_of_activity(context, resolve_ref_leniently(value, "activity"))


async def _participant_project(context: GraphQLContext, value: Any) -> uuid.UUID | None:
    participant = resolve_ref_leniently(value)
    if participant is None:
        return None
    db = context.loaders.db
    activity = (
        await db.execute(
            select(_PARTICIPANTS.c.activity_id).where(
                _PARTICIPANTS.c.id == participant, _PARTICIPANTS.c.tenant_id == db.tenant_id
            )
        )
    ).scalar()
    return await _project_of_activity(context, activity)


_TARGET_KINDS = "OpportunityProject, Organization, Contact, CapturePlan, Proposal, Document"


# -- inputs ---------------------------------------------------------------------------------------


@strawberry.input(description="A new activity about a record: a project, organization, contact, capture plan, "
                  "proposal or document (the record's project open: not archived, not closed).")
class ActivityCreateInput:
    target_id: relay.GlobalID | None = strawberry.field(
        default=UNSET, description=f"The global id of the record the activity is about ({_TARGET_KINDS}); "
        "or give targetRowId and targetType instead."
    )
    target_row_id: uuid.UUID | None = strawberry.field(
        default=UNSET, description="The rowId of the record the activity is about, with targetType."
    )
    target_type: EntityType | None = strawberry.field(
        default=UNSET, description="The kind of record targetRowId names (with targetId it may be left out)."
    )
    activity_type: str = strawberry.field(description="What kind of activity (1 to 100 characters), e.g. meeting.")
    subject: str = strawberry.field(description="A one-line summary, 1 to 255 characters.")
    description: str | None = None
    activity_date: datetime.datetime | None = None
    due_date: datetime.datetime | None = strawberry.field(
        default=None, description="When it must be done by; not before activityDate."
    )
    assignee_id: relay.GlobalID | None = node_id("User", required=False)
    assignee_row_id: uuid.UUID | None = row_id("User")
    status: ActivityStatus | None = strawberry.field(
        default=None, description="PENDING (default), IN_PROGRESS or DEFERRED: complete or cancel it afterwards."
    )
    priority: Priority | None = strawberry.field(default=None, description="Default MEDIUM.")
    completion_percentage: int | None = strawberry.field(default=None, description="0 to 100 (default 0).")
    tags: list[str] | None = strawberry.field(
        default=None, description="At most 50 distinct labels, 1 to 100 characters."
    )
    custom_fields: JSON | None = strawberry.field(default=None, description="A JSON object.")
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Changes to an activity (not cancelled): only the fields given change; null clears.")
class ActivityUpdateInput:
    id: relay.GlobalID | None = node_id("Activity")
    row_id: uuid.UUID | None = row_id("Activity")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    activity_type: str | None = UNSET
    subject: str | None = UNSET
    description: str | None = UNSET
    activity_date: datetime.datetime | None = UNSET
    due_date: datetime.datetime | None = UNSET
    status: ActivityStatus | None = strawberry.field(
        default=UNSET, description="PENDING, IN_PROGRESS or DEFERRED; on a completed activity it reopens it "
        "(its completed date is cleared)."
    )
    priority: Priority | None = UNSET
    completion_percentage: int | None = strawberry.field(default=UNSET, description="0 to 100.")
    tags: list[str] | None = strawberry.field(default=UNSET, description="At most 50 distinct labels; null: none.")
    custom_fields: JSON | None = strawberry.field(default=UNSET, description="A JSON object; null: empty.")


describe_like(ActivityCreateInput, Activity)
describe_like(ActivityUpdateInput, Activity)


@strawberry.input(description="Mark an activity completed (it must be neither completed nor cancelled).")
class ActivityCompleteInput:
    id: relay.GlobalID | None = node_id("Activity")
    row_id: uuid.UUID | None = row_id("Activity")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    completed_date: datetime.datetime | None = strawberry.field(
        default=None, description="When it was done: default now; not in the future, not before activityDate."
    )
    completion_percentage: int | None = strawberry.field(
        default=None, description="How far it got, 0 to 100 (default 100)."
    )


@strawberry.input(description="Give an open activity (neither completed nor cancelled) to another user.")
class ActivityReassignInput:
    id: relay.GlobalID | None = node_id("Activity")
    row_id: uuid.UUID | None = row_id("Activity")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    assignee_id: relay.GlobalID | None = node_id(
        "User", required=False,
        description="The new assignee's global id (an active user); leave both out, or null, to unassign.",
    )
    assignee_row_id: uuid.UUID | None = mutation_kit.row_id("User")  # `row_id` is a field of this class


@strawberry.input(description="Cancel an activity that is neither completed nor cancelled: it is kept, as CANCELLED.")
class ActivityCancelInput:
    id: relay.GlobalID | None = node_id("Activity")
    row_id: uuid.UUID | None = row_id("Activity")
    updated_at: datetime.datetime = strawberry.field(description=UPDATED_AT)
    reason: str | None = strawberry.field(default=None, description="Recorded in the audit log (255 characters).")


@strawberry.input(description="A user or contact joins an activity (not cancelled), once.")
class ActivityParticipantAddInput:
    activity_id: relay.GlobalID | None = node_id("Activity")
    activity_row_id: uuid.UUID | None = row_id("Activity")
    participant_id: relay.GlobalID | None = strawberry.field(
        default=UNSET, description="The global id of the User or Contact; or participantRowId with participantType."
    )
    participant_row_id: uuid.UUID | None = strawberry.field(
        default=UNSET, description="The rowId of the user or contact, with participantType."
    )
    participant_type: ParticipantType | None = strawberry.field(
        default=UNSET, description="What participantRowId names (with participantId it may be left out)."
    )
    role: str | None = strawberry.field(default=None, description="Their part, e.g. organizer (50 characters).")
    response_status: str | None = strawberry.field(
        default=None, description="Their answer to the invitation, e.g. accepted (50 characters)."
    )
    idempotency_key: str | None = strawberry.field(default=None, description=IDEMPOTENCY_KEY)


@strawberry.input(description="Remove a participant from an activity (the link row is deleted; audited).")
class ActivityParticipantRemoveInput:
    id: relay.GlobalID | None = node_id("ActivityParticipant")
    row_id: uuid.UUID | None = row_id("ActivityParticipant")


# -- domain calls -----------------------------------------------------------------------------------

_ASSIGNEE = {"assigned_to": "assignee_id"}


async def _create(uow: UnitOfWork, args: Args[ActivityCreateInput]) -> uuid.UUID:
    found = _polymorphic(args.input, "target", _TARGET_NODES, _TARGET_KINDS)
    assert found is not None
    values = {k: v for k, v in args.values.items() if k not in ("target_id", "target_row_id", "target_type")}
    if "assignee_id" in values:
        values["assigned_to"] = values.pop("assignee_id")
    values["entity_type"], values["entity_id"] = found
    target = "target_row_id" if args.input.target_row_id not in (None, UNSET) else "target_id"
    return await _renamed(
        mutations.create_activity(uow, values),
        {**_ASSIGNEE, "entity_id": target, "entity_type": "target_type"},
    )


async def _complete(uow: UnitOfWork, args: Args[ActivityCompleteInput]) -> uuid.UUID:
    assert args.id is not None
    return await mutations.complete_activity(
        uow, args.id, args.updated_at,
        completed_date=args.input.completed_date, completion_percentage=args.input.completion_percentage,
    )


async def _reassign(uow: UnitOfWork, args: Args[ActivityReassignInput]) -> uuid.UUID:
    assert args.id is not None
    return await _renamed(
        mutations.reassign_activity(uow, args.id, args.updated_at, args.values.get("assignee_id")), _ASSIGNEE
    )


async def _add(uow: UnitOfWork, args: Args[ActivityParticipantAddInput]) -> uuid.UUID:
    found = _polymorphic(args.input, "participant", _PARTICIPANT_NODES, "User, Contact")
    assert found is not None
    values = {
        k: v for k, v in args.values.items() if k not in ("participant_id", "participant_row_id", "participant_type")
    }
    values["participant_type"], values["participant_id"] = found
    person = "participant_row_id" if args.input.participant_row_id not in (None, UNSET) else "participant_id"
    return await _renamed(mutations.add_participant(uow, values), {"participant_id": person})


async def _remove(uow: UnitOfWork, args: Args[ActivityParticipantRemoveInput]) -> uuid.UUID:
    assert args.id is not None
    return await mutations.remove_participant(uow, args.id)


@strawberry.type
class ActivityMutation:
    activity_create = mutation(
        "activityCreate",
        input=ActivityCreateInput,
        input_description="The record the activity is about and the activity's fields.",
        permission=_PERMISSION,
        project=("input", _new_target_project),
        run=_create,
        idempotent=True,
        returns=Entity(Activity, "activity created"),
        description="Create an activity about a record (its project open: not archived, not closed).",
    )
    activity_update = mutation(
        "activityUpdate",
        input=ActivityUpdateInput,
        input_description="The activity, the updatedAt read, and the fields to change.",
        permission=_PERMISSION,
        project=("input", _target_activity_project),
        run=updates(mutations.update_activity),
        returns=Entity(Activity, "activity as changed"),
        description="Change fields of an activity (not cancelled) read at updatedAt.",
    )
    activity_complete = mutation(
        "activityComplete",
        input=ActivityCompleteInput,
        input_description="The activity, the updatedAt read, when it was done and how far it got.",
        permission=_PERMISSION,
        project=("input", _target_activity_project),
        run=_complete,
        returns=Entity(Activity, "activity, now completed"),
        description="Mark an activity read at updatedAt completed, with its completed date and percentage.",
    )
    activity_reassign = mutation(
        "activityReassign",
        input=ActivityReassignInput,
        input_description="The activity, the updatedAt read, and its new assignee (none to unassign).",
        permission=_PERMISSION,
        project=("input", _target_activity_project),
        run=_reassign,
        returns=Entity(Activity, "activity as reassigned"),
        description="Give an open activity read at updatedAt to another active user, or to nobody.",
    )
    activity_cancel = mutation(
        "activityCancel",
        input=ActivityCancelInput,
        input_description="The activity and the updatedAt read.",
        permission=_PERMISSION,
        project=("input", _target_activity_project),
        run=removes(mutations.cancel_activity),
        returns=Entity(Activity, "activity, now cancelled"),
        description="Cancel an activity read at updatedAt (activities are never deleted: it is kept as CANCELLED).",
    )
    activity_participant_add = mutation(
        "activityParticipantAdd",
        input=ActivityParticipantAddInput,
        input_description="The activity and the user or contact joining it.",
        permission=_PERMISSION,
        project=("input", _referenced_activity_project),
        run=_add,
        idempotent=True,
        returns=Entity(ActivityParticipant, "participant added"),
        description="Add a user or contact to an activity (each takes part once).",
    )
    activity_participant_remove = mutation(
        "activityParticipantRemove",
        input=ActivityParticipantRemoveInput,
        input_description="The participant row to remove.",
        permission=_PERMISSION,
        project=("input", _participant_project),
        run=_remove,
        returns=Deleted(ActivityParticipant, "activity participant"),
        description="Remove a participant from an activity (a true delete; the audit row keeps it).",
    )

