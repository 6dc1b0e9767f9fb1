"""The pure parts of roles/quant_exporter/files/quantdb_exporter.py, without a database:
interval parsing, the expected session, freshness, the backup status file, the slow-query
counter, query classes, the probe's SQL and arguments, the histogram, the load meter, and what
a scrape returns when PostgreSQL or a table is absent. The file is imported by path, as the
service runs it (no package)."""
import datetime
import importlib.util
import json
import os
import random
import re
import types

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PATH = os.path.join(ROOT, "roles", "quant_exporter", "files", "quantdb_exporter.py")
spec = importlib.util.spec_from_file_location("quantdb_exporter", PATH)
qe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qe)

UTC = datetime.timezone.utc
D = datetime.date


def args(**over):
    values = qe.parse_args([])
    for key, value in over.items():
        setattr(values, key, value)
    return values


class FakeDb:
    """Answers queries by the first matching pattern; exists() from a set of relations."""

    def __init__(self, answers=(), relations=()):
        self.answers, self.relations, self.queries = list(answers), set(relations), []

    def rows(self, query, params=None):
        self.queries.append((" ".join(query.split()), params))
        for pattern, result in self.answers:
            if re.search(pattern, query, re.S):
                return result(params) if callable(result) else result
        raise AssertionError("unexpected query: %s" % query)

    def value(self, query, params=None):
        result = self.rows(query, params)
        return result[0][0] if result else None

    def exists(self, *relations):
        return all(r in self.relations for r in relations)


# --- intervals and the expected session -------------------------------------------------
@pytest.mark.parametrize("text,hours", [("18 hours", 18), ("90 min", 1.5), ("30 s", 30 / 3600), ("1h", 1)])
def test_parse_interval(text, hours):
    assert qe.parse_interval(text) == datetime.timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "18", "2 days", "soon", "-1 hours"])
def test_parse_interval_refuses(text):
    with pytest.raises(ValueError):
        qe.parse_interval(text)


WEEK = [D(2025, 10, 27), D(2025, 10, 28), D(2025, 10, 29), D(2025, 10, 30), D(2025, 10, 31), D(2025, 11, 3)]


def test_expected_session_waits_for_the_publication_delay_in_local_time():
    delay = datetime.timedelta(hours=18)
    # Tuesday 2025-10-28 09:00 in Seoul (00:00 UTC): Monday's bar is due, Tuesday's is not yet.
    at_nine = datetime.datetime(2025, 10, 28, 0, 0, tzinfo=UTC)
    assert qe.expected_session(WEEK, D(2025, 12, 31), at_nine, "Asia/Seoul", delay) == D(2025, 10, 27)
    # 19:00 in Seoul (10:00 UTC): Tuesday's is due.
    at_seven = datetime.datetime(2025, 10, 28, 10, 0, tzinfo=UTC)
    assert qe.expected_session(WEEK, D(2025, 12, 31), at_seven, "Asia/Seoul", delay) == D(2025, 10, 28)


def test_expected_session_skips_the_weekend_and_uses_the_exchange_time_zone():
    delay = datetime.timedelta(hours=18)
    # Sunday 2025-11-02 in New York: Friday's session.
    sunday = datetime.datetime(2025, 11, 2, 20, 0, tzinfo=UTC)
    assert qe.expected_session(WEEK, D(2025, 12, 31), sunday, "America/New_York", delay) == D(2025, 10, 31)
    # 2025-10-29 03:00 UTC is still the 28th (23:00) in New York: the 28th's bar is due at 18:00.
    late = datetime.datetime(2025, 10, 29, 3, 0, tzinfo=UTC)
    assert qe.expected_session(WEEK, D(2025, 12, 31), late, "America/New_York", delay) == D(2025, 10, 28)
    # Unknown time zone = UTC.
    assert qe.expected_session(WEEK, D(2025, 12, 31), late, None, delay) == D(2025, 10, 28)


