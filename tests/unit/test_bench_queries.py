"""Unit tests of the benchmark client (bench/queries.py) without a server: the packed and the
plain-row path of every query give identical arrays from the same bars (a fake cursor answers
each SQL as PostgreSQL would: packed big-endian records newest first, or rows), the equality
check fails loudly on any difference, the client refuses psycopg's pure-Python build, and the
timing loop runs both paths over the same draws, alternating."""
import datetime
import os
import struct
import sys
from decimal import Decimal

import numpy
import pytest

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "bench"))
import queries  # noqa: E402

PG_EPOCH = datetime.date(2000, 1, 1)
START = datetime.date(2024, 1, 1)


def sample_bars(decimal=False):
    """(ticker, region, date, open, high, low, close, volume): three tickers, a gap, odd values."""
    bars = []
    for t, ticker in enumerate(["BBB", "AAA", "CCC"]):
        for d in range(40):
            if ticker == "CCC" and d % 7 == 3:           # sessions missing for one ticker
                continue
            day = START + datetime.timedelta(days=d)
            price = 100.0 + t * 7.1234 + d * 0.0001 + 1e-9 * d
            values = [price, price * 1.01, price * 0.99, price + 0.3]
            if decimal:                                   # the naive setup's numeric(15,4)
                values = [Decimal(v).quantize(Decimal("0.0001")) for v in values]
            bars.append((ticker, "US", day, *values, 10 ** 12 + d * 977))
    bars.append(("AAA", "KR", START, 1.0, 1.0, 1.0, 1.0, 1))                    # another region
    bars.append(("AAA", "US", START - datetime.timedelta(days=3), 5.0, 5.0, 5.0, 5.0, 5))   # before the start
    return bars


def pack_bar(bar):
    return struct.pack(">iddddd", (bar[2] - PG_EPOCH).days, *(float(v) for v in bar[3:8]))


def pack_close(bar):
    return struct.pack(">id", (bar[2] - PG_EPOCH).days, float(bar[6]))


class FakeCursor:
    """Answers the benchmark's SQL from a list of bars, as the server would."""

    def __init__(self, bars, binary=False):
        self.bars, self.binary, self.result = bars, binary, None

    def select(self, region, tickers, start):
        return sorted((b for b in self.bars if b[1] == region and b[0] in tickers and b[2] >= start),
                      key=lambda b: (b[0], b[2]))

    def packed(self, region, tickers, start, pack):
        per = {}
        for b in reversed(self.select(region, tickers, start)):          # newest first
            per[b[0]] = per.get(b[0], b"") + pack(b)
        return list(reversed(list(per.items())))                         # GROUP BY: any order

    def execute(self, sql, args):
        if sql == queries.SINGLE:
            ticker, region, start = args
            found = self.packed(region, [ticker], start, pack_bar)
            self.result = [(found[0][1] if found else None,)]
        elif sql == queries.BARS:
            self.result = self.packed(*args, pack_bar)
        elif sql == queries.CLOSES:
            self.result = self.packed(*args, pack_close)
        elif sql == queries.PLAIN_SINGLE:
            ticker, region, start = args
            self.result = [b[2:] for b in self.select(region, [ticker], start)]
        elif sql == queries.PLAIN_BARS:
            self.result = [(b[0],) + b[2:] for b in self.select(*args)]
        elif sql == queries.PLAIN_CLOSES:
            self.result = [(b[0], b[2], b[6]) for b in self.select(*args)]
        else:
            raise AssertionError("unexpected SQL " + sql)

    def fetchone(self):
        return self.result[0]

    def fetchall(self):
        return list(self.result)


class FakeConn:
    def __init__(self, bars):
        self.bars = bars

    def cursor(self, binary=False):
        return FakeCursor(self.bars, binary)


PLAN = queries.query_plan(True)
DRAWS = {
    "single_ticker_1y": ("CCC", "US", START),
    "backtest_5y_50": ("US", ["AAA", "BBB", "CCC", "NOSUCH"], START),
    "portfolio_cov_100": ("US", ["AAA", "BBB", "CCC"], START),
}


@pytest.mark.parametrize("decimal", [False, True], ids=["float8", "numeric"])
@pytest.mark.parametrize("name", sorted(DRAWS))
def test_both_paths_give_identical_arrays(name, decimal):
    query, args = PLAN[name], DRAWS[name]
    cur = FakeCursor(sample_bars(decimal))
    packed, plain = query.packed(cur, args), query.plain(cur, args)
    assert queries.difference(packed, plain) is None
    assert query.count(packed) == query.count(plain) > 0
    names = [n for n, _ in queries.arrays(packed)]
    assert len(names) == len(set(names)) >= 6
    if name != "single_ticker_1y":
        assert not any("NOSUCH" in n for n in names)
        assert set(packed if name == "backtest_5y_50" else packed[0]) == {"AAA", "BBB", "CCC"}
    if name == "portfolio_cov_100":
        assert packed[1].shape == (3, 3) and numpy.isfinite(packed[1]).all()


