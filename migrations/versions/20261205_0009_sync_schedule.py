"""External data sync: schedules with leases, call budgets per API key, saved searches, candidates.

- `sync_schedules`: one row per source (its windowed search) and per saved search: next poll,
  last success, error state and the lease (`claimed_until`, `claimed_by`).
- `sync_key_budgets`: per tenant and API key fingerprint, the daily and hourly limits and the
  counters of the current UTC day and clock hour; a call reserves a slot with the row locked.
- `saved_searches` (audited: entity type `saved_search`, added to change_history's CHECK with
  `saved_search_candidate`, the entity type of the candidates' decision events) and
  `saved_search_candidates` (one per notice lineage per tenant).
- `external_opportunity_data`: `notice_id` (each SAM.gov revision has its own), `resource_links`
  (the attachments of the version) and `payload_hash` (the canonical hash it was stored under).
- `polling_configurations`: the lease columns `claimed_until`, `claimed_by`.
- `external_opportunity_sources.timeout_seconds`: numeric(6,3) (was integer), > 0: an internal
  endpoint may be given a sub-second timeout.
- `gwm_sync_claim(worker, now, lease_seconds, max_jobs)`: the pre-tenant claim, SECURITY DEFINER
  owned by gwm_lookup, executable by gwm_app. It creates the missing schedule rows of pollable
  sources and active saved searches, then picks due rows (active tenants, active non-manual
  sources, active saved searches; for polling configurations also active, non-archived projects
  whose status is active or on hold) FOR UPDATE SKIP LOCKED and sets their lease. gwm_lookup may
  read the columns it filters on, insert schedule rows, and update only the two lease columns of
  sync_schedules and polling_configurations (column privileges and its own policies).
- The updated_at triggers of external_opportunity_sources and polling_configurations no longer
  move `updated_at` when only operational columns change (health, polling state, lease): a
  worker's bookkeeping must not make an administrator's next edit a W12 conflict.

New tables are tenant-owned like every other: row-level security forced, the standard policy,
gwm_app may read and write them; updated_at by the trigger. See docs/decisions.md D14-D19.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 20:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
TS = postgresql.TIMESTAMP(timezone=True, precision=6)
JSON_ARRAY = sa.text("'[]'::jsonb")
JSONB = postgresql.JSONB(astext_type=sa.Text())
NEW_TABLES = ("saved_searches", "sync_schedules", "sync_key_budgets", "saved_search_candidates")
FINGERPRINT = "key_fingerprint ~ '^[0-9a-f]{64}$'"

ENTITY_TYPES_0001 = (
    "'tenant', 'tenant_configuration', 'user', 'role', 'user_role', "
    "'user_session', 'external_opportunity_source', 'opportunity_project', "
    "'external_opportunity_data', 'opportunity_project_override', 'organization', 'contact', "
    "'opportunity_project_contact', 'document_category', 'document', 'document_association', "
    "'document_access_log', 'activity', 'activity_participant', 'capture_plan', 'proposal', "
    "'audit_log', 'change_history', 'permission_audit', 'polling_configuration', "
    "'api_integration_log', 'external_data_change'"
)
ENTITY_TYPES_0009 = ENTITY_TYPES_0001 + ", 'saved_search', 'saved_search_candidate'"

# What the claim function (owned by gwm_lookup) may read, insert and update.
LOOKUP_SELECT = {
    "sync_schedules": (
        "id", "tenant_id", "external_source_id", "saved_search_id", "next_poll_at", "claimed_until", "claimed_by",
    ),
    "polling_configurations": (
        "id", "tenant_id", "opportunity_project_id", "external_source_id", "is_active", "priority_level",
        "next_poll_timestamp", "claimed_until", "claimed_by",
    ),
    "external_opportunity_sources": ("id", "tenant_id", "is_active", "api_endpoint"),
    "saved_searches": ("id", "tenant_id", "external_source_id", "is_active"),
    "opportunity_projects": ("id", "tenant_id", "archived_at", "project_status"),
}
LOOKUP_UPDATE = {
    "sync_schedules": ("claimed_until", "claimed_by"),
    "polling_configurations": ("claimed_until", "claimed_by"),
}
LOOKUP_INSERT = {"sync_schedules": ("tenant_id", "external_source_id", "saved_search_id", "next_poll_at")}

# Columns whose change alone leaves updated_at as it is (models.audit_trail.OPERATIONAL_COLUMNS).
OPERATIONAL = {
    "external_opportunity_sources": (
        "connection_status", "last_successful_call", "last_error_message", "consecutive_errors",
    ),
    "polling_configurations": (
        "last_poll_timestamp", "next_poll_timestamp", "consecutive_errors", "average_response_time_ms",
        "success_rate_percentage", "claimed_until", "claimed_by",
    ),
}

SET_UPDATED_AT_UNLESS_FUNCTION = """
CREATE FUNCTION public.gwm_set_updated_at_unless() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    -- TG_ARGV: the operational columns. updated_at moves (to the transaction's start, as
    -- gwm_set_updated_at) only when some other column changes.
    IF (to_jsonb(NEW) - TG_ARGV - 'updated_at') IS DISTINCT FROM (to_jsonb(OLD) - TG_ARGV - 'updated_at') THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$fn$"""

CLAIM_SIGNATURE = "public.gwm_sync_claim(text, timestamptz, integer, integer)"
CLAIM_FUNCTION = """
CREATE FUNCTION public.gwm_sync_claim(p_worker text, p_now timestamptz, p_lease_seconds integer, p_max_jobs integer)
RETURNS TABLE (job_kind text, job_id uuid, tenant_id uuid, external_source_id uuid, saved_search_id uuid,
               opportunity_project_id uuid, claimed_until timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = ''
AS $fn$
#variable_conflict use_column
DECLARE
    v_until timestamptz;
    v_claimed integer;
BEGIN
    IF p_worker IS NULL OR p_worker = '' OR length(p_worker) > 200 THEN
        RAISE EXCEPTION 'gwm_sync_claim: the worker name must be 1 to 200 characters';
    END IF;
    IF p_now IS NULL OR p_lease_seconds IS NULL OR p_lease_seconds < 1 OR p_max_jobs IS NULL OR p_max_jobs < 1 THEN
        RAISE EXCEPTION 'gwm_sync_claim: now, a positive lease and a positive job count are required';
    END IF;
    v_until := p_now + make_interval(secs => p_lease_seconds);

    -- Every pollable source and every active saved search has its schedule row (due at once).
    INSERT INTO public.sync_schedules (tenant_id, external_source_id, saved_search_id, next_poll_at)
    SELECT src.tenant_id, src.id, NULL, p_now
      FROM public.external_opportunity_sources AS src
      JOIN public.tenants AS t ON t.id = src.tenant_id
     WHERE t.is_active AND src.is_active AND src.api_endpoint NOT LIKE 'manual:%'
       AND NOT EXISTS (SELECT 1 FROM public.sync_schedules AS x
                        WHERE x.tenant_id = src.tenant_id AND x.external_source_id = src.id
                          AND x.saved_search_id IS NULL)
    ON CONFLICT DO NOTHING;
    INSERT INTO public.sync_schedules (tenant_id, external_source_id, saved_search_id, next_poll_at)
    SELECT ss.tenant_id, ss.external_source_id, ss.id, p_now
      FROM public.saved_searches AS ss
      JOIN public.tenants AS t ON t.id = ss.tenant_id
     WHERE t.is_active AND ss.is_active
       AND NOT EXISTS (SELECT 1 FROM public.sync_schedules AS x
                        WHERE x.tenant_id = ss.tenant_id AND x.external_source_id = ss.external_source_id
                          AND x.saved_search_id = ss.id)
    ON CONFLICT DO NOTHING;

    -- Due windowed searches.
    RETURN QUERY
    WITH due AS (
        SELECT s.id
          FROM public.sync_schedules AS s
          JOIN public.tenants AS t ON t.id = s.tenant_id
          JOIN public.external_opportunity_sources AS src
            ON src.tenant_id = s.tenant_id AND src.id = s.external_source_id
          LEFT JOIN public.saved_searches AS ss ON ss.tenant_id = s.tenant_id AND ss.id = s.saved_search_id
         WHERE s.next_poll_at <= p_now
           AND (s.claimed_until IS NULL OR s.claimed_until <= p_now)
           AND t.is_active AND src.is_active AND src.api_endpoint NOT LIKE 'manual:%'
           AND (s.saved_search_id IS NULL OR (ss.is_active AND ss.external_source_id = s.external_source_id))
         ORDER BY s.next_poll_at, s.id
         LIMIT p_max_jobs
           FOR UPDATE OF s SKIP LOCKED
    )
    UPDATE public.sync_schedules AS s
       SET claimed_until = v_until, claimed_by = p_worker
      FROM due
     WHERE s.id = due.id
    RETURNING CASE WHEN s.saved_search_id IS NULL THEN 'source_search' ELSE 'saved_search' END,
              s.id, s.tenant_id, s.external_source_id, s.saved_search_id, NULL::uuid, s.claimed_until;
    GET DIAGNOSTICS v_claimed = ROW_COUNT;
    IF v_claimed >= p_max_jobs THEN
        RETURN;
    END IF;

    -- Due refreshes of tracked projects (high priority first).
    RETURN QUERY
    WITH due AS (
        SELECT pc.id
          FROM public.polling_configurations AS pc
          JOIN public.tenants AS t ON t.id = pc.tenant_id
          JOIN public.external_opportunity_sources AS src
            ON src.tenant_id = pc.tenant_id AND src.id = pc.external_source_id
          JOIN public.opportunity_projects AS p
            ON p.tenant_id = pc.tenant_id AND p.id = pc.opportunity_project_id
         WHERE pc.is_active
           AND (pc.next_poll_timestamp IS NULL OR pc.next_poll_timestamp <= p_now)
           AND (pc.claimed_until IS NULL OR pc.claimed_until <= p_now)
           AND t.is_active AND src.is_active AND src.api_endpoint NOT LIKE 'manual:%'
           AND p.archived_at IS NULL AND p.project_status IN ('active', 'on_hold')
         ORDER BY (pc.priority_level = 'high') DESC, pc.next_poll_timestamp NULLS FIRST, pc.id
         LIMIT p_max_jobs - v_claimed
           FOR UPDATE OF pc SKIP LOCKED
    )
    UPDATE public.polling_configurations AS pc
       SET claimed_until = v_until, claimed_by = p_worker
      FROM due
     WHERE pc.id = due.id
    RETURNING 'project_refresh'::text, pc.id, pc.tenant_id, pc.external_source_id, NULL::uuid,
              pc.opportunity_project_id, pc.claimed_until;
END
$fn$"""


def upgrade() -> None:
    _create_tables()
    op.add_column("external_opportunity_data", sa.Column("notice_id", sa.String(length=100), nullable=True))
    op.add_column(
        "external_opportunity_data",
        sa.Column("resource_links", JSONB, server_default=JSON_ARRAY, nullable=False),
    )
    op.add_column("external_opportunity_data", sa.Column("payload_hash", sa.String(length=64), nullable=True))
    op.create_check_constraint(
        op.f("ck_external_opportunity_data_resource_links_array"), "external_opportunity_data",
        "jsonb_typeof(resource_links) = 'array'",
    )
    op.create_index(
        op.f("ix_external_opportunity_data_tenant_id_notice_id"), "external_opportunity_data",
        ["tenant_id", "notice_id"], unique=False,
    )
    op.alter_column(
        "external_opportunity_sources", "timeout_seconds", type_=sa.Numeric(6, 3), existing_nullable=False,
        existing_server_default=sa.text("30"), postgresql_using="timeout_seconds::numeric(6,3)",
    )
    op.create_check_constraint(
        op.f("ck_external_opportunity_sources_timeout_seconds_positive"), "external_opportunity_sources",
        "timeout_seconds > 0",
    )
    op.add_column("polling_configurations", sa.Column("claimed_until", TS, nullable=True))
    op.add_column("polling_configurations", sa.Column("claimed_by", sa.String(length=200), nullable=True))
    op.drop_constraint(op.f("ck_change_history_entity_type_values"), "change_history", type_="check")
    op.create_check_constraint(
        op.f("ck_change_history_entity_type_values"), "change_history", f"entity_type IN ({ENTITY_TYPES_0009})"
    )

    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
        )
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION public.gwm_set_updated_at()"
        )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(NEW_TABLES)} TO gwm_app")

    op.execute(SET_UPDATED_AT_UNLESS_FUNCTION)
    for table, columns in OPERATIONAL.items():
        op.execute(f"DROP TRIGGER trg_{table}_updated_at ON {table}")
        arguments = ", ".join(f"'{c}'" for c in columns)
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION public.gwm_set_updated_at_unless({arguments})"
        )

    _create_claim_function()


def downgrade() -> None:
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(f"DROP FUNCTION {CLAIM_SIGNATURE}")
    op.execute("RESET ROLE")
    for table in LOOKUP_SELECT:
        if table in NEW_TABLES:
            continue
        op.execute(f"DROP POLICY lookup_read ON {table}")
        if table in LOOKUP_UPDATE:
            op.execute(f"DROP POLICY sync_claim ON {table}")
            op.execute(f"REVOKE UPDATE ({', '.join(LOOKUP_UPDATE[table])}) ON {table} FROM gwm_lookup")
        op.execute(f"REVOKE SELECT ({', '.join(LOOKUP_SELECT[table])}) ON {table} FROM gwm_lookup")

    for table in OPERATIONAL:
        op.execute(f"DROP TRIGGER trg_{table}_updated_at ON {table}")
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION public.gwm_set_updated_at()"
        )
    op.execute("DROP FUNCTION public.gwm_set_updated_at_unless()")

    op.drop_constraint(op.f("ck_change_history_entity_type_values"), "change_history", type_="check")
    op.create_check_constraint(
        op.f("ck_change_history_entity_type_values"), "change_history", f"entity_type IN ({ENTITY_TYPES_0001})"
    )
    op.drop_constraint(
        op.f("ck_external_opportunity_sources_timeout_seconds_positive"), "external_opportunity_sources", type_="check"
    )
    op.alter_column(
        "external_opportunity_sources", "timeout_seconds", type_=sa.Integer(), existing_nullable=False,
        existing_server_default=sa.text("30"), postgresql_using="ceil(timeout_seconds)::integer",
    )
    op.drop_column("polling_configurations", "claimed_by")
    op.drop_column("polling_configurations", "claimed_until")
    op.drop_index(op.f("ix_external_opportunity_data_tenant_id_notice_id"), table_name="external_opportunity_data")
    op.drop_constraint(
        op.f("ck_external_opportunity_data_resource_links_array"), "external_opportunity_data", type_="check"
    )
    op.drop_column("external_opportunity_data", "payload_hash")
    op.drop_column("external_opportunity_data", "resource_links")
    op.drop_column("external_opportunity_data", "notice_id")
    for table in ("saved_search_candidates", "sync_key_budgets", "sync_schedules", "saved_searches"):
        op.drop_table(table)


def _create_claim_function() -> None:
    for table, columns in LOOKUP_SELECT.items():
        op.execute(f"GRANT SELECT ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(f"CREATE POLICY lookup_read ON {table} FOR SELECT TO gwm_lookup USING (true)")
    for table, columns in LOOKUP_UPDATE.items():
        op.execute(f"GRANT UPDATE ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(f"CREATE POLICY sync_claim ON {table} FOR UPDATE TO gwm_lookup USING (true) WITH CHECK (true)")
    for table, columns in LOOKUP_INSERT.items():
        op.execute(f"GRANT INSERT ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(f"CREATE POLICY sync_schedule_create ON {table} FOR INSERT TO gwm_lookup WITH CHECK (true)")
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute(CLAIM_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {CLAIM_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {CLAIM_SIGNATURE} TO gwm_app")
    op.execute(f"ALTER FUNCTION {CLAIM_SIGNATURE} OWNER TO gwm_lookup")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def _create_tables() -> None:
    """Written after models/sync.py; `alembic check` (tests/test_migrations.py) keeps them in step."""
    op.create_table(
        "saved_searches",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("external_source_id", sa.UUID(), nullable=False),
        sa.Column("naics_codes", JSONB, server_default=JSON_ARRAY, nullable=False),
        sa.Column("set_aside_codes", JSONB, server_default=JSON_ARRAY, nullable=False),
        sa.Column("notice_types", JSONB, server_default=JSON_ARRAY, nullable=False),
        sa.Column("title_keywords", JSONB, server_default=JSON_ARRAY, nullable=False),
        sa.Column("agency", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("char_length(btrim(name)) >= 1", name=op.f("ck_saved_searches_name_not_blank")),
        sa.CheckConstraint(
            "jsonb_typeof(naics_codes) = 'array' AND jsonb_typeof(set_aside_codes) = 'array'"
            " AND jsonb_typeof(notice_types) = 'array' AND jsonb_typeof(title_keywords) = 'array'",
            name=op.f("ck_saved_searches_lists_are_arrays"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_saved_searches_tenant_id_created_by_users"), onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "external_source_id"],
            ["external_opportunity_sources.tenant_id", "external_opportunity_sources.id"],
            name=op.f("fk_saved_searches_tenant_id_external_source_id_external_opportunity_sources"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_saved_searches_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_searches")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_saved_searches_tenant_id_id")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_saved_searches_tenant_id_name")),
    )
    op.create_index(
        op.f("ix_saved_searches_tenant_id_external_source_id"), "saved_searches", ["tenant_id", "external_source_id"],
        unique=False,
    )

    op.create_table(
        "sync_schedules",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("external_source_id", sa.UUID(), nullable=False),
        sa.Column("saved_search_id", sa.UUID(), nullable=True),
        sa.Column("poll_interval_minutes", sa.Integer(), server_default=sa.text("360"), nullable=False),
        sa.Column("next_poll_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("consecutive_errors", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("poll_interval_minutes >= 1", name=op.f("ck_sync_schedules_poll_interval_positive")),
        sa.CheckConstraint(
            "consecutive_errors >= 0", name=op.f("ck_sync_schedules_consecutive_errors_not_negative")
        ),
        sa.CheckConstraint(
            f"key_fingerprint IS NULL OR {FINGERPRINT}", name=op.f("ck_sync_schedules_key_fingerprint_format")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "external_source_id"],
            ["external_opportunity_sources.tenant_id", "external_opportunity_sources.id"],
            name=op.f("fk_sync_schedules_tenant_id_external_source_id_external_opportunity_sources"),
            ondelete="CASCADE", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "saved_search_id"], ["saved_searches.tenant_id", "saved_searches.id"],
            name=op.f("fk_sync_schedules_tenant_id_saved_search_id_saved_searches"),
            ondelete="CASCADE", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sync_schedules_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_schedules")),
        sa.UniqueConstraint(
            "tenant_id", "external_source_id", "saved_search_id",
            name=op.f("uq_sync_schedules_tenant_id_external_source_id_saved_search_id"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(op.f("ix_sync_schedules_next_poll_at"), "sync_schedules", ["next_poll_at"], unique=False)
    op.create_index(
        op.f("ix_sync_schedules_tenant_id_saved_search_id"), "sync_schedules", ["tenant_id", "saved_search_id"],
        unique=False,
    )

    op.create_table(
        "sync_key_budgets",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("daily_limit", sa.Integer(), server_default=sa.text("10"), nullable=False),
        sa.Column("hourly_limit", sa.Integer(), nullable=True),
        sa.Column("day_started_at", TS, nullable=True),
        sa.Column("day_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("hour_started_at", TS, nullable=True),
        sa.Column("hour_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_reserved_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(FINGERPRINT, name=op.f("ck_sync_key_budgets_key_fingerprint_format")),
        sa.CheckConstraint("daily_limit >= 0", name=op.f("ck_sync_key_budgets_daily_limit_not_negative")),
        sa.CheckConstraint(
            "hourly_limit IS NULL OR hourly_limit >= 0", name=op.f("ck_sync_key_budgets_hourly_limit_not_negative")
        ),
        sa.CheckConstraint(
            "day_count >= 0 AND hour_count >= 0", name=op.f("ck_sync_key_budgets_counts_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sync_key_budgets_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_key_budgets")),
        sa.UniqueConstraint("tenant_id", "key_fingerprint", name=op.f("uq_sync_key_budgets_tenant_id_key_fingerprint")),
    )

    op.create_table(
        "saved_search_candidates",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("saved_search_id", sa.UUID(), nullable=True),
        sa.Column("lineage_key", sa.String(length=255), nullable=False),
        sa.Column("notice_id", sa.String(length=100), nullable=False),
        sa.Column("solicitation_number", sa.String(length=255), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("agency", sa.String(length=500), nullable=True),
        sa.Column("notice_type", sa.String(length=100), nullable=True),
        sa.Column("posted_date", sa.Date(), nullable=True),
        sa.Column("response_deadline", TS, nullable=True),
        sa.Column("raw_json_data", JSONB, nullable=False),
        sa.Column("first_seen_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("last_seen_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="new", nullable=False),
        sa.Column("decided_by", sa.UUID(), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("opportunity_project_id", sa.UUID(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('new', 'dismissed', 'tracked')", name=op.f("ck_saved_search_candidates_status_values")
        ),
        sa.CheckConstraint(
            "status <> 'tracked' OR decided_at IS NOT NULL",
            name=op.f("ck_saved_search_candidates_tracked_is_decided"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "decided_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_saved_search_candidates_tenant_id_decided_by_users"), onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "opportunity_project_id"], ["opportunity_projects.tenant_id", "opportunity_projects.id"],
            name=op.f("fk_saved_search_candidates_tenant_id_opportunity_project_id_opportunity_projects"),
            ondelete="SET NULL (opportunity_project_id)", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "saved_search_id"], ["saved_searches.tenant_id", "saved_searches.id"],
            name=op.f("fk_saved_search_candidates_tenant_id_saved_search_id_saved_searches"),
            ondelete="SET NULL (saved_search_id)", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_saved_search_candidates_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_search_candidates")),
        sa.UniqueConstraint(
            "tenant_id", "lineage_key", name=op.f("uq_saved_search_candidates_tenant_id_lineage_key")
        ),
    )
    op.create_index(
        op.f("ix_saved_search_candidates_tenant_id_saved_search_id_status_first_seen_at"),
        "saved_search_candidates", ["tenant_id", "saved_search_id", "status", "first_seen_at"], unique=False,
    )
    op.create_index(
        op.f("ix_saved_search_candidates_tenant_id_opportunity_project_id"), "saved_search_candidates",
        ["tenant_id", "opportunity_project_id"], unique=False,
    )
