"""Request principal lookups: a request's caller in the first statement of its read transaction.

A GraphQL request used to authenticate in a transaction of its own (the session lookup, the tenant
setting, the caller's state, COMMIT) before its reads opened another. Now the server begins the
request's REPEATABLE READ READ ONLY transaction with one statement,

    SELECT p.*, set_config('app.tenant_id', p.tenant_id::text, true) FROM gwm_request_session($1) AS p

(or gwm_request_api_key), which returns everything the principal is built from and sets the tenant for
the rest of the transaction; the reads follow in the same snapshot. The functions are pre-tenant
lookups like 0001's: SECURITY DEFINER, owned by gwm_lookup, `search_path` empty, STABLE, and every
table they read is filtered by the session's (or key's) tenant explicitly. gwm_lookup gets SELECT on
the columns they read and nothing else: the caller's account flags (no email, no password hash), the
tenant's policy inputs, its security settings, role permissions and assignments.

gwm_request_session(hash): the session's row (whatever its state, as gwm_session_by_token_hash), the
user's flags (user_found false when the user is gone or belongs to another tenant), the tenant's name,
FedRAMP flag, user limit and activity, its unencrypted `security.*` settings as one object, and the
unexpired role assignments as [[permissions, project id or null], ...].
gwm_request_api_key(hash): the key's row with last_used_at, the tenant's activity and the key's role's
permissions (null when the role is gone).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 20:10:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns gwm_lookup may now read besides 0001/0002's; tables marked True get its lookup_read policy.
LOOKUP_COLUMNS: dict[str, tuple[tuple[str, ...], bool]] = {
    "tenants": (("name", "fedramp_compliant", "max_users"), False),
    "tenant_configurations": (("is_encrypted",), False),
    "api_keys": (("last_used_at",), False),
    "users": (("id", "tenant_id", "is_active", "is_system", "mfa_enabled", "must_change_password"), True),
    "user_roles": (("tenant_id", "user_id", "role_id", "opportunity_project_id", "expires_at"), True),
    "roles": (("id", "tenant_id", "permissions"), True),
}

LOOKUP_FUNCTIONS = {
    "public.gwm_request_session(text)": """
CREATE FUNCTION public.gwm_request_session(p_hash text)
RETURNS TABLE (
    session_id uuid,
    user_id uuid,
    tenant_id uuid,
    created_at timestamptz,
    last_activity_at timestamptz,
    expires_at timestamptz,
    is_active boolean,
    terminated_at timestamptz,
    mfa_verified boolean,
    user_found boolean,
    user_active boolean,
    user_is_system boolean,
    mfa_enabled boolean,
    must_change_password boolean,
    tenant_name text,
    fedramp_compliant boolean,
    max_users integer,
    tenant_active boolean,
    security jsonb,
    grants jsonb
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT s.id, s.user_id, s.tenant_id, s.created_at, s.last_activity_at, s.expires_at,
           s.is_active, s.terminated_at, s.mfa_verified,
           u.id IS NOT NULL, coalesce(u.is_active, false), coalesce(u.is_system, false),
           coalesce(u.mfa_enabled, false), coalesce(u.must_change_password, false),
           t.name::text, t.fedramp_compliant, t.max_users, t.is_active,
           (SELECT coalesce(jsonb_object_agg(c.config_key, c.config_value), '{}'::jsonb)
              FROM public.tenant_configurations AS c
             WHERE c.tenant_id = s.tenant_id AND c.config_key LIKE 'security.%' AND NOT c.is_encrypted),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(r.permissions, ur.opportunity_project_id)), '[]'::jsonb)
              FROM public.user_roles AS ur
              JOIN public.roles AS r ON r.id = ur.role_id AND r.tenant_id = ur.tenant_id
             WHERE ur.tenant_id = s.tenant_id AND ur.user_id = s.user_id
               AND (ur.expires_at IS NULL OR ur.expires_at > now()))
      FROM public.user_sessions AS s
      JOIN public.tenants AS t ON t.id = s.tenant_id
      LEFT JOIN public.users AS u ON u.id = s.user_id AND u.tenant_id = s.tenant_id
     WHERE s.session_token_hash = p_hash
$fn$""",
    "public.gwm_request_api_key(text)": """
CREATE FUNCTION public.gwm_request_api_key(p_hash text)
RETURNS TABLE (
    api_key_id uuid,
    tenant_id uuid,
    role_id uuid,
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    tenant_active boolean,
    permissions jsonb
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT k.id, k.tenant_id, k.role_id, k.expires_at, k.revoked_at, k.last_used_at, t.is_active,
           (SELECT r.permissions FROM public.roles AS r WHERE r.id = k.role_id AND r.tenant_id = k.tenant_id)
      FROM public.api_keys AS k
      JOIN public.tenants AS t ON t.id = k.tenant_id
     WHERE k.key_hash = p_hash
$fn$""",
}


def upgrade() -> None:
    for table, (columns, policy) in LOOKUP_COLUMNS.items():
        op.execute(f"GRANT SELECT ({', '.join(columns)}) ON {table} TO gwm_lookup")
        if policy:
            op.execute(f"CREATE POLICY lookup_read ON {table} FOR SELECT TO gwm_lookup USING (true)")
    # ALTER ... OWNER needs the new owner to hold CREATE on the schema: only for this moment (as 0001).
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    for signature, definition in LOOKUP_FUNCTIONS.items():
        op.execute(definition)
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO gwm_app")
        op.execute(f"ALTER FUNCTION {signature} OWNER TO gwm_lookup")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def downgrade() -> None:
    # Only the owner may drop a function, and the migration role does not inherit gwm_lookup.
    op.execute("SET LOCAL ROLE gwm_lookup")
    for signature in LOOKUP_FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("RESET ROLE")
    for table, (columns, policy) in LOOKUP_COLUMNS.items():
        if policy:
            op.execute(f"DROP POLICY lookup_read ON {table}")
        op.execute(f"REVOKE SELECT ({', '.join(columns)}) ON {table} FROM gwm_lookup")
