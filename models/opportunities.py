"""Opportunity projects (the pursuits), their local field overrides and their contacts.

A project mirrors one opportunity of an external source (external_source_id, external_opportunity_id);
the synced fields are overwritten by the poller unless an active override exists for the field.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Index, Integer, Numeric, String, Text, UniqueConstraint, text
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
from models.enums import PipelineStage, Priority, ProjectStatus, SyncStatus

if TYPE_CHECKING:
    from models.activities import Activity
    from models.capture import CapturePlan, Proposal
    from models.crm import Contact
    from models.documents import Document
    from models.external_data import (
        ApiIntegrationLog,
        ExternalDataChange,
        ExternalOpportunityData,
        ExternalOpportunitySource,
        PollingConfiguration,
    )
    from models.identity import User, UserRole
    from models.tenancy import Tenant

__all__ = ["OpportunityProject", "OpportunityProjectContact", "OpportunityProjectOverride"]


class OpportunityProject(UUIDPrimaryKey, TenantScoped, Timestamps, Archivable, Base):
    """An opportunity the tenant has decided to pursue."""

    __tablename__ = "opportunity_projects"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_source_id", "external_opportunity_id"),
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "project_status", "pipeline_stage"),
        Index(None, "tenant_id", "assigned_capture_manager"),
        Index(None, "external_source_id", "last_synced_at"),
        tenant_fk("external_source_id", "external_opportunity_sources", ondelete="RESTRICT"),
        tenant_fk("assigned_capture_manager", "users", ondelete="SET NULL"),
        tenant_fk("assigned_proposal_manager", "users", ondelete="SET NULL"),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("archived_by", "users", ondelete=None),
        values_check("project_status", ProjectStatus),
        values_check("pipeline_stage", PipelineStage),
        values_check("priority_level", Priority),
        values_check("sync_status", SyncStatus),
    )

    # Identification
    project_name: Mapped[str] = mapped_column(String(255), nullable=False)
    internal_reference_number: Mapped[str | None] = mapped_column(String(100))

    # External source linkage
    external_source_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    external_opportunity_id: Mapped[str] = mapped_column(String(255), nullable=False)
    external_opportunity_url: Mapped[str | None] = mapped_column(String(1000))

    # Opportunity data synced from the source
    solicitation_number: Mapped[str | None] = mapped_column(String(100))
    agency_name: Mapped[str | None] = mapped_column(String(255))
    contracting_office: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)

    # Project management (value sets in models.enums)
    project_status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="active")
    pipeline_stage: Mapped[str] = mapped_column(String(50), nullable=False, server_default="phase_0")
    priority_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="medium")

    # Scoring
    win_probability_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    strategic_value_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    pursuit_health_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))

    # Team
    assigned_capture_manager: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    assigned_proposal_manager: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    assigned_team_members: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)

    # Synchronisation
    last_synced_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    sync_status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="pending")
    sync_error_message: Mapped[str | None] = mapped_column(Text)
    version_hash: Mapped[str | None] = mapped_column(String(64))

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    tenant: Mapped[Tenant] = relationship(back_populates="opportunity_projects", lazy="raise")
    external_source: Mapped[ExternalOpportunitySource] = relationship(
        back_populates="opportunity_projects", foreign_keys=[external_source_id], lazy="raise"
    )
    capture_manager: Mapped[User | None] = relationship(
        back_populates="opportunity_projects_as_capture",
        foreign_keys=[assigned_capture_manager],
        lazy="raise",
    )
    proposal_manager: Mapped[User | None] = relationship(
        back_populates="opportunity_projects_as_proposal",
        foreign_keys=[assigned_proposal_manager],
        lazy="raise",
    )

    external_opportunity_data: Mapped[list[ExternalOpportunityData]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="ExternalOpportunityData.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    opportunity_project_overrides: Mapped[list[OpportunityProjectOverride]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="OpportunityProjectOverride.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    documents: Mapped[list[Document]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="Document.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    # Activities are polymorphic (entity_type, entity_id) with no foreign key: a project's
    # activities are those with entity_type 'opportunity_project' and entity_id = its id. Read-only.
    activities: Mapped[list[Activity]] = relationship(
        primaryjoin="and_(Activity.entity_type == 'opportunity_project', "
        "foreign(Activity.entity_id) == OpportunityProject.id)",
        viewonly=True,
        lazy="raise",
    )
    contacts: Mapped[list[OpportunityProjectContact]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="OpportunityProjectContact.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    polling_configurations: Mapped[list[PollingConfiguration]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="PollingConfiguration.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    external_data_changes: Mapped[list[ExternalDataChange]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="ExternalDataChange.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    user_roles: Mapped[list[UserRole]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="UserRole.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    capture_plans: Mapped[list[CapturePlan]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="CapturePlan.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    proposals: Mapped[list[Proposal]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="Proposal.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )
    # Not in the seed's OpportunityProject although ApiIntegrationLog.opportunityProject points here.
    api_integration_logs: Mapped[list[ApiIntegrationLog]] = relationship(
        back_populates="opportunity_project",
        foreign_keys="ApiIntegrationLog.opportunity_project_id",
        lazy="raise",
        passive_deletes="all",
    )


# The default list order (newest first) and its keyset pagination cursor (created_at, id).
# Declared after the class because created_at comes from a mixin.
Index(
    None,
    OpportunityProject.tenant_id,
    OpportunityProject.created_at.desc(),
    OpportunityProject.id,
)


class OpportunityProjectOverride(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A local value that wins over the external source's value of one project field."""

    __tablename__ = "opportunity_project_overrides"
    __table_args__ = (
        UniqueConstraint("opportunity_project_id", "field_name"),
        Index(None, "tenant_id"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("created_by", "users", ondelete=None),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    field_name: Mapped[str] = mapped_column(String(100), nullable=False)
    original_external_value: Mapped[Any] = mapped_column(Json, nullable=True)
    override_value: Mapped[Any] = mapped_column(Json, nullable=False)
    override_reason: Mapped[str | None] = mapped_column(Text)

    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="opportunity_project_overrides", foreign_keys=[opportunity_project_id], lazy="raise"
    )


class OpportunityProjectContact(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A contact's relationship to a project (e.g. contracting officer, teaming partner); edited, so it
    has updated_at (migration 0008, docs/decisions.md W14)."""

    __tablename__ = "opportunity_project_contacts"
    __table_args__ = (
        # NULLS NOT DISTINCT: a contact is linked to a project at most once without a type.
        UniqueConstraint(
            "opportunity_project_id", "contact_id", "relationship_type", postgresql_nulls_not_distinct=True
        ),
        # Leading tenant_id serves the tenant cascade; contact_id the contact -> projects lookups
        # and the contacts foreign key (no other index leads with contact_id).
        Index(None, "tenant_id", "contact_id"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("contact_id", "contacts", ondelete="CASCADE"),
        tenant_fk("created_by", "users", ondelete=None),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    contact_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    relationship_type: Mapped[str | None] = mapped_column(String(50))
    influence_level: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text)

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="contacts", foreign_keys=[opportunity_project_id], lazy="raise"
    )
    contact: Mapped[Contact] = relationship(
        back_populates="opportunity_project_contacts", foreign_keys=[contact_id], lazy="raise"
    )
