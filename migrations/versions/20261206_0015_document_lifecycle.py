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
- `gwm_scan_pending(limit)`: the worker loop's pre-tenant lookup of quarantined documents that have a
  file (tenant and document ids only), SECURITY DEFINER owned by gwm_lookup, executable by gwm_app;
  gwm_lookup may read those few columns of documents through its own policy.

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
_LOOKUP_COLUMNS = ("id", "tenant_id", "scan_status", "processing_status", "purged_at", "created_at")
_PENDING_SIGNATURE = "public.gwm_scan_pending(integer)"
_PENDING_FUNCTION = """
CREATE FUNCTION public.gwm_scan_pending(p_limit integer)
RETURNS TABLE (tenant_id uuid, document_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT d.tenant_id, d.id
      FROM public.documents d
     WHERE d.scan_status = 'quarantined' AND d.processing_status <> 'no_object' AND d.purged_at IS NULL
     ORDER BY d.created_at
     LIMIT least(greatest(coalesce(p_limit, 1), 1), 1000)
$fn$
"""


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
    # The worker loop's lookup across tenants (server/document_jobs.py scan_side_job).
    op.execute(f"GRANT SELECT ({', '.join(_LOOKUP_COLUMNS)}) ON {TABLE} TO gwm_lookup")
    op.execute(f"CREATE POLICY document_scan_lookup_read ON {TABLE} FOR SELECT TO gwm_lookup USING (true)")
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute(_PENDING_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {_PENDING_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {_PENDING_SIGNATURE} TO gwm_app")
    op.execute(f"ALTER FUNCTION {_PENDING_SIGNATURE} OWNER TO gwm_lookup")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_PENDING_SIGNATURE}")
    op.execute(f"DROP POLICY document_scan_lookup_read ON {TABLE}")
    op.execute(f"REVOKE SELECT ({', '.join(_LOOKUP_COLUMNS)}) ON {TABLE} FROM gwm_lookup")
    op.drop_index("ix_documents_quarantined", table_name=TABLE)
    op.drop_index("ix_documents_purge_due", table_name=TABLE)
    op.drop_constraint(op.f("fk_documents_tenant_id_legal_hold_set_by_users"), TABLE, type_="foreignkey")
    op.drop_constraint(op.f("ck_documents_scan_status_values"), TABLE, type_="check")
    for column in (
        "purged_at", "legal_hold_set_at", "legal_hold_set_by", "legal_hold_reason", "legal_hold",
        "scanned_at", "scan_reason", "scan_status",
    ):
        op.drop_column(TABLE, column)
