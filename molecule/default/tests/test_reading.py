"""The read path (docs/reading.md): migration 0009's functions and reader/quantdb_reader.py give
exactly what the plain SQL gives.

A new database built by the schema role (and its grants by the access role), loaded with sample
data through the ingest playbook; the reader runs on the controller and connects over TCP
through the published port as reporting_user, as a research notebook would. Every comparison is
exact: each date and value, the order, the bounds (both inclusive), unknown tickers, many
tickers, and the NULL/NaN/Infinity bars only an adopted table can hold.
"""
import datetime
import math
import os
import sys

import numpy
import psycopg
import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(PROJECT, "reader"))
import quantdb_reader  # noqa: E402
from test_default import lab_password, psql  # noqa: E402
from test_market_data import AS_OF, ingest_args, playbook, sample, schema_db  # noqa: E402
from test_operation_inputs import PUBLISHED_PORT  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
DB = "qa_reading"
PLAIN = ("SELECT date, open, high, low, close, volume FROM ohlcv_data WHERE ticker = %s AND region = %s"
         " AND date >= %s AND date <= %s ORDER BY date")
FUNCTIONS = ["ohlcv_closes_packed(text[],text,date,date)", "ohlcv_packed(text,text,date,date)",
             "ohlcv_packed_many(text[],text,date,date)"]


def connect(user="reporting_user"):
    # autocommit: reporting_user's idle_in_transaction_session_timeout would end a session left
    # in a transaction between tests
    return psycopg.connect(host="127.0.0.1", port=PUBLISHED_PORT, dbname=DB, user=user, password=lab_password(user),
                           sslmode="require", connect_timeout=10, autocommit=True)


@pytest.fixture(scope="module")
def loaded(host, tmp_path_factory):
    """qa_reading: built by site.yml --tags schema (schema, then access's grants), loaded by ingest.yml."""
    tmp = tmp_path_factory.mktemp("reading")
    path = sample(tmp, "reading.csv.gz", "--tickers", "4", "--years", "2", "--seed", "16")
    schema_db(DB)
    proc = playbook("ingest.yml", *ingest_args(path, "-e", "ingest_database=%s" % DB))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = psql(host, "SELECT region || ':' || ticker FROM ohlcv_data GROUP BY 1 ORDER BY 1", db=DB).split()
    tickers = {}
    for row in rows:
        region, ticker = row.split(":")
        tickers.setdefault(region, []).append(ticker)
    assert sorted(tickers) == ["KR", "US"] and all(len(t) == 4 for t in tickers.values())
    with connect() as conn:
        yield dict(conn=conn, tickers=tickers)


def plain(conn, ticker, region, start=None, end=None):
    return conn.execute(PLAIN, (ticker, region, start or datetime.date.min, end or datetime.date.max)).fetchall()


def assert_same(array, rows):
    """A reader array equals the plain SQL rows: same length, order, dates and values; a NULL
    price is NaN and a NULL volume -1 (docs/reading.md)."""
    assert len(array) == len(rows)
    assert array["date"].tolist() == [r[0] for r in rows]
    for i, name in enumerate(("open", "high", "low", "close"), start=1):
        got, want = array[name].tolist(), [r[i] for r in rows]
        assert all((g == w) or (math.isnan(g) and (w is None or math.isnan(w))) for g, w in zip(got, want)), name
    assert array["volume"].tolist() == [-1 if r[5] is None else r[5] for r in rows]


def test_reading_functions_are_stable_parallel_safe_with_a_fixed_search_path(loaded, host):
    out = psql(host, "SELECT string_agg(p.oid::regprocedure::text || ' ' || provolatile::text || proparallel::text || prosecdef::text"
                     " || ' ' || array_to_string(proconfig, ';'), ',' ORDER BY 1) FROM pg_proc p"
                     " WHERE proname LIKE 'ohlcv%packed%'", db=DB)
    assert out == ("ohlcv_closes_packed(text[],text,date,date) ssfalse search_path=pg_catalog, public,"
                   "ohlcv_packed(text,text,date,date) ssfalse search_path=pg_catalog, public,"
                   "ohlcv_packed_many(text[],text,date,date) ssfalse search_path=pg_catalog, public")
    assert psql(host, "SELECT version || ' ' || name FROM schema_migrations WHERE version = '0009'", db=DB) == "0009 read_functions"


def test_reading_functions_are_granted_to_the_reading_roles_only(loaded, host):
    who = ("SELECT string_agg(r || ':' || has_function_privilege(r, 'public.' || f, 'EXECUTE'), ',' ORDER BY r, f)"
           " FROM unnest('{quant_app,quant_audit,quant_monitor,reporting_user}'::text[]) r,"
           " unnest('{%s}'::text[]) f" % ",".join('"%s"' % f for f in FUNCTIONS))
    expected = {"quant_app": "true", "quant_audit": "true", "quant_monitor": "false", "reporting_user": "true"}
    assert psql(host, who, db=DB) == ",".join("%s:%s" % (r, expected[r]) for r in sorted(expected) for _ in FUNCTIONS)
    # PUBLIC has no EXECUTE: no ACL entry with an empty grantee.
    assert psql(host, "SELECT count(*) FROM pg_proc, aclexplode(proacl) a WHERE proname LIKE 'ohlcv%packed%'"
                      " AND a.grantee = 0", db=DB) == "0"


