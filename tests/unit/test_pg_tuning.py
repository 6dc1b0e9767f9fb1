"""Unit tests of the tuning arithmetic (module_utils/pg_tuning.py): every setting on the four host
sizes of issue 16 (2 GB/2 CPUs, the lab container; 16 GB/8, the guide's host; 64 GB/16; 256 GB/64),
each rule's edges, and the values table of docs/site.md ("Tuning rules") against the code."""
import os
import re
import sys

import pytest

PROJECT = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(PROJECT, "module_utils"))
import pg_tuning  # noqa: E402

# Every setting compute_settings() returns, exactly, with max_connections 100.
HOSTS = {
    (2048, 2): {
        "max_connections": "100", "shared_buffers": "512MB", "effective_cache_size": "1536MB",
        "work_mem": "10MB",                   # 2048 / (100 x (1 + 1)): the lab's value before issue 16
        "maintenance_work_mem": "128MB",      # 2048 / 16
        "autovacuum_work_mem": "42MB",        # 128 / 3 workers
        "autovacuum_max_workers": "3",
        "max_locks_per_transaction": "128",
        "wal_buffers": "16MB", "max_worker_processes": "13", "max_parallel_workers": "2",
        "max_parallel_workers_per_gather": "1", "max_parallel_maintenance_workers": "1",
        "jit": "off", "default_toast_compression": "lz4",
    },
    (16384, 8): {
        "max_connections": "100", "shared_buffers": "4GB", "effective_cache_size": "12GB",
        "work_mem": "32MB",                   # 16384 / (100 x 5)
        "maintenance_work_mem": "1GB",
        "autovacuum_work_mem": "341MB",       # 1024 / 3
        "autovacuum_max_workers": "3",
        "max_locks_per_transaction": "512",
        "wal_buffers": "16MB", "max_worker_processes": "19", "max_parallel_workers": "8",
        "max_parallel_workers_per_gather": "4", "max_parallel_maintenance_workers": "4",
        "jit": "off", "default_toast_compression": "lz4",
    },
    (65536, 16): {
        "max_connections": "100", "shared_buffers": "16GB", "effective_cache_size": "48GB",
        "work_mem": "72MB",                   # 65536 / (100 x 9)
        "maintenance_work_mem": "2GB",        # 4096 capped
        "autovacuum_work_mem": "1GB",         # 4096 / 4
        "autovacuum_max_workers": "4",
        "max_locks_per_transaction": "1024",
        "wal_buffers": "16MB", "max_worker_processes": "27", "max_parallel_workers": "16",
        "max_parallel_workers_per_gather": "8", "max_parallel_maintenance_workers": "4",
        "jit": "off", "default_toast_compression": "lz4",
    },
    (262144, 64): {
        "max_connections": "100", "shared_buffers": "64GB", "effective_cache_size": "192GB",
        "work_mem": "79MB",                   # 262144 / (100 x 33)
        "maintenance_work_mem": "2GB",
        "autovacuum_work_mem": "1GB",         # 16384 / 5, capped
        "autovacuum_max_workers": "5",
        "max_locks_per_transaction": "1024",
        "wal_buffers": "16MB", "max_worker_processes": "75", "max_parallel_workers": "64",
        "max_parallel_workers_per_gather": "32", "max_parallel_maintenance_workers": "4",
        "jit": "off", "default_toast_compression": "lz4",
    },
}
SIZES = {"2 GB / 2": (2048, 2), "16 GB / 8": (16384, 8), "64 GB / 16": (65536, 16), "256 GB / 64": (262144, 64)}


@pytest.mark.parametrize("host", sorted(HOSTS), ids=lambda h: "%dMB-%dcpu" % h)
def test_every_setting_on_the_four_host_sizes(host):
    assert pg_tuning.compute_settings(host[0], host[1], 100) == HOSTS[host]


def test_the_lab_container_keeps_its_work_mem():
    """The benchmark's 2 GB, 2-CPU lab: work_mem stays 10MB, the value every figure was measured with."""
    assert pg_tuning.compute_settings(2048, 2, 100)["work_mem"] == "10MB"


def test_autovacuum_workers_together_stay_within_a_sixteenth_of_memory():
    for (memory, cpus) in HOSTS:
        s = pg_tuning.compute_settings(memory, cpus, 100)
        per_worker = int(s["autovacuum_work_mem"][:-2]) * (1024 if s["autovacuum_work_mem"].endswith("GB") else 1)
        assert per_worker * int(s["autovacuum_max_workers"]) <= memory // 16


@pytest.mark.parametrize("memory,cpus,conns,expected", [
    (1024, 2, 500, "4MB"),        # floor
    (2048, 1, 100, "10MB"),       # one CPU: one worker per Gather still counted
    (4096, 4, 100, "13MB"),       # 4096 / (100 x 3)
    (8192, 4, 64, "42MB"),        # 8192 / (64 x 3)
    (65536, 4, 100, "218MB"),     # memory-rich, CPU-poor: grows with memory per CPU
    (262144, 8, 20, "1GB"),       # cap
])
def test_work_mem_formula_and_clamps(memory, cpus, conns, expected):
    assert pg_tuning.compute_settings(memory, cpus, conns)["work_mem"] == expected


