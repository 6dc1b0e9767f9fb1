"""Both exporters on the converged stack, as an operator would check them: they answer, expose
the families and the metric contract of docs/monitoring.md with data loaded, the project's one
answers a scrape fast from its cache, reports postgres_up 0 while PostgreSQL is stopped (and
keeps answering), 1 again once it is back, and restarts with a clean journal.

Runs after converge and idempotence. A few rows are loaded by SQL first (tickers, a calendar,
bars, an audit run, a quarantined row) and a backup status file is written, so the families
that are "absent until data exists" exist. Timings print with -s (molecule verify -- -s)."""
import json
import os
import re
import time

import pytest

HOST = "qdb-molecule-mon1"
testinfra_hosts = ["podman://" + HOST]
QUANT = "http://127.0.0.1:8000/metrics"
PGEXP = "http://127.0.0.1:9187/metrics"
PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))

# docs/monitoring.md, "From the project's exporter": name -> labels.
CONTRACT = {
    "postgres_up": set(), "postgres_table_size_bytes": {"table"}, "postgres_index_size_bytes": {"table"},
    "postgres_table_rows": {"table"}, "postgres_hypertable_size_bytes": {"hypertable"},
    "postgres_hypertable_chunks": {"hypertable"}, "postgres_compressed_chunks": {"hypertable"},
    "postgres_uncompressed_old_chunks": {"hypertable"}, "postgres_timescaledb_info": {"version", "license"},
    "postgres_timescaledb_job_last_run_success": {"job_id", "proc_name", "hypertable"},
    "postgres_cron_job_last_run_success": {"jobname"},
    "postgres_query_duration_seconds": {"query_type"}, "postgres_slow_queries_total": set(),
    "postgres_table_index_blocks_hit_total": {"table"}, "postgres_table_index_blocks_read_total": {"table"},
    "postgres_data_freshness_seconds": {"region"}, "postgres_data_stale_sessions": {"region", "exchange"},
    "postgres_tickers_total": {"region"}, "postgres_tickers_missing_latest_session": {"region"},
    "postgres_quality_check_count": {"check", "region"}, "postgres_quality_check_failed": {"check", "region"},
    "postgres_quality_audit_last_run_timestamp_seconds": set(), "postgres_quarantine_rows": {"reason"},
    "postgres_backup_last_success_timestamp_seconds": {"type"},
    "postgres_backup_last_failure_timestamp_seconds": {"type"},
    "postgres_checksum_failures_total": {"datname"},
}
# Documented as absent here: compression ratio on the Apache edition; job success until a job ran.
ABSENT_OK = {"postgres_compression_ratio"}
NOT_EXPOSED = ["postgres_database_size_bytes", "postgres_active_connections", "postgres_idle_connections",
               "postgres_connection_pool_size", "postgres_query_errors_total", "postgres_missing_dates_count",
               "postgres_duplicate_records_count"]
# docs/monitoring.md, "From Debian's prometheus-postgres-exporter".
PG_CONTRACT = ["pg_up", "pg_database_size_bytes", "pg_stat_database_xact_rollback", "pg_stat_database_blks_hit",
               "pg_stat_database_blks_read", "pg_stat_database_deadlocks", "pg_stat_activity_count",
               "pg_stat_activity_max_tx_duration", "pg_settings_max_connections", "pg_stat_archiver_failed_count",
               "pg_stat_user_tables_n_dead_tup", "pg_stat_user_tables_n_live_tup", "pg_replication_lag_seconds",
               "pg_replication_is_replica", "pg_database_wraparound_age_datfrozenxid_seconds"]

SEED = """
BEGIN;
INSERT INTO exchanges (exchange, timezone) VALUES ('XKRX', 'Asia/Seoul') ON CONFLICT DO NOTHING;
INSERT INTO exchange_sessions (exchange, session)
  SELECT 'XKRX', d::date FROM generate_series(current_date - 400, current_date + 30, interval '1 day') d
  WHERE extract(isodow FROM d) < 6 ON CONFLICT DO NOTHING;
INSERT INTO tickers (ticker, region, name, exchange)
  SELECT 'M' || lpad(i::text, 5, '0'), 'KR', 'monitoring test ' || i, 'XKRX' FROM generate_series(1, 60) i
  ON CONFLICT DO NOTHING;
INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume)
  SELECT t.ticker, 'KR', s.session, 100, 101, 99, 100.5, 1000
  FROM tickers t JOIN exchange_sessions s ON s.exchange = 'XKRX' AND s.session <= current_date - 10
  WHERE t.ticker LIKE 'M%' ON CONFLICT DO NOTHING;
INSERT INTO quality_audit_results (run_id, generated_at, scope, check_name, status, count, rows_scanned, seconds)
  VALUES (nextval('quality_audit_run_seq'), now(), '{"region": null}', 'duplicates', 'ok', 0, 100, 0.1),
         (currval('quality_audit_run_seq'), now(), '{"region": null}', 'missing_sessions', 'ok', 0, 100, 0.1)
  ON CONFLICT DO NOTHING;
INSERT INTO ohlcv_quarantine (file_name, file_sha256, line, reason)
  VALUES ('monitoring-test.csv', 'monitoring-test', 1, 'bad_date') ON CONFLICT DO NOTHING;
COMMIT;
ANALYZE;
"""
BACKUP_STATUS = {"format": 1, "types": {
    "full": {"last_success": {"type": "full", "status": "success", "end_epoch": 1761800000, "size_bytes": 1000,
                              "duration_seconds": 2.5}, "last_failure": None},
    "diff": {"last_success": None, "last_failure": {"type": "diff", "status": "failure", "end_epoch": 1761900000}}}}


