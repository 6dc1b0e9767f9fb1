#!/usr/bin/python3
"""Time the seed guide's SLO queries on the tuned database and on the naive one.

Runs on the database host (next to PostgreSQL, as the quant team's research boxes do) with
Debian's python3-psycopg (its C implementation, python3-psycopg-c) and python3-numpy,
connecting with ordinary libpq strings:

  python3 queries.py --dsn "dbname=bench" --naive-dsn "port=5433 dbname=bench_naive" \
      --iterations 200 --warmup 20

Each query runs `warmup` times, then `iterations` times with parameters drawn from a seeded
generator (the same draws for both setups), timed end to end on the client: execute, fetch,
and decode into the arrays a backtest or an optimiser uses. Every bar read is timed on two
paths in the same run, alternating: packed (one bytea of records per ticker, numpy.frombuffer)
and plain rows (the SQL a quant engineer writes first, cursor.fetchall(), then numpy); both
must return identical arrays on the first draw or the benchmark fails. With --audit-floor-runs,
times the quality audit's floor last (AUDIT_FLOOR: one pass over every bar computing the audit's
per-bar expressions, aggregated on the server). Prints one JSON document.
"""
import argparse
import collections
import datetime
import hashlib
import json
import os
import platform
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
FIELDS = ["open", "high", "low", "close", "volume"]
PG_EPOCH_DAYS = 10957            # 2000-01-01 (date_send's epoch) in days since 1970-01-01 (numpy's)
# The plain path: one row per bar, the SQL a quant engineer writes first, fetched with psycopg's
# default cursor (text results, decoded by its C implementation) and cursor.fetchall(), then
# turned into the same arrays as the packed path with one numpy conversion of the rows.
PLAIN_SINGLE = ("SELECT date, open, high, low, close, volume FROM ohlcv_data"
                " WHERE ticker = %s AND region = %s AND date >= %s ORDER BY date")
PLAIN_BARS = ("SELECT ticker, date, open, high, low, close, volume FROM ohlcv_data"
              " WHERE region = %s AND ticker = ANY(%s) AND date >= %s ORDER BY ticker, date")
PLAIN_CLOSES = ("SELECT ticker, date, close FROM ohlcv_data"
                " WHERE region = %s AND ticker = ANY(%s) AND date >= %s ORDER BY ticker, date")
ROW_DTYPE = numpy.dtype([("date", "datetime64[D]"), ("open", "f8"), ("high", "f8"), ("low", "f8"), ("close", "f8"),
                         ("volume", "f8")])
TICKER_ROW_DTYPE = numpy.dtype([("ticker", object)] + [(n, ROW_DTYPE[n]) for n in ROW_DTYPE.names])
TICKER_CLOSE_DTYPE = numpy.dtype([("ticker", object), ("date", "datetime64[D]"), ("close", "f8")])
# Monthly bars of one ticker over all years: the rollup where the setup has one, else the
# aggregate over daily bars a user of the naive setup has to run.
MONTHLY_ROLLUP = ("SELECT month, open, high, low, close, volume FROM ohlcv_monthly"
                  " WHERE ticker = %s AND region = %s ORDER BY month")
MONTHLY_RAW = ("SELECT time_bucket(INTERVAL '1 month', date) AS month, first(open, date), max(high),"
               " min(low), last(close, date), sum(volume) FROM ohlcv_data"
               " WHERE ticker = %s AND region = %s GROUP BY month ORDER BY month")


