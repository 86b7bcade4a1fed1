"""Trusted documents and automatic persisted queries (migration 0019; docs/decisions.md D32).

- `TrustedDocument`: a GraphQL document a tenant registered (`trustedDocumentRegister`, permission
  `graphql:document:register`), keyed by the sha256 of its exact text. A caller without
  `graphql:adhoc` may run only these and the files of graphql/operations/ (schema/trusted_documents.py).
  A row is added or removed, never edited (no updated_at; W12 does not apply); each change is an
  event row of the tenant's audit trail in the same transaction, so the table is not audited by the
  flush hook (models/audit_trail.py NOT_AUDITED).
- `PersistedQuery`: the automatic persisted queries cache (Apollo's protocol): the text a caller
  holding `graphql:adhoc` sent with its hash, kept in the database so every gateway process finds
  it. A cache, not a grant: an entry never makes a document runnable for a caller without
  `graphql:adhoc`. Operational state, not audited (W11); bounded per tenant (oldest entries dropped).

Both are tenant-owned (row-level security) and bounded per tenant.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import CheckConstraint, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAt, TenantScoped, Uuid, UUIDPrimaryKey, tenant_fk

__all__ = ["MAX_DOCUMENT_CHARS", "PersistedQuery", "TrustedDocument", "document_hash"]

#: The longest document text either table keeps (the input guard's MAX_TEXT_LENGTH).
MAX_DOCUMENT_CHARS = 100_000

_HASH_CHECK = "sha256_hash ~ '^[0-9a-f]{64}$'"
_LENGTH_CHECK = f"char_length(document) <= {MAX_DOCUMENT_CHARS}"


def document_hash(text: str) -> str:
    """The hash a document is known by: sha256 of its exact UTF-8 text, lower-case hex (Apollo's APQ hash)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class TrustedDocument(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """A document the tenant registered: callers without graphql:adhoc may run it."""

    __tablename__ = "trusted_documents"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256_hash"),
        CheckConstraint(_HASH_CHECK, name="sha256_hash_format"),
        CheckConstraint(_LENGTH_CHECK, name="document_length"),
        tenant_fk("registered_by", "users", ondelete=None),
    )

    sha256_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    document: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    registered_by: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)


class PersistedQuery(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """An automatic persisted query: the text behind a hash, stored for graphql:adhoc callers."""

    __tablename__ = "persisted_queries"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256_hash"),
        CheckConstraint(_HASH_CHECK, name="sha256_hash_format"),
        CheckConstraint(_LENGTH_CHECK, name="document_length"),
        # The bound's eviction: a tenant's entries oldest first.
        Index(None, "tenant_id", "created_at"),
    )

    sha256_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    document: Mapped[str] = mapped_column(Text, nullable=False)
