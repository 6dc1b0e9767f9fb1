"""reader/quantdb_reader.py against bytes built here record by record (struct, big-endian), and
the copies of the record layout that must agree: migration 0009, roles/access's grants,
docs/reading.md. The reader against the real server: molecule/default/tests/test_reading.py."""
import datetime
import math
import os
import re
import struct
import sys

import numpy
import pytest
import yaml

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "reader"))
import quantdb_reader  # noqa: E402

MIGRATION = os.path.join(PROJECT, "roles", "schema", "templates", "migrations", "0009_read_functions.sql.j2")
PG_EPOCH = datetime.date(2000, 1, 1)


def bar(day, o, h, lo, c, v):
    return struct.pack(">iddddq", (day - PG_EPOCH).days, o, h, lo, c, v)


def close(day, c):
    return struct.pack(">id", (day - PG_EPOCH).days, c)


D1, D2, D3 = datetime.date(1999, 12, 31), datetime.date(2000, 1, 1), datetime.date(2024, 2, 29)


def test_a_record_is_44_bytes_and_a_close_12():
    assert quantdb_reader.BAR_RECORD.itemsize == 44 == len(bar(D1, 1, 1, 1, 1, 1))
    assert quantdb_reader.CLOSE_RECORD.itemsize == 12 == len(close(D1, 1))
    assert [quantdb_reader.BAR_RECORD.fields[n][1] for n in quantdb_reader.BAR_RECORD.names] == [0, 4, 12, 20, 28, 36]


def test_bars_decode_exactly_dates_values_and_order():
    packed = bar(D1, 1.5, 2.25, 1.0, 2.0, 0) + bar(D2, 0.1, 0.3, 0.1, 0.2, 2 ** 62) + bar(D3, 1e300, 1e300, 1e-300, 5e-324, 7)
    out = quantdb_reader.decode_bars(packed)
    assert out.dtype == quantdb_reader.BARS and out.dtype.isnative
    assert out["date"].tolist() == [D1, D2, D3]                    # before, on and after the epoch, a leap day
    assert out["open"].tolist() == [1.5, 0.1, 1e300]               # bit for bit: no rounding on the way
    assert out["high"].tolist() == [2.25, 0.3, 1e300]
    assert out["low"].tolist() == [1.0, 0.1, 1e-300]
    assert out["close"].tolist() == [2.0, 0.2, 5e-324]
    assert out["volume"].tolist() == [0, 2 ** 62, 7] and out["volume"].dtype == numpy.int64


def test_nan_infinity_and_the_null_volume_pass_through():
    out = quantdb_reader.decode_bars(bar(D2, float("nan"), float("inf"), 1, -float("inf"), -1))
    assert math.isnan(out["open"][0]) and out["high"][0] == math.inf and out["close"][0] == -math.inf
    assert out["volume"][0] == -1


def test_empty_and_null_give_empty_arrays():
    for packed in (b"", None, memoryview(b"")):
        assert quantdb_reader.decode_bars(packed).shape == (0,)
        assert quantdb_reader.decode_closes(packed).dtype == quantdb_reader.CLOSES


def test_a_truncated_buffer_is_refused():
    with pytest.raises(ValueError):
        quantdb_reader.decode_bars(bar(D1, 1, 1, 1, 1, 1)[:-1])


def test_closes_decode():
    out = quantdb_reader.decode_closes(close(D1, 10.5) + close(D3, 11.25))
    assert out["date"].tolist() == [D1, D3] and out["close"].tolist() == [10.5, 11.25]


class FakeCursor(object):
    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, args):
        self.conn.calls.append((sql, args))

    def fetchone(self):
        return (self.conn.rows[0][1],) if self.conn.rows else (b"",)

    def fetchall(self):
        return self.conn.rows

    def close(self):
        pass


class FakeConn(object):
    """A DB-API connection without psycopg 3's binary cursors (as psycopg2)."""

    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def cursor(self):
        return FakeCursor(self)


