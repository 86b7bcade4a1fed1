"""Document uploads: one current version per document, version numbers unique in a chain, and the
external data change that brought an attachment.

- A document's versions are rows sharing one chain: the first version's id, which later versions
  name as `parent_document_id` (COALESCE(parent_document_id, id)). Two unique indexes keep a chain
  sane under concurrency: at most one row of a chain is `is_current_version`, and each
  `version_number` appears once in it. Two concurrent new versions of one document cannot both
  become current: the second insert waits for the first and fails on the index.
- `external_data_change_id`: the external data change (a SAM.gov notice version) that brought this
  version of an attachment (sync/attachments.py); SET NULL when the change goes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHAIN = sa.text("COALESCE(parent_document_id, id)")


def upgrade() -> None:
    op.create_index(
        "ux_documents_current_version",
        "documents",
        ["tenant_id", _CHAIN],
        unique=True,
        postgresql_where=sa.text("is_current_version"),
    )
    op.create_index(
        "ux_documents_version_number", "documents", ["tenant_id", _CHAIN, "version_number"], unique=True
    )
    op.add_column("documents", sa.Column("external_data_change_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_documents_tenant_id_external_data_change_id_external_data_changes"),
        "documents",
        "external_data_changes",
        ["tenant_id", "external_data_change_id"],
        ["tenant_id", "id"],
        ondelete="SET NULL (external_data_change_id)",
        onupdate="CASCADE",
    )
    op.create_index(
        op.f("ix_documents_tenant_id_external_data_change_id"),
        "documents",
        ["tenant_id", "external_data_change_id"],
        postgresql_where=sa.text("external_data_change_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_documents_tenant_id_external_data_change_id"), table_name="documents")
    op.drop_constraint(
        op.f("fk_documents_tenant_id_external_data_change_id_external_data_changes"), "documents", type_="foreignkey"
    )
    op.drop_column("documents", "external_data_change_id")
    op.drop_index("ux_documents_version_number", table_name="documents")
    op.drop_index("ux_documents_current_version", table_name="documents")
