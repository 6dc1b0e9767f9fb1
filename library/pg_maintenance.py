#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_maintenance
short_description: VACUUM, ANALYZE and REINDEX CONCURRENTLY where the statistics say so
description:
  - Decides per table and per index from statistics only (pg_stat_user_tables, pg_class,
    pg_index, pg_stats; no table or index scan unless O(bloat_method=pgstattuple)), then acts.
  - C(VACUUM (ANALYZE)) a table whose dead tuples reach O(vacuum_dead_ratio) of its tuples and
    O(vacuum_min_dead), or, when O(vacuum_max_age) is set, whose last vacuum (manual or auto) is
    older than that and which has O(vacuum_min_dead) dead or newly inserted tuples. A table
    vacuumed less than O(vacuum_min_interval) ago is left alone (the dead tuples left then are
    held by an old snapshot, and a second vacuum would not remove them).
  - C(ANALYZE) a table whose rows modified since its last analyze reach O(analyze_mod_ratio) of
    its tuples and O(analyze_min_mod).
  - C(REINDEX INDEX CONCURRENTLY) an invalid index (pg_index.indisvalid false, not being built
    right now) and a B-tree index of at least O(reindex_min_bytes) whose estimated bloat reaches
    O(reindex_bloat_ratio). The estimate compares the index's size with the size its tuples
    need at the index's fillfactor, from pg_class.reltuples and the columns' pg_stats.avg_width
    (indexes on expressions, and tables never analyzed, have no estimate). An invalid leftover
    of an interrupted REINDEX CONCURRENTLY (a name ending in C(_ccnew) or C(_ccold)) is dropped
    with C(DROP INDEX CONCURRENTLY) instead, as the PostgreSQL documentation recommends.
  - TimescaleDB hypertables are handled chunk by chunk (each chunk is a plain table of
    C(_timescaledb_internal) with its own indexes; C(CREATE INDEX CONCURRENTLY) is not supported
    on a hypertable, C(REINDEX INDEX CONCURRENTLY) on a chunk's index is). The hypertable's
    parent holds no rows and is not acted on. Compressed chunks
    (timescaledb_information.chunks.is_compressed) and TimescaleDB's internal tables are
    skipped. O(schemas), O(tables) and their exclusions match a chunk by its hypertable.
  - Every statement runs with O(lock_timeout) and O(statement_timeout); an action that fails
    (a lock not granted in time, say) is reported with its error and a warning, and the others
    go on.
  - The statistics are read fresh (pg_stat_clear_snapshot()); after the work the session's
    own counters are flushed (pg_stat_force_next_flush()), so a second run right after finds
    nothing left to do and reports C(changed=false).
  - In check mode it returns the actions it would take and changes nothing. C(changed) is true
    only when at least one action ran.
options:
  schemas:
    description: Only tables of these schemas (a chunk by its hypertable's schema); empty for all.
    type: list
    elements: str
    default: []
  tables:
    description: Only these tables, C(name) or C(schema.name) (a chunk by its hypertable); empty for all.
    type: list
    elements: str
    default: []
  exclude_schemas:
    description: Tables of these schemas are left alone.
    type: list
    elements: str
    default: []
  exclude_tables:
    description: These tables (C(name) or C(schema.name); a hypertable's chunks with it) are left alone.
    type: list
    elements: str
    default: []
  actions:
    description: The kinds of action allowed.
    type: list
    elements: str
    choices: [vacuum, analyze, reindex]
    default: [vacuum, analyze, reindex]
  vacuum_dead_ratio:
    description: Dead tuples over live plus dead tuples from which a table is vacuumed.
    type: float
    default: 0.1
  vacuum_min_dead:
    description: Dead tuples a table must have before O(vacuum_dead_ratio) applies.
    type: int
    default: 1000
  vacuum_max_age:
    description:
      - A PostgreSQL interval; a table with O(vacuum_min_dead) dead or newly inserted tuples
        whose last vacuum is older (or that was never vacuumed) is vacuumed. Empty turns the
        rule off.
    type: str
    default: ""
  vacuum_min_interval:
    description: A PostgreSQL interval; a table vacuumed more recently is not vacuumed again.
    type: str
    default: 1 hour
  analyze_mod_ratio:
    description: Rows modified since the last analyze over the table's tuples from which it is analyzed.
    type: float
    default: 0.1
  analyze_min_mod:
    description: Rows modified since the last analyze a table must have before O(analyze_mod_ratio) applies.
    type: int
    default: 1000
  reindex_invalid:
    description: Rebuild invalid indexes (and drop invalid leftovers of REINDEX CONCURRENTLY).
    type: bool
    default: true
  reindex_bloat_ratio:
    description: Estimated share of an index that is bloat from which it is rebuilt (0 to 1).
    type: float
    default: 0.5
  reindex_min_bytes:
    description: Indexes smaller than this many bytes are never rebuilt for bloat.
    type: int
    default: 10485760
  bloat_method:
    description:
      - C(estimate) reads statistics only. C(pgstattuple) measures each candidate B-tree index
        of at least O(reindex_min_bytes) with pgstatindex() (reads the whole index; needs the
        pgstattuple extension).
    type: str
    choices: [estimate, pgstattuple]
    default: estimate
  statement_timeout:
    description: statement_timeout of every statement (a PostgreSQL duration; 0 for none).
    type: str
    default: 30min
extends_documentation_fragment: [quantdb_pg]
notes:
  - VACUUM and REINDEX CONCURRENTLY cannot run inside a transaction, so the module works in
    autocommit mode; each action commits on its own.
  - Run it as the tables' owner or a superuser (the database host's C(postgres) by default);
    PostgreSQL skips, with a warning, a VACUUM of a table the role does not own.
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Weekly maintenance of quant_platform
  pg_maintenance:
    login_db: quant_platform
    login_host: /var/run/postgresql
    vacuum_dead_ratio: 0.1
    analyze_mod_ratio: 0.1
    lock_timeout: 5s
  become: true
  become_user: postgres
  register: maintenance

- name: What it would do to ohlcv_data's chunks only
  pg_maintenance:
    login_db: quant_platform
    tables: [public.ohlcv_data]
  check_mode: true
  register: plan
"""

RETURN = r"""
actions:
  description:
    - One entry per action, in the order run (or planned in check mode). C(status) is
      C(planned) in check mode, C(done) or C(failed) (then C(error) says why).
  returned: always
  type: list
  elements: dict
  sample:
    - action: vacuum_analyze
      object: public.maint_scratch
      kind: table
      reason: dead tuples 50.0% >= 10.0% (30000 >= 1000)
      statement: VACUUM (ANALYZE) "public"."maint_scratch"
      stats: {n_live_tup: 30000, n_dead_tup: 30000, dead_ratio: 0.5, n_mod_since_analyze: 30000}
      status: done
      duration_ms: 41.2
skipped:
  description: Objects the statistics would have selected but that were left alone, and why.
  returned: always
  type: list
  elements: dict
  sample:
    - object: _timescaledb_internal._hyper_1_3_chunk
      reason: compressed chunk
counts:
  description: Tables and indexes considered, and actions planned, done and failed.
  returned: always
  type: dict
  sample: {tables: 14, indexes: 31, planned: 1, done: 1, failed: 0}
seconds:
  description: Seconds the module took.
  returned: always
  type: float
  sample: 0.12
queries:
  description: The statements run, in order (each line stripped and joined with a space).
  returned: always
  type: list
  elements: str
  sample:
    - SELECT pg_stat_clear_snapshot()
    - VACUUM (ANALYZE) "public"."maint_scratch"
"""

import math
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_pg import Stopwatch, connect, connection_argument_spec, psycopg
from ansible.module_utils.quantdb_pg import backend_pid, is_lock_timeout, lock_failure, record_queries, sql

INTERNAL_SCHEMA = re.compile(r"^_timescaledb_")
LEFTOVER = re.compile(r"_cc(new|old)[0-9]*$")

TABLES_SQL = """
SELECT s.relid::bigint, s.schemaname, s.relname, c.relkind,
       c.reltuples::float8, pg_relation_size(s.relid) AS size_bytes,
       s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze, s.n_ins_since_vacuum,
       s.last_vacuum::text, s.last_autovacuum::text, s.last_analyze::text, s.last_autoanalyze::text,
       extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8 AS vacuum_age_s
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
WHERE c.relkind IN ('r', 'm')
ORDER BY s.schemaname, s.relname
"""

INDEXES_SQL = """
SELECT i.indexrelid::bigint, n.nspname, ci.relname, i.indrelid::bigint, am.amname,
       i.indisvalid, i.indisunique, i.indisprimary, i.indexprs IS NOT NULL AS has_expressions,
       pg_relation_size(i.indexrelid) AS size_bytes, ct.reltuples::float8 AS table_tuples,
       coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(ci.reloptions) o WHERE o LIKE 'fillfactor=%%'), 90)
           AS fillfactor,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid) AS being_built,
       (SELECT bool_and(st.avg_width IS NOT NULL) FROM unnest(i.indkey::int2[]) AS k(attnum)
          LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          LEFT JOIN pg_stats st ON st.schemaname = nt.nspname AND st.tablename = ct.relname
                                AND st.attname = a.attname) AS has_stats,
       (SELECT sum(st.avg_width) FROM unnest(i.indkey::int2[]) AS k(attnum)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          JOIN pg_stats st ON st.schemaname = nt.nspname AND st.tablename = ct.relname
                           AND st.attname = a.attname)::float8 AS data_width
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ci.relnamespace
JOIN pg_class ct ON ct.oid = i.indrelid
JOIN pg_namespace nt ON nt.oid = ct.relnamespace
JOIN pg_am am ON am.oid = ci.relam
WHERE i.indrelid = ANY(%s)
ORDER BY n.nspname, ci.relname
"""


def interval_seconds(conn, text):
    """A PostgreSQL interval in seconds (None for an empty text)."""
    if not text:
        return None
    return conn.execute("SELECT extract(epoch FROM %s::interval)::float8", (text,)).fetchone()[0]


def timescale_maps(conn):
    """({chunk relid: (hypertable schema, name, compressed)}, {hypertable relid}) or empty maps."""
    has_ts = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')").fetchone()[0]
    if not has_ts:
        return {}, set()
    has_flag = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'timescaledb_information'"
        " AND table_name = 'chunks' AND column_name = 'is_compressed')").fetchone()[0]
    compressed = "coalesce(is_compressed, false)" if has_flag else "false"
    chunks = {}
    for relid, hschema, hname, is_compressed in conn.execute(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name)::regclass::oid::bigint, hypertable_schema,"
            " hypertable_name, %s FROM timescaledb_information.chunks" % compressed):
        chunks[relid] = (hschema, hname, is_compressed)
    hypertables = set(row[0] for row in conn.execute(
        "SELECT format('%I.%I', hypertable_schema, hypertable_name)::regclass::oid::bigint"
        " FROM timescaledb_information.hypertables"))
    return chunks, hypertables


def matches(names, schema, table):
    return any(name in (table, "%s.%s" % (schema, table)) for name in names)


def selected(params, schema, table):
    if params["schemas"] and schema not in params["schemas"]:
        return False
    if params["tables"] and not matches(params["tables"], schema, table):
        return False
    if schema in params["exclude_schemas"] or matches(params["exclude_tables"], schema, table):
        return False
    return True


def pct(value):
    return "%.1f%%" % (value * 100.0)


def table_decision(params, row, vacuum_max_age_s, vacuum_min_interval_s):
    """(action, reason) for a table from its statistics, or (None, None)."""
    tuples = row["n_live_tup"] + row["n_dead_tup"]
    dead_ratio = row["n_dead_tup"] / float(tuples) if tuples else 0.0
    base = max(row["reltuples"], row["n_live_tup"], 1.0)
    mod_ratio = row["n_mod_since_analyze"] / float(base)
    row["dead_ratio"] = round(dead_ratio, 4)
    row["mod_ratio"] = round(mod_ratio, 4)
    allowed = params["actions"]
    age = row["vacuum_age_s"]
    recently = age is not None and vacuum_min_interval_s is not None and age < vacuum_min_interval_s
    reasons = []
    if "vacuum" in allowed and recently and row["n_dead_tup"] >= params["vacuum_min_dead"] \
            and dead_ratio >= params["vacuum_dead_ratio"]:
        row["note"] = "dead tuples %s but vacuumed %.0f s ago (vacuum_min_interval %s): an old snapshot may hold them" % (
            pct(dead_ratio), age, params["vacuum_min_interval"])
    if "vacuum" in allowed and not recently:
        if row["n_dead_tup"] >= params["vacuum_min_dead"] and dead_ratio >= params["vacuum_dead_ratio"]:
            reasons.append("dead tuples %s >= %s (%d >= %d)" % (
                pct(dead_ratio), pct(params["vacuum_dead_ratio"]), row["n_dead_tup"], params["vacuum_min_dead"]))
        elif (vacuum_max_age_s is not None and (age is None or age >= vacuum_max_age_s)
              and row["n_dead_tup"] + row["n_ins_since_vacuum"] >= params["vacuum_min_dead"]):
            reasons.append("last vacuum %s (older than %s) with %d dead and %d inserted tuples" % (
                "never" if age is None else "%.1f days ago" % (age / 86400.0), params["vacuum_max_age"],
                row["n_dead_tup"], row["n_ins_since_vacuum"]))
    if reasons:
        if row["n_mod_since_analyze"] >= params["analyze_min_mod"] and mod_ratio >= params["analyze_mod_ratio"]:
            reasons.append("modified since analyze %s" % pct(mod_ratio))
        return ("vacuum_analyze" if "analyze" in allowed else "vacuum"), "; ".join(reasons)
    if "analyze" in allowed and row["n_mod_since_analyze"] >= params["analyze_min_mod"] \
            and mod_ratio >= params["analyze_mod_ratio"]:
        return "analyze", "modified since analyze %s >= %s (%d >= %d)" % (
            pct(mod_ratio), pct(params["analyze_mod_ratio"]), row["n_mod_since_analyze"], params["analyze_min_mod"])
    return None, None


def estimated_bloat(row, block_size):
    """(bloat ratio, bloat bytes) of a B-tree index from statistics, or (None, None)."""
    if row["amname"] != "btree" or row["has_expressions"] or not row["has_stats"] or row["table_tuples"] < 0:
        return None, None
    pages = row["size_bytes"] // block_size
    if pages <= 1:
        return 0.0, 0
    tuple_bytes = 8 * int(math.ceil((8 + (row["data_width"] or 0.0)) / 8.0)) + 4   # MAXALIGNed tuple + line pointer
    usable = (block_size - 24 - 16) * row["fillfactor"] / 100.0                      # page header, B-tree special space
    per_page = max(int(usable // tuple_bytes), 1)
    leaf = int(math.ceil(row["table_tuples"] / float(per_page)))
    expected = leaf + int(math.ceil(leaf / float(per_page))) + 1                     # inner pages, metapage
    ratio = max(0.0, 1.0 - expected / float(pages))
    return round(ratio, 4), int(max(0, pages - expected) * block_size)


def pgstattuple_bloat(conn, row):
    leaf_density = conn.execute("SELECT avg_leaf_density FROM pgstatindex(%s::regclass)",
                                (row["indexrelid"],)).fetchone()[0]
    if leaf_density is None or math.isnan(leaf_density):   # NaN for an empty index
        return 0.0, 0
    ratio = max(0.0, 1.0 - leaf_density / float(row["fillfactor"]))
    return round(ratio, 4), int(row["size_bytes"] * ratio)


def index_decision(params, conn, row, block_size):
    """(action, reason, extra stats) for an index, or (None, None, stats)."""
    stats = {"size_bytes": row["size_bytes"], "valid": row["indisvalid"], "fillfactor": row["fillfactor"]}
    if "reindex" not in params["actions"]:
        return None, None, stats
    if not row["indisvalid"]:
        if not params["reindex_invalid"] or row["being_built"]:
            return None, None, stats
        if LEFTOVER.search(row["relname"]):
            return "drop_index", "invalid leftover of an interrupted REINDEX CONCURRENTLY", stats
        return "reindex", "invalid index (pg_index.indisvalid = false)", stats
    if row["size_bytes"] < params["reindex_min_bytes"] or row["amname"] != "btree":
        return None, None, stats
    if params["bloat_method"] == "pgstattuple":
        ratio, waste = pgstattuple_bloat(conn, row)
    else:
        ratio, waste = estimated_bloat(row, block_size)
    if ratio is None:
        return None, None, stats
    stats.update(bloat_ratio=ratio, bloat_bytes=waste, bloat_method=params["bloat_method"])
    if ratio >= params["reindex_bloat_ratio"]:
        return "reindex", "estimated bloat %s >= %s (%d bytes)" % (pct(ratio), pct(params["reindex_bloat_ratio"]), waste), stats
    return None, None, stats


def statement(action, schema, name):
    target = sql.Identifier(schema, name)
    return {
        "vacuum_analyze": sql.SQL("VACUUM (ANALYZE) {}"),
        "vacuum": sql.SQL("VACUUM {}"),
        "analyze": sql.SQL("ANALYZE {}"),
        "reindex": sql.SQL("REINDEX INDEX CONCURRENTLY {}"),
        "drop_index": sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}"),
    }[action].format(target)


def plan(module, conn, result):
    params = module.params
    conn.execute("SELECT pg_stat_clear_snapshot()")
    vacuum_max_age_s = interval_seconds(conn, params["vacuum_max_age"])
    vacuum_min_interval_s = interval_seconds(conn, params["vacuum_min_interval"])
    block_size = int(conn.execute("SELECT current_setting('block_size')").fetchone()[0])
    if params["bloat_method"] == "pgstattuple" and "reindex" in params["actions"]:
        if not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple')").fetchone()[0]:
            module.fail_json(msg="bloat_method=pgstattuple needs the pgstattuple extension in %s" % params["login_db"],
                             **result)
    chunks, hypertables = timescale_maps(conn)
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    tables = {}
    for row in cur.execute(TABLES_SQL):
        relid = row["relid"]
        schema, name = row["schemaname"], row["relname"]
        chunk = chunks.get(relid)
        logical = (chunk[0], chunk[1]) if chunk else (schema, name)
        if relid in hypertables:
            continue    # the parent holds no rows: its chunks are the tables
        if not chunk and INTERNAL_SCHEMA.match(schema):
            continue    # TimescaleDB's catalog and internal tables
        if not selected(params, *logical):
            continue
        row["object"] = "%s.%s" % (schema, name)
        row["hypertable"] = "%s.%s" % logical if chunk else None
        if chunk and chunk[2]:
            result["skipped"].append({"object": row["object"], "reason": "compressed chunk"})
            continue
        tables[relid] = row
    result["counts"]["tables"] = len(tables)
    planned = []
    for relid, row in tables.items():
        action, reason = table_decision(params, row, vacuum_max_age_s, vacuum_min_interval_s)
        if row.get("note"):
            result["skipped"].append({"object": row["object"], "reason": row["note"]})
        if action:
            keys = ("n_live_tup", "n_dead_tup", "dead_ratio", "n_mod_since_analyze", "mod_ratio", "n_ins_since_vacuum",
                    "reltuples", "size_bytes", "last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze")
            planned.append({"action": action, "object": row["object"], "kind": "table", "reason": reason,
                            "hypertable": row["hypertable"], "stats": dict((k, row[k]) for k in keys),
                            "_target": (row["schemaname"], row["relname"])})
    indexes = list(cur.execute(INDEXES_SQL, (list(tables),))) if tables else []
    result["counts"]["indexes"] = len(indexes)
    for row in indexes:
        action, reason, stats = index_decision(params, conn, row, block_size)
        if action:
            table = tables[row["indrelid"]]
            planned.append({"action": action, "object": "%s.%s" % (row["nspname"], row["relname"]), "kind": "index",
                            "table": table["object"], "hypertable": table["hypertable"], "reason": reason,
                            "stats": stats, "_target": (row["nspname"], row["relname"])})
    return planned


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        schemas=dict(type="list", elements="str", default=[]),
        tables=dict(type="list", elements="str", default=[]),
        exclude_schemas=dict(type="list", elements="str", default=[]),
        exclude_tables=dict(type="list", elements="str", default=[]),
        actions=dict(type="list", elements="str", choices=["vacuum", "analyze", "reindex"],
                     default=["vacuum", "analyze", "reindex"]),
        vacuum_dead_ratio=dict(type="float", default=0.1),
        vacuum_min_dead=dict(type="int", default=1000),
        vacuum_max_age=dict(type="str", default=""),
        vacuum_min_interval=dict(type="str", default="1 hour"),
        analyze_mod_ratio=dict(type="float", default=0.1),
        analyze_min_mod=dict(type="int", default=1000),
        reindex_invalid=dict(type="bool", default=True),
        reindex_bloat_ratio=dict(type="float", default=0.5),
        reindex_min_bytes=dict(type="int", default=10485760),
        bloat_method=dict(type="str", choices=["estimate", "pgstattuple"], default="estimate"),
        statement_timeout=dict(type="str", default="30min"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result = dict(changed=False, actions=[], skipped=[], queries=[], seconds=0.0,
                  counts=dict(tables=0, indexes=0, planned=0, done=0, failed=0))
    watch = Stopwatch()
    conn = connect(module, autocommit=True)
    record_queries(conn, result["queries"])
    failure = None
    try:
        conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                     (module.params["lock_timeout"], module.params["statement_timeout"]))
        planned = plan(module, conn, result)
        result["counts"]["planned"] = len(planned)
        for item in planned:
            query = statement(item["action"], *item.pop("_target"))
            item["statement"] = query.as_string(conn)
            if module.check_mode:
                item.update(status="planned", duration_ms=0.0)
                result["actions"].append(item)
                continue
            step = Stopwatch()
            try:
                conn.execute(query)
            except psycopg.Error as exc:
                if conn.broken or conn.closed:
                    raise
                if is_lock_timeout(exc):
                    # Each action takes SHARE UPDATE EXCLUSIVE on its table (and index): name its holder.
                    locked = [item["table"], item["object"]] if item.get("table") else [item["object"]]
                    error = lock_failure(module, locked, "ShareUpdateExclusiveLock",
                                         outcome="skipped", exclude_pids=[backend_pid(conn)])
                else:
                    error = str(exc).strip()
                item.update(status="failed", error=error)
                result["counts"]["failed"] += 1
                module.warn("%s %s failed: %s" % (item["action"], item["object"], item["error"]))
            else:
                item["status"] = "done"
                result["counts"]["done"] += 1
                result["changed"] = True
            item["duration_ms"] = step.ms
            result["actions"].append(item)
        if result["changed"]:
            conn.execute("SELECT pg_stat_force_next_flush()")
    except psycopg.Error as exc:
        failure = "maintenance failed: %s" % str(exc).strip()
    finally:
        conn.close()
        result["seconds"] = round(watch.ms / 1000.0, 3)
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
