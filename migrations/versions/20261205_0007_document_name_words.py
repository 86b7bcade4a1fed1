"""documents.search_vector also indexes the name split on punctuation.

PostgreSQL's English parser reads "Performance Work Statement.pdf" as the words "performance",
"work" and the file name "statement.pdf", so a search for "statement" missed every document
named that way. The name is now indexed twice (weight A both times): as written, so a search for
"Statement.pdf" still finds it, and with each run of punctuation replaced by a space. See
models/documents.py (SEARCH_VECTOR_SQL) and docs/decisions.md D5.

A generated column's expression cannot be altered before PostgreSQL 17, so the column and its
GIN index are dropped and added again: the table is rewritten once, and every row's vector is
computed again from its name and text.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 17:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the expression (a migration must not follow later edits of the model).
NAME_AND_TEXT = (
    "setweight(to_tsvector('english'::regconfig, (COALESCE(name, ''::character varying))::text), 'A'::\"char\")"
    " || setweight(to_tsvector('english'::regconfig, \"left\"(COALESCE(extracted_text, ''::text), 200000)),"
    " 'B'::\"char\")"
)
NAME_WORDS_AND_TEXT = (
    "(setweight(to_tsvector('english'::regconfig, (COALESCE(name, ''::character varying))::text), 'A'::\"char\")"
    " || setweight(to_tsvector('english'::regconfig, regexp_replace((COALESCE(name, ''::character varying))::text,"
    " '[[:punct:]]+'::text, ' '::text, 'g'::text)), 'A'::\"char\"))"
    " || setweight(to_tsvector('english'::regconfig, \"left\"(COALESCE(extracted_text, ''::text), 200000)),"
    " 'B'::\"char\")"
)


def _replace_search_vector(expression: str) -> None:
    op.drop_index("ix_documents_search_vector", table_name="documents", postgresql_using="gin")
    op.drop_column("documents", "search_vector")
    op.add_column(
        "documents",
        sa.Column(
            "search_vector", postgresql.TSVECTOR(), sa.Computed(expression, persisted=True), nullable=True
        ),
    )
    op.create_index(
        "ix_documents_search_vector", "documents", ["search_vector"], unique=False, postgresql_using="gin"
    )


def upgrade() -> None:
    _replace_search_vector(NAME_WORDS_AND_TEXT)


def downgrade() -> None:
    _replace_search_vector(NAME_AND_TEXT)
