#!/usr/bin/python3
"""quantdb-exporter: the quant platform's own Prometheus exporter (docs/monitoring.md).

What no generic exporter knows: the operations guide's `postgres_*` names, data quality (audit
results, quarantine, freshness against the exchange calendars), TimescaleDB, backups (the
backup role's status file) and SLO probes. Generic server metrics come from Debian's
prometheus-postgres-exporter; names that recording rules build from it are not exposed here.

Three background threads, each with its own connection (libpq parameters from the PG*
environment, e.g. PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE):
  fast   every --fast-interval s: reachability (postgres_up), activity, statistics views;
  slow   every --slow-interval s: sizes, TimescaleDB, data quality, freshness;
  probe  every --probe-interval s: the guide's single-ticker 250-day read and 5 y x 50-ticker
         backtest against random tickers, into postgres_query_duration_seconds.
A scrape only formats what the threads cached: it never waits for PostgreSQL. PostgreSQL
down = postgres_up 0 and the database families absent; an absent table = its families absent.
"""
import argparse
import collections
import datetime
import json
import logging
import os
import random
import re
import signal
import threading
import time

try:   # the pure parts below are imported by the unit tests without these
    from zoneinfo import ZoneInfo
except ImportError:   # pragma: no cover
    ZoneInfo = None

LOG = logging.getLogger("quantdb-exporter")
EPOCH_DATE = datetime.date(1970, 1, 1)
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SINGLE_TICKER_SQL = ("SELECT date, open, high, low, close, volume FROM public.ohlcv_data"
                     " WHERE ticker = %s AND region = %s ORDER BY date DESC LIMIT 250")
BACKTEST_SQL = ("SELECT ticker, date, open, high, low, close, volume FROM public.ohlcv_data"
                " WHERE region = %s AND ticker = ANY(%s) AND date >= %s ORDER BY ticker, date")


# ---------------------------------------------------------------------------------------------
# Pure parts (unit-tested without a database)
# ---------------------------------------------------------------------------------------------
class Family:
    """One metric family as plain data: name, type (gauge, counter), help, label names and
    samples [(label values, value)]. Converted to prometheus_client families at scrape time."""

    __slots__ = ("name", "kind", "help", "labels", "samples")

    def __init__(self, name, kind, help_text, labels=()):
        self.name, self.kind, self.help, self.labels, self.samples = name, kind, help_text, tuple(labels), []

    def add(self, value, *label_values):
        if value is None:
            return self
        self.samples.append((tuple("" if v is None else str(v) for v in label_values), float(value)))
        return self


def epoch_of_date(day):
    """Seconds since the epoch of a date's 00:00 UTC; None for None."""
    if day is None:
        return None
    return float((day - EPOCH_DATE).days * 86400)


