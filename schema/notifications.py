"""The inbox in the schema: `Viewer.notifications` (a connection, unread first, with `unreadCount`),
`Viewer.notificationPreference`, and their types. The mutations are in
schema/notification_mutations.py; reading and writing in resolvers/notifications/.

docs/api.md "Notifications" describes the use: a client that was offline (or whose subscription
got a resync event) reads `viewer.notifications(since: <last event it handled>)`, then pages on
with `after:`.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay

import schema.enums  # noqa: F401 - registers the value-set enums before any type names them
from models import OpportunityProject as ProjectRow
from models.enums import ImpactLevel
from models.notifications import NotificationKind
from resolvers.common.pagination import PaginationError
from resolvers.notifications import queries
from schema.context import Info
from schema.enums import describe_values
from schema.pagination import After, Before, Connection, First, Last, PageInfo, paged
from schema.relations import bad_input, page_args

if TYPE_CHECKING:
    from schema.opportunities import OpportunityProject

__all__ = [
    "NOTIFICATIONS",
    "NOTIFICATION_PREFERENCE",
    "Notification",
    "NotificationConnection",
    "NotificationPreference",
    "preference_of_row",
]

strawberry.enum(NotificationKind, description="What an inbox item reports.")
describe_values(
    NotificationKind,
    {
        "EXTERNAL_DATA_CHANGE": "The external source changed an opportunity of a project you work on, at or above"
        " your threshold.",
        "ACTIVITY_ASSIGNED": "Someone else assigned an activity to you.",
        "DEADLINE_REMINDER": "A response deadline or an activity's due date is 7, 2 or 1 days away (UTC days).",
    },
)

_ProjectType = Annotated["OpportunityProject", strawberry.lazy("schema.opportunities")]
_PROJECTS = ProjectRow.__table__
#: audit / entity type of the record an item is about -> its GraphQL type (for `subjectId`).
_SUBJECT_TYPES = {
    "external_data_change": "ExternalDataChange",
    "activity": "Activity",
    "opportunity_project": "OpportunityProject",
}


@strawberry.type(description="An item of the caller's inbox: what happened, how much it matters, what it is about.")
class Notification(relay.Node):
    row_id: uuid.UUID = strawberry.field(description="The item's row id (give it to `notificationMarkRead`).")
    kind: NotificationKind = strawberry.field(description="What the item reports.")
    impact_level: ImpactLevel = strawberry.field(
        description="How much it matters: an external change's impact, an activity's priority, a reminder's urgency."
    )
    title: str = strawberry.field(
        description="One line: the project or activity and what happened (never guarded or strategy text)."
    )
    subject_row_id: uuid.UUID = strawberry.field(
        description="The rowId of the record the item is about (see `subjectType`)."
    )
    subject_type: str = strawberry.field(
        description="The GraphQL type of that record: ExternalDataChange, Activity or OpportunityProject."
    )
    opportunity_project_row_id: uuid.UUID | None = strawberry.field(
        description="The rowId of the opportunity project the item concerns; null when none."
    )
    change_batch_id: uuid.UUID | None = strawberry.field(
        description="The change batch of the event (as in change history and subscription events); null for"
        " reminders."
    )
    due_at: datetime.datetime | None = strawberry.field(
        description="When the deadline or due date is, for reminders and assigned activities that have one."
    )
    read_at: datetime.datetime | None = strawberry.field(description="When the caller marked it read; null: unread.")
    created_at: datetime.datetime = strawberry.field(description="When the item was written (the event's commit).")

    @classmethod
    def resolve_id(cls, root: Any, *, info: Info) -> str:
        return str(root.row_id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Notification | None]:
        """`node(id:)`: the caller's own items only (another user's is null, like a missing one)."""
        ids: list[uuid.UUID | None] = []
        for node_id in node_ids:
            try:
                ids.append(uuid.UUID(node_id))
            except ValueError:
                ids.append(None)
        found = await queries.visible_rows(
            info.context.loaders.db, info.context.principal, [i for i in ids if i is not None]
        )
        return [cls.from_row(found[i]) if i is not None and i in found else None for i in ids]

    @strawberry.field(description="The global id of the record the item is about (use it with `node(id:)`).")
    def subject_id(self) -> relay.GlobalID:
        return relay.GlobalID(self.subject_type, str(self.subject_row_id))

    @strawberry.field(description="Whether the caller has marked it read.")
    def read(self) -> bool:
        return self.read_at is not None

    @strawberry.field(description="The opportunity project it concerns, as the caller may read it now; null when none.")
    async def opportunity_project(self, info: Info) -> _ProjectType | None:
        if self.opportunity_project_row_id is None:
            return None
        from schema.opportunities import OpportunityProject

        row = await info.context.loaders.by_id(_PROJECTS).load(self.opportunity_project_row_id)
        return OpportunityProject.from_row(row)

    @classmethod
    def from_row(cls, row: Any) -> Notification:
        return cls(
            row_id=row.id,
            kind=NotificationKind(row.kind),
            impact_level=ImpactLevel(row.impact_level),
            title=row.title,
            subject_row_id=row.entity_id,
            subject_type=_SUBJECT_TYPES.get(row.entity_type, "OpportunityProject"),
            opportunity_project_row_id=row.opportunity_project_id,
            change_batch_id=row.change_batch_id,
            due_at=row.due_at,
            read_at=row.read_at,
            created_at=row.created_at,
        )


@strawberry.type(
    name="NotificationConnection",
    description="A page of the caller's inbox (unread first, then newest first), with the unread count.",
)
class NotificationConnection(Connection[Notification]):
    _unread: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="How many of the caller's items are unread (the whole inbox, not this page).")
    async def unread_count(self) -> int:
        return await self._unread()


@strawberry.type(description="The caller's notification preference (the defaults until first changed).")
class NotificationPreference:
    row_id: uuid.UUID | None = strawberry.field(description="The preference's row id; null while it has the defaults.")
    min_impact_level: ImpactLevel = strawberry.field(
        description="External data changes below this impact level do not reach the inbox (default MEDIUM)."
    )
    digest_enabled: bool = strawberry.field(
        description="Whether the daily digest email of unread high and critical items is sent (default true)."
    )
    updated_at: datetime.datetime | None = strawberry.field(
        description="When it was last changed (give it back as `updatedAt`); null while it has the defaults."
    )


def preference_of_row(
    row_id: uuid.UUID | None, values: Any, updated_at: datetime.datetime | None
) -> NotificationPreference:
    """The type of a preference's row id, values (`min_impact_level`, `digest_enabled`) and updatedAt."""
    return NotificationPreference(
        row_id=row_id,
        min_impact_level=ImpactLevel(values.min_impact_level),
        digest_enabled=values.digest_enabled,
        updated_at=updated_at,
    )


