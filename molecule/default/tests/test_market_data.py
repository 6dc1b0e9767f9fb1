"""Market data on the Molecule container: sample data through the ingest module, the
quality audit on clean and on defective data, quarantine, reload and the duplicate fix.

Every playbook runs for real against PostgreSQL + TimescaleDB in the container; files come
from tools/sample_data.py, whose manifest holds the exact count of every injected defect.

Nothing here reads the clock for its expectations: the generator and the audit are given one
date (AS_OF, the data's last day). As a guard, the exact-count test runs again with both dated
a year after the real today, where a hidden use of the clock would change the counts.
"""
import json
import os
import subprocess
import sys
from datetime import date, timedelta

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
from test_default import psql, recap, run_playbook  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
AS_OF = "2025-10-31"                                           # the sample data's last day
SHIFTED = (date.today() + timedelta(days=365)).isoformat()     # the guard: a year past the real today
CHECKS = ["missing_sessions", "extra_sessions", "duplicates", "null_values", "ohlc_violations",
          "non_positive_prices", "negative_volume", "price_anomalies", "split_jumps", "zero_volume_moves",
          "stale_tickers", "stale_regions", "future_dates", "uncovered_bars"]


def playbook(name, *extra):
    """playbooks/<name> on the Molecule host; the result's `stats` is its recap as JSON."""
    return run_playbook(os.path.join(PROJECT, "playbooks", name), *extra)


def sample(tmp, name, *args, as_of=AS_OF):
    """Sample data ending on as_of, whose "future" bars come after as_of."""
    out = str(tmp / name)
    subprocess.run([sys.executable, os.path.join(PROJECT, "tools", "sample_data.py"), "--out", out,
                    "--end", as_of, "--today", as_of] + list(args), check=True, capture_output=True)
    return out


def audit(db, report, *extra, as_of=AS_OF):
    """Run quality_audit.yml on db as of a date; returns the process and the report (or None)."""
    proc = playbook("quality_audit.yml", "-e", "quality_audit_database=%s" % db, "-e", "quality_audit_as_of=%s" % as_of,
                    "-e", "quality_audit_report=%s" % report, *extra)
    if not os.path.exists(str(report)):
        return proc, None
    with open(str(report)) as handle:
        return proc, json.load(handle)


def load_raw(host, db, path, sessions=True):
    """COPY a sample file straight into db with psql, as a hand-built database gets its data:
    no ingest validation, so defects arrive as they are."""
    suffixes = ("", ".tickers", ".sessions") if sessions else ("", ".tickers")
    for suffix in suffixes:
        with open(path + suffix) as handle:
            content = handle.read()
        put = subprocess.run(["podman", "exec", "-i", "qdb-molecule-db1", "sh", "-c", "cat > /tmp/qa_raw%s" % suffix],
                             input=content, text=True, capture_output=True)
        assert put.returncode == 0, put.stderr
    cmds = ["\\copy tickers (ticker, region, exchange, name, currency, sector) from '/tmp/qa_raw.tickers' csv header",
            "\\copy ohlcv_data (ticker, region, date, open, high, low, close, volume) from '/tmp/qa_raw' csv header"]
    if sessions:
        cmds.insert(1, "\\copy exchange_sessions from '/tmp/qa_raw.sessions' csv header")
    load = host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s %s" % (db, " ".join('-c "%s"' % c for c in cmds)))
    assert load.rc == 0, load.stderr


def schema_db(name):
    """A new database built by the schema role (dropped first, so a re-run starts clean)."""
    drop = subprocess.run(["podman", "exec", "-u", "postgres", "qdb-molecule-db1", "psql", "-XAtq", "-d", "postgres",
                           "-c", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % name], capture_output=True, text=True)
    assert drop.returncode == 0, drop.stderr
    proc = playbook("site.yml", "--tags", "schema", "-e", "schema_database=%s" % name)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return name


def ingest_args(path, *extra):
    return ["-e", "ingest_src=%s" % path, "-e", "ingest_tickers_src=%s.tickers" % path,
            "-e", "ingest_sessions_src=%s.sessions" % path] + list(extra)


def module_result(proc, key):
    """The ohlcv_ingest result printed by the playbook's summary task."""
    for line in proc.stdout.splitlines():
        if key in line:
            return line
    raise AssertionError(proc.stdout[-3000:])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("market")
    clean = sample(tmp, "clean.csv.gz", "--tickers", "15", "--years", "2", "--seed", "11")
    return dict(tmp=tmp, clean=clean)


