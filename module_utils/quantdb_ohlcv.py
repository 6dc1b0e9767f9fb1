# -*- coding: utf-8 -*-
"""SQL about ohlcv_data shared by the modules that read or repair it."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

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
