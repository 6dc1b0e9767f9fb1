#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_constraints
short_description: Validate the NOT VALID CHECK constraints of ohlcv_data when the data allows
description:
  - Migration 0007 adds the CHECK constraints of ohlcv_data (values present, prices finite
    and positive, volume not negative, high/low consistent with open/close, finite date)
    C(NOT VALID), so that a database built by hand from the operations guide is adopted
    instead of refused. New and updated rows are held to them at once.
  - This module counts, in one pass over the table, the existing rows breaking each
    constraint not yet validated. A constraint no row breaks is validated
    (C(ALTER TABLE ... VALIDATE CONSTRAINT), which takes a SHARE UPDATE EXCLUSIVE lock,
    so reads and writes go on). A constraint some rows break stays NOT VALID and the module
    returns those rows, so the DBA can fix or delete them and run it again.
  - Does nothing (changed=false) when every CHECK constraint is validated already or the
    table does not exist.
  - In check mode it counts and reports what it would validate, and validates nothing.
  - A lock not granted within O(lock_timeout) fails the module, nothing changed, naming the
    lock timeout and the session holding the lock.
options:
  table:
    description:
      - Schema-qualified table whose CHECK constraints are validated.
    type: str
    default: public.ohlcv_data
  sample_size:
    description:
      - Offending rows returned per constraint.
    type: int
    default: 5
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Validate the constraints of an adopted ohlcv_data
  ohlcv_constraints:
    login_db: quant_platform
  register: constraints
"""

RETURN = r"""
constraints:
  description: Per CHECK constraint whether it was validated before, the rows breaking it, and whether it is validated now.
  returned: always
  type: dict
  sample:
    ohlcv_high_low_consistent:
      validated_before: false
      offending: 1
      validated: false
      samples:
        - {ticker: AAPL, region: US, date: "2024-05-01", open: 100, high: 90, low: 95, close: 105, volume: 1000}
validated:
  description: Constraints validated by this run (in check mode, that would be).
  returned: always
  type: list
  sample: [ohlcv_values_present, ohlcv_date_finite]
not_valid:
  description: Constraints that stay NOT VALID because rows break them.
  returned: always
  type: list
  sample: [ohlcv_high_low_consistent]
queries:
  description: Statements run, in order.
  returned: always
  type: list
  sample: ["ALTER TABLE public.ohlcv_data VALIDATE CONSTRAINT ohlcv_date_finite"]
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_pg import connect, connection_argument_spec, lock_aware, sql, transaction

CHECKS = """
SELECT c.conname, c.convalidated, pg_get_constraintdef(c.oid)
FROM pg_constraint c WHERE c.conrelid = to_regclass(%s) AND c.contype = 'c' ORDER BY c.conname"""


def check_expression(definition):
    """'CHECK ((a > 0)) NOT VALID' -> '((a > 0))'."""
    match = re.match(r"^CHECK \((.*)\)( NOT VALID)?$", definition, re.S)
    return "(%s)" % match.group(1)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(table=dict(type="str", default="public.ohlcv_data"),
                         sample_size=dict(type="int", default=5))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if "." not in p["table"]:
        module.fail_json(msg="table must be schema-qualified (schema.table), got %r" % p["table"])
    schema, name = p["table"].split(".", 1)
    table = sql.Identifier(schema, name)
    result = dict(changed=False, constraints={}, validated=[], not_valid=[], queries=[])

    conn = connect(module)
    # VALIDATE CONSTRAINT takes SHARE UPDATE EXCLUSIVE: a lock not granted within lock_timeout
    # fails naming its holder.
    failure = lock_aware(module, "validating the constraints of %s failed, nothing changed" % p["table"], conn,
                         [p["table"]], "ShareUpdateExclusiveLock", prefix="validating the constraints of %s" % p["table"],
                         outcome="nothing changed")
    with transaction(module, conn, failure, result):
        cur = conn.cursor()
        cur.execute(CHECKS, (p["table"],))
        pending = []
        for conname, validated, definition in cur.fetchall():
            result["constraints"][conname] = dict(validated_before=validated, offending=0, validated=validated, samples=[])
            if not validated:
                pending.append((conname, check_expression(definition)))
        if pending:
            # One pass counts the offenders of every pending constraint. A CHECK passes on
            # NULL, so an offender is a row whose expression is false.
            broken = ["NOT coalesce(%s, true)" % expr for _name, expr in pending]
            count = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE %s)" % b) for b in broken), table)
            result["queries"].append(count.as_string(conn))
            cur.execute(count)
            counts = cur.fetchone()
            for (conname, expr), offending, where in zip(pending, counts, broken):
                entry = result["constraints"][conname]
                entry["offending"] = int(offending)
                if offending:
                    cur.execute(sql.SQL("SELECT to_jsonb(t) - 'id' - 'created_at' FROM {} t WHERE %s "
                                        "ORDER BY ticker, region, date LIMIT %%s" % where).format(table),
                                (p["sample_size"],))
                    entry["samples"] = [r[0] for r in cur.fetchall()]
                    result["not_valid"].append(conname)
                    continue
                validate = sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, sql.Identifier(conname))
                result["queries"].append(validate.as_string(conn))
                if not module.check_mode:
                    cur.execute(validate)
                entry["validated"] = True
                result["validated"].append(conname)
        result["changed"] = bool(result["validated"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
