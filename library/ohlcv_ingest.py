#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_ingest
short_description: Load daily OHLCV bars from CSV into ohlcv_data, strictly validated, in one transaction
description:
  - Stages the file (plain or gzip; columns C(ticker,region,date,open,high,low,close,volume) with
    that header) in a temporary table, validates it set-based, then upserts on the key
    (ticker, region, date) with C(INSERT ... ON CONFLICT DO UPDATE) only where values differ.
    Everything, quarantine included, commits in one transaction or not at all.
  - Strict input. Dates only in O(date_format) (ISO C(YYYY-MM-DD) by default), never guessed
    (C(today), C(epoch), C(01/02/2024) or C(20240105) are C(bad_date_format) unless the format
    says so). Numbers only as plain decimals (optional sign, digits, point, exponent; volume a
    whole number), never hex, underscores, C(NaN), C(Infinity) or whitespace. Prices within
    O(min_price)..O(max_price), volume within 0..O(max_volume), tickers matching
    O(ticker_pattern), regions two capital letters.
  - Invalid rows go to the quarantine table with file, line and one reason code, the first that
    applies in this order, C(bad_encoding), C(bad_row) (not 8 fields, a stray or unterminated
    quote), C(missing_value), C(bad_date_format), C(bad_number), C(bad_ticker), C(bad_region),
    C(non_positive_price), C(price_out_of_range), C(negative_volume), C(volume_out_of_range),
    C(ohlc_logic), C(duplicate_in_file) (later lines of a repeated key), C(unknown_ticker). With
    O(on_invalid=fail) any invalid row fails the file before anything is written.
  - Optionally loads ticker metadata (O(tickers_src)) and exchange session calendars
    (O(sessions_src)) first, in the same transaction; a ticker there that does not match
    O(ticker_pattern) fails the load naming its line.
  - Reloading the same file reports C(changed=false). Check mode does all the work and rolls
    back, so it reports the exact counts without writing.
  - Into an empty table (a backfill) it drops the two OHLCV indexes, inserts in (ticker, date)
    order and rebuilds them, which is faster and leaves rows grouped by ticker in every chunk.
  - A truncated or corrupt gzip, a lost connection or any database error fails with a message
    naming the file and saying that nothing was written. A table lock not granted within
    O(lock_timeout) (another session holding C(ohlcv_data), say) fails the same way, naming the
    lock timeout and the session holding the lock (pid, application_name, mode). A failing ANALYZE after the commit is a
    warning, the load stays committed.
