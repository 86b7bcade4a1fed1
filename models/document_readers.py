"""The named readers of restricted and confidential documents (migration 0014).

A `restricted` or `confidential` document is read only by its named readers and its uploader
(docs/enums.md, AccessLevel; the documents row rule in auth/rules.py). A row here names one reader of
one document (one version: each version is its own documents row, and a new version copies the
readers of the version it is made from). Readers are added and removed by the documentReaderAdd /
documentReaderRemove mutations; each is an event row of the document's audit trail in the same
transaction, so the table itself is not audited by the flush hook (models/audit_trail.py NOT_AUDITED).
"""

from __future__ import annotations

import uuid

from sqlalchemy import Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAt, TenantScoped, Uuid, UUIDPrimaryKey, tenant_fk

__all__ = ["DocumentReader"]


class DocumentReader(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """One named reader (a user) of one restricted or confidential document."""

    __tablename__ = "document_readers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "document_id", "user_id"),
        # The row rule's lookup: the documents a user is named on.
        Index(None, "tenant_id", "user_id", "document_id"),
        tenant_fk("document_id", "documents", ondelete="CASCADE"),
        tenant_fk("user_id", "users", ondelete="CASCADE"),
        tenant_fk("added_by", "users", ondelete=None),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    added_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