def test_expected_session_is_none_when_the_calendar_ends_before_today():
    now = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert qe.expected_session(WEEK, D(2025, 12, 31), now, "Asia/Seoul", datetime.timedelta(hours=18)) is None
    assert qe.expected_session(WEEK, None, now, "Asia/Seoul", datetime.timedelta(hours=18)) is None


# --- freshness ------------------------------------------------------------------------------
def test_freshness_per_region_and_tickers_missing_the_expected_session():
    latest = [("KR", "XKRX", D(2025, 10, 27)), ("KR", "XKRX", D(2025, 10, 24)), ("KR", "XKRX", None),
              ("US", "XNYS", D(2025, 10, 24)), ("JP", "XTKS", D(2025, 10, 20))]
    expected = {"XKRX": D(2025, 10, 27), "XNYS": D(2025, 10, 24), "XTKS": None}
    now = datetime.datetime(2025, 10, 28, 0, 0, tzinfo=UTC).timestamp()
    out = qe.freshness(latest, expected, now)
    assert out["tickers"] == {"KR": 3, "US": 1, "JP": 1}
    assert out["latest"] == {"KR": D(2025, 10, 27), "US": D(2025, 10, 24), "JP": D(2025, 10, 20)}
    assert out["age"]["KR"] == 86400 and out["age"]["US"] == 4 * 86400
    assert out["missing"] == {"KR": 2, "US": 0}          # JP: no expected session known, absent
    assert out["latest_by_exchange"][("KR", "XKRX")] == D(2025, 10, 27)


def test_freshness_of_no_bars_at_all():
    out = qe.freshness([("KR", "XKRX", None)], {}, 0)
    assert out["latest"] == {} and out["age"] == {} and out["tickers"] == {"KR": 1}


def test_epoch_of_date():
    assert qe.epoch_of_date(D(1970, 1, 2)) == 86400.0 and qe.epoch_of_date(None) is None


# --- backup status file -----------------------------------------------------------------------
def test_parse_backup_status_reads_the_backup_roles_format():
    record = {"type": "full", "status": "success", "end_epoch": 1761800000, "size_bytes": 916000000,
              "duration_seconds": 10.5, "repo_size_bytes": 233000000}
    failed = {"type": "diff", "status": "failure", "end_epoch": 1761900000, "error": "boom"}
    text = json.dumps({"format": 1, "last_success": record, "last_failure": failed,
                       "types": {"full": {"last_success": record, "last_failure": None},
                                 "diff": {"last_success": None, "last_failure": failed}}})
    out = qe.parse_backup_status(text)
    assert out["full"] == {"success": 1761800000.0, "failure": 0.0, "size": 916000000, "duration": 10.5}
    assert out["diff"]["success"] == 0.0 and out["diff"]["failure"] == 1761900000.0
    assert out["incr"]["success"] == 0.0 and out["logical"]["failure"] == 0.0
    assert out["_repo_size"] == 233000000.0


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]"])
def test_parse_backup_status_refuses_broken_files(text):
    with pytest.raises(ValueError):
        qe.parse_backup_status(text)


def test_backup_families_when_the_status_file_is_absent_or_present(tmp_path):
    exporter = qe.Exporter(args(backup_status_file=str(tmp_path / "none.json")))
    fams = {f.name: f for f in exporter.read_backup(None)}
    assert dict(fams["postgres_backup_last_success_timestamp_seconds"].samples)[("full",)] == 0
    assert fams["postgres_backup_status_file_readable"].samples == [((), 0.0)]
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"types": {"incr": {"last_success": {"end_epoch": 5, "size_bytes": 7}}}}))
    exporter = qe.Exporter(args(backup_status_file=str(path)))
    fams = {f.name: f for f in exporter.read_backup(None)}
    assert dict(fams["postgres_backup_last_success_timestamp_seconds"].samples)[("incr",)] == 5
    assert dict(fams["postgres_backup_last_size_bytes"].samples) == {("incr",): 7.0}