options:
  src:
    description:
      - CSV of bars on the host running the module, plain or gzip.
    type: path
    required: true
  file_name:
    description:
      - Name recorded in the quarantine (default the file's base name).
    type: str
  tickers_src:
    description:
      - Optional CSV C(ticker,region,exchange,name,currency,sector) upserted into tickers.
    type: path
  sessions_src:
    description:
      - Optional CSV C(exchange,session) of trading sessions added to exchange_sessions.
    type: path
  on_invalid:
    description:
      - C(quarantine) the invalid rows and load the rest, or C(fail) the file writing nothing.
    type: str
    choices: [quarantine, fail]
    default: quarantine
  register_tickers:
    description:
      - Register unknown tickers (exchange from O(region_exchanges)) instead of refusing their rows.
      - Only tickers matching O(ticker_pattern) in a valid region are registered.
    type: bool
    default: false
  region_exchanges:
    description:
      - Exchange (MIC) of each region, for O(register_tickers). The default is the project's one
        region map (C(module_utils/quantdb_ohlcv.py)), also used by the quality audit.
  date_format:
    description:
      - The file's date format, strftime-style. C(%Y) is 4 digits, C(%m) and C(%d) 2 digits
        (zero-padded), C(%%) a percent sign, any other character itself; C(%Y), C(%m) and C(%d)
        must each appear once. For example C(%d/%m/%Y) or C(%Y%m%d). Other directives are refused.
    type: str
    default: "%Y-%m-%d"
  ticker_pattern:
    description:
      - PostgreSQL regular expression every ticker must match, in bar rows (else C(bad_ticker)),
        in O(tickers_src) (else the load fails naming the line) and for O(register_tickers).
    type: str
    default: "^[A-Za-z0-9.-]{1,20}$"
  min_price:
    description:
      - Smallest price accepted; a positive price below it is C(price_out_of_range).
    type: float
    default: 0.000001
  max_price:
    description:
      - Largest price accepted; above it is C(price_out_of_range).
    type: float
    default: 1000000000.0
  max_volume:
    description:
      - Largest volume accepted; above it is C(volume_out_of_range).
    type: int
    default: 1000000000000000
  bulk_mode:
    description:
      - C(auto) drops and rebuilds the indexes when ohlcv_data is empty, the file has valid rows
        and the login role may (it owns the table, or is a member of its owner); C(never) always upserts.
    type: str
    choices: [auto, never]
    default: auto
  max_samples:
    description:
      - How many invalid rows to return as samples.
    type: int
    default: 20
  work_mem:
    description:
      - work_mem for this load's sorts and hashes (duplicate check, ordered insert).
    type: str
    default: 256MB
  maintenance_work_mem:
    description:
      - maintenance_work_mem for the index rebuild of a backfill.
    type: str
    default: 512MB
  temp_buffers:
    description:
      - temp_buffers for the staging tables (kept in memory when they fit).
    type: str
    default: 256MB
  prewarm_recent:
    description:
      - After a bulk backfill, load the chunks (and their indexes) holding this much of the most
        recent data into shared_buffers with pg_prewarm. A backfill writes through a small ring
        buffer, so without it the first reads of recent bars come from disk. Empty to skip.
      - Needs the pg_prewarm extension in the database (the schema role creates it); skipped
        with a warning when it is missing. Not counted in RV(seconds) and RV(rows_per_s).
    type: str
    default: 2 years
notes:
  - Needs PostgreSQL 16 or later (pg_input_is_valid).
  - Speed. A file whose lines hold only ASCII letters, digits and C(. , + -) (and the literal
    characters of O(date_format)), with plain prices and integer volumes, is staged by a typed
    COPY; other lines are checked one by one and typed by the strict path. See docs/ingest.md.
  - What check mode costs. It stages and classifies the whole file and runs the upsert inside the
    transaction, then rolls back, so it takes about as long as a real load, holds the row locks of
    the bars it would change until the rollback, and writes WAL for what it rolls back. It never
    takes the bulk path (no index is dropped).
extends_documentation_fragment: [quantdb_pg, quantdb_ohlcv.region_exchanges]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Load today's bars
  ohlcv_ingest:
    login_db: quant_platform
    login_host: /var/run/postgresql
    src: /var/tmp/quantdb-ops/kr_2025-10-31.csv.gz
    register_tickers: true
  register: load

- name: Load a vendor file with day-first dates, failing it on any invalid row
  ohlcv_ingest:
    login_db: quant_platform
    src: /var/tmp/quantdb-ops/vendor.csv
    date_format: "%d/%m/%Y"
    ticker_pattern: "^[A-Z0-9]{1,12}$"
    max_price: 100000000
    on_invalid: fail
"""

RETURN = r"""
file:
  description: Name recorded in the quarantine.
  returned: always
  type: str
  sample: kr_2025-10-31.csv.gz
sha256:
  description: SHA-256 of the file as stored (compressed, for a gzip).
  returned: always
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
rows_read:
  description: Data lines in the file (the header not counted).
  returned: always
  type: int
  sample: 150600
new:
  description: Bars inserted (0 when the load failed or with on_invalid=fail and an invalid row).
  returned: always
  type: int
  sample: 150590
updated:
  description: Bars whose values changed.
  returned: always
  type: int
  sample: 0
unchanged:
  description: Valid bars already present with the same values.
  returned: always
  type: int
  sample: 0
quarantined:
  description: Invalid rows in this file (newly quarantined ones counted in quarantined_new).
  returned: always
  type: int
  sample: 10
quarantined_new:
  description: Invalid rows not quarantined before.
  returned: always
  type: int
  sample: 10
reasons:
  description: Invalid row count per reason code.
  returned: always
  type: dict
  sample:
    bad_date_format: 4
    ohlc_logic: 6
samples:
  description: First invalid rows (up to max_samples) with line, reason, ticker and date as written.
  returned: always
  type: list
  elements: dict
  sample:
    - line: 7
      reason: bad_date_format
      ticker: AAPL
      date: today
tickers_registered:
  description: Tickers added or updated.
  returned: always
  type: int
  sample: 0
sessions_added:
  description: Exchange sessions added.
  returned: always
  type: int
  sample: 0
bulk:
  description: Whether the index drop/rebuild backfill path ran.
  returned: always
  type: bool
  sample: false
staging:
  description: C(typed) (the typed COPY, lines needing it typed by the strict path) or C(text)
    (every row staged as text and typed by the strict path).
  returned: always
  type: str
  sample: typed
strict_rows:
  description: Rows typed by the strict (slower, per-value) path.
  returned: always
  type: int
  sample: 0
analyzed:
  description: Whether ANALYZE ran after a committed bulk backfill (false with a warning when it failed).
  returned: always
  type: bool
  sample: true
prewarmed_blocks:
  description: Blocks pg_prewarm loaded after a bulk backfill (0 when it did not run).
  returned: always
  type: int
  sample: 17123
prewarm_seconds:
  description: Seconds the prewarm took.
  returned: always
  type: float
  sample: 0.07
seconds:
  description: Wall time of the load.
  returned: always
  type: float
  sample: 1.9
rows_per_s:
  description: rows_read / seconds.
  returned: always
  type: float
  sample: 79000.0
queries:
  description:
    - The statements the load ran, in order (each line of a statement stripped and joined with
      a space; parameters not shown), as community.postgresql modules return them. In check
      mode, the statements it ran before rolling back. Run with C(-v) to see them.
  returned: always
  type: list
  elements: str
  sample:
    - SELECT set_config(%s, %s, false)
    - CREATE TEMP TABLE qdb_stage (line bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 2), ...) ON COMMIT DROP
    - COPY qdb_stage (ticker, region, date, open, high, low, close, volume) FROM STDIN WITH (FORMAT csv, HEADER true)
    - WITH up AS ( INSERT INTO public.ohlcv_data AS t (ticker, region, date, open, high, low, close, volume) ...
    - INSERT INTO public.ohlcv_quarantine (file_name, file_sha256, line, reason, ...) ... ON CONFLICT (file_sha256, line) DO NOTHING
"""

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_files import (
    BarStream, TooManySuspects, UnreadableFile, copy_file, copy_to_table, file_sha256, format_literals, read_header,
    strftime_to_regex)
from ansible.module_utils.quantdb_ohlcv import (
    DATE_INDEX, UNIQUE_INDEX, date_index_ddl, drop_index_ddl, prewarm_recent, region_exchanges, unique_index_ddl)
from ansible.module_utils.quantdb_pg import (
    Stopwatch, backend_pid, connect, connection_argument_spec, is_lock_timeout, lock_holders, lock_timeout_message,
    psycopg, record_queries, transaction)

BAR_COLUMNS = ["ticker", "region", "date", "open", "high", "low", "close", "volume"]
TICKER_COLUMNS = ["ticker", "region", "exchange", "name", "currency", "sector"]
SESSION_COLUMNS = ["exchange", "session"]

# Reason codes, in the order they are tried: a row gets the first that applies. Stored in the
# staging tables as this 1-based number, so "first wins" is least().
REASONS = ("bad_encoding", "bad_row", "missing_value", "bad_date_format", "bad_number", "bad_ticker", "bad_region",
           "non_positive_price", "price_out_of_range", "negative_volume", "volume_out_of_range", "ohlc_logic",
           "duplicate_in_file", "unknown_ticker")
R = dict((name, i + 1) for i, name in enumerate(REASONS))
REGION_RE = "^[A-Z]{2}$"
MAX_COPY_RETRIES = 3   # typed COPYs run again with a refused line held apart, before staging as text
# A plain decimal: optional sign, digits with an optional point, optional exponent.
NUMBER = r"[+-]?(?:[0-9]+(?:[.][0-9]*)?|[.][0-9]+)(?:[eE][+-]?[0-9]+)?"
PRICES_RE = "^%s$" % ",".join([NUMBER] * 4)
VOLUME_RE = "^%s$" % NUMBER

# The typed stage: what the fast path COPYs into (numbers typed by COPY; Python has checked
# each line's shape, so COPY's lenient input cannot accept what the strict rules refuse) and
# what the strict path inserts into. date stays text: it is typed per distinct value.
TYPED_STAGE = """
CREATE TEMP TABLE qdb_stage (
    line bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 2), ticker text, region text, date text,
    open double precision, high double precision, low double precision, close double precision,
    volume bigint, pre_reason smallint) ON COMMIT DROP"""
RAW_STAGE = """
CREATE TEMP TABLE qdb_raw (
    line bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 2), ticker text, region text, date text,
    open text, high text, low text, close text, volume text) ON COMMIT DROP"""
INVALID = "CREATE TEMP TABLE qdb_invalid (line bigint PRIMARY KEY, reason smallint NOT NULL) ON COMMIT DROP"
COPY_BARS = "COPY %s (ticker, region, date, open, high, low, close, volume) FROM STDIN WITH (FORMAT csv, HEADER true)"
COPY_RAW_ROWS = "COPY qdb_raw (line, ticker, region, date, open, high, low, close, volume) FROM STDIN"
# Later reasons never replace earlier ones.
FIRST_WINS = "ON CONFLICT (line) DO UPDATE SET reason = least(qdb_invalid.reason, EXCLUDED.reason)"


def strict_price(col):
    """A price typed from text already known to be a plain decimal: float8, or, beyond float8's
    range, +/-Infinity (too large) or +/-1e-300 (too small), which the range checks then refuse
    with the right reason."""
    return """CASE WHEN pg_input_is_valid({c}, 'float8') THEN {c}::float8
     WHEN (CASE WHEN pg_input_is_valid({c}, 'numeric') THEN abs({c}::numeric) < 1 ELSE {c} ~ '[eE]-' END)
     THEN (CASE WHEN left({c}, 1) = '-' THEN -1e-300 ELSE 1e-300 END)::float8
     ELSE (CASE WHEN left({c}, 1) = '-' THEN '-Infinity' ELSE 'Infinity' END)::float8 END""".format(c=col)


STRICT_VOLUME = """CASE WHEN pg_input_is_valid(volume, 'int8') THEN volume::int8
     WHEN NOT pg_input_is_valid(volume, 'numeric') OR volume::numeric <> trunc(volume::numeric) THEN NULL
     WHEN volume::numeric > 9223372036854775807 THEN 9223372036854775807
     WHEN volume::numeric < -9223372036854775807 THEN -9223372036854775807
     ELSE volume::numeric::int8 END"""

# The strict path: rows from qdb_raw (text) into the typed stage. Two regular expressions a
# row (the four prices joined, the volume); values are typed only where they are plain decimals
# (pg_input_is_valid guards the range). pre_reason carries missing_value / bad_number.
STRICT_INSERT = """
INSERT INTO qdb_stage (line, ticker, region, date, open, high, low, close, volume, pre_reason)
SELECT line, ticker, region, date, o, h, l, c, v,
       CASE WHEN missing THEN {missing} WHEN NOT plain OR v IS NULL THEN {bad_number} END
