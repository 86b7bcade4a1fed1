"""A caller's grants kept aggregated by the database: the principal lookup reads one row.

Every request's principal lookup (gwm_request_session, 0010/0012/0018/0022) aggregated the caller's unexpired
assignments into the grants JSON text: for a capture manager holding its role on 200 projects, about 100 us of
database CPU per request, twice the rest of the lookup. Assignments change seldom; requests read them always.
Now (docs/decisions.md W28):

- `gwm_principal.user_grants(tenant, user)`: the grants text of a user's assignments unexpired at now() (0022's
  aggregation, its order made explicit: roles by id, each role's projects by id, so the same assignments always
  give the same text whatever the plan), and `valid_until`, the earliest expiry among the assignments it
  includes (null when none expires). One definition, used by both paths below.
- `gwm_principal.user_grant_sets`: per user, that text and valid_until as computed at `updated_at` (the
  computing transaction's now()). Derived data, outside the tenant model (as Q6's gwm_rate): no model, no audit
  (its sources, user_roles and roles, are audited), not exported (an import's inserts of user_roles compute it
  again). Row-level security as every tenant table; gwm_app has no privilege on the schema; gwm_lookup reads it.
- Statement triggers (transition tables) on user_roles (insert, update, delete: the old and new rows' users)
  and roles (an update changing permissions: every holder) compute the affected users' rows again in the
  writing transaction, as one set. Before computing, the trigger takes FOR SHARE on the roles involved (a
  concurrent permissions change waits for it, or it for that change, whose trigger then sees this assignment)
  and a transaction advisory lock per user (sorted, so two writers lock in the same order): under READ
  COMMITTED the computing statement's snapshot, taken after the lock, sees every commit of an earlier writer
  for that user, so the last committed row is computed from everything committed. Under REPEATABLE READ a
  concurrent change fails the upsert with a serialization error instead. A role's deletion and a project's
  remove assignments by cascade, which fires the user_roles trigger; TRUNCATE of either table empties the sets.
  The trigger functions are SECURITY DEFINER (the migration role, under its forced row-level security, for
  each tenant of the changed rows in turn); they can only run as triggers.
- The lookup returns the stored text when the row belongs to the session's tenant and user, was computed at or
  before the lookup's now() and `valid_until` is null or later than now(): then the live aggregation would
  give the same text (an assignment it left out had expired at or before `updated_at`, one it kept has not
  expired yet). Otherwise (no row, an assignment expired since) it computes the text live, as before:
  `coalesce(stored, live)` evaluates the live sub-select only then.

The function keeps its signature, result, owner and grants (CREATE OR REPLACE, as 0022).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 05:40:00+00:00
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"

# The JSON text is 0022's (per role: [permissions, [project ids] or null, held tenant-wide]) with its order fixed.
# SET search_path keeps it from being inlined: the lookup plans a call, not the aggregation, on every request (its
# SQL body is planned per call); the aggregation is planned only when the stored text cannot be used.
USER_GRANTS = """
CREATE FUNCTION gwm_principal.user_grants(p_tenant uuid, p_user uuid)
RETURNS TABLE (grants text, valid_until timestamptz)
LANGUAGE sql STABLE
SET search_path = ''
AS $fn$
    SELECT coalesce(json_agg(json_build_array(r.permissions, g.projects, g.tenant_wide) ORDER BY g.role_id)::text,
                    '[]'),
           min(g.valid_until)
      FROM (SELECT ur.role_id,
                   array_agg(ur.opportunity_project_id ORDER BY ur.opportunity_project_id)
                       FILTER (WHERE ur.opportunity_project_id IS NOT NULL) AS projects,
                   bool_or(ur.opportunity_project_id IS NULL) AS tenant_wide,
                   min(ur.expires_at) AS valid_until
              FROM public.user_roles AS ur
             WHERE ur.tenant_id = p_tenant AND ur.user_id = p_user
               AND (ur.expires_at IS NULL OR ur.expires_at > pg_catalog.now())
             GROUP BY ur.role_id) AS g
      JOIN public.roles AS r ON r.id = g.role_id AND r.tenant_id = p_tenant
