-- Throwaway audit tables and triggers for the PostGraphile side of the write benchmark.
-- Applied ONLY to the benchmark's own cluster (a throwaway copy of the project database), as superuser. Never touches the
-- project's audit tables: copies live in schema bench_audit, created as the schema owner gwm_owner,
-- with the same columns, defaults, CHECKs, indexes, foreign keys and FORCE RLS tenant policy as
-- public.audit_logs / public.change_history (not their append-only triggers: those fire on UPDATE/
-- DELETE/TRUNCATE only; the chain-link BEFORE INSERT trigger is attached in mode 'parity').
-- Which trigger is live on public.opportunity_projects is chosen by bench_audit_mode.sh (or bench/writes.py
-- --compare, which runs the same statements).
-- Copied from ../shared/bench/writes/ for bench/writes.py --compare, with one extension: record_update also
-- fires AFTER INSERT (TG_OP = 'INSERT'), writing what the unit of work writes for a create: one audit row
-- (action CREATE, after_values the whole new row, changed_fields its non-NULL columns besides id, tenant_id,
-- created_at and updated_at) and one history row per such field (category 'create', old value NULL).
BEGIN;
DROP TRIGGER IF EXISTS bench_audit_after ON public.opportunity_projects;
DROP TRIGGER IF EXISTS bench_a_occ ON public.opportunity_projects;
DROP SCHEMA IF EXISTS bench_audit CASCADE;
CREATE SCHEMA bench_audit AUTHORIZATION gwm_owner;
GRANT USAGE ON SCHEMA bench_audit TO gwm_app;
SET ROLE gwm_owner;

CREATE TABLE bench_audit.audit_logs (LIKE public.audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench_audit.change_history (LIKE public.change_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
-- the plain variant has no chain: seq stays NULL there (CHECK passes on NULL; UNIQUE ignores NULLs)
ALTER TABLE bench_audit.audit_logs ALTER COLUMN seq DROP NOT NULL;
ALTER TABLE bench_audit.change_history ALTER COLUMN seq DROP NOT NULL;
ALTER TABLE bench_audit.audit_logs
  ADD FOREIGN KEY (tenant_id) REFERENCES public.tenants(id) ON UPDATE CASCADE ON DELETE CASCADE,
  ADD FOREIGN KEY (tenant_id, user_id) REFERENCES public.users(tenant_id, id) ON UPDATE CASCADE ON DELETE RESTRICT;
ALTER TABLE bench_audit.change_history
  ADD FOREIGN KEY (tenant_id) REFERENCES public.tenants(id) ON UPDATE CASCADE ON DELETE CASCADE,
  ADD FOREIGN KEY (tenant_id, changed_by_user_id) REFERENCES public.users(tenant_id, id) ON UPDATE CASCADE ON DELETE RESTRICT,
  ADD FOREIGN KEY (tenant_id, parent_change_id) REFERENCES bench_audit.change_history(tenant_id, id) ON UPDATE CASCADE;
DO $$ DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['audit_logs', 'change_history'] LOOP
    EXECUTE format('ALTER TABLE bench_audit.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE bench_audit.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON bench_audit.%I
      USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))
      WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid))$p$, t);
    EXECUTE format('GRANT SELECT, INSERT ON bench_audit.%I TO gwm_app', t);
  END LOOP;
END $$;

-- HMAC-SHA256 from PG's built-in sha256() (no pgcrypto in this build): sha256(okey || sha256(ikey || msg)),
-- with the 64-byte padded keys K^0x36.. / K^0x5c.. sent by the server in pgSettings (the key is not in the DB).
CREATE FUNCTION bench_audit.hmac_sha256(msg bytea) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT sha256(decode(current_setting('bench.audit_okey'), 'hex')
                || sha256(decode(current_setting('bench.audit_ikey'), 'hex') || msg))
$$;

-- Canonical message of a row: like models/audit_chain.py v1 (prefix, sorted-key JSON of every non-NULL
-- column except row_hash, and the table name), in jsonb's own text form.
CREATE FUNCTION bench_audit.canonical(tbl text, r jsonb) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT convert_to(E'gwm-audit-v1\n' || jsonb_build_object(
           'table', tbl,
           'columns', (SELECT jsonb_object_agg(key, value) FROM jsonb_each(r - 'row_hash') WHERE value <> 'null'::jsonb)
         )::text, 'UTF8')
$$;