FROM (SELECT line, nullif(ticker, '') AS ticker, nullif(region, '') AS region, nullif(date, '') AS date,
             missing, plain,
             CASE WHEN plain THEN {o} END AS o, CASE WHEN plain THEN {h} END AS h,
             CASE WHEN plain THEN {l} END AS l, CASE WHEN plain THEN {c} END AS c,
             CASE WHEN plain THEN {v} END AS v
      FROM (SELECT r.*,
                   (coalesce(ticker, '') = '' OR coalesce(region, '') = '' OR coalesce(date, '') = ''
                    OR coalesce(open, '') = '' OR coalesce(high, '') = '' OR coalesce(low, '') = ''
                    OR coalesce(close, '') = '' OR coalesce(volume, '') = '') AS missing,
                   (concat_ws(',', open, high, low, close) ~ %(prices_re)s AND volume ~ %(volume_re)s) AS plain
            FROM qdb_raw r
            WHERE NOT EXISTS (SELECT 1 FROM qdb_invalid i WHERE i.line = r.line)
            OFFSET 0) t
      OFFSET 0) s""".format(missing=R["missing_value"], bad_number=R["bad_number"], o=strict_price("open"),
                            h=strict_price("high"), l=strict_price("low"), c=strict_price("close"), v=STRICT_VOLUME)

# One scan for the distinct (ticker, region) keys and the distinct dates: tickers, regions and
# dates are then checked once per distinct value, not once per row.
KEYS = """
CREATE TEMP TABLE qdb_keys ON COMMIT DROP AS
SELECT ticker, region, date, grouping(date) = 1 AS is_key
FROM qdb_stage GROUP BY GROUPING SETS ((ticker, region), (date))"""

DATES = """
CREATE TEMP TABLE qdb_dates ON COMMIT DROP AS
SELECT raw, CASE WHEN pg_input_is_valid(iso, 'date') THEN iso::date END AS value
FROM (SELECT date AS raw, m[{y}] || '-' || m[{m}] || '-' || m[{d}] AS iso
      FROM (SELECT date, regexp_match(date, %s) AS m FROM qdb_keys WHERE NOT is_key AND date IS NOT NULL) k) x"""

BAD_DATES = """
INSERT INTO qdb_invalid (line, reason)
SELECT s.line, {r} FROM qdb_stage s JOIN qdb_dates d ON d.raw = s.date WHERE d.value IS NULL
{first}""".format(r=R["bad_date_format"], first=FIRST_WINS)

BAD_KEYS = """
CREATE TEMP TABLE qdb_badkeys ON COMMIT DROP AS
SELECT ticker, region, CASE WHEN ticker !~ %(pattern)s THEN {bad_ticker} ELSE {bad_region} END AS reason
FROM qdb_keys
WHERE is_key AND ticker IS NOT NULL AND region IS NOT NULL
  AND (ticker !~ %(pattern)s OR region !~ %(region_re)s)""".format(bad_ticker=R["bad_ticker"], bad_region=R["bad_region"])

KEY_REASONS = """
INSERT INTO qdb_invalid (line, reason)
SELECT s.line, b.reason FROM qdb_stage s JOIN {table} b USING (ticker, region)
{first}"""

# Everything a value can break, in reason order; pre_reason (strict path) comes first.
CLASSIFY = """
INSERT INTO qdb_invalid (line, reason)
SELECT line, reason FROM (
    SELECT line, CASE
        WHEN pre_reason IS NOT NULL THEN pre_reason
        WHEN ticker IS NULL OR region IS NULL OR date IS NULL OR open IS NULL OR high IS NULL
             OR low IS NULL OR close IS NULL OR volume IS NULL THEN {missing_value}
        WHEN open <= 0 OR high <= 0 OR low <= 0 OR close <= 0 THEN {non_positive_price}
        WHEN least(open, high, low, close) < %(min_price)s::float8
             OR greatest(open, high, low, close) > %(max_price)s::float8 THEN {price_out_of_range}
        WHEN volume < 0 THEN {negative_volume}
        WHEN volume > %(max_volume)s::bigint THEN {volume_out_of_range}
        WHEN high < greatest(open, close) OR low > least(open, close) OR high < low THEN {ohlc_logic}
    END AS reason
    FROM qdb_stage) c