# The floor of the full quality audit (issue 16): one plain pass over every bar of ohlcv_data doing
# the per-bar work of the audit's staging pass (library/ohlcv_quality_audit.py, Audit.stage), its
# expressions taken as they are: the previous close from the same window (PARTITION BY ticker,
# region ORDER BY date DESC, so the (ticker, region, date DESC) index feeds it without a sort, as
# in the audit; lead() over it is the previous bar, lag() in date order), the NULL, OHLC and
# price/volume predicates, the repeated-date flag and the log return; aggregated to one row of
# counts, so nothing but that row reaches the client. No staging table, no second pass, no
# statistics, no calendar: what is left of the audit's time above this is its own overhead.
AUDIT_FLOOR = """SELECT count(*) AS bars,
       count(*) FILTER (WHERE nulls) AS null_values,
       count(*) FILTER (WHERE ohlc) AS ohlc_violations,
       count(*) FILTER (WHERE nonpos) AS non_positive_prices,
       count(*) FILTER (WHERE negvol) AS negative_volume,
       count(*) FILTER (WHERE zeromove) AS zero_volume_moves,
       count(*) FILTER (WHERE dup) AS duplicates,
       count(r) AS log_returns
FROM (SELECT (open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL OR volume IS NULL) AS nulls,
             coalesce(high < greatest(open, close) OR low > least(open, close) OR high < low, false) AS ohlc,
             coalesce(least(open, high, low, close) <= 0, false) AS nonpos,
             coalesce(volume < 0, false) AS negvol,
             coalesce(volume = 0 AND prev_close IS NOT NULL AND close <> prev_close, false) AS zeromove,
             dup,
             CASE WHEN close > 0 AND prev_close > 0 THEN ln(close) - ln(prev_close) END AS r
      FROM (SELECT open, high, low, close, volume, lead(close) OVER w AS prev_close,
                   coalesce(date = lead(date) OVER w, false) AS dup
            FROM public.ohlcv_data
            WINDOW w AS (PARTITION BY ticker, region ORDER BY date DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) b) f"""
AUDIT_WORK_MEM = "256MB"          # the audit module's work_mem (its default, which bench.yml keeps)
AUDIT_JIT = "on"                  # and its jit (option jit, default true), whatever the server's


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


def packed_bars(packed):
    """One packed bytea -> (dates as datetime64[D], the OHLCV fields), oldest first."""
    bars = numpy.frombuffer(packed or b"", BAR_DTYPE)[::-1]
    return days(bars["date"]), bars[FIELDS]


def packed_closes(packed):
    """One packed bytea of close records -> (dates as datetime64[D], closes), oldest first."""
    closes = numpy.frombuffer(packed or b"", CLOSE_DTYPE)[::-1]
    return days(closes["date"]), closes["close"]


def days(pg_days):
    """Days since 2000-01-01 (date_send) -> datetime64[D]."""
    return (pg_days.astype("i8") + PG_EPOCH_DAYS).view("datetime64[D]")


def by_ticker(rows, dtype):
    """Rows ordered by ticker -> [(ticker, structured array of its rows)], one numpy conversion."""
    table = numpy.array(rows, dtype)
    if not len(table):
        return []
    tickers = table["ticker"]
    cuts = numpy.flatnonzero(tickers[1:] != tickers[:-1]) + 1
    return [(part["ticker"][0], part) for part in numpy.split(table, cuts)]


def covariance(tickers, closes):
    """The optimiser's input: daily log returns of every ticker on common sessions, covariance."""
    sessions = numpy.unique(numpy.concatenate([dates for dates, _ in closes.values()]))
    matrix = numpy.full((len(sessions), len(tickers)), numpy.nan)
    for j, ticker in enumerate(tickers):
        if ticker in closes:
            dates, close = closes[ticker]
            matrix[numpy.searchsorted(sessions, dates), j] = close
    returns = numpy.diff(numpy.log(matrix), axis=0)
    returns = returns[~numpy.isnan(returns).any(axis=1)]     # sessions every ticker traded
    cov = numpy.cov(returns, rowvar=False)
    assert cov.shape == (len(tickers), len(tickers))
    return cov


# Each query's two paths return the same product, the arrays a backtest or an optimiser uses:
#   single ticker: (dates datetime64[D], OHLCV fields float64), oldest first;
#   backtest: {ticker: (dates, OHLCV fields)};
#   covariance: ({ticker: (dates, closes)}, the covariance matrix).
def packed_single(cur, args):
    cur.execute(SINGLE, args)
    return packed_bars(cur.fetchone()[0])