def test_clean_sample_data_loads_and_every_check_is_ok(host, data):
    proc = playbook("ingest.yml", *ingest_args(data["clean"]))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = int(psql(host, "SELECT count(*) FROM ohlcv_data"))
    assert rows > 14000
    assert psql(host, "SELECT count(*) FROM tickers") == "30"
    assert psql(host, "SELECT count(*) FROM ohlcv_quarantine") == "0"
    proc, report = audit("quant_platform", data["tmp"] / "clean.json")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert set(report) >= {"generated_at", "database", "as_of", "as_of_by_exchange", "rows_scanned", "checks"}
    assert report["as_of"] == AS_OF and report["scope"]["as_of"] == AS_OF
    assert {x["expected_session"] for x in report["as_of_by_exchange"].values()} == {AS_OF}   # a Friday session
    assert report["rows_scanned"] == rows
    assert {name: c["status"] for name, c in report["checks"].items()} == {name: "ok" for name in CHECKS}
    # The per-check counts are stored for the exporter.
    assert psql(host, "SELECT count(*) FROM quality_audit_results WHERE run_id = %d" % report["run_id"]) == str(len(CHECKS))


def test_the_same_data_audited_today_is_stale(data, tmp_path):
    """Without as_of the audit judges as of today in each exchange's time zone: the sample data
    ends in 2025, so every feed stopped, and the play fails on stale_regions. (Depends on the
    clock by design: it asserts only what holds on any day after the data's end.)"""
    proc, report = audit("quant_platform", tmp_path / "today.json", as_of="")
    assert proc.returncode != 0
    assert report["as_of"] is None and all(x["as_of"] > AS_OF for x in report["as_of_by_exchange"].values())
    assert report["checks"]["stale_regions"] == dict(report["checks"]["stale_regions"], status="fail", count=2)
    assert report["checks"]["stale_tickers"]["count"] == 30


def test_reloading_the_same_file_changes_nothing(data):
    proc = playbook("ingest.yml", *ingest_args(data["clean"]))
    assert proc.returncode == 0
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]
    assert " 0 new, 0 updated" in module_result(proc, "rows read")


def test_invalid_rows_are_quarantined_with_reasons_and_nothing_partial(host, data):
    before = psql(host, "SELECT count(*) || '/' || sum(close) FROM ohlcv_data")
    bad = str(data["tmp"] / "invalid.csv")
    with open(bad, "w") as handle:
        handle.write("ticker,region,date,open,high,low,close,volume\n"
                     "NEWT1,US,2025-10-31,10,11,9,10.5,100\n"       # 2: valid, new ticker
                     "NEWT1,US,2025-10-30,10,9,9.5,10.5,100\n"      # 3: high < low: ohlc_logic
                     "NEWT1,US,2025-10-29,0,11,9,10.5,100\n"        # 4: non_positive_price
                     "NEWT1,US,2025-10-28,10,11,9,10.5,-5\n"        # 5: negative_volume
                     "NEWT1,US,2025-10-27,10,11,9,,100\n"           # 6: missing_value
                     "NEWT1,US,2025-13-01,10,11,9,10.5,100\n"       # 7: bad_date_format (no month 13)
                     "NEWT1,US,2025-10-24,ten,11,9,10.5,100\n")     # 8: bad_number
    proc = playbook("ingest.yml", "-e", "ingest_src=%s" % bad, "-e", "ingest_on_invalid=fail",
                    "-e", "ingest_register_tickers=true")
    assert proc.returncode != 0
    flat = " ".join((proc.stdout + proc.stderr).split())  # errors go to stderr; long lines wrap
    assert "6 invalid row(s)" in flat and "nothing was written" in flat
    assert psql(host, "SELECT count(*) || '/' || sum(close) FROM ohlcv_data") == before
    assert psql(host, "SELECT count(*) FROM tickers WHERE ticker = 'NEWT1'") == "0"

    proc = playbook("ingest.yml", "-e", "ingest_src=%s" % bad, "-e", "ingest_register_tickers=true")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert psql(host, "SELECT string_agg(line || ':' || reason, ',' ORDER BY line) FROM ohlcv_quarantine "
                      "WHERE file_name = 'invalid.csv'") == \
        "3:ohlc_logic,4:non_positive_price,5:negative_volume,6:missing_value,7:bad_date_format,8:bad_number"
    assert psql(host, "SELECT count(*) FROM ohlcv_data WHERE ticker = 'NEWT1'") == "1"
    # Loading it again quarantines nothing new and reports no change.
    proc = playbook("ingest.yml", "-e", "ingest_src=%s" % bad, "-e", "ingest_register_tickers=true")
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]
    psql(host, "DELETE FROM ohlcv_data WHERE ticker = 'NEWT1'")
    psql(host, "DELETE FROM tickers WHERE ticker = 'NEWT1'")


def test_check_mode_ingest_reports_counts_without_writing(host, data):
    upd = sample(data["tmp"], "update.csv", "--tickers", "15", "--years", "2", "--seed", "99")
    before = psql(host, "SELECT sum(close) FROM ohlcv_data")
    proc = playbook("ingest.yml", "--check", *ingest_args(upd))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 new," in module_result(proc, "rows read") and " 0 updated" not in module_result(proc, "rows read")
    assert psql(host, "SELECT sum(close) FROM ohlcv_data") == before