def psql(host, query, db="quant_platform"):
    cmd = host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s", db, query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def scrape(host, url=QUANT, check=True):
    cmd = host.run("python3 -c %s %s", "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())", url)
    if check:
        assert cmd.rc == 0, cmd.stderr
    return cmd.stdout if cmd.rc == 0 else ""


def families(text):
    """{family name: type} of the lines # HELP / # TYPE, and the sample lines."""
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    return helps, kinds


def samples(text, name):
    return [line for line in text.splitlines() if re.match(r"%s(\{|\s)" % re.escape(name), line)]


def value(text, name):
    found = samples(text, name)
    return float(found[0].rsplit(" ", 1)[1]) if found else None


def wait_for(host, predicate, timeout=60, url=QUANT):
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = scrape(host, url, check=False)   # a restarting exporter refuses for a moment
        if predicate(text):
            return text
        time.sleep(1)
    raise AssertionError("timed out; last scrape:\n" + text[-3000:])


@pytest.fixture(scope="module")
def loaded(host):
    """Rows, a pg_cron run, a backup status file; then a scrape with the slow cache refreshed."""
    psql(host, SEED)
    status = json.dumps(BACKUP_STATUS)
    assert host.run("install -d -m 0755 /var/lib/quantdb-ops/backup && printf %s %s > /var/lib/quantdb-ops/backup/status.json",
                    "%s", status).rc == 0
    # The rollup refresh job (pg_cron) has a run once the job ran: run its command by hand is not a
    # run; schedule a one-off every-second job and wait for one finished run instead.
    psql(host, "SELECT cron.schedule('monitoring-test', '1 seconds', 'SELECT 1')")
    try:
        return wait_for(host, lambda t: 'postgres_tickers_total{region="KR"} 60.0' in t
                        and samples(t, "postgres_cron_job_last_run_success")
                        and samples(t, "postgres_query_duration_seconds_count")
                        and 'query_type="backtest"' in t, timeout=120)
    finally:
        psql(host, "SELECT cron.unschedule('monitoring-test')")


def test_both_exporters_answer_as_services(host):
    for unit in ("quantdb-exporter", "prometheus-postgres-exporter"):
        assert host.service(unit).is_running and host.service(unit).is_enabled, unit
    assert host.user("quantdb-exporter").shell == "/usr/sbin/nologin"
    assert host.process.filter(user="quantdb-exporter", comm="python3"), "not running as its own user"
    env = host.file("/etc/quantdb-ops/quantdb-exporter.env")
    assert env.mode == 0o600 and env.user == "root" and "PGUSER=quant_monitor" in env.content_string
    default = host.file("/etc/default/prometheus-postgres-exporter")
    assert default.mode == 0o600 and "--collector.database_wraparound" in default.content_string
    assert "postgres_up 1.0" in scrape(host)
    assert "\npg_up 1" in scrape(host, PGEXP)


def test_at_least_50_families_with_help_across_both(host, loaded):
    ours, _ = families(loaded)
    theirs, _ = families(scrape(host, PGEXP))
    both = set(ours) | set(theirs)
    assert all(text.strip() for text in list(ours.values()) + list(theirs.values()))
    postgres_ours = {n for n in ours if n.startswith(("postgres_", "quantdb_"))}
    print("\nfamilies with HELP: quantdb-exporter %d (%d postgres_/quantdb_), postgres_exporter %d, together %d"
          % (len(ours), len(postgres_ours), len(theirs), len(both)))
    assert len(both) >= 50
    assert len(postgres_ours) >= 50


