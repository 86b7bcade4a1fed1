"""Writes of activities and their participants.

As resolvers/capture/mutations.py: each function runs inside a unit of work and changes rows only
through it (the flush hook audits them); permissions are declared on the GraphQL fields.

Activities are never deleted (docs/decisions.md W14): one that will not happen is cancelled
(status CANCELLED) and stays as the record of what was planned. Completed and cancelled are
reached only through `complete_activity` and `cancel_activity`; a cancelled activity can no
longer be changed. Participants are link rows without `updated_at`: added and removed, never
updated (W14). `created_by`, `updated_by` and `added_by` are the acting user, set here.

A new activity about a project, or about a capture plan, proposal or document of a project, needs
the project open: not archived and not closed (an outcome status; resolvers/opportunities/closed.py).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, func, select

from models import (
    Activity,
    ActivityParticipant,
    CapturePlan,
    Contact,
    Document,
    OpportunityProject,
    Organization,
    Proposal,
    User,
)
from models.enums import ActivityStatus, EntityType, ParticipantType
from models.errors import Conflict, Invalid, NotFound
from models.notifications import notify_activity_assigned
from models.unit_of_work import UnitOfWork
from resolvers.common.validation import (
    Failure,
    RuleContext,
    custom_rule,
    date_order,
    declare,
    range_rule,
    validate,
)
from resolvers.opportunities.closed import ensure_open

__all__ = [
    "OPEN_ACTIVITY_STATUSES",
    "add_participant",
    "cancel_activity",
    "complete_activity",
    "create_activity",
    "project_of_target",
    "reassign_activity",
    "remove_participant",
    "require_open_project",
    "update_activity",
]

_WHAT = "activity"

#: The statuses an activity may be created or updated to; COMPLETED and CANCELLED have their own writes.
OPEN_ACTIVITY_STATUSES: frozenset[str] = frozenset(
    s.value for s in (ActivityStatus.PENDING, ActivityStatus.IN_PROGRESS, ActivityStatus.DEFERRED)
)

# What an activity may be about: entity_type -> (model, label). Projects, plans, proposals and
# documents belong to a project; organizations and contacts to the tenant only.
_TARGETS: Mapping[str, tuple[type, str]] = {
    EntityType.OPPORTUNITY_PROJECT.value: (OpportunityProject, "opportunity project"),
    EntityType.ORGANIZATION.value: (Organization, "organization"),
    EntityType.CONTACT.value: (Contact, "contact"),
    EntityType.CAPTURE_PLAN.value: (CapturePlan, "capture plan"),
    EntityType.PROPOSAL.value: (Proposal, "proposal"),
    EntityType.DOCUMENT.value: (Document, "document"),
}
_PROJECTS: Table = OpportunityProject.__table__
_USERS: Table = User.__table__


# -- shared checks --------------------------------------------------------------------------------


async def require_open_project(uow: UnitOfWork, project_id: uuid.UUID, *, field: str, what: str) -> None:
    """Invalid (ProjectClosed, on `field`) unless the project is neither archived nor closed;
    NotFound if absent. resolvers/opportunities/closed.py reads it FOR SHARE: a closing that
    commits meanwhile waits for this write, and one committed before it is seen."""
    await ensure_open(uow, project_id, field=field, what=what)


async def project_of_target(uow: UnitOfWork, entity_type: str, entity_id: uuid.UUID, *, field: str) -> uuid.UUID | None:
    """The project an activity's target belongs to (None for organizations and contacts).

    NotFound (on `field`) when the target does not exist for this tenant; Invalid when it is
    archived (or a document deleted): an archived record takes nothing new (W14).
    """
    found = _TARGETS.get(entity_type)
    if found is None:
        allowed = ", ".join(sorted(_TARGETS))
        raise Invalid(f"entity type must be one of: {allowed}.", field="entity_type")
    model, label = found
    row: Any = await uow.find(model, entity_id, what=label, field=field)
    # Archived: projects, plans and proposals (archived_at), organizations and contacts (is_active
    # false, docs/api.md), documents (is_deleted): kept, but nothing new is added about them.
    if getattr(row, "archived_at", None) is not None or getattr(row, "is_active", True) is False:
        raise Invalid(f"The {label} is archived: no activity can be added about it.", field=field)
    if getattr(row, "is_deleted", False) is True:
        raise Invalid(f"The {label} is deleted: no activity can be added about it.", field=field)
    if entity_type == EntityType.OPPORTUNITY_PROJECT.value:
        return entity_id
    project: uuid.UUID | None = getattr(row, "opportunity_project_id", None)
    return project


async def active_person(uow: UnitOfWork, user_id: Any) -> str | None:
    """Why `user_id` cannot be named (None when it names an active person of this tenant)."""
    row = (
        await uow.connection.execute(
            select(_USERS.c.is_active, _USERS.c.is_system).where(
                _USERS.c.tenant_id == uow.tenant_id, _USERS.c.id == user_id
            )
        )
    ).first()
    if row is None:
        return "There is no user with this id."
    if row.is_system:
        return "The system user cannot be named here."
    if not row.is_active:
        return "The user is deactivated."
    return None


async def _assignee_active(ctx: RuleContext) -> Failure | None:
    user = ctx.values.get("assigned_to")
    if user is None:
        return None
    why = await active_person(ctx.uow, user)
    return None if why is None else Failure(why)


async def _status_open(ctx: RuleContext) -> Failure | None:
    status = _value(ctx.values.get("status"))
    if status is None or status in OPEN_ACTIVITY_STATUSES:
        return None
    return Failure("status must be PENDING, IN_PROGRESS or DEFERRED here: complete or cancel the activity instead.")


async def _tags(ctx: RuleContext) -> Failure | None:
    tags = ctx.values.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, list) or len(tags) > 50:
        return Failure("tags takes at most 50 labels.")
    if any(not isinstance(tag, str) or not tag.strip() or len(tag) > 100 for tag in tags):
        return Failure("each tag is 1 to 100 characters.")
    if len(set(tags)) != len(tags):
        return Failure("tags lists a label twice.")
    return None


async def _custom_fields(ctx: RuleContext) -> Failure | None:
    value = ctx.values.get("custom_fields")
    return None if value is None or isinstance(value, dict) else Failure("custom fields must be a JSON object.")


async def _completed_not_future(ctx: RuleContext) -> Failure | None:
    when = ctx.values.get("completed_date")
    if when is None:
        return None
    return Failure("completed date must not be in the future.") if when > await _now(ctx.uow) else None


_FUTURE = datetime.datetime(9999, 1, 1, tzinfo=datetime.UTC)

declare(
    range_rule("activities", "completion_percentage", low=0, high=100),
    date_order("activities", "activity_date", "due_date"),
    date_order("activities", "activity_date", "completed_date"),
    custom_rule(
        "activities", "status", "open",
        sentence="Created or updated, an activity is PENDING, IN_PROGRESS or DEFERRED: activityComplete and "
        "activityCancel reach COMPLETED and CANCELLED.",
        check=_status_open, sample={"status": "completed"},
    ),
    custom_rule(
        "activities", "tags", "labels",
        sentence="Tags are at most 50 distinct labels of 1 to 100 characters.",
        check=_tags, sample={"tags": ["same", "same"]},
    ),
    custom_rule(
        "activities", "custom_fields", "object",
        sentence="Custom fields are a JSON object.", check=_custom_fields, sample={"custom_fields": [1]},
    ),
    custom_rule(
        "activities", "completed_date", "past",
        sentence="The completed date is not in the future.", check=_completed_not_future,
        sample={"completed_date": _FUTURE},
    ),
    custom_rule(
        "activities", "assigned_to", "active",
        sentence="An activity is assigned to an active person of the tenant (not a deactivated or the system user).",
        check=_assignee_active,
    ),
)


async def _now(uow: UnitOfWork) -> datetime.datetime:
    """The transaction's instant (the clock updated_at is written with)."""
    now: datetime.datetime = (await uow.connection.execute(select(func.now()))).scalar_one()
    return now


