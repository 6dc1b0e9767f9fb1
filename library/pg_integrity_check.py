#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_integrity_check
short_description: Detect corruption with pg_amcheck, checksum failures and constraint checks; reindex only what is flagged
description:
  - Runs C(pg_amcheck) (heap and B-tree checks, with C(--heapallindexed) by default) over every
    relation of O(schemas), by default C(public) and C(_timescaledb_internal), so the TimescaleDB
    chunks of the hypertables are checked with their parents; reads
    C(pg_stat_database.checksum_failures) of every database; validates the table constraints of
    those schemas that are C(NOT VALID) (C(ALTER TABLE ... VALIDATE CONSTRAINT)) and re-checks the
    valid CHECK and foreign key constraints set-based (one count query per constraint, on the parent
    table only, which covers its chunks).
  - With O(reindex), rebuilds only the B-tree indexes pg_amcheck flagged (C(REINDEX INDEX), never
    a whole table or database) and checks each again with pg_amcheck; heap corruption is reported,
    never repaired.
  - Creates the C(amcheck) extension in O(login_db) when it is missing (reported as a change). In
    check mode nothing is created, validated or rebuilt; without the extension pg_amcheck is then
    skipped (reported in C(skipped)).
  - C(changed=true) only when the extension was created, a constraint validated or an index rebuilt.
  - Runs on the database host (pg_amcheck connects with the same libpq parameters). Needs a
    superuser or a role allowed to execute the amcheck functions.
options:
  pg_amcheck:
    description:
      - Path of the pg_amcheck binary.
    type: path
    default: /usr/lib/postgresql/17/bin/pg_amcheck
  schemas:
    description:
      - Schemas whose tables, indexes and TOAST tables pg_amcheck checks, and whose constraints are
        validated and re-checked.
    type: list
    elements: str
    default: [public, _timescaledb_internal]
  heapallindexed:
    description:
      - Check that every heap tuple has its index entry (C(--heapallindexed)).
    type: bool
    default: true
  parent_check:
    description:
      - Also check parent/child relationships in B-trees (C(--parent-check)); takes a ShareLock that
        blocks writes while each index is checked.
    type: bool
    default: false
  jobs:
    description:
      - Parallel connections pg_amcheck uses (C(--jobs)).
    type: int
    default: 1
  reindex:
    description:
      - Rebuild the B-tree indexes pg_amcheck flags (C(REINDEX INDEX)), then check them again.
    type: bool
    default: false
  validate_constraints:
    description:
      - Validate the C(NOT VALID) CHECK and foreign key constraints of the tables in O(schemas).
    type: bool
    default: true
  recheck_constraints:
    description:
      - Re-check the valid CHECK and foreign key constraints with one count query each (a full scan
        of each table that has one).
    type: bool
    default: true
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Check the quant tables and their chunks, rebuilding flagged indexes
  pg_integrity_check:
    login_db: quant_platform
    login_host: /var/run/postgresql
    reindex: true
  become: true
  become_user: postgres
  register: integrity
"""

RETURN = r"""
status:
  description: C(clean), C(repaired) (every flagged index rebuilt and clean on re-check, nothing else
    found) or C(corrupt).
  returned: always
  type: str
  sample: corrupt
corruption:
  description: What pg_amcheck reported, one entry per relation (and block/offset for heap findings).
  returned: always
  type: list
  elements: dict
  sample:
    - kind: btree index
      relation: public.chk_idx
      location: ""
      messages: ["ERROR:  item order invariant violated for index \"chk_idx\"", "DETAIL:  Lower index tid=(1,1) ..."]
      summary: "ERROR:  item order invariant violated for index \"chk_idx\""
flagged_indexes:
  description: B-tree indexes pg_amcheck flagged, schema-qualified.
  returned: always
  type: list
  elements: str
  sample: [public.chk_idx]
reindexed:
  description: Indexes rebuilt (in check mode, those that would be), each with the re-check result.
  returned: always
  type: list
  elements: dict
  sample: [{index: public.chk_idx, seconds: 0.02, recheck: "rebuilt, re-check clean"}]
checksum_failures:
  description: C(pg_stat_database.checksum_failures) per database (those with a count only).
  returned: always
  type: dict
  sample: {quant_platform: 0}
data_checksums:
  description: Whether the cluster has data checksums (without them checksum_failures stays 0).
  returned: always
  type: bool
  sample: true
constraints:
  description: Constraints validated (or that would be), violations found, and how many valid ones were re-checked.
  returned: always
  type: dict
  sample: {validated: ["public.t.t_x_check"], rechecked: 12, violations: [{constraint: "public.t.t_x_check", rows: 3}]}
amcheck:
  description: The pg_amcheck command line, its exit code and seconds (rc -1 when skipped).
  returned: always
  type: dict
  sample: {cmd: "pg_amcheck -d quant_platform --heapallindexed -s public", rc: 2, seconds: 0.4}
skipped:
  description: Steps not run, with the reason.
  returned: always
  type: list
  elements: str
  sample: ["pg_amcheck: the amcheck extension is not installed (check mode)"]
