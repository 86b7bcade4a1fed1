"""The audit tables become a tamper-evident, append-only hash chain (W1-W4).

audit_logs, change_history and permission_audit gain seq, prev_hash, row_hash and hash_key_id
(filled by models/audit_chain.py, checked by `gwm audit verify`), UNIQUE (tenant_id, seq) and a
CHECK on the chain columns' shape. Rows already present get a seq per tenant (in recording order)
and no hash: the key is not in the database, so they cannot be signed here; verify lists them as
unchained before this migration (W1).

Append-only: gwm_app loses UPDATE and DELETE on the three tables; a trigger refuses UPDATE and
TRUNCATE to everyone and DELETE to everyone but the owner inside gwm_audit_purge() (retention) or
gwm_delete_tenant() (a whole tenant), both owner-only SECURITY DEFINER functions (W3). A second
trigger refuses an insert that does not extend the tenant's chain (no row_hash, wrong seq,
prev_hash not the last row_hash). The user references of the audit rows become RESTRICT and
change_history's parent reference NO ACTION, instead of SET NULL, which would rewrite signed rows
(W2).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 16:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Table -> the column that says when a row was recorded (the retention purge compares it).
AUDIT_TABLES = {"audit_logs": "timestamp_utc", "change_history": "created_at", "permission_audit": "timestamp_utc"}
# The first argument of pg_advisory_xact_lock(int4, int4) per table, as models/audit_chain.py takes it.
LOCK_CLASS = {"audit_logs": 0x47574101, "change_history": 0x47574102, "permission_audit": 0x47574103}

# (table, column, referenced table, action before this revision)
# (table, column, parent, ON DELETE before, ON DELETE after)
REFERENCES = (
    ("audit_logs", "user_id", "users", "SET NULL (user_id)", "RESTRICT"),
    ("change_history", "changed_by_user_id", "users", "SET NULL (changed_by_user_id)", "RESTRICT"),
    ("permission_audit", "user_id", "users", None, "RESTRICT"),
    ("change_history", "parent_change_id", "change_history", "SET NULL (parent_change_id)", None),
)

CHAIN_CHECK = (
    "seq > 0 AND (row_hash IS NULL) = (hash_key_id IS NULL)"
    " AND (row_hash IS NULL OR octet_length(row_hash) = 32)"
    " AND (prev_hash IS NULL OR (row_hash IS NOT NULL AND octet_length(prev_hash) = 32))"
)

# UPDATE and TRUNCATE: never. DELETE: only as the table's owner while gwm.audit_purge is 'on',
# which the purge functions turn on around their deletes (transaction-local, turned off again
# before they return; an error rolls it back with the rest). Any role can set a custom setting, hence
# the owner check too; gwm_app has no path to a cascade into these tables (it may not delete
# tenants, and the user references are RESTRICT), and the owner is trusted not to
# set it by hand (it could disable the trigger anyway: the hash chain is what catches the owner).
APPEND_ONLY_FUNCTION = """
CREATE FUNCTION public.gwm_audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_setting('gwm.audit_purge', true) = 'on'
       AND current_user = (SELECT pg_catalog.pg_get_userbyid(c.relowner)
                             FROM pg_catalog.pg_class AS c WHERE c.oid = TG_RELID) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Retention purges and tenant deletion go through gwm_audit_purge() and gwm_delete_tenant().';
END
$fn$"""

# Every insert must extend the tenant's chain: models/audit_chain.py computes seq and prev_hash
# under the (tenant, table) advisory lock; this makes any other writer fail loudly at once.
CHAIN_LINK_FUNCTION = """
CREATE FUNCTION public.gwm_audit_chain_link()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
DECLARE
    last_seq bigint;
    last_hash bytea;