WHERE reason IS NOT NULL
{first}""".format(first=FIRST_WINS, **R)

HAS_DUPLICATES = """
SELECT EXISTS (SELECT 1 FROM qdb_stage GROUP BY ticker, region, date HAVING count(*) > 1)"""

# Later lines of a key repeated among the rows valid so far (unknown tickers count as valid
# here: duplicate_in_file comes before unknown_ticker).
DUPLICATES_IN_FILE = """
INSERT INTO qdb_invalid (line, reason)
SELECT line, {dup} FROM (
    SELECT line, row_number() OVER (PARTITION BY ticker, region, date ORDER BY line) AS rn
    FROM qdb_stage s
    WHERE NOT EXISTS (SELECT 1 FROM qdb_invalid i WHERE i.line = s.line AND i.reason < {dup})) d
WHERE rn > 1
{first}""".format(dup=R["duplicate_in_file"], first=FIRST_WINS)

UNKNOWN_TICKERS = """
CREATE TEMP TABLE qdb_unknown ON COMMIT DROP AS
SELECT k.ticker, k.region, {unknown}::smallint AS reason FROM qdb_keys k
WHERE k.is_key AND k.ticker IS NOT NULL AND k.region IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM qdb_badkeys b WHERE b.ticker = k.ticker AND b.region = k.region)
  AND NOT EXISTS (SELECT 1 FROM public.tickers t WHERE t.ticker = k.ticker AND t.region = k.region)""".format(
    unknown=R["unknown_ticker"])

REGISTER_TICKERS = """
WITH reg AS (
    INSERT INTO public.tickers (ticker, region, exchange)
    SELECT u.ticker, u.region, e.value FROM qdb_unknown u JOIN jsonb_each_text(%s::jsonb) e ON e.key = u.region
    ON CONFLICT DO NOTHING
    RETURNING ticker, region)
