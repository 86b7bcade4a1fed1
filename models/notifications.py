"""The inbox: notifications, each user's notification preference, and the reminders and digests sent
(migration 0011; docs/decisions.md D20-D22).

- `Notification`: one item of one user's inbox (an external data change on a project the user works
  on, at or above the user's threshold; an activity assigned to the user; a deadline approaching),
  written in the same unit of work as the event it reports, so the item and the event commit
  together. `read_at` is set by the user; rows older than the configured retention are purged by
  `gwm jobs run`.
- `NotificationPreference`: a user's threshold impact level and whether the daily digest is sent;
  a user without a row has the defaults (`DEFAULT_MIN_IMPACT`, digest on).
- `NotificationSend`: a reminder or digest produced for a user, unique per (tenant, user, kind,
  key): the job inserts it first (`ON CONFLICT DO NOTHING`) and produces the reminder or digest only
  when its row went in, so two `gwm jobs run` at once produce each once.

Who works on a project (`project_team`): its capture manager and proposal manager, the holders of an
unexpired role assignment scoped to it, and the people an open activity about it is assigned to or
lists as user participants; active, non-system users only.

The writers take a `UnitOfWork` (and write on its connection, in its transaction): these tables are
not audited by the flush hook (models/audit_trail.py NOT_AUDITED); the events they report are.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    insert,
    select,
    text,
    union,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from models.activities import Activity, ActivityParticipant
from models.base import (
    NOW,
    Base,
    CreatedAt,
    TenantScoped,
    Timestamps,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
    values_check,
)
from models.enums import ActivityStatus, ImpactLevel, ParticipantType
from models.identity import User, UserRole
from models.opportunities import OpportunityProject

if TYPE_CHECKING:
    from models.unit_of_work import UnitOfWork

__all__ = [
    "DEFAULT_DIGEST",
    "DEFAULT_MIN_IMPACT",
    "IMPACT_RANK",
    "Notification",
    "NotificationKind",
    "NotificationPreference",
    "NotificationSend",
    "SendKind",
    "add_notifications",
    "at_or_above",
    "notify_activity_assigned",
    "notify_external_change",
    "preferences_of",
    "project_team",
]

#: The threshold of a user who never set one: medium, high and critical changes reach the inbox.
DEFAULT_MIN_IMPACT = ImpactLevel.MEDIUM
#: Whether the daily digest is sent to a user who never said.
DEFAULT_DIGEST = True
#: Impact levels from least to most severe.
IMPACT_RANK: dict[str, int] = {level.value: rank for rank, level in enumerate(ImpactLevel)}


class NotificationKind(StrEnum):
    """notifications.kind: what the item reports."""

    EXTERNAL_DATA_CHANGE = "external_data_change"
    ACTIVITY_ASSIGNED = "activity_assigned"
    DEADLINE_REMINDER = "deadline_reminder"


class SendKind(StrEnum):
    """notification_sends.kind: what was produced once."""

    REMINDER = "reminder"
    DIGEST = "digest"


class Notification(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """One item of one user's inbox."""

    __tablename__ = "notifications"
    __table_args__ = (
        # The inbox: a user's unread first (read_at NULL), newest first.
        Index(None, "tenant_id", "user_id", "read_at", "created_at"),
        # The purge: a tenant's rows older than the retention.
        Index(None, "tenant_id", "created_at"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        values_check("kind", NotificationKind),
        values_check("impact_level", ImpactLevel),
        CheckConstraint("char_length(btrim(title)) >= 1", name="title_not_blank"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    impact_level: Mapped[str] = mapped_column(String(20), nullable=False)
    # Titles name the project or activity and what happened; never guarded or strategy text.
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    # The record the item is about (an external_data_change, an activity, an opportunity_project).
    entity_type: Mapped[str] = mapped_column(String(50), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # The project it concerns, if any (reads of the inbox hide items of projects the user cannot read).
    opportunity_project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The change batch of the event (change_history.change_batch_id); NULL for reminders.
    change_batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # When the item is due (reminders: the deadline), if it has such a time.
    due_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    read_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)


class NotificationPreference(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A user's inbox threshold and digest choice (absent: the defaults)."""

    __tablename__ = "notification_preferences"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
        values_check("min_impact_level", ImpactLevel),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    min_impact_level: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default=DEFAULT_MIN_IMPACT.value
    )
    digest_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class NotificationSend(UUIDPrimaryKey, TenantScoped, Base):
    """A reminder or digest produced for a user: at most one per (tenant, user, kind, key)."""

    __tablename__ = "notification_sends"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "kind", "key"),
        Index(None, "tenant_id", "sent_at"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
        values_check("kind", SendKind),
        CheckConstraint("item_count >= 0", name="item_count_not_negative"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    # Reminder: "<subject type>:<id>:<deadline's UTC date>:<days>"; digest: the UTC date "YYYY-MM-DD".
    key: Mapped[str] = mapped_column(String(200), nullable=False)
    sent_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    # The reminder's notification, or how many items the digest listed.
    notification_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    item_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preferences:
    """A user's effective preference (the defaults when no row exists)."""

    min_impact_level: str = DEFAULT_MIN_IMPACT.value
    digest_enabled: bool = DEFAULT_DIGEST


def at_or_above(impact: str, threshold: str) -> bool:
    """Whether `impact` reaches `threshold` (informational < low < medium < high < critical)."""
    return IMPACT_RANK.get(impact, 0) >= IMPACT_RANK.get(threshold, 0)


async def preferences_of(conn: AsyncConnection, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Preferences]:
    """Each user's effective preference (tenant set on `conn`)."""
    ids = list(dict.fromkeys(user_ids))
    found = {u: Preferences() for u in ids}
    if not ids:
        return found
    rows = await conn.execute(
        select(
            NotificationPreference.user_id,
            NotificationPreference.min_impact_level,
            NotificationPreference.digest_enabled,
        ).where(NotificationPreference.user_id.in_(ids))
    )
    for row in rows.all():
        found[row.user_id] = Preferences(row.min_impact_level, row.digest_enabled)
    return found


async def project_team(conn: AsyncConnection, project_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Who works on each project (module docstring): active, non-system users, in id order."""
    if not project_ids:
        return {}
    p = OpportunityProject
    open_statuses = (ActivityStatus.PENDING.value, ActivityStatus.IN_PROGRESS.value, ActivityStatus.DEFERRED.value)
    about = (Activity.entity_type == "opportunity_project") & Activity.entity_id.in_(project_ids)
    members = union(
        select(p.id.label("project_id"), p.assigned_capture_manager.label("user_id")).where(
            p.id.in_(project_ids), p.assigned_capture_manager.is_not(None)
        ),
        select(p.id, p.assigned_proposal_manager).where(
            p.id.in_(project_ids), p.assigned_proposal_manager.is_not(None)
        ),
        select(UserRole.opportunity_project_id, UserRole.user_id).where(
            UserRole.opportunity_project_id.in_(project_ids),
            (UserRole.expires_at.is_(None)) | (UserRole.expires_at > func.now()),
        ),
        select(Activity.entity_id, Activity.assigned_to).where(
            about, Activity.assigned_to.is_not(None), Activity.status.in_(open_statuses)
        ),
        select(Activity.entity_id, ActivityParticipant.participant_id)
        .join(ActivityParticipant, ActivityParticipant.activity_id == Activity.id)
        .where(
            about,
            Activity.status.in_(open_statuses),
            ActivityParticipant.participant_type == ParticipantType.USER.value,
        ),
    ).subquery()
    rows = await conn.execute(
        select(members.c.project_id, members.c.user_id)
        .join(User, User.id == members.c.user_id)
        .where(User.is_active.is_(True), User.is_system.is_(False))
        .order_by(members.c.project_id, members.c.user_id)
    )
    team: dict[uuid.UUID, list[uuid.UUID]] = {pid: [] for pid in project_ids}
    for row in rows.all():
        team[row.project_id].append(row.user_id)
    return team


# -- writing ----------------------------------------------------------------------------------------


async def add_notifications(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    """Insert inbox items (dicts of Notification columns, tenant_id included); their ids."""
    if not rows:
        return []
    result = await conn.execute(insert(Notification).returning(Notification.id), list(rows))
    return list(result.scalars().all())


def _title(text_: str) -> str:
    text_ = " ".join(text_.split())
    return text_ if len(text_) <= 500 else text_[:499] + "\u2026"


async def notify_external_change(
    uow: UnitOfWork,
    *,
    change_id: uuid.UUID,
    project_id: uuid.UUID,
    project_name: str,
    change_type: str,
    impact: str,
) -> list[uuid.UUID]:
    """Inbox items for an external data change: one for each user who works on the project and whose
    threshold the change's impact reaches. Written on the unit of work's transaction."""
    team = (await project_team(uow.connection, [project_id]))[project_id]
    preferences = await preferences_of(uow.connection, team)
    title = _title(f"{change_type.replace('_', ' ').capitalize()} notice ({impact}): {project_name}")
    rows = [
        {
            "tenant_id": uow.tenant_id,
            "user_id": user_id,
            "kind": NotificationKind.EXTERNAL_DATA_CHANGE.value,
            "impact_level": impact,
            "title": title,
            "entity_type": "external_data_change",
            "entity_id": change_id,
            "opportunity_project_id": project_id,
            "change_batch_id": uow.change_batch_id,
        }
        for user_id in team
        if at_or_above(impact, preferences[user_id].min_impact_level)
    ]
    return await add_notifications(uow.connection, rows)


async def notify_activity_assigned(
    uow: UnitOfWork,
    activity: Activity,
    assignee: uuid.UUID | None,
    *,
    project_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """An inbox item for the activity's new assignee (none when nobody, or the actor themself, is
    assigned: assigning yourself needs no alert). Impact: the activity's priority."""
    if assignee is None or assignee == uow.actor_id:
        return []
    impact = activity.priority if activity.priority in IMPACT_RANK else ImpactLevel.MEDIUM.value
    if project_id is None and activity.entity_type == "opportunity_project":
        project_id = activity.entity_id
    row = {
        "tenant_id": uow.tenant_id,
        "user_id": assignee,
        "kind": NotificationKind.ACTIVITY_ASSIGNED.value,
        "impact_level": impact,
        "title": _title(f"Activity assigned to you: {activity.subject}"),
        "entity_type": "activity",
        "entity_id": activity.id,
        "opportunity_project_id": project_id,
        "change_batch_id": uow.change_batch_id,
        "due_at": activity.due_date,
    }
    return await add_notifications(uow.connection, [row])