def plain_single(cur, args):
    cur.execute(PLAIN_SINGLE, args)
    bars = numpy.array(cur.fetchall(), ROW_DTYPE)
    return bars["date"], bars[FIELDS]


def packed_backtest(cur, args):
    cur.execute(BARS, args)
    return {ticker: packed_bars(packed) for ticker, packed in cur.fetchall()}


def plain_backtest(cur, args):
    cur.execute(PLAIN_BARS, args)
    return {ticker: (bars["date"], bars[FIELDS]) for ticker, bars in by_ticker(cur.fetchall(), TICKER_ROW_DTYPE)}


def packed_covariance(cur, args):
    cur.execute(CLOSES, args)
    closes = {ticker: packed_closes(packed) for ticker, packed in cur.fetchall()}
    return closes, covariance(args[1], closes)


def plain_covariance(cur, args):
    cur.execute(PLAIN_CLOSES, args)
    closes = {ticker: (rows["date"], rows["close"]) for ticker, rows in by_ticker(cur.fetchall(), TICKER_CLOSE_DTYPE)}
    return closes, covariance(args[1], closes)


def rows_query(sql):
    def run(cur, args):
        cur.execute(sql, args)
        return cur.fetchall()
    return run


# A query as timed: its packed path (what p50_ms/p95_ms measure) and SQL, its plain-row path and
# SQL (None where it has no meaningful one: `note` says why), and how many bars a product holds.
Query = collections.namedtuple("Query", "path packed sql plain plain_sql count note")
NO_PLAIN_MONTHLY = ("no plain variant: the query already returns plain rows, about 12 a year, aggregated on the server"
                    " (tuned: the ohlcv_monthly rollup; naive: time_bucket over the daily bars); fetching the daily"
                    " bars to aggregate them on the client would be another query, not another path")


def count_bars(product):
    return len(product[0])


def count_backtest(product):
    return sum(len(dates) for dates, _ in product.values())


def count_covariance(product):
    return sum(len(dates) for dates, _ in product[0].values())


def query_plan(rollup):
    monthly = MONTHLY_ROLLUP if rollup else MONTHLY_RAW
    single = Query("packed", packed_single, SINGLE, plain_single, PLAIN_SINGLE, count_bars, None)
    return {
        "single_ticker_250d": single,
        "single_ticker_1y": single,
        "single_ticker_10y": single,
        "backtest_5y_50": Query("packed", packed_backtest, BARS, plain_backtest, PLAIN_BARS, count_backtest, None),
        "portfolio_cov_100": Query("packed", packed_covariance, CLOSES, plain_covariance, PLAIN_CLOSES,
                                   count_covariance, None),
        "monthly_rollup": Query("rows", rows_query(monthly), monthly, None, None, len, NO_PLAIN_MONTHLY),
    }


def arrays(product, name="result"):
    """(name, array in native byte order, contiguous) for every array of a product, in a fixed order."""
    if isinstance(product, dict):
        for key in sorted(product):
            yield from arrays(product[key], "%s[%r]" % (name, key))
    elif isinstance(product, (tuple, list)):
        for i, part in enumerate(product):
            yield from arrays(part, "%s[%d]" % (name, i))
    elif product.dtype.names:
        for field in product.dtype.names:
            yield from arrays(product[field], "%s.%s" % (name, field))
    else:
        yield name, numpy.ascontiguousarray(product, product.dtype.newbyteorder("="))


