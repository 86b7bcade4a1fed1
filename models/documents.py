"""Documents: categories, the document records (versions, storage location, extracted text and its
full-text index), their associations with other records and the access log.

The file bytes live in object storage (`storage/`); a row here is the metadata and the key.
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import INET, TSVECTOR
from sqlalchemy.orm import Mapped, Unmapped, mapped_column, relationship, unmapped_column
from sqlalchemy.sql.elements import ColumnElement

from models.base import (
    JSON_ARRAY,
    JSON_OBJECT,
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
    values_check,
)
from models.enums import ACTIVITY_ENTITY_TYPES, AccessLevel, ProcessingStatus, ScanStatus

if TYPE_CHECKING:
    from models.identity import User
    from models.opportunities import OpportunityProject
    from models.tenancy import Tenant

__all__ = [
    "DOCUMENT_SEARCH_VECTOR",
    "SEARCH_VECTOR_SQL",
    "Document",
    "DocumentAccessLog",
    "DocumentAssociation",
    "DocumentCategory",
]

# documents.search_vector: the name weighs more than the body. The seed's @@fulltext([name,
# extractedText]) is MySQL-only; PostgreSQL gets a stored generated tsvector with a GIN index.
# The name is indexed twice: as written, so a search for "Statement.pdf" finds it, and split
# on punctuation, because the English parser reads "Statement.pdf", "SOW-final.docx" or
# "v2.1" as one token (a file or host name) and a search for "statement" would miss it
# (migration 0007). A tsvector is capped at 1 MB, so only the first 200,000 characters of the
# text are indexed (an insert of a longer text would otherwise fail). Spelled as PostgreSQL
# prints it back (pg_get_expr), so `alembic check` finds nothing to report.
SEARCH_VECTOR_SQL = (
    "(setweight(to_tsvector('english'::regconfig, (COALESCE(name, ''::character varying))::text),"
    " 'A'::\"char\")"
    " || setweight(to_tsvector('english'::regconfig, regexp_replace((COALESCE(name, ''::character varying))::text,"
    " '[[:punct:]]+'::text, ' '::text, 'g'::text)), 'A'::\"char\"))"
    " || setweight(to_tsvector('english'::regconfig, \"left\"(COALESCE(extracted_text, ''::text), 200000)),"
    " 'B'::\"char\")"
)


class DocumentCategory(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A (hierarchical) document category of a tenant."""

    __tablename__ = "document_categories"
    __table_args__ = (
        # NULLS NOT DISTINCT: top-level categories (NULL parent) have unique names too.
        UniqueConstraint("tenant_id", "name", "parent_category_id", postgresql_nulls_not_distinct=True),
        UniqueConstraint("tenant_id", "id"),
        tenant_fk("parent_category_id", "document_categories", ondelete="SET NULL"),
    )

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    parent_category_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    is_system_category: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))

    tenant: Mapped[Tenant] = relationship(back_populates="document_categories", lazy="raise")
    parent_category: Mapped[DocumentCategory | None] = relationship(
        back_populates="child_categories",
        foreign_keys=[parent_category_id],
        remote_side="DocumentCategory.id",
        lazy="raise",
    )
    child_categories: Mapped[list[DocumentCategory]] = relationship(
        back_populates="parent_category",
        foreign_keys=[parent_category_id],
        lazy="raise",
        passive_deletes="all",
    )
    documents: Mapped[list[Document]] = relationship(
        back_populates="category", foreign_keys="Document.category_id", lazy="raise", passive_deletes="all"
    )


