# -*- coding: utf-8 -*-
"""PostgreSQL tuning arithmetic for quantdb-ops.

Pure functions (no Ansible imports) so pytest can test them directly, plus the host
probes the `pg_tuning_facts` module uses. The rules started from the operations guide's
16 GB example (shared_buffers 4GB, effective_cache_size 12GB, maintenance_work_mem 1GB)
and were checked against timescaledb-tune 0.19 and PGTune (issue 16); each rule, its reason
and its source is in docs/site.md ("Tuning rules"). They scale with the memory and CPUs the
server can really use: inside a container that is the cgroup limit, not the host's MemTotal.
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
    # work_mem = memory / (max_connections x (1 + max_parallel_workers_per_gather)), clamped.
    "work_mem_min_mb": 4,
    "work_mem_max_mb": 1024,
    "maintenance_work_mem_ratio": 1.0 / 16,
    "maintenance_work_mem_max_mb": 2048,
    "maintenance_work_mem_min_mb": 64,
    # Every autovacuum worker together get what maintenance_work_mem_ratio gives one manual
    # VACUUM: autovacuum_work_mem = memory x ratio / autovacuum_max_workers, clamped.
    "autovacuum_work_mem_min_mb": 16,
    "autovacuum_work_mem_max_mb": 1024,
    # 0 = by CPUs: 3 (PostgreSQL's default), 4 from 16 CPUs, 5 from 32 (PGTune).
    "autovacuum_max_workers": 0,
    # 0 = by memory: 128, 256 from 8 GB, 512 from 16 GB, 1024 from 32 GB (timescaledb-tune).
    "max_locks_per_transaction": 0,
    "wal_buffers_mb": 16,
    "timescaledb_background_workers": 8,
    "jit": False,
    "default_toast_compression": "lz4",
}

# max_locks_per_transaction by memory (timescaledb-tune's steps). A host sold as 16 GB shows
# about 15.6 GB in MemTotal (the kernel keeps some), so each step starts at 15/16 of its size.
_MAX_LOCKS_STEPS = ((32768, 1024), (16384, 512), (8192, 256))
_MAX_LOCKS_BELOW = 128
_TOAST_COMPRESSION = ("pglz", "lz4")
_TRUE = ("1", "true", "on", "yes", "y", "t")
_FALSE = ("0", "false", "off", "no", "n", "f")


def format_mb(value_mb):
    """Render megabytes the way postgresql.conf reads them: whole GB when exact, else MB."""
    value_mb = int(value_mb)
    if value_mb >= 1024 and value_mb % 1024 == 0:
        return "%dGB" % (value_mb // 1024)
    return "%dMB" % value_mb


def _clamp(value, low, high):
    return max(int(low), min(int(high), int(value)))


def _boolean(name, value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("%s must be a boolean, got %r" % (name, value))


def max_locks_for_memory(memory_mb):
    """timescaledb-tune's max_locks_per_transaction steps, read with a MemTotal margin."""
    for step_mb, locks in _MAX_LOCKS_STEPS:
        if memory_mb >= step_mb * 15 // 16:
            return locks
    return _MAX_LOCKS_BELOW


def autovacuum_workers_for_cpus(cpus):
    """PGTune's autovacuum_max_workers: PostgreSQL's 3, 4 from 16 CPUs, 5 from 32."""
    if cpus >= 32:
        return 5
    if cpus >= 16:
        return 4
    return 3


def compute_settings(memory_mb, cpus, max_connections=100, rules=None):
    """Return {setting: value} for a server with `memory_mb` of RAM and `cpus` CPUs.

    work_mem = memory / (max_connections x (1 + max_parallel_workers_per_gather)), 4MB..1GB:
    every connection may run a sort or hash in its leader and in each of its Gather's
    workers at once. On a 2 GB, 2-CPU lab container with 100 connections that is 10MB (the
    guide's memory / (2 x max_connections), unchanged); on 16 GB / 8 CPUs 32MB; it keeps
    growing with memory per CPU instead of stopping at one flat cap.
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
    max_locks = int(r["max_locks_per_transaction"])
    if max_locks != 0 and max_locks < 10:
        raise ValueError("max_locks_per_transaction must be 0 (by memory) or at least 10, got %r" % max_locks)
    av_workers = int(r["autovacuum_max_workers"])
    if av_workers < 0:
        raise ValueError("autovacuum_max_workers must be 0 (by CPUs) or at least 1, got %r" % av_workers)
    toast = str(r["default_toast_compression"])
    if toast not in _TOAST_COMPRESSION:
        raise ValueError("default_toast_compression must be one of %s, got %r" % (", ".join(_TOAST_COMPRESSION), toast))
    jit = _boolean("jit", r["jit"])

    per_gather = max(1, cpus // 2)
    parallel_workers = max(2, cpus)
    maintenance_workers = max(1, min(4, cpus // 2))
    # TimescaleDB's scheduler and jobs, the parallel pool, plus headroom for pg_cron,
    # logical replication launcher and autovacuum launcher style background workers.
    worker_processes = int(r["timescaledb_background_workers"]) + parallel_workers + 3

    shared_buffers = int(memory_mb * float(r["shared_buffers_ratio"]))
    effective_cache = int(memory_mb * float(r["effective_cache_size_ratio"]))
    work_mem = _clamp(memory_mb // (max_connections * (1 + per_gather)), r["work_mem_min_mb"], r["work_mem_max_mb"])
    maintenance_budget = int(memory_mb * float(r["maintenance_work_mem_ratio"]))
    maintenance = _clamp(maintenance_budget, r["maintenance_work_mem_min_mb"], r["maintenance_work_mem_max_mb"])
    av_workers = av_workers or autovacuum_workers_for_cpus(cpus)
    autovacuum_mem = _clamp(maintenance_budget // av_workers, r["autovacuum_work_mem_min_mb"], r["autovacuum_work_mem_max_mb"])
    autovacuum_mem = min(autovacuum_mem, maintenance)
    max_locks = max_locks or max_locks_for_memory(memory_mb)

    return {
        "max_connections": str(max_connections),
        "shared_buffers": format_mb(shared_buffers),
        "effective_cache_size": format_mb(effective_cache),
        "work_mem": format_mb(work_mem),
        "maintenance_work_mem": format_mb(maintenance),
        "autovacuum_work_mem": format_mb(autovacuum_mem),
        "autovacuum_max_workers": str(av_workers),
        "max_locks_per_transaction": str(max_locks),
        "wal_buffers": format_mb(r["wal_buffers_mb"]),
        "max_worker_processes": str(worker_processes),
        "max_parallel_workers": str(parallel_workers),
        "max_parallel_workers_per_gather": str(per_gather),
        "max_parallel_maintenance_workers": str(maintenance_workers),
        "jit": "on" if jit else "off",
        "default_toast_compression": toast,
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