DELETE FROM qdb_unknown u USING reg WHERE u.ticker = reg.ticker AND u.region = reg.region"""

VALID_ROWS = """
FROM qdb_stage s JOIN qdb_dates d ON d.raw = s.date
WHERE NOT EXISTS (SELECT 1 FROM qdb_invalid i WHERE i.line = s.line)
ORDER BY s.ticker, s.region, d.value"""

UPSERT = """
WITH up AS (
    INSERT INTO public.ohlcv_data AS t (ticker, region, date, open, high, low, close, volume)
    SELECT s.ticker, s.region, d.value, s.open, s.high, s.low, s.close, s.volume""" + VALID_ROWS + """
    ON CONFLICT (ticker, region, date) DO UPDATE
       SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
           close = EXCLUDED.close, volume = EXCLUDED.volume
     WHERE (t.open, t.high, t.low, t.close, t.volume)
           IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
    RETURNING (xmax = 0) AS inserted)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"""

BULK_INSERT = """
INSERT INTO public.ohlcv_data (ticker, region, date, open, high, low, close, volume)
SELECT s.ticker, s.region, d.value, s.open, s.high, s.low, s.close, s.volume""" + VALID_ROWS

# The raw text of an invalid row: from qdb_raw where it went the strict path (or could not be
# staged at all), else from the typed stage.
INVALID_ROWS = """
FROM qdb_invalid i LEFT JOIN qdb_raw r ON r.line = i.line LEFT JOIN qdb_stage s ON s.line = i.line"""
RAW = dict((c, "CASE WHEN r.line IS NOT NULL THEN r.{c} ELSE s.{c}::text END".format(c=c)) for c in BAR_COLUMNS)

QUARANTINE = """
INSERT INTO public.ohlcv_quarantine
    (file_name, file_sha256, line, reason, ticker, region, date, open, high, low, close, volume)
