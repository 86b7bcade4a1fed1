"""The trace id beside the request id on audit rows; the sync lag for the metrics (docs/decisions.md W25).

- `audit_logs.trace_id`, `permission_audit.trace_id`: the W3C trace id (32 lower-case hex digits) of
  the request that wrote the row, when it had one (telemetry on, or a trusted proxy's traceparent).
  Nullable: older rows and rows of jobs and the CLI have none, and a NULL column is left out of the
  audit chain's canonical encoding, so every existing row still verifies; a new row's trace id is
  covered by its hash like any other column. Audit tables are append-only (W3): no updated_at (W12
  does not apply); they are the evidence itself (W11).
- `gwm_sync_lag(now)`: seconds the oldest due, unclaimed sync schedule has waited past its due time
  (0 when none), across tenants: SECURITY DEFINER owned by gwm_lookup (which already reads those
  columns for the claim, migration 0009), executable by gwm_app; it returns one number, no row.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 02:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("audit_logs", "permission_audit")

LAG_SIGNATURE = "public.gwm_sync_lag(timestamptz)"
LAG_FUNCTION = """
CREATE FUNCTION public.gwm_sync_lag(p_now timestamptz) RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT COALESCE(EXTRACT(EPOCH FROM (p_now - min(s.next_poll_at))), 0)::double precision
      FROM public.sync_schedules AS s
     WHERE s.next_poll_at <= p_now
       AND (s.claimed_until IS NULL OR s.claimed_until <= p_now)
$fn$"""


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("trace_id", sa.String(length=32), nullable=True))
        op.create_check_constraint(op.f(f"ck_{table}_trace_id_format"), table, "trace_id ~ '^[0-9a-f]{32}$'")
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute(LAG_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {LAG_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {LAG_SIGNATURE} TO gwm_app")
    op.execute(f"ALTER FUNCTION {LAG_SIGNATURE} OWNER TO gwm_lookup")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(f"DROP FUNCTION {LAG_SIGNATURE}")
    op.execute("RESET ROLE")
    for table in reversed(TABLES):
        op.drop_constraint(op.f(f"ck_{table}_trace_id_format"), table, type_="check")
        op.drop_column(table, "trace_id")
