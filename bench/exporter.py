#!/usr/bin/env python3
"""The project's exporter under the benchmark (playbooks/bench.yml, make bench): scrape time at
its real port with the cache warm, and the exporter's own load on the database it watches.

    python3 exporter.py --url http://127.0.0.1:8000/metrics --dsn dbname=bench --user quant_monitor --window 150

Runs on the database host as postgres (pg_stat_statements of every role is readable). It
waits until the exporter has refreshed its slow cache against the database (postgres_up 1 and
postgres_table_rows of ohlcv_data present), then takes pg_stat_statements' totals of the
exporter's login for `--window` seconds (its refreshes and SLO probes run meanwhile, at the
service's own intervals) and scrapes `--scrapes` times. Prints one JSON object:
scrape_p50_ms, scrape_p95_ms, scrape_max_ms, window_s, statements_per_min,
exec_ms_per_min (execution time of the exporter's statements per minute of wall time) and
top_statements (the three with most total time in the window).
"""
import argparse
import json
import re
import sys
import time
import urllib.request

import psycopg

TOTALS = """
    SELECT queryid, left(regexp_replace(query, '\\s+', ' ', 'g'), 80), calls, total_exec_time
    FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
    WHERE r.rolname = %s AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def scrape(url):
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return (time.perf_counter() - t0) * 1000.0, text


def totals(conn, user):
    with conn.cursor() as cur:
        cur.execute(TOTALS, (user,))
        return {row[0]: row[1:] for row in cur.fetchall()}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000/metrics")
    p.add_argument("--dsn", required=True, help="libpq string of the watched database (as a role that reads pg_stat_statements)")
    p.add_argument("--user", default="quant_monitor", help="the exporter's login role")
    p.add_argument("--window", type=float, default=150.0, help="seconds of exporter load to measure")
    p.add_argument("--scrapes", type=int, default=50)
    p.add_argument("--ready-timeout", type=float, default=300.0)
    args = p.parse_args()

    deadline = time.time() + args.ready_timeout
    while True:
        try:
            _, text = scrape(args.url)
            if re.search(r"^postgres_up 1", text, re.M) and 'postgres_table_rows{table="ohlcv_data"}' in text:
                break
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit("exporter.py: %s did not report the database within %ss" % (args.url, args.ready_timeout))
        time.sleep(2)

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        before, t0 = totals(conn, args.user), time.time()
        durations = []
        # Scrapes spread over the window, as Prometheus would make them.
        pause = args.window / max(args.scrapes, 1)
        for _ in range(args.scrapes):
            ms, _ = scrape(args.url)
            durations.append(ms)
            time.sleep(max(0.0, pause - ms / 1000.0))
        time.sleep(max(0.0, args.window - (time.time() - t0)))
        after, window = totals(conn, args.user), time.time() - t0

    deltas = []
    for queryid, (query, calls, total) in after.items():
        calls0, total0 = before.get(queryid, (None, 0, 0.0))[1:]
        if calls - calls0 > 0:
            deltas.append((total - total0, calls - calls0, query))
    deltas.sort(reverse=True)
    minutes = window / 60.0
    result = {
        "scrape_p50_ms": round(percentile(durations, 0.50), 2),
        "scrape_p95_ms": round(percentile(durations, 0.95), 2),
        "scrape_max_ms": round(max(durations), 2),
        "scrapes": len(durations),
        "window_s": round(window, 1),
        "statements_per_min": round(sum(d[1] for d in deltas) / minutes, 1),
        "exec_ms_per_min": round(sum(d[0] for d in deltas) / minutes, 1),
        "top_statements": [{"ms": round(ms, 1), "calls": calls, "query": text} for ms, calls, text in deltas[:3]],
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