-- W12 analogue (mode 'parity'): the client sends the updatedAt it read inside the patch; refuse a stale
-- one, and refuse when this transaction did not start after the stored value. Named bench_a_* so it
-- fires before trg_opportunity_projects_updated_at (BEFORE triggers run in name order), which then
-- stamps now() as before.
CREATE FUNCTION bench_audit.check_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN
    RAISE EXCEPTION 'CONFLICT: the % row was changed since it was read', TG_TABLE_NAME USING ERRCODE = '40001';
  END IF;
  IF NOT now() > OLD.updated_at THEN
    RAISE EXCEPTION 'CONFLICT: the % row is being changed by another request', TG_TABLE_NAME USING ERRCODE = '40001';
  END IF;
  RETURN NEW;
END $$;

-- AFTER UPDATE ... FOR EACH ROW: one audit_logs row (changed fields with updated_at, before/after values)
-- and one change_history row per changed field except id/tenant_id/created_at/updated_at.
-- TG_ARGV[0]: 'plain' (no chain), 'chain' (per-tenant advisory lock + seq + prev_hash + HMAC per row,
-- as AuditChain.append_sync), 'parity' (chain + one pg_notify per transaction, as the unit of work).
CREATE FUNCTION bench_audit.record_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  mode     text := TG_ARGV[0];
  o        jsonb := to_jsonb(OLD);
  n        jsonb := to_jsonb(NEW);
  tenant   uuid := NEW.tenant_id;
  actor    uuid := NULLIF(current_setting('bench.user_id', true), '')::uuid;
  etype    text := CASE TG_TABLE_NAME WHEN 'opportunity_projects' THEN 'opportunity_project' ELSE TG_TABLE_NAME END;
  batch    uuid := gen_random_uuid();
  changed  text[];
  k        text;
  a        bench_audit.audit_logs;
  h        bench_audit.change_history;
  last_seq bigint;
  last_hash bytea;
