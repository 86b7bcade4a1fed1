"""Activities (tasks, meetings, milestones) attached to a record, and their participants.

Both are polymorphic: an activity names its record by (entity_type, entity_id), a participant
its person by (participant_type, participant_id). Neither has a foreign key; CHECK constraints
limit the types to models.enums.ACTIVITY_ENTITY_TYPES and ParticipantType.
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import (
    JSON_ARRAY,
    JSON_OBJECT,
    NOW,
    Base,
    Json,
    TenantScoped,
    Timestamps,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
    values_check,
)
from models.enums import ACTIVITY_ENTITY_TYPES, ActivityStatus, ParticipantType, Priority

if TYPE_CHECKING:
    from models.identity import User
    from models.tenancy import Tenant

__all__ = ["Activity", "ActivityParticipant"]


class Activity(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """Something done or to do about a record: a call, a meeting, a deadline, a task."""

    __tablename__ = "activities"
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "assigned_to", "status", "due_date"),
        tenant_fk("assigned_to", "users", ondelete="SET NULL"),
        tenant_fk("external_change_reference", "external_data_changes", ondelete="SET NULL"),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("updated_by", "users", ondelete=None),
        values_check("entity_type", ACTIVITY_ENTITY_TYPES),
        values_check("status", ActivityStatus),
        values_check("priority", Priority),
    )

    entity_type: Mapped[str] = mapped_column(String(50), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    activity_type: Mapped[str] = mapped_column(String(100), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)

    activity_date: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    due_date: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    completed_date: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    assigned_to: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="pending")
    priority: Mapped[str] = mapped_column(String(20), nullable=False, server_default="medium")

    completion_percentage: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))

    triggered_by_external_change: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    # The external_data_changes row that triggered this activity (seed gap: no relation declared).
    external_change_reference: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    tags: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False, server_default=JSON_OBJECT)

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    tenant: Mapped[Tenant] = relationship(back_populates="activities", lazy="raise")
    assignee: Mapped[User | None] = relationship(
        back_populates="assigned_activities", foreign_keys=[assigned_to], lazy="raise"
    )
    creator: Mapped[User] = relationship(
        back_populates="created_activities", foreign_keys=[created_by], lazy="raise"
    )
    participants: Mapped[list[ActivityParticipant]] = relationship(
        back_populates="activity",
        foreign_keys="ActivityParticipant.activity_id",
        lazy="raise",
        passive_deletes="all",
    )


# Declared after the class for the DESC column, like every sorted index.
Index(None, Activity.tenant_id, Activity.entity_type, Activity.entity_id, Activity.activity_date.desc())


class ActivityParticipant(UUIDPrimaryKey, TenantScoped, Base):
    """A user or contact taking part in an activity."""

    __tablename__ = "activity_participants"
    __table_args__ = (
        # Leading tenant_id serves the tenant cascade; activity_id the participants-of-an-activity
        # lookup and the activities foreign key (the seed has no index on activity_id at all).
        Index(None, "tenant_id", "activity_id"),
        tenant_fk("activity_id", "activities", ondelete="CASCADE"),
        tenant_fk("added_by", "users", ondelete=None),
        values_check("participant_type", ParticipantType),
    )

    activity_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    participant_type: Mapped[str] = mapped_column(String(50), nullable=False)
    participant_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    role: Mapped[str | None] = mapped_column(String(50))
    response_status: Mapped[str | None] = mapped_column(String(50))

    added_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    added_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    activity: Mapped[Activity] = relationship(
        back_populates="participants", foreign_keys=[activity_id], lazy="raise"
    )
