#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: schema_migrations
short_description: Apply versioned SQL migrations in order and record them
description:
  - Applies each migration whose version is not yet recorded in O(table), in version order,
    each in its own transaction together with its record (version, name, checksum, time).
  - A migration already applied whose SQL changed since (checksum differs) fails the run,
    naming the version, unless O(allow_checksum_mismatch) is set; nothing is applied then.
  - Holds an advisory lock so two runs never interleave. It waits at most O(lock_wait_seconds)
    for it (C(pg_try_advisory_lock), retried), then fails naming the session that holds it
    (pid, application_name) and applies nothing.
  - Every statement waits at most O(lock_timeout) for a table lock; a migration that cannot get
    one in time fails naming the lock timeout and the session holding the lock, and is not
    recorded (a transactional migration rolls back as a whole).
  - In check mode it connects, reads what is recorded and returns the pending migrations
    without running them; C(changed) is true exactly when something is pending or superseded.
options:
  migrations:
    description:
      - List of migrations, each with C(version), C(name), C(sql), optional C(transactional) (default true)
        and optional C(replaces), the checksums of earlier texts of this migration that a later
        release rewrote on purpose.
      - A database that applied one of the C(replaces) texts is not a checksum mismatch; its record takes
        the new name and checksum (a change) and the SQL is not run again, so whatever the earlier text
        created must be kept up by idempotent tasks instead.
    type: list
    elements: dict
    required: true
  table:
    description: Table that records applied migrations (created when missing).
    type: str
    default: schema_migrations
  allow_checksum_mismatch:
    description: Only warn, instead of failing, when an applied migration's SQL changed.
    type: bool
    default: false
  lock_wait_seconds:
    description:
      - Seconds to wait for the migrations' advisory lock held by another run before failing
        (C(0) tries once).
    type: int
    default: 60
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Apply migrations
  schema_migrations:
    login_db: quant_platform
    migrations:
      - {version: "0001", name: extensions, sql: "CREATE EXTENSION IF NOT EXISTS timescaledb;"}
"""

RETURN = r"""
applied:
  description: Migrations applied by this run, with C(version), C(name) and C(ms).
  returned: always
  type: list
  sample: [{version: "0007", name: market_data_integrity, ms: 41.2}]
pending:
  description: Versions not applied before this run (in check mode, what would be applied).
  returned: always
  type: list
  sample: ["0007"]
already_applied:
  description: Versions recorded before this run.
  returned: always
  type: list
  sample: ["0001", "0002"]
checksum_mismatches:
  description: Applied versions whose SQL differs from what was recorded.
  returned: always
  type: list
  sample: []
queries:
  description: The SQL of the pending migrations, in the order they ran (in check mode, would run).
  returned: always
  type: list
  sample: ["ALTER TABLE public.ohlcv_data ADD CONSTRAINT ohlcv_values_present CHECK (...) NOT VALID; ..."]
superseded:
  description: Applied versions recorded with a text their C(replaces) lists, now recorded with the current one.
  returned: always
  type: list
  sample: ["0005"]
