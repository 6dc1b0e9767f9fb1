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
echo "-- migrations applied:"
q "SELECT version || ' ' || name FROM schema_migrations ORDER BY version"
cat <<'EOF2'
-- connect:
   make psql SQL="select count(*) from ohlcv_data"             (as postgres, inside the container)
   psql "host=127.0.0.1 port=55432 dbname=quant_platform user=reporting_user"   (password: see inventory/lab/group_vars/all.yml, LAB ONLY)
-- stop it:  make lab-down
EOF2