# --- pg_stat_statements ----------------------------------------------------------------------
def test_slow_query_counter_is_monotonic():
    counter = qe.SlowQueryCounter(1000)
    assert counter.update({1: (10, 1500.0), 2: (100, 5.0)}) == 10        # first seen slow: all its calls
    assert counter.update({1: (13, 1400.0), 2: (200, 5.0)}) == 13
    assert counter.update({1: (15, 900.0), 2: (300, 5.0)}) == 13         # no longer slow: no growth
    assert counter.update({1: (2, 2000.0)}) == 15                         # reset: its calls since
    assert counter.update({}) == 15


@pytest.mark.parametrize("query,cls", [
    ("SELECT * FROM ohlcv_data WHERE region = $1 AND ticker = ANY($2) AND date >= $3", "backtest"),
    ("select * from ohlcv_data where ticker in ($1, $2)", "backtest"),
    ("SELECT date, close FROM ohlcv_data WHERE ticker = $1 AND region = $2 ORDER BY date DESC LIMIT $3", "single_ticker"),
    ("SELECT count(*) FROM factor_scores", "bars_other"),
    ("SELECT 1", "other"),
])
def test_statement_class(query, cls):
    assert qe.statement_class(query) == cls


# --- the SLO probe ----------------------------------------------------------------------------
def test_probe_sql_is_parameterised_and_matches_the_guide():
    assert "LIMIT 250" in qe.SINGLE_TICKER_SQL and qe.SINGLE_TICKER_SQL.count("%s") == 2
    assert "ticker = ANY(%s)" in qe.BACKTEST_SQL and qe.BACKTEST_SQL.count("%s") == 3
    assert "{" not in qe.SINGLE_TICKER_SQL + qe.BACKTEST_SQL


def test_probe_runs_both_queries_against_random_tickers():
    tickers = [("T%03d" % i,) for i in range(80)]
    db = FakeDb([(r"DISTINCT region", [("KR",)]),
                 (r"SELECT ticker FROM public.tickers", tickers),
                 (r"LIMIT 250", [(D(2025, 10, 27), 1, 2, 0.5, 1.5, 10)] * 250),
                 (r"ANY", [("T001", D(2025, 1, 2), 1, 2, 0.5, 1.5, 10)])],
                relations={"public.tickers", "public.ohlcv_data"})
    hist = qe.Histogram()
    collectors = qe.Collectors(args())
    done = collectors.probe(db, hist, random.Random(7))
    assert [kind for kind, _ in done] == ["single_ticker", "backtest"]
    single = [p for q, p in db.queries if "LIMIT 250" in q][0]
    basket = [p for q, p in db.queries if "ANY" in q][0]
    assert single[1] == "KR" and single[0] in {t for (t,) in tickers}
    assert basket[0] == "KR" and len(basket[1]) == 50 and len(set(basket[1])) == 50
    assert basket[2] == D(2025, 10, 27) - datetime.timedelta(days=5 * 365)
    snap = hist.snapshot()
    assert set(snap) == {"single_ticker", "backtest"}
    assert snap["backtest"][0][-1] == ("+Inf", 1)


def test_probe_without_the_tables_does_nothing():
    assert qe.Collectors(args()).probe(FakeDb(), qe.Histogram(), random.Random()) == []


def test_histogram_is_cumulative_with_the_contract_buckets():
    hist = qe.Histogram()
    for seconds in (0.03, 0.2, 0.2, 3.0):
        hist.observe("backtest", seconds)
    buckets, total = hist.snapshot()["backtest"]
    as_dict = dict(buckets)
    for bound in ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0"):
        assert bound in as_dict
    assert as_dict["0.05"] == 1 and as_dict["0.25"] == 3 and as_dict["2.5"] == 3 and as_dict["5.0"] == 4
    assert as_dict["+Inf"] == 4 and total == pytest.approx(3.43)


