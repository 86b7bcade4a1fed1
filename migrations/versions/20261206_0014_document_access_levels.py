"""Document access levels: the named readers of restricted and confidential documents.

- `document_readers`: one row per (document, user) named as a reader of a `restricted` or
  `confidential` document (docs/enums.md, AccessLevel; the documents row rule in auth/rules.py).
  Tenant-owned like every other table: row-level security forced, the standard policy, gwm_app may
  read and write it. Not audited by the flush hook (W11): adding and removing a reader are event
  rows of the document's trail in the same transaction. No updated_at: a row is added or removed,
  never edited (W12 does not apply).
- `document_access_logs.risk_level` (normal | elevated): every read of a confidential document is
  logged at elevated risk.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
TS = postgresql.TIMESTAMP(timezone=True, precision=6)
TABLE = "document_readers"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("added_by", sa.UUID(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_document_readers_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "document_id"], ["documents.tenant_id", "documents.id"],
            name=op.f("fk_document_readers_tenant_id_document_id_documents"), onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"],
            name=op.f("fk_document_readers_tenant_id_user_id_users"), onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "added_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_document_readers_tenant_id_added_by_users"), onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_readers")),
        sa.UniqueConstraint(
            "tenant_id", "document_id", "user_id", name=op.f("uq_document_readers_tenant_id_document_id_user_id")
        ),
    )
    op.create_index(
        op.f("ix_document_readers_tenant_id_user_id_document_id"), TABLE,
        ["tenant_id", "user_id", "document_id"], unique=False,
    )
    op.execute(f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {TABLE} "
        f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO gwm_app")

    op.add_column(
        "document_access_logs",
        sa.Column("risk_level", sa.String(length=20), server_default="normal", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_document_access_logs_risk_level_values"), "document_access_logs",
        "risk_level IN ('normal', 'elevated')",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_document_access_logs_risk_level_values"), "document_access_logs", type_="check"
    )
    op.drop_column("document_access_logs", "risk_level")
    op.drop_index(op.f("ix_document_readers_tenant_id_user_id_document_id"), table_name=TABLE)
    op.drop_table(TABLE)
