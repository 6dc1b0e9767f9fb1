#!/usr/bin/python3
"""Time the seed guide's SLO queries on the tuned database and on the naive one.

Runs on the database host (next to PostgreSQL, as the quant team's research boxes do) with
Debian's python3-psycopg and python3-numpy, connecting with ordinary libpq strings:

  python3 queries.py --dsn "dbname=bench" --naive-dsn "port=5433 dbname=bench_naive" \
      --iterations 200 --warmup 20

Each query runs `warmup` times, then `iterations` times with parameters drawn from a seeded
generator (the same draws for both setups), timed end to end on the client: execute, fetch,
and decode into the arrays a backtest or an optimiser uses. Prints one JSON document.
"""
import argparse
import datetime
import json
import os
import random
import statistics
import sys
import time
import urllib.error
import urllib.request

import numpy
import psycopg

# Every read returns, per ticker, its bars packed server-side into one bytea of fixed-width
# big-endian records (date as days since 2000-01-01, then float8s), newest first so the
# (ticker, region, date DESC) index order feeds the aggregate without a sort. numpy reads each
# bytea in one call: no per-value decoding on the client, 2.7 MB for a 62k-bar backtest.
# Identical SQL on both setups (the naive one casts its numeric prices to float8).
BAR_RECORD = ("date_send(date) || float8send(coalesce(open::float8, 'NaN')) || float8send(coalesce(high::float8, 'NaN'))"
              " || float8send(coalesce(low::float8, 'NaN')) || float8send(coalesce(close::float8, 'NaN'))"
              " || float8send(coalesce(volume::float8, 'NaN'))")
SINGLE = ("SELECT string_agg(" + BAR_RECORD + ", ''::bytea ORDER BY date DESC) FROM ohlcv_data"
          " WHERE ticker = %s AND region = %s AND date >= %s")
BARS = ("SELECT ticker, string_agg(" + BAR_RECORD + ", ''::bytea ORDER BY date DESC) FROM ohlcv_data"
        " WHERE region = %s AND ticker = ANY(%s) AND date >= %s GROUP BY ticker")
CLOSES = ("SELECT ticker, string_agg(date_send(date) || float8send(coalesce(close::float8, 'NaN')), ''::bytea"
          " ORDER BY date DESC) FROM ohlcv_data WHERE region = %s AND ticker = ANY(%s) AND date >= %s GROUP BY ticker")
BAR_DTYPE = numpy.dtype([("date", ">i4"), ("open", ">f8"), ("high", ">f8"), ("low", ">f8"), ("close", ">f8"),
                         ("volume", ">f8")])
CLOSE_DTYPE = numpy.dtype([("date", ">i4"), ("close", ">f8")])
# Monthly bars of one ticker over all years: the rollup where the setup has one, else the
# aggregate over daily bars a user of the naive setup has to run.
MONTHLY_ROLLUP = ("SELECT month, open, high, low, close, volume FROM ohlcv_monthly"
                  " WHERE ticker = %s AND region = %s ORDER BY month")
