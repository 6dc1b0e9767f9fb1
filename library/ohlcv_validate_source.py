#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_validate_source
short_description: Compare ohlcv_data with a source of truth (a legacy SQLite store or a vendor CSV) per ticker and region
description:
  - For every (ticker, region) in scope, compares the row count, the first and last date and a hash
    of the values between C(public.ohlcv_data) and the source, and lists the keys that differ with
    the date ranges where they differ. Used after a migration and after a restore.
  - The database side is one aggregate query (C(md5) of the ordered rows' canonical text, per key);
    the source side computes the same text in Python. A row's canonical text is
    C(date|open|high|low|close|volume), the date as C(YYYY-MM-DD), each price as the 16 hex digits
    of its IEEE-754 double (C(float8send)), so the comparison is exact and free of any decimal
    formatting; NULL is empty. Rows are joined with a newline in byte order (C(COLLATE "C")).
  - For at most O(max_detail) differing keys, the rows of both sides are compared date by date and
    the differing dates grouped into ranges of consecutive dates present on either side, each with
    its counts of dates missing in the database, extra in the database and changed.
  - "O(source_type=sqlite): a table (O(sqlite_table)) with columns C(ticker), C(region), C(date)
    (text C(YYYY-MM-DD), a longer timestamp text is cut to its date), C(open), C(high), C(low),
    C(close) (REAL or numeric text) and C(volume) (INTEGER), the legacy store of the guide's
    validate_postgres_data.py."
  - "O(source_type=csv): the vendor CSV format the ingest module reads, plain or gzip, header
    C(ticker,region,date,open,high,low,close,volume), ISO dates. A line that cannot be read is
    counted in C(source_errors) and left out of the comparison."
  - The source file is read on the host the module runs on; it holds the source rows in memory
    (about 150 bytes a row). Reads only, so C(changed=false), and runs in check mode too.
options:
  source_path:
    description:
      - Path of the SQLite file or the CSV file (plain or gzip) on the host the module runs on.
    type: path
    required: true
  source_type:
    description:
      - Kind of source.
    type: str
    required: true
    choices: [sqlite, csv]
  sqlite_table:
    description:
      - Table of the SQLite file holding the bars.
    type: str
    default: ohlcv_data
  region:
    description:
      - Only this region (both sides). Empty compares every region.
    type: str
    default: ""
  tickers:
    description:
      - Only these tickers (both sides). Empty compares every ticker.
    type: list
    elements: str
    default: []
  start_date:
    description:
      - First date compared (ISO), both sides. Empty means no lower bound.
    type: str
    default: ""
  end_date:
    description:
      - Last date compared (ISO), both sides. Empty means no upper bound.
    type: str
    default: ""
  max_detail:
    description:
      - Differing keys whose rows are compared date by date to find the differing date ranges.
    type: int
    default: 50
  max_ranges:
    description:
      - Date ranges listed per differing key.
    type: int
    default: 20
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Compare ohlcv_data with the legacy SQLite store
  ohlcv_validate_source:
    login_db: quant_platform
    login_host: /var/run/postgresql
    source_type: sqlite
    source_path: /var/tmp/quantdb-ops/validate/legacy.db
  register: validation

- name: Compare one region and year with the vendor archive
  ohlcv_validate_source:
    login_db: quant_platform
    source_type: csv
    source_path: /var/tmp/quantdb-ops/validate/kr-2025.csv.gz
    region: KR
    start_date: "2025-01-01"
    end_date: "2025-12-31"
"""

RETURN = r"""
status:
  description: C(match) when every key in scope is identical on both sides, else C(differ).
  returned: always
  type: str
  sample: differ
counts:
  description: Keys (ticker, region) compared, matching and differing.
  returned: always
  type: dict
  sample: {compared: 200, matching: 199, differing: 1}
rows:
  description: Rows in scope on each side.
  returned: always
  type: dict
  sample: {source: 150600, database: 150600}
differences:
  description: The differing keys, by region and ticker, each with both sides' counts, first and last
    dates and hashes, the issue (C(missing_in_database), C(missing_in_source), C(rows), C(dates),
    C(values)) and, for the first O(max_detail), the differing date ranges.
  returned: always
  type: list
  elements: dict
  sample:
    - ticker: KR0007
      region: KR
      issue: values
      source: {rows: 753, first: "2023-01-02", last: "2025-12-30", md5: "5f1c..."}
      database: {rows: 753, first: "2023-01-02", last: "2025-12-30", md5: "a03e..."}
      ranges: [{from: "2024-03-05", to: "2024-03-05", dates: 1, missing_in_database: 0, extra_in_database: 0, changed: 1}]
      summary: "KR0007 KR: values (source 753 rows 2023-01-02..2025-12-30, database 753 rows 2023-01-02..2025-12-30); differs on 2024-03-05 (1 changed)"
source_errors:
  description: Source lines that could not be read (count and the first few with their reason).
  returned: always
  type: dict
  sample: {count: 0, samples: []}
seconds:
  description: Seconds the comparison took.
  returned: always
  type: float
  sample: 2.4
queries:
  description: The statements run, in order.
  returned: always
  type: list
  elements: str
  sample: ["SELECT ticker, region, count(*), min(date)::text, max(date)::text, md5(string_agg(...)) FROM public.ohlcv_data ..."]
"""

import csv
import datetime
import hashlib
import io
import sqlite3
import struct

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_files import READ_ERRORS, open_binary, unreadable
from ansible.module_utils.quantdb_pg import Stopwatch, connect, connection_argument_spec, psycopg, record_queries, sql

HEADER = ["ticker", "region", "date", "open", "high", "low", "close", "volume"]
MAX_ERROR_SAMPLES = 10

LINE_TEXT = """concat_ws('|', date::text,
    coalesce(encode(float8send(open), 'hex'), ''), coalesce(encode(float8send(high), 'hex'), ''),
    coalesce(encode(float8send(low), 'hex'), ''), coalesce(encode(float8send(close), 'hex'), ''),
    coalesce(volume::text, '')) COLLATE "C" """


class BadValue(ValueError):
    pass


def price_text(value):
    """The canonical text of a price: the 16 hex digits of its big-endian IEEE-754 double."""
    if value is None or value == "":
        return ""
    try:
        return struct.pack(">d", float(value)).hex()
    except (TypeError, ValueError):
        raise BadValue("bad price %r" % (value,))


def volume_text(value):
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if value != int(value):
            raise BadValue("bad volume %r" % (value,))
        return str(int(value))
    text = str(value).strip()
    try:
        return str(int(text))
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise BadValue("bad volume %r" % (value,))
        if number != int(number):
            raise BadValue("bad volume %r" % (value,))
        return str(int(number))


def date_text(value):
    text = str(value).strip()[:10]
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise BadValue("bad date %r" % (value,))
    return text


def canonical_line(date, open_, high, low, close, volume):
    return "|".join((date, price_text(open_), price_text(high), price_text(low), price_text(close),
                     volume_text(volume)))


def digest(lines):
    return hashlib.md5("\n".join(sorted(lines)).encode("utf-8")).hexdigest()


class Source(object):
    """The source's rows in scope: {(ticker, region): [canonical line, ...]}."""

    def __init__(self, params):
        self.params = params
        self.rows = {}
        self.count = 0
        self.errors = 0
        self.samples = []
        self.tickers = set(params["tickers"])

    def in_scope(self, ticker, region, date):
        params = self.params
        return ((not params["region"] or region == params["region"])
                and (not self.tickers or ticker in self.tickers)
                and (not params["start_date"] or date >= params["start_date"])
                and (not params["end_date"] or date <= params["end_date"]))

    def add(self, where, record):
        try:
            ticker, region = str(record[0]).strip(), str(record[1]).strip()
            date = date_text(record[2])
            if not self.in_scope(ticker, region, date):
                return
            line = canonical_line(date, *record[3:8])
        except BadValue as exc:
            self.errors += 1
            if len(self.samples) < MAX_ERROR_SAMPLES:
                self.samples.append("%s: %s" % (where, exc))
            return
        self.rows.setdefault((ticker, region), []).append(line)
        self.count += 1

    def read_sqlite(self, path, table):
        try:
            conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        except sqlite3.Error as exc:
            raise BadSource("%s: cannot open the SQLite file: %s" % (path, exc))
        try:
            quoted = '"%s"' % table.replace('"', '""')
            cursor = conn.execute("SELECT ticker, region, date, open, high, low, close, volume FROM %s" % quoted)
            for number, record in enumerate(cursor, 1):
                if len(record) != 8 or record[0] is None or record[1] is None or record[2] is None:
                    self.errors += 1
                    continue
                self.add("row %d" % number, record)
        except sqlite3.Error as exc:
            raise BadSource("%s: cannot read table %s (columns ticker, region, date, open, high, low, close, volume "
                            "expected): %s" % (path, table, exc))
        finally:
            conn.close()

    def read_csv(self, path):
        try:
            with open_binary(path) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
                reader = csv.reader(text)
                header = next(reader, None)
                if [h.strip().lower() for h in (header or [])] != HEADER:
                    raise BadSource("%s: header must be %s, got %s" % (path, ",".join(HEADER), ",".join(header or [])))
                for record in reader:
                    if len(record) != 8:
                        self.errors += 1
                        if len(self.samples) < MAX_ERROR_SAMPLES:
                            self.samples.append("line %d: %d fields" % (reader.line_num, len(record)))
                        continue
                    self.add("line %d" % reader.line_num, record)
        except UnicodeDecodeError as exc:
            raise BadSource("%s: not UTF-8 (%s)" % (path, exc))
        except csv.Error as exc:
            raise BadSource("%s: unreadable CSV (%s)" % (path, exc))
        except READ_ERRORS as exc:
            raise BadSource(str(unreadable(path, exc)))


class BadSource(Exception):
    pass


def scope_sql(params):
    where = [sql.SQL("true")]
    args = []
    if params["region"]:
        where.append(sql.SQL("region = %s"))
        args.append(params["region"])
    if params["tickers"]:
        where.append(sql.SQL("ticker = ANY(%s)"))
        args.append(list(params["tickers"]))
    if params["start_date"]:
        where.append(sql.SQL("date >= %s::date"))
        args.append(params["start_date"])
    if params["end_date"]:
        where.append(sql.SQL("date <= %s::date"))
        args.append(params["end_date"])
    return sql.SQL(" AND ").join(where), args


def database_summary(cur, params):
    where, args = scope_sql(params)
    cur.execute(sql.SQL("""SELECT ticker, region, count(*), min(date)::text, max(date)::text,
                                  md5(string_agg({line}, E'\\n' ORDER BY {line}))
                           FROM public.ohlcv_data WHERE {where} GROUP BY ticker, region""").format(
        line=sql.SQL(LINE_TEXT), where=where), args)
    return dict(((t, r), dict(rows=n, first=f, last=la, md5=h)) for t, r, n, f, la, h in cur.fetchall())


def database_lines(cur, params, ticker, region):
    where, args = scope_sql(params)
    cur.execute(sql.SQL("SELECT {line} FROM public.ohlcv_data WHERE {where} AND ticker = %s AND region = %s").format(
        line=sql.SQL(LINE_TEXT), where=where), args + [ticker, region])
    return [row[0] for row in cur.fetchall()]


def by_date(lines):
    out = {}
    for line in lines:
        out.setdefault(line[:10], []).append(line)
    return out


def date_ranges(source_lines, db_lines, limit):
    """Runs of consecutive dates (among the dates either side has) whose rows differ."""
    src, dbs = by_date(source_lines), by_date(db_lines)
    ranges = []
    current = None
    for date in sorted(set(src) | set(dbs)):
        a, b = sorted(src.get(date, [])), sorted(dbs.get(date, []))
        if a == b:
            current = None
            continue
        kind = "missing_in_database" if not b else "extra_in_database" if not a else "changed"
        if current is None:
            if len(ranges) >= limit:
                break
            current = {"from": date, "to": date, "dates": 0, "missing_in_database": 0, "extra_in_database": 0,
                       "changed": 0}
            ranges.append(current)
        current["to"] = date
        current["dates"] += 1
        current[kind] += 1
    return ranges


def describe(entry):
    """One line for a differing key: what differs and where."""
    def side(s):
        return "%d rows %s..%s" % (s["rows"], s["first"], s["last"]) if s["rows"] else "no rows"
    text = "%s %s: %s (source %s, database %s)" % (entry["ticker"], entry["region"], entry["issue"],
                                                   side(entry["source"]), side(entry["database"]))
    parts = []
    for r in entry["ranges"]:
        what = ", ".join("%d %s" % (r[k], k.replace("_", " ")) for k in
                         ("changed", "missing_in_database", "extra_in_database") if r[k])
        parts.append("%s..%s (%s)" % (r["from"], r["to"], what) if r["from"] != r["to"] else "%s (%s)" % (r["from"], what))
    return text + ("; differs on " + ", ".join(parts) if parts else "")


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        source_path=dict(type="path", required=True),
        source_type=dict(type="str", required=True, choices=["sqlite", "csv"]),
        sqlite_table=dict(type="str", default="ohlcv_data"),
        region=dict(type="str", default=""),
        tickers=dict(type="list", elements="str", default=[]),
        start_date=dict(type="str", default=""),
        end_date=dict(type="str", default=""),
        max_detail=dict(type="int", default=50),
        max_ranges=dict(type="int", default=20),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    result = dict(changed=False, status="match", counts=dict(compared=0, matching=0, differing=0),
                  rows=dict(source=0, database=0), differences=[], source_errors=dict(count=0, samples=[]),
                  seconds=0.0, queries=[])
    for name in ("start_date", "end_date"):
        if params[name]:
            try:
                datetime.date.fromisoformat(params[name])
            except ValueError:
                module.fail_json(msg="%s must be an ISO date (YYYY-MM-DD), got %r" % (name, params[name]), **result)
    watch = Stopwatch()
    source = Source(params)
    try:
        if params["source_type"] == "sqlite":
            source.read_sqlite(params["source_path"], params["sqlite_table"])
        else:
            source.read_csv(params["source_path"])
    except (BadSource, OSError) as exc:
        module.fail_json(msg=str(exc), **result)
    result["source_errors"] = dict(count=source.errors, samples=source.samples)
    result["rows"]["source"] = source.count

    conn = connect(module, autocommit=True)
    record_queries(conn, result["queries"])
    try:
        with conn.cursor() as cur:
            cur.execute("SET DateStyle = ISO")
            database = database_summary(cur, params)
            result["rows"]["database"] = sum(v["rows"] for v in database.values())
            empty = dict(rows=0, first=None, last=None, md5=None)
            for key in sorted(set(database) | set(source.rows), key=lambda k: (k[1], k[0])):
                lines = source.rows.get(key, [])
                src = dict(rows=len(lines), first=min(lines)[:10] if lines else None,
                           last=max(lines)[:10] if lines else None, md5=digest(lines) if lines else None)
                dbs = database.get(key, empty)
                result["counts"]["compared"] += 1
                if src == dbs:
                    result["counts"]["matching"] += 1
                    continue
                issue = ("missing_in_database" if not dbs["rows"] else "missing_in_source" if not src["rows"]
                         else "rows" if src["rows"] != dbs["rows"]
                         else "dates" if (src["first"], src["last"]) != (dbs["first"], dbs["last"]) else "values")
                entry = dict(ticker=key[0], region=key[1], issue=issue, source=src, database=dbs, ranges=[])
                if len(result["differences"]) < params["max_detail"]:
                    db_lines = database_lines(cur, params, key[0], key[1]) if dbs["rows"] else []
                    entry["ranges"] = date_ranges(lines, db_lines, params["max_ranges"])
                entry["summary"] = describe(entry)
                result["differences"].append(entry)
    except psycopg.Error as exc:
        conn.close()
        module.fail_json(msg="comparison failed: %s" % str(exc).strip(), **result)
    conn.close()
    result["counts"]["differing"] = len(result["differences"])
    result["status"] = "differ" if result["differences"] else "match"
    result["seconds"] = round(watch.ms / 1000.0, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
