"""What a DBA would check by hand after site.yml, on the Molecule container.

Runs after converge and the idempotence step. Two tests run the playbook again from
here: a --check --diff converge that must report no change, and a no-op converge that
must not restart the postmaster.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "module_utils"))
import pg_tuning  # noqa: E402

# The podman backend runs `podman exec` directly: far faster than testinfra's ansible one.
testinfra_hosts = ["podman://qdb-molecule-db1"]


def psql(host, query, db="quant_platform"):
    cmd = host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s", db, query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def psql_as(host, user, password, query, db="quant_platform"):
    """Connect over TCP with a password, as an application would."""
    return host.run(
        "env PGPASSWORD=%s psql -XAtq -v ON_ERROR_STOP=1 -h 127.0.0.1 -U %s -d %s -c %s",
        password, user, db, query)


def lab_password(name):
    path = os.path.join(PROJECT, "inventory", "lab", "group_vars", "all.yml")
    with open(path) as handle:
        match = re.search(r"^access_%s_password: (\S+)$" % name, handle.read(), re.M)
    return match.group(1)


# Keys each quantdb-ops module returned over every run of this session (test_zz_module_returns.py).
RETURNS = {}


def run_playbook(path, *extra, env=None):
    """ansible-playbook on the Molecule inventory. The result carries `stats`, the per-host
    recap the quantdb_stats callback wrote as JSON (callback_plugins/), so tests never parse
    the human-readable PLAY RECAP; stdout stays the normal output for text assertions."""
    fd, stats_file = tempfile.mkstemp(prefix="qdb-stats-", suffix=".json")
    os.close(fd)
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], path] + list(extra)
    run_env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", QDB_STATS_FILE=stats_file,
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(PROJECT, "callback_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="quantdb_stats", **(env or {}))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env)
        with open(stats_file) as handle:
            text = handle.read()
        report = json.loads(text) if text else {}
        proc.stats = report.get("stats")   # None: the run stopped before its recap
        for name, keys in report.get("returns", {}).items():
            RETURNS.setdefault(name, set()).update(keys)
    finally:
        os.unlink(stats_file)
    return proc


def run_converge(*extra):
    started = time.monotonic()
    proc = run_playbook(os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml"), *extra)
    return proc, time.monotonic() - started


def recap(proc, host="qdb-molecule-db1"):
    """The run's recap for host, from the JSON the quantdb_stats callback wrote."""
    assert proc.stats and host in proc.stats, proc.stdout[-3000:] + proc.stderr[-2000:]
    s = proc.stats[host]
    return dict(ok=s["ok"], changed=s["changed"], unreachable=s["unreachable"], failed=s["failures"],
                skipped=s["skipped"], ignored=s["ignored"])


def test_postgresql_17_runs_with_checksums(host):
    assert psql(host, "SHOW server_version_num").startswith("17")
    assert psql(host, "SHOW data_checksums") == "on"
    assert host.service("postgresql@17-main").is_enabled


