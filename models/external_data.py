"""External data integration: the sources (APIs such as SAM.gov, plus each tenant's "Manual entry"
source), the versioned opportunity snapshots, detected changes, per-project polling schedules
and the log of every API call.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, CheckConstraint, Date, Index, Integer, Numeric, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import (
    JSON_ARRAY,
    NOW,
    Base,
    CreatedAt,
    Json,
    TenantScoped,
    Timestamps,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
    values_check,
)
from models.enums import ChangeType, ConnectionStatus, ImpactLevel, PollingPriority

if TYPE_CHECKING:
    from models.identity import User
    from models.opportunities import OpportunityProject
    from models.tenancy import Tenant

__all__ = [
    "ApiIntegrationLog",
    "ExternalDataChange",
    "ExternalOpportunityData",
    "ExternalOpportunitySource",
    "PollingConfiguration",
]


class ExternalOpportunitySource(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """An API the tenant pulls opportunities from, with its (encrypted) credentials and health."""

    __tablename__ = "external_opportunity_sources"
    __table_args__ = (
        UniqueConstraint("tenant_id", "source_name"),
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "is_active"),
        tenant_fk("created_by", "users", ondelete=None),
        values_check("connection_status", ConnectionStatus),
        CheckConstraint("timeout_seconds > 0", name="timeout_seconds_positive"),
    )

    source_name: Mapped[str] = mapped_column(String(100), nullable=False)
    api_endpoint: Mapped[str] = mapped_column(String(500), nullable=False)
    api_version: Mapped[str] = mapped_column(String(20), nullable=False)

    # Authentication (per tenant: FedRAMP)
    authentication_type: Mapped[str] = mapped_column(String(50), nullable=False)
    api_credentials_encrypted: Mapped[Any] = mapped_column(Json, nullable=False)

    # Rate limiting
    rate_limit_per_hour: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1000"))
    # Seconds, fractions allowed (0009: a sub-second timeout for an internal endpoint).
    timeout_seconds: Mapped[Decimal] = mapped_column(Numeric(6, 3), nullable=False, server_default=text("30"))
    retry_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))

    # Health
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    connection_status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="unknown")
    last_successful_call: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    consecutive_errors: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    tenant: Mapped[Tenant] = relationship(back_populates="external_opportunity_sources", lazy="raise")
    opportunity_projects: Mapped[list[OpportunityProject]] = relationship(
        back_populates="external_source",
        foreign_keys="OpportunityProject.external_source_id",
        lazy="raise",
        passive_deletes="all",
    )
    polling_configurations: Mapped[list[PollingConfiguration]] = relationship(
        back_populates="external_source",
        foreign_keys="PollingConfiguration.external_source_id",
        lazy="raise",
        passive_deletes="all",
    )
    api_integration_logs: Mapped[list[ApiIntegrationLog]] = relationship(
        back_populates="external_source",
        foreign_keys="ApiIntegrationLog.external_source_id",
        lazy="raise",
        passive_deletes="all",
    )
    external_data_changes: Mapped[list[ExternalDataChange]] = relationship(
        back_populates="external_source",
        foreign_keys="ExternalDataChange.external_source_id",
        lazy="raise",
        passive_deletes="all",
    )


class ExternalOpportunityData(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """One version of a project's opportunity as the source returned it (full history kept)."""

    __tablename__ = "external_opportunity_data"
    __table_args__ = (
        Index(None, "opportunity_project_id", "is_current_version"),
        Index(None, "tenant_id"),
        # A notice revision already stored (0009).
        Index(None, "tenant_id", "notice_id"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        CheckConstraint("jsonb_typeof(resource_links) = 'array'", name="resource_links_array"),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    # Version
    data_snapshot_timestamp: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False)
    version_number: Mapped[int] = mapped_column(Integer, nullable=False)
    is_current_version: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    # Opportunity details
    title: Mapped[str | None] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    opportunity_type: Mapped[str | None] = mapped_column(String(100))
    set_aside_type: Mapped[str | None] = mapped_column(String(100))
    naics_codes: Mapped[str | None] = mapped_column(String(200))
    estimated_value_min: Mapped[Decimal | None] = mapped_column(Numeric(15, 2))
    estimated_value_max: Mapped[Decimal | None] = mapped_column(Numeric(15, 2))
    posting_date: Mapped[datetime.date | None] = mapped_column(Date)
    response_due_date: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    place_of_performance: Mapped[str | None] = mapped_column(Text)

    # Status and amendments
    solicitation_status: Mapped[str | None] = mapped_column(String(50))
    amendment_number: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))

    raw_json_data: Mapped[Any] = mapped_column(Json, nullable=False)

    # Sync (migration 0009): the source's id of this revision (SAM.gov: each amendment is a new
    # noticeId), the attachments it listed (normalised: trimmed, de-duplicated, sorted), and the
    # canonical payload hash it was stored under (sync/diff.py).
    notice_id: Mapped[str | None] = mapped_column(String(100))
    resource_links: Mapped[Any] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    payload_hash: Mapped[str | None] = mapped_column(String(64))

    # Change tracking
    change_detected_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    changed_fields: Mapped[Any] = mapped_column(Json, nullable=True)

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="external_opportunity_data", foreign_keys=[opportunity_project_id], lazy="raise"
    )


Index(
    None,
    ExternalOpportunityData.opportunity_project_id,
    ExternalOpportunityData.data_snapshot_timestamp.desc(),
)


