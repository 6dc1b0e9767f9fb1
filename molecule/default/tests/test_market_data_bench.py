"""The benchmark harness at small scale (BENCH_SCALE=small) on the Molecule container, so
`make bench` keeps working: real tuned and naive clusters, real loads, real timings.
"""
import json
import os
import subprocess

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
testinfra_hosts = ["podman://qdb-molecule-db1"]
QUERIES = {"single_ticker_250d", "single_ticker_1y", "single_ticker_10y", "backtest_5y_50",
           "portfolio_cov_100", "monthly_rollup"}


def bench(out, iterations):
    env = dict(os.environ, BENCH_SCALE="small", BENCH_INVENTORY=os.environ["MOLECULE_INVENTORY_FILE"],
               BENCH_OUT=str(out), BENCH_ITERATIONS=str(iterations), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(["bash", os.path.join(PROJECT, "scripts", "bench.sh")], capture_output=True,
                          text=True, env=env, cwd=PROJECT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(str(out)) as handle:
        return json.load(handle), proc.stdout


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    return bench(tmp_path_factory.mktemp("bench") / "small.json", 30)


def test_every_query_is_timed_on_both_setups(first):
    results, _ = first
    assert set(results["queries"]) == QUERIES
    for name, q in results["queries"].items():
        assert 0 < q["p50_ms"] <= q["p95_ms"], name
        assert q["naive_p95_ms"] > 0 and q["ratio_p95"] > 0, name
        assert q["runs"] == 30, name
    # 20 tickers on two calendars: every single-ticker read returns its window exactly
    assert results["queries"]["single_ticker_250d"]["rows"] == 250
    assert results["queries"]["backtest_5y_50"]["rows"] > 10 * 450      # 10 tickers of a region, ~2 years
    assert results["ingest_rows_per_s"] > 0 and results["naive_copy_rows_per_s"] > 0
    assert results["audit_seconds"] > 0
    # the audit's floor, timed right before it: one pass over every bar (bench/queries.py AUDIT_FLOOR)
    assert results["audit_floor_seconds"] > 0 and results["audit_floor"]["runs"] == 3
    assert results["audit_floor"]["counts"]["bars"] == results["data"]["rows"]
    assert results["audit_to_floor"] > 0 and "audit_vs_floor" in results["goals"]


def test_the_setups_differ_only_where_the_benchmark_says(first):
    results, _ = first
    tuned, naive = results["setups"]["tuned"], results["setups"]["naive"]
    with open(os.path.join(PROJECT, "data", "bench-small.json")) as handle:
        rows = json.load(handle)["rows"]
    assert tuned["rows"] == naive["rows"] == results["data"]["rows"] == rows
    assert naive["shared_buffers"] == "128MB" and naive["random_page_cost"] == "4"     # Debian's stock settings
    assert tuned["shared_buffers"] == "512MB" and tuned["random_page_cost"] == "1.1"   # computed for 2 GB
    assert naive["chunks"] > 10 * tuned["chunks"]                                      # 7-day vs yearly chunks
    assert tuned["has_rollup"] and not naive["has_rollup"]


def test_results_carry_the_goals_and_the_box(first):
    results, _ = first
    assert results["box"]["cpus"] >= 1 and results["box"]["memory"]["container_limit_bytes"] == 2 * 1024 ** 3
    assert results["box"]["versions"]["postgresql"].startswith("17")
    for goal in results["goals"].values():
        assert goal["met"] in (True, False, None)
    assert results["goals"]["noop_rerun_seconds"]["met"] is None      # not measured at small scale


def test_the_nightly_load_is_timed_and_taken_out_again(first):
    """One session of every ticker (20 at small scale) through ohlcv_ingest into the loaded table;
    the reuse test below shows the session was deleted again (the row count is the file's)."""
    results, _ = first
    nightly = results["ingest_nightly"]
    assert int(nightly["new"]) == 20 and int(nightly["quarantined"]) == 0 and nightly["bulk"] in (False, "False")
    assert 0 < results["ingest_nightly_seconds"] <= float(nightly["task_seconds"])
    assert results["goals"]["ingest_nightly_seconds"]["met"] in (True, False)


def test_a_second_run_reuses_the_loaded_databases(first, tmp_path):
    before, _ = first
    again, stdout = bench(tmp_path / "again.json", 10)
    assert "Load with the ingest module" in stdout
    assert again["ingest_rows_per_s"] == before["ingest_rows_per_s"]           # from the record, not reloaded
    assert again["naive_copy_rows_per_s"] == before["naive_copy_rows_per_s"]
    skipped = stdout.split("TASK [Load with the ingest module]")[1].split("TASK [")[0]
    assert "skipping" in skipped, skipped