BEGIN
  IF TG_OP = 'INSERT' THEN
    o := NULL;
    SELECT coalesce(array_agg(e.key), '{}') INTO changed
      FROM jsonb_each(n) AS e
     WHERE e.value <> 'null'::jsonb AND e.key NOT IN ('id', 'tenant_id', 'created_at', 'updated_at');
  ELSE
    SELECT coalesce(array_agg(e.key), '{}') INTO changed
      FROM jsonb_each(n) AS e WHERE e.value IS DISTINCT FROM o -> e.key;
    IF changed <@ ARRAY['updated_at'] THEN
      RETURN NULL;  -- nothing but bookkeeping moved
    END IF;
  END IF;
  a.id := gen_random_uuid();
  a.tenant_id := tenant;
  a.user_id := actor;
  a.ip_address := NULLIF(current_setting('bench.ip', true), '')::inet;
  a.user_agent := NULLIF(current_setting('bench.user_agent', true), '');
  a.action_type := CASE TG_OP WHEN 'INSERT' THEN 'CREATE' ELSE 'UPDATE' END;
  a.entity_type := etype;
  a.entity_id := NEW.id;
  a.operation_description := CASE TG_OP WHEN 'INSERT' THEN 'createOpportunityProject: CREATE '
                                                        ELSE 'updateOpportunityProject: UPDATE ' END || etype;
  a.before_values := CASE WHEN TG_OP = 'INSERT' THEN NULL
                          ELSE (SELECT jsonb_object_agg(c, o -> c) FROM unnest(changed) c) END;
  a.after_values := CASE WHEN TG_OP = 'INSERT' THEN n
                         ELSE (SELECT jsonb_object_agg(c, n -> c) FROM unnest(changed) c) END;
  a.changed_fields := to_jsonb(changed);
  a.access_granted := true;
  a.permission_used := 'opportunity:write';
  a.risk_level := 'low';
  a.request_id := NULLIF(current_setting('bench.request_id', true), '');
  a.api_endpoint := '/graphql';
  a.http_method := 'POST';
  a.timestamp_utc := now();
  IF mode = 'plain' THEN
    INSERT INTO bench_audit.audit_logs SELECT a.*;
    INSERT INTO bench_audit.change_history (tenant_id, entity_type, entity_id, field_name, old_value, new_value,
        changed_by_user_id, change_source, change_category, change_impact_level, change_batch_id)
      SELECT tenant, etype, NEW.id, c, o -> c, n -> c, actor, 'user', 'update',
             CASE WHEN c IN ('project_status') THEN 'high'
                  WHEN c IN ('pipeline_stage', 'priority_level', 'win_probability_score', 'strategic_value_score',
                             'pursuit_health_score', 'assigned_capture_manager', 'assigned_proposal_manager',
                             'archived_at') THEN 'medium' ELSE 'low' END,
             batch
        FROM unnest(changed) c WHERE c NOT IN ('id', 'tenant_id', 'created_at', 'updated_at');
    RETURN NULL;
  END IF;
  -- chained: audit_logs, then change_history (the order AuditChain uses), each under its own
  -- transaction-level advisory lock per (table, tenant), read the head, append seq + 1
  PERFORM pg_advisory_xact_lock(1111838209, hashtext(tenant::text));   -- 0x42454E01
  SELECT t.seq, t.row_hash INTO last_seq, last_hash FROM bench_audit.audit_logs t
   WHERE t.tenant_id = tenant ORDER BY t.seq DESC LIMIT 1;
  a.seq := coalesce(last_seq, 0) + 1;
  a.prev_hash := last_hash;
  a.hash_key_id := 'b1';
  a.row_hash := bench_audit.hmac_sha256(bench_audit.canonical('audit_logs', to_jsonb(a)));
  INSERT INTO bench_audit.audit_logs SELECT a.*;
  PERFORM pg_advisory_xact_lock(1111838210, hashtext(tenant::text));   -- 0x42454E02
  SELECT t.seq, t.row_hash INTO last_seq, last_hash FROM bench_audit.change_history t
   WHERE t.tenant_id = tenant ORDER BY t.seq DESC LIMIT 1;
  last_seq := coalesce(last_seq, 0);
  FOREACH k IN ARRAY changed LOOP
    CONTINUE WHEN k IN ('id', 'tenant_id', 'created_at', 'updated_at');
    h := NULL;
    h.id := gen_random_uuid();
    h.tenant_id := tenant;
    h.entity_type := etype;
    h.entity_id := NEW.id;
    h.change_timestamp := now();
    h.field_name := k;
    h.old_value := o -> k;
    h.new_value := n -> k;
    h.changed_by_user_id := actor;
    h.change_source := 'user';
    h.change_category := CASE TG_OP WHEN 'INSERT' THEN 'create' ELSE 'update' END;
    h.change_impact_level := CASE WHEN k IN ('project_status') THEN 'high'
        WHEN k IN ('pipeline_stage', 'priority_level', 'win_probability_score', 'strategic_value_score',
                   'pursuit_health_score', 'assigned_capture_manager', 'assigned_proposal_manager', 'archived_at')
        THEN 'medium' ELSE 'low' END;
    h.notification_triggered := false;
    h.change_batch_id := batch;
    h.created_at := now();
    last_seq := last_seq + 1;
    h.seq := last_seq;
    h.prev_hash := last_hash;
    h.hash_key_id := 'b1';
    h.row_hash := bench_audit.hmac_sha256(bench_audit.canonical('change_history', to_jsonb(h)));
    INSERT INTO bench_audit.change_history SELECT h.*;
    last_hash := h.row_hash;
  END LOOP;
  IF mode = 'parity' THEN
    PERFORM pg_notify('bench_changes', json_build_object('tenant', tenant, 'batch', batch,
        'entities', json_build_array(json_build_object('type', etype, 'id', NEW.id)))::text);
  END IF;
  RETURN NULL;
END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA bench_audit TO gwm_app;

-- Chain check used after each run (as superuser, per tenant): every row's prev_hash is the previous
-- row's row_hash, seq is gapless from 1, and row_hash recomputes under the key (ikey/okey set in the session).
CREATE FUNCTION bench_audit.verify(tbl text) RETURNS TABLE (rows bigint, bad_links bigint, bad_hashes bigint, gaps bigint)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY EXECUTE format($q$
    WITH r AS (SELECT t.tenant_id, t.seq, t.prev_hash, t.row_hash, to_jsonb(t) AS j,
                      lag(t.row_hash) OVER w AS lag_hash, row_number() OVER w AS rn
                 FROM bench_audit.%I t WINDOW w AS (PARTITION BY t.tenant_id ORDER BY t.seq))
    SELECT count(*), count(*) FILTER (WHERE prev_hash IS DISTINCT FROM lag_hash),
           count(*) FILTER (WHERE row_hash IS DISTINCT FROM bench_audit.hmac_sha256(bench_audit.canonical(%L, j))),
           count(*) FILTER (WHERE seq <> rn) FROM r$q$, tbl, tbl);
END $$;
RESET ROLE;
COMMIT;
