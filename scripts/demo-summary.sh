#!/usr/bin/env bash
# What `make demo` prints at the end: versions, the settings in force, how to connect.
set -euo pipefail
db=qdb-lab-db1
q() { printf '%s\n' "$1" | podman exec -i -u postgres "$db" psql -XAtq -F ' | ' -v ON_ERROR_STOP=1 -d quant_platform; }
echo
echo "== quantdb-ops lab is up: container $db"
q "SELECT 'PostgreSQL ' || current_setting('server_version') || ', TimescaleDB ' || extversion
          || ' (license ' || current_setting('timescaledb.license') || ')' FROM pg_extension WHERE extname = 'timescaledb'"
echo "-- settings from the postgresql role (tuned for the container's memory limit):"
q "SELECT rpad(name, 36) || current_setting(name) FROM pg_settings
   WHERE name IN ('shared_buffers','effective_cache_size','work_mem','maintenance_work_mem','wal_buffers',
                  'max_connections','max_worker_processes','max_parallel_workers','max_parallel_workers_per_gather',
                  'random_page_cost','effective_io_concurrency','max_wal_size','checkpoint_completion_target',
                  'shared_preload_libraries','timescaledb.max_background_workers','data_checksums','password_encryption')
   ORDER BY name"
echo "-- hypertables:"
q "SELECT hypertable_name || ' (chunk interval ' || d.time_interval || ')'
   FROM timescaledb_information.hypertables h JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)
   ORDER BY 1"
echo "-- market data (make load-sample) and the latest quality audit (make audit, reports/quality.json):"
q "SELECT region || ': ' || count(DISTINCT ticker) || ' tickers, ' || count(*) || ' bars, ' || min(date) || ' .. ' || max(date)
   FROM ohlcv_data GROUP BY region ORDER BY region"
q "SELECT 'audit run ' || run_id || ' as of ' || coalesce(min(scope->>'as_of'), 'today')
          || ' (the sample data ends on a fixed day): ' || string_agg(check_name || '=' || status, ', ' ORDER BY check_name)
   FROM quality_audit_results WHERE run_id = (SELECT max(run_id) FROM quality_audit_results) GROUP BY run_id"
echo "-- backups (role backup; make demo took a full one; again: make backup [BACKUP_TYPE=diff]):"
q "SELECT 'WAL archive: ' || archived_count || ' archived, ' || failed_count || ' failed, last ' || coalesce(last_archived_wal, 'none')
   FROM pg_stat_archiver"
podman exec qdb-lab-db1 runuser -u postgres -- pgbackrest --stanza=main info 2>/dev/null | grep -v '^ *$' | tail -n 6 | sed 's/^/   /' || true
echo "-- exporters (inside the container: the project's on :8000, Debian's postgres_exporter on :9187):"
podman exec qdb-lab-db1 python3 -c '
import urllib.request
for port in (8000, 9187):
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
        families = sum(1 for line in text.splitlines() if line.startswith("# HELP "))
        up = [l for l in text.splitlines() if l.startswith(("postgres_up ", "pg_up "))]
        print("   :%d  %d metric families, %s" % (port, families, up[0] if up else "no up metric"))
    except Exception as exc:
        print("   :%d  not answering (%s)" % (port, exc))
' || true
echo "-- monitoring host qdb-lab-mon1 (site.yml's second play): Prometheus and Alertmanager"
python3 - <<'PY' || true
import json, urllib.request
def get(url):
    return json.load(urllib.request.urlopen(url, timeout=5))
prom, am = "http://127.0.0.1:59090", "http://127.0.0.1:59093"
try:
    targets = get(prom + "/api/v1/targets")["data"]["activeTargets"]
    rules = get(prom + "/api/v1/rules")["data"]["groups"]
    alerts = get(prom + "/api/v1/alerts")["data"]["alerts"]
    print("   Prometheus   %s   (%d alerting, %d recording rules)" % (
        prom, sum(r["type"] == "alerting" for g in rules for r in g["rules"]),
        sum(r["type"] == "recording" for g in rules for r in g["rules"])))
    for t in sorted(targets, key=lambda t: (t["labels"]["job"], t["scrapeUrl"])):
        print("     target %-12s %-36s %s" % (t["labels"]["job"], t["scrapeUrl"], t["health"]))
    print("   Alertmanager %s   (%d alerts received)" % (am, len(get(am + "/api/v2/alerts"))))
    print("   (quantdb-exporter refreshes backup and audit metrics every 2 min: a backup or audit just"
          " taken clears BackupMissing / QualityAuditMissing within that)")
    if not alerts:
        print("   alerts: none pending or firing")
    for a in sorted(alerts, key=lambda a: (a["state"], a["labels"]["alertname"])):
        print("   alert %-8s %-28s %-8s %s" % (a["state"], a["labels"]["alertname"], a["labels"].get("severity", ""),
                                             a["annotations"].get("summary", "")[:90]))
except Exception as exc:
    print("   not answering (%s); make site converges it" % exc)
PY
echo "-- migrations applied:"
q "SELECT version || ' ' || name FROM schema_migrations ORDER BY version"
cat <<'EOF2'
-- connect:
   make psql SQL="select count(*) from ohlcv_data"             (as postgres, inside the container)
   psql "host=127.0.0.1 port=55432 dbname=quant_platform user=reporting_user"   (password: see inventory/lab/group_vars/all.yml, LAB ONLY)
-- stop it:  make lab-down
EOF2