class Document(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """A stored file (one version of it) with its metadata and extracted text."""

    __tablename__ = "documents"
    __table_args__ = (
        Index(None, "tenant_id", "category_id"),  # a category's documents (0003)
        Index(None, "tenant_id", "parent_document_id"),  # a document's versions (0003)
        Index(None, "tenant_id", "uploaded_by"),  # a user's uploads (0003)
        # NULLS NOT DISTINCT: storage keys of documents outside any project are unique too.
        UniqueConstraint(
            "tenant_id", "opportunity_project_id", "storage_key", postgresql_nulls_not_distinct=True
        ),
        UniqueConstraint("tenant_id", "id"),
        Index(None, "tenant_id", "opportunity_project_id", "is_current_version"),
        Index("ix_documents_search_vector", "search_vector", postgresql_using="gin"),
        tenant_fk("opportunity_project_id", "opportunity_projects", ondelete="CASCADE"),
        tenant_fk("category_id", "document_categories", ondelete="SET NULL"),
        tenant_fk("uploaded_by", "users", ondelete="RESTRICT"),
        tenant_fk("parent_document_id", "documents", ondelete="SET NULL"),
        tenant_fk("deleted_by", "users", ondelete=None),
        values_check("access_level", AccessLevel),
        values_check("processing_status", ProcessingStatus),
        # Versions (migration 0013): a chain is the first version's id, which later versions name
        # as parent; one current row per chain, each version number once in it.
        Index(
            "ux_documents_current_version",
            "tenant_id",
            text("COALESCE(parent_document_id, id)"),
            unique=True,
            postgresql_where=text("is_current_version"),
        ),
        Index(
            "ux_documents_version_number", "tenant_id", text("COALESCE(parent_document_id, id)"), "version_number",
            unique=True,
        ),
        # The external data change that brought an attachment's version (migration 0013); partial: most
        # documents have none, and a whole-tenant index of NULLs would only tempt the planner.
        tenant_fk("external_data_change_id", "external_data_changes", ondelete="SET NULL"),
        Index(
            None, "tenant_id", "external_data_change_id", postgresql_where=text("external_data_change_id IS NOT NULL")
        ),
        # Lifecycle (migration 0015): who set a legal hold; the purge and scan jobs' lookups.
        tenant_fk("legal_hold_set_by", "users", ondelete=None),
        values_check("scan_status", ScanStatus),
        Index(
            "ix_documents_purge_due",
            "deleted_at",
            postgresql_where=text("is_deleted AND purged_at IS NULL AND NOT legal_hold"),
        ),
        Index("ix_documents_quarantined", "created_at", postgresql_where=text("scan_status = 'quarantined'")),
    )

    opportunity_project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # File identification
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    original_filename: Mapped[str] = mapped_column(String(255), nullable=False)
    file_extension: Mapped[str | None] = mapped_column(String(10))
    mime_type: Mapped[str] = mapped_column(String(100), nullable=False)
    file_size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)

    # Storage
    storage_provider: Mapped[str] = mapped_column(String(50), nullable=False, server_default="s3")
    storage_region: Mapped[str | None] = mapped_column(String(50))
    storage_bucket: Mapped[str | None] = mapped_column(String(100))
    storage_key: Mapped[str] = mapped_column(String(1000), nullable=False)
    storage_url: Mapped[str | None] = mapped_column(String(1000))

    # Integrity and encryption
    file_hash_md5: Mapped[str | None] = mapped_column(String(32))
    file_hash_sha256: Mapped[str | None] = mapped_column(String(64))
    is_encrypted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    encryption_key_id: Mapped[str | None] = mapped_column(String(100))

    # Classification
    category_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    document_type: Mapped[str | None] = mapped_column(String(100))
    document_source: Mapped[str] = mapped_column(String(50), nullable=False, server_default="internal")

    # External synchronisation
    external_document_id: Mapped[str | None] = mapped_column(String(255))
    external_sync_timestamp: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    is_synced_from_external: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    # The external data change (a SAM.gov notice version) that brought this version of an attachment.
    external_data_change_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Versions
    version_number: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    is_current_version: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    parent_document_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Access control
    access_level: Mapped[str] = mapped_column(String(50), nullable=False, server_default="project_team")
    is_searchable: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))

    # Content
    extracted_text: Mapped[str | None] = mapped_column(Text)
    content_preview: Mapped[str | None] = mapped_column(String(500))
    page_count: Mapped[int | None] = mapped_column(Integer)
    # Why text extraction failed (processing_status failed), naming the limit it hit (migration 0016).
    processing_error: Mapped[str | None] = mapped_column(Text)

    tags: Mapped[list[Any]] = mapped_column(Json, nullable=False, server_default=JSON_ARRAY)
    custom_metadata: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False, server_default=JSON_OBJECT)

    # Status
    processing_status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="pending")
    is_deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    deleted_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # Lifecycle (migration 0015): malware scan, legal hold, purge of the object.
    scan_status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="quarantined")
    scan_reason: Mapped[str | None] = mapped_column(Text)
    scanned_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    legal_hold: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    legal_hold_reason: Mapped[str | None] = mapped_column(Text)
    legal_hold_set_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    legal_hold_set_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    purged_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)

    uploaded_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    # Maintained by PostgreSQL and deliberately not mapped: a mapped generated column would come
    # back in the RETURNING of every INSERT and UPDATE (eager_defaults), and a tsvector can be as
    # large as the text. Queries use DOCUMENT_SEARCH_VECTOR (below).
    search_vector: Unmapped[Any] = unmapped_column(
        TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True), nullable=True, sort_order=50
    )

    tenant: Mapped[Tenant] = relationship(back_populates="documents", lazy="raise")
    opportunity_project: Mapped[OpportunityProject | None] = relationship(
        back_populates="documents", foreign_keys=[opportunity_project_id], lazy="raise"
    )
    category: Mapped[DocumentCategory | None] = relationship(
        back_populates="documents", foreign_keys=[category_id], lazy="raise"
    )
    uploader: Mapped[User] = relationship(
        back_populates="documents_uploaded", foreign_keys=[uploaded_by], lazy="raise"
    )
    parent_document: Mapped[Document | None] = relationship(
        back_populates="child_versions",
        foreign_keys=[parent_document_id],
        remote_side="Document.id",
        lazy="raise",
    )
    child_versions: Mapped[list[Document]] = relationship(
        back_populates="parent_document",
        foreign_keys=[parent_document_id],
        lazy="raise",
        passive_deletes="all",
    )
    associations: Mapped[list[DocumentAssociation]] = relationship(
        back_populates="document",
        foreign_keys="DocumentAssociation.document_id",
        lazy="raise",
        passive_deletes="all",
    )
    access_logs: Mapped[list[DocumentAccessLog]] = relationship(
        back_populates="document",
        foreign_keys="DocumentAccessLog.document_id",
        lazy="raise",
        passive_deletes="all",
    )


