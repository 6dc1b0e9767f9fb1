"""Unit tests of the benchmark report (bench/report.py): ratios, goals and the docs block."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import report  # noqa: E402


def raw(tuned_p95, naive_p95):
    def setup(p95, rollup):
        return {"facts": {"server_version": "17.12", "timescaledb": "2.19.3", "rows": 1000, "ohlcv_bytes": 2 ** 20,
                          "has_rollup": rollup},
                "queries": {q: {"p50_ms": p95 / 2, "p95_ms": p95, "rows": 10, "runs": 50, "explain": {},
                                "buffers": {"hit": 99, "read": 1, "hit_ratio": 0.99}} for q in report.QUERIES}}
    return {"generated_at": "2026-11-25T00:00:00+00:00", "iterations": 50, "warmup": 5, "seed": 1,
            "tickers": {"KR": 5, "US": 5}, "host": {"cpus": 2, "mem_total_bytes": 8 * 2 ** 30, "cgroup_limit_bytes": 2 ** 31},
            "tuned": setup(tuned_p95, True), "naive": setup(naive_p95, False),
            "loads": {"tuned": {"rows_per_s": 120000.0}, "naive": {"rows_per_s": 80000.0}},
            "audit": {"seconds": 20.0}, "scrape_ms": None}


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
    assert "| Single ticker, 250 days | < 100 ms | 0.25 | 0.50 | 10.0 | 20.0x | 99.0% / 99.0% |" in text


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
