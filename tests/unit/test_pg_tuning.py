"""Unit tests of the tuning arithmetic (module_utils/pg_tuning.py)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "module_utils"))
import pg_tuning  # noqa: E402


def test_guide_16gb_host_matches_the_operations_guide():
    s = pg_tuning.compute_settings(16384, 8, 100)
    assert s["shared_buffers"] == "4GB"
    assert s["effective_cache_size"] == "12GB"
    assert s["work_mem"] == "64MB"
    assert s["maintenance_work_mem"] == "1GB"
    assert s["wal_buffers"] == "16MB"
    assert s["max_parallel_workers"] == "8"
    assert s["max_parallel_workers_per_gather"] == "4"
    assert s["max_parallel_maintenance_workers"] == "4"
    assert s["max_worker_processes"] == "19"  # 8 TimescaleDB + 8 parallel + 3


def test_two_gb_lab_container():
    s = pg_tuning.compute_settings(2048, 2, 100)
    assert s["shared_buffers"] == "512MB"
    assert s["effective_cache_size"] == "1536MB"
    assert s["work_mem"] == "10MB"
    assert s["maintenance_work_mem"] == "128MB"
    assert s["max_parallel_workers_per_gather"] == "1"
    assert s["max_worker_processes"] == "13"


@pytest.mark.parametrize("memory,conns,expected", [
    (1024, 500, "4MB"),      # floor
    (65536, 100, "64MB"),    # cap
    (8192, 64, "64MB"),
    (4096, 100, "20MB"),
])
def test_work_mem_formula_clamps(memory, conns, expected):
    assert pg_tuning.compute_settings(memory, 4, conns)["work_mem"] == expected


def test_maintenance_work_mem_never_exceeds_1gb():
    assert pg_tuning.compute_settings(262144, 32)["maintenance_work_mem"] == "1GB"


def test_rules_override():
    s = pg_tuning.compute_settings(16384, 4, 100, {"shared_buffers_ratio": 0.4})
    assert s["shared_buffers"] == "6553MB"


@pytest.mark.parametrize("kwargs", [
    {"memory_mb": 100, "cpus": 1},
    {"memory_mb": 2048, "cpus": 0},
    {"memory_mb": 2048, "cpus": 2, "max_connections": 0},
])
def test_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        pg_tuning.compute_settings(**kwargs)


def test_effective_resource_takes_smallest_set_value():
    assert pg_tuning.effective_resource(24000, 2048, 0) == 2048
    assert pg_tuning.effective_resource(24000, None, 0) == 24000
    assert pg_tuning.effective_resource(24000, 2048, 1024) == 1024


def test_cgroup_v1_and_v2_limits(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) == 2048
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) is None
    (tmp_path / "memory.max").write_text("max\n")
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) is None
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) == 1024
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert pg_tuning.cgroup_cpu_limit(str(tmp_path)) == 2


def test_meminfo(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    assert pg_tuning.meminfo_total_mb(str(f)) == 16000
