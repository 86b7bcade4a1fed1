"""Tenants (the customer organisations, the root of row-level security) and their configuration.

Inserting a tenant fires gwm_tenant_bootstrap() (see the initial migration), which gives the new
tenant its system user and its "Manual entry" external source in the same statement.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, CheckConstraint, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, Json, TenantScoped, Timestamps, Timestamptz, Uuid, UUIDPrimaryKey

if TYPE_CHECKING:
    from models.activities import Activity
    from models.audit_log import AuditLog
    from models.crm import Contact, Organization
    from models.documents import Document, DocumentCategory
    from models.external_data import ExternalOpportunitySource
    from models.identity import Role, User
    from models.opportunities import OpportunityProject

__all__ = [
    "Tenant",
    "TenantConfiguration",
    "system_user_id",
]

# Children are removed by the database (ON DELETE CASCADE from tenants), never by the ORM: with
# lazy="raise" collections the ORM could not load them to delete them anyway.
_CHILDREN: dict[str, Any] = {"lazy": "raise", "back_populates": "tenant", "passive_deletes": "all"}


class Tenant(UUIDPrimaryKey, Timestamps, Base):
    """A customer organisation. Row-level security on this table filters on `id`."""

    __tablename__ = "tenants"
    __table_args__ = (
        # Lower-case DNS labels only: subdomains are matched case-insensitively at sign-in, so
        # two that differ only in case must not both exist (migration 0002).
        CheckConstraint("subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'", name="subdomain_format"),
    )

    name: Mapped[str] = mapped_column(String(255), nullable=False)
    subdomain: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)

    plan_type: Mapped[str] = mapped_column(String(50), nullable=False)
    max_users: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("100"))
    max_opportunity_projects: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("500"))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    fedramp_compliant: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    subscription_status: Mapped[str | None] = mapped_column(String(50))
    subscription_expires_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    billing_email: Mapped[str | None] = mapped_column(String(255))

    # Platform operators, not users of the tenant: no foreign key (docs/decisions.md).
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    users: Mapped[list[User]] = relationship(**_CHILDREN)
    roles: Mapped[list[Role]] = relationship(**_CHILDREN)
    opportunity_projects: Mapped[list[OpportunityProject]] = relationship(**_CHILDREN)
    organizations: Mapped[list[Organization]] = relationship(**_CHILDREN)
    contacts: Mapped[list[Contact]] = relationship(**_CHILDREN)
    documents: Mapped[list[Document]] = relationship(**_CHILDREN)
    activities: Mapped[list[Activity]] = relationship(**_CHILDREN)
    audit_logs: Mapped[list[AuditLog]] = relationship(**_CHILDREN)
    external_opportunity_sources: Mapped[list[ExternalOpportunitySource]] = relationship(**_CHILDREN)
    tenant_configurations: Mapped[list[TenantConfiguration]] = relationship(**_CHILDREN)
    # Not in the seed's Tenant model although DocumentCategory.tenant points here (seed gap).
    document_categories: Mapped[list[DocumentCategory]] = relationship(**_CHILDREN)


class TenantConfiguration(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """One configuration entry (key -> JSON value) of a tenant."""

    __tablename__ = "tenant_configurations"
    __table_args__ = (UniqueConstraint("tenant_id", "config_key"),)

    config_key: Mapped[str] = mapped_column(String(100), nullable=False)
    config_value: Mapped[Any] = mapped_column(Json, nullable=False)
    config_type: Mapped[str] = mapped_column(String(50), nullable=False)
    is_encrypted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    tenant: Mapped[Tenant] = relationship(back_populates="tenant_configurations", lazy="raise")


def system_user_id(tenant_id: uuid.UUID) -> uuid.UUID:
    """The id of the tenant's system user, as the bootstrap trigger derives it (migration 0001:
    `md5(tenant_id || '/system-user')::uuid`), so no query is needed to know it."""
    return uuid.UUID(hashlib.md5(f"{tenant_id}/system-user".encode(), usedforsecurity=False).hexdigest())
