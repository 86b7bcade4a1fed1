"""Document text: extraction jobs with a lease, the text indexed in chunks, and the tenant's search function.

- `document_extraction_jobs`: one row per document version to extract (lease `claimed_until`,
  `claimed_by`, `attempts`, `available_at`, `finished_at`, `last_error`). Operational (W11).
- `document_text_chunks`: the extracted text in pieces (`chunk_index`, `start_offset`, `content`),
  each with a stored tsvector (weight B) and a GIN index. Derived data (W11).
- `documents.processing_error`: why extraction failed (the limit it hit, or the parser's complaint).
- `ix_documents_extraction_pending`: the claim's lookup of documents waiting for extraction.
- `gwm_extraction_claim(worker, now, lease_seconds, max_jobs)`: the pre-tenant claim, SECURITY
  DEFINER owned by gwm_lookup, executable by gwm_app: it creates the job rows of pending, clean,
  undeleted documents, then leases due jobs (never claimed, or their lease ran out) FOR UPDATE SKIP
  LOCKED, counting the attempt.
- `gwm_document_search(query)`: the ids of the documents of the tenant in `app.tenant_id` whose
  name/text vector or one of whose chunks matches `query`. SECURITY DEFINER owned by gwm_lookup,
  whose policies on the two tables are `true`: `@@` is not LEAKPROOF, so under the tenant policy of
  gwm_app PostgreSQL may not use it as an index condition; here the tenant is an ordinary condition
  and both GIN indexes serve the match (docs/api/documents.md, option 2). It returns ids only; the
  caller's statement reads the rows under its own policy and the documents rule.

New tables are tenant-owned like every other: row-level security forced, the standard policy,
gwm_app may read and write them; updated_at by the trigger.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 00:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
TS = postgresql.TIMESTAMP(timezone=True, precision=6)
NEW_TABLES = ("document_extraction_jobs", "document_text_chunks")
CHUNK_VECTOR_SQL = "setweight(to_tsvector('english'::regconfig, content), 'B'::\"char\")"

# What the functions owned by gwm_lookup may read, insert and update (column privileges, own policies).
LOOKUP_SELECT = {
    "documents": ("id", "tenant_id", "processing_status", "scan_status", "is_deleted", "search_vector"),
    "document_extraction_jobs": (
        "id", "tenant_id", "document_id", "attempts", "available_at", "claimed_until", "claimed_by", "finished_at",
    ),
    "document_text_chunks": ("tenant_id", "document_id", "search_vector"),
}
LOOKUP_UPDATE = {"document_extraction_jobs": ("claimed_until", "claimed_by", "attempts")}
LOOKUP_INSERT = {"document_extraction_jobs": ("tenant_id", "document_id", "available_at")}

CLAIM_SIGNATURE = "public.gwm_extraction_claim(text, timestamptz, integer, integer)"
CLAIM_FUNCTION = """
CREATE FUNCTION public.gwm_extraction_claim(p_worker text, p_now timestamptz, p_lease_seconds integer,
                                            p_max_jobs integer)
