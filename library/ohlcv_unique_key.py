#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_unique_key
short_description: Give an adopted ohlcv_data its unique (ticker, region, date) key, removing duplicates first
description:
  - For databases built by hand from the operations guide, whose ohlcv_data has no unique key and
    may hold duplicate bars. When C(public.ohlcv_data) exists without a unique index on exactly
    (ticker, region, date), it deletes the duplicates keeping the row with the earliest
    created_at (then lowest id), the guide's rule, replaces a non-unique index of the same name,
    and creates the unique index, all in one transaction.
  - Does nothing (changed=false) when the table does not exist yet or already has the key.
  - In check mode it counts the rows and the duplicates with one read-only query and returns the
    statements it would run; it takes no lock, deletes nothing and builds no index.
  - A lock not granted within O(lock_timeout) fails the module, nothing changed, naming the
    lock timeout and the session holding the lock.
options:
  index_name:
    description: Name of the unique index.
    type: str
    default: idx_ohlcv_ticker_region_date
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Adopt a seed-style ohlcv_data
  ohlcv_unique_key:
    login_db: quant_platform
"""

RETURN = r"""
table_exists:
  description: Whether public.ohlcv_data exists.
  returned: always
  type: bool
  sample: true
had_key:
  description: Whether the unique key was already there.
  returned: always
  type: bool
  sample: false
duplicates_removed:
  description: Rows deleted (or that would be, in check mode).
  returned: always
  type: int
  sample: 3
rows_before:
  description: Rows in ohlcv_data before.
  returned: when adopted
  type: int
  sample: 735
queries:
  description: Statements run (in check mode, that would be run), in order.
  returned: when adopted
  type: list
  sample: ["LOCK TABLE public.ohlcv_data IN SHARE ROW EXCLUSIVE MODE", "CREATE UNIQUE INDEX ..."]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_ohlcv import HAS_UNIQUE_KEY, UNIQUE_INDEX, dedupe_statement, drop_index_ddl, unique_index_ddl
from ansible.module_utils.quantdb_pg import connect, connection_argument_spec, lock_aware, statement_text, transaction


# Rows, and rows the dedupe would delete (all but one of each key), without changing anything.
COUNT_DUPLICATES = """
SELECT coalesce(sum(n), 0)::bigint, coalesce(sum(n - 1), 0)::bigint
FROM (SELECT count(*) AS n FROM public.ohlcv_data GROUP BY ticker, region, date) k"""


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(index_name=dict(type="str", default=UNIQUE_INDEX))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result = dict(changed=False, table_exists=False, had_key=False, duplicates_removed=0)
    conn = connect(module)
    failure = lock_aware(module, "adopting ohlcv_data failed, nothing changed", conn, ["public.ohlcv_data"],
                         "ShareRowExclusiveLock", prefix="adopting ohlcv_data", outcome="nothing changed")
    with transaction(module, conn, failure, result):
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.ohlcv_data') IS NOT NULL")
            result["table_exists"] = cur.fetchone()[0]
            if not result["table_exists"]:
                module.exit_json(**result)
            cur.execute(HAS_UNIQUE_KEY)
            result["had_key"] = cur.fetchone()[0]
            if result["had_key"]:
                module.exit_json(**result)
            cur.execute("""SELECT count(*) FILTER (WHERE attname = 'id') = 1 AND count(*) FILTER (WHERE attname = 'created_at') = 1
                           FROM pg_attribute WHERE attrelid = 'public.ohlcv_data'::regclass AND NOT attisdropped""")
            if not cur.fetchone()[0]:
                module.fail_json(msg="ohlcv_data has no unique (ticker, region, date) key and lacks the id and created_at "
                                     "columns the dedupe rule needs; dedupe it by hand first", **result)
            index = module.params["index_name"]
            statements = ["LOCK TABLE public.ohlcv_data IN SHARE ROW EXCLUSIVE MODE", dedupe_statement()]
            cur.execute("SELECT to_regclass(format('public.%%I', %s::text)) IS NOT NULL", (index,))
            if cur.fetchone()[0]:
                statements.append(drop_index_ddl(index))
            statements.append(unique_index_ddl(index))
            result["queries"] = [statement_text(conn, q) for q in statements]
            if module.check_mode:
                # Read-only: no lock, no delete, no index build; the same counts by a query.
                cur.execute(COUNT_DUPLICATES)
                result["rows_before"], result["duplicates_removed"] = cur.fetchone()
            else:
                # The lock first: nobody may add rows between the dedupe and the new key.
                cur.execute(statements[0])
                cur.execute("SELECT count(*) FROM public.ohlcv_data")
                result["rows_before"] = cur.fetchone()[0]
                cur.execute(statements[1])
                result["duplicates_removed"] = cur.rowcount
                for statement in statements[2:]:
                    cur.execute(statement)
        result["changed"] = True
    module.exit_json(**result)


if __name__ == "__main__":
    main()