def _value(raw: Any) -> Any:
    return getattr(raw, "value", raw)


async def _lock_open(uow: UnitOfWork, activity_id: uuid.UUID, seen: Any, *, doing: str) -> Activity:
    activity = await uow.lock(Activity, activity_id, updated_at=seen, what=_WHAT)
    if activity.status == ActivityStatus.CANCELLED.value:
        raise Invalid(f"The activity is cancelled: it can no longer be {doing}.", field="id")
    return activity


# -- activities ------------------------------------------------------------------------------------


async def create_activity(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A new activity about a record (entity_type, entity_id) of this tenant."""
    values = {k: v for k, v in values.items() if v is not None}
    entity_type = _value(values.pop("entity_type"))
    entity_id = values.pop("entity_id")
    project_id = await project_of_target(uow, entity_type, entity_id, field="entity_id")
    if project_id is not None:
        await require_open_project(uow, project_id, field="entity_id", what="activities")
    await validate(uow, "activities", values)
    activity = Activity(
        tenant_id=uow.tenant_id, entity_type=entity_type, entity_id=entity_id, created_by=uow.actor_id
    )
    uow.assign(activity, values)
    uow.add(activity)
    await uow.flush()
    await notify_activity_assigned(uow, activity, activity.assigned_to, project_id=project_id)
    return activity.id


async def update_activity(uow: UnitOfWork, activity_id: uuid.UUID, seen: Any, changes: Mapping[str, Any]) -> uuid.UUID:
    """Change the given fields of an activity read at `seen` (not cancelled).

    Setting the status of a completed activity back to PENDING, IN_PROGRESS or DEFERRED reopens
    it: its completed date is cleared.
    """
    activity = await _lock_open(uow, activity_id, seen, doing="changed")
    values = dict(changes)
    if "tags" in values and values["tags"] is None:
        values["tags"] = []
    if "custom_fields" in values and values["custom_fields"] is None:
        values["custom_fields"] = {}
    await validate(uow, "activities", values, row=activity)
    if activity.status == ActivityStatus.COMPLETED.value and "status" in values:
        values["completed_date"] = None
    changed = uow.assign(activity, values)
    if changed:
        uow.assign(activity, {"updated_by": uow.actor_id})
        await uow.flush()
    if "assigned_to" in changed:
        await notify_activity_assigned(uow, activity, activity.assigned_to)
    return activity.id


async def complete_activity(
    uow: UnitOfWork,
    activity_id: uuid.UUID,
    seen: Any,
    *,
    completed_date: datetime.datetime | None = None,
    completion_percentage: int | None = None,
) -> uuid.UUID:
    """Mark an activity read at `seen` completed: status COMPLETED, its completed date (default
    now; not in the future, not before the activity date) and percentage (default 100)."""
    activity = await _lock_open(uow, activity_id, seen, doing="completed")
    if activity.status == ActivityStatus.COMPLETED.value:
        raise Invalid("The activity is already completed.", field="id")
    when = completed_date or await _now(uow)
    percentage = 100 if completion_percentage is None else completion_percentage
    values = {"completed_date": when, "completion_percentage": percentage}
    await validate(uow, "activities", values, row=activity)
    uow.assign(activity, {**values, "status": ActivityStatus.COMPLETED.value, "updated_by": uow.actor_id})
    uow.label(activity, "activity.completed", f"completed at {percentage}%")
    await uow.flush()
    return activity.id


async def reassign_activity(
    uow: UnitOfWork, activity_id: uuid.UUID, seen: Any, assigned_to: uuid.UUID | None
) -> uuid.UUID:
    """Give an open activity read at `seen` to another active user of the tenant (None: nobody)."""
    activity = await _lock_open(uow, activity_id, seen, doing="reassigned")
    if activity.status == ActivityStatus.COMPLETED.value:
        raise Invalid("The activity is completed: it can no longer be reassigned.", field="id")
    await validate(uow, "activities", {"assigned_to": assigned_to}, row=activity)
    if activity.assigned_to == assigned_to:
        raise Invalid("The activity is already assigned so.", field="assigned_to")
    uow.assign(activity, {"assigned_to": assigned_to, "updated_by": uow.actor_id})
    uow.label(activity, "activity.reassigned", "assignee changed" if assigned_to else "unassigned")
    await uow.flush()
    await notify_activity_assigned(uow, activity, assigned_to)
    return activity.id


async def cancel_activity(uow: UnitOfWork, activity_id: uuid.UUID, seen: Any) -> uuid.UUID:
    """Cancel an activity read at `seen` that is neither completed nor cancelled (it is kept)."""
    activity = await _lock_open(uow, activity_id, seen, doing="cancelled again")
    if activity.status == ActivityStatus.COMPLETED.value:
        raise Invalid("The activity is completed: it can no longer be cancelled.", field="id")
    uow.assign(activity, {"status": ActivityStatus.CANCELLED.value, "updated_by": uow.actor_id})
    uow.label(activity, "activity.cancelled", "cancelled")
    await uow.flush()
    return activity.id


# -- participants -----------------------------------------------------------------------------------


async def add_participant(uow: UnitOfWork, values: Mapping[str, Any]) -> uuid.UUID:
    """A user or contact of the tenant joins an activity (not cancelled), once.

    The activity is locked (FOR UPDATE) so that two requests adding the same person take turns
    and the second finds the first's row: CONFLICT, not a duplicate.
    """
    values = {k: v for k, v in values.items() if v is not None}
    activity_id = values.pop("activity_id")
    kind = _value(values.pop("participant_type"))
    person = values.pop("participant_id")
    activity = await uow.lock(Activity, activity_id, what=_WHAT, field="activity_id")
    if activity.status == ActivityStatus.CANCELLED.value:
        raise Invalid("The activity is cancelled: no participant can be added.", field="activity_id")
    await validate(uow, "activity_participants", {"participant_type": kind, **values})
    if kind == ParticipantType.USER.value:
        user = (
            await uow.connection.execute(
                select(_USERS.c.is_system).where(_USERS.c.tenant_id == uow.tenant_id, _USERS.c.id == person)
            )
        ).first()
        if user is None:
            raise NotFound("There is no user with this id.", field="participant_id")
        if user.is_system:
            raise Invalid("The system user cannot take part in activities.", field="participant_id")
    else:
        await uow.find(Contact, person, what="contact", field="participant_id")
    table: Table = ActivityParticipant.__table__
    taken = (
        await uow.connection.execute(
            select(table.c.id).where(
                table.c.tenant_id == uow.tenant_id,
                table.c.activity_id == activity_id,
                table.c.participant_type == kind,
                table.c.participant_id == person,
            )
        )
    ).first()
    if taken is not None:
        raise Conflict("This person already takes part in the activity.", field="participant_id")
    participant = ActivityParticipant(
        tenant_id=uow.tenant_id,
        activity_id=activity_id,
        participant_type=kind,
        participant_id=person,
        added_by=uow.actor_id,
    )
    uow.assign(participant, values)
    uow.add(participant)
    await uow.flush()
    return participant.id


async def remove_participant(uow: UnitOfWork, participant_id: uuid.UUID) -> uuid.UUID:
    """Remove a participant row (a true delete: its DELETE audit row keeps every column)."""
    participant = await uow.lock(ActivityParticipant, participant_id, what="activity participant")
    await uow.lock(Activity, participant.activity_id, what=_WHAT)
    await uow.delete(participant)
    await uow.flush()
    return participant_id
