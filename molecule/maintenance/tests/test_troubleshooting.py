"""terminate_idle, slow_queries and incident_snapshot against the scenario host."""
import glob
import json
import os
import subprocess
import tarfile
import time


def _session(host, sql, user="quant_app"):
    """A psql session inside the container as `user` over TCP, kept open: sql then a long wait."""
    return subprocess.Popen(["podman", "exec", "-i", "-e", "PGPASSWORD=lab-only-quant-app-pw", host, "psql", "-XAtq",
                             "-h", "127.0.0.1", "-U", user, "-d", "quant_platform"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_terminate_idle(run_playbook, psql, report_dir):
    from conftest import HOST
    idle = _session(HOST, "")
    idle.stdin.write("SELECT 'idle';\n")
    idle.stdin.flush()
    active = _session(HOST, "")
    active.stdin.write("SELECT pg_sleep(120);\n")
    active.stdin.flush()
    try:
        time.sleep(4)
        rows = psql("SELECT pid || ':' || state FROM pg_stat_activity WHERE usename = 'quant_app' ORDER BY state").splitlines()
        pids = dict(reversed(r.split(":")) for r in rows)
        assert set(pids) == {"active", "idle"}, rows
        extra = ["-e", "troubleshooting_report_dir=" + report_dir, "-e", '{"troubleshooting_idle_timeout": "2 seconds"}']

        check = run_playbook("playbooks/terminate_idle.yml", *extra, check=True)
        assert check.returncode == 0 and check.stats["changed"] == 0, check.stdout[-3000:]
        report = json.load(open(os.path.join(report_dir, "terminate_idle.json")))
        assert [s["pid"] for s in report["sessions"]] == [int(pids["idle"])] and report["terminated"] == []
        assert psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s" % pids["idle"]) == "1"

        real = run_playbook("playbooks/terminate_idle.yml", *extra)
        assert real.returncode == 0 and real.stats["changed"] == 1, real.stdout[-3000:]
        report = json.load(open(os.path.join(report_dir, "terminate_idle.json")))
        assert report["terminated"] == [int(pids["idle"])]
        time.sleep(0.5)
        assert psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s" % pids["idle"]) == "0"
        assert psql("SELECT state FROM pg_stat_activity WHERE pid = %s" % pids["active"]) == "active"
        # postgres sessions are excluded by default
        assert "postgres" in report["excluded_roles"]
    finally:
        for proc in (idle, active):
            proc.kill()
            proc.wait()
        psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'quant_app'")


def test_slow_queries(run_playbook, psql, report_dir):
    psql("SELECT pg_sleep(0.3)")
    proc = run_playbook("playbooks/slow_queries.yml", "-e", "troubleshooting_report_dir=" + report_dir)
    assert proc.returncode == 0 and proc.stats["changed"] == 0, proc.stdout[-3000:]
    report = json.load(open(os.path.join(report_dir, "slow_queries.json")))
    top = [s for s in report["statements"] if "pg_sleep" in s["query"]][0]
    assert top["mean_ms"] >= 300 and {"calls", "rows", "hit_pct", "total_ms"} <= set(top)
    means = [s["mean_ms"] for s in report["statements"]]
    assert means == sorted(means, reverse=True)


def test_incident_snapshot_archive(run_playbook, report_dir):
    target = os.path.join(report_dir, "incidents")
    proc = run_playbook("playbooks/incident_snapshot.yml", "-e", "incident_snapshot_dir=" + target, check=True)
    assert proc.returncode == 0 and proc.stats["changed"] == 0, proc.stdout[-3000:]
    archives = glob.glob(os.path.join(target, "*.tar.gz"))
    assert len(archives) == 1, archives
    with tarfile.open(archives[0]) as tar:
        names = {os.path.basename(n) for n in tar.getnames()}
        expected = {"activity.csv", "locks.csv", "blocking_tree.csv", "top_statements.csv", "settings.csv",
                    "database_stats.csv", "server.log", "journal.log", "snapshot.json"}
        assert expected <= names, names
        member = [m for m in tar.getmembers() if m.name.endswith("settings.csv")][0]
        settings = tar.extractfile(member).read().decode()
        assert "shared_buffers" in settings
        meta = json.loads(tar.extractfile([m for m in tar.getmembers() if m.name.endswith("snapshot.json")][0]).read())
        assert meta["failed_views"] == []
