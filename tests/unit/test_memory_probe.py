"""The memory/cgroup probe (module_utils/pg_tuning.py), the one place that reads how much memory
the host or container has: pg_tuning_facts and the benchmark client (bench/queries.py) use it."""
import os
import sys

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "module_utils"))
import pg_tuning  # noqa: E402

GB2 = 2147483648


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_meminfo_bytes_and_mb(tmp_path):
    f = tmp_path / "meminfo"
    write(f, "MemTotal:       24576000 kB\nMemFree:        1000 kB\n")
    assert pg_tuning.meminfo_total_bytes(str(f)) == 24576000 * 1024
    assert pg_tuning.meminfo_total_mb(str(f)) == 24000


def test_meminfo_without_memtotal_or_file(tmp_path):
    f = tmp_path / "meminfo"
    write(f, "MemFree: 1 kB\n")
    assert pg_tuning.meminfo_total_bytes(str(f)) is None
    assert pg_tuning.meminfo_total_mb(str(tmp_path / "missing")) is None
    write(f, "MemTotal: lots\n")
    assert pg_tuning.meminfo_total_bytes(str(f)) is None


def test_cgroup_v2_limit(tmp_path):
    write(tmp_path / "memory.max", "%d\n" % GB2)
    assert pg_tuning.cgroup_memory_limit_bytes(str(tmp_path)) == GB2
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) == 2048


def test_cgroup_v2_unlimited_falls_back_to_v1(tmp_path):
    write(tmp_path / "memory.max", "max\n")
    assert pg_tuning.cgroup_memory_limit_bytes(str(tmp_path)) is None
    write(tmp_path / "memory" / "memory.limit_in_bytes", "%d\n" % GB2)
    assert pg_tuning.cgroup_memory_limit_bytes(str(tmp_path)) == GB2


def test_cgroup_v1_limit_and_its_unlimited_stand_in(tmp_path):
    write(tmp_path / "memory" / "memory.limit_in_bytes", "%d\n" % GB2)
    assert pg_tuning.cgroup_memory_limit_bytes(str(tmp_path)) == GB2
    write(tmp_path / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert pg_tuning.cgroup_memory_limit_bytes(str(tmp_path)) is None


def test_no_cgroup_files_or_garbage(tmp_path):
    assert pg_tuning.cgroup_memory_limit_bytes(str(tmp_path)) is None
    write(tmp_path / "memory.max", "garbage\n")
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) is None
    write(tmp_path / "memory.max", "0\n")
    assert pg_tuning.cgroup_memory_limit_mb(str(tmp_path)) is None


def test_cpu_quota(tmp_path):
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert pg_tuning.cgroup_cpu_limit(str(tmp_path)) == 2
    write(tmp_path / "cpu.max", "max 100000\n")
    assert pg_tuning.cgroup_cpu_limit(str(tmp_path)) is None


def test_the_benchmark_client_uses_the_probe():
    """bench/queries.py reads memory only through pg_tuning (copied beside it by bench.yml)."""
    with open(os.path.join(PROJECT, "bench", "queries.py")) as handle:
        source = handle.read()
    assert "pg_tuning.meminfo_total_bytes()" in source and "pg_tuning.cgroup_memory_limit_bytes()" in source
    assert "/proc/meminfo" not in source and "memory.limit_in_bytes" not in source
    with open(os.path.join(PROJECT, "playbooks", "bench.yml")) as handle:
        assert "../module_utils/pg_tuning.py" in handle.read()
