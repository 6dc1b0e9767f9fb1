# -*- coding: utf-8 -*-
"""What quantdb-ops knows about ohlcv_data, in one place: the exchange of each region, the
unique key's index, the prewarm of recent chunks, and SQL shared by the modules that read or
repair the table.

Pure Python, no imports: the modules use it as ansible.module_utils.quantdb_ohlcv, the unit
tests and tools import it directly. Its users:
  REGION_EXCHANGES        ohlcv_ingest and ohlcv_quality_audit (default of region_exchanges),
                          exchange_calendar_sessions (the exchanges always computed),
                          tools/sample_data.py; documented in doc_fragments/quantdb_ohlcv.py
  unique_index_ddl()      ohlcv_unique_key (adoption), ohlcv_ingest (backfill rebuild)
  PREWARM_RECENT          ohlcv_ingest (prewarm_recent) and ohlcv_prewarm (playbooks/bench.yml)
The schema role's migration 0002 creates the same index; a migration's text is checksummed
once applied, so it keeps its own copy (a test compares the two).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The exchange (MIC, as exchange_calendars names it) whose calendar each region's bars follow.
REGION_EXCHANGES = {"KR": "XKRX", "US": "XNYS"}


def region_exchanges():
    """A fresh copy of REGION_EXCHANGES (argument_spec defaults must not share one dict)."""
    return dict(REGION_EXCHANGES)


# The unique key of ohlcv_data, (ticker, region, date), as an index, and the date index
# TimescaleDB creates with the hypertable (a backfill drops and rebuilds both).
UNIQUE_INDEX = "idx_ohlcv_ticker_region_date"
UNIQUE_INDEX_COLUMNS = "(ticker, region, date DESC)"
DATE_INDEX = "ohlcv_data_date_idx"
DATE_INDEX_COLUMNS = "(date DESC)"


def quote_ident(name):
    """An SQL identifier, always double-quoted (as psycopg's sql.Identifier renders it)."""
    if not name or "\x00" in name:
        raise ValueError("invalid identifier %r" % (name,))
    return '"%s"' % name.replace('"', '""')


def unique_index_ddl(name=UNIQUE_INDEX):
    """CREATE UNIQUE INDEX <name> on ohlcv_data's key (ticker, region, date DESC)."""
    return "CREATE UNIQUE INDEX %s ON public.ohlcv_data %s" % (quote_ident(name), UNIQUE_INDEX_COLUMNS)


def date_index_ddl(name=DATE_INDEX):
    """CREATE INDEX <name> on ohlcv_data (date DESC), the hypertable's default time index."""
    return "CREATE INDEX %s ON public.ohlcv_data %s" % (quote_ident(name), DATE_INDEX_COLUMNS)


def drop_index_ddl(name, if_exists=False):
    return "DROP INDEX %spublic.%s" % ("IF EXISTS " if if_exists else "", quote_ident(name))


# Whether ohlcv_data has a unique index on exactly (ticker, region, date), in any order.
HAS_UNIQUE_KEY = """
SELECT EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = 'public.ohlcv_data'::regclass AND i.indisunique AND i.indpred IS NULL
    GROUP BY i.indexrelid
    HAVING array_agg(a.attname::text ORDER BY a.attname) = ARRAY['date', 'region', 'ticker'] AND count(*) = 3)"""


def dedupe_statement(where="true"):
    """DELETE every duplicate bar (same ticker, region, date) but the one with the earliest
    created_at (the operations guide's rule; the lower id breaks a tie), among the rows the SQL
    condition `where` selects. Its placeholders, if any, are bound twice: pass the args twice."""
    return """
DELETE FROM public.ohlcv_data WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY ticker, region, date ORDER BY created_at, id) AS rn
        FROM public.ohlcv_data
        WHERE %s AND (ticker, region, date) IN (SELECT ticker, region, date FROM public.ohlcv_data WHERE %s
                                                GROUP BY ticker, region, date HAVING count(*) > 1)) d
    WHERE rn > 1)""" % (where, where)


# The prewarm: the chunks holding the most recent data (an interval back from the newest bar,
# the one parameter) and every index on them, into shared_buffers with pg_prewarm. Returns the
# number of blocks loaded.
HAS_PG_PREWARM = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm')"
PREWARM_RECENT = """
WITH recent AS (
    SELECT c AS rel FROM show_chunks('public.ohlcv_data',
        newer_than => ((SELECT max(date) FROM public.ohlcv_data) - %s::interval)::date) c
)
SELECT coalesce(sum(pg_prewarm(rel)), 0) FROM (
    SELECT rel FROM recent
    UNION ALL
    SELECT i.indexrelid::regclass FROM pg_index i JOIN recent r ON i.indrelid = r.rel
) rels"""


def prewarm_recent(conn, interval):
    """Prewarm the chunks of the last `interval` (a PostgreSQL interval such as '2 years') on a
    psycopg connection. Returns the blocks loaded, or None when the pg_prewarm extension is
    not installed in the database. Database errors are the caller's."""
    if not conn.execute(HAS_PG_PREWARM).fetchone()[0]:
        return None
    return int(conn.execute(PREWARM_RECENT, (interval,)).fetchone()[0])