BEGIN
    IF NEW.row_hash IS NULL OR NEW.hash_key_id IS NULL THEN
        RAISE EXCEPTION '% rows are written through the audit chain (row_hash missing)', TG_TABLE_NAME
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    EXECUTE format('SELECT seq, row_hash FROM %I.%I WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME)
       INTO last_seq, last_hash
      USING NEW.tenant_id;
    IF NEW.seq IS DISTINCT FROM coalesce(last_seq, 0) + 1 OR NEW.prev_hash IS DISTINCT FROM last_hash THEN
        RAISE EXCEPTION '% row seq % does not extend the chain of tenant % (last seq %)',
                        TG_TABLE_NAME, NEW.seq, NEW.tenant_id, coalesce(last_seq, 0)
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$fn$"""

_PURGE_VALUES = ", ".join(
    f"('{table}', '{column}', {LOCK_CLASS[table]})" for table, column in AUDIT_TABLES.items()
)

# Retention: per table, delete the tenant's oldest rows up to the first one recorded at or after
# p_before, never the newest (it carries the chain on), and never a change whose child stays.
# Returns each table's first remaining seq and its prev_hash: the caller (AuditChain.purge_before)
# records them in a signed audit_logs row in the same transaction, and verify starts there.
PURGE_FUNCTION = f"""
CREATE FUNCTION public.gwm_audit_purge(p_tenant uuid, p_before timestamptz)
RETURNS TABLE (table_name text, deleted bigint, first_seq bigint, anchor bytea)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    t record;
    cutoff bigint;
    head bigint;
    lower_seq bigint;
BEGIN
    IF p_tenant IS NULL OR p_before IS NULL THEN
        RAISE EXCEPTION 'gwm_audit_purge needs a tenant and a cutoff' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_catalog.set_config('app.tenant_id', p_tenant::text, true);
    PERFORM pg_catalog.set_config('gwm.audit_purge', 'on', true);
    FOR t IN SELECT * FROM (VALUES {_PURGE_VALUES}) AS v (name, recorded_at, lock_class) LOOP
        PERFORM pg_catalog.pg_advisory_xact_lock(t.lock_class, pg_catalog.hashtext(p_tenant::text));
        EXECUTE format('SELECT max(seq) FROM public.%I WHERE tenant_id = $1', t.name) INTO head USING p_tenant;
        EXECUTE format('SELECT min(seq) FROM public.%I WHERE tenant_id = $1 AND %I >= $2', t.name, t.recorded_at)
           INTO cutoff USING p_tenant, p_before;
        cutoff := least(coalesce(cutoff, head), head);
        IF t.name = 'change_history' THEN
            LOOP
                SELECT min(p.seq) INTO lower_seq
                  FROM public.change_history AS c
                  JOIN public.change_history AS p ON p.tenant_id = c.tenant_id AND p.id = c.parent_change_id
                 WHERE c.tenant_id = p_tenant AND c.seq >= cutoff AND p.seq < cutoff;
                EXIT WHEN lower_seq IS NULL;
                cutoff := lower_seq;
            END LOOP;
        END IF;
        table_name := t.name;
        deleted := 0;
        IF cutoff IS NOT NULL THEN
            EXECUTE format('DELETE FROM public.%I WHERE tenant_id = $1 AND seq < $2', t.name)
              USING p_tenant, cutoff;
            GET DIAGNOSTICS deleted = ROW_COUNT;
        END IF;
        first_seq := NULL;
        anchor := NULL;
        EXECUTE format('SELECT seq, prev_hash FROM public.%I WHERE tenant_id = $1 ORDER BY seq LIMIT 1', t.name)
           INTO first_seq, anchor USING p_tenant;
        RETURN NEXT;
    END LOOP;
    PERFORM pg_catalog.set_config('gwm.audit_purge', '', true);
END
$fn$"""

# A whole tenant, audit trail included (its rows cascade from tenants). Returns, per audit table,
# how many rows went and the chain's head, and writes the same to the server log: the tenant's
# own trail cannot record its end.
DELETE_TENANT_FUNCTION = f"""
CREATE FUNCTION public.gwm_delete_tenant(p_tenant uuid)
RETURNS TABLE (subdomain text, table_name text, row_count bigint, head_seq bigint, head_hash bytea)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
    t record;
    found_subdomain text;
    summary text := '';
BEGIN
    PERFORM pg_catalog.set_config('app.tenant_id', p_tenant::text, true);
    SELECT x.subdomain INTO found_subdomain FROM public.tenants AS x WHERE x.id = p_tenant;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR t IN SELECT * FROM (VALUES {_PURGE_VALUES}) AS v (name, recorded_at, lock_class) LOOP
        PERFORM pg_catalog.pg_advisory_xact_lock(t.lock_class, pg_catalog.hashtext(p_tenant::text));
        subdomain := found_subdomain;
        table_name := t.name;
        EXECUTE format('SELECT count(*) FROM public.%I WHERE tenant_id = $1', t.name) INTO row_count USING p_tenant;
        head_seq := NULL;
        head_hash := NULL;
        EXECUTE format('SELECT seq, row_hash FROM public.%I WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1', t.name)
           INTO head_seq, head_hash USING p_tenant;
        summary := summary || format(' %s: %s rows, head seq %s hash %s;', t.name, row_count,
                                     coalesce(head_seq::text, '-'), coalesce(encode(head_hash, 'hex'), '-'));
        RETURN NEXT;
    END LOOP;
    PERFORM pg_catalog.set_config('gwm.audit_purge', 'on', true);
    -- The trail first: its references to users are RESTRICT, so the users' cascade must find none.
    FOR t IN SELECT * FROM (VALUES {_PURGE_VALUES}) AS v (name, recorded_at, lock_class) LOOP
        EXECUTE format('DELETE FROM public.%I WHERE tenant_id = $1', t.name) USING p_tenant;
    END LOOP;
    DELETE FROM public.tenants AS x WHERE x.id = p_tenant;
    PERFORM pg_catalog.set_config('gwm.audit_purge', '', true);
    RAISE LOG 'gwm: tenant % (%) deleted by %, with its audit trail:%',
              p_tenant, found_subdomain, session_user, summary;
END
$fn$"""

OWNER_FUNCTIONS = ("public.gwm_audit_purge(uuid, timestamptz)", "public.gwm_delete_tenant(uuid)")


def upgrade() -> None:
    for table in AUDIT_TABLES:
        op.add_column(table, sa.Column("seq", sa.BigInteger(), nullable=True))
        op.add_column(table, sa.Column("prev_hash", sa.LargeBinary(), nullable=True))
        op.add_column(table, sa.Column("row_hash", sa.LargeBinary(), nullable=True))
        op.add_column(table, sa.Column("hash_key_id", sa.String(length=32), nullable=True))
    _number_existing_rows()
    for table in AUDIT_TABLES:
        op.alter_column(table, "seq", nullable=False)
        op.create_unique_constraint(op.f(f"uq_{table}_tenant_id_seq"), table, ["tenant_id", "seq"])
        op.create_check_constraint(op.f(f"ck_{table}_audit_chain"), table, CHAIN_CHECK)
    for table, column, parent, _, after in REFERENCES:
        _replace_reference(table, column, parent, ondelete=after)

    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {', '.join(AUDIT_TABLES)} FROM gwm_app")
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(CHAIN_LINK_FUNCTION)
    for table in AUDIT_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION public.gwm_audit_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER trg_{table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.gwm_audit_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER trg_{table}_chain_link BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION public.gwm_audit_chain_link()"
        )
    for signature, definition in zip(OWNER_FUNCTIONS, (PURGE_FUNCTION, DELETE_TENANT_FUNCTION), strict=True):
        op.execute(definition)
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")


def downgrade() -> None:
    for signature in OWNER_FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    for table in AUDIT_TABLES:
        op.execute(f"DROP TRIGGER trg_{table}_chain_link ON {table}")
        op.execute(f"DROP TRIGGER trg_{table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER trg_{table}_append_only ON {table}")
    op.execute("DROP FUNCTION public.gwm_audit_chain_link()")
    op.execute("DROP FUNCTION public.gwm_audit_append_only()")
    op.execute(f"GRANT UPDATE, DELETE ON {', '.join(AUDIT_TABLES)} TO gwm_app")
    for table, column, parent, before, _ in REFERENCES:
        _replace_reference(table, column, parent, ondelete=before)
    for table in AUDIT_TABLES:
        op.drop_constraint(op.f(f"ck_{table}_audit_chain"), table, type_="check")
        op.drop_constraint(op.f(f"uq_{table}_tenant_id_seq"), table, type_="unique")
        for column in ("hash_key_id", "row_hash", "prev_hash", "seq"):
            op.drop_column(table, column)


def _number_existing_rows() -> None:
    """seq 1..n per tenant in recording order for rows written before this revision (no hash)."""
    for table, recorded_at in AUDIT_TABLES.items():
        # The owner is bound by the tenant policies too (FORCE); lifted for this one statement.
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(
            f"UPDATE {table} AS t SET seq = n.seq "
            f"FROM (SELECT id, row_number() OVER (PARTITION BY tenant_id ORDER BY {recorded_at}, id) AS seq "
            f"FROM {table}) AS n WHERE t.id = n.id"
        )
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def _replace_reference(table: str, column: str, parent: str, *, ondelete: str | None) -> None:
    name = op.f(f"fk_{table}_tenant_id_{column}_{parent}")
    op.drop_constraint(name, table, type_="foreignkey")
    op.create_foreign_key(
        name,
        table,
        parent,
        ["tenant_id", column],
        ["tenant_id", "id"],
        onupdate="CASCADE",
        ondelete=ondelete,
    )