queries:
  description: The SQL statements run, in order.
  returned: always
  type: list
  elements: str
  sample: ["CREATE EXTENSION IF NOT EXISTS amcheck"]
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_pg import (
    backend_pid, connect, connection_argument_spec, is_lock_timeout, lock_failure, psycopg, record_queries,
    resolve_ssl_mode, sql)

HEADER = re.compile(r'^(?P<kind>[a-z]+(?: [a-z]+)*) "(?P<name>[^"]+)"(?P<location>,[^:]*)?:$')


def parse_amcheck(output):
    """pg_amcheck's report as a list of {kind, relation, location, messages}."""
    found = []
    current = None
    for line in output.splitlines():
        match = HEADER.match(line)
        if match:
            name = match.group("name")
            relation = name.split(".", 1)[1] if name.count(".") >= 2 else name
            current = dict(kind=match.group("kind"), relation=relation,
                           location=(match.group("location") or "").lstrip(", "), messages=[])
            found.append(current)
        elif current is not None and line.startswith(" ") and line.strip():
            current["messages"].append(line.strip())
    for entry in found:
        entry["summary"] = entry["messages"][0] if entry["messages"] else ""
    return found


def amcheck_argv(params, indexes=None):
    argv = [params["pg_amcheck"], "-d", params["login_db"], "-p", str(params["login_port"]), "--no-strict-names"]
    if params["login_host"]:
        argv += ["-h", params["login_host"]]
    if params["login_user"]:
        argv += ["-U", params["login_user"]]
    argv += ["--no-password"]
    if params["heapallindexed"]:
        argv.append("--heapallindexed")
    if params["parent_check"]:
        argv.append("--parent-check")
    if indexes:
        for index in indexes:
            argv += ["-i", index]
    else:
        argv += ["-j", str(params["jobs"])]
        for schema in params["schemas"]:
            argv += ["-s", schema]
    return argv


def run_amcheck(module, indexes=None):
    env = {"PGAPPNAME": module.params["application_name"], "PGSSLMODE": resolve_ssl_mode(module.params),
           "PGCONNECT_TIMEOUT": str(module.params["connect_timeout"])}
    if module.params["ssl_rootcert"]:
        env["PGSSLROOTCERT"] = module.params["ssl_rootcert"]
    if module.params["login_password"]:
        env["PGPASSWORD"] = module.params["login_password"]
    argv = amcheck_argv(module.params, indexes)
    start = time.monotonic()
    rc, out, err = module.run_command(argv, environ_update=env)
    return dict(cmd=" ".join(argv), rc=rc, seconds=round(time.monotonic() - start, 3)), out, err


def constraint_rows(cur, schemas):
    cur.execute("""SELECT n.nspname, c.relname, k.conname, k.contype, k.convalidated,
                          pg_get_expr(k.conbin, k.conrelid), k.conkey, k.confrelid, k.confkey, k.coninhcount
                   FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = ANY(%s) AND k.contype IN ('c', 'f') AND c.relkind IN ('r', 'p')
                   ORDER BY n.nspname = '_timescaledb_internal', n.nspname, c.relname, k.conname""", (schemas,))
    return cur.fetchall()


def attnames(cur, relid, attnums):
    cur.execute("SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum = ANY(%s)",
                (relid, list(attnums)))
    names = dict(cur.fetchall())
    return [names[n] for n in attnums]


def recheck_query(cur, schema, table, contype, expr, conkey, confrelid, confkey):
    target = sql.Identifier(schema, table)
    if contype == "c":
        return sql.SQL("SELECT count(*) FROM {} WHERE NOT ({})").format(target, sql.SQL(expr))
    cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = %s", (confrelid,))
    pschema, ptable = cur.fetchone()
    cur.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s", (schema, table))
    relid = cur.fetchone()[0]
    child_cols = attnames(cur, relid, conkey)
    parent_cols = attnames(cur, confrelid, confkey)
    not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(col)) for col in child_cols)
    join = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(col))
                                 for p, col in zip(parent_cols, child_cols))
    return sql.SQL("SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
        target, not_null, sql.Identifier(pschema, ptable), join)