def parse_interval(text):
    """A PostgreSQL-like interval of hours/minutes/seconds ('18 hours', '90 min', '30s') as a
    timedelta. Raises ValueError on anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(h|hours?|min|minutes?|m|s|sec|seconds?)\s*", str(text))
    if not match:
        raise ValueError("interval like '18 hours', '90 min' or '30 s' expected, got %r" % (text,))
    number, unit = float(match.group(1)), match.group(2)
    if unit.startswith("h"):
        return datetime.timedelta(hours=number)
    if unit.startswith("m"):
        return datetime.timedelta(minutes=number)
    return datetime.timedelta(seconds=number)


def expected_session(sessions, calendar_end, now_utc, timezone, delay):
    """The latest session whose bar should be published at now_utc: a session s with s <= the
    exchange's local date and local midnight of s + delay <= local now. None when the calendar
    (calendar_end, its last session) ends before the local date: it cannot tell.
    sessions: the recent sessions (dates, any order); timezone: an IANA name or None (UTC)."""
    zone = ZoneInfo(timezone) if timezone and ZoneInfo else datetime.timezone.utc
    local = now_utc.astimezone(zone).replace(tzinfo=None)
    if calendar_end is None or calendar_end < local.date():
        return None
    due = [s for s in sessions
           if s <= local.date() and datetime.datetime.combine(s, datetime.time()) + delay <= local]
    return max(due) if due else None


def freshness(latest_by_ticker, expected_by_exchange, now_epoch):
    """From active tickers' latest bars [(region, exchange, latest date or None)] and each
    exchange's expected session: per region the latest bar, its age in seconds, the active
    ticker count and the tickers without the expected session's bar (only where an exchange of
    the region has one); per (region, exchange) the latest bar."""
    out = {"latest": {}, "age": {}, "tickers": collections.Counter(), "missing": {},
           "latest_by_exchange": {}}
    for region, exchange, latest in latest_by_ticker:
        out["tickers"][region] += 1
        if latest is not None:
            if out["latest"].get(region) is None or latest > out["latest"][region]:
                out["latest"][region] = latest
            key = (region, exchange)
            if out["latest_by_exchange"].get(key) is None or latest > out["latest_by_exchange"][key]:
                out["latest_by_exchange"][key] = latest
        expected = expected_by_exchange.get(exchange)
        if expected is not None:
            out["missing"].setdefault(region, 0)
            if latest is None or latest < expected:
                out["missing"][region] += 1
    for region, latest in out["latest"].items():
        out["age"][region] = max(0.0, now_epoch - epoch_of_date(latest))
    return out


def parse_backup_status(text):
    """The backup role's status file (JSON, roles/backup/files/quantdb-backup) as
    {type: {"success": epoch or 0, "failure": epoch or 0, "size": bytes or None,
    "duration": seconds or None}} for full, diff, incr and logical, plus "_repo_size".
    Unknown or broken content raises ValueError."""
    status = json.loads(text)
    if not isinstance(status, dict):
        raise ValueError("the backup status file is not a JSON object")
    types = status.get("types") or {}
    out = {}
    repo_size = None
    for kind in ("full", "diff", "incr", "logical"):
        entry = types.get(kind) or {}
        success, failure = entry.get("last_success") or {}, entry.get("last_failure") or {}
        out[kind] = {"success": float(success.get("end_epoch") or 0), "failure": float(failure.get("end_epoch") or 0),
                     "size": success.get("size_bytes"), "duration": success.get("duration_seconds")}
    last = status.get("last_success") or {}
    if last.get("repo_size_bytes") is not None:
        repo_size = float(last["repo_size_bytes"])
    out["_repo_size"] = repo_size
    return out


def statement_class(query):
    """The guide's query classes for pg_stat_statements text: backtest (many tickers), single
    ticker, other reads of the bar tables, or other."""
    text = " ".join(query.lower().split())
    if not re.search(r"\b(ohlcv_data|technical_analysis|factor_scores|ohlcv_monthly)\b", text):
        return "other"
    if re.search(r"ticker\s*(=\s*any\s*\(|in\s*\()", text):
        return "backtest"
    if re.search(r"ticker\s*=\s*\$\d+", text):
        return "single_ticker"
    return "bars_other"


class SlowQueryCounter:
    """postgres_slow_queries_total: calls of pg_stat_statements entries whose mean time is over
    the threshold, made monotonic. Each refresh gives {key: (calls, mean_ms)}; the counter grows
    by the calls an entry gained while slow (all its calls when first seen slow, which counts
    statements that ran before the exporter started once). A reset (fewer calls) restarts it."""

    def __init__(self, threshold_ms=1000.0):
        self.threshold_ms, self.total, self.seen = threshold_ms, 0.0, {}

    def update(self, entries):
        for key, (calls, mean_ms) in entries.items():
            before = self.seen.get(key)
            if mean_ms > self.threshold_ms:
                self.total += calls - before if before is not None and calls >= before else calls
            self.seen[key] = calls
        self.seen = {k: v for k, v in self.seen.items() if k in entries}
        return self.total


class Histogram:
    """A cumulative histogram per label value, kept as plain numbers."""

    def __init__(self, buckets=PROBE_BUCKETS):
        self.buckets = tuple(sorted(buckets))
        self.series = {}
        self.lock = threading.Lock()

    def observe(self, label, seconds):
        with self.lock:
            counts, total, count = self.series.get(label, ([0] * len(self.buckets), 0.0, 0))
            counts = [c + (1 if seconds <= bound else 0) for c, bound in zip(counts, self.buckets)]
            self.series[label] = (counts, total + seconds, count + 1)

    def snapshot(self):
        """{label: ([(le string, cumulative count)...,("+Inf", count)], sum)}"""
        with self.lock:
            return {label: ([(repr(float(b)), c) for b, c in zip(self.buckets, counts)] + [("+Inf", count)], total)
                    for label, (counts, total, count) in self.series.items()}


class LoadMeter:
    """Statements and database milliseconds of one source over a sliding window."""

    def __init__(self, window=600.0, clock=time.monotonic):
        self.window, self.clock, self.events, self.started = window, clock, collections.deque(), clock()
        self.statements, self.seconds = 0, 0.0
        self.lock = threading.Lock()

    def record(self, seconds):
        with self.lock:
            self.events.append((self.clock(), seconds))
            self.statements += 1
            self.seconds += seconds

    def per_minute(self):
        """(statements per minute, ms per minute) averaged over the window (or the uptime)."""
        with self.lock:
            now = self.clock()
            while self.events and self.events[0][0] < now - self.window:
                self.events.popleft()
            span = max(60.0, min(self.window, now - self.started))
            return (len(self.events) * 60.0 / span, sum(s for _, s in self.events) * 1000.0 * 60.0 / span)


# ---------------------------------------------------------------------------------------------
# Database side
# ---------------------------------------------------------------------------------------------
class Db:
    """One autocommit connection of one thread, every statement timed into a LoadMeter."""

    def __init__(self, name, meter, connect_timeout):
        self.name, self.meter, self.connect_timeout, self.conn = name, meter, connect_timeout, None

    def connect(self):
        import psycopg   # imported here: the unit tests load this file without psycopg
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(autocommit=True, connect_timeout=self.connect_timeout,
                                        application_name="quantdb-exporter-" + self.name)
        return self.conn

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:   # noqa: BLE001 - closing a broken connection
                pass
        self.conn = None

    def rows(self, query, args=None):
        started = time.monotonic()
        try:
            with self.connect().cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else []
        finally:
            self.meter.record(time.monotonic() - started)

    def value(self, query, args=None):
        result = self.rows(query, args)
        return result[0][0] if result else None

    def exists(self, *relations):
        return all(self.value("SELECT to_regclass(%s) IS NOT NULL", (r,)) for r in relations)


def connection_lost(exc):
    import psycopg
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


class Collectors:
    """The queries behind each family, grouped as the three threads run them."""

    def __init__(self, args):
        self.args = args
        self.slow_counter = SlowQueryCounter(args.slow_query_ms)
        self.delay = parse_interval(args.publication_delay)
        self.part_errors = collections.Counter()
        self.license = None

    # fast ----------------------------------------------------------------------------------
    def run_parts(self, db, parts):
        """Each part adds its families; a part that fails for another reason than a lost
        connection (a permission, an unexpected catalog) is logged and left out."""
        fams = []
        for part in parts:
            try:
                part(db, fams)
            except Exception as exc:   # noqa: BLE001
                if connection_lost(exc):
                    raise
                self.part_errors[part.__name__] += 1
                LOG.warning("%s: %s: %s", part.__name__, type(exc).__name__, str(exc).strip())
        return fams

    def fast(self, db):
        db.value("SELECT 1")   # reachability first: postgres_up
        return self.run_parts(db, [self.activity, self.stat_database, self.table_stats, self.checkpointer,
                                   self.archiver, self.statements])

    def activity(self, db, fams):
        rows = db.rows("""
            SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
                   count(*), current_setting('max_connections')::float,
                   coalesce(max(extract(epoch FROM now() - state_change)) FILTER (WHERE state LIKE 'idle in transaction%%'), 0),
                   coalesce(max(extract(epoch FROM now() - xact_start)) FILTER (WHERE state <> 'idle'), 0),
                   coalesce(max(extract(epoch FROM now() - query_start)) FILTER (WHERE state = 'active'), 0),
                   pg_is_in_recovery()::int
            FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()""")
        waiting, sessions, max_conn, idle_tx, oldest_tx, oldest_q, recovery = rows[0]
        fams.append(Family("postgres_connections_waiting", "gauge", "Client sessions waiting on a lock").add(waiting))
        fams.append(Family("postgres_connection_utilization_ratio", "gauge",
                           "Client sessions (this exporter's excluded) / max_connections").add(sessions / max_conn))
        fams.append(Family("postgres_oldest_idle_in_transaction_seconds", "gauge",
                           "Age of the oldest idle-in-transaction state; 0 when none").add(idle_tx))
        fams.append(Family("postgres_oldest_transaction_seconds", "gauge",
                           "Age of the oldest open transaction of a non-idle session; 0 when none").add(oldest_tx))
        fams.append(Family("postgres_longest_running_query_seconds", "gauge",
                           "Run time of the longest active statement; 0 when none").add(oldest_q))
        fams.append(Family("postgres_in_recovery", "gauge", "1 on a standby (pg_is_in_recovery), else 0").add(recovery))
        locks = Family("postgres_locks", "gauge", "Locks held or awaited in this database by mode", ["mode", "granted"])
        for mode, granted, count in db.rows("""SELECT mode, granted::text, count(*) FROM pg_locks
                                               WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                               GROUP BY 1, 2"""):
            locks.add(count, mode, granted)
        fams.append(locks)
        replicas = db.rows("""SELECT application_name, coalesce(client_addr::text, 'local'),
                                     pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn),
                                     extract(epoch FROM replay_lag)
                              FROM pg_stat_replication""") if not recovery else []
        fams.append(Family("postgres_replicas", "gauge", "Replicas streaming from this primary").add(len(replicas)))
        lag = Family("postgres_replica_lag_bytes", "gauge", "WAL bytes a replica has not replayed yet",
                     ["application_name", "client_addr"])
        for name, addr, lag_bytes, _lag_s in replicas:
            lag.add(lag_bytes, name, addr)
        fams.append(lag)

    def stat_database(self, db, fams):
        row = db.rows("""SELECT blks_hit, blks_read, deadlocks, temp_files, temp_bytes, xact_commit,
                                age(d.datfrozenxid), mxid_age(d.datminmxid),
                                (SELECT max(age(relfrozenxid)) FROM pg_class WHERE relkind IN ('r', 't', 'm'))
                         FROM pg_stat_database s JOIN pg_database d ON d.oid = s.datid
                         WHERE s.datname = current_database()""")[0]
        hit, read, deadlocks, temp_files, temp_bytes, commits, xid_age, mxid_age, table_xid_age = row
        fams.append(Family("postgres_cache_hit_ratio", "gauge",
                           "Buffer cache hits / (hits + reads) of this database since the statistics reset")
                    .add(hit / (hit + read) if hit + read else None))
        fams.append(Family("postgres_deadlocks", "counter", "Deadlocks detected in this database").add(deadlocks))
        fams.append(Family("postgres_temp_files", "counter", "Temporary files written by queries of this database").add(temp_files))
        fams.append(Family("postgres_temp_bytes", "counter", "Bytes of temporary files written by queries of this database").add(temp_bytes))
        fams.append(Family("postgres_transactions_committed", "counter", "Committed transactions of this database").add(commits))
        fams.append(Family("postgres_xid_age", "gauge", "age(datfrozenxid) of this database: wraparound at about 2.1e9").add(xid_age))
        fams.append(Family("postgres_multixact_age", "gauge", "mxid_age(datminmxid) of this database").add(mxid_age))
        fams.append(Family("postgres_oldest_table_xid_age", "gauge", "The largest age(relfrozenxid) of a table of this database").add(table_xid_age))
        # Every database, and the shared catalogs (datname NULL): corruption anywhere is news.
        # Debian's postgres_exporter 0.17 does not export these; integrity_check.yml reads them too.
        failures = Family("postgres_checksum_failures", "counter",
                          "Data page checksum failures detected (pg_stat_database.checksum_failures)", ["datname"])
        last = Family("postgres_checksum_last_failure_timestamp_seconds", "gauge",
                      "When the last checksum failure was detected; absent when there was none", ["datname"])
        for datname, count, at in db.rows("""SELECT coalesce(datname, '(shared)'), coalesce(checksum_failures, 0),
                                                    extract(epoch FROM checksum_last_failure)
                                             FROM pg_stat_database"""):
            failures.add(count, datname)
            if at is not None:
                last.add(at, datname)
        fams.extend([failures, last])

    def table_stats(self, db, fams):
        """pg_statio/pg_stat_user_tables, chunks summed into their hypertable."""
        chunk_map = ""
        if db.exists("timescaledb_information.chunks"):
            chunk_map = """LEFT JOIN timescaledb_information.chunks c
                             ON c.chunk_schema = s.schemaname AND c.chunk_name = s.relname"""
        table = "coalesce(c.hypertable_name, s.relname)" if chunk_map else "s.relname"
        where = "s.schemaname = 'public'" + (" OR c.hypertable_schema = 'public'" if chunk_map else "")
        rows = db.rows("""
            SELECT %(t)s, sum(coalesce(io.idx_blks_hit, 0)), sum(coalesce(io.idx_blks_read, 0)),
                   sum(coalesce(io.heap_blks_hit, 0)), sum(coalesce(io.heap_blks_read, 0)),
                   sum(s.n_live_tup), sum(s.n_dead_tup), sum(s.seq_scan), sum(coalesce(s.idx_scan, 0)),
                   extract(epoch FROM max(greatest(s.last_autovacuum, s.last_vacuum))),
                   extract(epoch FROM max(greatest(s.last_autoanalyze, s.last_analyze)))
            FROM pg_stat_user_tables s JOIN pg_statio_user_tables io USING (relid) %(j)s
            WHERE %(w)s GROUP BY 1""" % {"t": table, "j": chunk_map, "w": where})
        specs = [("postgres_table_index_blocks_hit", "counter", "Index blocks found in the buffer cache (idx_blks_hit), chunks summed into their hypertable"),
                 ("postgres_table_index_blocks_read", "counter", "Index blocks read from disk or the OS cache (idx_blks_read), chunks summed"),
                 ("postgres_table_heap_blocks_hit", "counter", "Heap blocks found in the buffer cache (heap_blks_hit), chunks summed"),
                 ("postgres_table_heap_blocks_read", "counter", "Heap blocks read (heap_blks_read), chunks summed"),
                 ("postgres_table_live_tuples", "gauge", "Estimated live rows (n_live_tup), chunks summed"),
                 ("postgres_table_dead_tuples", "gauge", "Estimated dead rows (n_dead_tup), chunks summed"),
                 ("postgres_table_seq_scans", "counter", "Sequential scans started on the table or its chunks"),
                 ("postgres_table_index_scans", "counter", "Index scans started on the table or its chunks"),
                 ("postgres_table_last_vacuum_timestamp_seconds", "gauge", "Newest (auto)vacuum of the table or any chunk; 0 = never"),
                 ("postgres_table_last_analyze_timestamp_seconds", "gauge", "Newest (auto)analyze of the table or any chunk; 0 = never")]
        families = [Family(name, kind, text, ["table"]) for name, kind, text in specs]
        for row in rows:
            for family, value in zip(families, row[1:]):
                family.add(value or 0, row[0])
        fams.extend(families)

    def checkpointer(self, db, fams):
        if not db.exists("pg_catalog.pg_stat_checkpointer"):
            return
        timed, req, write_ms, sync_ms, buffers = db.rows(
            "SELECT num_timed, num_requested, write_time, sync_time, buffers_written FROM pg_stat_checkpointer")[0]
        fams.append(Family("postgres_checkpoints_timed", "counter", "Scheduled checkpoints (pg_stat_checkpointer.num_timed)").add(timed))
        fams.append(Family("postgres_checkpoints_requested", "counter", "Requested checkpoints (num_requested): WAL volume or CHECKPOINT").add(req))
        fams.append(Family("postgres_checkpoint_write_seconds", "counter", "Time checkpoints spent writing files").add(write_ms / 1000.0))
        fams.append(Family("postgres_checkpoint_sync_seconds", "counter", "Time checkpoints spent syncing files").add(sync_ms / 1000.0))
        fams.append(Family("postgres_checkpoint_buffers_written", "counter", "Buffers written by checkpoints").add(buffers))

    def archiver(self, db, fams):
        archived, failed, last_ok, last_fail, mode = db.rows(
            """SELECT archived_count, failed_count, extract(epoch FROM last_archived_time),
                      extract(epoch FROM last_failed_time), current_setting('archive_mode')
               FROM pg_stat_archiver""")[0]
        fams.append(Family("postgres_wal_archive_enabled", "gauge", "1 when archive_mode is on/always").add(mode != "off"))
        fams.append(Family("postgres_wal_archived", "counter", "WAL files archived by archive_command").add(archived))
        fams.append(Family("postgres_wal_archive_failures", "counter", "Failed archive_command attempts").add(failed))
        fams.append(Family("postgres_wal_last_archived_timestamp_seconds", "gauge", "Time of the last archived WAL file; 0 = never").add(last_ok or 0))
        fams.append(Family("postgres_wal_last_archive_failure_timestamp_seconds", "gauge", "Time of the last archive failure; 0 = never").add(last_fail or 0))

    def statements(self, db, fams):
        if not db.exists("pg_stat_statements"):
            return
        rows = db.rows("""SELECT s.queryid, s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.rows
                          FROM pg_stat_statements s
                          WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                            AND s.toplevel""")
        entries, classes = {}, {}
        slow_now = 0
        for queryid, query, calls, total_ms, mean_ms, nrows in rows:
            entries[queryid] = (calls, mean_ms)
            slow_now += mean_ms > self.args.slow_query_ms
            cls = classes.setdefault(statement_class(query or ""), [0, 0.0, 0])
            cls[0] += calls
            cls[1] += total_ms
            cls[2] += nrows
        fams.append(Family("postgres_slow_queries", "counter",
                           "Executions of statements whose mean time is over the slow threshold (pg_stat_statements)")
                    .add(self.slow_counter.update(entries)))
        fams.append(Family("postgres_slow_statements", "gauge", "Statements (pg_stat_statements entries) whose mean time is over the slow threshold").add(slow_now))
        fams.append(Family("postgres_statements_tracked", "gauge", "pg_stat_statements entries of this database").add(len(rows)))
        calls = Family("postgres_statement_calls", "counter", "Calls of tracked statements by query class", ["class"])
        seconds = Family("postgres_statement_exec_seconds", "counter", "Execution time of tracked statements by query class", ["class"])
        mean = Family("postgres_statement_mean_seconds", "gauge", "Mean execution time of tracked statements by query class", ["class"])
        returned = Family("postgres_statement_rows", "counter", "Rows returned or affected by tracked statements by query class", ["class"])
        for cls, (n, total_ms, nrows) in sorted(classes.items()):
            calls.add(n, cls)
            seconds.add(total_ms / 1000.0, cls)
            mean.add(total_ms / 1000.0 / n if n else 0, cls)
            returned.add(nrows, cls)
        fams.extend([calls, seconds, mean, returned])

    # slow ----------------------------------------------------------------------------------
    def slow(self, db):
        return self.run_parts(db, [self.timescaledb, self.sizes, self.quality, self.freshness])

    def timescaledb(self, db, fams):
        self.license = None
        info = db.rows("""SELECT extversion, current_setting('timescaledb.license', true)
                          FROM pg_extension WHERE extname = 'timescaledb'""")
        if not info:
            return
        version, license_ = info[0]
        self.license = license_
        fams.append(Family("postgres_timescaledb_info", "gauge", "TimescaleDB version and license (apache or timescale)",
                           ["version", "license"]).add(1, version, license_ or "unknown"))
        hypertables = db.rows("""SELECT hypertable_name, format('%%I.%%I', hypertable_schema, hypertable_name),
                                        compression_enabled, num_chunks
                                 FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'""")
        fams.append(Family("postgres_hypertables", "gauge", "Hypertables in schema public").add(len(hypertables)))
        chunks = Family("postgres_hypertable_chunks", "gauge", "Chunks per hypertable", ["hypertable"])
        enabled = Family("postgres_hypertable_compression_enabled", "gauge", "1 when compression is enabled on the hypertable", ["hypertable"])
        compressed = Family("postgres_compressed_chunks", "gauge", "Compressed chunks per hypertable (0 on the Apache edition)", ["hypertable"])
        old = Family("postgres_uncompressed_old_chunks", "gauge",
                     "Chunks whose range ended more than the compression age ago and are not compressed", ["hypertable"])
        ratio = Family("postgres_compression_ratio", "gauge", "Size before / after compression of compressed chunks (TSL only)", ["hypertable"])
        counts = {name: (c, o) for name, c, o in db.rows("""
            SELECT hypertable_name, count(*) FILTER (WHERE is_compressed),
                   count(*) FILTER (WHERE NOT is_compressed AND range_end < now() - %s::interval)
            FROM timescaledb_information.chunks WHERE hypertable_schema = 'public' GROUP BY 1""",
            (self.args.compression_age,))}
        for name, regclass, comp_enabled, num_chunks in hypertables:
            chunks.add(num_chunks, name)
            enabled.add(bool(comp_enabled), name)
            compressed.add(counts.get(name, (0, 0))[0], name)
            old.add(counts.get(name, (0, 0))[1], name)
            if license_ == "timescale" and comp_enabled and counts.get(name, (0, 0))[0]:
                before, after = db.rows("""SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes)
                                           FROM hypertable_compression_stats(%s::regclass)""", (regclass,))[0]
                ratio.add(before / after if before and after else None, name)
        fams.extend([chunks, enabled, compressed, old, ratio])
        jobs = Family("postgres_timescaledb_job_last_run_success", "gauge",
                      "1 when the TimescaleDB job's last run succeeded, 0 when it failed", ["job_id", "proc_name", "hypertable"])
        failures = Family("postgres_timescaledb_job_failures", "counter", "Failed runs of the TimescaleDB job (job_stats.total_failures)",
                          ["job_id", "proc_name", "hypertable"])
        last_run = Family("postgres_timescaledb_job_last_run_timestamp_seconds", "gauge", "Start of the job's last run",
                          ["job_id", "proc_name", "hypertable"])
        # On the Apache edition TimescaleDB's own TSL jobs (e.g. policy_job_stat_history_retention)
        # fail on every run by design: they are reported as unsupported, not as failing jobs.
        unsupported = Family("postgres_timescaledb_job_unsupported", "gauge",
                             "1 for a job whose last run failed because this TimescaleDB license lacks its function",
                             ["job_id", "proc_name", "hypertable"])
        for job_id, proc, hyper, status, total_failures, started, error in db.rows("""
                SELECT j.job_id, j.proc_name, coalesce(j.hypertable_name, ''), s.last_run_status, s.total_failures,
                       extract(epoch FROM s.last_run_started_at),
                       (SELECT e.err_message FROM timescaledb_information.job_errors e
                        WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC LIMIT 1)
                FROM timescaledb_information.jobs j
                JOIN timescaledb_information.job_stats s USING (job_id)"""):
            if status == "Failed" and error and "not supported under the current" in error and "license" in error:
                unsupported.add(1, job_id, proc, hyper)
            elif status in ("Success", "Failed"):
                jobs.add(status == "Success", job_id, proc, hyper)
            failures.add(total_failures or 0, job_id, proc, hyper)
            last_run.add(started, job_id, proc, hyper)
        fams.extend([jobs, failures, last_run, unsupported])

    def sizes(self, db, fams):
        tsdb = db.value("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        hyper = "EXISTS (SELECT 1 FROM timescaledb_information.hypertables h WHERE h.hypertable_schema = n.nspname AND h.hypertable_name = c.relname)" \
            if tsdb is not None else "false"
        rows = db.rows("""
            SELECT c.relname, t.is_hyper,
                   CASE WHEN t.is_hyper THEN d.total_bytes ELSE pg_total_relation_size(c.oid) END,
                   CASE WHEN t.is_hyper THEN d.index_bytes ELSE pg_indexes_size(c.oid) END,
                   CASE WHEN t.is_hyper THEN d.table_bytes ELSE pg_relation_size(c.oid) END,
                   CASE WHEN t.is_hyper THEN approximate_row_count(c.oid) ELSE greatest(c.reltuples, 0)::bigint END
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            CROSS JOIN LATERAL (SELECT %s AS is_hyper) t
            LEFT JOIN LATERAL (SELECT * FROM hypertable_detailed_size(c.oid) WHERE t.is_hyper) d ON true
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')""" % hyper if tsdb is not None else """
            SELECT c.relname, false, pg_total_relation_size(c.oid), pg_indexes_size(c.oid), pg_relation_size(c.oid),
                   greatest(c.reltuples, 0)::bigint
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')""")
        total = Family("postgres_table_size_bytes", "gauge", "Total size (hypertable_size for hypertables) of each table of schema public", ["table"])
        index = Family("postgres_index_size_bytes", "gauge", "Index size per table (chunks included)", ["table"])
        heap = Family("postgres_table_heap_size_bytes", "gauge", "Table data without indexes and TOAST per table", ["table"])
        nrows = Family("postgres_table_rows", "gauge", "Estimated rows (approximate_row_count for hypertables, reltuples otherwise)", ["table"])
        hsize = Family("postgres_hypertable_size_bytes", "gauge", "hypertable_size() of each hypertable", ["hypertable"])
        for name, is_hyper, size, index_size, heap_size, count in rows:
            total.add(size or 0, name)
            index.add(index_size or 0, name)
            heap.add(heap_size or 0, name)
            nrows.add(count or 0, name)
            if is_hyper:
                hsize.add(size or 0, name)
        fams.extend([total, index, heap, nrows, hsize])
        wal = db.value("SELECT sum(size) FROM pg_ls_waldir()")
        fams.append(Family("postgres_wal_size_bytes", "gauge", "Size of the WAL files in pg_wal").add(wal or 0))
        spaces = Family("postgres_tablespace_size_bytes", "gauge", "Size of each tablespace", ["tablespace"])
        for name, size in db.rows("SELECT spcname, pg_tablespace_size(oid) FROM pg_tablespace"):
            spaces.add(size, name)
        fams.append(spaces)
        cron = Family("postgres_cron_job_last_run_success", "gauge", "1/0 for the newest finished run of each pg_cron job", ["jobname"])
        cron_ts = Family("postgres_cron_job_last_run_timestamp_seconds", "gauge", "Start of the newest run of each pg_cron job", ["jobname"])
        runs = []
        if db.value("SELECT has_function_privilege(to_regprocedure('public.quantdb_exporter_cron_runs()'), 'EXECUTE')"
                    " FROM (SELECT 1) x WHERE to_regprocedure('public.quantdb_exporter_cron_runs()') IS NOT NULL"):
            runs = db.rows("SELECT jobname, status, extract(epoch FROM start_time) FROM public.quantdb_exporter_cron_runs()")
        elif db.exists("cron.job", "cron.job_run_details") and db.value(
                "SELECT has_table_privilege('cron.job_run_details', 'SELECT') AND has_table_privilege('cron.job', 'SELECT')"):
            # without the role's reader function, row-level security shows this role's own jobs only
            runs = db.rows("""
                SELECT DISTINCT ON (j.jobid) coalesce(j.jobname, j.jobid::text), d.status, extract(epoch FROM d.start_time)
                FROM cron.job j JOIN cron.job_run_details d USING (jobid)
                WHERE d.status IN ('succeeded', 'failed') ORDER BY j.jobid, d.start_time DESC""")
        for jobname, status, started in runs:
            cron.add(status == "succeeded", jobname)
            cron_ts.add(started, jobname)
        fams.extend([cron, cron_ts])

    def quality(self, db, fams):
        if db.exists("public.quality_audit_results"):
            count = Family("postgres_quality_check_count", "gauge", "Count of each check in the latest audit covering the region (all = unscoped)", ["check", "region"])
            failed = Family("postgres_quality_check_failed", "gauge", "1 when that check's latest status is fail, else 0", ["check", "region"])
            status = Family("postgres_quality_check_status", "gauge", "Latest status of the check: 0 ok, 1 warn, 2 fail", ["check", "region"])
            for check, region, state, value in db.rows("""
                    SELECT DISTINCT ON (check_name, coalesce(scope->>'region', 'all'))
                           check_name, coalesce(scope->>'region', 'all'), status, count
                    FROM public.quality_audit_results ORDER BY check_name, 2, generated_at DESC, run_id DESC"""):
                count.add(value, check, region)
                failed.add(state == "fail", check, region)
                status.add({"ok": 0, "warn": 1, "fail": 2}.get(state, 2), check, region)
            last, scanned, seconds = db.rows("""
                SELECT extract(epoch FROM generated_at), rows_scanned, seconds FROM public.quality_audit_results
                ORDER BY generated_at DESC, run_id DESC LIMIT 1""")[0] if db.value(
                    "SELECT EXISTS (SELECT 1 FROM public.quality_audit_results)") else (0, None, None)
            fams.extend([count, failed, status])
            fams.append(Family("postgres_quality_audit_last_run_timestamp_seconds", "gauge", "generated_at of the newest audit run; 0 = none").add(last))
            fams.append(Family("postgres_quality_audit_rows_scanned", "gauge", "Bars the newest audit read").add(scanned))
            fams.append(Family("postgres_quality_audit_duration_seconds", "gauge", "Run time of the newest audit").add(seconds))
        if db.exists("public.ohlcv_quarantine"):
            quarantine = Family("postgres_quarantine_rows", "gauge", "Rows in ohlcv_quarantine per reason code", ["reason"])
            for reason, n in db.rows("SELECT reason, count(*) FROM public.ohlcv_quarantine GROUP BY 1"):
                quarantine.add(n, reason)
            fams.append(quarantine)

    def freshness(self, db, fams):
        if not db.exists("public.tickers", "public.ohlcv_data"):
            return
        now = datetime.datetime.now(datetime.timezone.utc)
        expected = {}
        if db.exists("public.exchange_sessions", "public.exchanges"):
            zones = dict(db.rows("SELECT exchange, timezone FROM public.exchanges"))
            for exchange, cal_end, recent in db.rows("""
                    SELECT exchange, max(session), array_agg(session) FILTER (WHERE session >= current_date - 20)
                    FROM public.exchange_sessions GROUP BY exchange"""):
                expected[exchange] = expected_session(recent or [], cal_end, now, zones.get(exchange), self.delay)
        latest = db.rows("""
            SELECT t.region, t.exchange, l.date FROM public.tickers t
            LEFT JOIN LATERAL (SELECT o.date FROM public.ohlcv_data o WHERE o.ticker = t.ticker AND o.region = t.region
                               ORDER BY o.date DESC LIMIT 1) l ON true
            WHERE t.is_active""")
        result = freshness(latest, expected, now.timestamp())
        fams.append(Family("postgres_tickers_total", "gauge", "Active tickers per region", ["region"]))
        for region, n in sorted(result["tickers"].items()):
            fams[-1].add(n, region)
        age = Family("postgres_data_freshness_seconds", "gauge", "Now minus the latest bar's date (00:00 UTC) per region", ["region"])
        bar = Family("postgres_latest_bar_timestamp_seconds", "gauge", "Date (00:00 UTC) of the latest bar per region", ["region"])
        for region, seconds in sorted(result["age"].items()):
            age.add(seconds, region)
            bar.add(epoch_of_date(result["latest"][region]), region)
        missing = Family("postgres_tickers_missing_latest_session", "gauge",
                         "Active tickers without a bar for their exchange's latest expected session", ["region"])
        for region, n in sorted(result["missing"].items()):
            missing.add(n, region)
        sessions = Family("postgres_expected_session_timestamp_seconds", "gauge",
                          "Latest session whose bar is due (publication delay passed), per exchange; absent when the calendar ends before today",
                          ["exchange"])
        stale = Family("postgres_data_stale_sessions", "gauge",
                       "Sessions after the latest bar up to the latest expected session", ["region", "exchange"])
        for exchange, day in sorted(expected.items()):
            sessions.add(epoch_of_date(day), exchange)
        for (region, exchange), last in sorted(result["latest_by_exchange"].items()):
            if expected.get(exchange) is not None:
                stale.add(db.value("""SELECT count(*) FROM public.exchange_sessions
                                      WHERE exchange = %s AND session > %s AND session <= %s""",
                                   (exchange, last, expected[exchange])), region, exchange)
        loaded = Family("postgres_rows_loaded_today", "gauge",
                        "Bars inserted since 00:00 UTC today, for dates of the last 31 days", ["region"])
        for region, n in db.rows("""SELECT region, count(*) FROM public.ohlcv_data
                                    WHERE date >= current_date - 31 AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                                    GROUP BY 1"""):
            loaded.add(n, region)
        fams.extend([age, bar, missing, sessions, stale, loaded])

    # probe ---------------------------------------------------------------------------------
    def probe(self, db, histogram, rng):
        """One round of the SLO probes against random active tickers; returns what it ran."""
        if not db.exists("public.tickers", "public.ohlcv_data"):
            return []
        regions = [r for (r,) in db.rows("SELECT DISTINCT region FROM public.tickers WHERE is_active")]
        if not regions:
            return []
        region = rng.choice(sorted(regions))
        tickers = [t for (t,) in db.rows("SELECT ticker FROM public.tickers WHERE is_active AND region = %s", (region,))]
        done = []
        ticker = rng.choice(sorted(tickers))
        started = time.monotonic()
        found = db.rows(SINGLE_TICKER_SQL, (ticker, region))
        histogram.observe("single_ticker", time.monotonic() - started)
        done.append(("single_ticker", len(found)))
        basket = rng.sample(sorted(tickers), min(50, len(tickers)))
        end = found[0][0] if found else datetime.date.today()
        started = time.monotonic()
        found = db.rows(BACKTEST_SQL, (region, basket, end - datetime.timedelta(days=5 * 365)))
        histogram.observe("backtest", time.monotonic() - started)
        done.append(("backtest", len(found)))
        return done


# ---------------------------------------------------------------------------------------------
# Threads, cache and the scrape
# ---------------------------------------------------------------------------------------------
class Exporter:
    def __init__(self, args):
        self.args = args
        self.collectors = Collectors(args)
        self.meters = {name: LoadMeter() for name in ("fast", "slow", "probe")}
        self.cache = {"fast": [], "slow": [], "backup": []}
        self.up = 0
        self.stats = {name: {"duration": None, "success": 0.0, "errors": 0} for name in ("fast", "slow", "probe", "backup")}
        self.histogram = Histogram()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run_loop(self, name, interval, work, initial_delay=0.0):
        db = Db(name, self.meters.get(name, LoadMeter()), self.args.connect_timeout)
        self.stop.wait(initial_delay)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                result = work(db)
                with self.lock:
                    if name in self.cache:
                        self.cache[name] = result
                    if name == "fast":
                        self.up = 1
                    self.stats[name].update(duration=time.monotonic() - started, success=time.time())
            except Exception as exc:   # noqa: BLE001 - a thread never dies: report and retry
                lost = name != "backup" and connection_lost(exc)
                with self.lock:
                    self.stats[name]["errors"] += 1
                    if lost or name not in ("probe", "backup"):
                        if name in self.cache:
                            self.cache[name] = []
                    if lost and name == "fast":
                        self.up = 0
                if lost:
                    LOG.warning("%s: PostgreSQL unreachable: %s", name, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                    db.close()
                else:
                    LOG.warning("%s: %s: %s", name, type(exc).__name__, exc)
                    if name != "backup":
                        db.close()
            self.stop.wait(max(0.5, interval - (time.monotonic() - started)))
        db.close()

    def read_backup(self, _db):
        fams = []
        success = Family("postgres_backup_last_success_timestamp_seconds", "gauge", "End of the last successful backup per type; 0 = none", ["type"])
        failure = Family("postgres_backup_last_failure_timestamp_seconds", "gauge", "End of the last failed backup per type; 0 = none", ["type"])
        size = Family("postgres_backup_last_size_bytes", "gauge", "Database size the last successful backup of the type covered", ["type"])
        duration = Family("postgres_backup_last_duration_seconds", "gauge", "Run time of the last successful backup of the type", ["type"])
        readable = Family("postgres_backup_status_file_readable", "gauge", "1 when the backup status file exists and parses, else 0")
        try:
            with open(self.args.backup_status_file) as handle:
                status = parse_backup_status(handle.read())
        except FileNotFoundError:
            status = None
        if status is None:
            for kind in ("full", "diff", "incr", "logical"):
                success.add(0, kind)
                failure.add(0, kind)
            readable.add(0)
        else:
            for kind in ("full", "diff", "incr", "logical"):
                success.add(status[kind]["success"], kind)
                failure.add(status[kind]["failure"], kind)
                size.add(status[kind]["size"], kind)
                duration.add(status[kind]["duration"], kind)
            readable.add(1)
            fams.append(Family("postgres_backup_repository_size_bytes", "gauge", "Repository size after the last successful backup")
                        .add(status["_repo_size"]))
        return fams + [success, failure, size, duration, readable]

    def probe(self, db):
        self.collectors.probe(db, self.histogram, random.Random())

    def families(self):
        """Everything a scrape returns, from the cache."""
        with self.lock:
            fams = list(self.cache["fast"]) + list(self.cache["slow"]) + list(self.cache["backup"])
            up, stats = self.up, {k: dict(v) for k, v in self.stats.items()}
        fams.insert(0, Family("postgres_up", "gauge", "1 when the exporter's last query to PostgreSQL succeeded, else 0").add(up))
        duration = Family("quantdb_exporter_collector_duration_seconds", "gauge", "Run time of the collector's last refresh", ["collector"])
        success = Family("quantdb_exporter_collector_last_success_timestamp_seconds", "gauge", "End of the collector's last successful refresh; 0 = none", ["collector"])
        errors = Family("quantdb_exporter_collector_errors", "counter", "Failed refreshes of the collector", ["collector"])
        for name, stat in sorted(stats.items()):
            duration.add(stat["duration"], name)
            success.add(stat["success"], name)
            errors.add(stat["errors"], name)
        statements = Family("quantdb_exporter_statements_per_minute", "gauge", "Statements the exporter ran per minute (10 min average)", ["source"])
        millis = Family("quantdb_exporter_database_milliseconds_per_minute", "gauge", "Milliseconds the exporter's statements took per minute (10 min average)", ["source"])
        total = Family("quantdb_exporter_statements", "counter", "Statements the exporter ran", ["source"])
        for name, meter in sorted(self.meters.items()):
            per_min, ms = meter.per_minute()
            statements.add(per_min, name)
            millis.add(ms, name)
            total.add(meter.statements, name)
        parts = Family("quantdb_exporter_part_errors", "counter", "Queries of a collector part that failed (logged), by part", ["part"])
        for part, n in sorted(self.collectors.part_errors.items()):
            parts.add(n, part)
        config = Family("quantdb_exporter_interval_seconds", "gauge", "Refresh interval of each loop", ["loop"])
        for name, value in (("fast", self.args.fast_interval), ("slow", self.args.slow_interval),
                            ("probe", self.args.probe_interval), ("backup", self.args.fast_interval)):
            config.add(value, name)
        return fams + [duration, success, errors, statements, millis, total, parts, config]

    def start(self):
        loops = [("fast", self.args.fast_interval, self.collectors.fast, 0.0),
                 ("slow", self.args.slow_interval, self.collectors.slow, 0.0),
                 ("backup", self.args.fast_interval, self.read_backup, 0.0),
                 ("probe", self.args.probe_interval, self.probe, self.args.probe_initial_delay)]
        for name, interval, work, delay in loops:
            threading.Thread(target=self.run_loop, args=(name, interval, work, delay), name=name, daemon=True).start()


class PrometheusCollector:
    """prometheus_client's custom Collector interface over Exporter.families()."""

    def __init__(self, exporter):
        self.exporter = exporter

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        for fam in self.exporter.families():
            cls = CounterMetricFamily if fam.kind == "counter" else GaugeMetricFamily
            metric = cls(fam.name, fam.help, labels=fam.labels)
            for labels, value in fam.samples:
                metric.add_metric(list(labels), value)
            yield metric
        hist = HistogramMetricFamily("postgres_query_duration_seconds",
                                     "Duration of the SLO probes (the guide's single-ticker 250-day read, 5 y x 50-ticker backtest)",
                                     labels=["query_type"])
        for label, (buckets, total) in sorted(self.exporter.histogram.snapshot().items()):
            hist.add_metric([label], buckets, total)
        yield hist


def parse_args(argv=None):
    env = os.environ.get
    parser = argparse.ArgumentParser(description="quantdb-exporter: the quant platform's Prometheus exporter")
    parser.add_argument("--listen-address", default=env("QUANTDB_EXPORTER_LISTEN_ADDRESS", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env("QUANTDB_EXPORTER_PORT", "8000")))
    parser.add_argument("--fast-interval", type=float, default=float(env("QUANTDB_EXPORTER_FAST_INTERVAL", "15")))
    parser.add_argument("--slow-interval", type=float, default=float(env("QUANTDB_EXPORTER_SLOW_INTERVAL", "120")))
    parser.add_argument("--probe-interval", type=float, default=float(env("QUANTDB_EXPORTER_PROBE_INTERVAL", "300")))
    parser.add_argument("--probe-initial-delay", type=float, default=float(env("QUANTDB_EXPORTER_PROBE_INITIAL_DELAY", "10")))
    parser.add_argument("--slow-query-ms", type=float, default=float(env("QUANTDB_EXPORTER_SLOW_QUERY_MS", "1000")))
    parser.add_argument("--compression-age", default=env("QUANTDB_EXPORTER_COMPRESSION_AGE", "1 year"))
    parser.add_argument("--publication-delay", default=env("QUANTDB_EXPORTER_PUBLICATION_DELAY", "18 hours"))
    parser.add_argument("--backup-status-file", default=env("QUANTDB_EXPORTER_BACKUP_STATUS_FILE", "/var/lib/quantdb-ops/backup/status.json"))
    parser.add_argument("--connect-timeout", type=int, default=int(env("QUANTDB_EXPORTER_CONNECT_TIMEOUT", "5")))
    parser.add_argument("--log-level", default=env("QUANTDB_EXPORTER_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(threadName)s: %(message)s")
    parse_interval(args.publication_delay)
    from prometheus_client import REGISTRY, start_http_server
    exporter = Exporter(args)
    REGISTRY.register(PrometheusCollector(exporter))
    exporter.start()
    start_http_server(args.port, addr=args.listen_address)
    LOG.info("listening on %s:%d", args.listen_address, args.port)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    exporter.stop.set()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
