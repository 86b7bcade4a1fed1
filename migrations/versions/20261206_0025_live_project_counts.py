"""A tenant's count of projects that are not archived, kept by the database: a create no longer counts them.

`gwm_claim_project_slot` (migration 0023) counted the tenant's unarchived projects on every create and
restore, under the tenant row's lock: a scan of every such project (about 5 ms of database CPU per create
in a tenant of 20,000 projects, growing with the tenant). Now:

- `gwm_derived.tenant_project_counts` holds one row per tenant with its count (decision W27). It is
  derived data, not in the seed's model: its own schema, like `gwm_rate` (0021), so the public schema stays
  the seed's plus docs/schema-deviations.toml; nothing is audited (it is recomputable from the projects),
  nothing edits it but the trigger below, and a tenant's deletion cascades to it.
- Triggers on `opportunity_projects` keep it in the changing transaction: an insert of an unarchived
  project adds one, a delete of one takes one away, an update that archives or restores one (or moves it
  between tenants) moves the count. Row by row, so the counter row is locked from the change to its
  commit: concurrent changes of one tenant's projects take turns on it (creates and restores already take
  turns on the tenant row, which they lock first: the same order everywhere, tenant row then counter).
- The claim reads the counter in its fresh snapshot after the tenant row's lock, where it counted before:
  what a create that held the lock before committed is counted, as before.
- Row-level security as on every tenant table; the server's role may only read it (and through the claim,
  which runs as the caller). The trigger function runs as the schema's owner.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 06:00:00+00:00
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"

COUNT_FUNCTION = """
CREATE FUNCTION gwm_derived.count_live_projects() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.archived_at IS NULL THEN
        UPDATE gwm_derived.tenant_project_counts AS c
           SET live_projects = c.live_projects - 1
         WHERE c.tenant_id = OLD.tenant_id;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.archived_at IS NULL THEN
        INSERT INTO gwm_derived.tenant_project_counts AS c (tenant_id, live_projects)
        VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET live_projects = c.live_projects + 1;
    END IF;
    RETURN NULL;
END
$fn$"""

_COUNTED = """    SELECT count(*) INTO counted
      FROM public.opportunity_projects p WHERE p.tenant_id = p_tenant AND p.archived_at IS NULL;"""
_FROM_COUNTER = """    SELECT coalesce(
               (SELECT c.live_projects FROM gwm_derived.tenant_project_counts c WHERE c.tenant_id = p_tenant), 0)
      INTO counted;"""


def _claim(counter: bool) -> str:
    """0023's claim function as CREATE OR REPLACE, reading the counter (or counting, as 0023 did)."""
    previous = importlib.import_module("migrations.versions.20261206_0023_write_path_returning")
    text: str = previous.CLAIM_FUNCTION
    assert text.count(_COUNTED) == 1, "0023's claim function changed"
    if counter:
        text = text.replace(_COUNTED, _FROM_COUNTER)
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


_BACKFILL_TABLES = ("public.tenants", "public.opportunity_projects", "gwm_derived.tenant_project_counts")


def _backfill() -> None:
    """Every tenant's count as it stands. The owner is bound by the tenant policies too (FORCE), which this
    one statement, naming no tenant, lifts and puts back as it found them (as 0005 numbering audit rows)."""
    bind = op.get_bind()
    forced = {
        table: bool(bind.exec_driver_sql(f"SELECT relforcerowsecurity FROM pg_class WHERE oid = '{table}'::regclass")
                    .scalar_one())
        for table in _BACKFILL_TABLES
    }
    for table in _BACKFILL_TABLES:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(
        "INSERT INTO gwm_derived.tenant_project_counts (tenant_id, live_projects)"
        " SELECT t.id, (SELECT count(*) FROM public.opportunity_projects p"
        "                WHERE p.tenant_id = t.id AND p.archived_at IS NULL)"
        "   FROM public.tenants t"
    )
    for table, force in forced.items():
        if force:
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def upgrade() -> None:
    op.execute("CREATE SCHEMA gwm_derived")
    op.execute("REVOKE ALL ON SCHEMA gwm_derived FROM PUBLIC")
    op.execute(
        "CREATE TABLE gwm_derived.tenant_project_counts ("
        " tenant_id uuid NOT NULL CONSTRAINT pk_tenant_project_counts PRIMARY KEY"
        " CONSTRAINT fk_tenant_project_counts_tenant_id_tenants REFERENCES public.tenants (id) ON DELETE CASCADE,"
        " live_projects bigint NOT NULL"
        " CONSTRAINT ck_tenant_project_counts_live_projects_not_negative CHECK (live_projects >= 0))"
    )
    op.execute("ALTER TABLE gwm_derived.tenant_project_counts ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE gwm_derived.tenant_project_counts FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY tenant_isolation ON gwm_derived.tenant_project_counts "
        f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
    )
    op.execute(COUNT_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION gwm_derived.count_live_projects() FROM PUBLIC")
    # The triggers run as the schema's owner, which the policy above binds too: the changing transaction's
    # tenant is the changed project's (row-level security on opportunity_projects already requires it).
    op.execute(
        "CREATE TRIGGER trg_opportunity_projects_live_count_rows AFTER INSERT OR DELETE"
        " ON public.opportunity_projects FOR EACH ROW EXECUTE FUNCTION gwm_derived.count_live_projects()"
    )
    op.execute(
        "CREATE TRIGGER trg_opportunity_projects_live_count_moves AFTER UPDATE OF archived_at, tenant_id"
        " ON public.opportunity_projects FOR EACH ROW"
        " WHEN ((OLD.archived_at IS NULL) IS DISTINCT FROM (NEW.archived_at IS NULL)"
        " OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)"
        " EXECUTE FUNCTION gwm_derived.count_live_projects()"
    )
    _backfill()
    op.execute("GRANT USAGE ON SCHEMA gwm_derived TO gwm_app")
    op.execute("GRANT SELECT ON gwm_derived.tenant_project_counts TO gwm_app")
    op.execute(_claim(counter=True))


def downgrade() -> None:
    op.execute(_claim(counter=False))
    op.execute("DROP TRIGGER trg_opportunity_projects_live_count_moves ON public.opportunity_projects")
    op.execute("DROP TRIGGER trg_opportunity_projects_live_count_rows ON public.opportunity_projects")
    op.execute("DROP SCHEMA gwm_derived CASCADE")