MONTHLY_RAW = ("SELECT time_bucket(INTERVAL '1 month', date) AS month, first(open, date), max(high),"
               " min(low), last(close, date), sum(volume) FROM ohlcv_data"
               " WHERE ticker = %s AND region = %s GROUP BY month ORDER BY month")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def universe(dsn):
    """Tickers per region and the sessions that date the windows, from the tuned database."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT region, ticker FROM tickers t WHERE EXISTS (SELECT 1 FROM ohlcv_data o"
                            " WHERE o.ticker = t.ticker AND o.region = t.region) ORDER BY region, ticker").fetchall()
        tickers = {}
        for region, ticker in rows:
            tickers.setdefault(region, []).append(ticker)
        last = {}
        for region in tickers:
            # the 250th-latest session of the region's calendar, from the bars themselves
            dates = conn.execute("SELECT DISTINCT date FROM ohlcv_data WHERE region = %s AND ticker = %s"
                                 " ORDER BY date DESC LIMIT 250", (region, tickers[region][0])).fetchall()
            last[region] = (dates[0][0], dates[-1][0])
    return tickers, last


def years_before(day, years):
    try:
        return day.replace(year=day.year - years)
    except ValueError:            # 29 February
        return day.replace(year=day.year - years, day=28)


def draws(tickers, last, n, seed):
    """The parameters of every run of every query, identical for both setups."""
    rng = random.Random(seed)
    regions = sorted(tickers)
    plan = {name: [] for name in ("single_ticker_250d", "single_ticker_1y", "single_ticker_10y",
                                  "backtest_5y_50", "portfolio_cov_100", "monthly_rollup")}
    for _ in range(n):
        region = rng.choice(regions)
        end, start_250 = last[region]
        ticker = rng.choice(tickers[region])
        plan["single_ticker_250d"].append((ticker, region, start_250))
        plan["single_ticker_1y"].append((ticker, region, years_before(end, 1)))
        plan["single_ticker_10y"].append((ticker, region, years_before(end, 10)))
        plan["monthly_rollup"].append((ticker, region))
        plan["backtest_5y_50"].append((region, sorted(rng.sample(tickers[region], min(50, len(tickers[region])))),
                                       years_before(end, 5)))
        plan["portfolio_cov_100"].append((region, sorted(rng.sample(tickers[region], min(100, len(tickers[region])))),
                                          years_before(end, 5)))
    return plan


def read_packed(cur, sql, args, dtype):
    """{ticker: record array, oldest first} from one of the packed queries above."""
    cur.execute(sql, args)
    return {ticker: numpy.frombuffer(packed, dtype)[::-1] for ticker, packed in cur.fetchall()}


def run_single(cur, args):
    """One ticker's dates and (n x 5) OHLCV array, oldest first."""
    cur.execute(SINGLE, args)
    packed = cur.fetchone()[0]
    bars = numpy.frombuffer(packed or b"", BAR_DTYPE)[::-1]
    dates, ohlcv = bars["date"], bars[["open", "high", "low", "close", "volume"]]   # noqa: F841 (the client's work)
    return len(dates)


def run_bars(cur, args):
    """The backtest: per ticker, its dates and an (n x 5) OHLCV array, oldest first."""
    bars = read_packed(cur, BARS, args, BAR_DTYPE)
    arrays = {t: (r["date"], r[["open", "high", "low", "close", "volume"]]) for t, r in bars.items()}
    return sum(len(d) for d, _ in arrays.values())


def run_covariance(cur, args):
    """The optimiser's input: daily log returns of every ticker on common sessions, covariance."""
    tickers = args[1]
    closes = read_packed(cur, CLOSES, args, CLOSE_DTYPE)
    days = numpy.unique(numpy.concatenate([r["date"] for r in closes.values()]))
    matrix = numpy.full((len(days), len(tickers)), numpy.nan)
    for j, ticker in enumerate(tickers):
        r = closes.get(ticker)
        if r is not None:
            matrix[numpy.searchsorted(days, r["date"]), j] = r["close"]
    returns = numpy.diff(numpy.log(matrix), axis=0)
    returns = returns[~numpy.isnan(returns).any(axis=1)]     # sessions every ticker traded
    covariance = numpy.cov(returns, rowvar=False)
    assert covariance.shape == (len(tickers), len(tickers))
    return sum(len(r) for r in closes.values())


def run_monthly(sql):
    def run(cur, args):
        cur.execute(sql, args)
        return len(cur.fetchall())
    return run


