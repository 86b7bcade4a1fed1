"""Activities and their participants.

An activity is about one record: `target` resolves its polymorphic (entity_type, entity_id) pair
to the `Node` of the allowed set `ACTIVITY_ENTITY_TYPES` (project, organization, contact, capture
plan, proposal, document); `activities_of(...)` gives those types their reverse `activities` list.
A participant is a user or a contact (`participant`, polymorphic on participant_type);
`participations_of(...)` gives User and Contact their reverse list.
`target` and `participant` are null once the record is gone, exactly as for another tenant's id.
"""

from __future__ import annotations

import datetime
import uuid
from enum import Enum
from typing import Any

import strawberry
from sqlalchemy import Table
from strawberry import relay

import models.enums as enums
import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models import Activity as ActivityModel
from models import ActivityParticipant as ParticipantModel
from models import ExternalDataChange as ExternalDataChangeModel
from models import User as UserModel
from models.enums import ACTIVITY_ENTITY_TYPES, ActivityStatus, ParticipantType
from schema.audit import EntityType
from schema.entities import history, targets
from schema.fields import enum_column
from schema.filters import BooleanFilter, DateTimeFilter, EnumFilter, StringFilter, UUIDFilter
from schema.node import EntityNode, TenantOwned
from schema.pagination import OrderDirection
from schema.relations import polymorphic, root_list, to_many, to_one
from schema.scalars import JSON

__all__ = [
    "ActivitiesQuery",
    "Activity",
    "ActivityFilter",
    "ActivityOrder",
    "ActivityOrderField",
    "ActivityParticipant",
    "ActivityStatus",
    "ParticipantType",
    "Priority",
    "activities_of",
    "participations_of",
]

_ACTIVITIES: Table = ActivityModel.__table__
_PARTICIPANTS: Table = ParticipantModel.__table__
_CHANGES: Table = ExternalDataChangeModel.__table__
_USERS: Table = UserModel.__table__
USER = ("User", "schema.identity")
ACTIVITY = ("Activity", "schema.activities")
PARTICIPANT = ("ActivityParticipant", "schema.activities")
CHANGE = ("ExternalDataChange", "schema.external_data")

# Newest first; PostgreSQL puts NULL first in a descending order, so undated activities lead.
_BY_DATE = (("activity_date", True),)

Priority = enums.Priority  # the GraphQL enum registered by schema/opportunities.py (see the imports)


def activities_of(entity_type: enums.EntityType, *, description: str | None = None) -> Any:
    """`activities` on a type activities can be about: those whose target is the parent, newest first."""
    return to_many(
        ACTIVITY, _ACTIVITIES, "entity_id", order=_BY_DATE,
        where=lambda t: [t.c.entity_type == entity_type.value], where_key=f"entity_type={entity_type.value}",
        description=description
        or "Activities about this record, by activity date, newest first (undated ones first).",
    )


def participations_of(kind: enums.ParticipantType, *, description: str | None = None) -> Any:
    """`activityParticipations` on User or Contact: the participant rows that name the parent,
    most recently added first."""
    return to_many(
        PARTICIPANT, _PARTICIPANTS, "participant_id", order=(("added_at", True),),
        where=lambda t: [t.c.participant_type == kind.value], where_key=f"participant_type={kind.value}",
        description=description or "Activities this record takes part in (participant rows), newest first.",
    )


