"""The text of stored documents: extraction jobs with a lease, and the text indexed in chunks (migration 0016).

`document_extraction_jobs`: one row per document version whose object waits for (or went through)
text extraction. The pre-tenant claim function `gwm_extraction_claim` (owned by gwm_lookup) creates
the rows of pending, clean, undeleted documents and leases due ones to a worker (`claimed_by`,
`claimed_until`, `attempts`); a job whose worker or child process died is claimed again once its
lease has run out (sync/extraction.py). Operational state: not audited (W11); the outcome is an
event row of the document's trail.

`document_text_chunks`: the extracted text cut into pieces of about `CHUNK_CHARS` characters (cut at
white space, overlapping a little so a phrase across a cut is found), each with its own stored
tsvector (weight B) and GIN index. One tsvector per document would be capped at 1 MB by PostgreSQL;
chunks index all of a long text. Written by the extraction job in the same transaction as the
document's status, so not audited on their own (W11). The search reads them through the SECURITY
DEFINER function `gwm_document_search` (docs/api/documents.md, "The GIN index under row-level
security").
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, Computed, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, Unmapped, mapped_column, unmapped_column
from sqlalchemy.sql.elements import ColumnElement

from models.base import NOW, Base, CreatedAt, TenantScoped, Timestamps, Timestamptz, Uuid, UUIDPrimaryKey, tenant_fk
from models.documents import Document

__all__ = ["CHUNK_SEARCH_VECTOR", "CHUNK_VECTOR_SQL", "DocumentExtractionJob", "DocumentTextChunk"]

# Spelled as PostgreSQL prints it back (pg_get_expr), so `alembic check` finds nothing to report.
CHUNK_VECTOR_SQL = "setweight(to_tsvector('english'::regconfig, content), 'B'::\"char\")"


class DocumentExtractionJob(UUIDPrimaryKey, TenantScoped, Timestamps, Base):
    """The extraction of one document version's text: its lease and attempts."""

    __tablename__ = "document_extraction_jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "document_id"),
        # The claim: unfinished jobs across tenants, by when they may run.
        Index("ix_document_extraction_jobs_due", "available_at", postgresql_where=text("finished_at IS NULL")),
        tenant_fk("document_id", "documents", ondelete="CASCADE"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # Claims so far (each claim counts, so a job whose child keeps being killed ends failed).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    available_at: Mapped[datetime.datetime] = mapped_column(Timestamptz, nullable=False, server_default=NOW)
    # The lease: a worker holds the job until claimed_until; past it, another may claim it.
    claimed_until: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    finished_at: Mapped[datetime.datetime | None] = mapped_column(Timestamptz)
    last_error: Mapped[str | None] = mapped_column(Text)


class DocumentTextChunk(UUIDPrimaryKey, TenantScoped, CreatedAt, Base):
    """One piece of a document version's extracted text, with its own full-text vector."""

    __tablename__ = "document_text_chunks"
    __table_args__ = (
        UniqueConstraint("tenant_id", "document_id", "chunk_index"),
        Index("ix_document_text_chunks_search_vector", "search_vector", postgresql_using="gin"),
        tenant_fk("document_id", "documents", ondelete="CASCADE"),
        CheckConstraint("chunk_index >= 0", name="chunk_index_not_negative"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    chunk_index: Mapped[int] = mapped_column(Integer, nullable=False)
    # Where the chunk starts in the extracted text (characters).
    start_offset: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    # Not mapped, like documents.search_vector: it would come back in every RETURNING.
    search_vector: Unmapped[Any] = unmapped_column(
        TSVECTOR, Computed(CHUNK_VECTOR_SQL, persisted=True), nullable=True, sort_order=50
    )


CHUNK_SEARCH_VECTOR: ColumnElement[Any] = DocumentTextChunk.__table__.c.search_vector

# The claim's lookup of documents waiting for extraction (declared here, beside the job it feeds).
Index(
    "ix_documents_extraction_pending",
    Document.__table__.c.created_at,
    postgresql_where=text("processing_status = 'pending'"),
)
