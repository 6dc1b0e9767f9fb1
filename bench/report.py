#!/usr/bin/env python3
"""Turn the raw output of playbooks/bench.yml into bench/results.json, and optionally the
results table of docs/benchmarks.md and its chart.

  python bench/report.py --raw reports/bench-raw.json --out bench/results.json \
      --noop-seconds 41.2 --noop-changed 0 --docs docs/benchmarks.md --chart docs/benchmarks.png
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys

QUERIES = ["single_ticker_250d", "single_ticker_1y", "single_ticker_10y", "backtest_5y_50",
           "portfolio_cov_100", "monthly_rollup"]
TITLES = {
    "single_ticker_250d": "Single ticker, 250 days", "single_ticker_1y": "Single ticker, 1 year",
    "single_ticker_10y": "Single ticker, 10 years", "backtest_5y_50": "Backtest, 5 years x 50 tickers",
    "portfolio_cov_100": "Portfolio optimisation input (100 x 5y covariance)",
    "monthly_rollup": "Monthly rollup, one ticker, all years",
}
# The operations guide's "Performance Benchmarks" targets (ms); the rollup has none.
SEED_SLO_MS = {"single_ticker_250d": 100, "single_ticker_1y": 200, "single_ticker_10y": 1000,
               "backtest_5y_50": 5000, "portfolio_cov_100": 10000, "monthly_rollup": None}
# The benchmark issue's goals for this project on the lab box.
GOALS = {
    "single_ticker_250d_p95_ms": ("<=", 1.0), "single_ticker_1y_p95_ms": ("<=", 1.0),
    "single_ticker_10y_p95_ms": ("<=", 6.0), "backtest_5y_50_p95_ms": ("<=", 120.0),
    "portfolio_cov_100_p95_ms": ("<=", 250.0), "single_ticker_250d_vs_naive": (">=", 8.0),
    "backtest_5y_50_vs_naive": (">=", 2.5), "ingest_rows_per_s": (">=", 100000.0),
    # Backfill through ohlcv_ingest against a plain single COPY into the guide's table, same run,
    # and the nightly job (one session of every ticker into the full table), issue 16.
    "ingest_vs_naive_copy": (">=", 2.0), "ingest_nightly_seconds": ("<=", 1.0),
    "audit_seconds": ("<=", 15.0),
    # The full audit against its floor: one plain ordered pass over every bar computing the same
    # per-bar expressions (bench/queries.py AUDIT_FLOOR), timed right before it (issue 16).
    "audit_vs_floor": ("<=", 2.0),
    "scrape_ms": ("<=", 100.0), "noop_rerun_seconds": ("<=", 30.0),
    # Backups and restores (issue 12): pgBackRest zstd full backup of the cluster, its stored size
    # against the cluster's, a point-in-time restore from stop to writable.
    "backup_full_seconds": ("<=", 20.0), "backup_stored_ratio": ("<=", 0.30), "pitr_rto_seconds": ("<=", 15.0),
}
START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def ratio(naive, tuned):
    return round(naive / tuned, 1) if naive and tuned else None


def ratio2(slow, fast):
    """plain over packed, two decimals (the paths are often within 2x of each other)."""
    return round(slow / fast, 2) if slow and fast else None


def plain_figures(name, q, n):
    """The plain-row path of one query (bench/queries.py): p50/p95 on both setups, its ratio to the
    packed path, the equality check of the first draw. None where the query has no plain variant,
    or where the raw output predates the plain path."""
    p = (q or {}).get("plain") or {}
    np_ = ((n or {}).get("plain") or {}) if n else {}
    checks = [c for c in ((q or {}).get("plain_check"), (n or {}).get("plain_check")) if c]
    return {
        "path": (q or {}).get("path") or DEFAULT_PATHS.get(name, "packed"),
        "plain_path": "rows" if p else None,
        "plain_p50_ms": p.get("p50_ms"), "plain_p95_ms": p.get("p95_ms"),
        "naive_plain_p50_ms": np_.get("p50_ms"), "naive_plain_p95_ms": np_.get("p95_ms"),
        "plain_to_packed": ratio2(p.get("p95_ms"), q["p95_ms"]),
        "plain_to_packed_p50": ratio2(p.get("p50_ms"), q["p50_ms"]),
        "naive_plain_to_packed": ratio2(np_.get("p95_ms"), n and n["p95_ms"]),
        "plain_rows": p.get("rows"),
        "plain_buffer_hit_ratio": p.get("buffers", {}).get("hit_ratio"),
        "naive_plain_buffer_hit_ratio": np_.get("buffers", {}).get("hit_ratio"),
        # queries.py fails the run when the paths differ, so a result holds True or nothing
        "plain_identical": all(c.get("identical") for c in checks) if checks else None,
        "plain_check": {"tuned": q.get("plain_check"), "naive": n.get("plain_check") if n else None} if checks else None,
        "plain_note": (q or {}).get("plain_note"),
        "plain_explain": p.get("explain"), "naive_plain_explain": np_.get("explain") or None,
    }


def build(raw, noop_seconds, noop_changed, scale):
    tuned, naive = raw["tuned"], raw.get("naive")
    queries = {}
    for name in QUERIES:
        q = tuned["queries"][name]
        n = naive["queries"][name] if naive else None
        queries[name] = {"p50_ms": q["p50_ms"], "p95_ms": q["p95_ms"], "naive_p95_ms": n["p95_ms"] if n else None,
                         "naive_p50_ms": n["p50_ms"] if n else None, "ratio_p95": ratio(n and n["p95_ms"], q["p95_ms"]),
                         "rows": q["rows"], "runs": q["runs"], "seed_slo_ms": SEED_SLO_MS[name],
                         "buffer_hit_ratio": q.get("buffers", {}).get("hit_ratio"),
                         "naive_buffer_hit_ratio": n.get("buffers", {}).get("hit_ratio") if n else None,
                         "explain": q["explain"], "naive_explain": n["explain"] if n else None}
        queries[name].update(plain_figures(name, q, n))
    loads = raw.get("loads", {})
    host = raw.get("host", {})
    client = raw.get("client") or {}
    backups = raw.get("backups") or {}
    floor = raw.get("audit_floor") or {}
    results = {
        "generated_at": raw["generated_at"],
        "scale": scale,
        "command": "make bench" if scale == "full" else "BENCH_SCALE=small make bench",
        "box": {"cpus": host.get("cpus"), "memory": {"host_bytes": host.get("mem_total_bytes"),
                                                     "container_limit_bytes": host.get("cgroup_limit_bytes")},
                "versions": {"postgresql": tuned["facts"]["server_version"], "timescaledb": tuned["facts"]["timescaledb"],
                             "debian": host.get("debian"), "controller_python": platform.python_version(),
                             "podman": podman_version(), "psycopg": client.get("psycopg"), "numpy": client.get("numpy"),
                             "client_python": client.get("python")},
                # the benchmark client's psycopg implementation: "c" (python3-psycopg-c) or "binary"
                # (pip); queries.py refuses the pure-Python one
                "psycopg_impl": client.get("psycopg_impl")},
        "data": {"rows": tuned["facts"]["rows"], "tickers": raw["tickers"], "iterations": raw["iterations"],
                 "warmup": raw["warmup"], "seed": raw["seed"]},
        "queries": queries,
        "ingest_rows_per_s": loads.get("tuned", {}).get("rows_per_s"),
        "naive_copy_rows_per_s": loads.get("naive", {}).get("rows_per_s"),
        "ingest_to_naive_copy": ratio2(loads.get("tuned", {}).get("rows_per_s"), loads.get("naive", {}).get("rows_per_s")),
        # The nightly load (playbooks/bench.yml): the module's wall time, connect to commit, with
        # validation, quarantine and upsert; "nightly" also has the Ansible task's own time.
        "ingest_nightly_seconds": num((raw.get("nightly") or {}).get("seconds"), 3),
        "ingest_nightly": raw.get("nightly"),
        "audit_seconds": (raw.get("audit") or {}).get("seconds"),
        # The audit's floor (bench/queries.py audit_floor): the minimum of its runs, and the
        # audit's time over it.
        "audit_floor_seconds": floor.get("min"),
        "audit_floor": floor or None,
        "audit_to_floor": ratio2((raw.get("audit") or {}).get("seconds"), floor.get("min")),
        # The project's exporter at port 8000 on the tuned database: p95 of the scrapes with the
        # cache warm (bench/exporter.py); its load on the database in "exporter".
        "scrape_ms": (raw.get("exporter") or {}).get("scrape_p95_ms"),
        "exporter": raw.get("exporter"),
        "noop_rerun_seconds": noop_seconds,
        "noop_rerun_changed": noop_changed,
        "backup_full_seconds": num(backups.get("full_seconds"), 1),
        "backup_stored_ratio": ratio_of(backups.get("stored_bytes"), backups.get("database_bytes")),
        "pitr_rto_seconds": num(backups.get("pitr_stop_to_writable_seconds"), 1),
        "drill_rto_seconds": num(backups.get("drill_rto_seconds"), 1),
        "backups": backups or None,
        "ohlcv_bytes": tuned["facts"]["ohlcv_bytes"],
        "naive_ohlcv_bytes": naive["facts"]["ohlcv_bytes"] if naive else None,
        "setups": {"tuned": tuned["facts"], "naive": naive["facts"] if naive else None},
    }
    results["goals"] = goals(results)
    return results


def goals(results):
    values = {
        "ingest_rows_per_s": results["ingest_rows_per_s"], "audit_seconds": results["audit_seconds"],
        "audit_vs_floor": results.get("audit_to_floor"),
        "ingest_vs_naive_copy": results.get("ingest_to_naive_copy"),
        "ingest_nightly_seconds": results.get("ingest_nightly_seconds"),
        "scrape_ms": results["scrape_ms"], "noop_rerun_seconds": results["noop_rerun_seconds"],
        "backup_full_seconds": results.get("backup_full_seconds"),
        "backup_stored_ratio": results.get("backup_stored_ratio"),
        "pitr_rto_seconds": results.get("pitr_rto_seconds"),
        "single_ticker_250d_vs_naive": results["queries"]["single_ticker_250d"]["ratio_p95"],
        "backtest_5y_50_vs_naive": results["queries"]["backtest_5y_50"]["ratio_p95"],
    }
    for name in QUERIES:
        values[name + "_p95_ms"] = results["queries"][name]["p95_ms"]
    out = {}
    for key, (op, target) in GOALS.items():
        value = values.get(key)
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        out[key] = {"goal": "%s %s" % (op, target), "value": value, "met": met}
    return out


def num(value, digits):
    """A figure from the playbook (Ansible may hand it over as a string), rounded; None stays None."""
    return None if value in (None, "") else round(float(value), digits)


def ratio_of(part, whole):
    return round(float(part) / float(whole), 3) if part not in (None, "") and whole not in (None, "", 0, "0") else None


def podman_version():
    try:
        return subprocess.run(["podman", "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    except (OSError, subprocess.CalledProcessError):
        return None


def fmt(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float) and value < 10:
        return "%.2f" % value
    return "{:,.{d}f}".format(value, d=digits if isinstance(value, float) and value < 1000 else 0)


def pct(ratio):
    return "n/a" if ratio is None else "%.1f%%" % (100 * ratio)


def times(ratio):
    return "n/a" if ratio is None else "%.2fx" % ratio


def identical(results):
    """The equality check of the plain and the packed path, over every query that has both."""
    verdicts = [q.get("plain_identical") for q in results["queries"].values() if q.get("plain_path")]
    if not verdicts or any(v is None for v in verdicts):
        return "not measured"
    return "identical in every query" if all(verdicts) else "**differ**"


# What the "path" column says: how the p50, p95 and naive p95 columns read the bars.
PATHS = {"packed": "packed", "rows": "rows (server-side aggregate)"}
# The path of a query in results written before queries.py recorded it.
DEFAULT_PATHS = {"monthly_rollup": "rows"}


def table(results):
    lines = ["| query | seed SLO | path | p50 ms | p95 ms | plain rows p50 ms | plain rows p95 ms | plain / packed p95 "
             "| naive p95 ms | naive / tuned | naive plain rows p95 ms | buffer hits tuned / naive |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name in QUERIES:
        q = results["queries"][name]
        slo = "< %s ms" % fmt(q["seed_slo_ms"]) if q["seed_slo_ms"] else "none"
        path = q.get("path") or DEFAULT_PATHS.get(name, "packed")
        # "none": the query has no plain variant (the note says why); "n/a": not measured
        none = bool(q.get("plain_note"))
        if none:
            notes.append("%s: %s." % (TITLES[name], q["plain_note"]))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %sx | %s | %s / %s |" % (
            TITLES[name], slo, PATHS.get(path, path), fmt(q["p50_ms"]), fmt(q["p95_ms"]),
            "none" if none else fmt(q.get("plain_p50_ms")), "none" if none else fmt(q.get("plain_p95_ms")),
            "-" if none else times(q.get("plain_to_packed")), fmt(q["naive_p95_ms"]), fmt(q["ratio_p95"]),
            "none" if none else fmt(q.get("naive_plain_p95_ms")),
            pct(q["buffer_hit_ratio"]), pct(q["naive_buffer_hit_ratio"])))
    impl = results["box"].get("psycopg_impl")
    lines += ["", "path: how p50, p95 and naive p95 read the bars; packed: one bytea of fixed-width records per ticker, "
              "decoded by numpy.frombuffer. Plain rows: the same read as the SQL a quant engineer writes (one row per bar, "
              "`cursor.fetchall()` through psycopg%s, then numpy), timed in the same run on the same draws, alternating "
              "with the packed path; the run fails unless both return identical arrays on the first draw (this run: %s). "
              "plain / packed: plain "
              "rows p95 over packed p95 on the tuned setup (above 1: packed is faster)."
              % (" %s (%s implementation)" % (results["box"]["versions"].get("psycopg"), impl) if impl else "",
                 identical(results))]
    if not any(q.get("plain_p95_ms") is not None for q in results["queries"].values()):
        notes.append("The plain rows columns are n/a: these figures come from a run before the plain path was timed; "
                     "the next `make bench` measures both.")
    lines += [""] + notes if notes else []
    lines += ["", "| figure | value | goal | met |", "|---|---|---|---|"]
    for key, g in results["goals"].items():
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        lines.append("| %s | %s | %s | %s |" % (key, fmt(g["value"]), g["goal"], met))
    b = results["box"]
    lines += ["", "Box: %s CPUs, %s GB host RAM, database container limited to %s GB; PostgreSQL %s, TimescaleDB %s. "
              "Data: %s bars (%s tickers), %s timed runs per query after %s warm-up runs; generated %s by `%s`."
              % (b["cpus"], fmt((b["memory"]["host_bytes"] or 0) / 2 ** 30), fmt((b["memory"]["container_limit_bytes"] or 0) / 2 ** 30),
                 b["versions"]["postgresql"], b["versions"]["timescaledb"], "{:,}".format(results["data"]["rows"]),
                 "{:,}".format(sum(results["data"]["tickers"].values())), results["data"]["iterations"],
                 results["data"]["warmup"], results["generated_at"], results["command"]),
              "", audit_line(results),
              "", ingest_line(results),
              "", backups_line(results),
              "", exporter_line(results),
              "", "Size on disk of ohlcv_data (table, indexes, all chunks): %s MB tuned, %s MB naive; the seed guide "
              "estimates ~1 GB for 1,000 tickers x 10 years (OHLCV alone ~200 MB + ~400 MB of all indexes)."
              % (fmt(results["ohlcv_bytes"] / 2 ** 20), fmt((results["naive_ohlcv_bytes"] or 0) / 2 ** 20))]
    return "\n".join(lines)


def audit_line(results):
    """The full audit against its floor, as bench output and in the docs block."""
    if results.get("audit_seconds") is None:
        return "Audit: not measured."
    floor = results.get("audit_floor")
    if not floor or not audit_vs_floor(results):
        return ("Audit: the full quality audit took %s s; its floor (one plain pass computing the same per-bar "
                "expressions) was not measured in this run." % fmt(results["audit_seconds"]))
    return ("Audit: %s. The floor: one ordered window pass over every bar of ohlcv_data computing the audit's per-bar "
            "expressions (previous close, NULL/OHLC/price/volume predicates, log return), aggregated on the server; "
            "min of %s runs right before the audit (median %s s); goal: the audit within %sx its floor."
            % (audit_vs_floor(results), floor.get("runs"), secs(floor["median"]), GOALS["audit_vs_floor"][1]))


def ingest_line(results):
    """The backfill against a plain COPY, and the nightly load, as bench output and in the docs block."""
    parts = []
    if results.get("ingest_to_naive_copy") is not None:
        parts.append("backfill through ohlcv_ingest %s rows/s = %.2fx a plain single COPY into the guide's table (%s rows/s, "
                     "same run; goal %sx)" % ("{:,.0f}".format(results["ingest_rows_per_s"]), results["ingest_to_naive_copy"],
                                              "{:,.0f}".format(results["naive_copy_rows_per_s"]),
                                              GOALS["ingest_vs_naive_copy"][1]))
    n = results.get("ingest_nightly")
    if n:
        parts.append("nightly load (%s bars of session %s into the full table, validation, quarantine and upsert) "
                     "%s s from connect to commit (goal <= %s s), %s s as an Ansible task"
                     % ("{:,}".format(int(n["rows"])), n["date"], secs(float(n["seconds"])),
                        GOALS["ingest_nightly_seconds"][1], secs(float(n["task_seconds"]))))
    return ("Ingest: " + "; ".join(parts) + ".") if parts else "Ingest: not measured."


def audit_vs_floor(results):
    """'audit 25.9 s = 4.6x the floor 5.6 s', or None without both figures."""
    if results.get("audit_to_floor") is None:
        return None
    return "audit %s s = %.1fx the floor %s s" % (secs(results["audit_seconds"]), results["audit_to_floor"],
                                                  secs(results["audit_floor_seconds"]))


def secs(value):
    """Seconds to one decimal, or to three below one second (the small bench's floor is tens of ms)."""
    return "%.1f" % value if value >= 1 else "%.3f" % value


def backups_line(results):
    b = results.get("backups")
    if not b:
        return "Backups and restores: not measured (pgBackRest not configured on the benchmark host)."
    return ("Backups and restores (pgBackRest, zstd, the whole cluster): full backup %s s of %s MB, %s MB stored (%s); "
            "point-in-time restore %s s from stop to writable (timeline %s); restore drill RTO %s s "
            "(restore %s s, key tables locked on the live cluster for %s s while counted)."
            % (fmt(results["backup_full_seconds"]), fmt(float(b["database_bytes"]) / 2 ** 20), fmt(float(b["stored_bytes"]) / 2 ** 20),
               pct(results["backup_stored_ratio"]), fmt(results["pitr_rto_seconds"]), b.get("pitr_timeline"),
               fmt(results["drill_rto_seconds"]), fmt(num(b.get("drill_restore_seconds"), 1)),
               fmt(num(b.get("drill_tables_locked_seconds"), 1))))


def exporter_line(results):
    e = results.get("exporter")
    if not e:
        return "Exporter: not measured (the project's exporter, role quant_exporter, is not on the benchmark host)."
    top = "; ".join("%s ms in %s calls: `%s`" % (fmt(t["ms"]), t["calls"], t["query"].replace("|", "/"))
                    for t in e.get("top_statements", [])[:2])
    return ("Exporter (quantdb-exporter at port 8000, pointed at the tuned database): %s scrapes with the cache warm, "
            "p50 %s ms, p95 %s ms, max %s ms; its own load over %s s: %s statements/min, "
            "%s ms of execution per minute of wall time (%s%% of one core). Heaviest: %s."
            % (e["scrapes"], fmt(e["scrape_p50_ms"]), fmt(e["scrape_p95_ms"]), fmt(e["scrape_max_ms"]),
               fmt(e["window_s"]), fmt(e["statements_per_min"]), fmt(e["exec_ms_per_min"]),
               fmt(e["exec_ms_per_min"] / 600.0), top or "none"))


def write_docs(path, results, chart_name):
    with open(path) as handle:
        text = handle.read()
    if START not in text or END not in text:
        sys.exit("%s has no %s ... %s markers" % (path, START, END))
    block = "%s\n%s\n\n![p95 latency against the seed SLO](%s)\n%s" % (START, table(results), chart_name, END)
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    with open(path, "w") as handle:
        handle.write(text)


def chart(path, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in QUERIES]
    tuned = [results["queries"][n]["p95_ms"] for n in names]
    naive = [results["queries"][n]["naive_p95_ms"] or 0 for n in names]
    slo = [results["queries"][n]["seed_slo_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], tuned, height=0.4, label="quantdb-ops p95", color="#2b7bba")
    ax.barh([i - 0.2 for i in y], naive, height=0.4, label="naive setup p95", color="#c8c8c8")
    for i, s in enumerate(slo):
        if s:
            ax.plot([s, s], [i - 0.45, i + 0.45], color="#d62728", linewidth=2, label="seed SLO" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels([TITLES[n].split(" (")[0] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_title("Query latency p95 at %s bars vs the seed guide's SLOs" % "{:,}".format(results["data"]["rows"]))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scale", default="full")
    p.add_argument("--noop-seconds", type=float)
    p.add_argument("--noop-changed", type=int)
    p.add_argument("--docs")
    p.add_argument("--chart")
    args = p.parse_args()
    with open(args.raw) as handle:
        raw = json.load(handle)
    results = build(raw, args.noop_seconds, args.noop_changed, args.scale)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Keys other steps own (bench/pgbouncer.py: pgbouncer_500_clients) stay until they rerun.
    if os.path.exists(args.out):
        with open(args.out) as handle:
            previous = json.load(handle)
        for key in ("pgbouncer_500_clients",):
            if key in previous and key not in results:
                results[key] = previous[key]
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=False)
        handle.write("\n")
    if args.chart:
        chart(args.chart, results)
    if args.docs:
        write_docs(args.docs, results, os.path.basename(args.chart) if args.chart else "benchmarks.png")
    print(table(results))
    if audit_vs_floor(results):
        print("bench: %s (goal <= %sx)" % (audit_vs_floor(results), GOALS["audit_vs_floor"][1]))


if __name__ == "__main__":
    main()
