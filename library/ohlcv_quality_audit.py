#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_quality_audit
short_description: Data quality audit of ohlcv_data, set-based, with an optional duplicate fix
description:
  - Runs the checks missing_sessions, extra_sessions, duplicates, null_values, ohlc_violations,
    non_positive_prices, negative_volume, price_anomalies, split_jumps, zero_volume_moves,
    stale_tickers, stale_regions, future_dates and uncovered_bars over the scope given (region,
    tickers, date window), and returns a report with generated_at, database, as_of,
    as_of_by_exchange, rows_scanned and checks (per check its status, count and samples).
  - What "today" means is O(as_of), by default today in each exchange's time zone (from the
    exchanges table the calendars role keeps; UTC, with a note, for an exchange it does not
    know). Bars after it are future_dates; staleness is measured against the latest session
    whose bar is expected by then (its date plus O(publication_delay) has passed).
  - Sessions come from exchange_sessions, by each ticker's exchange (tickers.exchange, else
    O(region_exchanges)). Bars outside their exchange's loaded calendar are uncovered_bars and
    are checked for neither missing nor extra sessions.
  - price_anomalies uses a robust z-score of daily log returns (mean and stddev per ticker over
    the scope plus O(lookback_days), of the returns within O(volatility_cap) only). A bar is an
    anomaly when its return is beyond O(z_threshold) and the next return reverts it (a spike),
    or when it is a lone jump not at a split ratio. Lone jumps at a split ratio (1/10 .. 10, the
    day's ordinary move allowed for) that corporate_actions does not explain are split_jumps.
  - No value in the table stops the audit. NULLs, zeros, Infinity and NaN, or prices from 1e-300
    to 1e300, give findings, never an arithmetic error.
  - Records one row per check in quality_audit_results (unless O(record_results) is false); that
    log is not counted as a change. C(changed) is true only when O(fix) removes duplicates.
  - O(fix=true) deletes duplicate bars keeping the earliest created_at (then lowest id), in one
    transaction. In check mode it reports what would be deleted and deletes nothing.
options:
  region:
    description: Only this region.
    type: str
  tickers:
    description: Only these tickers.
    type: list
    elements: str
  start_date:
    description: First date audited (ISO); default the first bar.
    type: str
  end_date:
    description: Last date audited (ISO); default the last bar.
    type: str
  as_of:
    description:
      - The day the audit is run as of (ISO date). Bars after it are future; the latest session
        expected by the end of that day decides staleness. Default today in each exchange's time
        zone. Set it to re-run yesterday's audit or to audit a restored copy as of its backup.
    type: str
  publication_delay:
    description:
      - How long after the start of a session's date its bar is expected (a PostgreSQL interval,
        in the exchange's local time). With 18 hours, Friday's bar is expected from Friday 18:00.
    type: str
    default: 18 hours
  checks:
    description: Checks to run (default all).
    type: list
    elements: str
  thresholds:
    description:
      - Per check a mapping of C(warn) and/or C(fail) to a count; status is fail when count >= fail,
        warn when count >= warn. A null limit never applies.
    type: dict
    default: {}
  z_threshold:
    description: Robust z-score beyond which a daily return is extreme.
    type: float
    default: 10.0
  lookback_days:
    description: Days before start_date read for returns and their statistics.
    type: int
    default: 120
  volatility_cap:
    description: Returns beyond plus or minus this log return are left out of each ticker's mean and stddev.
    type: float
    default: 0.25
  stale_sessions:
    description: An active ticker is stale when its last bar is more than this many sessions behind the expected session.
    type: int
    default: 7
  stale_region_sessions:
    description:
      - A region's feed (its tickers on one exchange) is stale when its newest bar is more than this
        many sessions behind the expected session. 0 means the expected session's bar must be there.
    type: int
    default: 0
  split_tolerance:
    description: A jump is at a split ratio k when, less ln(k), its return is within this many robust sigmas of the mean.
    type: float
    default: 4.0
  region_exchanges:
    description:
      - Exchange (MIC) of each region, for tickers without one. The default is the project's one
        region map (C(module_utils/quantdb_ohlcv.py)), also used by the ingest.
  sample_size:
    description: Samples per check.
    type: int
    default: 5
  work_mem:
    description: work_mem for the audit's sorts.
    type: str
    default: 256MB
  jit:
    description:
      - JIT compilation for the audit's own transaction. The postgresql role turns C(jit) off
        server-wide (short reads pay the compile); the audit's passes over every bar repay it
        (on 6.2M bars, measured on the lab 2026-12-07, the full audit took 16.3-16.5 s with it
        against 16.7-17.2 s without). Where the server has no JIT provider it changes nothing.
    type: bool
    default: true
  temp_buffers:
    description: temp_buffers for the audit's staging table.
    type: str
    default: 256MB
  fix:
    description: Remove duplicates (earliest created_at wins).
    type: bool
    default: false
  record_results:
    description: Store per-check counts in quality_audit_results.
    type: bool
    default: true
notes:
  - What check mode costs. The audit itself only reads (its staging is in temporary tables); check
    mode runs it in full and skips recording results, and with O(fix) rolls the deletes back, so
    it costs a real run's time and the deleted rows' locks until the rollback.
extends_documentation_fragment: [quantdb_pg, quantdb_ohlcv.region_exchanges]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Nightly audit of the latest KR sessions
  ohlcv_quality_audit:
    login_db: quant_platform
    region: KR
    start_date: "2025-10-27"
  register: audit

- name: Audit a restored copy as of the day of its backup
  ohlcv_quality_audit:
    login_db: restored
    as_of: "2025-10-31"
"""

RETURN = r"""
report:
  description: The audit report (see the description).
  returned: always
  type: dict
  sample:
    generated_at: "2025-11-01T06:00:00+00:00"
    database: quant_platform
    as_of: "2025-10-31"
    as_of_by_exchange:
      XKRX: {as_of: "2025-10-31", timezone: Asia/Seoul, expected_session: "2025-10-31"}
    rows_scanned: 145000
    checks:
      stale_tickers: {status: warn, count: 1, samples: [{ticker: "005930", region: KR, last_date: "2025-10-02"}]}
failed_checks:
  description: Names of the checks whose status is fail.
  returned: always
  type: list
  sample: [price_anomalies]
fixed:
  description: Duplicates deleted (or, in check mode, that would be).
  returned: always
  type: int
  sample: 0
queries:
  description: The statements the audit ran, in order, with their placeholders.
  returned: always
  type: list
  sample: ["CREATE TEMP TABLE qa_asof ON COMMIT DROP AS ...", "ANALYZE qa_bars"]
"""

import json
import math
from datetime import date, datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_ohlcv import HAS_UNIQUE_KEY, dedupe_statement, region_exchanges
from ansible.module_utils.quantdb_pg import Stopwatch, connect, connection_argument_spec, lock_aware, psycopg, transaction

CHECKS = ["missing_sessions", "extra_sessions", "duplicates", "null_values", "ohlc_violations",
          "non_positive_prices", "negative_volume", "price_anomalies", "split_jumps",
          "zero_volume_moves", "stale_tickers", "stale_regions", "future_dates", "uncovered_bars"]
DEFAULT_THRESHOLDS = {
    "missing_sessions": {"warn": 1, "fail": 50}, "extra_sessions": {"warn": 1, "fail": 10},
    "duplicates": {"warn": 1, "fail": 1}, "null_values": {"warn": 1, "fail": 1},
    "ohlc_violations": {"warn": 1, "fail": 1}, "non_positive_prices": {"warn": 1, "fail": 1},
    "negative_volume": {"warn": 1, "fail": 1}, "price_anomalies": {"warn": 1, "fail": 1},
    "split_jumps": {"warn": 1, "fail": 1}, "zero_volume_moves": {"warn": 1, "fail": None},
    "stale_tickers": {"warn": 1, "fail": None}, "stale_regions": {"warn": 1, "fail": 1},
    "future_dates": {"warn": 1, "fail": 1}, "uncovered_bars": {"warn": 1, "fail": None},
}
SPLIT_RATIOS = [0.1, 0.2, 0.25, 1.0 / 3, 0.5, 2.0, 3.0, 4.0, 5.0, 10.0]


def jsonable(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def rows_as_dicts(cur):
    names = [d.name for d in cur.description]
    return [{k: jsonable(v) for k, v in zip(names, row)} for row in cur.fetchall()]


class Audit(object):
    def __init__(self, module, conn):
        self.m = module
        self.p = module.params
        self.conn = conn
        self.cur = conn.cursor()
        self.counts = {}
        self.samples = {}
        self.notes = {}
        self.queries = []   # returned, so -v shows what ran

    # Scope ---------------------------------------------------------------------------
    def ticker_scope(self, alias=""):
        """WHERE parts and arguments for the region and tickers options."""
        a = alias + "." if alias else ""
        parts, args = [], []
        if self.p["region"]:
            parts.append(a + "region = %s")
            args.append(self.p["region"])
        if self.p["tickers"]:
            parts.append(a + "ticker = ANY(%s)")
            args.append(self.p["tickers"])
        return parts, args

    def scope_sql(self, with_lookback=False, alias=""):
        """The full scope (tickers and dates) as one WHERE expression and its arguments."""
        a = alias + "." if alias else ""
        parts, args = self.ticker_scope(alias)
        if self.p["start_date"]:
            parts.append(a + ("date >= %s::date - %s" if with_lookback else "date >= %s::date"))
            args.extend([self.p["start_date"], self.p["lookback_days"]] if with_lookback else [self.p["start_date"]])
        if self.p["end_date"]:
            parts.append(a + "date <= %s::date")
            args.append(self.p["end_date"])
        return (" AND ".join(parts) or "true"), args

    def q(self, query, args=()):
        self.queries.append(" ".join(query.split()))
        self.cur.execute(query, args)

    # What "today" means ------------------------------------------------------------------
    def resolve_as_of(self):
        """Per exchange: the as_of date (the option, else today in the exchange's time zone),
        and the latest session whose bar is expected by then: sessions whose date plus
        publication_delay has passed at the end of as_of (or, by default, now). Exchanges
        come from the exchanges table (time zones kept by the calendars role), tickers and
        region_exchanges; one without a known time zone is judged in UTC, with a note."""
        self.q("""
            CREATE TEMP TABLE qa_asof ON COMMIT DROP AS
            WITH names AS (
                SELECT exchange FROM public.exchanges
                UNION SELECT exchange FROM public.tickers WHERE exchange IS NOT NULL
                UNION SELECT value FROM jsonb_each_text(%(map)s::jsonb)),
            zoned AS (
                SELECT n.exchange, e.timezone IS NOT NULL AS known_tz, coalesce(e.timezone, 'UTC') AS timezone,
                       CASE WHEN %(as_of)s::date IS NULL THEN now() AT TIME ZONE coalesce(e.timezone, 'UTC')
                            ELSE (%(as_of)s::date + 1)::timestamp END AS moment
                FROM names n LEFT JOIN public.exchanges e USING (exchange))
            SELECT z.exchange, z.known_tz, z.timezone, coalesce(%(as_of)s::date, z.moment::date) AS as_of,
                   -- a calendar that ends before as_of cannot tell which session is expected
                   CASE WHEN (SELECT max(s.session) FROM public.exchange_sessions s WHERE s.exchange = z.exchange)
                             >= coalesce(%(as_of)s::date, z.moment::date)
                        THEN (SELECT max(s.session) FROM public.exchange_sessions s
                              WHERE s.exchange = z.exchange AND s.session <= z.moment::date
                                AND s.session + %(delay)s::interval <= z.moment) END AS expected_session
            FROM zoned z""", {"map": json.dumps(self.p["region_exchanges"]), "as_of": self.p["as_of"],
                              "delay": self.p["publication_delay"]})
        self.q("SELECT exchange, timezone, known_tz, as_of, expected_session FROM qa_asof ORDER BY exchange")
        self.as_of = {}
        for exchange, tz, known_tz, as_of, expected in self.cur.fetchall():
            self.as_of[exchange] = {"as_of": as_of.isoformat(), "timezone": tz,
                                    "expected_session": expected.isoformat() if expected else None}
            if not known_tz and not self.p["as_of"]:
                self.notes.setdefault("as_of", []).append("%s: time zone unknown (run playbooks/calendars.yml); today taken in UTC" % exchange)
        # The latest as_of of all (exchanges a day ahead of others): bars after it are future
        # everywhere. Bars for an exchange not listed are judged against it too.
        self.q("""SELECT coalesce(%(d)s::date, max(as_of), (now() AT TIME ZONE 'UTC')::date),
                         coalesce(%(d)s::date, min(as_of), (now() AT TIME ZONE 'UTC')::date) FROM qa_asof""",
               {"d": self.p["as_of"]})
        self.cut, self.first_cut = self.cur.fetchone()

    # Passes --------------------------------------------------------------------------
    def stage(self):
        """One ordered pass over the scope (plus lookback) into a temp table: each bar with
        its previous/next closes, log returns and whether it repeats the previous bar's
        date. Ordering by date DESC matches the (ticker, region, date DESC) index, so the
        window needs no sort. Every later check reads qa_bars, never ohlcv_data again."""
        where, args = self.scope_sql(with_lookback=True)
        in_window = "date >= %s::date" if self.p["start_date"] else "true"
        win_args = [self.p["start_date"]] if self.p["start_date"] else []
        self.q("""
            CREATE TEMP TABLE qa_bars ON COMMIT DROP AS
            SELECT ticker, region, date, close, prev_close, dup,
                   CASE WHEN close > 0 AND prev_close > 0 THEN ln(close) - ln(prev_close) END AS r,
                   CASE WHEN next_close > 0 AND close > 0 THEN ln(next_close) - ln(close) END AS r_next,
                   CASE WHEN prev_close > 0 AND prev2_close > 0 THEN ln(prev_close) - ln(prev2_close) END AS r_prev,
                   (open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL OR volume IS NULL) AS nulls,
                   coalesce(high < greatest(open, close) OR low > least(open, close) OR high < low, false) AS ohlc,
                   coalesce(least(open, high, low, close) <= 0, false) AS nonpos,
                   coalesce(volume < 0, false) AS negvol,
                   coalesce(volume = 0 AND prev_close IS NOT NULL AND close <> prev_close, false) AS zeromove,
                   (%s) AS in_window
            FROM (SELECT ticker, region, date, open, high, low, close, volume,
                         lead(close) OVER w AS prev_close, lead(close, 2) OVER w AS prev2_close,
                         lag(close) OVER w AS next_close,
                         coalesce(date = lead(date) OVER w, false) AS dup
                  FROM public.ohlcv_data WHERE %s AND date <= %%s
                  WINDOW w AS (PARTITION BY ticker, region ORDER BY date DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                  UNION ALL
                  SELECT ticker, region, date, open, high, low, close, volume, NULL, NULL, NULL, false
                  FROM public.ohlcv_data WHERE %s AND date > %%s) b""" % (in_window, where, where),
               win_args + args + [self.cut] + args + [self.cut])
        self.q("ANALYZE qa_bars")  # a sample, so the joins below are planned as hash joins
        # Per ticker in one aggregate: bars in the window, and the mean and stddev of its
        # returns within the volatility cap (so the outliers looked for do not inflate them).
        self.q("""CREATE TEMP TABLE qa_stats ON COMMIT DROP AS
                  SELECT ticker, region, count(*) FILTER (WHERE in_window) AS bars,
                         avg(r) FILTER (WHERE abs(r) < %(cap)s) AS mu,
                         stddev_samp(r) FILTER (WHERE abs(r) < %(cap)s) AS sd
                  FROM qa_bars GROUP BY ticker, region""", {"cap": self.p["volatility_cap"]})
        self.q("SELECT coalesce(sum(bars), 0)::bigint FROM qa_stats")
        self.rows_scanned = self.cur.fetchone()[0]
        # Each ticker's exchange: tickers.exchange, else the region's.
        self.q("""CREATE TEMP TABLE qa_tickers ON COMMIT DROP AS
                  SELECT x.*, coalesce(a.as_of, %s::date) AS as_of
                  FROM (SELECT k.ticker, k.region, coalesce(t.exchange, m.exchange) AS exchange
                        FROM qa_stats k
                        LEFT JOIN public.tickers t USING (ticker, region)
                        LEFT JOIN (SELECT key AS region, value AS exchange FROM jsonb_each_text(%s::jsonb)) m USING (region)) x
                  LEFT JOIN qa_asof a USING (exchange)""",
               (self.cut, json.dumps(self.p["region_exchanges"])))
        self.q("ANALYZE qa_tickers")

    def row_checks(self):
        """Counts from the flags the stage computed; samples re-read only flagged bars."""
        n = self.p["sample_size"]
        names = ["null_values", "ohlc_violations", "non_positive_prices", "negative_volume",
                 "zero_volume_moves", "duplicates", "future_dates"]
        flags = ["nulls", "ohlc", "nonpos", "negvol", "zeromove", "dup",
                 # after the as_of of its exchange; only bars past the earliest as_of are looked up
                 "date > '%s'::date AND date > (SELECT t.as_of FROM qa_tickers t WHERE t.ticker = qa_bars.ticker"
                 " AND t.region = qa_bars.region)" % self.first_cut.isoformat()]
        self.q("SELECT %s FROM qa_bars WHERE in_window" % ", ".join("count(*) FILTER (WHERE %s)" % f for f in flags))
        counts = self.cur.fetchone()
        for name, flag, count in zip(names, flags, counts):
            self.counts[name] = count
            self.samples[name] = []
            if count:
                self.q("""SELECT jsonb_build_object('ticker', o.ticker, 'region', o.region, 'date', o.date, 'open', o.open,
                                 'high', o.high, 'low', o.low, 'close', o.close, 'volume', o.volume)
                          FROM (SELECT DISTINCT ticker, region, date FROM qa_bars WHERE in_window AND %s ORDER BY 1, 2, 3 LIMIT %%s) f
                          JOIN public.ohlcv_data o USING (ticker, region, date)
                          ORDER BY o.ticker, o.date LIMIT %%s""" % flag, (n, n))
                self.samples[name] = [r[0] for r in self.cur.fetchall()]

    def return_checks(self):
        """z = (r - mean) / stddev per ticker, both taken over returns within the
        volatility cap, so the outliers looked for do not inflate the yardstick. A return
        is extreme beyond z_threshold; with the previous and next returns at hand (from
        the stage), spikes, their reversals and lone jumps are told apart with no window."""
        n = self.p["sample_size"]
        ratios = "ARRAY[%s]::float8[]" % ",".join(repr(r) for r in SPLIT_RATIOS)
        self.q("""
            CREATE TEMP TABLE qa_flags ON COMMIT DROP AS
            WITH z AS (
                SELECT b.ticker, b.region, b.date, b.close, b.prev_close, b.r, s.mu, s.sd,
                       (b.r - s.mu) / s.sd AS z, (b.r_next - s.mu) / s.sd AS next_z, (b.r_prev - s.mu) / s.sd AS prev_z
                FROM qa_bars b JOIN qa_stats s USING (ticker, region)
                WHERE b.in_window AND s.sd > 0 AND abs(b.r - s.mu) > %(thr)s * s.sd),
            classified AS (
                SELECT *, coalesce(abs(next_z) > %(thr)s AND sign(next_z) <> sign(z), false) AS spike,
                          coalesce(abs(prev_z) > %(thr)s AND sign(prev_z) <> sign(z), false) AS reversal
                FROM z)
            SELECT ticker, region, date, close, prev_close, round(z::numeric, 2) AS z, spike,
                   NOT spike AND NOT reversal AS jump,
                   EXISTS (SELECT 1 FROM unnest(%(ratios)s) AS k(ratio)
                           WHERE abs(r - ln(k.ratio) - mu) <= %(tol)s * sd) AS at_split_ratio,
                   EXISTS (SELECT 1 FROM public.corporate_actions ca
                           WHERE ca.ticker = c.ticker AND ca.region = c.region AND ca.ex_date = c.date) AS explained
            FROM classified c""".replace("%(ratios)s", ratios),
               {"thr": self.p["z_threshold"], "tol": self.p["split_tolerance"]})
        self.q("""SELECT count(*) FILTER (WHERE spike OR (jump AND NOT at_split_ratio AND NOT explained)),
                         count(*) FILTER (WHERE jump AND at_split_ratio AND NOT explained),
                         (array_agg(to_jsonb(f) - 'jump' - 'explained') FILTER (WHERE spike OR (jump AND NOT at_split_ratio AND NOT explained)))[1:%(n)s],
                         (array_agg(to_jsonb(f) - 'spike' - 'explained') FILTER (WHERE jump AND at_split_ratio AND NOT explained))[1:%(n)s]
                  FROM qa_flags f""", {"n": n})
        row = self.cur.fetchone()
        self.counts["price_anomalies"], self.counts["split_jumps"] = row[0], row[1]
        self.samples["price_anomalies"], self.samples["split_jumps"] = row[2] or [], row[3] or []

    def duplicates(self):
        """The stage marked every bar repeating the previous bar's (ticker, region, date)."""
        self.q(HAS_UNIQUE_KEY)
        if self.cur.fetchone()[0]:
            self.notes["duplicates"] = "guaranteed by a unique index on (ticker, region, date)"

    def calendar_checks(self):
        n = self.p["sample_size"]
        # Session numbers per exchange turn "sessions between two dates" into a subtraction.
        self.q("""CREATE TEMP TABLE qa_sessions ON COMMIT DROP AS
                  SELECT exchange, session, row_number() OVER (PARTITION BY exchange ORDER BY session) AS n
                  FROM public.exchange_sessions
                  WHERE exchange IN (SELECT DISTINCT exchange FROM qa_tickers)""")
        self.q("CREATE UNIQUE INDEX ON qa_sessions (exchange, session)")
        self.q("ANALYZE qa_sessions")
        self.q("""SELECT array_agg(DISTINCT t.exchange) FROM qa_tickers t
                  WHERE NOT EXISTS (SELECT 1 FROM qa_sessions s WHERE s.exchange = t.exchange)""")
        no_calendar = self.cur.fetchone()[0]
        if no_calendar:
            self.notes["missing_sessions"] = self.notes["extra_sessions"] = \
                "no sessions loaded for %s: their tickers are not checked" % ", ".join(no_calendar)
        # One pass: per ticker its span, the bars on sessions and the bars on non-sessions
        # (inside the calendar's own span). Missing = sessions in the span - bars on sessions.
        self.q("""CREATE TEMP TABLE qa_span ON COMMIT DROP AS
                  SELECT b.ticker, b.region, t.exchange, min(b.date) AS lo, max(b.date) AS hi,
                         count(*) FILTER (WHERE s.session IS NOT NULL AND NOT b.dup) AS on_sessions,
                         count(*) FILTER (WHERE s.session IS NULL AND b.date BETWEEN c.lo AND c.hi) AS extra
                  FROM qa_bars b JOIN qa_tickers t USING (ticker, region)
                  JOIN (SELECT exchange, min(session) lo, max(session) hi FROM qa_sessions GROUP BY exchange) c
                    ON c.exchange = t.exchange
                  LEFT JOIN qa_sessions s ON s.exchange = t.exchange AND s.session = b.date
                  WHERE b.in_window AND b.date <= t.as_of
                  GROUP BY b.ticker, b.region, t.exchange""")
        self.q("""CREATE TEMP TABLE qa_gaps ON COMMIT DROP AS
                  SELECT sp.*, hi_n.n - lo_n.n + 1 - sp.on_sessions AS missing
                  FROM qa_span sp
                  CROSS JOIN LATERAL (SELECT (SELECT n FROM qa_sessions s WHERE s.exchange = sp.exchange AND s.session <= sp.hi
                                              ORDER BY s.session DESC LIMIT 1) AS n) hi_n
                  CROSS JOIN LATERAL (SELECT (SELECT n FROM qa_sessions s WHERE s.exchange = sp.exchange AND s.session >= sp.lo
                                              ORDER BY s.session LIMIT 1) AS n) lo_n""")
        self.q("SELECT coalesce(sum(missing), 0)::bigint, coalesce(sum(extra), 0)::bigint FROM qa_gaps")
        self.counts["missing_sessions"], self.counts["extra_sessions"] = self.cur.fetchone()
        # Samples: only for the few tickers with findings.
        self.q("""SELECT jsonb_build_object('ticker', ticker, 'region', region, 'from', min(session),
                                            'to', max(session), 'sessions', count(*))
                  FROM (SELECT g.ticker, g.region, s.session, s.n - row_number() OVER (PARTITION BY g.ticker, g.region ORDER BY s.n) AS island
                        FROM qa_gaps g JOIN qa_sessions s ON s.exchange = g.exchange AND s.session BETWEEN g.lo AND g.hi
                        WHERE g.missing > 0
                          AND NOT EXISTS (SELECT 1 FROM public.ohlcv_data o
                                          WHERE o.ticker = g.ticker AND o.region = g.region AND o.date = s.session)) m
                  GROUP BY ticker, region, island ORDER BY count(*) DESC, ticker LIMIT %s""", (n,))
        self.samples["missing_sessions"] = [r[0] for r in self.cur.fetchall()]
        self.q("""SELECT jsonb_build_object('ticker', b.ticker, 'region', b.region, 'date', b.date)
                  FROM qa_gaps g JOIN public.ohlcv_data b USING (ticker, region)
                  WHERE g.extra > 0 AND b.date BETWEEN g.lo AND g.hi
                    AND NOT EXISTS (SELECT 1 FROM qa_sessions s WHERE s.exchange = g.exchange AND s.session = b.date)
                  ORDER BY b.ticker, b.date LIMIT %s""", (n,))
        self.samples["extra_sessions"] = [r[0] for r in self.cur.fetchall()]
        # Bars outside their exchange's loaded calendar (or of an exchange with none) are
        # checked for neither missing nor extra sessions: a finding of their own.
        self.q("""SELECT coalesce(sum(bars), 0)::bigint,
                         (array_agg(jsonb_build_object('ticker', ticker, 'region', region, 'exchange', exchange,
                                                       'from', lo, 'to', hi, 'bars', bars,
                                                       'calendar_from', cal_lo, 'calendar_to', cal_hi)
                                    ORDER BY bars DESC, ticker))[1:%s]
                  FROM (SELECT b.ticker, b.region, t.exchange, c.lo AS cal_lo, c.hi AS cal_hi,
                               min(b.date) AS lo, max(b.date) AS hi, count(*) AS bars
                        FROM qa_bars b JOIN qa_tickers t USING (ticker, region)
                        LEFT JOIN (SELECT exchange, min(session) lo, max(session) hi FROM qa_sessions GROUP BY exchange) c
                          ON c.exchange = t.exchange
                        WHERE b.in_window AND b.date <= t.as_of AND (c.lo IS NULL OR b.date NOT BETWEEN c.lo AND c.hi)
                        GROUP BY b.ticker, b.region, t.exchange, c.lo, c.hi) u""", (n,))
        self.counts["uncovered_bars"], samples = self.cur.fetchone()
        self.samples["uncovered_bars"] = samples or []

    def stale(self):
        """The guide's DataStale: each active ticker's last bar (up to as_of) against the
        latest session of its exchange whose bar is expected by as_of (qa_asof); a ticker
        more than stale_sessions sessions behind is stale. Per region and exchange, the
        newest bar of all its tickers against the same session: a feed that stopped for
        every ticker is a stale region (more than stale_region_sessions behind)."""
        parts, args = self.ticker_scope("t")  # dates do not decide which tickers are active
        where = " AND ".join(parts) or "true"
        self.q("""
            CREATE TEMP TABLE qa_age ON COMMIT DROP AS
            WITH active AS (
                SELECT t.ticker, t.region, t.exchange, a.as_of, a.expected_session
                FROM public.tickers t JOIN qa_asof a USING (exchange) WHERE t.is_active AND %s)
            SELECT a.*, (SELECT max(o.date) FROM public.ohlcv_data o
                         WHERE o.ticker = a.ticker AND o.region = a.region AND o.date <= a.as_of) AS last_date
            FROM active a""" % where, args)
        self.q("""SELECT count(*) FILTER (WHERE expected_session IS NULL),
                         array_agg(DISTINCT exchange) FILTER (WHERE expected_session IS NULL) FROM qa_age""")
        unjudged, exchanges = self.cur.fetchone()
        if unjudged:
            self.notes["stale_tickers"] = self.notes["stale_regions"] = (
                "the loaded calendar of %s does not reach as_of (run playbooks/calendars.yml): %d ticker(s) not judged"
                % (", ".join(exchanges), unjudged))
        behind = """(SELECT count(*) FROM public.exchange_sessions s WHERE s.exchange = %s.exchange
                      AND s.session > coalesce(%s, '-infinity') AND s.session <= %s.expected_session)"""
        self.q("""
            SELECT count(*), (array_agg(jsonb_build_object('ticker', ticker, 'region', region, 'last_date', last_date,
                                                          'expected_session', expected_session, 'sessions_behind', behind)
                                        ORDER BY behind DESC, ticker))[1:%%s]
            FROM (SELECT g.*, %s AS behind FROM qa_age g WHERE g.expected_session IS NOT NULL) x
            WHERE last_date IS NULL OR behind > %%s""" % (behind % ("g", "g.last_date", "g")),
               (self.p["sample_size"], self.p["stale_sessions"]))
        self.counts["stale_tickers"], samples = self.cur.fetchone()
        self.samples["stale_tickers"] = samples or []
        self.q("""
            SELECT count(*), (array_agg(jsonb_build_object('region', region, 'exchange', exchange, 'tickers', tickers,
                                                          'latest_bar', latest_bar, 'expected_session', expected_session,
                                                          'sessions_behind', behind) ORDER BY behind DESC, region))[1:%%s]
            FROM (SELECT f.*, %s AS behind
                  FROM (SELECT region, exchange, expected_session, count(*) AS tickers, max(last_date) AS latest_bar
                        FROM qa_age WHERE expected_session IS NOT NULL
                        GROUP BY region, exchange, expected_session) f) x
            WHERE latest_bar IS NULL OR behind > %%s""" % (behind % ("f", "f.latest_bar", "f")),
               (self.p["sample_size"], self.p["stale_region_sessions"]))
        self.counts["stale_regions"], samples = self.cur.fetchone()
        self.samples["stale_regions"] = samples or []

    def fix_duplicates(self):
        where, args = self.scope_sql()
        self.q(dedupe_statement(where), list(args) + list(args))
        return self.cur.rowcount


def threshold_problem(thresholds):
    """None when every entry of thresholds is {warn: N, fail: N} (either may be missing or
    null, N a whole count >= 0); otherwise a message naming the entry."""
    for name, limits in thresholds.items():
        if not isinstance(limits, dict) or set(limits) - {"warn", "fail"} or not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) for v in limits.values()):
            return ("thresholds.%s must be a mapping of warn and/or fail to a count >= 0 (or null), "
                    "e.g. {warn: 1, fail: 50}; got %r" % (name, limits))
    return None


def status_of(count, limits):
    if limits.get("fail") is not None and count >= limits["fail"]:
        return "fail"
    if limits.get("warn") is not None and count >= limits["warn"]:
        return "warn"
    return "ok"


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        region=dict(type="str"), tickers=dict(type="list", elements="str"),
        start_date=dict(type="str"), end_date=dict(type="str"),
        checks=dict(type="list", elements="str"), thresholds=dict(type="dict", default={}),
        z_threshold=dict(type="float", default=10.0), lookback_days=dict(type="int", default=120),
        volatility_cap=dict(type="float", default=0.25),
        stale_sessions=dict(type="int", default=7), split_tolerance=dict(type="float", default=4.0),
        as_of=dict(type="str"), publication_delay=dict(type="str", default="18 hours"),
        stale_region_sessions=dict(type="int", default=0),
        region_exchanges=dict(type="dict", default=region_exchanges()),
        sample_size=dict(type="int", default=5), work_mem=dict(type="str", default="256MB"),
        jit=dict(type="bool", default=True),
        temp_buffers=dict(type="str", default="256MB"),
        fix=dict(type="bool", default=False), record_results=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    checks = p["checks"] or CHECKS
    unknown = sorted(set(checks) - set(CHECKS)) + sorted(set(p["thresholds"]) - set(CHECKS))
    if unknown:
        module.fail_json(msg="unknown check(s) %s; known: %s" % (", ".join(unknown), ", ".join(CHECKS)))
    problem = threshold_problem(p["thresholds"])
    if problem:
        module.fail_json(msg=problem)
    for key in ("start_date", "end_date", "as_of"):
        if p[key]:
            try:
                date.fromisoformat(p[key])
            except ValueError:
                module.fail_json(msg="%s must be an ISO date (YYYY-MM-DD), got %r" % (key, p[key]))
    for key, ok, rule in (("z_threshold", p["z_threshold"] > 0, "> 0"), ("stale_sessions", p["stale_sessions"] >= 1, ">= 1"),
                          ("lookback_days", p["lookback_days"] >= 0, ">= 0"),
                          ("stale_region_sessions", p["stale_region_sessions"] >= 0, ">= 0"),
                          ("volatility_cap", p["volatility_cap"] > 0, "> 0"), ("split_tolerance", p["split_tolerance"] >= 0, ">= 0"),
                          ("sample_size", p["sample_size"] >= 0, ">= 0")):
        if not ok:
            module.fail_json(msg="%s must be %s, got %r" % (key, rule, p[key]))

    watch = Stopwatch()
    conn = connect(module)
    audit = Audit(module, conn)
    fixed = 0
    # Reads ohlcv_data, deletes from it with fix, records into quality_audit_results: a lock held
    # past lock_timeout fails naming its holder.
    writes = p["fix"] or p["record_results"]
    failure = lock_aware(module, "audit failed, nothing changed", conn, ["public.ohlcv_data", "public.quality_audit_results"],
                         "RowExclusiveLock" if writes else "AccessShareLock", prefix="audit", outcome="nothing changed")
    with transaction(module, conn, failure):
        # temp_buffers must be set before the session's first temp table.
        audit.q("SELECT set_config('temp_buffers', %s, false), set_config('work_mem', %s, true),"
                " set_config('jit', %s, true)", (p["temp_buffers"], p["work_mem"], "on" if p["jit"] else "off"))
        if p["fix"]:
            fixed = audit.fix_duplicates()
        try:
            with conn.transaction():
                audit.q("SELECT %s::interval", (p["publication_delay"],))
        except psycopg.DataError:
            module.fail_json(msg="publication_delay must be a PostgreSQL interval such as '18 hours', got %r"
                                 % p["publication_delay"])
        audit.resolve_as_of()
        audit.stage()
        audit.row_checks()
        audit.return_checks()
        audit.duplicates()
        audit.calendar_checks()
        audit.stale()
        seconds = round(watch.ms / 1000.0, 3)
        generated_at = datetime.now(timezone.utc).isoformat()
        report_checks = {}
        for name in checks:
            limits = dict(DEFAULT_THRESHOLDS[name], **(p["thresholds"].get(name) or {}))
            entry = {"status": status_of(audit.counts[name], limits), "count": int(audit.counts[name]),
                     "samples": [jsonable(s) for s in audit.samples.get(name, [])]}
            if name in audit.notes:
                entry["note"] = audit.notes[name]
            report_checks[name] = entry
        scope = {k: p[k] for k in ("region", "tickers", "start_date", "end_date", "as_of")}
        report = {"generated_at": generated_at, "database": p["login_db"], "as_of": p["as_of"],
                  "as_of_by_exchange": audit.as_of, "rows_scanned": int(audit.rows_scanned),
                  "seconds": seconds, "scope": scope, "fixed_duplicates": fixed, "checks": report_checks}
        if "as_of" in audit.notes:
            report["notes"] = audit.notes["as_of"]
        if p["record_results"] and not module.check_mode:
            audit.q("SELECT nextval('public.quality_audit_run_seq')")
            run_id = audit.cur.fetchone()[0]
            audit.cur.executemany(
                """INSERT INTO public.quality_audit_results
                   (run_id, generated_at, scope, check_name, status, count, rows_scanned, seconds)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                [(run_id, generated_at, json.dumps(scope), n, c["status"], c["count"], audit.rows_scanned, seconds)
                 for n, c in report_checks.items()])
            report["run_id"] = run_id
    failed = sorted(n for n, c in report["checks"].items() if c["status"] == "fail")
    module.exit_json(changed=fixed > 0, report=report, failed_checks=failed, fixed=fixed, queries=audit.queries)


if __name__ == "__main__":
    main()