def test_the_product_is_oldest_first_in_datetime64_and_float64():
    dates, ohlcv = PLAN["single_ticker_250d"].packed(FakeCursor(sample_bars()), ("AAA", "US", START))
    assert dates.dtype == numpy.dtype("datetime64[D]") and dates[0] == numpy.datetime64(START)
    assert (numpy.diff(dates.astype("i8")) > 0).all()
    assert list(ohlcv.dtype.names) == queries.FIELDS and ohlcv["volume"][0] == 10 ** 12
    empty = PLAN["single_ticker_250d"].packed(FakeCursor(sample_bars()), ("NOSUCH", "US", START))
    assert queries.difference(empty, PLAN["single_ticker_250d"].plain(FakeCursor([]), ("NOSUCH", "US", START))) is None


def test_a_difference_is_found_and_named():
    cur = FakeCursor(sample_bars())
    query, args = PLAN["backtest_5y_50"], DRAWS["backtest_5y_50"]
    packed = query.packed(cur, args)
    plain = query.plain(cur, args)
    dates, ohlcv = plain["BBB"]
    ohlcv = ohlcv.copy()
    ohlcv["close"][5] = numpy.nextafter(ohlcv["close"][5], numpy.inf)              # one ulp
    plain["BBB"] = (dates, ohlcv)
    assert queries.difference(packed, plain).startswith("result['BBB'][1].close[5]: packed")
    del plain["BBB"]
    assert queries.difference(packed, plain).startswith("different arrays")
    dates, _ = PLAN["single_ticker_1y"].packed(cur, DRAWS["single_ticker_1y"])
    assert queries.difference((dates,), (dates.astype("i8"),)).startswith("result[0]: packed datetime64[D]")
    assert queries.difference((dates,), (dates[::-1],)).startswith("result[0][0]")   # order matters
    assert queries.difference((numpy.array([numpy.nan]),), (numpy.array([numpy.nan]),)) is None


def test_the_check_fails_the_benchmark_loudly():
    good = queries.check_paths(FakeConn(sample_bars()), "portfolio_cov_100", PLAN["portfolio_cov_100"],
                               DRAWS["portfolio_cov_100"])
    assert good["identical"] is True and good["draw"] == 0 and good["bars"] > 100
    broken = PLAN["backtest_5y_50"]._replace(plain=lambda cur, args: {})
    with pytest.raises(SystemExit, match="backtest_5y_50: the packed and the plain path return different arrays"):
        queries.check_paths(FakeConn(sample_bars()), "backtest_5y_50", broken, DRAWS["backtest_5y_50"])


def test_every_bar_read_has_the_plain_sql_and_the_rollup_says_why_not():
    assert PLAN["single_ticker_10y"].plain_sql == ("SELECT date, open, high, low, close, volume FROM ohlcv_data"
                                                   " WHERE ticker = %s AND region = %s AND date >= %s ORDER BY date")
    assert "ticker = ANY(%s)" in PLAN["backtest_5y_50"].plain_sql
    assert PLAN["portfolio_cov_100"].plain_sql.startswith("SELECT ticker, date, close FROM ohlcv_data")
    for name, query in PLAN.items():
        assert query.path == ("rows" if name == "monthly_rollup" else "packed")
        assert (query.plain is None) == (query.plain_sql is None) == (query.note is not None) == (name == "monthly_rollup")
    assert PLAN["monthly_rollup"].note.startswith("no plain variant")
    assert queries.query_plan(False)["monthly_rollup"].sql == queries.MONTHLY_RAW


@pytest.mark.parametrize("impl", ["c", "binary"])
def test_the_client_needs_psycopg_in_c(impl):
    assert queries.client_facts(impl)["psycopg_impl"] == impl


def test_the_pure_python_psycopg_is_refused():
    with pytest.raises(SystemExit, match="python3-psycopg-c"):
        queries.client_facts("python")


class CountingConn:
    """Block counters that grow by 10 hits and 1 read per statement timed."""

    def __init__(self):
        self.runs, self.hits = [], 0

    def cursor(self, binary=False):
        return "binary" if binary else "text"

    def execute(self, sql, args=None):
        row = (self.hits, self.hits + len(self.runs)) if "blocks_hit" in sql else (4242,)

        class Result:
            def fetchone(self):
                return row
        return Result()