class ExternalDataChange(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A change the poller detected in a project's opportunity, classified and acknowledgeable."""

    __tablename__ = "external_data_changes"
    __table_args__ = (
        # Target of activities.external_change_reference; it also leads with tenant_id, so no
        # separate tenant_id index is needed.
        UniqueConstraint("tenant_id", "id"),
        Index(None, "acknowledged_by", "acknowledged_at"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("external_source_id", "external_opportunity_sources", ondelete="RESTRICT"),
        tenant_fk("acknowledged_by", "users", ondelete="SET NULL"),
        values_check("change_type", ChangeType),
        values_check("impact_level", ImpactLevel),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    # Change
    change_timestamp: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW
    )
    changed_fields: Mapped[Any] = mapped_column(Json, nullable=False)
    previous_values: Mapped[Any] = mapped_column(Json, nullable=True)
    new_values: Mapped[Any] = mapped_column(Json, nullable=True)

    # Classification
    change_type: Mapped[str] = mapped_column(String(50), nullable=False)
    impact_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="informational")

    # Notification and acknowledgment
    notification_sent: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    acknowledged_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    acknowledgment_notes: Mapped[str | None] = mapped_column(Text)

    # Source reference
    external_source_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    external_change_id: Mapped[str | None] = mapped_column(String(255))

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="external_data_changes", foreign_keys=[opportunity_project_id], lazy="raise"
    )
    external_source: Mapped[ExternalOpportunitySource] = relationship(
        back_populates="external_data_changes", foreign_keys=[external_source_id], lazy="raise"
    )
    acknowledged_by_user: Mapped[User | None] = relationship(
        back_populates="changes_acknowledged", foreign_keys=[acknowledged_by], lazy="raise"
    )


Index(None, ExternalDataChange.opportunity_project_id, ExternalDataChange.change_timestamp.desc())
# The externalDataChanges list: newest first within the tenant, keyset by id (0003).
Index(None, ExternalDataChange.tenant_id, ExternalDataChange.change_timestamp.desc(), ExternalDataChange.id)


class PollingConfiguration(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """How often and how urgently one project is refreshed from its source."""

    __tablename__ = "polling_configurations"
    __table_args__ = (
        Index(None, "tenant_id", "external_source_id"),  # a source's schedules (0003)
        Index(None, "is_active", "next_poll_timestamp"),
        Index(None, "opportunity_project_id", "is_active"),
        Index(None, "tenant_id"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("external_source_id", "external_opportunity_sources", ondelete="RESTRICT"),
        tenant_fk("created_by", "users", ondelete=None),
        values_check("priority_level", PollingPriority),
    )

    opportunity_project_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    external_source_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    # Settings
    polling_frequency_minutes: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("60"))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    priority_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="normal")

    # Timing
    last_poll_timestamp: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    next_poll_timestamp: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    # Error handling
    consecutive_errors: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The lease of the worker refreshing it (0009): held until claimed_until, then claimable again.
    claimed_until: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    max_retries: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))
    backoff_multiplier: Mapped[Decimal] = mapped_column(
        Numeric(3, 2), nullable=False, server_default=text("2.0")
    )

    # Performance
    average_response_time_ms: Mapped[int | None] = mapped_column(Integer)
    success_rate_percentage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    opportunity_project: Mapped[OpportunityProject] = relationship(
        back_populates="polling_configurations", foreign_keys=[opportunity_project_id], lazy="raise"
    )
    external_source: Mapped[ExternalOpportunitySource] = relationship(
        back_populates="polling_configurations", foreign_keys=[external_source_id], lazy="raise"
    )


class ApiIntegrationLog(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """One call to an external API (secrets redacted), for monitoring and debugging."""

    __tablename__ = "api_integration_logs"
    __table_args__ = (
        # Leading tenant_id serves the tenant cascade; opportunity_project_id the projects foreign
        # key (ON DELETE SET NULL would otherwise scan this, the largest log, per deleted project).
        Index(None, "tenant_id", "opportunity_project_id"),
        tenant_fk("external_source_id", "external_opportunity_sources", ondelete="RESTRICT"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="SET NULL"),
    )

    external_source_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    opportunity_project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Request
    api_call_timestamp: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW
    )
    endpoint_called: Mapped[str] = mapped_column(String(500), nullable=False)
    http_method: Mapped[str] = mapped_column(String(10), nullable=False)
    http_status: Mapped[int | None] = mapped_column(Integer)

    # Payloads
    request_headers: Mapped[Any] = mapped_column(Json, nullable=True)
    request_payload: Mapped[Any] = mapped_column(Json, nullable=True)
    response_headers: Mapped[Any] = mapped_column(Json, nullable=True)
    response_payload: Mapped[Any] = mapped_column(Json, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text)

    # Performance
    processing_time_ms: Mapped[int | None] = mapped_column(Integer)
    rate_limit_remaining: Mapped[int | None] = mapped_column(Integer)
    rate_limit_reset_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    # Outcome
    success: Mapped[bool] = mapped_column(Boolean, nullable=False)
    retry_attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))

    external_source: Mapped[ExternalOpportunitySource] = relationship(
        back_populates="api_integration_logs", foreign_keys=[external_source_id], lazy="raise"
    )
    opportunity_project: Mapped[OpportunityProject | None] = relationship(
        back_populates="api_integration_logs", foreign_keys=[opportunity_project_id], lazy="raise"
    )


Index(None, ApiIntegrationLog.external_source_id, ApiIntegrationLog.api_call_timestamp.desc())
Index(None, ApiIntegrationLog.success, ApiIntegrationLog.api_call_timestamp.desc())