@strawberry.type(description="Something done or to do about a record: a call, a meeting, a deadline, a task.")
class Activity(EntityNode, TenantOwned, relay.Node):
    _table = _ACTIVITIES
    _descriptions = {
        "entity_type": "The kind of record the activity is about (see `target`).",
        "activity_type": "What kind of activity (free text), e.g. meeting, call, email, task, deadline, review.",
        "subject": "A one-line summary, e.g. Industry day at NAVSEA.",
        "description": "Details: agenda, outcome, next steps.",
        "activity_date": "When it happens or happened (meetings, calls); null for undated tasks.",
        "due_date": "When it must be done by.",
        "completed_date": "When it was done (with status COMPLETED).",
        "status": "Where the activity stands.",
        "priority": "How urgent it is.",
        "completion_percentage": "How far along it is, 0 to 100.",
        "triggered_by_external_change": "It was created because the external source changed the opportunity (see "
        "`externalChangeReference`).",
        "tags": "Labels as a JSON array of strings.",
        "custom_fields": "Further attributes of the tenant's choosing (JSON object).",
    }

    row_id: uuid.UUID
    entity_type = enum_column(EntityType, _ACTIVITIES.c.entity_type)
    entity_id: uuid.UUID = strawberry.field(description="The target's rowId (see `target`).")
    activity_type: str
    subject: str
    description: str | None
    activity_date: datetime.datetime | None
    due_date: datetime.datetime | None
    completed_date: datetime.datetime | None
    status = enum_column(ActivityStatus, _ACTIVITIES.c.status)
    priority = enum_column(Priority, _ACTIVITIES.c.priority)
    completion_percentage: int
    triggered_by_external_change: bool
    tags: JSON
    custom_fields: JSON
    created_at: datetime.datetime
    updated_at: datetime.datetime

    target = polymorphic(
        "entity_type", "entity_id", targets(ACTIVITY_ENTITY_TYPES),
        description="The record this activity is about; null once it is gone.",
    )
    assignee = to_one(USER, _USERS, "assigned_to", description="Who is to do it.")
    created_by = to_one(USER, _USERS, "created_by")
    updated_by = to_one(USER, _USERS, "updated_by")
    external_change_reference = to_one(
        CHANGE, _CHANGES, "external_change_reference",
        description="The external data change that triggered this activity.",
    )
    participants = to_many(
        PARTICIPANT, _PARTICIPANTS, "activity_id", order=(("added_at", False),),
        description="Who takes part, in the order they were added.",
    )
    history = history(enums.EntityType.ACTIVITY)


@strawberry.type(description="A user or a contact taking part in an activity.")
class ActivityParticipant(EntityNode, TenantOwned, relay.Node):
    _table = _PARTICIPANTS
    _descriptions = {
        "participant_type": "Whether the participant is a user or a contact.",
        "role": "The participant's part in it (free text), e.g. organizer, presenter, attendee.",
        "response_status": "The participant's answer to the invitation (free text), e.g. accepted, declined, "
        "tentative.",
        "added_at": "When the participant was added.",
        "activity": "The activity the participant takes part in.",
        "added_by": "The user who added the participant.",
    }

    row_id: uuid.UUID
    participant_type = enum_column(ParticipantType, _PARTICIPANTS.c.participant_type)
    participant_id: uuid.UUID = strawberry.field(description="The participant's rowId (see `participant`).")
    role: str | None
    response_status: str | None
    added_at: datetime.datetime

    activity = to_one(ACTIVITY, _ACTIVITIES, "activity_id")
    # ParticipantType's values are the EntityType values of User and Contact.
    participant = polymorphic(
        "participant_type", "participant_id", targets(enums.ParticipantType),
        description="The user or contact; null once it is gone.",
    )
    added_by = to_one(USER, _USERS, "added_by")
    history = history(enums.EntityType.ACTIVITY_PARTICIPANT)


# -- filters and orders ------------------------------------------------------------------------


@strawberry.input(description="Conditions on activities, ANDed.")
class ActivityFilter:
    row_id: UUIDFilter | None = None
    entity_type: EnumFilter[EntityType] | None = None
    entity_id: UUIDFilter | None = None
    activity_type: StringFilter | None = None
    subject: StringFilter | None = None
    status: EnumFilter[ActivityStatus] | None = None
    priority: EnumFilter[Priority] | None = None
    assigned_to: UUIDFilter | None = None
    created_by: UUIDFilter | None = None
    triggered_by_external_change: BooleanFilter | None = None
    activity_date: DateTimeFilter | None = None
    due_date: DateTimeFilter | None = None
    completed_date: DateTimeFilter | None = None


# Only indexed columns: activities has (tenant_id, assigned_to, status, due_date) and
# (tenant_id, entity_type, entity_id, activity_date DESC).
@strawberry.enum
class ActivityOrderField(Enum):
    ACTIVITY_DATE = "activity_date"
    DUE_DATE = "due_date"


@strawberry.input
class ActivityOrder:
    field: ActivityOrderField
    direction: OrderDirection = OrderDirection.ASC


@strawberry.type
class ActivitiesQuery:
    activities = root_list(
        ACTIVITY, _ACTIVITIES, ActivityFilter, ActivityOrder, default_order=_BY_DATE,
        description="Activities, by activity date, newest first (undated ones first), unless ordered"
        " otherwise.",
    )