@pytest.fixture(scope="module", params=[AS_OF, SHIFTED], ids=["as_of_data_end", "a_year_past_today"])
def dated_defects(request, host, tmp_path_factory):
    """Defective data ending on a date, with its "future" bar after that date, loaded raw into
    a database shaped like the seed guide's (no unique key); the audit is then run as of the
    same date. Run for the data's own date and for a year past the real today."""
    as_of = request.param
    tmp = tmp_path_factory.mktemp("defects")
    path = sample(tmp, "defects.csv", "--tickers", "15", "--years", "2", "--seed", "12", "--inject", "all",
                  "--manifest", str(tmp / "defects.json"), as_of=as_of)
    with open(str(tmp / "defects.json")) as handle:
        manifest = json.load(handle)
    db = schema_db("qa_defects" if as_of == AS_OF else "qa_defects_shifted")
    host.run("runuser -u postgres -- psql -XAtq -d %s -c 'DROP INDEX IF EXISTS idx_ohlcv_ticker_region_date'" % db)
    for name in ("ohlcv_values_present", "ohlcv_prices_finite_positive", "ohlcv_volume_non_negative",
                 "ohlcv_high_low_consistent"):   # as a hand-built database: no constraints either
        psql(host, "ALTER TABLE ohlcv_data DROP CONSTRAINT IF EXISTS %s" % name, db=db)
    load_raw(host, db, path)
    return dict(db=db, as_of=as_of, tmp=tmp, manifest=manifest)


@pytest.fixture(scope="module")
def defects_db(dated_defects):
    return dated_defects["db"]


def test_audit_reports_each_injected_defect_with_its_exact_count(dated_defects):
    proc, report = audit(dated_defects["db"], dated_defects["tmp"] / "report.json", as_of=dated_defects["as_of"])
    assert proc.returncode != 0, "failing checks must fail the play"
    assert "Data quality checks failed" in " ".join((proc.stdout + proc.stderr).split())
    assert report["as_of"] == dated_defects["as_of"]
    found = {name: c["count"] for name, c in report["checks"].items()}
    expected = dict({name: 0 for name in CHECKS},
                    **{d["check"]: d["count"] for d in dated_defects["manifest"]["defects"].values()})
    assert found == expected
    assert report["checks"]["price_anomalies"]["status"] == "fail"   # the 100x spike
    assert report["checks"]["duplicates"]["samples"]


def test_fix_mode_removes_duplicates_keeping_the_earliest_once(host, dated_defects, defects_db):
    dup = dated_defects["manifest"]["defects"]["duplicates"]["count"]
    rows = int(psql(host, "SELECT count(*) FROM ohlcv_data", db=defects_db))
    report = str(dated_defects["tmp"] / "fix.json")
    args = ["-e", "quality_audit_database=%s" % defects_db, "-e", "quality_audit_fix=true",
            "-e", "quality_audit_as_of=%s" % dated_defects["as_of"],
            "-e", "quality_audit_report=%s" % report, "-e", '{"quality_audit_checks": ["duplicates"]}']
    proc = playbook("quality_audit.yml", "--check", *args)
    assert "removed %d duplicate(s)" % dup in " ".join(proc.stdout.split())
    assert int(psql(host, "SELECT count(*) FROM ohlcv_data", db=defects_db)) == rows
    proc = playbook("quality_audit.yml", *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc)["changed"] == 1
    assert int(psql(host, "SELECT count(*) FROM ohlcv_data", db=defects_db)) == rows - dup
    proc = playbook("quality_audit.yml", *args)
    assert recap(proc)["changed"] == 0


def test_schema_role_adopts_a_guide_built_database_once(host):
    """The guide's ohlcv_data has no unique key and holds duplicates: the schema role dedupes
    (earliest created_at wins), adds the key and applies the migrations; check mode first
    reports without changing; a second run changes nothing."""
    seed_sql = os.path.join(os.path.dirname(__file__), "..", "files", "seed_guide_schema.sql")
    with open(seed_sql) as handle:
        put = subprocess.run(["podman", "exec", "-i", "-u", "postgres", "qdb-molecule-db1",
                              "psql", "-Xq", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
                             input=handle.read(), text=True, capture_output=True)
    assert put.returncode == 0, put.stderr
    args = ["--tags", "schema", "-e", "schema_database=qa_seed"]

    proc = playbook("site.yml", "--check", *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Would adopt ohlcv_data of qa_seed: 735 rows, 3 duplicate(s) removed" in " ".join(proc.stdout.split())
    assert psql(host, "SELECT count(*) FROM ohlcv_data", db="qa_seed") == "735"

    proc = playbook("site.yml", *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Adopted ohlcv_data of qa_seed: 735 rows, 3 duplicate(s) removed" in " ".join(proc.stdout.split())
    assert psql(host, "SELECT count(*) || '/' || count(*) FILTER (WHERE close = 999) FROM ohlcv_data", db="qa_seed") == "732/0"
    assert psql(host, "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_ohlcv_ticker_region_date'", db="qa_seed") == \
        "CREATE UNIQUE INDEX idx_ohlcv_ticker_region_date ON public.ohlcv_data USING btree (ticker, region, date DESC)"
    assert psql(host, "SELECT count(*) FROM schema_migrations", db="qa_seed") == "9"

    proc = playbook("site.yml", *args)
    assert proc.returncode == 0
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]
