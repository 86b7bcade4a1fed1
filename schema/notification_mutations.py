"""Mutations of the caller's inbox: `notificationMarkRead`, `notificationMarkAllRead` and
`notificationPreferenceUpdate` (self-service: no permission; each acts on the caller's own items).

Each is one transaction with its event row (resolvers/notifications/mutations.py; docs/decisions.md
D20-D21). Another user's notification is answered as missing (NOT_FOUND), and the attempt audited.
"""

from __future__ import annotations

import datetime
import uuid

import strawberry
from strawberry import relay
from strawberry.types.unset import UNSET

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models.enums import ImpactLevel
from resolvers.notifications import mutations
from schema.identity import Viewer
from schema.mutation_kit import Args, Done, Entity, Extra, mutation, ref_id, ref_row_id
from schema.notifications import Notification, NotificationPreference, preference_of_row

__all__ = ["NotificationMutation"]


@strawberry.input(description="The notification to mark read.")
class NotificationMarkReadInput:
    id: relay.GlobalID | None = ref_id("Notification")
    row_id: uuid.UUID | None = ref_row_id("Notification")


@strawberry.input(description="Which of the caller's notifications to mark read.")
class NotificationMarkAllReadInput:
    before: datetime.datetime | None = strawberry.field(
        default=None,
        description="Only those written at or before this instant (e.g. the newest item the client has shown);"
        " omitted: every unread item.",
    )


@strawberry.input(description="The caller's new inbox preference: the fields given change, the others stay.")
class NotificationPreferenceUpdateInput:
    min_impact_level: ImpactLevel | None = strawberry.field(
        default=UNSET, description="External data changes below this impact level no longer reach the inbox."
    )
    digest_enabled: bool | None = strawberry.field(
        default=UNSET, description="Whether the daily digest email of unread high and critical items is sent."
    )
    updated_at: datetime.datetime | None = strawberry.field(
        default=None,
        description="The preference's `updatedAt` as read (optional; given, a change made meanwhile is a CONFLICT).",
    )


async def _mark_read(args: Args[NotificationMarkReadInput]) -> Done:
    ctx = args.context
    assert args.id is not None
    row = await mutations.mark_read(ctx.auth, ctx.principal, ctx.meta, args.id)
    return Done(id=row.id, node=Notification.from_row(row))


async def _mark_all_read(args: Args[NotificationMarkAllReadInput]) -> Done:
    ctx = args.context
    before = args.input.before if args.input is not None else None
    marked = await mutations.mark_all_read(ctx.auth, ctx.principal, ctx.meta, before=before)
    return Done(node=Viewer(_principal=ctx.principal), extra={"marked_count": marked})


def _given(value: object) -> object:
    return None if value is UNSET else value


async def _preference(args: Args[NotificationPreferenceUpdateInput]) -> Done:
    ctx, value = args.context, args.input
    level = _given(value.min_impact_level)
    digest = _given(value.digest_enabled)
    row = await mutations.set_preference(
        ctx.auth, ctx.principal, ctx.meta,
        min_impact_level=level if isinstance(level, ImpactLevel) else None,
        digest_enabled=digest if isinstance(digest, bool) else None,
        seen=value.updated_at,
    )
    return Done(id=row.id, node=preference_of_row(row.id, row, row.updated_at))


@strawberry.type
class NotificationMutation:
    notification_mark_read = mutation(
        "notificationMarkRead",
        input=NotificationMarkReadInput,
        permission=None,
        service=_mark_read,
        returns=Entity(Notification, "notification, now read", field="notification"),
        description="Mark one of your notifications read (marking it again changes nothing). Another user's"
        " notification is answered as missing, and the attempt is audited.",
    )
    notification_mark_all_read = mutation(
        "notificationMarkAllRead",
        input=NotificationMarkAllReadInput,
        permission=None,
        service=_mark_all_read,
        returns=Entity(Viewer, "caller, whose inbox now has no unread items (up to `before`)", field="viewer"),
        extra={"marked_count": Extra(int | None, "How many notifications this call marked read.")},
        description="Mark all your unread notifications read (or those written up to `before`).",
    )
    notification_preference_update = mutation(
        "notificationPreferenceUpdate",
        input=NotificationPreferenceUpdateInput,
        permission=None,
        service=_preference,
        returns=Entity(NotificationPreference, "caller's preference as changed", field="notification_preference"),
        description="Set your inbox threshold (the lowest impact level of external data changes that reach it) and"
        " whether the daily digest email is sent.",
    )
