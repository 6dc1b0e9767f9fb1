"""The database refuses impossible bars, the audit survives any value, and calendars cover the
whole history: on the Molecule container, against real PostgreSQL + TimescaleDB.

Dates are explicit throughout (AS_OF, the sample data's last day); nothing reads the clock.
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_default import psql, recap  # noqa: E402
from test_market_data import AS_OF, audit, load_raw, playbook, sample, schema_db  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
CONSTRAINTS = ["ohlcv_date_finite", "ohlcv_high_low_consistent", "ohlcv_prices_finite_positive",
               "ohlcv_values_present", "ohlcv_volume_non_negative"]


def flat(proc):
    return " ".join((proc.stdout + proc.stderr).split())


def run_sql(host, db, query):
    """psql with ON_ERROR_STOP; returns the testinfra result (rc, stdout, stderr)."""
    return host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s", db, query)


@pytest.mark.parametrize("values, constraint", [
    ("'2024-01-02', 'NaN', 11, 9, 10, 100", "ohlcv_high_low_consistent"),       # NaN is above every number
    ("'2024-01-02', 10, 'Infinity', 9, 10, 100", "ohlcv_prices_finite_positive"),
    ("'2024-01-02', 10, 9, 11, 10, 100", "ohlcv_high_low_consistent"),
    ("'2024-01-02', 10, 11, 9, 10, -1", "ohlcv_volume_non_negative"),
    ("'2024-01-02', 10, 11, 9, NULL, 100", "ohlcv_values_present"),
    ("'2024-01-02', 0, 11, 0, 10, 100", "ohlcv_prices_finite_positive"),
    ("'infinity', 10, 11, 9, 10, 100", "ohlcv_date_finite"),
])
def test_any_writer_is_refused_an_impossible_bar(host, values, constraint):
    """Not only the ingest module: a plain INSERT as the superuser is held to the constraints."""
    out = run_sql(host, "quant_platform", "INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
                                          "VALUES ('ZZBAD', 'US', %s)" % values)
    assert out.rc != 0 and "violates check constraint" in out.stderr, out.stdout + out.stderr
    assert constraint in out.stderr, out.stderr


def test_constraints_are_validated_on_a_clean_database(host):
    assert psql(host, "SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint "
                      "WHERE conrelid = 'ohlcv_data'::regclass AND contype = 'c'") == \
        ",".join("%s:true" % c for c in CONSTRAINTS)


def test_a_guide_built_database_with_a_broken_bar_is_adopted_and_told(host):
    """The seed database plus one bar with high < low: the schema role adopts it, validates
    every constraint the data allows, keeps the broken one NOT VALID and names the row; once the
    row is fixed a re-run validates it, and a third run changes nothing."""
    seed_sql = os.path.join(os.path.dirname(__file__), "..", "files", "seed_guide_schema.sql")
    with open(seed_sql) as handle:
        script = handle.read().replace("qa_seed", "qa_seed_broken")
    script += ("\nINSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
               "VALUES ('AAPL', 'US', '2025-01-02', 100, 90, 95, 105, 1000);\n")
    put = subprocess.run(["podman", "exec", "-i", "-u", "postgres", "qdb-molecule-db1",
                          "psql", "-Xq", "-v", "ON_ERROR_STOP=1", "-d", "postgres"],
                         input=script, text=True, capture_output=True)
    assert put.returncode == 0, put.stderr
    args = ["--tags", "schema", "-e", "schema_database=qa_seed_broken"]
    validated = ("SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) FROM pg_constraint "
                 "WHERE conrelid = 'ohlcv_data'::regclass AND contype = 'c'")

    proc = playbook("site.yml", *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = flat(proc)
    assert "has rows breaking its CHECK constraints" in out and "ohlcv_high_low_consistent: 1 row(s)" in out, out[-3000:]
    assert '"date": "2025-01-02"' in out and '"ticker": "AAPL"' in out
    assert psql(host, validated, db="qa_seed_broken") == ",".join(
        "%s:%s" % (c, "false" if c == "ohlcv_high_low_consistent" else "true") for c in CONSTRAINTS)
    # New rows are checked even while the constraint is NOT VALID.
    refused = run_sql(host, "qa_seed_broken", "INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) "
                                              "VALUES ('AAPL', 'US', '2025-01-03', 100, 90, 95, 105, 1000)")
    assert refused.rc != 0 and "ohlcv_high_low_consistent" in refused.stderr

    psql(host, "UPDATE ohlcv_data SET high = 110, low = 90 WHERE date = '2025-01-02'", db="qa_seed_broken")
    proc = playbook("site.yml", *args)
    assert proc.returncode == 0 and recap(proc)["changed"] == 1, proc.stdout[-3000:]
    assert psql(host, validated, db="qa_seed_broken") == ",".join("%s:true" % c for c in CONSTRAINTS)
    proc = playbook("site.yml", *args)
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]


@pytest.fixture(scope="module")
def hostile(host):
    """Three tickers on a weekday calendar with values that break naive arithmetic, written
    before the constraints exist (as in a hand-built database)."""
    db = schema_db("qa_hostile")
    for name in CONSTRAINTS:
        psql(host, "ALTER TABLE ohlcv_data DROP CONSTRAINT IF EXISTS %s" % name, db=db)
    psql(host, """
        INSERT INTO tickers (ticker, region, exchange) VALUES ('ZZ1', 'US', 'XNYS'), ('ZZ2', 'US', 'XNYS'), ('ZZ3', 'US', 'XNYS');
        INSERT INTO exchange_sessions SELECT 'XNYS', d FROM generate_series('2025-01-01'::date, '2025-12-31', '1 day') d
            WHERE extract(isodow FROM d) < 6;
        INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume)
        SELECT t, 'US', s.session, p, p * 1.01, p * 0.99, p, 1000
        FROM (VALUES ('ZZ1'), ('ZZ2'), ('ZZ3')) v(t), exchange_sessions s,
             LATERAL (SELECT 100 + (extract(doy FROM s.session)::int * 7) %% 5 AS p) x
        WHERE s.exchange = 'XNYS' AND s.session <= '%s';
        UPDATE ohlcv_data SET close = 'Infinity', high = 'Infinity' WHERE ticker = 'ZZ1' AND date = '2025-03-03';
        UPDATE ohlcv_data SET close = 'NaN' WHERE ticker = 'ZZ1' AND date = '2025-03-10';
        UPDATE ohlcv_data SET open = 1e-300, high = 1e-300, low = 1e-300, close = 1e-300 WHERE ticker = 'ZZ2' AND date = '2025-04-01';
        UPDATE ohlcv_data SET open = 1e300, high = 1e300, low = 1e300, close = 1e300 WHERE ticker = 'ZZ2' AND date = '2025-04-02';
        UPDATE ohlcv_data SET close = NULL WHERE ticker = 'ZZ3' AND date = '2025-05-01';
        UPDATE ohlcv_data SET close = 0, low = 0 WHERE ticker = 'ZZ3' AND date = '2025-05-02';
    """ % AS_OF, db=db)
    return db


def test_the_audit_completes_on_values_that_break_arithmetic(hostile, tmp_path):
    proc, report = audit(hostile, tmp_path / "hostile.json")
    out = flat(proc)
    assert report is not None, out[-3000:]
    assert "Data quality checks failed" in out                      # findings fail the play ...
    for crash in ("out of range", "logarithm", "Traceback", "audit failed"):
        assert crash not in out                                     # ... an arithmetic error does not
    counts = {name: c["count"] for name, c in report["checks"].items()}
    assert counts["null_values"] == 1 and counts["non_positive_prices"] == 1
    assert counts["ohlc_violations"] >= 1                           # the NaN close
    assert counts["price_anomalies"] >= 2                           # ZZ1's Infinity, ZZ2's 1e-300 -> 1e300
    assert counts["missing_sessions"] == counts["extra_sessions"] == counts["uncovered_bars"] == 0


@pytest.mark.parametrize("extra, message", [
    ('{"quality_audit_thresholds": {"missing_sessions": 5}}', "thresholds.missing_sessions must be a mapping"),
    ('{"quality_audit_thresholds": {"duplicates": {"warn": "x"}}}', "thresholds.duplicates must be a mapping"),
    ('{"quality_audit_thresholds": {"no_such_check": {"warn": 1}}}', "unknown check(s) no_such_check"),
    ('{"quality_audit_z_threshold": "abc"}', "z_threshold"),
    ('{"quality_audit_as_of": "2025-13-01"}', "as_of must be an ISO date"),
    ('{"quality_audit_publication_delay": "soon"}', "publication_delay must be a PostgreSQL interval"),
])
def test_bad_audit_inputs_fail_naming_the_option(hostile, tmp_path, extra, message):
    proc = playbook("quality_audit.yml", "-e", "quality_audit_database=%s" % hostile,
                    "-e", "quality_audit_report=%s" % (tmp_path / "r.json"), "-e", extra)
    assert proc.returncode != 0
    assert message in flat(proc), flat(proc)[-2000:]
    assert not (tmp_path / "r.json").exists()


@pytest.fixture(scope="module")
def history(host, tmp_path_factory):
    """31 years (1994-10-31 .. 2025-10-31) of 2 tickers per region on the real XKRX/XNYS
    calendars, with 5 missing and 3 extra sessions injected, loaded without any calendar."""
    tmp = tmp_path_factory.mktemp("history")
    path = sample(tmp, "history.csv", "--tickers", "2", "--years", "31", "--seed", "21",
                  "--inject", "missing_sessions=5,extra_sessions=3", "--manifest", str(tmp / "history.json"))
    with open(str(tmp / "history.json")) as handle:
        manifest = json.load(handle)
    db = schema_db("qa_history")
    load_raw(host, db, path, sessions=False)
    return dict(db=db, tmp=tmp, manifest=manifest)


def test_bars_without_a_calendar_are_reported_uncovered(history):
    proc, report = audit(history["db"], history["tmp"] / "before.json")
    checks = report["checks"]
    assert history["manifest"]["start"] < "1995-01-01"
    assert checks["uncovered_bars"]["count"] == history["manifest"]["rows"], flat(proc)[-2000:]
    assert checks["uncovered_bars"]["status"] == "warn"
    assert checks["missing_sessions"]["count"] == checks["extra_sessions"]["count"] == 0
    assert "no sessions loaded" in checks["missing_sessions"]["note"]


def test_calendars_for_the_whole_history_give_exact_missing_and_extra_counts(host, history):
    proc = playbook("calendars.yml", "-e", "calendars_database=%s" % history["db"], "-e", "calendars_end=2026-10-30")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert psql(host, "SELECT min(session) <= '%s' FROM exchange_sessions" % history["manifest"]["start"],
                db=history["db"]) == "t"
    proc, report = audit(history["db"], history["tmp"] / "after.json")
    counts = {name: c["count"] for name, c in report["checks"].items()}
    assert counts["missing_sessions"] == 5 and counts["extra_sessions"] == 3, counts
    assert counts["uncovered_bars"] == 0 and counts["stale_tickers"] == 0 and counts["stale_regions"] == 0
    assert report["as_of_by_exchange"]["XKRX"]["timezone"] == "Asia/Seoul"
    assert report["as_of_by_exchange"]["XNYS"]["timezone"] == "America/New_York"
    # The missing sessions are spread over three decades, not only the recent window.
    years = {s["from"][:4] for s in report["checks"]["missing_sessions"]["samples"]}
    assert len(years) >= 2, report["checks"]["missing_sessions"]["samples"]


def test_a_database_that_applied_the_edition_specific_0005_is_not_refused(host):
    """Migration 0005 used to render differently per TimescaleDB edition; it is now the same on
    both, and a database recorded with either old text passes the checksum check: its record
    takes the new checksum once (a change), and the next run changes nothing."""
    db = schema_db("qa_edition")
    old_apache = "40f0e04963db73d8ebd0e56cbcdc259bcce344e190a07f1184a4d930910b76e4"
    current = psql(host, "SELECT checksum FROM schema_migrations WHERE version = '0005'", db=db)
    psql(host, "UPDATE schema_migrations SET checksum = '%s' WHERE version = '0005'" % old_apache, db=db)
    proc = playbook("site.yml", "--tags", "schema", "-e", "schema_database=%s" % db)
    assert proc.returncode == 0 and recap(proc)["changed"] == 1, proc.stdout[-3000:]
    assert psql(host, "SELECT checksum FROM schema_migrations WHERE version = '0005'", db=db) == current
    assert psql(host, "SELECT relkind FROM pg_class WHERE relname = 'ohlcv_monthly'", db=db) == "m"
    proc = playbook("site.yml", "--tags", "schema", "-e", "schema_database=%s" % db)
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]
    # Any other change to an applied migration is still refused.
    psql(host, "UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0005'", db=db)
    proc = playbook("site.yml", "--tags", "schema", "-e", "schema_database=%s" % db)
    assert proc.returncode != 0 and "applied migration(s) 0005 changed since they ran" in flat(proc)
