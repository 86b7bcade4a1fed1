"""The write path: statements the unit of work runs in fewer round trips.

`gwm_audit_chain_heads(tables)`: for each chained audit table named (in the order given, which is
the order AuditChain appends in), take the transaction's (tenant, table) advisory lock and then read
that tenant's chain head, all in one round trip. The function is VOLATILE plpgsql, so under READ
COMMITTED each head is read in a fresh snapshot taken after its lock was granted: a row appended by
the transaction that held the lock before is seen (one SELECT taking the lock and reading the head
together would read in a snapshot older than the lock). It reports the transaction's isolation and
tenant as the single-table statement did; without a tenant it takes no lock and reads nothing.
SECURITY INVOKER: the caller's row-level security applies to the heads it reads.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 00:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "public.gwm_audit_chain_heads(text[])"

# The advisory lock classes are models/audit_chain.py _LOCK_CLASS ("GWA" + 1..3), as in migration 0005.
HEADS_FUNCTION = """
CREATE FUNCTION public.gwm_audit_chain_heads(p_tables text[])
RETURNS TABLE (table_name text, isolation text, tenant uuid, seq bigint, row_hash bytea)
LANGUAGE plpgsql
VOLATILE
SET search_path = ''
AS $fn$
DECLARE
    t text;
    tenant_text text := NULLIF(current_setting('app.tenant_id', true), '')::uuid::text;
BEGIN
    FOREACH t IN ARRAY p_tables LOOP
        IF t IS NULL OR t NOT IN ('audit_logs', 'change_history', 'permission_audit') THEN
            RAISE EXCEPTION '% is not a chained audit table', t USING ERRCODE = 'invalid_parameter_value';
        END IF;
        table_name := t;
        isolation := current_setting('transaction_isolation');
        tenant := tenant_text::uuid;
        seq := NULL;
        row_hash := NULL;
        IF tenant_text IS NOT NULL THEN
            PERFORM pg_advisory_xact_lock(
                CASE t WHEN 'audit_logs' THEN 1196900609 WHEN 'change_history' THEN 1196900610
                       WHEN 'permission_audit' THEN 1196900611 END,
                hashtext(tenant_text));
            IF isolation = 'read committed' THEN
                EXECUTE format('SELECT seq, row_hash FROM public.%I WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1', t)
                   INTO seq, row_hash
                  USING tenant;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$"""


def upgrade() -> None:
    op.execute(HEADS_FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO gwm_app")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
