"""CRM records: organisations (agencies, contractors, partners; hierarchical) and their contacts."""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Date, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import JSON_ARRAY, Base, Json, TenantScoped, Timestamps, Uuid, UUIDPrimaryKey, tenant_fk

if TYPE_CHECKING:
    from models.opportunities import OpportunityProjectContact
    from models.tenancy import Tenant

__all__ = ["Contact", "Organization"]


class Organization(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A government agency, contractor or partner; parent_organization_id builds the hierarchy."""

    __tablename__ = "organizations"
    __table_args__ = (
        Index(None, "tenant_id", "parent_organization_id"),  # children of an organization (0003)
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "is_active"),
        Index(None, "name"),
        tenant_fk("parent_organization_id", "organizations", ondelete="SET NULL"),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("updated_by", "users", ondelete=None),
    )

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    duns_number: Mapped[str | None] = mapped_column(String(13))
    sam_unique_id: Mapped[str | None] = mapped_column(String(50))
    cage_code: Mapped[str | None] = mapped_column(String(10))

    # Address
    address_line1: Mapped[str | None] = mapped_column(String(255))
    address_line2: Mapped[str | None] = mapped_column(String(255))
    city: Mapped[str | None] = mapped_column(String(100))
    state_province: Mapped[str | None] = mapped_column(String(100))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(100), nullable=False, server_default="United States")

    # Contact information
    phone: Mapped[str | None] = mapped_column(String(50))
    email: Mapped[str | None] = mapped_column(String(255))
    website: Mapped[str | None] = mapped_column(String(500))

    # Business classification
    organization_type: Mapped[str | None] = mapped_column(String(100))
    business_size: Mapped[str | None] = mapped_column(String(50))
    socioeconomic_certifications: Mapped[list[Any]] = mapped_column(
        Json, nullable=False, server_default=JSON_ARRAY
    )

    parent_organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    tenant: Mapped[Tenant] = relationship(back_populates="organizations", lazy="raise")
    parent_organization: Mapped[Organization | None] = relationship(
        back_populates="child_organizations",
        foreign_keys=[parent_organization_id],
        remote_side="Organization.id",
        lazy="raise",
    )
    child_organizations: Mapped[list[Organization]] = relationship(
        back_populates="parent_organization",
        foreign_keys=[parent_organization_id],
        lazy="raise",
        passive_deletes="all",
    )
    contacts: Mapped[list[Contact]] = relationship(
        back_populates="organization",
        foreign_keys="Contact.organization_id",
        lazy="raise",
        passive_deletes="all",
    )


class Contact(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A person the tenant deals with, usually working for an organisation."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index(None, "tenant_id", "organization_id"),  # an organization's contacts (0003)
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "is_active"),
        Index(None, "email"),
        tenant_fk("organization_id", "organizations", ondelete="SET NULL"),
        tenant_fk("created_by", "users", ondelete=None),
        tenant_fk("updated_by", "users", ondelete=None),
    )

    organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Person
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False)
    title: Mapped[str | None] = mapped_column(String(150))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(50))
    linkedin_url: Mapped[str | None] = mapped_column(String(500))

    # Professional classification
    contact_type: Mapped[str | None] = mapped_column(String(50))
    decision_maker_level: Mapped[int | None] = mapped_column(Integer)
    security_clearance: Mapped[str | None] = mapped_column(String(50))

    # Interaction tracking
    last_contact_date: Mapped[datetime.date | None] = mapped_column(Date)
    interaction_frequency: Mapped[str | None] = mapped_column(String(50))
    relationship_strength: Mapped[int | None] = mapped_column(Integer)

    notes: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)

    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    tenant: Mapped[Tenant] = relationship(back_populates="contacts", lazy="raise")
    organization: Mapped[Organization | None] = relationship(
        back_populates="contacts", foreign_keys=[organization_id], lazy="raise"
    )
    opportunity_project_contacts: Mapped[list[OpportunityProjectContact]] = relationship(
        back_populates="contact",
        foreign_keys="OpportunityProjectContact.contact_id",
        lazy="raise",
        passive_deletes="all",
    )
