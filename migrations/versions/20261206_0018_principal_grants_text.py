"""The request principal's grants built as JSON text, not as jsonb.

gwm_request_session's grants (0012: per role, [permissions, [project ids] or null, held tenant-wide])
were aggregated with jsonb_agg, every project id converted to a jsonb string, the binary value built
and then printed as text for the server (`p.grants::text`), on every request. For a capture manager
holding its role on 200 projects that was a third of the statement's CPU. The same value is now built
with json_agg over array_agg (text concatenation, no binary form) and returned as text: the server
reads the same JSON (auth.principal.grants_from_json), key order and spacing aside. The function's
result type changes (grants jsonb -> text), so it is dropped and created again, with 0010's grants and
owner; everything else about it is unchanged.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 00:30:00+00:00
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = "public.gwm_request_session(text)"
_AS_TEXT = """(SELECT coalesce(json_agg(json_build_array(g.permissions, g.projects, g.tenant_wide))::text, '[]')
              FROM (SELECT r.permissions,
                           array_agg(ur.opportunity_project_id) FILTER (WHERE ur.opportunity_project_id IS NOT NULL)
                               AS projects,
                           bool_or(ur.opportunity_project_id IS NULL) AS tenant_wide
                      FROM public.user_roles AS ur
                      JOIN public.roles AS r ON r.id = ur.role_id AND r.tenant_id = ur.tenant_id
                     WHERE ur.tenant_id = s.tenant_id AND ur.user_id = s.user_id
                       AND (ur.expires_at IS NULL OR ur.expires_at > now())
                     GROUP BY r.id) AS g)"""


def _per_role() -> str:
    """0012's definition of the function (CREATE FUNCTION ..., grants jsonb)."""
    previous = importlib.import_module("migrations.versions.20261205_0012_grants_by_role")
    text: str = previous._definition(previous._PER_ROLE)
    return text.replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION", 1)


def _as_text() -> str:
    previous = importlib.import_module("migrations.versions.20261205_0012_grants_by_role")
    text = _per_role()
    assert previous._PER_ROLE in text and "    grants jsonb\n" in text, "0012's definition changed: update this"
    return text.replace(previous._PER_ROLE, _AS_TEXT).replace("    grants jsonb\n", "    grants text\n")


def _recreate(definition: str) -> None:
    # Only the owner may drop the function; creating it as gwm_lookup needs CREATE on the schema for
    # that moment (as 0010 and 0012), and the grants are 0010's.
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
    op.execute(definition)
    op.execute(f"REVOKE ALL ON FUNCTION {_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {_SIGNATURE} TO gwm_app")
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def upgrade() -> None:
    _recreate(_as_text())


def downgrade() -> None:
    _recreate(_per_role())