# Declared after the class because created_at comes from a mixin.
Index(None, Document.tenant_id, Document.document_type, Document.created_at.desc())

# The full-text column for search queries, e.g. `where(DOCUMENT_SEARCH_VECTOR.bool_op("@@")(query))`.
DOCUMENT_SEARCH_VECTOR: ColumnElement[Any] = Document.__table__.c.search_vector


class DocumentAssociation(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A link from a document to another record (polymorphic: entity_type, entity_id; no FK)."""

    __tablename__ = "document_associations"
    __table_args__ = (
        # NULLS NOT DISTINCT: an untyped association of a document with a record exists once.
        UniqueConstraint(
            "document_id", "entity_type", "entity_id", "association_type", postgresql_nulls_not_distinct=True
        ),
        # Leading tenant_id serves the tenant cascade; (entity_type, entity_id) the "documents of
        # this record" lookup, which no other index serves.
        Index(None, "tenant_id", "entity_type", "entity_id"),
        tenant_fk("document_id", "documents", ondelete="CASCADE"),
        tenant_fk("created_by", "users", ondelete=None),
        values_check("entity_type", ACTIVITY_ENTITY_TYPES),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    entity_type: Mapped[str] = mapped_column(String(50), nullable=False)
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    association_type: Mapped[str | None] = mapped_column(String(50))
    notes: Mapped[str | None] = mapped_column(Text)

    created_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    document: Mapped[Document] = relationship(
        back_populates="associations", foreign_keys=[document_id], lazy="raise"
    )


class DocumentAccessLog(UUIDPrimaryKey, TenantScoped, Base):
    """One access (view, download, ...) to a document, successful or not; append-only."""

    __tablename__ = "document_access_logs"
    __table_args__ = (
        Index(None, "tenant_id"),
        tenant_fk("document_id", "documents", ondelete="CASCADE"),
        tenant_fk("user_id", "users", ondelete=None),
        CheckConstraint("risk_level IN ('normal', 'elevated')", name="risk_level_values"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)

    access_type: Mapped[str] = mapped_column(String(50), nullable=False)
    ip_address: Mapped[IPAddress | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    success: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # normal | elevated (migration 0014): every read of a confidential document is elevated.
    risk_level: Mapped[str] = mapped_column(String(20), nullable=False, server_default="normal")

    accessed_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)

    document: Mapped[Document] = relationship(
        back_populates="access_logs", foreign_keys=[document_id], lazy="raise"
    )


Index(None, DocumentAccessLog.document_id, DocumentAccessLog.user_id, DocumentAccessLog.accessed_at.desc())
