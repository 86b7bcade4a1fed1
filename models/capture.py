"""Pursuit management: capture plans (strategy and the go/no-go decision) and proposals."""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Date, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import (
    JSON_ARRAY,
    Archivable,
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
from models.enums import CapturePlanStatus, GoNoGoDecision, ProposalStatus

if TYPE_CHECKING:
    from models.opportunities import OpportunityProject

__all__ = ["CapturePlan", "Proposal"]


class CapturePlan(UUIDPrimaryKey, TenantScoped, Timestamps, Archivable, Base):
    """The capture strategy for a project, with its go/no-go decision."""

    __tablename__ = "capture_plans"
    __table_args__ = (
        Index(None, "opportunity_project_id", "status"),
        Index(None, "tenant_id"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("updated_by", "users", ondelete=None),
        tenant_fk("archived_by", "users", ondelete=None),
        values_check("status", CapturePlanStatus),
        values_check("go_no_go_decision", GoNoGoDecision),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    plan_name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="draft")

    # Decision
    go_no_go_decision: Mapped[str | None] = mapped_column(String(20))
    decision_date: Mapped[datetime.date | None] = mapped_column(Date)
    decision_rationale: Mapped[str | None] = mapped_column(Text)

    # Planning
    win_strategy: Mapped[str | None] = mapped_column(Text)
    competitive_analysis: Mapped[str | None] = mapped_column(Text)
    external_data_considerations: Mapped[str | None] = mapped_column(Text)
    resource_requirements: Mapped[str | None] = mapped_column(Text)
    timeline: Mapped[str | None] = mapped_column(Text)
    external_deadlines: Mapped[str | None] = mapped_column(Text)

    # Synchronisation
    last_external_sync: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    external_data_impact_notes: Mapped[str | None] = mapped_column(Text)

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="capture_plans", foreign_keys=[opportunity_project_id], lazy="raise"
    )


class Proposal(UUIDPrimaryKey, TenantScoped, Timestamps, Archivable, Base):
    """A proposal being written for a project, through its review stages to submission."""

    __tablename__ = "proposals"
    __table_args__ = (
        Index(None, "opportunity_project_id", "status"),
        Index(None, "tenant_id"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("proposal_manager", "users", ondelete=None),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("updated_by", "users", ondelete=None),
        tenant_fk("archived_by", "users", ondelete=None),
        values_check("status", ProposalStatus),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    proposal_title: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="draft")
    # A user id (seed gap: no relation declared; composite FK to users added).
    proposal_manager: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    team_members: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)

    # Timeline
    submission_date: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    final_submittal_date: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    # Process
    compliance_matrix: Mapped[Any] = mapped_column(Json, nullable=True)
    review_stages: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)

    # External integration
    external_deadline_sync: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    amendment_impact_log: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="proposals", foreign_keys=[opportunity_project_id], lazy="raise"
    )
