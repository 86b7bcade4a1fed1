"""The audit trail: one AuditLog row per action, ChangeHistory rows per changed field, and
PermissionAudit rows per permission check that the gateway records (denials above all).

Rows here are written by the flush hook and the side-effect writer (models/), never by hand in
a resolver. entity_type/entity_id are polymorphic (no foreign key).
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import (
    NOW,
    Base,
    CreatedAt,
    IPAddress,
    Json,
    TenantScoped,
    Timestamptz,
    Uuid,
    UUIDPrimaryKey,
    tenant_fk,
    values_check,
)
from models.enums import ChangeSource, EntityType, ImpactLevel, RiskLevel

if TYPE_CHECKING:
    from models.identity import User
    from models.tenancy import Tenant

__all__ = ["AuditChained", "AuditLog", "ChangeHistory", "PermissionAudit"]


class AuditChained:
    """The hash chain's columns (W1): models/audit_chain.py fills them, `gwm audit verify` checks them.

    seq counts a tenant's rows per table from 1; prev_hash is the previous row's row_hash (NULL
    for seq 1); row_hash is the HMAC-SHA256 of the row under the key named by hash_key_id. Rows
    written before migration 0005 have a seq and no hash (both hash columns NULL).
    """

    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, sort_order=95)
    prev_hash: Mapped[bytes | None] = mapped_column(LargeBinary, sort_order=95)
    row_hash: Mapped[bytes | None] = mapped_column(LargeBinary, sort_order=95)
    hash_key_id: Mapped[str | None] = mapped_column(String(32), sort_order=95)


def _chain_constraints() -> tuple[UniqueConstraint | CheckConstraint, ...]:
    """UNIQUE (tenant_id, seq) and the shape of the chain columns (W1)."""
    return (
        UniqueConstraint("tenant_id", "seq"),
        CheckConstraint(
            "seq > 0 AND (row_hash IS NULL) = (hash_key_id IS NULL)"
            " AND (row_hash IS NULL OR octet_length(row_hash) = 32)"
            " AND (prev_hash IS NULL OR (row_hash IS NOT NULL AND octet_length(prev_hash) = 32))",
            name="audit_chain",
        ),
    )


def _trace_id_format() -> CheckConstraint:
    """A trace id is 32 lower-case hex digits (W25, migration 0020)."""
    return CheckConstraint("trace_id ~ '^[0-9a-f]{32}$'", name="trace_id_format")


class AuditLog(UUIDPrimaryKey, TenantScoped, AuditChained, Base):
    """One audited action: who, what, on which record, before and after, from which request.

    entity_type is free text here (not checked): authentication events use values such as
    "session" that are not tables.
    """

    __tablename__ = "audit_logs"
    __table_args__ = (
        # W2: RESTRICT, not the seed's SET NULL: a user with audit rows is deactivated, never deleted.
        tenant_fk("user_id", "users", ondelete="RESTRICT"),
        values_check("risk_level", RiskLevel),
        *_chain_constraints(),
        _trace_id_format(),
    )

    # Actor
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    session_id: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[IPAddress | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)

    # Action
    action_type: Mapped[str] = mapped_column(String(100), nullable=False)
    entity_type: Mapped[str] = mapped_column(String(100), nullable=False)
    entity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    operation_description: Mapped[str | None] = mapped_column(String(500))

    # Data changes
    before_values: Mapped[Any] = mapped_column(Json, nullable=True)
    after_values: Mapped[Any] = mapped_column(Json, nullable=True)
    changed_fields: Mapped[Any] = mapped_column(Json, nullable=True)
    change_reason: Mapped[str | None] = mapped_column(String(255))

    # Security and compliance
    access_granted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    permission_used: Mapped[str | None] = mapped_column(String(100))
    risk_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="low")

    # Request context
    request_id: Mapped[str | None] = mapped_column(String(100))
    # W25: the request's W3C trace id, filled in by the audit chain (models/tracing.py TRACE_ID).
    trace_id: Mapped[str | None] = mapped_column(String(32))
    api_endpoint: Mapped[str | None] = mapped_column(String(255))
    http_method: Mapped[str | None] = mapped_column(String(10))
    response_status: Mapped[int | None] = mapped_column(Integer)

    timestamp_utc: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)

    tenant: Mapped[Tenant] = relationship(back_populates="audit_logs", lazy="raise")
    user: Mapped[User | None] = relationship(
        back_populates="audit_logs", foreign_keys=[user_id], lazy="raise"
    )


Index(None, AuditLog.tenant_id, AuditLog.user_id, AuditLog.timestamp_utc.desc())
Index(None, AuditLog.tenant_id, AuditLog.entity_type, AuditLog.entity_id, AuditLog.timestamp_utc.desc())
Index(None, AuditLog.action_type, AuditLog.timestamp_utc.desc())


class ChangeHistory(UUIDPrimaryKey, TenantScoped, CreatedAt, AuditChained, Base):
    """One changed field of one record; the rows of one change share change_batch_id."""

    __tablename__ = "change_history"
    __table_args__ = (
        # Target of the parent_change_id composite FK; it also leads with tenant_id, so
        # change_history needs no separate tenant_id index.
        UniqueConstraint("tenant_id", "id"),
        # W2: RESTRICT (the user) and NO ACTION (the parent), not SET NULL: nulling a reference
        # would rewrite a signed row.
        tenant_fk("changed_by_user_id", "users", ondelete="RESTRICT"),
        tenant_fk("parent_change_id", "change_history", ondelete=None),
        values_check("entity_type", EntityType),
        values_check("change_source", ChangeSource),
        values_check("change_impact_level", ImpactLevel),
        *_chain_constraints(),
    )

    entity_type: Mapped[str] = mapped_column(String(100), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    change_timestamp: Mapped[datetime.datetime] = mapped_column(
        Timestamptz, nullable=False, server_default=NOW
    )
    field_name: Mapped[str] = mapped_column(String(100), nullable=False)
    old_value: Mapped[Any] = mapped_column(Json, nullable=True)
    new_value: Mapped[Any] = mapped_column(Json, nullable=True)

    # Source
    changed_by_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    changed_by_system_process: Mapped[str | None] = mapped_column(String(100))
    change_source: Mapped[str] = mapped_column(String(50), nullable=False)
    change_category: Mapped[str | None] = mapped_column(String(50))

    # Impact
    change_impact_level: Mapped[str] = mapped_column(
        String(20), nullable=False, server_default="informational"
    )
    notification_triggered: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )

    # Grouping
    parent_change_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    change_batch_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    changed_by_user: Mapped[User | None] = relationship(
        back_populates="changes_created", foreign_keys=[changed_by_user_id], lazy="raise"
    )
    parent_change: Mapped[ChangeHistory | None] = relationship(
        back_populates="child_changes",
        foreign_keys=[parent_change_id],
        remote_side="ChangeHistory.id",
        lazy="raise",
    )
    child_changes: Mapped[list[ChangeHistory]] = relationship(
        back_populates="parent_change", foreign_keys=[parent_change_id], lazy="raise", passive_deletes="all"
    )


Index(None, ChangeHistory.entity_type, ChangeHistory.entity_id, ChangeHistory.change_timestamp.desc())
Index(None, ChangeHistory.changed_by_user_id, ChangeHistory.change_timestamp.desc())


class PermissionAudit(UUIDPrimaryKey, TenantScoped, AuditChained, Base):
    """One recorded permission check (resource, permission, outcome, why).

    The gateway writes one row per (request, permission, field path) it denied, with the number of
    denials: a list of 100 projects whose scores the caller may not read is one row, count 100.
    """

    __tablename__ = "permission_audit"
    __table_args__ = (
        Index(None, "resource_type", "permission_granted"),
        Index(None, "tenant_id"),
        tenant_fk("user_id", "users", ondelete="RESTRICT"),  # W2
        Index(
            "uq_permission_audit_request_permission_path",
            "tenant_id",
            "request_id",
            "permission_checked",
            "field_path",
            unique=True,
        ),
        *_chain_constraints(),
        _trace_id_format(),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    # Resource
    resource_type: Mapped[str] = mapped_column(String(100), nullable=False)
    resource_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    permission_checked: Mapped[str] = mapped_column(String(100), nullable=False)
    permission_granted: Mapped[bool] = mapped_column(Boolean, nullable=False)

    # Decision
    role_used: Mapped[str | None] = mapped_column(String(100))
    explicit_permission: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    denial_reason: Mapped[str | None] = mapped_column(Text)

    # Context
    ip_address: Mapped[IPAddress | None] = mapped_column(INET)
    timestamp_utc: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    # R1: which request, which GraphQL field (list indices removed), how many times.
    request_id: Mapped[str | None] = mapped_column(String(100))
    trace_id: Mapped[str | None] = mapped_column(String(32))  # W25, as audit_logs.trace_id
    field_path: Mapped[str | None] = mapped_column(Text)
    denied_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))


Index(None, PermissionAudit.user_id, PermissionAudit.timestamp_utc.desc())