$fn$"""

# The sets of `p_users` and of every holder of a role in `p_holders_of` (tenant `p_tenant`) computed again,
# under their locks, after the roles `p_roles` are held FOR SHARE. The caller has set app.tenant_id to p_tenant
# (row-level security binds the owner too).
REFRESH = """
CREATE FUNCTION gwm_principal.refresh(p_tenant uuid, p_users uuid[], p_roles uuid[], p_holders_of uuid[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = ''
AS $fn$
DECLARE
    v_users uuid[];
    k integer;
BEGIN
    PERFORM 1 FROM public.roles AS r
      WHERE r.tenant_id = p_tenant AND r.id = ANY (p_roles) ORDER BY r.id FOR SHARE;
    v_users := p_users || ARRAY(SELECT ur.user_id FROM public.user_roles AS ur
                               WHERE ur.tenant_id = p_tenant AND ur.role_id = ANY (p_holders_of));
    FOR k IN SELECT DISTINCT pg_catalog.hashtext(u::text) FROM unnest(v_users) AS u ORDER BY 1 LOOP
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('gwm.user_grant_sets'), k);
    END LOOP;
    -- A new statement: under READ COMMITTED its snapshot sees every writer that held these locks before.
    INSERT INTO gwm_principal.user_grant_sets AS s (user_id, tenant_id, grants, valid_until, updated_at)
    SELECT u.id, u.tenant_id, g.grants, g.valid_until, pg_catalog.now()
      FROM public.users AS u
     CROSS JOIN LATERAL gwm_principal.user_grants(u.tenant_id, u.id) AS g
     WHERE u.tenant_id = p_tenant AND u.id = ANY (v_users)
        ON CONFLICT (user_id) DO UPDATE
       SET tenant_id = excluded.tenant_id, grants = excluded.grants, valid_until = excluded.valid_until,
           updated_at = excluded.updated_at;
END
$fn$"""
REFRESH_SIGNATURE = "gwm_principal.refresh(uuid, uuid[], uuid[], uuid[])"

# One per table and event (a trigger with transition tables has one event). `changed` holds (tenant, user, role,
# role whose holders change) rows; each tenant is computed with app.tenant_id set to it, then the previous value
# is restored.
_TRIGGER_FUNCTION = """
CREATE FUNCTION gwm_principal.{name}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    previous_tenant text := pg_catalog.current_setting('app.tenant_id', true);
    t record;
BEGIN
    FOR t IN
        WITH changed (tenant_id, user_id, role_id, holders_of) AS ({changed})
        SELECT c.tenant_id,
               coalesce(array_agg(DISTINCT c.user_id) FILTER (WHERE c.user_id IS NOT NULL), '{{}}') AS users,
               coalesce(array_agg(DISTINCT c.role_id) FILTER (WHERE c.role_id IS NOT NULL), '{{}}') AS roles,
               coalesce(array_agg(DISTINCT c.holders_of) FILTER (WHERE c.holders_of IS NOT NULL), '{{}}') AS holders_of
          FROM changed AS c GROUP BY c.tenant_id ORDER BY c.tenant_id
    LOOP
        PERFORM pg_catalog.set_config('app.tenant_id', t.tenant_id::text, true);
        PERFORM gwm_principal.refresh(t.tenant_id, t.users, t.roles, t.holders_of);
    END LOOP;
    PERFORM pg_catalog.set_config('app.tenant_id', coalesce(previous_tenant, ''), true);
    RETURN NULL;
END
$fn$"""

# name -> (table, event, transition tables, the changed rows)
TRIGGERS: dict[str, tuple[str, str, str, str]] = {
    "user_roles_inserted": (
        "user_roles", "INSERT", "NEW TABLE AS new_rows",
        "SELECT n.tenant_id, n.user_id, n.role_id, NULL::uuid FROM new_rows AS n",
    ),
    "user_roles_updated": (
        "user_roles", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "SELECT o.tenant_id, o.user_id, o.role_id, NULL::uuid FROM old_rows AS o"
        " UNION SELECT n.tenant_id, n.user_id, n.role_id, NULL::uuid FROM new_rows AS n",
    ),
    "user_roles_deleted": (
        "user_roles", "DELETE", "OLD TABLE AS old_rows",
        "SELECT o.tenant_id, o.user_id, o.role_id, NULL::uuid FROM old_rows AS o",
    ),
    # A role whose permissions changed (its key changing cascades to user_roles): every holder of it.
    "roles_updated": (
        "roles", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "SELECT n.tenant_id, NULL::uuid, NULL::uuid, n.id FROM new_rows AS n"
        " JOIN old_rows AS o ON o.id = n.id WHERE o.permissions IS DISTINCT FROM n.permissions",
    ),
}

# TRUNCATE of user_roles or roles (an owner's act; not subject to row-level security): no set stays.
TRUNCATED = """
CREATE FUNCTION gwm_principal.truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
    TRUNCATE gwm_principal.user_grant_sets;
    RETURN NULL;
END
$fn$"""

# The stored text when it is the live one at now(); else the live aggregation (coalesce evaluates it only then).
_STORED_OR_LIVE = """coalesce(
             (SELECT gs.grants FROM gwm_principal.user_grant_sets AS gs
               WHERE gs.user_id = s.user_id AND gs.tenant_id = s.tenant_id AND gs.updated_at <= now()
                 AND (gs.valid_until IS NULL OR gs.valid_until > now())),
             (SELECT g.grants FROM gwm_principal.user_grants(s.tenant_id, s.user_id) AS g))"""


def _lookup(stored: bool) -> str:
    """0022's definition of gwm_request_session (CREATE OR REPLACE), its grants read from the sets when `stored`."""
    previous = importlib.import_module("migrations.versions.20261206_0022_compiled_grants")
    text: str = previous._definition(previous._BY_ROLE)
    assert text.count(previous._BY_ROLE) == 1, "0022's definition changed: update this migration"
    return text.replace(previous._BY_ROLE, _STORED_OR_LIVE) if stored else text


def _replace_lookup(stored: bool) -> None:
    # Only the owner may replace the function, and it needs CREATE on the schema for that moment (as 0022).
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(_lookup(stored))
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def upgrade() -> None:
    op.execute("CREATE SCHEMA gwm_principal")
    op.execute("REVOKE ALL ON SCHEMA gwm_principal FROM PUBLIC")
    op.execute("GRANT USAGE ON SCHEMA gwm_principal TO gwm_lookup")
    op.execute("""
CREATE TABLE gwm_principal.user_grant_sets (
    user_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    grants text NOT NULL,
    valid_until timestamp(6) with time zone,
    updated_at timestamp(6) with time zone NOT NULL DEFAULT now(),
    CONSTRAINT pk_user_grant_sets PRIMARY KEY (user_id),
    CONSTRAINT fk_user_grant_sets_tenant_id_user_id_users FOREIGN KEY (tenant_id, user_id)
        REFERENCES public.users (tenant_id, id) ON DELETE CASCADE ON UPDATE CASCADE
)""")
    op.execute("ALTER TABLE gwm_principal.user_grant_sets ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE gwm_principal.user_grant_sets FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY tenant_isolation ON gwm_principal.user_grant_sets "
        f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
    )
    op.execute("CREATE POLICY lookup_read ON gwm_principal.user_grant_sets FOR SELECT TO gwm_lookup USING (true)")
    op.execute("GRANT SELECT (user_id, tenant_id, grants, valid_until, updated_at) ON gwm_principal.user_grant_sets"
               " TO gwm_lookup")

    op.execute(USER_GRANTS)
    op.execute("REVOKE ALL ON FUNCTION gwm_principal.user_grants(uuid, uuid) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION gwm_principal.user_grants(uuid, uuid) TO gwm_lookup")
    op.execute(REFRESH)
    op.execute(f"REVOKE ALL ON FUNCTION {REFRESH_SIGNATURE} FROM PUBLIC")
    for name, (table, event, transitions, changed) in TRIGGERS.items():
        op.execute(_TRIGGER_FUNCTION.format(name=name, changed=changed))
        op.execute(f"REVOKE ALL ON FUNCTION gwm_principal.{name}() FROM PUBLIC")
        op.execute(
            f"CREATE TRIGGER trg_{name}_grant_sets AFTER {event} ON public.{table}"
            f" REFERENCING {transitions} FOR EACH STATEMENT EXECUTE FUNCTION gwm_principal.{name}()"
        )
    op.execute(TRUNCATED)
    op.execute("REVOKE ALL ON FUNCTION gwm_principal.truncated() FROM PUBLIC")
    for table in ("user_roles", "roles"):
        op.execute(
            f"CREATE TRIGGER trg_{table}_truncated_grant_sets AFTER TRUNCATE ON public.{table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION gwm_principal.truncated()"
        )

    # Backfill: every user holding an assignment, tenant by tenant (row-level security binds the owner).
    op.execute("""
DO $fill$
DECLARE
    previous_tenant text := current_setting('app.tenant_id', true);
    t record;
BEGIN
    FOR t IN SELECT g.tenant_id AS id FROM public.gwm_tenant_ids() AS g ORDER BY 1 LOOP
        PERFORM set_config('app.tenant_id', t.id::text, true);
        PERFORM gwm_principal.refresh(
            t.id,
            ARRAY(SELECT DISTINCT ur.user_id FROM public.user_roles AS ur WHERE ur.tenant_id = t.id),
            '{}', '{}');
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(previous_tenant, ''), true);
END
$fill$""")
    _replace_lookup(stored=True)


def downgrade() -> None:
    _replace_lookup(stored=False)
    for table in ("user_roles", "roles"):
        op.execute(f"DROP TRIGGER trg_{table}_truncated_grant_sets ON public.{table}")
    for name, (table, *_) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER trg_{name}_grant_sets ON public.{table}")
    op.execute("DROP SCHEMA gwm_principal CASCADE")
