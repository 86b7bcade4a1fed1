"""Trusted documents and automatic persisted queries (docs/decisions.md D32).

- `trusted_documents`: the GraphQL documents a tenant registered (`trustedDocumentRegister`), by the
  sha256 of their text; a caller without `graphql:adhoc` runs only these and graphql/operations/.
  Added or removed, never edited (no updated_at, W12 does not apply); not audited by the flush hook
  (W11): registering and unregistering are event rows in the same transaction. gwm_app may read,
  insert and delete them, not update them.
- `persisted_queries`: the automatic persisted queries cache (Apollo's protocol), shared by every
  gateway process; operational (W11), bounded per tenant by dropping the oldest entries.

Both tenant-owned: row-level security forced, the standard policy.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 02:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
TS = postgresql.TIMESTAMP(timezone=True, precision=6)
HASH_CHECK = "sha256_hash ~ '^[0-9a-f]{64}$'"
LENGTH_CHECK = "char_length(document) <= 100000"


def _tenant_owned(table: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
    )
    op.execute(f"GRANT SELECT, INSERT, DELETE ON {table} TO gwm_app")


def _common(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("sha256_hash", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        sa.UniqueConstraint("tenant_id", "sha256_hash", name=op.f(f"uq_{table}_tenant_id_sha256_hash")),
        sa.CheckConstraint(HASH_CHECK, name=op.f(f"ck_{table}_sha256_hash_format")),
        sa.CheckConstraint(LENGTH_CHECK, name=op.f(f"ck_{table}_document_length")),
    ]


def upgrade() -> None:
    op.create_table(
        "trusted_documents",
        *_common("trusted_documents"),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("registered_by", sa.UUID(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "registered_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_trusted_documents_tenant_id_registered_by_users"), onupdate="CASCADE",
        ),
    )
    _tenant_owned("trusted_documents")

    op.create_table(
        "persisted_queries",
        *_common("persisted_queries"),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
    )
    op.create_index(
        op.f("ix_persisted_queries_tenant_id_created_at"), "persisted_queries", ["tenant_id", "created_at"],
        unique=False,
    )
    _tenant_owned("persisted_queries")


def downgrade() -> None:
    op.drop_index(op.f("ix_persisted_queries_tenant_id_created_at"), table_name="persisted_queries")
    op.drop_table("persisted_queries")
    op.drop_table("trusted_documents")