def difference(packed, plain):
    """None when both products hold the same arrays bit for bit (dtype, shape, every byte), else what differs."""
    left, right = list(arrays(packed)), list(arrays(plain))
    if [n for n, _ in left] != [n for n, _ in right]:
        return "different arrays: packed %s, plain %s" % ([n for n, _ in left], [n for n, _ in right])
    for (name, a), (_, b) in zip(left, right):
        if a.dtype != b.dtype or a.shape != b.shape:
            return "%s: packed %s %s, plain %s %s" % (name, a.dtype, a.shape, b.dtype, b.shape)
        if a.tobytes() != b.tobytes():
            flat_a, flat_b = a.reshape(-1), b.reshape(-1)
            i = next(i for i in range(len(flat_a)) if flat_a[i].tobytes() != flat_b[i].tobytes())
            return "%s[%d]: packed %r, plain %r" % (name, i, flat_a[i], flat_b[i])
    return None


def check_paths(conn, name, query, args):
    """Run both paths on one draw and fail the benchmark unless their arrays are identical."""
    packed = query.packed(conn.cursor(binary=True), args)
    plain = query.plain(conn.cursor(), args)
    wrong = difference(packed, plain)
    if wrong:
        raise SystemExit("bench: %s: the packed and the plain path return different arrays for %r: %s"
                         % (name, args, wrong))
    return {"draw": 0, "arrays": len(list(arrays(packed))), "bars": query.count(packed), "identical": True}


def block_counters(conn, datid):
    """(hit, read) shared-buffer blocks of this database so far, own session's included."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    hit, fetched = conn.execute("SELECT pg_stat_get_db_blocks_hit(%s::oid), pg_stat_get_db_blocks_fetched(%s::oid)",
                                (datid, datid)).fetchone()
    return hit, fetched - hit


def alternate(paths, i):
    """The paths of iteration i in the order they run: packed first on even iterations, plain on odd."""
    return paths if i % 2 == 0 else paths[::-1]


def draw_of(i, k, n):
    """The draw path k runs at iteration i of n: packed draw i, plain draw i + n/2. Each path runs every
    draw once, side by side in time, and neither reads the blocks the other has just read."""
    return (i + k * (n // 2)) % n


def time_query(conn, query, params, warmup):
    """Time the packed path and, where there is one, the plain path, alternating within each
    iteration; shared-buffer blocks counted around each run (outside the clock), per path."""
    datid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    paths = [(0, "packed", query.packed, conn.cursor(binary=True))]
    if query.plain:
        paths.append((1, "plain", query.plain, conn.cursor()))
    for i, args in enumerate(params[:warmup]):
        for _, _, fn, cur in alternate(paths, i):
            fn(cur, args)
    timed = params[warmup:]
    n = len(timed)
    samples = {path: [] for _, path, _, _ in paths}
    rows = dict.fromkeys(samples, 0)
    blocks = {path: [0, 0] for path in samples}
    last = block_counters(conn, datid)
    for i in range(n):
        for k, path, fn, cur in alternate(paths, i):
            args = timed[draw_of(i, k, n)]
            t0 = time.perf_counter()
            product = fn(cur, args)
            samples[path].append((time.perf_counter() - t0) * 1000.0)
            rows[path] += query.count(product)
            now = block_counters(conn, datid)
            blocks[path][0] += now[0] - last[0]
            blocks[path][1] += now[1] - last[1]
            last = now
    out = {}
    for path, values in samples.items():
        hit, read = blocks[path]
        # blocks PostgreSQL had to ask the kernel for (page cache or disk) during this path's timed runs
        out[path] = {"p50_ms": round(statistics.median(values), 3), "p95_ms": round(percentile(values, 0.95), 3),
                     "max_ms": round(max(values), 3), "runs": len(values), "rows": rows[path] // max(1, len(values)),
                     "buffers": {"hit": hit, "read": read,
                                 "hit_ratio": round(hit / (hit + read), 4) if hit + read else None}}
    return out


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


def bench_setup(dsn, plan, warmup, rollup):
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, query in query_plan(rollup).items():
            check = check_paths(conn, name, query, plan[name][0]) if query.plain else None
            timed = time_query(conn, query, plan[name], warmup)
            out[name] = dict(timed["packed"], path=query.path, explain=explain(conn, query.sql, plan[name][-1]),
                             plain=None, plain_check=check, plain_note=query.note)
            if query.plain:
                out[name]["plain"] = dict(timed["plain"], explain=explain(conn, query.plain_sql, plan[name][-1]))
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


# psycopg's implementations that decode rows in C: Debian's python3-psycopg-c ("c") or the pip
# binary build ("binary"). The pure-Python one ("python") is 2-4x slower on row fetches and would
# make the plain path look slower than it is for anyone who installs psycopg properly.
C_IMPLEMENTATIONS = ("binary", "c")


def client_facts(impl=None):
    """The client's psycopg implementation and versions; the benchmark refuses to run without C."""
    impl = impl or psycopg.pq.__impl__
    if impl not in C_IMPLEMENTATIONS:
        raise SystemExit("bench: psycopg uses its %r implementation, not one in C %s: install python3-psycopg-c"
                         " (Debian) or psycopg[binary] (pip)" % (impl, C_IMPLEMENTATIONS))
    return {"psycopg": psycopg.__version__, "psycopg_impl": impl, "libpq": psycopg.pq.version(),
            "numpy": numpy.__version__, "python": platform.python_version()}


