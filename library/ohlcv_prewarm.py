#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ohlcv_prewarm
short_description: Load the most recent chunks of ohlcv_data and their indexes into shared_buffers
description:
  - Runs pg_prewarm on every chunk of C(public.ohlcv_data) holding bars newer than O(recent) before
    the newest bar, and on every index of those chunks, so the first reads of recent bars come from
    shared_buffers rather than disk. The same statement as the C(prewarm_recent) of ohlcv_ingest after a
    backfill (both from module_utils/quantdb_ohlcv.py); the benchmark (playbooks/bench.yml)
    runs it before timing the queries.
  - Changes no data, so it always reports C(changed=false), and runs in check mode too (it only
    reads blocks into the cache).
  - Needs the pg_prewarm extension in the database (the schema role creates it); skipped with a
    warning when it is missing.
options:
  recent:
    description:
      - How far back from the newest bar to prewarm, a PostgreSQL interval.
    type: str
    default: 2 years
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Prewarm the last two years of bars
  ohlcv_prewarm:
    login_db: quant_platform
    login_host: /var/run/postgresql
    recent: 2 years
  register: prewarm
"""

RETURN = r"""
blocks:
  description: Blocks pg_prewarm loaded (0 when skipped).
  returned: always
  type: int
  sample: 17123
seconds:
  description: Seconds the prewarm took.
  returned: always
  type: float
  sample: 0.07
queries:
  description: The statements run, in order (each line stripped and joined with a space).
  returned: always
  type: list
  elements: str
  sample:
    - SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm')
    - WITH recent AS ( SELECT c AS rel FROM show_chunks('public.ohlcv_data', ...) c ) SELECT coalesce(sum(pg_prewarm(rel)), 0) ...
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_ohlcv import prewarm_recent
from ansible.module_utils.quantdb_pg import Stopwatch, connect, connection_argument_spec, psycopg, record_queries


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(recent=dict(type="str", default="2 years"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result = dict(changed=False, blocks=0, seconds=0.0, queries=[])
    watch = Stopwatch()
    conn = connect(module, autocommit=True)
    record_queries(conn, result["queries"])
    failure = None
    try:
        blocks = prewarm_recent(conn, module.params["recent"])
    except psycopg.Error as exc:
        failure = "prewarm failed: %s" % str(exc).strip()
    else:
        if blocks is None:
            module.warn("the pg_prewarm extension is not installed in %s; skipped" % module.params["login_db"])
        else:
            result["blocks"] = blocks
    finally:
        conn.close()
        result["seconds"] = round(watch.ms / 1000.0, 3)
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
