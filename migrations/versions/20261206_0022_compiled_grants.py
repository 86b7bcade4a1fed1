"""A caller's assignments read from one index alone, once: the principal lookup and compiled reads.

Every request's principal lookup (gwm_request_session, migrations 0010/0012/0018) aggregates the caller's
unexpired assignments per role. It joined roles first and scanned the caller's assignments once per role
of the tenant (a nested loop: for a capture manager holding its role on 200 projects, 200 rows read seven
times in a tenant of seven roles), visiting the table for each to read its tenant, project and expiry. Now:

- the assignments are grouped by role in one scan, and the roles joined to those groups only (the same
  rows, the same JSON text: 0018's, key order and spacing aside); the session's user is read by its key
  (a nested loop; the function's generic plan had hashed a small tenant's whole users table);
- the scan is index-only: (user_id, opportunity_project_id) INCLUDE (role_id, tenant_id, expires_at), on
  pages the visibility map marks all-visible (what autovacuum keeps). A compiled read of such a caller
  checks a row's project against the same assignments in its own statement (schema/compiled/builder.py
  `granted_projects`): one probe of the same index by user and project. It replaces
  ix_user_roles_user_id_role_id, whose lookups by user and role the unique constraint's index (user_id,
  role_id, opportunity_project_id) serves. gwm_lookup may read each of these columns already (0010).

The function keeps its signature, result, owner and grants (CREATE OR REPLACE, as 0012).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 02:10:00+00:00
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BY_ROLE = """(SELECT coalesce(json_agg(json_build_array(r.permissions, g.projects, g.tenant_wide))::text, '[]')
              FROM (SELECT ur.role_id,
                           array_agg(ur.opportunity_project_id) FILTER (WHERE ur.opportunity_project_id IS NOT NULL)
                               AS projects,
                           bool_or(ur.opportunity_project_id IS NULL) AS tenant_wide
                      FROM public.user_roles AS ur
                     WHERE ur.tenant_id = s.tenant_id AND ur.user_id = s.user_id
                       AND (ur.expires_at IS NULL OR ur.expires_at > now())
                     GROUP BY ur.role_id) AS g
              JOIN public.roles AS r ON r.id = g.role_id AND r.tenant_id = s.tenant_id)"""


_USER_JOIN = "      LEFT JOIN public.users AS u ON u.id = s.user_id AND u.tenant_id = s.tenant_id\n"
# The session's user by its key, as a nested loop: the planner of the function's generic plan had hashed the
# whole users table of a small tenant to join one row. LIMIT 1 (the key is unique) keeps it a sub-select.
_USER_BY_ID = """      LEFT JOIN LATERAL (
                         SELECT u1.id, u1.is_active, u1.is_system, u1.mfa_enabled, u1.must_change_password
                           FROM public.users AS u1
                          WHERE u1.id = s.user_id AND u1.tenant_id = s.tenant_id LIMIT 1) AS u ON true
"""


def _definition(grants: str | None) -> str:
    """0018's definition of the function as CREATE OR REPLACE, with `grants` as its grants sub-select and the user
    joined by key (None: 0018's as it was)."""
    previous = importlib.import_module("migrations.versions.20261206_0018_principal_grants_text")
    text: str = previous._as_text()
    assert text.count(previous._AS_TEXT) == 1 and text.count(_USER_JOIN) == 1, "0018's definition changed"
    if grants is not None:
        text = text.replace(previous._AS_TEXT, grants).replace(_USER_JOIN, _USER_BY_ID)
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _replace(grants: str | None) -> None:
    # Only the owner may replace the function, and it needs CREATE on the schema for that moment (as 0010/0012).
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(_definition(grants))
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def upgrade() -> None:
    op.drop_index("ix_user_roles_user_id_role_id", table_name="user_roles")
    op.create_index(
        "ix_user_roles_user_id_opportunity_project_id", "user_roles", ["user_id", "opportunity_project_id"],
        unique=False, postgresql_include=["role_id", "tenant_id", "expires_at"],
    )
    _replace(_BY_ROLE)


def downgrade() -> None:
    _replace(None)
    op.drop_index("ix_user_roles_user_id_opportunity_project_id", table_name="user_roles")
    op.create_index("ix_user_roles_user_id_role_id", "user_roles", ["user_id", "role_id"], unique=False)
