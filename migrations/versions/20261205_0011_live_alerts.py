"""Live alerts: the inbox (notifications), each user's notification preference, and the reminders and
digests produced (docs/decisions.md D20-D22; models/notifications.py).

- `notifications`: one item of one user's inbox (kind external_data_change, activity_assigned or
  deadline_reminder; impact level; title; the record it is about and its project; the change batch
  of the event; read_at). Written in the unit of work of the event; purged after the retention.
- `notification_preferences`: a user's threshold impact level and digest choice (one row per user,
  absent: the defaults).
- `notification_sends`: each reminder and digest produced, unique per (tenant, user, kind, key), so
  two `gwm jobs run` at once produce each once.

Tenant-owned like every other table: row-level security forced, the standard policy, gwm_app may
read and write them; updated_at by the trigger on notification_preferences. Not audited by the
flush hook (W11): the events they report are; marking read and preference changes are event rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 20:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
TS = postgresql.TIMESTAMP(timezone=True, precision=6)
NEW_TABLES = ("notifications", "notification_preferences", "notification_sends")
IMPACT = "'informational', 'low', 'medium', 'high', 'critical'"


def _tenant(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"),
        onupdate="CASCADE", ondelete="CASCADE",
    )


def _user(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], name=op.f(f"fk_{table}_tenant_id_user_id_users"),
        ondelete="CASCADE", onupdate="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("impact_level", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("entity_type", sa.String(length=50), nullable=False),
        sa.Column("entity_id", sa.UUID(), nullable=False),
        sa.Column("opportunity_project_id", sa.UUID(), nullable=True),
        sa.Column("change_batch_id", sa.UUID(), nullable=True),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("read_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('external_data_change', 'activity_assigned', 'deadline_reminder')",
            name=op.f("ck_notifications_kind_values"),
        ),
        sa.CheckConstraint(f"impact_level IN ({IMPACT})", name=op.f("ck_notifications_impact_level_values")),
        sa.CheckConstraint("char_length(btrim(title)) >= 1", name=op.f("ck_notifications_title_not_blank")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "opportunity_project_id"], ["opportunity_projects.tenant_id", "opportunity_projects.id"],
            name=op.f("fk_notifications_tenant_id_opportunity_project_id_opportunity_projects"),
            ondelete="CASCADE", onupdate="CASCADE",
        ),
        _user("notifications"),
        _tenant("notifications"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        op.f("ix_notifications_tenant_id_user_id_read_at_created_at"), "notifications",
        ["tenant_id", "user_id", "read_at", "created_at"], unique=False,
    )
    op.create_index(
        op.f("ix_notifications_tenant_id_created_at"), "notifications", ["tenant_id", "created_at"], unique=False
    )

    op.create_table(
        "notification_preferences",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("min_impact_level", sa.String(length=20), server_default="medium", nullable=False),
        sa.Column("digest_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            f"min_impact_level IN ({IMPACT})", name=op.f("ck_notification_preferences_min_impact_level_values")
        ),
        _user("notification_preferences"),
        _tenant("notification_preferences"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_preferences")),
        sa.UniqueConstraint("tenant_id", "user_id", name=op.f("uq_notification_preferences_tenant_id_user_id")),
    )

    op.create_table(
        "notification_sends",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("sent_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("notification_id", sa.UUID(), nullable=True),
        sa.Column("item_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("kind IN ('reminder', 'digest')", name=op.f("ck_notification_sends_kind_values")),
        sa.CheckConstraint("item_count >= 0", name=op.f("ck_notification_sends_item_count_not_negative")),
        _user("notification_sends"),
        _tenant("notification_sends"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_sends")),
        sa.UniqueConstraint(
            "tenant_id", "user_id", "kind", "key", name=op.f("uq_notification_sends_tenant_id_user_id_kind_key")
        ),
    )
    op.create_index(
        op.f("ix_notification_sends_tenant_id_sent_at"), "notification_sends", ["tenant_id", "sent_at"], unique=False
    )

    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
        )
    op.execute(
        "CREATE TRIGGER trg_notification_preferences_updated_at BEFORE UPDATE ON notification_preferences "
        "FOR EACH ROW EXECUTE FUNCTION public.gwm_set_updated_at()"
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(NEW_TABLES)} TO gwm_app")

    # A deactivated tenant's live subscribers are closed at once (models/access_events.py): the
    # notify comes from the table, whatever deactivates it, and only a commit delivers it.
    op.execute(TENANT_DEACTIVATED_FUNCTION)
    op.execute(
        "CREATE TRIGGER tenants_deactivated_notify AFTER UPDATE OF is_active ON tenants FOR EACH ROW"
        " WHEN (OLD.is_active AND NOT NEW.is_active) EXECUTE FUNCTION public.gwm_notify_tenant_deactivated()"
    )


TENANT_DEACTIVATED_FUNCTION = """
CREATE FUNCTION public.gwm_notify_tenant_deactivated() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM pg_notify('gwm_access', json_build_object('kind', 'tenant_deactivated', 'tenant', NEW.id::text)::text);
    RETURN NULL;
END
$fn$"""


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tenants_deactivated_notify ON tenants")
    op.execute("DROP FUNCTION IF EXISTS public.gwm_notify_tenant_deactivated()")
    op.drop_index(op.f("ix_notification_sends_tenant_id_sent_at"), table_name="notification_sends")
    op.drop_table("notification_sends")
    op.drop_table("notification_preferences")
    op.drop_index(op.f("ix_notifications_tenant_id_created_at"), table_name="notifications")
    op.drop_index(op.f("ix_notifications_tenant_id_user_id_read_at_created_at"), table_name="notifications")
    op.drop_table("notifications")