def check_constraints(module, conn, result):
    params = module.params
    report = result["constraints"]
    with conn.cursor() as cur:
        rows = constraint_rows(cur, params["schemas"])
        for schema, table, name, contype, valid, expr, conkey, confrelid, confkey, inherited in rows:
            label = "%s.%s.%s" % (schema, table, name)
            if not valid and params["validate_constraints"]:
                if module.check_mode:
                    report["validated"].append(label)
                    continue
                try:
                    with conn.transaction():
                        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(params["lock_timeout"])))
                        cur.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                            sql.Identifier(schema, table), sql.Identifier(name)))
                    report["validated"].append(label)
                    result["changed"] = True
                except psycopg.Error as exc:
                    error = str(exc).strip()
                    if is_lock_timeout(exc):   # VALIDATE takes SHARE UPDATE EXCLUSIVE: name the holder
                        error = lock_failure(module, ["%s.%s" % (schema, table)], "ShareUpdateExclusiveLock",
                                             outcome="not validated", exclude_pids=[backend_pid(conn)])
                    report["violations"].append(dict(constraint=label, rows=None, error=error))
                continue
            if not valid or not params["recheck_constraints"] or inherited or schema == "_timescaledb_internal":
                continue
            query = recheck_query(cur, schema, table, contype, expr, conkey, confrelid, confkey)
            try:
                cur.execute(query)
                bad = cur.fetchone()[0]
            except psycopg.Error as exc:
                report["violations"].append(dict(constraint=label, rows=None, error=str(exc).strip()))
                continue
            report["rechecked"] += 1
            if bad:
                report["violations"].append(dict(constraint=label, rows=bad))


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        pg_amcheck=dict(type="path", default="/usr/lib/postgresql/17/bin/pg_amcheck"),
        schemas=dict(type="list", elements="str", default=["public", "_timescaledb_internal"]),
        heapallindexed=dict(type="bool", default=True),
        parent_check=dict(type="bool", default=False),
        jobs=dict(type="int", default=1),
        reindex=dict(type="bool", default=False),
        validate_constraints=dict(type="bool", default=True),
        recheck_constraints=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    result = dict(changed=False, status="clean", corruption=[], flagged_indexes=[], reindexed=[],
                  checksum_failures={}, data_checksums=False,
                  constraints=dict(validated=[], rechecked=0, violations=[]),
                  amcheck=dict(cmd="", rc=-1, seconds=0.0), skipped=[], queries=[])
    if not os.access(params["pg_amcheck"], os.X_OK):
        module.fail_json(msg="%s not found or not executable (package postgresql-17)" % params["pg_amcheck"], **result)
    conn = connect(module, autocommit=True)
    record_queries(conn, result["queries"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('data_checksums') = 'on'")
            result["data_checksums"] = cur.fetchone()[0]
            cur.execute("SELECT datname, checksum_failures FROM pg_stat_database "
                        "WHERE datname IS NOT NULL AND checksum_failures > 0 ORDER BY 1")
            result["checksum_failures"] = dict(cur.fetchall())
            cur.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'amcheck')")
            have_amcheck = cur.fetchone()[0]
            if not have_amcheck and not module.check_mode:
                cur.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                result["changed"] = have_amcheck = True
        if have_amcheck:
            result["amcheck"], out, err = run_amcheck(module)
            if result["amcheck"]["rc"] not in (0, 2):
                conn.close()
                module.fail_json(msg="pg_amcheck failed (rc %d): %s" % (result["amcheck"]["rc"], (err or out).strip()),
                                 **result)
            result["corruption"] = parse_amcheck(out)
            if result["amcheck"]["rc"] == 2 and not result["corruption"]:
                lines = out.strip().splitlines()
                result["corruption"] = [dict(kind="unknown", relation="", location="", messages=lines,
                                             summary=lines[0] if lines else "")]
        else:
            result["skipped"].append("pg_amcheck: the amcheck extension is not installed (check mode)")
        result["flagged_indexes"] = sorted(set(c["relation"] for c in result["corruption"] if c["kind"] == "btree index"))
        if params["reindex"]:
            for index in result["flagged_indexes"]:
                entry = dict(index=index, seconds=0.0, recheck="would be rebuilt (check mode)" if module.check_mode else "")
                result["reindexed"].append(entry)
                if module.check_mode:
                    continue
                schema, name = index.split(".", 1)
                start = time.monotonic()
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(params["lock_timeout"])))
                    cur.execute(sql.SQL("REINDEX INDEX {}").format(sql.Identifier(schema, name)))
                    cur.execute("RESET lock_timeout")
                entry["seconds"] = round(time.monotonic() - start, 3)
                result["changed"] = True
                recheck, out, err = run_amcheck(module, [index])
                entry["recheck"] = "rebuilt, re-check clean" if recheck["rc"] == 0 else "rebuilt, re-check corrupt: " + (out or err).strip()
        check_constraints(module, conn, result)
    except psycopg.Error as exc:
        error = str(exc).strip()
        if is_lock_timeout(exc):   # REINDEX INDEX: SHARE on the table, ACCESS EXCLUSIVE on the index
            error = lock_failure(module, result["flagged_indexes"], "AccessExclusiveLock", outcome="not rebuilt",
                                 exclude_pids=[backend_pid(conn)])
        conn.close()
        module.fail_json(msg="integrity check failed: %s" % error, **result)
    conn.close()
    repaired = set(e["index"] for e in result["reindexed"] if e["recheck"] == "rebuilt, re-check clean")
    remaining = [c for c in result["corruption"] if not (c["kind"] == "btree index" and c["relation"] in repaired)]
    if remaining or result["checksum_failures"] or result["constraints"]["violations"]:
        result["status"] = "corrupt"
    elif result["corruption"]:
        result["status"] = "repaired"
    module.exit_json(**result)


if __name__ == "__main__":
    main()