def test_bars_keeps_the_order_asked_and_gives_unknown_tickers_empty_arrays():
    conn = FakeConn([("A", bar(D1, 1, 1, 1, 1, 1)), ("C", bar(D2, 2, 2, 2, 2, 2) + bar(D3, 3, 3, 3, 3, 3))])
    out = quantdb_reader.bars(conn, ["C", "ZZZ", "A", "C"], "US", start="1999-12-31", end=datetime.datetime(2024, 3, 1, 9))
    assert list(out) == ["C", "ZZZ", "A"]
    assert out["C"]["close"].tolist() == [2, 3] and out["ZZZ"].shape == (0,) and out["A"]["volume"].tolist() == [1]
    sql, args = conn.calls[0]
    assert "ohlcv_packed_many" in sql and args == (["C", "ZZZ", "A"], "US", D1, datetime.date(2024, 3, 1))


def test_one_ticker_uses_the_single_function():
    conn = FakeConn([("A", bar(D1, 1, 1, 1, 1, 1))])
    out = quantdb_reader.bars(conn, "A", "KR", start=numpy.datetime64("2024-01-02"))
    assert list(out) == ["A"] and len(out["A"]) == 1
    sql, args = conn.calls[0]
    assert "ohlcv_packed(" in sql and args == ("A", "KR", datetime.date(2024, 1, 2), None)


def test_as_frame():
    pandas = pytest.importorskip("pandas")
    conn = FakeConn([("A", bar(D1, 1, 2, 0.5, 1.5, 10)), ("B", bar(D2, 3, 4, 2.5, 3.5, 20) + bar(D3, 5, 6, 4.5, 5.5, 30))])
    frame = quantdb_reader.bars(conn, ["B", "A"], "US", as_frame=True)
    assert list(frame.columns) == ["ticker", "date", "open", "high", "low", "close", "volume"]
    assert frame["ticker"].tolist() == ["B", "B", "A"]
    assert [d.date() for d in frame["date"]] == [D2, D3, D1]
    assert frame["close"].tolist() == [3.5, 5.5, 1.5] and frame["volume"].tolist() == [20, 30, 10]
    empty = quantdb_reader.closes(FakeConn([]), ["X"], "US", as_frame=True)
    assert isinstance(empty, pandas.DataFrame) and list(empty.columns) == ["ticker", "date", "close"] and len(empty) == 0


def test_the_migration_packs_the_layout_the_reader_reads():
    with open(MIGRATION) as handle:
        text = " ".join(handle.read().split())
    record = ("date_send(o.date) || float8send(coalesce(o.open, 'NaN')) || float8send(coalesce(o.high, 'NaN'))"
              " || float8send(coalesce(o.low, 'NaN')) || float8send(coalesce(o.close, 'NaN'))"
              " || int8send(coalesce(o.volume, -1)), ''::bytea ORDER BY o.date)")
    assert text.count(record) == 2                          # ohlcv_packed and ohlcv_packed_many
    assert "string_agg(date_send(o.date) || float8send(coalesce(o.close, 'NaN')), ''::bytea ORDER BY o.date)" in text
    assert text.count("o.date >= coalesce(p_start, '-infinity'::date) AND o.date <= coalesce(p_end, 'infinity'::date)") == 3
    assert text.count("SET search_path = pg_catalog, public") == 3 and text.count("STABLE PARALLEL SAFE") == 3
    assert text.count("FROM PUBLIC;") == 3


def test_access_grants_every_function_of_the_migration():
    with open(MIGRATION) as handle:
        text = handle.read()
    declared = {name: "(%s)" % ",".join(a.split()[1] for a in re.sub(r"DEFAULT NULL", "", args).split(","))
                for name, args in re.findall(r"CREATE OR REPLACE FUNCTION public\.(\w+)\(([^)]*)\)", text)}
    assert sorted(declared) == ["ohlcv_closes_packed", "ohlcv_packed", "ohlcv_packed_many"]
    with open(os.path.join(PROJECT, "roles", "access", "tasks", "functions.yml")) as handle:
        tasks = yaml.safe_load(handle)
    granted = tasks[0]["vars"]["__access_read_functions"]
    assert sorted(granted) == sorted(name + args for name, args in declared.items())
    for name in declared:
        assert "REVOKE EXECUTE ON FUNCTION public.%s(" % name in text


def test_the_docs_give_the_same_offsets():
    with open(os.path.join(PROJECT, "docs", "reading.md")) as handle:
        doc = handle.read()
    for offset, size, field in ((0, 4, "date"), (4, 8, "open"), (12, 8, "high"), (20, 8, "low"), (28, 8, "close"),
                                (36, 8, "volume")):
        assert re.search(r"\| %d \| %d \| `%s` \|" % (offset, size, field), doc), field
