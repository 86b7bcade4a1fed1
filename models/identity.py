"""Identity: users, roles, role assignments (tenant-wide or per project) and sessions.

References between tenant-owned rows are composite foreign keys `(tenant_id, x) -> (tenant_id, id)`
so they cannot cross tenants. The ORM relationships join on the id column alone (`foreign_keys=`):
the id is the primary key, so the join is the same, and the ORM never writes tenant_id through a
relationship (assigning None to a reference must null the reference, not tenant_id).
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import (
    JSON_ARRAY,
    NOW,
    Base,
    CreatedAt,
    IPAddress,
    Json,
    TenantScoped,
    Timestamps,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
)

if TYPE_CHECKING:
    from models.activities import Activity
    from models.audit_log import AuditLog, ChangeHistory
    from models.documents import Document
    from models.external_data import ExternalDataChange
    from models.opportunities import OpportunityProject
    from models.tenancy import Tenant

__all__ = ["Role", "User", "UserRole", "UserSession"]


class User(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A person who signs in to one tenant, or the tenant's system user (is_system)."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        UniqueConstraint("tenant_id", "id"),  # target of the composite foreign keys
        # Sign-in matches emails case-insensitively, so two spellings of one address cannot coexist.
        Index("uq_users_tenant_id_lower_email", "tenant_id", func.lower(text("email")), unique=True),
        Index(None, "tenant_id", "is_active"),
        Index(None, "email"),
        tenant_fk("created_by", "users", ondelete=None),
    )

    # Authentication
    email: Mapped[str] = mapped_column(String(255), nullable=False)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_saml_user: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    saml_id: Mapped[str | None] = mapped_column(String(255))

    # Profile
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False)
    title: Mapped[str | None] = mapped_column(String(150))
    phone: Mapped[str | None] = mapped_column(String(50))
    avatar_url: Mapped[str | None] = mapped_column(String(500))

    # Account status
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # The tenant's non-person actor (created by the tenant bootstrap trigger; password_hash NULL).
    # Authentication must refuse it whatever its other columns say.
    is_system: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    email_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    last_login_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    password_changed_at: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW
    )

    # Security
    failed_login_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    locked_until: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    mfa_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # Added for authentication (migration 0002, docs/decisions.md A1):
    # the last TOTP time step accepted, so each code works once;
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # when the current run of failed logins began (failures older than the window do not count);
    failed_login_window_started_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    # an admin-set temporary password must be changed at the next sign-in.
    must_change_password: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    tenant: Mapped[Tenant] = relationship(back_populates="users", lazy="raise")
    user_roles: Mapped[list[UserRole]] = relationship(
        back_populates="user", foreign_keys="UserRole.user_id", lazy="raise", passive_deletes="all"
    )
    user_sessions: Mapped[list[UserSession]] = relationship(
        back_populates="user", foreign_keys="UserSession.user_id", lazy="raise", passive_deletes="all"
    )
    opportunity_projects_as_capture: Mapped[list[OpportunityProject]] = relationship(
        back_populates="capture_manager",
        foreign_keys="OpportunityProject.assigned_capture_manager",
        lazy="raise",
        passive_deletes="all",
    )
    opportunity_projects_as_proposal: Mapped[list[OpportunityProject]] = relationship(
        back_populates="proposal_manager",
        foreign_keys="OpportunityProject.assigned_proposal_manager",
        lazy="raise",
        passive_deletes="all",
    )
    documents_uploaded: Mapped[list[Document]] = relationship(
        back_populates="uploader", foreign_keys="Document.uploaded_by", lazy="raise", passive_deletes="all"
    )
    # The seed's `activitiesCreated` (relation "ActivityCreator") points at assigned_to: it is
    # the assignee's list. created_activities is the creator's (docs/decisions.md).
    assigned_activities: Mapped[list[Activity]] = relationship(
        back_populates="assignee", foreign_keys="Activity.assigned_to", lazy="raise", passive_deletes="all"
    )
    created_activities: Mapped[list[Activity]] = relationship(
        back_populates="creator", foreign_keys="Activity.created_by", lazy="raise", passive_deletes="all"
    )
    audit_logs: Mapped[list[AuditLog]] = relationship(
        back_populates="user", foreign_keys="AuditLog.user_id", lazy="raise", passive_deletes="all"
    )
    changes_created: Mapped[list[ChangeHistory]] = relationship(
        back_populates="changed_by_user",
        foreign_keys="ChangeHistory.changed_by_user_id",
        lazy="raise",
        passive_deletes="all",
    )
    changes_acknowledged: Mapped[list[ExternalDataChange]] = relationship(
        back_populates="acknowledged_by_user",
        foreign_keys="ExternalDataChange.acknowledged_by",
        lazy="raise",
        passive_deletes="all",
    )


class Role(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A named set of permissions (JSON array of permission strings)."""

    __tablename__ = "roles"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "is_system_role"),
    )

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    is_system_role: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    permissions: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)

    tenant: Mapped[Tenant] = relationship(back_populates="roles", lazy="raise")
    user_roles: Mapped[list[UserRole]] = relationship(
        back_populates="role", foreign_keys="UserRole.role_id", lazy="raise", passive_deletes="all"
    )


class UserRole(UUIDPrimaryKey, TenantScoped, Base):
    """A role granted to a user, tenant-wide (opportunity_project_id NULL) or on one project."""

    __tablename__ = "user_roles"
    __table_args__ = (
        Index(None, "tenant_id", "role_id"),  # a role's grants (0003)
        Index(None, "tenant_id", "opportunity_project_id"),  # a project's grants (0003)
        # NULLS NOT DISTINCT: one tenant-wide grant of a role per user (NULL project), not many.
        UniqueConstraint("user_id", "role_id", "opportunity_project_id", postgresql_nulls_not_distinct=True),
        # A caller's assignments, index-only: the principal lookup's scan by user, a compiled read's probe of one
        # project (0022; by user and role: the unique constraint's index).
        Index(None, "user_id", "opportunity_project_id", postgresql_include=["role_id", "tenant_id", "expires_at"]),
        Index(None, "tenant_id"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
        tenant_fk("role_id", "roles", ondelete="CASCADE"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("assigned_by", "users", ondelete=None),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    role_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    opportunity_project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    assigned_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    assigned_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    expires_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    user: Mapped[User] = relationship(back_populates="user_roles", foreign_keys=[user_id], lazy="raise")
    role: Mapped[Role] = relationship(back_populates="user_roles", foreign_keys=[role_id], lazy="raise")
    opportunity_project: Mapped[OpportunityProject | None] = relationship(
        back_populates="user_roles", foreign_keys=[opportunity_project_id], lazy="raise"
    )


class UserSession(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A signed-in session; only the SHA-256 of its token is stored."""

    __tablename__ = "user_sessions"
    __table_args__ = (
        # The seed's extra @@index([sessionTokenHash]) is dropped: the unique index serves it.
        Index(None, "user_id", "is_active"),
        Index(None, "tenant_id"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    session_token_hash: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)

    last_activity_at: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW
    )
    expires_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    ip_address: Mapped[IPAddress | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    terminated_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    termination_reason: Mapped[str | None] = mapped_column(String(100))

    mfa_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    permissions_snapshot: Mapped[Any] = mapped_column(Json, nullable=True)

    user: Mapped[User] = relationship(back_populates="user_sessions", foreign_keys=[user_id], lazy="raise")