def audit_floor(dsn, runs):
    """Time AUDIT_FLOOR `runs` times on one connection with the audit's work_mem and jit, end to end on
    the client (execute and fetch its one row): the minimum, the median, every run, the counts
    it returned and the statement with its SHA-256."""
    seconds = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('work_mem', %s, false), set_config('jit', %s, false)", (AUDIT_WORK_MEM, AUDIT_JIT))
        for _ in range(runs):
            t0 = time.perf_counter()
            cur = conn.execute(AUDIT_FLOOR)
            row = cur.fetchone()
            seconds.append(time.perf_counter() - t0)
        counts = dict(zip([d.name for d in cur.description], row))
    return {"min": round(min(seconds), 3), "median": round(statistics.median(seconds), 3), "runs": runs,
            "seconds": [round(s, 3) for s in seconds], "counts": counts, "work_mem": AUDIT_WORK_MEM, "jit": AUDIT_JIT,
            "sql_sha256": hashlib.sha256(AUDIT_FLOOR.encode()).hexdigest(), "sql": " ".join(AUDIT_FLOOR.split())}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", required=True, help="libpq string of the tuned database")
    p.add_argument("--naive-dsn", help="libpq string of the naive database (omit to skip it)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--exporter-url", default="")
    p.add_argument("--audit-floor-runs", type=int, default=0,
                   help="time the audit's floor (AUDIT_FLOOR) this many times, last, right before the audit (0: not)")
    args = p.parse_args()
    client = client_facts()

    tickers, last = universe(args.dsn)
    plan = draws(tickers, last, args.warmup + args.iterations, args.seed)
    result = {"generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "iterations": args.iterations, "warmup": args.warmup, "seed": args.seed,
              "tickers": {r: len(t) for r, t in tickers.items()}, "host": host_facts(),
              "client": client, "tuned": {}}
    # Timings first: the facts count every row, which reads the whole table through the cache.
    result["tuned"]["queries"] = bench_setup(args.dsn, plan, args.warmup, has_rollup(args.dsn))
    if args.naive_dsn:
        result["naive"] = {"queries": bench_setup(args.naive_dsn, plan, args.warmup, has_rollup(args.naive_dsn))}
        result["naive"]["facts"] = setup_facts(args.naive_dsn)
    result["tuned"]["facts"] = setup_facts(args.dsn)
    result["scrape_ms"] = scrape_ms(args.exporter_url)
    # Last, so that the audit bench.yml runs next starts from the cache state the floor saw.
    result["audit_floor"] = audit_floor(args.dsn, args.audit_floor_runs) if args.audit_floor_runs > 0 else None
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
