"""opportunity_project_contacts.updated_at: a contact's link to a project is edited too.

`opportunityProjectContactUpdate` changes a link's relationship, influence level and notes, and
an update or delete carries the `updatedAt` the client read (docs/decisions.md W12), so the link
gets `updated_at` like every other edited table (D7): DEFAULT now() and the trigger
trg_opportunity_project_contacts_updated_at calling gwm_set_updated_at(). Existing links take
the migration's instant (a client reads it before its first update).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 18:05:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "opportunity_project_contacts"


def upgrade() -> None:
    op.add_column(
        TABLE,
        sa.Column(
            "updated_at", postgresql.TIMESTAMP(timezone=True, precision=6), server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.execute(
        f"CREATE TRIGGER trg_{TABLE}_updated_at BEFORE UPDATE ON {TABLE} "
        "FOR EACH ROW EXECUTE FUNCTION public.gwm_set_updated_at()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER trg_{TABLE}_updated_at ON {TABLE}")
    op.drop_column(TABLE, "updated_at")
