"""Authentication state: recovery codes, linked identities, account tokens, API keys, SAML caches.

Also on users: the last accepted TOTP step, the start of the current failure window, the
forced-change flag, and a unique index on (tenant_id, lower(email)) since sign-in matches emails
case-insensitively; on tenants: subdomains are lower-case DNS labels. New pre-tenant lookups
(account token, API key, OIDC issuer) are SECURITY DEFINER functions owned by gwm_lookup, as in
0001; `gwm_tenant_ids()` lets the owner's provisioning step visit every tenant.
See docs/decisions.md, "Authentication" (A1-A8).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = (
    "mfa_recovery_codes",
    "user_identities",
    "account_tokens",
    "api_keys",
    "saml_authn_requests",
    "saml_assertions_seen",
)
TS = postgresql.TIMESTAMP(timezone=True, precision=6)

LOOKUP_COLUMNS = {
    "account_tokens": ("id", "tenant_id", "user_id", "purpose", "token_hash", "expires_at", "used_at"),
    "api_keys": ("id", "tenant_id", "role_id", "key_hash", "expires_at", "revoked_at"),
    "tenant_configurations": ("tenant_id", "config_key", "config_value"),
}

LOOKUP_FUNCTIONS = {
    "public.gwm_account_token_by_hash(text)": """
