"""permission_audit records the gateway's denials: request, field path and count (R1).

The gateway writes one row per (request, permission, field path without list indices) it denied,
counting the denials; the unique key makes "exactly one row" a property of the table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 14:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("permission_audit", sa.Column("request_id", sa.String(length=100), nullable=True))
    op.add_column("permission_audit", sa.Column("field_path", sa.Text(), nullable=True))
    op.add_column(
        "permission_audit", sa.Column("denied_count", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.create_index(
        "uq_permission_audit_request_permission_path",
        "permission_audit",
        ["tenant_id", "request_id", "permission_checked", "field_path"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(
        "uq_permission_audit_request_permission_path", table_name="permission_audit"
    )
    op.drop_column("permission_audit", "denied_count")
    op.drop_column("permission_audit", "field_path")
    op.drop_column("permission_audit", "request_id")
