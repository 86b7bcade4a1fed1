"""The request principal's grants grouped by role: [[permissions, [project ids] or null, tenant-wide], ...].

0010's gwm_request_session returned one [permissions, project id] pair per assignment, repeating the
role's permissions for each: a capture manager holding its role on 200 projects got 200 copies of the
same list on every request (about 60 kB built and parsed per request). Grouped by role, the same answer is
the role's permissions once, the list of its projects, and whether it is also held tenant-wide; the
server expands it (auth.principal.grants_from_json). Everything else about the function is unchanged.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 21:35:00+00:00
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = "public.gwm_request_session(text)"
_PER_ASSIGNMENT = """(SELECT coalesce(jsonb_agg(jsonb_build_array(r.permissions, ur.opportunity_project_id)), \
'[]'::jsonb)
              FROM public.user_roles AS ur
              JOIN public.roles AS r ON r.id = ur.role_id AND r.tenant_id = ur.tenant_id
             WHERE ur.tenant_id = s.tenant_id AND ur.user_id = s.user_id
               AND (ur.expires_at IS NULL OR ur.expires_at > now()))"""
_PER_ROLE = """(SELECT coalesce(jsonb_agg(jsonb_build_array(g.permissions, g.projects, g.tenant_wide)), '[]'::jsonb)
              FROM (SELECT r.permissions,
                           jsonb_agg(ur.opportunity_project_id) FILTER (WHERE ur.opportunity_project_id IS NOT NULL)
                               AS projects,
                           bool_or(ur.opportunity_project_id IS NULL) AS tenant_wide
                      FROM public.user_roles AS ur
                      JOIN public.roles AS r ON r.id = ur.role_id AND r.tenant_id = ur.tenant_id
                     WHERE ur.tenant_id = s.tenant_id AND ur.user_id = s.user_id
                       AND (ur.expires_at IS NULL OR ur.expires_at > now())
                     GROUP BY r.id) AS g)"""


def _definition(grants: str) -> str:
    previous = importlib.import_module("migrations.versions.20261205_0010_request_principal")
    text: str = previous.LOOKUP_FUNCTIONS[_SIGNATURE]
    assert _PER_ASSIGNMENT in text, "0010's definition changed: update this migration"
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace(_PER_ASSIGNMENT, grants)


def _replace(grants: str) -> None:
    # Only the owner may replace the function, and it needs CREATE on the schema for that moment (as 0010);
    # the migration role may act as gwm_lookup (as 0010's downgrade).
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(_definition(grants))
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def upgrade() -> None:
    _replace(_PER_ROLE)


def downgrade() -> None:
    _replace(_PER_ASSIGNMENT)