def block_counters(conn):
    """(hit, read) shared-buffer blocks of this database so far, own session's included."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute("SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()").fetchone()


def time_query(conn, fn, params, warmup):
    cur = conn.cursor(binary=True)
    for args in params[:warmup]:
        fn(cur, args)
    samples, rows = [], 0
    hit0, read0 = block_counters(conn)
    for args in params[warmup:]:
        t0 = time.perf_counter()
        rows += fn(cur, args)
        samples.append((time.perf_counter() - t0) * 1000.0)
    hit1, read1 = block_counters(conn)
    hit, read = hit1 - hit0, read1 - read0
    # blocks PostgreSQL had to ask the kernel for (page cache or disk) during the timed runs
    buffers = {"hit": hit, "read": read, "hit_ratio": round(hit / (hit + read), 4) if hit + read else None}
    return samples, rows // max(1, len(samples)), buffers


def explain(conn, sql, args):
    """EXPLAIN (ANALYZE, BUFFERS) of one run: planning and execution ms, buffers, chunks."""
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, args).fetchone()[0][0]
    top = plan["Plan"]

    def count_scans(node):
        own = 1 if "Scan" in node.get("Node Type", "") and node.get("Relation Name") else 0
        return own + sum(count_scans(c) for c in node.get("Plans", []))
    return {"planning_ms": round(plan["Planning Time"], 3), "execution_ms": round(plan["Execution Time"], 3),
            "shared_hit": top.get("Shared Hit Blocks", 0), "shared_read": top.get("Shared Read Blocks", 0),
            "relation_scans": count_scans(top)}


def bench_setup(dsn, plan, warmup, has_rollup):
    queries = {
        "single_ticker_250d": (run_single, SINGLE),
        "single_ticker_1y": (run_single, SINGLE),
        "single_ticker_10y": (run_single, SINGLE),
        "backtest_5y_50": (run_bars, BARS),
        "portfolio_cov_100": (run_covariance, CLOSES),
        "monthly_rollup": (run_monthly(MONTHLY_ROLLUP if has_rollup else MONTHLY_RAW),
                           MONTHLY_ROLLUP if has_rollup else MONTHLY_RAW),
    }
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, (fn, sql) in queries.items():
            samples, rows, buffers = time_query(conn, fn, plan[name], warmup)
            out[name] = {"p50_ms": round(statistics.median(samples), 3), "p95_ms": round(percentile(samples, 0.95), 3),
                         "max_ms": round(max(samples), 3), "runs": len(samples), "rows": rows, "buffers": buffers,
                         "explain": explain(conn, sql, plan[name][-1])}
    return out


ROLLUP_EXISTS = "SELECT count(*) > 0 FROM pg_class WHERE relname = 'ohlcv_monthly'"


def has_rollup(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(ROLLUP_EXISTS).fetchone()[0]


def setup_facts(dsn):
    with psycopg.connect(dsn) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]   # noqa: E731
        return {
            "server_version": one("SHOW server_version"),
            "timescaledb": one("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
            "shared_buffers": one("SHOW shared_buffers"), "work_mem": one("SHOW work_mem"),
            "random_page_cost": one("SHOW random_page_cost"),
            "chunks": one("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'ohlcv_data'"),
            "rows": one("SELECT count(*) FROM ohlcv_data"),
            "ohlcv_bytes": one("SELECT hypertable_size('ohlcv_data')"),
            "has_rollup": one(ROLLUP_EXISTS),
        }


def host_facts():
    """CPUs, RAM and the cgroup memory limit of the database host, read by the same probe as the
    tuning (module_utils/pg_tuning.py, copied beside this file); the limit only when below RAM."""
    import pg_tuning  # pylint: disable=import-outside-toplevel  (beside this file on the host)
    facts = {"cpus": len(os.sched_getaffinity(0)), "mem_total_bytes": pg_tuning.meminfo_total_bytes(),
             "cgroup_limit_bytes": None, "debian": None}
    limit = pg_tuning.cgroup_memory_limit_bytes()
    if limit and (facts["mem_total_bytes"] is None or limit < facts["mem_total_bytes"]):
        facts["cgroup_limit_bytes"] = limit
    try:
        with open("/etc/debian_version") as handle:
            facts["debian"] = handle.read().strip()
    except OSError:
        pass
    return facts


def scrape_ms(url, n=20):
    """Median scrape time of the metrics exporter, or None while there is none to scrape."""
    if not url:
        return None
    samples = []
    try:
        for _ in range(n + 2):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            samples.append((time.perf_counter() - t0) * 1000.0)
    except (urllib.error.URLError, OSError):
        return None
    return round(statistics.median(samples[2:]), 3)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", required=True, help="libpq string of the tuned database")
    p.add_argument("--naive-dsn", help="libpq string of the naive database (omit to skip it)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--exporter-url", default="")
    args = p.parse_args()

    tickers, last = universe(args.dsn)
    plan = draws(tickers, last, args.warmup + args.iterations, args.seed)
    result = {"generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "iterations": args.iterations, "warmup": args.warmup, "seed": args.seed,
              "tickers": {r: len(t) for r, t in tickers.items()}, "host": host_facts(),
              "tuned": {}}
    # Timings first: the facts count every row, which reads the whole table through the cache.
    result["tuned"]["queries"] = bench_setup(args.dsn, plan, args.warmup, has_rollup(args.dsn))
    if args.naive_dsn:
        result["naive"] = {"queries": bench_setup(args.naive_dsn, plan, args.warmup, has_rollup(args.naive_dsn))}
        result["naive"]["facts"] = setup_facts(args.naive_dsn)
    result["tuned"]["facts"] = setup_facts(args.dsn)
    result["scrape_ms"] = scrape_ms(args.exporter_url)
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