async def _notifications(
    info: Info,
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    unread_only: Annotated[
        bool, strawberry.argument(description="Only unread items (default: all, unread first).")
    ] = False,
    since: Annotated[
        datetime.datetime | None,
        strawberry.argument(
            description="Only items written after this instant: a client catching up after being offline or after"
            " a resync event passes the time of the last event it handled."
        ),
    ] = None,
) -> NotificationConnection:
    principal = info.context.principal
    db = info.context.loaders.db
    try:
        page = await queries.inbox_page(
            db, principal, page_args(first, after, last, before), Notification.from_row,
            unread_only=unread_only, since=since,
        )
    except PaginationError as exc:  # a cursor that is not one of this list's
        raise bad_input(exc) from None
    return NotificationConnection(
        nodes=page.nodes,
        page_info=PageInfo(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            _size=len(page.nodes),
            _cursor_at=page.cursor_at,
        ),
        _count=page.count,
        _cursor_at=page.cursor_at,
        _unread=lambda: queries.unread_count(db, principal),
    )


async def _preference(info: Info) -> NotificationPreference:
    row_id, values, updated_at = await queries.preference_row(info.context.loaders.db, info.context.principal.user_id)
    return preference_of_row(row_id, values, updated_at)


#: `Viewer.notifications` (schema/identity.py declares it on the Viewer type).
NOTIFICATIONS: Any = strawberry.field(
    resolver=_notifications,
    description=paged(
        "The caller's inbox: external data changes on projects the caller works on (at or above the threshold),"
        " activities assigned to the caller, deadline reminders; unread first, then newest first. Items about a"
        " project the caller can no longer read are left out."
    ),
)
#: `Viewer.notificationPreference`.
NOTIFICATION_PREFERENCE: Any = strawberry.field(
    resolver=_preference, description="The caller's threshold and digest choice for the inbox."
)