def test_reading_one_ticker_equals_the_plain_sql(loaded):
    conn = loaded["conn"]
    for region, tickers in sorted(loaded["tickers"].items()):
        for ticker in tickers:
            got = quantdb_reader.bars(conn, ticker, region)
            assert list(got) == [ticker]
            rows = plain(conn, ticker, region)
            assert len(rows) > 400 and rows[-1][0] == datetime.date.fromisoformat(AS_OF)
            assert_same(got[ticker], rows)


def test_reading_bounds_are_inclusive_on_both_sides(loaded):
    conn = loaded["conn"]
    ticker = loaded["tickers"]["US"][0]
    days = [r[0] for r in plain(conn, ticker, "US")]
    start, end = days[100], days[160]                 # both sessions: both must be in the result
    got = quantdb_reader.bars(conn, ticker, "US", start=start, end=end)[ticker]
    assert got["date"][0].item() == start and got["date"][-1].item() == end and len(got) == 61
    assert_same(got, plain(conn, ticker, "US", start, end))
    # Only a start, only an end, a one-day range, a weekend start, an empty range.
    saturday = next(d for d in (days[10] + datetime.timedelta(n) for n in range(7)) if d.weekday() == 5)
    for s, e in ((start, None), (None, end), (start, start), (saturday, None), (end, start)):
        assert_same(quantdb_reader.bars(conn, ticker, "US", start=s, end=e)[ticker], plain(conn, ticker, "US", s, e))
    assert len(quantdb_reader.bars(conn, ticker, "US", start=end, end=start)[ticker]) == 0
    assert len(quantdb_reader.bars(conn, ticker, "US", start=start, end=start)[ticker]) == 1


def test_reading_many_tickers_unknown_ones_and_the_wrong_region(loaded):
    conn = loaded["conn"]
    kr, us = loaded["tickers"]["KR"], loaded["tickers"]["US"]
    asked = list(reversed(us)) + ["NOSUCH", kr[0]]              # a KR ticker asked as US: no bars
    start, end = datetime.date(2024, 3, 1), datetime.date(2025, 2, 28)
    got = quantdb_reader.bars(conn, asked, "US", start=start, end=end)
    assert list(got) == asked
    for ticker in asked:
        assert_same(got[ticker], plain(conn, ticker, "US", start, end))
    assert len(got["NOSUCH"]) == 0 and len(got[kr[0]]) == 0 and got["NOSUCH"].dtype == quantdb_reader.BARS
    assert quantdb_reader.bars(conn, "NOSUCH", "US")["NOSUCH"].shape == (0,)
    # The functions themselves: one row per ticker that has bars, by ticker.
    rows = conn.execute("SELECT ticker, length(bars) FROM ohlcv_packed_many(%s, 'US', %s, %s)", (asked, start, end)).fetchall()
    assert [r[0] for r in rows] == sorted(us) and all(r[1] % 44 == 0 for r in rows)


def test_reading_closes_and_frames_equal_the_plain_sql(loaded):
    conn = loaded["conn"]
    kr = loaded["tickers"]["KR"]
    start = datetime.date(2025, 1, 2)
    got = quantdb_reader.closes(conn, kr + ["NOSUCH"], "KR", start=start)
    for ticker in kr:
        rows = plain(conn, ticker, "KR", start)
        assert got[ticker]["date"].tolist() == [r[0] for r in rows]
        assert got[ticker]["close"].tolist() == [r[4] for r in rows]
    assert len(got["NOSUCH"]) == 0
    frame = quantdb_reader.bars(conn, kr, "KR", start=start, as_frame=True)
    rows = [(t,) + r for t in kr for r in plain(conn, t, "KR", start)]
    assert frame["ticker"].tolist() == [r[0] for r in rows]
    assert [d.date() for d in frame["date"]] == [r[1] for r in rows]
    for i, name in enumerate(("open", "high", "low", "close", "volume"), start=2):
        assert frame[name].tolist() == [r[i] for r in rows], name


def test_reading_null_nan_and_infinity_as_documented(loaded, host):
    """Only an adopted table whose constraints stay NOT VALID can hold these bars: here the
    constraints are dropped in this test's own database to put them there."""
    for name in ("ohlcv_values_present", "ohlcv_prices_finite_positive", "ohlcv_volume_non_negative",
                 "ohlcv_high_low_consistent"):
        psql(host, "ALTER TABLE ohlcv_data DROP CONSTRAINT IF EXISTS %s" % name, db=DB)
    psql(host, "INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume) VALUES"
               " ('ODD1', 'US', '2025-10-29', NULL, 'NaN', 1e-300, 'Infinity', NULL),"
               " ('ODD1', 'US', '2025-10-30', 0.1, 1e300, '-Infinity', 5e-324, 9223372036854775807),"
               " ('ODD1', 'US', '1999-12-31', 1.5, 2.5, 0.5, 2, 0)", db=DB)
    conn = loaded["conn"]
    got = quantdb_reader.bars(conn, ["ODD1", "NOSUCH"], "US")["ODD1"]
    rows = plain(conn, "ODD1", "US")
    assert_same(got, rows)
    assert got["date"].tolist() == [datetime.date(1999, 12, 31), datetime.date(2025, 10, 29), datetime.date(2025, 10, 30)]
    assert math.isnan(got["open"][1]) and math.isnan(got["high"][1]) and got["volume"][1] == -1
    assert got["close"][1] == math.inf and got["low"][2] == -math.inf and got["close"][2] == 5e-324
    assert got["volume"][2] == numpy.iinfo(numpy.int64).max
    closes = quantdb_reader.closes(conn, "ODD1", "US")["ODD1"]
    assert closes["close"].tolist() == [2.0, math.inf, 5e-324]