def test_load_meter_per_minute():
    now = [1000.0]
    meter = qe.LoadMeter(window=600, clock=lambda: now[0])
    for _ in range(10):
        meter.record(0.05)
    now[0] += 120
    per_min, ms = meter.per_minute()
    assert per_min == pytest.approx(5.0) and ms == pytest.approx(250.0)
    now[0] += 1000                      # out of the window
    assert meter.per_minute() == (0.0, 0.0) and meter.statements == 10


# --- absent tables, PostgreSQL down, the contract's exclusions --------------------------------
def test_quality_and_freshness_absent_without_the_tables():
    collectors = qe.Collectors(args())
    fams = []
    collectors.quality(FakeDb(), fams)
    collectors.freshness(FakeDb(), fams)
    assert fams == []


def test_quality_reads_the_latest_audit_per_check_and_region():
    db = FakeDb([(r"DISTINCT ON", [("duplicates", "all", "ok", 0), ("missing_sessions", "KR", "fail", 60)]),
                 (r"SELECT EXISTS", [(True,)]),
                 (r"LIMIT 1", [(1761800000.0, 1000, 0.5)]),
                 (r"ohlcv_quarantine", [("bad_date", 3)])],
                relations={"public.quality_audit_results", "public.ohlcv_quarantine"})
    fams = []
    qe.Collectors(args()).quality(db, fams)
    by = {f.name: dict(f.samples) for f in fams}
    assert by["postgres_quality_check_count"] == {("duplicates", "all"): 0.0, ("missing_sessions", "KR"): 60.0}
    assert by["postgres_quality_check_failed"] == {("duplicates", "all"): 0.0, ("missing_sessions", "KR"): 1.0}
    assert by["postgres_quality_audit_last_run_timestamp_seconds"] == {(): 1761800000.0}
    assert by["postgres_quarantine_rows"] == {("bad_date",): 3.0}


def test_a_scrape_without_postgresql_reports_up_0():
    exporter = qe.Exporter(args())
    names = {f.name: f for f in exporter.families()}
    assert names["postgres_up"].samples == [((), 0.0)]
    assert "postgres_table_size_bytes" not in names


def test_no_name_the_recording_rules_build_is_exposed():
    text = open(PATH).read()
    for name in ("postgres_database_size_bytes", "postgres_active_connections", "postgres_idle_connections",
                 "postgres_connection_pool_size", "postgres_query_errors", "postgres_missing_dates_count",
                 "postgres_duplicate_records_count"):
        assert '"%s' % name not in text, name


def test_every_family_has_help_and_a_valid_name():
    text = open(PATH).read()
    names = re.findall(r'Family\("([a-z_]+)", "(gauge|counter)", "([^"]*)"', text)
    assert len(names) >= 60
    for name, kind, help_text in names:
        assert help_text.strip(), name
        if kind == "counter":
            assert not name.endswith("_total"), name     # prometheus_client appends it
    assert len({n for n, _, _ in names}) == len(names)


def test_the_collector_yields_prometheus_families():
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    exporter = qe.Exporter(args())
    exporter.histogram.observe("single_ticker", 0.01)
    exporter.cache["fast"] = [qe.Family("postgres_deadlocks", "counter", "x").add(2)]
    registry = CollectorRegistry()
    registry.register(qe.PrometheusCollector(exporter))
    text = generate_latest(registry).decode()
    assert "postgres_deadlocks_total 2.0" in text
    assert 'postgres_query_duration_seconds_bucket{le="0.05",query_type="single_ticker"} 1.0' in text


def test_main_refuses_a_bad_publication_delay():
    with pytest.raises(ValueError):
        qe.main(["--publication-delay", "tomorrow"])


def test_module_has_no_side_effects_on_import():
    assert isinstance(qe, types.ModuleType) and qe.LOG.name == "quantdb-exporter"