def test_both_paths_run_every_draw_alternating():
    conn = CountingConn()

    def path(name):
        def run(cur, args):
            assert cur == ("binary" if name == "packed" else "text")
            conn.runs.append((name, args))
            conn.hits += 10
            return [args]
        return run
    query = queries.Query("packed", path("packed"), "SQL", path("plain"), "PLAIN", len, None)
    params = ["w0", "w1"] + list(range(10))
    out = queries.time_query(conn, query, params, warmup=2)
    assert conn.runs[:4] == [("packed", "w0"), ("plain", "w0"), ("plain", "w1"), ("packed", "w1")]
    timed = conn.runs[4:]
    assert [p for p, _ in timed[:4]] == ["packed", "plain", "plain", "packed"]      # order alternates
    for name in ("packed", "plain"):
        assert sorted(a for p, a in timed if p == name) == list(range(10))            # every draw once
    assert timed[0] == ("packed", 0) and timed[1] == ("plain", 5)                     # not the same draw at once
    for name in ("packed", "plain"):
        assert out[name]["runs"] == 10 and out[name]["rows"] == 1
        assert out[name]["buffers"]["hit"] == 100 and out[name]["buffers"]["read"] > 0
        assert set(out[name]) == {"p50_ms", "p95_ms", "max_ms", "runs", "rows", "buffers"}


def test_a_query_without_plain_path_times_the_packed_one_alone():
    conn = CountingConn()
    query = queries.Query("rows", lambda cur, args: conn.runs.append(args) or [1, 2], "SQL", None, None, len, "none")
    out = queries.time_query(conn, query, list(range(7)), warmup=2)
    assert set(out) == {"packed"} and out["packed"]["runs"] == 5 and out["packed"]["rows"] == 2
    assert conn.runs == list(range(7))


def normal(sql):
    return " ".join(sql.split())


def test_the_audit_floor_computes_the_audits_own_per_bar_expressions():
    """The floor is the audit's staging pass stripped to its per-bar work: every expression and
    the window are the audit's (library/ohlcv_quality_audit.py), text for text."""
    with open(os.path.join(PROJECT, "library", "ohlcv_quality_audit.py")) as handle:
        audit = normal(handle.read())
    floor = normal(queries.AUDIT_FLOOR)
    for expression in [
            "(open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL OR volume IS NULL) AS nulls",
            "coalesce(high < greatest(open, close) OR low > least(open, close) OR high < low, false) AS ohlc",
            "coalesce(least(open, high, low, close) <= 0, false) AS nonpos",
            "coalesce(volume < 0, false) AS negvol",
            "coalesce(volume = 0 AND prev_close IS NOT NULL AND close <> prev_close, false) AS zeromove",
            "CASE WHEN close > 0 AND prev_close > 0 THEN ln(close) - ln(prev_close) END AS r",
            "lead(close) OVER w AS prev_close", "coalesce(date = lead(date) OVER w, false) AS dup",
            "WINDOW w AS (PARTITION BY ticker, region ORDER BY date DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"]:
        assert expression in floor and expression in audit, expression
    # every bar, one row of counts back, nothing else read
    assert "FROM public.ohlcv_data WINDOW" in floor and "WHERE" not in floor.split("FROM public.ohlcv_data")[1]
    assert floor.startswith("SELECT count(*) AS bars,") and "GROUP BY" not in floor and floor.count("FROM") == 3


class FloorConn:
    """Answers the floor's statement with one row of counts, each run taking the next of `delays`."""

    def __init__(self, delays, clock):
        self.delays, self.clock, self.statements = list(delays), clock, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.statements.append((sql, args))
        conn = self

        class Result:
            description = [type("Column", (), {"name": n}) for n in ("bars", "ohlc_violations", "log_returns")]

            def fetchone(self):
                if sql == queries.AUDIT_FLOOR:
                    conn.clock[0] += conn.delays.pop(0)
                return (9880, 0, 9860)
        return Result()


def test_the_audit_floor_reports_min_median_and_every_run(monkeypatch):
    clock = [100.0]
    conn = FloorConn([5.9, 5.6, 7.0], clock)
    monkeypatch.setattr(queries.psycopg, "connect", lambda dsn, autocommit=False: conn)
    monkeypatch.setattr(queries.time, "perf_counter", lambda: clock[0])
    floor = queries.audit_floor("dbname=bench", 3)
    assert (floor["min"], floor["median"], floor["runs"], floor["seconds"]) == (5.6, 5.9, 3, [5.9, 5.6, 7.0])
    assert floor["counts"] == {"bars": 9880, "ohlc_violations": 0, "log_returns": 9860}
    assert floor["sql"] == normal(queries.AUDIT_FLOOR) and len(floor["sql_sha256"]) == 64
    # the audit's work_mem and jit set first (the module's defaults), then the statement alone, three times
    assert conn.statements[0] == ("SELECT set_config('work_mem', %s, false), set_config('jit', %s, false)", ("256MB", "on"))
    assert floor["work_mem"] == "256MB" and floor["jit"] == "on"
    assert [s for s, _ in conn.statements[1:]] == [queries.AUDIT_FLOOR] * 3
