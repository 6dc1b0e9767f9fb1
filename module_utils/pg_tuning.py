# -*- coding: utf-8 -*-
"""PostgreSQL tuning arithmetic for quantdb-ops.

Pure functions (no Ansible imports) so pytest can test them directly, plus the host
probes the `pg_tuning_facts` module uses. The rules follow the operations guide's
16 GB example (shared_buffers 4GB, effective_cache_size 12GB, work_mem 64MB,
maintenance_work_mem 1GB) and scale with the memory and CPUs the server can really use:
inside a container that is the cgroup limit, not the host's MemTotal.
"""
from __future__ import absolute_import, division, print_function

import os

__metaclass__ = type

MB = 1024 * 1024
# cgroup v1 reports "no limit" as a huge page-aligned number; anything above this is unlimited.
_CGROUP_UNLIMITED = 1 << 60

DEFAULT_RULES = {
    "shared_buffers_ratio": 0.25,
    "effective_cache_size_ratio": 0.75,
    "work_mem_min_mb": 4,
    "work_mem_max_mb": 64,
    "maintenance_work_mem_ratio": 1.0 / 16,
    "maintenance_work_mem_max_mb": 1024,
    "maintenance_work_mem_min_mb": 64,
    "wal_buffers_mb": 16,
    "timescaledb_background_workers": 8,
}


def format_mb(value_mb):
    """Render megabytes the way postgresql.conf reads them: whole GB when exact, else MB."""
    value_mb = int(value_mb)
    if value_mb >= 1024 and value_mb % 1024 == 0:
        return "%dGB" % (value_mb // 1024)
    return "%dMB" % value_mb


def compute_settings(memory_mb, cpus, max_connections=100, rules=None):
    """Return {setting: value} for a server with `memory_mb` of RAM and `cpus` CPUs.

    work_mem = memory / (2 x max_connections), clamped to [4MB, 64MB]: on the guide's
    16 GB host with 100 connections that is 82MB, capped to the guide's 64MB; on a 2 GB
    lab container it is 10MB, so 100 sorts at once cannot push the box into swap.
    """
    r = dict(DEFAULT_RULES)
    r.update(rules or {})
    memory_mb = int(memory_mb)
    cpus = int(cpus)
    max_connections = int(max_connections)
    if memory_mb < 256:
        raise ValueError("memory_mb must be at least 256, got %r" % memory_mb)
    if cpus < 1:
        raise ValueError("cpus must be at least 1, got %r" % cpus)
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1, got %r" % max_connections)

    shared_buffers = int(memory_mb * r["shared_buffers_ratio"])
    effective_cache = int(memory_mb * r["effective_cache_size_ratio"])
    work_mem = memory_mb // (2 * max_connections)
    work_mem = max(int(r["work_mem_min_mb"]), min(int(r["work_mem_max_mb"]), work_mem))
    maintenance = int(memory_mb * r["maintenance_work_mem_ratio"])
    maintenance = max(int(r["maintenance_work_mem_min_mb"]),
                      min(int(r["maintenance_work_mem_max_mb"]), maintenance))

    per_gather = max(1, cpus // 2)
    parallel_workers = max(2, cpus)
    maintenance_workers = max(1, min(4, cpus // 2))
    # TimescaleDB's scheduler and jobs, the parallel pool, plus headroom for pg_cron,
    # logical replication launcher and autovacuum launcher style background workers.
    worker_processes = int(r["timescaledb_background_workers"]) + parallel_workers + 3

    return {
        "max_connections": str(max_connections),
        "shared_buffers": format_mb(shared_buffers),
        "effective_cache_size": format_mb(effective_cache),
        "work_mem": format_mb(work_mem),
        "maintenance_work_mem": format_mb(maintenance),
        "wal_buffers": format_mb(r["wal_buffers_mb"]),
        "max_worker_processes": str(worker_processes),
        "max_parallel_workers": str(parallel_workers),
        "max_parallel_workers_per_gather": str(per_gather),
        "max_parallel_maintenance_workers": str(maintenance_workers),
    }


def effective_resource(detected, limit=None, override=None):
    """The smallest positive of detected, a limit (cgroup) and an explicit override."""
    candidates = [v for v in (detected, limit, override) if v]
    if not candidates:
        raise ValueError("no resource value detected")
    return min(candidates)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


# The memory probe: the one place that reads how much memory this host (or container) has.
# Used by the pg_tuning_facts module and, copied next to it, by the benchmark client
# (bench/queries.py), so both see the same figures.
def meminfo_total_bytes(path="/proc/meminfo"):
    """MemTotal of /proc/meminfo in bytes, or None. Inside a container this is still the host's."""
    text = _read(path) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def cgroup_memory_limit_bytes(root="/sys/fs/cgroup"):
    """The cgroup memory limit in bytes: v2 memory.max, else v1 memory/memory.limit_in_bytes;
    None when there is none ("max", or v1's huge page-aligned stand-in for unlimited)."""
    for rel in ("memory.max", "memory/memory.limit_in_bytes"):
        raw = _read(os.path.join(root, rel))
        if raw is None or raw == "max":
            continue
        try:
            value = int(raw)
        except ValueError:
            continue
        if 0 < value < _CGROUP_UNLIMITED:
            return value
    return None


def meminfo_total_mb(path="/proc/meminfo"):
    total = meminfo_total_bytes(path)
    return None if total is None else total // MB


def cgroup_memory_limit_mb(root="/sys/fs/cgroup"):
    """cgroup v2 memory.max, else v1 memory.limit_in_bytes, in MB; None when unlimited."""
    limit = cgroup_memory_limit_bytes(root)
    return None if limit is None else limit // MB


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit(root="/sys/fs/cgroup"):
    """CPUs allowed by a CFS quota (v2 cpu.max, v1 cfs_quota_us/cfs_period_us), rounded up."""
    raw = _read(os.path.join(root, "cpu.max"))
    if raw:
        quota, _sep, period = raw.partition(" ")
        if quota != "max" and period:
            return max(1, -(-int(quota) // int(period)))
    quota = _read(os.path.join(root, "cpu", "cpu.cfs_quota_us")) or _read(os.path.join(root, "cpu,cpuacct", "cpu.cfs_quota_us"))
    period = _read(os.path.join(root, "cpu", "cpu.cfs_period_us")) or _read(os.path.join(root, "cpu,cpuacct", "cpu.cfs_period_us"))
    if quota and period and int(quota) > 0:
        return max(1, -(-int(quota) // int(period)))
    return None
