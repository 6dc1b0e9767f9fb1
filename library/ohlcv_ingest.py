#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_ingest
short_description: Load daily OHLCV bars from CSV into ohlcv_data, validated, in one transaction
description:
  - COPYs the file (plain or gzip; columns C(ticker,region,date,open,high,low,close,volume) with a
    header) into a temporary staging table, validates it set-based, then
    C(INSERT ... ON CONFLICT (ticker, region, date) DO UPDATE) only where values differ.
    Everything, quarantine included, commits in one transaction or not at all.
  - Invalid rows (missing value, unparseable date or number, price <= 0, volume < 0, OHLC logic
    broken, duplicate key in file, unknown ticker) go to the quarantine table with file, line
    and reason, or with O(on_invalid=fail) the whole file fails and nothing is written.
  - Optionally loads ticker metadata (O(tickers_src)) and exchange session calendars
    (O(sessions_src)) first, in the same transaction.
  - Reloading the same file reports C(changed=false). Check mode does all the work and rolls
    back, so it reports the exact counts without writing.
  - Into an empty table (a backfill) it drops the two OHLCV indexes, inserts in (ticker, date)
    order and rebuilds them, which is faster and leaves rows grouped by ticker in every chunk.
options:
  src: {description: CSV of bars on the host running the module., type: path, required: true}
  file_name: {description: Name recorded in the quarantine (default the file's base name)., type: str}
  tickers_src: {description: "Optional CSV C(ticker,region,exchange,name,currency,sector) upserted into tickers.", type: path}
  sessions_src: {description: "Optional CSV C(exchange,session) of trading sessions added to exchange_sessions.", type: path}
  on_invalid: {description: quarantine the invalid rows, or fail the file writing nothing., type: str, choices: [quarantine, fail], default: quarantine}
  register_tickers: {description: Register unknown tickers (exchange from O(region_exchanges)) instead of refusing their rows., type: bool, default: false}
  region_exchanges: {description: Exchange (MIC) of each region for auto-registration., type: dict, default: {KR: XKRX, US: XNYS}}
  bulk_mode: {description: "auto: drop and rebuild indexes when ohlcv_data is empty; never: always row-by-row upsert.", type: str, choices: [auto, never], default: auto}
  max_samples: {description: How many invalid rows to return as samples., type: int, default: 20}
  work_mem: {description: "work_mem for this load's sorts and hashes (duplicate check, ordered insert).", type: str, default: 256MB}
  maintenance_work_mem: {description: maintenance_work_mem for the index rebuild of a backfill., type: str, default: 512MB}
  temp_buffers: {description: temp_buffers for the staging tables (kept in memory when they fit)., type: str, default: 256MB}
  prewarm_recent:
    description:
      - After a bulk backfill, load the chunks (and their indexes) holding this much of the most
        recent data into shared_buffers with pg_prewarm: a backfill writes through a small ring
        buffer, so without it the first reads of recent bars come from disk. Empty to skip.
      - Needs the pg_prewarm extension in the database (the schema role creates it); skipped
        with a warning when it is missing. Not counted in C(seconds) and C(rows_per_s).
    type: str
    default: 2 years
notes:
  - Connection options (login_host, login_port, login_user, login_password, login_db, ssl_mode) are
    those of every quantdb-ops module. Needs PostgreSQL 16 or later (pg_input_is_valid).
author: quantdb-ops
"""

EXAMPLES = r"""
- name: Load today's bars
  ohlcv_ingest:
    login_db: quant_platform
    src: /var/tmp/quantdb-ops/kr_2025-10-31.csv.gz
    register_tickers: true
  register: load
"""

RETURN = r"""
rows_read: {description: Data rows in the file., returned: always, type: int}
new: {description: Bars inserted., returned: always, type: int}
updated: {description: Bars whose values changed., returned: always, type: int}
unchanged: {description: Valid bars already present with the same values., returned: always, type: int}
quarantined: {description: Invalid rows in this file (newly quarantined ones counted in quarantined_new)., returned: always, type: int}
quarantined_new: {description: Invalid rows not quarantined before., returned: always, type: int}
reasons: {description: Invalid row count per reason., returned: always, type: dict}
samples: {description: "First invalid rows: line, reason, ticker, date.", returned: always, type: list}
tickers_registered: {description: Tickers added or updated., returned: always, type: int}
sessions_added: {description: Exchange sessions added., returned: always, type: int}
bulk: {description: Whether the index drop/rebuild backfill path ran., returned: always, type: bool}
prewarmed_blocks: {description: Blocks pg_prewarm loaded after a bulk backfill (0 when it did not run)., returned: always, type: int}
prewarm_seconds: {description: Seconds the prewarm took., returned: always, type: float}
seconds: {description: Wall time of the load., returned: always, type: float}
rows_per_s: {description: rows_read / seconds., returned: always, type: float}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_files import copy_file, file_sha256, read_header
from ansible.module_utils.quantdb_pg import Stopwatch, connect, connection_argument_spec, psycopg

BAR_COLUMNS = ["ticker", "region", "date", "open", "high", "low", "close", "volume"]
TICKER_COLUMNS = ["ticker", "region", "exchange", "name", "currency", "sector"]
SESSION_COLUMNS = ["exchange", "session"]
PRICE = ("open", "high", "low", "close")

TYPED_STAGE = """
CREATE TEMP TABLE qdb_stage (
    line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2), ticker text, region text, date date,
    open double precision, high double precision, low double precision, close double precision,
    volume bigint) ON COMMIT DROP"""
TEXT_STAGE = """
CREATE TEMP TABLE qdb_stage_text (
    line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2), ticker text, region text, date text,
    open text, high text, low text, close text, volume text) ON COMMIT DROP"""
COPY_BARS = "COPY %s (ticker, region, date, open, high, low, close, volume) FROM STDIN WITH (FORMAT csv, HEADER true)"

# Rows the text path could not type become reasons; the rest are cast into qdb_stage.
TEXT_TO_TYPED = """
CREATE TEMP TABLE qdb_unparsed ON COMMIT DROP AS
SELECT line, ticker, region, date, open, high, low, close, volume,
       CASE WHEN coalesce(ticker, '') = '' OR coalesce(region, '') = '' OR coalesce(date, '') = ''
                 OR coalesce(open, '') = '' OR coalesce(high, '') = '' OR coalesce(low, '') = ''
                 OR coalesce(close, '') = '' OR coalesce(volume, '') = '' THEN 'missing value'
            WHEN NOT pg_input_is_valid(date, 'date') THEN 'unparseable date'
            WHEN NOT (pg_input_is_valid(open, 'float8') AND pg_input_is_valid(high, 'float8')
                      AND pg_input_is_valid(low, 'float8') AND pg_input_is_valid(close, 'float8')
                      AND pg_input_is_valid(volume, 'int8')) THEN 'unparseable number'
       END AS reason
FROM qdb_stage_text;
INSERT INTO qdb_stage (line, ticker, region, date, open, high, low, close, volume)
OVERRIDING SYSTEM VALUE SELECT line, ticker, region, date::date, open::float8, high::float8, low::float8, close::float8, volume::int8
FROM qdb_unparsed WHERE reason IS NULL ORDER BY line"""

CLASSIFY = """
CREATE TEMP TABLE qdb_invalid (line bigint PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP;
INSERT INTO qdb_invalid
SELECT line, CASE
    WHEN ticker IS NULL OR region IS NULL OR date IS NULL OR open IS NULL OR high IS NULL
         OR low IS NULL OR close IS NULL OR volume IS NULL THEN 'missing value'
    WHEN 'NaN' IN (open, high, low, close) OR abs(open) = 'Infinity' OR abs(high) = 'Infinity'
         OR abs(low) = 'Infinity' OR abs(close) = 'Infinity' THEN 'unparseable number'
    WHEN least(open, high, low, close) <= 0 THEN 'price <= 0'
    WHEN volume < 0 THEN 'volume < 0'
    WHEN high < greatest(open, close) OR low > least(open, close) OR high < low THEN 'OHLC logic broken'
    WHEN region !~ '^[A-Z]{2}$' THEN 'bad region'
  END
FROM qdb_stage
WHERE ticker IS NULL OR region IS NULL OR date IS NULL OR open IS NULL OR high IS NULL OR low IS NULL
   OR close IS NULL OR volume IS NULL OR 'NaN' IN (open, high, low, close)
   OR abs(open) = 'Infinity' OR abs(high) = 'Infinity' OR abs(low) = 'Infinity' OR abs(close) = 'Infinity'
   OR least(open, high, low, close) <= 0 OR volume < 0
   OR high < greatest(open, close) OR low > least(open, close) OR high < low OR region !~ '^[A-Z]{2}$'"""

DUPLICATES_IN_FILE = """
INSERT INTO qdb_invalid
SELECT line, 'duplicate key in file' FROM (
    SELECT line, row_number() OVER (PARTITION BY ticker, region, date ORDER BY line) AS rn
    FROM qdb_stage s WHERE NOT EXISTS (SELECT 1 FROM qdb_invalid i WHERE i.line = s.line)) d
WHERE rn > 1"""

HAS_DUPLICATES = """
SELECT EXISTS (SELECT 1 FROM qdb_stage GROUP BY ticker, region, date HAVING count(*) > 1)"""

UNKNOWN_TICKERS = """
SELECT k.ticker, k.region FROM (SELECT DISTINCT ticker, region FROM qdb_stage
    WHERE ticker IS NOT NULL AND region ~ '^[A-Z]{2}$') k
WHERE NOT EXISTS (SELECT 1 FROM public.tickers t WHERE t.ticker = k.ticker AND t.region = k.region)"""

UPSERT = """
WITH up AS (
    INSERT INTO public.ohlcv_data AS t (ticker, region, date, open, high, low, close, volume)
    SELECT ticker, region, date, open, high, low, close, volume FROM qdb_stage s
    WHERE NOT EXISTS (SELECT 1 FROM qdb_invalid i WHERE i.line = s.line)
    ORDER BY ticker, region, date
    ON CONFLICT (ticker, region, date) DO UPDATE
       SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
           close = EXCLUDED.close, volume = EXCLUDED.volume
     WHERE (t.open, t.high, t.low, t.close, t.volume)
           IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
    RETURNING (xmax = 0) AS inserted)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"""

BULK_INSERT = """
INSERT INTO public.ohlcv_data (ticker, region, date, open, high, low, close, volume)
SELECT ticker, region, date, open, high, low, close, volume FROM qdb_stage s
WHERE NOT EXISTS (SELECT 1 FROM qdb_invalid i WHERE i.line = s.line)
ORDER BY ticker, region, date"""


def load_reference(cur, src, columns, table, conflict, update):
    header = read_header(src)
    if header != columns:
        raise ValueError("%s: header must be %s, got %s" % (src, ",".join(columns), ",".join(header)))
    cur.execute("CREATE TEMP TABLE qdb_ref (LIKE public.%s INCLUDING DEFAULTS) ON COMMIT DROP" % table)
    copy_file(cur, "COPY qdb_ref (%s) FROM STDIN WITH (FORMAT csv, HEADER true)" % ", ".join(columns), src)
    set_clause = ", ".join("%s = EXCLUDED.%s" % (c, c) for c in update)
    where = " OR ".join("t.%s IS DISTINCT FROM EXCLUDED.%s" % (c, c) for c in update)
    action = ("DO UPDATE SET %s WHERE %s" % (set_clause, where)) if update else "DO NOTHING"
    cur.execute("INSERT INTO public.%s AS t (%s) SELECT %s FROM qdb_ref ON CONFLICT (%s) %s"
                % (table, ", ".join(columns), ", ".join(columns), conflict, action))
    count = cur.rowcount
    cur.execute("DROP TABLE qdb_ref")
    return count


def stage_bars(cur, src):
    """COPY into the typed stage; if a value does not parse, redo it through text staging
    so the bad rows can be quarantined with a reason. Returns (typed_ok, unparsed rows)."""
    cur.execute(TYPED_STAGE)
    try:
        with cur.connection.transaction():
            copy_file(cur, COPY_BARS % "qdb_stage", src)
        return True
    except psycopg.errors.DataError:
        pass  # e.g. "invalid input syntax for type double precision": take the slow path
    cur.execute(TEXT_STAGE)
    copy_file(cur, COPY_BARS % "qdb_stage_text", src)
    cur.execute(TEXT_TO_TYPED)
    return False


# Recent chunks (relative to the newest bar) and every index on them, into shared_buffers.
PREWARM = """
WITH recent AS (
    SELECT c AS rel FROM show_chunks('public.ohlcv_data',
        newer_than => ((SELECT max(date) FROM public.ohlcv_data) - %s::interval)::date) c
)
SELECT coalesce(sum(pg_prewarm(rel)), 0) FROM (
    SELECT rel FROM recent
    UNION ALL
    SELECT i.indexrelid::regclass FROM pg_index i JOIN recent r ON i.indrelid = r.rel
) rels"""


def write_bars(cur, bulk, result):
    """Insert the valid staged bars. Into an empty table: drop the indexes, insert in
    (ticker, date) order, rebuild them; otherwise upsert only what differs."""
    result["bulk"] = bulk
    if bulk:
        cur.execute("DROP INDEX public.idx_ohlcv_ticker_region_date")
        cur.execute("DROP INDEX IF EXISTS public.ohlcv_data_date_idx")
        cur.execute(BULK_INSERT)
        result["new"], result["updated"] = cur.rowcount, 0
        cur.execute("CREATE UNIQUE INDEX idx_ohlcv_ticker_region_date ON public.ohlcv_data (ticker, region, date DESC)")
        cur.execute("CREATE INDEX ohlcv_data_date_idx ON public.ohlcv_data (date DESC)")
    else:
        cur.execute(UPSERT)
        result["new"], result["updated"] = cur.fetchone()


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        src=dict(type="path", required=True),
        file_name=dict(type="str"),
        tickers_src=dict(type="path"),
        sessions_src=dict(type="path"),
        on_invalid=dict(type="str", choices=["quarantine", "fail"], default="quarantine"),
        register_tickers=dict(type="bool", default=False),
        region_exchanges=dict(type="dict", default={"KR": "XKRX", "US": "XNYS"}),
        bulk_mode=dict(type="str", choices=["auto", "never"], default="auto"),
        max_samples=dict(type="int", default=20),
        work_mem=dict(type="str", default="256MB"),
        maintenance_work_mem=dict(type="str", default="512MB"),
        temp_buffers=dict(type="str", default="256MB"),
        prewarm_recent=dict(type="str", default="2 years"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    for key in ("src", "tickers_src", "sessions_src"):
        if p[key] and not os.path.isfile(p[key]):
            module.fail_json(msg="%s: no such file %s" % (key, p[key]))
    header = read_header(p["src"])
    if header != BAR_COLUMNS:
        module.fail_json(msg="%s: header must be %s, got %s" % (p["src"], ",".join(BAR_COLUMNS), ",".join(header)))
    file_name = p["file_name"] or os.path.basename(p["src"])
    sha = file_sha256(p["src"])
    watch = Stopwatch()
    result = dict(changed=False, file=file_name, sha256=sha, new=0, updated=0, unchanged=0, quarantined=0,
                  quarantined_new=0, reasons={}, samples=[], tickers_registered=0, sessions_added=0, bulk=False,
                  prewarmed_blocks=0, prewarm_seconds=0.0)

    conn = connect(module)
    try:
        with conn.cursor() as cur:
            # Session settings for one big load; temp_buffers must precede the first temp table.
            for name in ("temp_buffers", "work_mem", "maintenance_work_mem"):
                cur.execute("SELECT set_config(%s, %s, false)", (name, p[name]))
            if p["tickers_src"]:
                result["tickers_registered"] = load_reference(
                    cur, p["tickers_src"], ["ticker", "region", "exchange", "name", "currency", "sector"],
                    "tickers", "ticker, region", ["exchange", "name", "currency", "sector"])
            if p["sessions_src"]:
                result["sessions_added"] = load_reference(cur, p["sessions_src"], SESSION_COLUMNS,
                                                          "exchange_sessions", "exchange, session", [])
            try:
                typed = stage_bars(cur, p["src"])
            except psycopg.Error as exc:
                module.fail_json(msg="%s: cannot read as CSV: %s" % (file_name, str(exc).strip()), **result)
            result["typed_copy"] = typed
            cur.execute("SELECT count(*) FROM qdb_stage")
            result["rows_read"] = cur.fetchone()[0]
            cur.execute(CLASSIFY)
            if not typed:
                cur.execute("INSERT INTO qdb_invalid SELECT line, reason FROM qdb_unparsed WHERE reason IS NOT NULL")
                result["rows_read"] += cur.rowcount
            cur.execute(UNKNOWN_TICKERS)
            unknown = cur.fetchall()
            if unknown and p["register_tickers"]:
                known_regions = [(t, r, p["region_exchanges"][r]) for t, r in unknown if r in p["region_exchanges"]]
                cur.executemany("INSERT INTO public.tickers (ticker, region, exchange) VALUES (%s, %s, %s)", known_regions)
                result["tickers_registered"] += len(known_regions)
                unknown = [(t, r) for t, r in unknown if r not in p["region_exchanges"]]
            if unknown:
                cur.execute("CREATE TEMP TABLE qdb_unknown (ticker text, region text) ON COMMIT DROP")
                cur.executemany("INSERT INTO qdb_unknown VALUES (%s, %s)", unknown)
                cur.execute("""INSERT INTO qdb_invalid SELECT s.line, 'unknown ticker' FROM qdb_stage s
                               JOIN qdb_unknown u USING (ticker, region)
                               ON CONFLICT (line) DO NOTHING""")

            # Duplicate keys inside the file: later lines are invalid. An upsert looks for them
            # first (an identical repeat would otherwise pass unnoticed); a backfill skips that
            # scan of the whole file, because its unique index build fails on any repeat, and
            # only then marks them and writes again.
            cur.execute("SELECT NOT EXISTS (SELECT 1 FROM public.ohlcv_data)")
            bulk = cur.fetchone()[0] and p["bulk_mode"] == "auto" and not module.check_mode
            if not bulk:
                cur.execute(HAS_DUPLICATES)
                if cur.fetchone()[0]:
                    cur.execute(DUPLICATES_IN_FILE)
            try:
                with conn.transaction():
                    write_bars(cur, bulk, result)
            except (psycopg.errors.UniqueViolation, psycopg.errors.CardinalityViolation):
                cur.execute(DUPLICATES_IN_FILE)
                write_bars(cur, bulk, result)

            cur.execute("SELECT reason, count(*) FROM qdb_invalid GROUP BY reason ORDER BY reason")
            result["reasons"] = dict(cur.fetchall())
            result["quarantined"] = sum(result["reasons"].values())
            if result["quarantined"]:
                # The text stage holds every row as written; the typed one only rows that parsed.
                source = "qdb_stage" if typed else "qdb_unparsed"
                cur.execute("""SELECT i.line, i.reason, s.ticker, s.date::text FROM qdb_invalid i
                               JOIN %s s USING (line) ORDER BY i.line LIMIT %%s""" % source, (p["max_samples"],))
                result["samples"] = [dict(line=r[0], reason=r[1], ticker=r[2], date=r[3]) for r in cur.fetchall()]
                if p["on_invalid"] == "fail":
                    conn.rollback()
                    module.fail_json(msg="%s: %d invalid row(s) (%s); nothing was written" % (
                        file_name, result["quarantined"],
                        ", ".join("%s: %d" % kv for kv in sorted(result["reasons"].items()))), **result)
                cur.execute("""INSERT INTO public.ohlcv_quarantine
                                   (file_name, file_sha256, line, reason, ticker, region, date, open, high, low, close, volume)
                               SELECT %%s, %%s, i.line, i.reason, s.ticker, s.region, s.date::text, s.open::text,
                                      s.high::text, s.low::text, s.close::text, s.volume::text
                               FROM qdb_invalid i JOIN %s s USING (line)
                               ON CONFLICT (file_sha256, line) DO NOTHING""" % source, (file_name, sha))
                result["quarantined_new"] = cur.rowcount

        result["unchanged"] = result["rows_read"] - result["quarantined"] - result["new"] - result["updated"]
        result["changed"] = bool(result["new"] or result["updated"] or result["quarantined_new"]
                                 or result["tickers_registered"] or result["sessions_added"])
        if module.check_mode:
            conn.rollback()
        else:
            conn.commit()
            if result["bulk"]:
                conn.autocommit = True
                conn.execute("ANALYZE public.ohlcv_data")
    except ValueError as exc:
        conn.rollback()
        module.fail_json(msg=str(exc), **result)
    except psycopg.Error as exc:
        conn.rollback()
        module.fail_json(msg="%s: load failed, nothing written: %s" % (file_name, str(exc).strip()), **result)
    finally:
        conn.close()
    result["seconds"] = round(watch.ms / 1000.0, 3)
    result["rows_per_s"] = round(result["rows_read"] / result["seconds"], 1) if result["seconds"] else None
    if result["bulk"] and p["prewarm_recent"]:
        prewarm(module, p, result)
    module.exit_json(**result)


def prewarm(module, p, result):
    """Load the recent chunks of a fresh backfill and their indexes into shared_buffers."""
    watch = Stopwatch()
    conn = connect(module, autocommit=True)
    try:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'").fetchone():
            module.warn("prewarm_recent: the pg_prewarm extension is not installed in %s; skipped" % p["login_db"])
            return
        row = conn.execute(PREWARM, (p["prewarm_recent"],)).fetchone()
        result["prewarmed_blocks"] = int(row[0])
    except psycopg.Error as exc:
        module.warn("prewarm_recent: skipped: %s" % str(exc).strip())
    finally:
        conn.close()
        result["prewarm_seconds"] = round(watch.ms / 1000.0, 3)


if __name__ == "__main__":
    main()