SELECT %s, %s, i.line, (%s::text[])[i.reason], {ticker}, {region}, {date}, {open}, {high}, {low}, {close}, {volume}
""".format(**RAW) + INVALID_ROWS + """
ON CONFLICT (file_sha256, line) DO NOTHING"""

SAMPLES = """
SELECT i.line, (%s::text[])[i.reason], {ticker}, {date}""".format(**RAW) + INVALID_ROWS + """
ORDER BY i.line LIMIT %s"""

# The bulk path's condition: an empty table the login role may drop and rebuild indexes of.
MAY_BULK = """
SELECT NOT EXISTS (SELECT 1 FROM public.ohlcv_data)
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = 'public.ohlcv_data'::regclass), 'USAGE')"""


class LoadFailed(Exception):
    """A refusal with its own message (bad header, bad ticker in tickers_src, invalid rows with
    on_invalid=fail): nothing is written."""


def load_reference(cur, src, columns, table, conflict, update, pattern=None):
    """Upsert a reference CSV (tickers, sessions). With pattern, every ticker must match it and
    every region be two capital letters, else LoadFailed naming the first bad line."""
    header = read_header(src)
    if header != columns:
        raise LoadFailed("%s: header must be %s, got %s" % (src, ",".join(columns), ",".join(header)))
    cur.execute("CREATE TEMP TABLE qdb_ref (LIKE public.%s INCLUDING DEFAULTS) ON COMMIT DROP" % table)
    cur.execute("ALTER TABLE qdb_ref ADD COLUMN qdb_line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2)")
    copy_file(cur, "COPY qdb_ref (%s) FROM STDIN WITH (FORMAT csv, HEADER true)" % ", ".join(columns), src)
    if pattern:
        cur.execute("""SELECT qdb_line, ticker, region, ticker IS NULL OR ticker !~ %s FROM qdb_ref
                       WHERE ticker IS NULL OR ticker !~ %s OR region IS NULL OR region !~ %s
                       ORDER BY qdb_line LIMIT 1""", (pattern, pattern, REGION_RE))
        bad = cur.fetchone()
        if bad:
            what = "ticker %s does not match ticker_pattern %s" % (json.dumps(bad[1]), pattern) if bad[3] \
                else "region %s is not two capital letters" % json.dumps(bad[2])
            raise LoadFailed("%s line %d: %s; nothing written" % (src, bad[0], what))
    set_clause = ", ".join("%s = EXCLUDED.%s" % (c, c) for c in update)
    where = " OR ".join("t.%s IS DISTINCT FROM EXCLUDED.%s" % (c, c) for c in update)
    action = ("DO UPDATE SET %s WHERE %s" % (set_clause, where)) if update else "DO NOTHING"
    cur.execute("INSERT INTO public.%s AS t (%s) SELECT %s FROM qdb_ref ON CONFLICT (%s) %s"
                % (table, ", ".join(columns), ", ".join(columns), conflict, action))
    count = cur.rowcount
    cur.execute("DROP TABLE qdb_ref")
    return count


def stage_bars(cur, src, date_literals, result):
    """Stage the file in qdb_stage (typed). Returns the BarStream (its bad lines and rows).

    Fast path: a typed COPY of the lines Python found clean; the few other lines are typed by
    the strict path from qdb_raw. When COPY still refuses a value of a clean-looking line (an
    overflow such as 1e400, a malformed number such as 1-2), that line joins the strict path
    and the typed COPY runs again, up to MAX_COPY_RETRIES times; past that, or when too many
    lines need the strict path, the whole file is staged as text in qdb_raw and typed by the
    strict path. Each attempt runs in a savepoint, so a failed one leaves nothing behind."""
    staging, every_line, strict_lines = "typed", False, set()
    while True:
        stream = BarStream(src, typed=staging == "typed", extra_allowed=date_literals, check_every_line=every_line,
                           strict_lines=strict_lines)
        try:
            with cur.connection.transaction():
                cur.execute(TYPED_STAGE if staging == "typed" else RAW_STAGE)
                with copy_to_table(cur, COPY_BARS % ("qdb_stage" if staging == "typed" else "qdb_raw")) as copy:
                    stream.run(copy.write)
            break
        except TooManySuspects:
            staging = "text"
        except psycopg.errors.DataError as exc:
            line = refused_line(exc)
            if staging == "typed" and line and line not in strict_lines and len(strict_lines) < MAX_COPY_RETRIES:
                strict_lines.add(line)
            elif staging == "typed":
                staging = "text"
            elif not every_line:
                every_line = True
            else:
                raise LoadFailed("%s: cannot stage the file: %s; nothing written" % (src, describe(exc)))
    result["staging"] = staging
    cur.execute(RAW_STAGE if staging == "typed" else TYPED_STAGE)
    cur.execute(INVALID)
    blanked = [line for line, _reason, _pieces in stream.bad] + [line for line, _fields in stream.suspects]
    if stream.bad:
        cur.executemany("INSERT INTO qdb_invalid (line, reason) VALUES (%s, %s)",
                        [(line, R[reason]) for line, reason, _pieces in stream.bad])
    if blanked:
        # The BLANK_ROWs holding those lines' numbers make way for their real values.
        cur.execute("DELETE FROM %s WHERE line = ANY(%%s)" % ("qdb_stage" if staging == "typed" else "qdb_raw"),
                    (blanked,))
        with cur.copy(COPY_RAW_ROWS) as copy:
            for line, _reason, fields in stream.bad:
                copy.write_row([line] + fields)
            for line, fields in stream.suspects:
                copy.write_row([line] + fields)
    if staging == "text" or stream.suspects:
        cur.execute(STRICT_INSERT, dict(prices_re=PRICES_RE, volume_re=VOLUME_RE))
        result["strict_rows"] = cur.rowcount
    return stream


def refused_line(exc):
    """The file line a COPY error names ("COPY qdb_stage, line 12, column open: ..."), or None."""
    match = re.search(r"\bline (\d+)", getattr(getattr(exc, "diag", None), "context", None) or "")
    return int(match.group(1)) if match else None


def classify_values(cur, p, date_re, date_groups):
    """Every reason but duplicate_in_file and unknown_ticker into qdb_invalid."""
    cur.execute(KEYS)
    cur.execute(DATES.format(y=date_groups[0], m=date_groups[1], d=date_groups[2]), (date_re,))
    cur.execute("ANALYZE qdb_dates")
    cur.execute(CLASSIFY, dict(min_price=p["min_price"], max_price=p["max_price"], max_volume=p["max_volume"]))
    cur.execute("SELECT EXISTS (SELECT 1 FROM qdb_dates WHERE value IS NULL)")
    if cur.fetchone()[0]:
        cur.execute(BAD_DATES)
    cur.execute(BAD_KEYS, dict(pattern=p["ticker_pattern"], region_re=REGION_RE))
    if cur.rowcount:
        cur.execute(KEY_REASONS.format(table="qdb_badkeys", first=FIRST_WINS))


def unknown_tickers(cur, p, result):
    """Register unknown tickers when asked (those of a mapped region); the rest are unknown_ticker."""
    cur.execute(UNKNOWN_TICKERS)
    if not cur.rowcount:
        return
    if p["register_tickers"]:
        cur.execute(REGISTER_TICKERS, (json.dumps(p["region_exchanges"]),))
        result["tickers_registered"] += cur.rowcount
    cur.execute(KEY_REASONS.format(table="qdb_unknown", first=FIRST_WINS))


def reason_counts(cur):
    cur.execute("SELECT reason, count(*) FROM qdb_invalid GROUP BY reason ORDER BY reason")
    return dict((REASONS[code - 1], count) for code, count in cur.fetchall())


def samples(cur, p):
    cur.execute(SAMPLES, (list(REASONS), p["max_samples"]))
    return [dict(line=r[0], reason=r[1], ticker=r[2], date=r[3]) for r in cur.fetchall()]


# The load, in the order it runs inside one transaction: prepare, stage, classify, write,
# quarantine. Each step reads and fills `result`; a refusal raises LoadFailed.

def prepare(cur, p, result):
    """Session settings for one big load, the ticker pattern checked, the reference files
    (tickers, sessions) loaded."""
    # temp_buffers must precede the first temp table.
    for name in ("temp_buffers", "work_mem", "maintenance_work_mem"):
        cur.execute("SELECT set_config(%s, %s, false)", (name, p[name]))
    try:
        cur.execute("SELECT '' ~ %s", (p["ticker_pattern"],))
    except psycopg.errors.InvalidRegularExpression as exc:
        raise LoadFailed("ticker_pattern %s: %s" % (p["ticker_pattern"], str(exc).strip()))
    if p["tickers_src"]:
        result["tickers_registered"] = load_reference(
            cur, p["tickers_src"], TICKER_COLUMNS, "tickers", "ticker, region",
            ["exchange", "name", "currency", "sector"], pattern=p["ticker_pattern"])
    if p["sessions_src"]:
        result["sessions_added"] = load_reference(cur, p["sessions_src"], SESSION_COLUMNS,
                                                  "exchange_sessions", "exchange, session", [])


def stage(cur, p, result):
    """The file into the staging tables (stage_bars); rows_read."""
    stream = stage_bars(cur, p["src"], format_literals(p["date_format"]), result)
    result["rows_read"] = stream.rows


def classify(module, cur, p, result, date_re, date_groups):
    """Every staged row judged: its first reason into qdb_invalid. Returns (bulk, writable):
    whether the write takes the bulk path (an empty table the login role may re-index, outside
    check mode) and whether any row is left to write. With on_invalid=fail, any invalid row
    refuses the file (LoadFailed)."""
    classify_values(cur, p, date_re, date_groups)
    # Dropping and rebuilding the indexes needs the table's owner (or a superuser): a writer
    # such as quant_app loading an empty table from the controller upserts instead.
    cur.execute(MAY_BULK)
    may_bulk = cur.fetchone()[0] and p["bulk_mode"] == "auto" and not module.check_mode
    # Duplicate keys inside the file: later lines are invalid. An upsert (and a file that must
    # fail on any invalid row) looks for them first; a backfill skips that scan of the whole
    # file, because its unique index build fails on any repeat, and only then marks them and
    # writes again (write()).
    if not may_bulk or p["on_invalid"] == "fail":
        cur.execute(HAS_DUPLICATES)
        if cur.fetchone()[0]:
            cur.execute(DUPLICATES_IN_FILE)
    unknown_tickers(cur, p, result)
    reasons = reason_counts(cur)
    invalid = sum(reasons.values())
    if invalid and p["on_invalid"] == "fail":
        result.update(reasons=reasons, quarantined=invalid, samples=samples(cur, p))
        raise LoadFailed("%s: %d invalid row(s) (%s); nothing was written" % (
            result["file"], invalid, ", ".join("%s: %d" % kv for kv in sorted(reasons.items()))))
    writable = result["rows_read"] > invalid
    return may_bulk and writable, writable


def write(cur, bulk, result):
    """The valid rows into ohlcv_data (write_bars). A backfill whose index build meets a key
    repeated in the file marks the later lines duplicate_in_file and writes again."""
    try:
        with cur.connection.transaction():
            write_bars(cur, bulk, result)
    except (psycopg.errors.UniqueViolation, psycopg.errors.CardinalityViolation):
        cur.execute(DUPLICATES_IN_FILE)
        write_bars(cur, bulk, result)


def write_bars(cur, bulk, result):
    """Insert the valid staged bars. Into an empty table: drop the indexes, insert in
    (ticker, date) order, rebuild them; otherwise upsert only what differs."""
    result["bulk"] = bulk
    if bulk:
        cur.execute(drop_index_ddl(UNIQUE_INDEX))
        cur.execute(drop_index_ddl(DATE_INDEX, if_exists=True))
        cur.execute(BULK_INSERT)
        result["new"], result["updated"] = cur.rowcount, 0
        cur.execute(unique_index_ddl())
        cur.execute(date_index_ddl())
    else:
        cur.execute(UPSERT)
        result["new"], result["updated"] = cur.fetchone()


def quarantine(cur, p, result):
    """The invalid rows into ohlcv_quarantine (once per file and line); the counts."""
    result["reasons"] = reason_counts(cur)
    result["quarantined"] = sum(result["reasons"].values())
    if result["quarantined"]:
        result["samples"] = samples(cur, p)
        cur.execute(QUARANTINE, (result["file"], result["sha256"], list(REASONS)))
        result["quarantined_new"] = cur.rowcount
    result["unchanged"] = result["rows_read"] - result["quarantined"] - result["new"] - result["updated"]
    result["changed"] = bool(result["new"] or result["updated"] or result["quarantined_new"]
                             or result["tickers_registered"] or result["sessions_added"])


# How a load fails. Whatever the step, nothing is written: the transaction rolls back.

def describe(exc):
    """A database error's message with its context (for COPY: the table, line and column)."""
    text = str(exc).strip()
    context = getattr(getattr(exc, "diag", None), "context", None)
    return "%s (%s)" % (text, context.strip()) if context else text