RETURNS TABLE (job_id uuid, tenant_id uuid, document_id uuid, attempts integer, claimed_until timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = ''
AS $fn$
#variable_conflict use_column
DECLARE
    v_until timestamptz;
BEGIN
    IF p_worker IS NULL OR p_worker = '' OR length(p_worker) > 200 THEN
        RAISE EXCEPTION 'gwm_extraction_claim: the worker name must be 1 to 200 characters';
    END IF;
    IF p_now IS NULL OR p_lease_seconds IS NULL OR p_lease_seconds < 1 OR p_max_jobs IS NULL OR p_max_jobs < 1 THEN
        RAISE EXCEPTION 'gwm_extraction_claim: now, a positive lease and a positive job count are required';
    END IF;
    v_until := p_now + make_interval(secs => p_lease_seconds);

    -- Every pending document whose object the scanner found clean has its job (due at once).
    INSERT INTO public.document_extraction_jobs (tenant_id, document_id, available_at)
    SELECT d.tenant_id, d.id, p_now
    FROM public.documents d
    WHERE d.processing_status = 'pending' AND d.scan_status = 'clean' AND NOT d.is_deleted
    ON CONFLICT (tenant_id, document_id) DO NOTHING;

    RETURN QUERY
    WITH due AS (
        SELECT j.id
        FROM public.document_extraction_jobs j
        WHERE j.finished_at IS NULL AND j.available_at <= p_now
          AND (j.claimed_until IS NULL OR j.claimed_until <= p_now)
        ORDER BY j.available_at, j.id
        LIMIT p_max_jobs
        FOR UPDATE SKIP LOCKED
    )
    UPDATE public.document_extraction_jobs j
    SET claimed_by = p_worker, claimed_until = v_until, attempts = j.attempts + 1
    FROM due
    WHERE j.id = due.id
    RETURNING j.id, j.tenant_id, j.document_id, j.attempts, j.claimed_until;
END
$fn$"""

SEARCH_SIGNATURE = "public.gwm_document_search(tsquery)"
SEARCH_FUNCTION = f"""
CREATE FUNCTION public.gwm_document_search(p_query tsquery)
RETURNS uuid[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $fn$
    -- The GIN indexes answer `@@`; the tenant is a filter on what they find. The planner does not
    -- count reading a row's TOASTed vector, so it would rather scan the table or read every row of
    -- the tenant through a tenant index and test each vector (100 ms for 2,000 documents of 10 kB,
    -- against 2-4 ms through the GIN index): sequential scans are off here, and the tenant test is
    -- written `IS TRUE`, which no btree index answers.
    SELECT COALESCE(array_agg(DISTINCT hit.id), '{{}}'::uuid[])
    FROM (
        SELECT d.id FROM public.documents d
        WHERE d.search_vector @@ p_query AND (d.tenant_id = {CURRENT_TENANT}) IS TRUE
        UNION ALL
        SELECT c.document_id FROM public.document_text_chunks c
        WHERE c.search_vector @@ p_query AND (c.tenant_id = {CURRENT_TENANT}) IS TRUE
    ) hit
$fn$"""


def upgrade() -> None:
    op.add_column("documents", sa.Column("processing_error", sa.Text(), nullable=True))
    _create_tables()
    for table in NEW_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
        )
    op.execute(
        "CREATE TRIGGER trg_document_extraction_jobs_updated_at BEFORE UPDATE ON document_extraction_jobs "
        "FOR EACH ROW EXECUTE FUNCTION public.gwm_set_updated_at()"
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(NEW_TABLES)} TO gwm_app")
    _create_functions()


def downgrade() -> None:
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(f"DROP FUNCTION {SEARCH_SIGNATURE}")
    op.execute(f"DROP FUNCTION {CLAIM_SIGNATURE}")
    op.execute("RESET ROLE")
    op.execute("DROP POLICY document_text_lookup_read ON documents")
    op.execute(f"REVOKE SELECT ({', '.join(LOOKUP_SELECT['documents'])}) ON documents FROM gwm_lookup")
    op.drop_index("ix_documents_extraction_pending", table_name="documents")
    op.drop_table("document_text_chunks")
    op.drop_table("document_extraction_jobs")
    op.drop_column("documents", "processing_error")


def _create_functions() -> None:
    for table, columns in LOOKUP_SELECT.items():
        op.execute(f"GRANT SELECT ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(f"CREATE POLICY document_text_lookup_read ON {table} FOR SELECT TO gwm_lookup USING (true)")
    for table, columns in LOOKUP_UPDATE.items():
        op.execute(f"GRANT UPDATE ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(
            f"CREATE POLICY extraction_claim ON {table} FOR UPDATE TO gwm_lookup USING (true) WITH CHECK (true)"
        )
    for table, columns in LOOKUP_INSERT.items():
        op.execute(f"GRANT INSERT ({', '.join(columns)}) ON {table} TO gwm_lookup")
        op.execute(f"CREATE POLICY extraction_job_create ON {table} FOR INSERT TO gwm_lookup WITH CHECK (true)")
    op.execute("GRANT CREATE ON SCHEMA public TO gwm_lookup")
    for body, signature in ((CLAIM_FUNCTION, CLAIM_SIGNATURE), (SEARCH_FUNCTION, SEARCH_SIGNATURE)):
        op.execute(body)
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO gwm_app")
        op.execute(f"ALTER FUNCTION {signature} OWNER TO gwm_lookup")
    # The schema owner (migrations, maintenance, EXPLAIN of the API's statements) may run the search too.
    op.execute("SET LOCAL ROLE gwm_lookup")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SEARCH_SIGNATURE} TO SESSION_USER")
    op.execute("RESET ROLE")
    op.execute("REVOKE CREATE ON SCHEMA public FROM gwm_lookup")


def _create_tables() -> None:
    """Written after models/document_text.py; `alembic check` (tests/test_migrations.py) keeps them in step."""
    op.create_table(
        "document_extraction_jobs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("available_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_document_extraction_jobs_attempts_not_negative")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "document_id"], ["documents.tenant_id", "documents.id"],
            name=op.f("fk_document_extraction_jobs_tenant_id_document_id_documents"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_document_extraction_jobs_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_extraction_jobs")),
        sa.UniqueConstraint("tenant_id", "document_id", name=op.f("uq_document_extraction_jobs_tenant_id_document_id")),
    )
    op.create_index(
        "ix_document_extraction_jobs_due", "document_extraction_jobs", ["available_at"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.create_table(
        "document_text_chunks",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("document_id", sa.UUID(), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("start_offset", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("search_vector", postgresql.TSVECTOR(), sa.Computed(CHUNK_VECTOR_SQL, persisted=True), nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("chunk_index >= 0", name=op.f("ck_document_text_chunks_chunk_index_not_negative")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "document_id"], ["documents.tenant_id", "documents.id"],
            name=op.f("fk_document_text_chunks_tenant_id_document_id_documents"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_document_text_chunks_tenant_id_tenants"),
            onupdate="CASCADE", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_text_chunks")),
        sa.UniqueConstraint(
            "tenant_id", "document_id", "chunk_index",
            name=op.f("uq_document_text_chunks_tenant_id_document_id_chunk_index"),
        ),
    )
    op.create_index(
        "ix_document_text_chunks_search_vector", "document_text_chunks", ["search_vector"], postgresql_using="gin"
    )
    op.create_index(
        "ix_documents_extraction_pending", "documents", ["created_at"],
        postgresql_where=sa.text("processing_status = 'pending'"),
    )