def test_work_mem_grows_with_memory_past_the_old_flat_64mb():
    values = [pg_tuning.compute_settings(m, c, 100)["work_mem"] for (m, c) in sorted(HOSTS)]
    assert values == ["10MB", "32MB", "72MB", "79MB"]


@pytest.mark.parametrize("memory,expected", [(1024, "64MB"), (2048, "128MB"), (16384, "1GB"), (32768, "2GB"),
                                             (262144, "2GB")])
def test_maintenance_work_mem_is_a_sixteenth_from_64mb_to_2gb(memory, expected):
    assert pg_tuning.compute_settings(memory, 4)["maintenance_work_mem"] == expected


def test_autovacuum_work_mem_never_above_maintenance_work_mem():
    s = pg_tuning.compute_settings(256, 1, 100)
    assert s["maintenance_work_mem"] == "64MB" and s["autovacuum_work_mem"] == "16MB"
    s = pg_tuning.compute_settings(2048, 2, 100, {"autovacuum_max_workers": 1})
    assert s["autovacuum_work_mem"] == "128MB" == s["maintenance_work_mem"]


@pytest.mark.parametrize("cpus,expected", [(1, "3"), (15, "3"), (16, "4"), (31, "4"), (32, "5"), (128, "5")])
def test_autovacuum_max_workers_by_cpus(cpus, expected):
    assert pg_tuning.compute_settings(16384, cpus)["autovacuum_max_workers"] == expected


@pytest.mark.parametrize("memory,expected", [
    (2048, "128"), (7679, "128"), (7680, "256"), (8192, "256"),
    (15360, "512"),   # a "16 GB" host whose MemTotal reads 15.x GB still gets the 16 GB step
    (16000, "512"), (30720, "1024"), (262144, "1024"),
])
def test_max_locks_per_transaction_by_memory(memory, expected):
    assert pg_tuning.compute_settings(memory, 4)["max_locks_per_transaction"] == expected


def test_rules_override():
    s = pg_tuning.compute_settings(16384, 4, 100, {"shared_buffers_ratio": 0.4})
    assert s["shared_buffers"] == "6553MB"
    s = pg_tuning.compute_settings(16384, 8, 100, {
        "work_mem_max_mb": 16, "maintenance_work_mem_max_mb": 512, "autovacuum_work_mem_max_mb": 128,
        "autovacuum_max_workers": 6, "max_locks_per_transaction": 300, "jit": True, "default_toast_compression": "pglz"})
    assert (s["work_mem"], s["maintenance_work_mem"], s["autovacuum_work_mem"], s["autovacuum_max_workers"],
            s["max_locks_per_transaction"], s["jit"], s["default_toast_compression"]) == \
        ("16MB", "512MB", "128MB", "6", "300", "on", "pglz")


def test_rules_as_ansible_templates_them():
    """The role passes each rule through a template: numbers and booleans may arrive as strings."""
    s = pg_tuning.compute_settings(2048, 2, 100, {"work_mem_max_mb": "1024", "max_locks_per_transaction": "0",
                                                  "autovacuum_max_workers": "0", "jit": "False",
                                                  "shared_buffers_ratio": "0.25"})
    assert s == HOSTS[(2048, 2)]
    assert pg_tuning.compute_settings(2048, 2, 100, {"jit": "on"})["jit"] == "on"


@pytest.mark.parametrize("kwargs", [
    {"memory_mb": 100, "cpus": 1},
    {"memory_mb": 2048, "cpus": 0},
    {"memory_mb": 2048, "cpus": 2, "max_connections": 0},
    {"memory_mb": 2048, "cpus": 2, "rules": {"max_locks_per_transaction": 5}},
    {"memory_mb": 2048, "cpus": 2, "rules": {"autovacuum_max_workers": -1}},
    {"memory_mb": 2048, "cpus": 2, "rules": {"default_toast_compression": "zstd"}},
    {"memory_mb": 2048, "cpus": 2, "rules": {"jit": "maybe"}},
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


# ------------------------------------------------------------------ docs/site.md, "Tuning rules"

def site_values_table():
    """{setting: {host label: our value}} from the values table of docs/site.md: each cell reads
    `ours / timescaledb-tune / PGTune`."""
    with open(os.path.join(PROJECT, "docs", "site.md")) as handle:
        text = handle.read()
    section = text.split("### Values on four host sizes", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    header = [line for line in section.splitlines() if line.startswith("| setting")][0]
    labels = [c.strip() for c in header.strip("|").split("|")][1:]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = re.match(r"`([a-z_.]+)`", cells[0]).group(1)
        table[name] = {label: cell.split(" / ")[0].strip("* ") for label, cell in zip(labels, cells[1:])}
    return table


def test_the_values_table_of_site_md_is_what_the_code_computes():
    table = site_values_table()
    assert set(SIZES) <= set(next(iter(table.values())))
    computed = {label: pg_tuning.compute_settings(m, c, 100) for label, (m, c) in SIZES.items()}
    checked = 0
    for name, cells in table.items():
        if name not in computed["2 GB / 2"]:
            continue
        for label in SIZES:
            assert cells[label] == computed[label][name], (name, label, cells[label], computed[label][name])
            checked += 1
    # every computed setting but max_connections (100 everywhere) has a row
    assert checked == 4 * (len(computed["2 GB / 2"]) - 1)