# The tables a load locks: ROW EXCLUSIVE to write (ohlcv_data also ACCESS EXCLUSIVE for the
# index drop of a backfill), ACCESS SHARE to read.
LOCKED_TABLES = ("public.ohlcv_data", "public.ohlcv_quarantine", "public.tickers", "public.exchange_sessions")


def load_failure(file_name, module=None, conn=None, result=None):
    """The failure message of a database error (transaction()'s `failure`). A lock not granted
    within lock_timeout names the timeout and who holds the lock (read on a second connection
    when `module` is given)."""
    own_pid = backend_pid(conn) if conn is not None else None

    def message(exc, lost=False, committing=False):
        if is_lock_timeout(exc) and not lost:
            mode = "AccessExclusiveLock" if (result or {}).get("bulk") else "RowExclusiveLock"
            holders = lock_holders(module, LOCKED_TABLES, mode, exclude_pids=[own_pid]) if module else []
            lock_timeout = module.params.get("lock_timeout") if module else None
            return "%s: %s" % (file_name, lock_timeout_message(lock_timeout, holders))
        if committing and lost:
            return ("%s: connection lost during COMMIT, so whether the load was committed is unknown "
                    "(check ohlcv_data and ohlcv_quarantine): %s" % (file_name, str(exc).strip()))
        what = "connection lost, nothing written" if lost else "load failed, nothing written"
        return "%s: %s: %s" % (file_name, what, describe(exc))
    return message


REFUSALS = {LoadFailed: str, UnreadableFile: lambda exc: "%s; nothing written" % exc}


def nothing_written(result):
    """The result of a load that committed nothing."""
    result.update(changed=False, new=0, updated=0, unchanged=0, quarantined_new=0, tickers_registered=0,
                  sessions_added=0, bulk=False)
    return result


