#!/usr/bin/env bash
# bench_audit_mode.sh off|plain|chain|parity : which bench trigger is live on public.opportunity_projects.
# off (the gateway's runs): no bench trigger at all. Superuser, benchmark cluster only.
set -euo pipefail
psql_su() { psql "${PG_SUPERUSER_URL:?set PG_SUPERUSER_URL to the benchmark cluster}" "$@"; }
mode=${1:?mode}
sql="BEGIN;
DROP TRIGGER IF EXISTS bench_audit_after ON public.opportunity_projects;
DROP TRIGGER IF EXISTS bench_a_occ ON public.opportunity_projects;
DROP TRIGGER IF EXISTS bench_chain_link ON bench_audit.audit_logs;
DROP TRIGGER IF EXISTS bench_chain_link ON bench_audit.change_history;"
case $mode in
off) ;;
plain|chain|parity)
  sql="$sql
CREATE TRIGGER bench_audit_after AFTER INSERT OR UPDATE ON public.opportunity_projects FOR EACH ROW EXECUTE FUNCTION bench_audit.record_update('$mode');" ;;
*) echo "bad mode"; exit 2 ;;
esac
if [ "$mode" = parity ]; then sql="$sql
CREATE TRIGGER bench_a_occ BEFORE UPDATE ON public.opportunity_projects FOR EACH ROW EXECUTE FUNCTION bench_audit.check_updated_at();
CREATE TRIGGER bench_chain_link BEFORE INSERT ON bench_audit.audit_logs FOR EACH ROW EXECUTE FUNCTION public.gwm_audit_chain_link();
CREATE TRIGGER bench_chain_link BEFORE INSERT ON bench_audit.change_history FOR EACH ROW EXECUTE FUNCTION public.gwm_audit_chain_link();"; fi
psql_su -v ON_ERROR_STOP=1 -c "$sql
COMMIT;"
psql_su -At -c "select tgname from pg_trigger where not tgisinternal and tgrelid in ('public.opportunity_projects'::regclass,'bench_audit.audit_logs'::regclass,'bench_audit.change_history'::regclass) order by 1" | tr '\n' ' '; echo "(mode $mode)"