def test_the_metric_contract_with_data_loaded(host, loaded):
    _, kinds = families(loaded)
    for name, labels in CONTRACT.items():
        family = name[:-len("_total")] if name.endswith("_total") and kinds.get(name[:-len("_total")]) == "counter" else name
        assert family in kinds, "%s missing" % name
        wanted_kind = "histogram" if name == "postgres_query_duration_seconds" else \
            "counter" if name.endswith("_total") and name != "postgres_tickers_total" else "gauge"
        assert kinds[family] == wanted_kind, name
        series = samples(loaded, name + ("_count" if wanted_kind == "histogram" else ""))
        if name == "postgres_timescaledb_job_last_run_success" and not series:
            continue   # Apache edition: no TimescaleDB job has run (no policies): absent until one does
        assert series, "%s has no sample" % name
        for line in series:
            got = set(re.findall(r'(\w+)="', line)) - {"le"}
            assert got == labels, (name, line)
    for name in NOT_EXPOSED:
        assert not samples(loaded, name), name + " must come from a recording rule"
    for name in ABSENT_OK:
        assert not samples(loaded, name) or 'license="timescale"' in loaded
    # The values the seed implies.
    assert value(loaded, 'postgres_tickers_total{region="KR"}') == 60
    assert value(loaded, 'postgres_tickers_missing_latest_session{region="KR"}') == 60
    assert value(loaded, 'postgres_data_stale_sessions{exchange="XKRX",region="KR"}') >= 5
    assert value(loaded, 'postgres_data_freshness_seconds{region="KR"}') >= 10 * 86400
    assert value(loaded, 'postgres_quality_check_count{check="duplicates",region="all"}') == 0
    assert value(loaded, 'postgres_quarantine_rows{reason="bad_date"}') == 1
    assert value(loaded, 'postgres_backup_last_success_timestamp_seconds{type="full"}') == 1761800000
    assert value(loaded, 'postgres_backup_last_failure_timestamp_seconds{type="diff"}') == 1761900000
    assert value(loaded, 'postgres_backup_last_success_timestamp_seconds{type="incr"}') == 0
    assert value(loaded, 'postgres_hypertable_chunks{hypertable="ohlcv_data"}') >= 1
    assert value(loaded, 'postgres_table_rows{table="ohlcv_data"}') > 0
    assert 'license="apache"' in loaded
    assert value(loaded, 'postgres_query_duration_seconds_count{query_type="single_ticker"}') >= 1
    assert value(loaded, 'quantdb_exporter_statements_per_minute{source="probe"}') > 0


def test_postgres_exporter_contract(host, loaded):
    text = scrape(host, PGEXP)
    for name in PG_CONTRACT:
        assert samples(text, name), name
    assert 'datname="quant_platform"' in "".join(samples(text, "pg_database_wraparound_age_datfrozenxid_seconds"))
    assert 'relname="tickers"' in text


def test_scrape_p95_with_the_cache_warm(host, loaded):
    code = ("import time, urllib.request\n"
            "d = []\n"
            "for _ in range(20):\n"
            "    t = time.perf_counter(); urllib.request.urlopen('%s', timeout=5).read(); d.append(time.perf_counter() - t)\n"
            "d.sort(); print(d[18] * 1000, d[10] * 1000)\n" % QUANT)
    cmd = host.run("python3 -c %s", code)
    assert cmd.rc == 0, cmd.stderr
    p95, p50 = (float(x) for x in cmd.stdout.split())
    print("\nquantdb-exporter scrape over 20: p95 %.1f ms, p50 %.1f ms" % (p95, p50))
    assert p95 <= 100


def test_postgresql_down_gives_up_0_and_back_gives_1(host, loaded):
    cluster = "postgresql@17-main"
    assert host.run("systemctl stop %s", cluster).rc == 0
    try:
        down = wait_for(host, lambda t: "postgres_up 0.0" in t, timeout=30)
        assert samples(down, "postgres_backup_last_success_timestamp_seconds"), "file metrics keep serving"
        for _ in range(3):
            assert "postgres_up 0.0" in scrape(host)
        assert host.service("quantdb-exporter").is_running
    finally:
        assert host.run("systemctl start %s", cluster).rc == 0
    up = wait_for(host, lambda t: "postgres_up 1.0" in t and samples(t, "postgres_table_size_bytes"), timeout=60)
    assert samples(up, "postgres_table_index_blocks_hit_total")
    wait_for(host, lambda t: "\npg_up 1" in t, timeout=30, url=PGEXP)


def test_restart_leaves_no_error_in_the_journal(host, loaded):
    since = host.run("date +%s").stdout.strip()
    assert host.run("systemctl restart quantdb-exporter").rc == 0
    wait_for(host, lambda t: "postgres_up 1.0" in t and samples(t, "postgres_table_size_bytes"), timeout=30)
    time.sleep(6)   # a slow refresh and more after the start
    journal = host.run("journalctl -u quantdb-exporter --since @%s --no-pager -o cat", since).stdout
    assert not re.search(r"error|traceback|warning", journal, re.I), journal
    assert "listening on" in journal
