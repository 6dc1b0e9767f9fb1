#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_tuning_facts
short_description: Compute PostgreSQL memory, parallelism and lock settings from the host it runs on
description:
  - Reads the memory and CPUs the database server can really use on the target host, the
    smallest of C(/proc/meminfo) MemTotal, the cgroup memory limit (v1 or v2) and O(memory_mb);
    CPUs likewise from the affinity mask, a CFS quota and O(cpus).
  - Returns the settings computed by C(module_utils/pg_tuning.py) for memory (shared_buffers,
    effective_cache_size, work_mem, maintenance_work_mem, autovacuum_work_mem), autovacuum_max_workers,
    max_locks_per_transaction, WAL buffers, parallelism, jit and default_toast_compression. Each
    rule, its reason and its source (timescaledb-tune, PGTune, the PostgreSQL documentation) is
    in docs/site.md, "Tuning rules".
  - Read-only; never reports a change, so it runs unchanged in check mode.
options:
  memory_mb:
    description: Explicit memory ceiling in MB; 0 means detect only.
    type: int
    default: 0
  cpus:
    description: Explicit CPU ceiling; 0 means detect only.
    type: int
    default: 0
  max_connections:
    description: max_connections the work_mem formula divides by.
    type: int
    default: 100
  rules:
    description:
      - Overrides of the tuning rules, see C(DEFAULT_RULES) in C(module_utils/pg_tuning.py); an
        unknown key fails the task.
      - Ratios and caps (V(shared_buffers_ratio), V(work_mem_max_mb), V(maintenance_work_mem_max_mb),
        V(autovacuum_work_mem_max_mb), ...); V(max_locks_per_transaction) and V(autovacuum_max_workers)
        (0 computes them from memory and CPUs); V(jit) (boolean) and V(default_toast_compression)
        (V(pglz) or V(lz4)).
    type: dict
    default: {}
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Compute tuning for this host
  pg_tuning_facts:
    max_connections: 100
    memory_mb: 0
  register: tuning
"""

RETURN = r"""
memory_mb:
  description: Memory the settings were computed for.
  returned: always
  type: int
  sample: 2048
cpus:
  description: CPUs the settings were computed for.
  returned: always
  type: int
  sample: 2
detected:
  description: What each source reported (meminfo_mb, cgroup_memory_mb, cpu_count, cgroup_cpus).
  returned: always
  type: dict
  sample: {meminfo_mb: 24000, cgroup_memory_mb: 2048, cpu_count: 2, cgroup_cpus: null}
settings:
  description: postgresql.conf settings, values as strings (e.g. C(512MB)).
  returned: always
  type: dict
  sample:
    shared_buffers: 512MB
    effective_cache_size: 1536MB
    work_mem: 10MB
    maintenance_work_mem: 128MB
    autovacuum_work_mem: 42MB
    autovacuum_max_workers: "3"
    max_locks_per_transaction: "128"
    jit: "off"
    default_toast_compression: lz4
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pg_tuning import (
    DEFAULT_RULES, cgroup_cpu_limit, cgroup_memory_limit_mb, compute_settings,
    cpu_count, effective_resource, meminfo_total_mb,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            memory_mb=dict(type="int", default=0),
            cpus=dict(type="int", default=0),
            max_connections=dict(type="int", default=100),
            rules=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    p = module.params
    unknown = sorted(set(p["rules"]) - set(DEFAULT_RULES))
    if unknown:
        module.fail_json(msg="rules: unknown key(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(DEFAULT_RULES))))
    detected = {
        "meminfo_mb": meminfo_total_mb(),
        "cgroup_memory_mb": cgroup_memory_limit_mb(),
        "cpu_count": cpu_count(),
        "cgroup_cpus": cgroup_cpu_limit(),
    }
    try:
        memory = effective_resource(detected["meminfo_mb"], detected["cgroup_memory_mb"], p["memory_mb"])
        cpus = effective_resource(detected["cpu_count"], detected["cgroup_cpus"], p["cpus"])
        settings = compute_settings(memory, cpus, p["max_connections"], p["rules"])
    except ValueError as exc:
        module.fail_json(msg=str(exc), detected=detected)
    module.exit_json(changed=False, memory_mb=memory, cpus=cpus, detected=detected, settings=settings)


if __name__ == "__main__":
    main()