def test_timescaledb_in_quant_platform_with_detected_license(host):
    assert re.match(r"^2\.\d+", psql(host, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"))
    assert psql(host, "SHOW timescaledb.license") == "apache"  # Debian's build
    assert psql(host, "SHOW timescaledb.max_background_workers") == "8"
    assert psql(host, "SHOW timescaledb.telemetry_level") == "off"
    libs = psql(host, "SHOW shared_preload_libraries").split(",")
    assert {"timescaledb", "pg_stat_statements", "pg_cron"} <= set(lib.strip() for lib in libs)


def test_ohlcv_data_is_a_hypertable_with_yearly_chunks_and_unique_key(host):
    # TimescaleDB stores '1 year' as 360 days (a month counts 30 days); compare as intervals.
    rows = psql(host, "SELECT hypertable_name || ':' || (time_interval = INTERVAL '1 year') "
                      "FROM timescaledb_information.dimensions ORDER BY 1").splitlines()
    assert rows == ["factor_scores:true", "ohlcv_data:true", "technical_analysis:true"]
    assert psql(host, "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_ohlcv_ticker_region_date'") == \
        "CREATE UNIQUE INDEX idx_ohlcv_ticker_region_date ON public.ohlcv_data USING btree (ticker, region, date DESC)"
    # The key holds: a second bar for the same ticker and session is refused.
    out = host.run("runuser -u postgres -- psql -XAtq -d quant_platform -c %s",
                   "BEGIN; INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
                   "VALUES ('T', 'KR', '2024-01-02', 1, 1, 1, 1, 0), ('T', 'KR', '2024-01-02', 1, 2, 1, 2, 0); ROLLBACK;")
    assert "duplicate key value violates unique constraint" in out.stderr


def test_migrations_recorded_in_order(host):
    assert psql(host, "SELECT string_agg(version || ' ' || name, ',' ORDER BY version) FROM schema_migrations") == (
        "0001 tickers,0002 ohlcv_data,0003 technical_analysis,0004 factor_scores,0005 ohlcv_monthly,"
        "0006 market_data_support,0007 market_data_integrity,0008 app_config,0009 read_functions")


def test_monthly_rollup_is_a_materialized_view_refreshed_by_pg_cron(host):
    assert psql(host, "SELECT count(*) FROM pg_matviews WHERE matviewname = 'ohlcv_monthly'") == "1"
    assert psql(host, "SELECT schedule || '|' || command FROM cron.job WHERE jobname = 'quantdb-refresh-ohlcv-monthly'") == \
        "30 1 * * *|REFRESH MATERIALIZED VIEW CONCURRENTLY public.ohlcv_monthly"
    # The job's command really works against the view.
    psql(host, "REFRESH MATERIALIZED VIEW CONCURRENTLY public.ohlcv_monthly")


def test_settings_equal_the_computed_values_for_the_container_memory_limit(host):
    limit_mb = int(host.file("/sys/fs/cgroup/memory/memory.limit_in_bytes").content_string.strip()) // (1024 * 1024) \
        if host.file("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists \
        else int(host.file("/sys/fs/cgroup/memory.max").content_string.strip()) // (1024 * 1024)
    assert limit_mb == 2048, "the scenario runs with --memory=2g"
    cpus = int(host.run("nproc").stdout.strip())
    expected = pg_tuning.compute_settings(limit_mb, cpus, 100)
    for name, value in expected.items():
        assert psql(host, "SHOW %s" % name) == value, name
    assert psql(host, "SHOW shared_buffers") == "512MB"  # 25% of 2 GB, not of the host's RAM
    fixed = {"random_page_cost": "1.1", "effective_io_concurrency": "200", "checkpoint_completion_target": "0.9",
             "max_wal_size": "4GB", "password_encryption": "scram-sha-256", "log_min_duration_statement": "1s",
             "log_lock_waits": "on", "log_checkpoints": "on", "log_temp_files": "0"}
    for name, value in fixed.items():
        assert psql(host, "SHOW %s" % name) == value, name
    assert psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


def test_hypertables_and_their_new_chunks_have_the_autovacuum_parameters(host):
    """The schema role's schema_autovacuum_settings (issue 16) on each hypertable, and TimescaleDB
    copies them into a chunk created later (made in a DO block whose exception rolls it back)."""
    wanted = ["autovacuum_analyze_scale_factor=0.002", "autovacuum_vacuum_insert_scale_factor=0.02",
              "autovacuum_vacuum_scale_factor=0.01"]
    for table in ("ohlcv_data", "technical_analysis", "factor_scores"):
        options = psql(host, "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'public.%s'::regclass" % table)
        assert sorted(options.split(",")) == wanted, (table, options)
    out = host.run("runuser -u postgres -- psql -XAtq -d quant_platform -c %s",
                   "DO $$ DECLARE r text; BEGIN "
                   "INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
                   "VALUES ('ZZAV', 'KR', '1971-01-04', 1, 1, 1, 1, 0); "
                   "SELECT array_to_string(c.reloptions, ',') INTO r FROM timescaledb_information.chunks k "
                   "JOIN pg_class c ON c.oid = format('%I.%I', k.chunk_schema, k.chunk_name)::regclass "
                   "WHERE k.hypertable_name = 'ohlcv_data' AND k.range_start <= '1971-01-04' AND k.range_end > '1971-01-04'; "
                   "RAISE EXCEPTION 'new chunk: %', r; END $$")
    assert out.rc != 0 and "new chunk: " in out.stderr, out.stderr
    assert sorted(out.stderr.split("new chunk: ", 1)[1].split()[0].split(",")) == wanted, out.stderr
    assert psql(host, "SELECT count(*) FROM ohlcv_data WHERE ticker = 'ZZAV'") == "0"


def test_pg_hba_has_no_trust_and_no_open_address(host):
    rules = psql(host, "SELECT type || ' ' || array_to_string(database, ',') || ' ' || array_to_string(user_name, ',') "
                       "|| ' ' || coalesce(address, '-') || ' ' || auth_method FROM pg_hba_file_rules ORDER BY rule_number")
    assert "trust" not in rules
    assert "0.0.0.0" not in rules
    assert rules.splitlines()[0] == "local all postgres - peer"
    assert "trust" not in host.file("/etc/postgresql/17/main/pg_hba.conf").content_string.replace("# ", "")
    assert psql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"


def test_reporting_user_reads_but_cannot_write(host):
    pw = lab_password("reporting_user")
    assert psql_as(host, "reporting_user", pw, "SELECT count(*) FROM ohlcv_data").stdout.strip() == "0"
    denied = psql_as(host, "reporting_user", pw,
                     "INSERT INTO tickers (ticker, region, exchange) VALUES ('X', 'KR', 'XKRX')")
    assert denied.rc != 0 and "permission denied for table tickers" in denied.stderr
    assert psql_as(host, "reporting_user", pw, "CREATE TABLE t (i int)").rc != 0
    assert psql_as(host, "reporting_user", pw, "SHOW statement_timeout").stdout.strip() == "1min"
    assert psql_as(host, "reporting_user", "wrong-password-123", "SELECT 1").rc != 0


def test_no_login_role_connects_to_the_maintenance_database(host):
    """CONNECT on `postgres` is revoked from PUBLIC (issue 15): only superusers get in."""
    assert psql(host, "SELECT has_database_privilege('public', 'postgres', 'CONNECT')") == "f"
    for role in ("quant_app", "reporting_user", "quant_monitor"):
        denied = psql_as(host, role, lab_password(role), "SELECT 1", db="postgres")
        assert denied.rc != 0 and "permission denied for database" in denied.stderr, (role, denied.stderr)


def test_writer_writes_and_roles_are_least_privilege(host):
    pw = lab_password("quant_app")
    ok = psql_as(host, "quant_app", pw, "BEGIN; INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
                                        "VALUES ('T', 'KR', '2024-01-02', 1, 1, 1, 1, 0); ROLLBACK;")
    assert ok.rc == 0, ok.stderr
    assert psql_as(host, "quant_app", pw, "CREATE TABLE t (i int)").rc != 0  # no CREATE on public
    roles = psql(host, "SELECT rolname || ':' || rolsuper || rolcreaterole || rolcreatedb || ':' || rolconnlimit "
                       "FROM pg_roles WHERE rolname IN ('quant_app','reporting_user','quant_monitor','quant_backup') "
                       "ORDER BY 1").splitlines()
    assert roles == ["quant_app:falsefalsefalse:50", "quant_backup:falsefalsefalse:5",
                     "quant_monitor:falsefalsefalse:5", "reporting_user:falsefalsefalse:10"]
    assert psql(host, "SELECT pg_has_role('quant_monitor', 'pg_monitor', 'member')") == "t"
    assert psql(host, "SELECT rolreplication FROM pg_roles WHERE rolname = 'quant_backup'") == "t"
    assert psql(host, "SELECT count(*) FROM pg_authid WHERE rolname LIKE 'quant_%' AND rolpassword NOT LIKE 'SCRAM-SHA-256$%'") == "0"
    assert psql(host, "SELECT has_database_privilege('public', 'quant_platform', 'CONNECT')") == "f"


def test_check_mode_converge_reports_no_changes():
    proc, _ = run_converge("--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]


def test_noop_converge_changes_nothing_and_never_restarts(host):
    before = psql(host, "SELECT pg_postmaster_start_time()")
    proc, seconds = run_converge()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]
    assert psql(host, "SELECT pg_postmaster_start_time()") == before
    print("no-op converge took %.1f s" % seconds)


@pytest.mark.parametrize("var,value", [
    ("postgresql_max_connections", "5"),
    ("postgresql_hba_entries", '[{"type": "host", "database": "all", "user": "all", "address": "0.0.0.0/0", "method": "trust"}]'),
    ("postgresql_shared_buffers_ratio", "0.9"),
    ("schema_ohlcv_chunk_interval", "forever"),
    # pgaudit next to TimescaleDB: a COPY into a hypertable would crash the server (issue 15).
    ("postgresql_pgaudit_enabled", "true"),
])
def test_bad_input_fails_before_any_change(host, var, value):
    before = psql(host, "SELECT pg_postmaster_start_time()")
    proc, _ = run_converge("-e", "%s=%s" % (var, value) if not value.startswith("[") else '{"%s": %s}' % (var, value))
    assert proc.returncode != 0
    assert var in proc.stdout + proc.stderr
    assert recap(proc)["changed"] == 0
    assert psql(host, "SELECT pg_postmaster_start_time()") == before
