"""Unit tests of the benchmark report (bench/report.py): ratios, goals and the docs block."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import report  # noqa: E402


NO_PLAIN = "no plain variant: the query already returns plain rows"


def raw(tuned_p95, naive_p95, plain=None, floor=None):
    """queries.py's output; with `plain`, the plain-row path at `plain` times the packed one on
    both setups (the monthly rollup without one), as queries.py writes it since issue 16."""
    def setup(p95, rollup):
        queries = {q: {"p50_ms": p95 / 2, "p95_ms": p95, "rows": 10, "runs": 50, "explain": {},
                       "buffers": {"hit": 99, "read": 1, "hit_ratio": 0.99}} for q in report.QUERIES}
        if plain:
            for name, q in queries.items():
                if name == "monthly_rollup":
                    q.update(path="rows", plain=None, plain_check=None, plain_note=NO_PLAIN)
                    continue
                q.update(path="packed", plain_note=None,
                         plain_check={"draw": 0, "arrays": 6, "bars": 10, "identical": True},
                         plain={"p50_ms": p95 / 2 * plain, "p95_ms": p95 * plain, "rows": 10, "runs": 50,
                                "explain": {"planning_ms": 0.1}, "buffers": {"hit": 98, "read": 2, "hit_ratio": 0.98}})
        return {"facts": {"server_version": "17.12", "timescaledb": "2.19.3", "rows": 1000, "ohlcv_bytes": 2 ** 20,
                          "has_rollup": rollup},
                "queries": queries}
    out = {"generated_at": "2026-11-25T00:00:00+00:00", "iterations": 50, "warmup": 5, "seed": 1,
           "tickers": {"KR": 5, "US": 5}, "host": {"cpus": 2, "mem_total_bytes": 8 * 2 ** 30, "cgroup_limit_bytes": 2 ** 31},
           "tuned": setup(tuned_p95, True), "naive": setup(naive_p95, False),
           "loads": {"tuned": {"rows_per_s": 120000.0}, "naive": {"rows_per_s": 80000.0}},
           "audit": {"seconds": 20.0}, "scrape_ms": None}
    if floor:
        out["audit_floor"] = floor
    if plain:
        out["client"] = {"psycopg": "3.2.6", "psycopg_impl": "c", "libpq": 170012, "numpy": "2.2.4", "python": "3.13.5"}
    return out


# The keys of bench/results.json before the plain path (other tools read them): all still there.
OLD_QUERY_KEYS = {"p50_ms", "p95_ms", "naive_p95_ms", "naive_p50_ms", "ratio_p95", "rows", "runs", "seed_slo_ms",
                  "buffer_hit_ratio", "naive_buffer_hit_ratio", "explain", "naive_explain"}
OLD_TOP_KEYS = {"generated_at", "scale", "command", "box", "data", "queries", "ingest_rows_per_s", "naive_copy_rows_per_s",
                "audit_seconds", "scrape_ms", "exporter", "noop_rerun_seconds", "noop_rerun_changed", "backup_full_seconds",
                "backup_stored_ratio", "pitr_rto_seconds", "drill_rto_seconds", "backups", "ohlcv_bytes",
                "naive_ohlcv_bytes", "setups", "goals"}


def test_ratio_is_naive_over_tuned_and_goals_judge_both_directions():
    results = report.build(raw(0.5, 10.0), noop_seconds=40.0, noop_changed=0, scale="full")
    assert results["queries"]["single_ticker_250d"]["ratio_p95"] == 20.0
    goals = results["goals"]
    assert goals["single_ticker_250d_p95_ms"]["met"] is True          # 0.5 <= 1
    assert goals["single_ticker_250d_vs_naive"]["met"] is True        # 20 >= 8
    assert goals["ingest_rows_per_s"]["met"] is True                  # 120k >= 100k
    assert goals["audit_seconds"]["met"] is False                     # 20 > 15
    assert goals["noop_rerun_seconds"]["met"] is False                # 40 > 30
    assert goals["scrape_ms"]["met"] is None                          # no exporter: not measured


def test_a_slow_tuned_setup_misses_the_ratio_goal():
    results = report.build(raw(5.0, 10.0), None, None, "small")
    assert results["goals"]["backtest_5y_50_vs_naive"] == {"goal": ">= 2.5", "value": 2.0, "met": False}
    assert results["goals"]["noop_rerun_seconds"]["met"] is None
    json.dumps(results)                                               # machine-readable as is


def test_docs_block_is_replaced_between_the_markers_only(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("intro\n%s\nold table\n%s\noutro\n" % (report.START, report.END))
    report.write_docs(str(page), report.build(raw(0.5, 10.0), 40.0, 0, "full"), "benchmarks.png")
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    # which path each number used: the path column, then the plain rows columns (not measured in this raw)
    assert ("| query | seed SLO | path | p50 ms | p95 ms | plain rows p50 ms | plain rows p95 ms | plain / packed p95 "
            "| naive p95 ms | naive / tuned | naive plain rows p95 ms | buffer hits tuned / naive |") in text
    assert "| Single ticker, 250 days | < 100 ms | packed | 0.25 | 0.50 | n/a | n/a | n/a | 10.0 | 20.0x | n/a | 99.0% / 99.0% |" in text


def test_plain_path_figures_beside_the_packed_ones():
    results = report.build(raw(0.5, 10.0, plain=3.0), 40.0, 0, "full")
    q = results["queries"]["backtest_5y_50"]
    assert OLD_QUERY_KEYS <= set(q) and OLD_TOP_KEYS <= set(results)
    # p95_ms / naive_p95_ms stay the packed path; the plain rows path in its own keys
    assert (q["path"], q["p50_ms"], q["p95_ms"], q["naive_p95_ms"], q["ratio_p95"]) == ("packed", 0.25, 0.5, 10.0, 20.0)
    assert (q["plain_path"], q["plain_p50_ms"], q["plain_p95_ms"]) == ("rows", 0.75, 1.5)
    assert (q["naive_plain_p50_ms"], q["naive_plain_p95_ms"]) == (15.0, 30.0)
    assert q["plain_to_packed"] == 3.0 and q["plain_to_packed_p50"] == 3.0 and q["naive_plain_to_packed"] == 3.0
    assert q["plain_identical"] is True and q["plain_check"]["tuned"]["identical"] is True
    assert q["plain_buffer_hit_ratio"] == 0.98 and q["plain_explain"] == {"planning_ms": 0.1}
    assert results["box"]["psycopg_impl"] == "c" and results["box"]["versions"]["psycopg"] == "3.2.6"
    # goals judge the packed path, as before
    assert results["goals"]["backtest_5y_50_p95_ms"]["value"] == 0.5
    monthly = results["queries"]["monthly_rollup"]
    assert (monthly["path"], monthly["plain_path"], monthly["plain_p95_ms"], monthly["plain_to_packed"]) == ("rows", None, None, None)
    assert monthly["naive_plain_p95_ms"] is None and monthly["plain_note"] == NO_PLAIN and monthly["plain_identical"] is None
    text = report.table(results)
    assert ("| Single ticker, 250 days | < 100 ms | packed | 0.25 | 0.50 | 0.75 | 1.50 | 3.00x | 10.0 | 20.0x | 30.0 "
            "| 99.0% / 99.0% |") in text
    assert ("| Monthly rollup, one ticker, all years | none | rows (server-side aggregate) | 0.25 | 0.50 | none | none | - "
            "| 10.0 | 20.0x | none |") in text
    assert "Monthly rollup, one ticker, all years: %s." % NO_PLAIN in text
    assert "psycopg 3.2.6 (c implementation)" in text and "this run: identical in every query" in text
    json.dumps(results)


def test_raw_output_before_the_plain_path_still_reports():
    results = report.build(raw(0.5, 10.0), 40.0, 0, "full")
    q = results["queries"]["single_ticker_1y"]
    assert OLD_QUERY_KEYS <= set(q)
    assert q["path"] == "packed" and q["plain_p95_ms"] is None and q["plain_to_packed"] is None
    assert q["plain_identical"] is None and results["box"]["psycopg_impl"] is None
    assert "this run: not measured" in report.table(results)
    assert "The plain rows columns are n/a" in report.table(results)
    assert "The plain rows columns are n/a" not in report.table(report.build(raw(0.5, 10.0, plain=2.0), 40.0, 0, "full"))
    assert results["queries"]["monthly_rollup"]["path"] == "rows"          # what it always was
    assert "| Monthly rollup, one ticker, all years | none | rows (server-side aggregate) | 0.25 | 0.50 | n/a |" in report.table(results)


def test_backup_figures_are_judged_and_absent_ones_are_not_measured():
    data = raw(0.5, 10.0)
    data["backups"] = {"full_seconds": "12.34", "database_bytes": 1000, "stored_bytes": 250,
                       "pitr_stop_to_writable_seconds": "16.0", "pitr_timeline": 2, "drill_rto_seconds": 30.2,
                       "drill_restore_seconds": 9.5, "drill_tables_locked_seconds": 4.1, "label": "x"}
    results = report.build(data, 40.0, 0, "full")
    assert results["backup_full_seconds"] == 12.3 and results["backup_stored_ratio"] == 0.25
    assert results["goals"]["backup_full_seconds"]["met"] is True            # 12.3 <= 20
    assert results["goals"]["backup_stored_ratio"]["met"] is True            # 25% <= 30%
    assert results["goals"]["pitr_rto_seconds"]["met"] is False              # 16 > 15
    assert "restore drill RTO 30.2 s" in report.table(results)
    results = report.build(raw(0.5, 10.0), 40.0, 0, "full")                  # no pgBackRest on the host
    assert results["goals"]["pitr_rto_seconds"]["met"] is None
    assert "Backups and restores: not measured" in report.table(results)


# queries.py's audit_floor, as bench.yml's raw output carries it (issue 16)
FLOOR = {"min": 5.6, "median": 5.8, "runs": 3, "seconds": [5.8, 5.6, 6.1], "work_mem": "256MB",
         "counts": {"bars": 1000, "ohlc_violations": 0, "log_returns": 990},
         "sql_sha256": "ab" * 32, "sql": "SELECT count(*) AS bars, ... FROM public.ohlcv_data WINDOW w AS (...)"}


def test_the_audit_is_judged_against_its_floor():
    data = raw(0.5, 10.0, floor=FLOOR)
    data["audit"]["seconds"] = 25.9
    results = report.build(data, 40.0, 0, "full")
    assert OLD_TOP_KEYS <= set(results)                                      # every earlier key still there
    assert results["audit_seconds"] == 25.9 and results["audit_floor_seconds"] == 5.6
    assert results["audit_floor"] == FLOOR                                   # min, median, runs, the SQL and its hash
    assert results["audit_to_floor"] == 4.62
    assert results["goals"]["audit_vs_floor"] == {"goal": "<= 2.0", "value": 4.62, "met": False}
    assert results["goals"]["audit_seconds"]["met"] is False
    keys = list(results["goals"])
    assert keys.index("audit_vs_floor") == keys.index("audit_seconds") + 1
    text = report.table(results)
    assert "| audit_vs_floor | 4.62 | <= 2.0 | **no** |" in text
    assert "Audit: audit 25.9 s = 4.6x the floor 5.6 s." in text and "min of 3 runs" in text and "(median 5.8 s)" in text
    assert report.audit_vs_floor(results) == "audit 25.9 s = 4.6x the floor 5.6 s"
    json.dumps(results)


def test_an_audit_within_twice_its_floor_meets_the_goal_and_small_floors_keep_their_digits():
    data = raw(0.5, 10.0, floor=dict(FLOOR, min=0.016, median=0.019))
    data["audit"]["seconds"] = 0.03
    results = report.build(data, None, None, "small")
    assert results["audit_to_floor"] == 1.88 and results["goals"]["audit_vs_floor"]["met"] is True
    assert report.audit_vs_floor(results) == "audit 0.030 s = 1.9x the floor 0.016 s"


def test_raw_output_without_the_floor_still_reports():
    results = report.build(raw(0.5, 10.0), 40.0, 0, "full")                 # before issue 16, or bench_audit false
    assert results["audit_floor_seconds"] is None and results["audit_floor"] is None and results["audit_to_floor"] is None
    assert results["goals"]["audit_vs_floor"] == {"goal": "<= 2.0", "value": None, "met": None}
    text = report.table(results)
    assert "| audit_vs_floor | n/a | <= 2.0 | not measured |" in text
    assert "Audit: the full quality audit took 20.0 s; its floor" in text and "not measured in this run" in text
    data = raw(0.5, 10.0)
    data["audit"] = None
    assert "Audit: not measured." in report.table(report.build(data, 40.0, 0, "full"))


def test_the_report_prints_the_audit_against_its_floor(tmp_path, monkeypatch, capsys):
    data = raw(0.5, 10.0, floor=FLOOR)
    data["audit"]["seconds"] = 25.9
    (tmp_path / "raw.json").write_text(json.dumps(data))
    out = tmp_path / "results.json"
    monkeypatch.setattr(sys, "argv", ["report.py", "--raw", str(tmp_path / "raw.json"), "--out", str(out), "--scale", "small"])
    report.main()
    assert "bench: audit 25.9 s = 4.6x the floor 5.6 s (goal <= 2.0x)" in capsys.readouterr().out
    assert json.loads(out.read_text())["audit_floor_seconds"] == 5.6


def test_the_backfill_is_judged_against_a_plain_copy_and_the_nightly_load_against_one_second():
    data = raw(0.5, 10.0)
    # as playbooks/bench.yml hands them over: set_fact values may arrive as strings
    data["nightly"] = {"date": "2025-11-03", "rows": "2500", "new": "2500", "quarantined": "0", "bulk": False,
                       "seconds": "0.734", "task_seconds": "1.912"}
    results = report.build(data, 40.0, 0, "full")
    assert results["ingest_to_naive_copy"] == 1.5                           # 120,000 over 80,000 rows/s
    assert results["goals"]["ingest_vs_naive_copy"] == {"goal": ">= 2.0", "value": 1.5, "met": False}
    assert results["ingest_nightly_seconds"] == 0.734
    assert results["goals"]["ingest_nightly_seconds"] == {"goal": "<= 1.0", "value": 0.734, "met": True}
    text = report.table(results)
    assert "| ingest_vs_naive_copy | 1.50 | >= 2.0 | **no** |" in text
    assert ("Ingest: backfill through ohlcv_ingest 120,000 rows/s = 1.50x a plain single COPY into the guide's table "
            "(80,000 rows/s, same run; goal 2.0x); nightly load (2,500 bars of session 2025-11-03") in text
    assert "0.734 s from connect to commit (goal <= 1.0 s), 1.9 s as an Ansible task." in text
    json.dumps(results)


def test_a_slow_nightly_load_misses_and_a_run_without_one_is_not_measured():
    data = raw(0.5, 10.0)
    data["nightly"] = {"date": "2025-11-03", "rows": 2500, "seconds": 1.4, "task_seconds": 2.6}
    assert report.build(data, 40.0, 0, "full")["goals"]["ingest_nightly_seconds"]["met"] is False
    results = report.build(raw(0.5, 10.0), 40.0, 0, "full")                  # before issue 16's nightly step
    assert results["ingest_nightly_seconds"] is None and results["ingest_nightly"] is None
    assert results["goals"]["ingest_nightly_seconds"] == {"goal": "<= 1.0", "value": None, "met": None}
    data = raw(0.5, 10.0)
    data["loads"] = {}
    assert "Ingest: not measured." in report.table(report.build(data, 40.0, 0, "full"))