def analyze_after_backfill(module, result):
    """transaction()'s after_commit: ANALYZE after a committed backfill. The load is committed
    by then: a failure is a warning, never "nothing written"."""
    def analyze(conn):
        if not result["bulk"]:
            return
        try:
            conn.execute("ANALYZE public.ohlcv_data")
            result["analyzed"] = True
        except psycopg.Error as exc:
            module.warn("%s: committed (%d new bars); ANALYZE public.ohlcv_data failed afterwards, run it by hand: %s"
                        % (result["file"], result["new"], str(exc).strip()))
    return analyze


def prewarm(module, p, result):
    """Load the recent chunks of a fresh backfill and their indexes into shared_buffers."""
    watch = Stopwatch()
    conn = connect(module, autocommit=True)
    record_queries(conn, result["queries"])
    try:
        blocks = prewarm_recent(conn, p["prewarm_recent"])
        if blocks is None:
            module.warn("prewarm_recent: the pg_prewarm extension is not installed in %s; skipped" % p["login_db"])
        else:
            result["prewarmed_blocks"] = blocks
    except psycopg.Error as exc:
        module.warn("prewarm_recent: skipped: %s" % str(exc).strip())
    finally:
        conn.close()
        result["prewarm_seconds"] = round(watch.ms / 1000.0, 3)


def argument_spec():
    spec = connection_argument_spec()
    spec.update(
        src=dict(type="path", required=True),
        file_name=dict(type="str"),
        tickers_src=dict(type="path"),
        sessions_src=dict(type="path"),
        on_invalid=dict(type="str", choices=["quarantine", "fail"], default="quarantine"),
        register_tickers=dict(type="bool", default=False),
        region_exchanges=dict(type="dict", default=region_exchanges()),
        date_format=dict(type="str", default="%Y-%m-%d"),
        ticker_pattern=dict(type="str", default="^[A-Za-z0-9.-]{1,20}$"),
        min_price=dict(type="float", default=0.000001),
        max_price=dict(type="float", default=1000000000.0),
        max_volume=dict(type="int", default=1000000000000000),
        bulk_mode=dict(type="str", choices=["auto", "never"], default="auto"),
        max_samples=dict(type="int", default=20),
        work_mem=dict(type="str", default="256MB"),
        maintenance_work_mem=dict(type="str", default="512MB"),
        temp_buffers=dict(type="str", default="256MB"),
        prewarm_recent=dict(type="str", default="2 years"),
    )
    return spec


def checked_inputs(module):
    """The options checked before anything is read: the date format as a regular expression
    and its (year, month, day) groups. Fails the module naming the bad option."""
    p = module.params
    for key in ("src", "tickers_src", "sessions_src"):
        if p[key] and not os.path.isfile(p[key]):
            module.fail_json(msg="%s: no such file %s" % (key, p[key]))
    try:
        date_re, date_groups = strftime_to_regex(p["date_format"])
    except ValueError as exc:
        date_re, date_groups, bad_format = None, None, str(exc)
    else:
        bad_format = None
    if bad_format:   # fail_json outside the except block: a refusal, not a crash with a traceback
        module.fail_json(msg=bad_format)
    if not 0 < p["min_price"] < p["max_price"]:
        module.fail_json(msg="min_price and max_price must satisfy 0 < min_price < max_price (got %s, %s)"
                         % (p["min_price"], p["max_price"]))
    if p["max_volume"] < 0:
        module.fail_json(msg="max_volume must be >= 0 (got %s)" % p["max_volume"])
    return date_re, date_groups


def checked_header(module, result):
    """The bars file's header must be BAR_COLUMNS, and the file readable."""
    src = module.params["src"]
    try:
        header = read_header(src)
    except UnreadableFile as exc:
        header, unreadable = None, "%s; nothing written" % exc
    else:
        unreadable = None
    if unreadable:
        module.fail_json(msg=unreadable, **result)
    if header != BAR_COLUMNS:
        module.fail_json(msg="%s: header must be %s, got %s" % (src, ",".join(BAR_COLUMNS), ",".join(header)),
                         **result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    date_re, date_groups = checked_inputs(module)
    result = dict(changed=False, file=p["file_name"] or os.path.basename(p["src"]), sha256=file_sha256(p["src"]),
                  rows_read=0, new=0, updated=0, unchanged=0, quarantined=0, quarantined_new=0, reasons={},
                  samples=[], tickers_registered=0, sessions_added=0, bulk=False, staging="typed", strict_rows=0,
                  analyzed=False, prewarmed_blocks=0, prewarm_seconds=0.0, seconds=0.0, rows_per_s=0.0,
                  queries=[])
    checked_header(module, result)

    watch = Stopwatch()
    conn = connect(module)
    record_queries(conn, result["queries"])
    # One transaction: committed, rolled back in check mode, or failed with nothing written.
    with transaction(module, conn, load_failure(result["file"], module, conn, result), result, refusals=REFUSALS,
                     on_rollback=nothing_written, after_commit=analyze_after_backfill(module, result)):
        with conn.cursor() as cur:
            prepare(cur, p, result)
            stage(cur, p, result)
            bulk, writable = classify(module, cur, p, result, date_re, date_groups)
            if writable:
                write(cur, bulk, result)
            quarantine(cur, p, result)
    result["seconds"] = round(watch.ms / 1000.0, 3)
    result["rows_per_s"] = round(result["rows_read"] / result["seconds"], 1) if result["seconds"] else 0.0
    if result["bulk"] and p["prewarm_recent"] and not module.check_mode:
        prewarm(module, p, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