CREATE FUNCTION public.gwm_account_token_by_hash(p_hash text)
RETURNS TABLE (token_id uuid, tenant_id uuid, user_id uuid, purpose text, expires_at timestamptz,
               used_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT t.id, t.tenant_id, t.user_id, t.purpose, t.expires_at, t.used_at
      FROM public.account_tokens AS t
     WHERE t.token_hash = p_hash
$fn$""",
    "public.gwm_api_key_by_hash(text)": """
CREATE FUNCTION public.gwm_api_key_by_hash(p_hash text)
RETURNS TABLE (api_key_id uuid, tenant_id uuid, role_id uuid, expires_at timestamptz, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT k.id, k.tenant_id, k.role_id, k.expires_at, k.revoked_at
      FROM public.api_keys AS k
     WHERE k.key_hash = p_hash
$fn$""",
    # The OIDC settings of the active tenants that trust (issuer, audience). The caller verifies
    # the token against what this returns; nothing here trusts the unverified claims beyond
    # choosing which configuration to verify with.
    "public.gwm_oidc_provider(text, text)": """
CREATE FUNCTION public.gwm_oidc_provider(p_issuer text, p_audience text)
RETURNS TABLE (tenant_id uuid, config jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT c.tenant_id, c.config_value
      FROM public.tenant_configurations AS c
      JOIN public.tenants AS t ON t.id = c.tenant_id
     WHERE c.config_key = 'auth.oidc'
       AND c.config_value ->> 'issuer' = p_issuer
       AND c.config_value ->> 'audience' = p_audience
       AND t.is_active
$fn$""",
    "public.gwm_tenant_ids()": """
CREATE FUNCTION public.gwm_tenant_ids()
RETURNS TABLE (tenant_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
AS $fn$
    SELECT t.id FROM public.tenants AS t ORDER BY t.id
$fn$""",
}
# gwm_tenant_ids() serves the owner's provisioning step (`gwm db upgrade`), not the server.
OWNER_ONLY = {"public.gwm_tenant_ids()"}


def upgrade() -> None:
    _create_tables()
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    op.add_column("users", sa.Column("failed_login_window_started_at", TS, nullable=True))
    op.add_column(
        "users", sa.Column("must_change_password", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.create_index(
        "uq_users_tenant_id_lower_email", "users", ["tenant_id", sa.literal_column("lower(email)")], unique=True
    )
    op.create_check_constraint(
        op.f("ck_tenants_subdomain_format"), "tenants", "subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'"
    )
    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
        )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(NEW_TABLES)} TO gwm_app")
    _create_lookup_functions()


def downgrade() -> None:
    op.execute("SET LOCAL ROLE gwm_lookup")
    for signature in LOOKUP_FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("RESET ROLE")
    for table, columns in LOOKUP_COLUMNS.items():
        if table not in NEW_TABLES:
            op.execute(f"DROP POLICY lookup_read ON {table}")
            op.execute(f"REVOKE SELECT ({', '.join(columns)}) ON {table} FROM gwm_lookup")
    op.drop_constraint(op.f("ck_tenants_subdomain_format"), "tenants", type_="check")
    op.drop_index("uq_users_tenant_id_lower_email", table_name="users")
    op.drop_column("users", "must_change_password")
    op.drop_column("users", "failed_login_window_started_at")
    op.drop_column("users", "totp_last_step")
    for table in reversed(NEW_TABLES):
        op.drop_table(table)


def _create_lookup_functions() -> None:
    for table, columns in LOOKUP_COLUMNS.items():
        op.execute(f"GRANT SELECT ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(f"CREATE POLICY lookup_read ON {table} FOR SELECT TO gwm_lookup USING (true)")
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    for signature, definition in LOOKUP_FUNCTIONS.items():
        op.execute(definition)
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        if signature not in OWNER_ONLY:
            op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO gwm_app")
        op.execute(f"ALTER FUNCTION {signature} OWNER TO gwm_lookup")
        if signature in OWNER_ONLY:
            # Granted by the new owner: an owner's own rights move with ownership, so a grant made
            # before ALTER ... OWNER to the migration role itself would leave with it.
            op.execute("SET LOCAL ROLE gwm_lookup")
            op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO SESSION_USER")
            op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def _create_tables() -> None:
    """Generated by Alembic autogenerate from models/credentials.py; keep it in step with them."""
    op.create_table(
        "mfa_recovery_codes",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"],
            name=op.f("fk_mfa_recovery_codes_tenant_id_user_id_users"), onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_mfa_recovery_codes_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mfa_recovery_codes")),
        sa.UniqueConstraint("user_id", "code_hash", name=op.f("uq_mfa_recovery_codes_user_id_code_hash")),
    )
    op.create_table(
        "user_identities",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("provider", sa.String(length=10), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("provider IN ('oidc', 'saml')", name=op.f("ck_user_identities_provider_values")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"],
            name=op.f("fk_user_identities_tenant_id_user_id_users"), onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_user_identities_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_identities")),
        sa.UniqueConstraint(
            "tenant_id", "provider", "issuer", "subject",
            name=op.f("uq_user_identities_tenant_id_provider_issuer_subject"),
        ),
    )
    op.create_index(op.f("ix_user_identities_user_id"), "user_identities", ["user_id"], unique=False)
    op.create_table(
        "account_tokens",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "purpose IN ('invitation', 'password_reset')", name=op.f("ck_account_tokens_purpose_values")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_account_tokens_tenant_id_created_by_users"), onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"],
            name=op.f("fk_account_tokens_tenant_id_user_id_users"), onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_account_tokens_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_account_tokens_user_id_purpose"), "account_tokens", ["user_id", "purpose"], unique=False
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("role_id", sa.UUID(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.UUID(), nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "created_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_api_keys_tenant_id_created_by_users"), onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "revoked_by"], ["users.tenant_id", "users.id"],
            name=op.f("fk_api_keys_tenant_id_revoked_by_users"), onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "role_id"], ["roles.tenant_id", "roles.id"],
            name=op.f("fk_api_keys_tenant_id_role_id_roles"), onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_api_keys_tenant_id_name")),
    )
    op.create_index(op.f("ix_api_keys_role_id"), "api_keys", ["role_id"], unique=False)
    op.create_table(
        "saml_authn_requests",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_saml_authn_requests_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name=op.f("pk_saml_authn_requests")),
    )
    op.create_table(
        "saml_assertions_seen",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("assertion_id", sa.String(length=255), nullable=False),
        sa.Column("not_on_or_after", TS, nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_saml_assertions_seen_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "assertion_id", name=op.f("pk_saml_assertions_seen")),
    )