"""

from ansible.module_utils.basic import AnsibleModule
import time

from ansible.module_utils.quantdb_pg import (
    Stopwatch, backend_pid, connect, connection_argument_spec, is_lock_timeout, lock_failure, lock_holders, sha256_text,
    sql)

LOCK_KEY = 4242001  # advisory lock id for migrations (any constant unique to this tool)


def advisory_wait_message(key, waited, holders):
    """Why the migrations lock was not taken: who holds it, how long this run waited."""
    held = ", ".join("pid %s app=%s" % (h["pid"], h["application_name"] or "?") for h in holders[:3])
    return ("another run holds the migrations lock (advisory lock %d)%s; waited %ss (lock_wait_seconds); "
            "nothing applied" % (key, (": " + held) if held else " (its holder has gone since)", waited))


def take_migrations_lock(module, conn, result):
    """pg_try_advisory_lock, retried with growing pauses for up to lock_wait_seconds: never a
    wait without end behind a run that hangs."""
    wait = max(0, module.params["lock_wait_seconds"])
    start = time.monotonic()
    pause = 0.1
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        left = wait - (time.monotonic() - start)
        if left <= 0:
            holders = lock_holders(module, mode="ExclusiveLock", advisory_key=LOCK_KEY, exclude_pids=[backend_pid(conn)])
            module.fail_json(msg=advisory_wait_message(LOCK_KEY, wait, holders), **result)
        time.sleep(min(pause, left))
        pause = min(pause * 2, 2.0)


def validate(module, migrations):
    seen = set()
    for index, item in enumerate(migrations):
        for key in ("version", "name", "sql"):
            if not str(item.get(key) or "").strip():
                module.fail_json(msg="migrations[%d]: '%s' is required" % (index, key))
        version = str(item["version"])
        if version in seen:
            module.fail_json(msg="migrations[%d]: duplicate version %s" % (index, version))
        seen.add(version)
    return sorted(migrations, key=lambda m: str(m["version"]))


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        migrations=dict(type="list", elements="dict", required=True),
        table=dict(type="str", default="schema_migrations"),
        allow_checksum_mismatch=dict(type="bool", default=False),
        lock_wait_seconds=dict(type="int", default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    migrations = validate(module, module.params["migrations"])
    table = sql.Identifier(module.params["table"])

    conn = connect(module, autocommit=True)
    result = dict(changed=False, applied=[], pending=[], already_applied=[], checksum_mismatches=[], superseded=[],
                  queries=[])
    with conn:
        take_migrations_lock(module, conn, result)
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (module.params["table"],)).fetchone()[0]
        recorded = {}
        if exists:
            rows = conn.execute(sql.SQL("SELECT version, checksum FROM {}").format(table)).fetchall()
            recorded = dict(rows)
        result["already_applied"] = sorted(recorded)

        superseded = []
        for item in migrations:
            version = str(item["version"])
            if version in recorded and recorded[version] != sha256_text(item["sql"]):
                if recorded[version] in (item.get("replaces") or []):
                    superseded.append(item)
                else:
                    result["checksum_mismatches"].append(version)
        if result["checksum_mismatches"] and not module.params["allow_checksum_mismatch"]:
            module.fail_json(msg="applied migration(s) %s changed since they ran; write a new migration instead "
                                 "of editing an applied one (or set allow_checksum_mismatch)"
                                 % ", ".join(result["checksum_mismatches"]), **result)
        for version in result["checksum_mismatches"]:
            module.warn("migration %s changed since it was applied" % version)

        pending = [m for m in migrations if str(m["version"]) not in recorded]
        result["pending"] = [str(m["version"]) for m in pending]
        result["queries"] = [m["sql"] for m in pending]   # run, or in check mode to be run, in order
        result["superseded"] = [str(m["version"]) for m in superseded]
        result["changed"] = bool(pending or superseded)
        if not module.check_mode:
            for item in superseded:
                conn.execute(sql.SQL("UPDATE {} SET name = %s, checksum = %s WHERE version = %s").format(table),
                             (item["name"], sha256_text(item["sql"]), str(item["version"])))
        if module.check_mode or not pending:
            module.exit_json(**result)

        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version text PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
            "execution_ms double precision NOT NULL)").format(table))
        record = sql.SQL("INSERT INTO {} (version, name, checksum, execution_ms) VALUES (%s, %s, %s, %s)").format(table)
        for item in pending:
            version = str(item["version"])
            watch = Stopwatch()
            try:
                if item.get("transactional", True):
                    with conn.transaction():
                        conn.execute(item["sql"])
                        conn.execute(record, (version, item["name"], sha256_text(item["sql"]), watch.ms))
                else:
                    conn.execute(item["sql"])
                    conn.execute(record, (version, item["name"], sha256_text(item["sql"]), watch.ms))
            except Exception as exc:  # psycopg.Error and friends: report which migration broke
                if is_lock_timeout(exc):
                    why = lock_failure(module, outcome="not applied", exclude_pids=[backend_pid(conn)])
                else:
                    why = str(exc).strip()
                module.fail_json(msg="migration %s (%s) failed: %s" % (version, item["name"], why), **result)
            result["applied"].append(dict(version=version, name=item["name"], ms=watch.ms))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
