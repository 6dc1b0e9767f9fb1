"""Read daily bars from quantdb-ops' database the fast way: packed server-side, decoded in one call.

The schema's read functions (migration 0009, docs/reading.md) return each ticker's bars as one
bytea of fixed-width big-endian records, oldest first; numpy.frombuffer turns each into an array
without decoding a value at a time. Depends on psycopg (3) and numpy; pandas only for as_frame.

    import psycopg, quantdb_reader
    with psycopg.connect("host=... dbname=quant_platform user=reporting_user") as conn:
        kr = quantdb_reader.bars(conn, ["005930", "000660"], "KR", start="2024-01-01", end="2024-12-31")
        kr["005930"]["close"]          # float64 array; kr["005930"]["date"] is datetime64[D]
        df = quantdb_reader.bars(conn, ["AAPL", "MSFT"], "US", as_frame=True)

Bounds: start and end are both inclusive; None leaves that side open. Every requested ticker is
a key of the result, in the order asked (duplicates once); one without bars in the range gets an
empty array. A NULL price reads as NaN and a NULL volume as -1 (only possible in an adopted
table whose CHECK constraints stay NOT VALID; the constraints refuse both).
"""
import datetime

import numpy

__all__ = ["BAR_RECORD", "CLOSE_RECORD", "BARS", "CLOSES", "bars", "closes", "decode_bars", "decode_closes"]

# The records as the server packs them (docs/reading.md: byte offsets): big-endian, the date as
# days since 2000-01-01 (PostgreSQL's date_send), IEEE 754 float8 prices, int8 volume.
BAR_RECORD = numpy.dtype([("date", ">i4"), ("open", ">f8"), ("high", ">f8"), ("low", ">f8"), ("close", ">f8"),
                          ("volume", ">i8")])
CLOSE_RECORD = numpy.dtype([("date", ">i4"), ("close", ">f8")])
# What the reader returns: the same fields in native byte order, the date as datetime64[D].
BARS = numpy.dtype([("date", "datetime64[D]"), ("open", "f8"), ("high", "f8"), ("low", "f8"), ("close", "f8"),
                    ("volume", "i8")])
CLOSES = numpy.dtype([("date", "datetime64[D]"), ("close", "f8")])
# 2000-01-01 in days since 1970-01-01 (numpy's epoch).
PG_EPOCH_DAYS = 10957

SQL_ONE = "SELECT public.ohlcv_packed(%s, %s, %s::date, %s::date)"
SQL_MANY = "SELECT ticker, bars FROM public.ohlcv_packed_many(%s::text[], %s, %s::date, %s::date)"
SQL_CLOSES = "SELECT ticker, closes FROM public.ohlcv_closes_packed(%s::text[], %s, %s::date, %s::date)"


def _decode(packed, record, out_dtype):
    raw = numpy.frombuffer(packed or b"", record)    # one call; ValueError if not whole records
    out = numpy.empty(len(raw), out_dtype)
    out["date"] = (raw["date"].astype("i8") + PG_EPOCH_DAYS).view("datetime64[D]")
    for name in out_dtype.names[1:]:
        out[name] = raw[name]
    return out


def decode_bars(packed):
    """One ohlcv_packed / ohlcv_packed_many bytea -> structured array of BARS, oldest first."""
    return _decode(packed, BAR_RECORD, BARS)


def decode_closes(packed):
    """One ohlcv_closes_packed bytea -> structured array of CLOSES, oldest first."""
    return _decode(packed, CLOSE_RECORD, CLOSES)


def _day(value):
    if value is None or isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, numpy.datetime64):
        return value.astype("datetime64[D]").item()
    return datetime.date.fromisoformat(str(value))


def _tickers(tickers):
    if isinstance(tickers, str):
        return [tickers]
    return list(dict.fromkeys(tickers))


def _cursor(conn):
    """A binary cursor where the driver has one (psycopg 3: bytea arrives as bytes, no hex)."""
    try:
        return conn.cursor(binary=True)
    except TypeError:
        return conn.cursor()


def _frame(arrays, dtype):
    import pandas   # pylint: disable=import-outside-toplevel  (optional: only for as_frame)
    columns = {"ticker": numpy.concatenate([numpy.full(len(a), t, dtype=object) for t, a in arrays.items()])
               if arrays else numpy.empty(0, dtype=object)}
    for name in dtype.names:
        columns[name] = numpy.concatenate([a[name] for a in arrays.values()]) if arrays else numpy.empty(0, dtype[name])
    return pandas.DataFrame(columns)


def bars(conn, tickers, region, start=None, end=None, as_frame=False):
    """Daily bars of `tickers` (a list, or one ticker as a str) of `region`, start..end inclusive.

    Returns {ticker: structured array (date datetime64[D], open, high, low, close float64,
    volume int64), oldest first} with every requested ticker, in the order asked; with
    as_frame=True a pandas DataFrame with columns ticker, date, open, high, low, close, volume in
    the same order (ticker as asked, then date)."""
    names = _tickers(tickers)
    args = (region, _day(start), _day(end))
    cur = _cursor(conn)
    try:
        if len(names) == 1:
            cur.execute(SQL_ONE, (names[0],) + args)
            found = {names[0]: cur.fetchone()[0]}
        else:
            cur.execute(SQL_MANY, (names,) + args)
            found = dict(cur.fetchall())
    finally:
        cur.close()
    arrays = {t: decode_bars(found.get(t)) for t in names}
    return _frame(arrays, BARS) if as_frame else arrays


def closes(conn, tickers, region, start=None, end=None, as_frame=False):
    """Closes of `tickers` of `region`, start..end inclusive: {ticker: structured array (date
    datetime64[D], close float64), oldest first}, every requested ticker in the order asked; with
    as_frame=True a DataFrame with columns ticker, date, close."""
    names = _tickers(tickers)
    cur = _cursor(conn)
    try:
        cur.execute(SQL_CLOSES, (names, region, _day(start), _day(end)))
        found = dict(cur.fetchall())
    finally:
        cur.close()
    arrays = {t: decode_closes(found.get(t)) for t in names}
    return _frame(arrays, CLOSES) if as_frame else arrays
