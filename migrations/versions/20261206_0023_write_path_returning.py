"""The write path: a project create's or restore's domain checks in one round trip.

`gwm_claim_project_slot(tenant, source)`: whether the external source `source` exists for the
tenant (true when `source` is null), then the tenant row locked FOR NO KEY UPDATE, then the tenant's
`max_opportunity_projects` and its count of projects that are not archived. The function is
VOLATILE plpgsql, so under READ COMMITTED the count is read in a fresh snapshot taken after the lock
was granted: a project the create that held the lock before committed is counted, as when the lock
and the count were two statements (one SELECT locking the row and counting in a subquery would count
in a snapshot older than the lock, and two creates could take the last slot). SECURITY INVOKER: the
caller's row-level security applies to every row it reads.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 02:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "public.gwm_claim_project_slot(uuid, uuid)"

CLAIM_FUNCTION = """
CREATE FUNCTION public.gwm_claim_project_slot(p_tenant uuid, p_source uuid)
RETURNS TABLE (source_found boolean, max_projects integer, counted bigint)
LANGUAGE plpgsql
VOLATILE
SET search_path = ''
AS $fn$
BEGIN
    source_found := p_source IS NULL OR EXISTS (
        SELECT 1 FROM public.external_opportunity_sources s WHERE s.id = p_source AND s.tenant_id = p_tenant);
    SELECT t.max_opportunity_projects INTO max_projects
      FROM public.tenants t WHERE t.id = p_tenant
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- no such tenant (for this caller): no row
    END IF;
    SELECT count(*) INTO counted
      FROM public.opportunity_projects p WHERE p.tenant_id = p_tenant AND p.archived_at IS NULL;
    RETURN NEXT;
END
$fn$"""


def upgrade() -> None:
    op.execute(CLAIM_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO gwm_app")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
