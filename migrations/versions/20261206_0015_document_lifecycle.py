"""Document lifecycle: malware scan, legal hold and purge.

- `scan_status` (quarantined | clean | infected): a new object is quarantined until the scanner
  (storage/scan.py, run by `gwm jobs run` and the worker loop) finds it clean; a download is refused
  while it is anything but clean. Kept apart from `processing_status`, which is the extraction's state.
  `scan_reason` holds the scanner's verdict (a signature name) or why it could not scan; `scanned_at`
  when it last ran. Existing rows keep the default: the seeded rows have no object (`no_object`), the
  job skips them and nothing can be downloaded from them.
- `legal_hold` (+ who set it, when and why): a soft-deleted document under a hold is never purged.
- `purged_at`: the purge job deleted the object from storage; the row stays, soft-deleted, so its
  history and access logs remain readable.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "documents"
_TS = postgresql.TIMESTAMP(timezone=True, precision=6)


def upgrade() -> None:
    op.add_column(
        TABLE, sa.Column("scan_status", sa.String(20), server_default="quarantined", nullable=False)
    )
    op.add_column(TABLE, sa.Column("scan_reason", sa.Text(), nullable=True))
    op.add_column(TABLE, sa.Column("scanned_at", _TS, nullable=True))
    op.add_column(TABLE, sa.Column("legal_hold", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column(TABLE, sa.Column("legal_hold_reason", sa.Text(), nullable=True))
    op.add_column(TABLE, sa.Column("legal_hold_set_by", postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column(TABLE, sa.Column("legal_hold_set_at", _TS, nullable=True))
    op.add_column(TABLE, sa.Column("purged_at", _TS, nullable=True))
    op.create_check_constraint(
        op.f("ck_documents_scan_status_values"), TABLE, "scan_status IN ('quarantined', 'clean', 'infected')"
    )
    op.create_foreign_key(
        op.f("fk_documents_tenant_id_legal_hold_set_by_users"),
        TABLE,
        "users",
        ["tenant_id", "legal_hold_set_by"],
        ["tenant_id", "id"],
        onupdate="CASCADE",
    )
    # The purge job's lookup: soft-deleted, not purged, not held, oldest first.
    op.create_index(
        "ix_documents_purge_due",
        TABLE,
        ["deleted_at"],
        postgresql_where=sa.text("is_deleted AND purged_at IS NULL AND NOT legal_hold"),
    )
    # The scan job's lookup: quarantined rows.
    op.create_index(
        "ix_documents_quarantined",
        TABLE,
        ["created_at"],
        postgresql_where=sa.text("scan_status = 'quarantined'"),
    )


def downgrade() -> None:
    op.drop_index("ix_documents_quarantined", table_name=TABLE)
    op.drop_index("ix_documents_purge_due", table_name=TABLE)
    op.drop_constraint("fk_documents_tenant_id_legal_hold_set_by_users", TABLE, type_="foreignkey")
    op.drop_constraint("ck_documents_scan_status_values", TABLE, type_="check")
    for column in (
        "purged_at", "legal_hold_set_at", "legal_hold_set_by", "legal_hold_reason", "legal_hold",
        "scanned_at", "scan_reason", "scan_status",
    ):
        op.drop_column(TABLE, column)
