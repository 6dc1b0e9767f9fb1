"""PgBouncer's metrics (roles/pgbouncer_exporter, docs/pgbouncer.md "Metrics"): Debian's
prometheus-pgbouncer-exporter on :9127 inside the scenario container reads PgBouncer's admin
console over its Unix socket as the stats user quant_monitor. What Prometheus scrapes is
checked here, inside the container: pgbouncer_up 1, per-pool metrics of quant_platform that
move with the traffic through the pool, and the monitoring password nowhere but in the
service's root-only environment file."""
import os
import re
import subprocess
import time

import psycopg2
import pytest
import yaml

from conftest import HOST, PROJECT

with open(os.path.join(PROJECT, "inventory", "lab", "group_vars", "all.yml"), encoding="utf-8") as _handle:
    LAB = yaml.safe_load(_handle)
MONITOR_PASSWORD = LAB["access_quant_monitor_password"]
APP_PASSWORD = LAB["access_quant_app_password"]
UNIT = "prometheus-pgbouncer-exporter"
PUBLISHED_PORT = 55438   # molecule.yml publishes the container's PgBouncer port 6432 here
CA = "/etc/quantdb-ops/tls/ca.crt"
METRICS = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9127/metrics', timeout=10).read().decode())\""
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(sh):
    """[(name, {label: value}, value)] of one scrape of the exporter, from inside the container."""
    return [(m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3)))
            for m in SAMPLE.finditer(sh(METRICS).stdout)]


def value(samples, metric, **labels):
    """The value of the one sample of `metric` whose labels include `labels`."""
    found = [v for n, have, v in samples if n == metric and all(have.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def through_pool(sql, sh):
    """psql as quant_app through PgBouncer (TLS on 127.0.0.1:6432) inside the container."""
    proc = subprocess.run(["podman", "exec", "-i", "-e", "PGPASSWORD=" + APP_PASSWORD, HOST, "psql", "-XAtq", "-v",
                           "ON_ERROR_STOP=1", "host=127.0.0.1 port=6432 dbname=quant_platform user=quant_app sslmode=require"],
                          input=sql, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_up(sh, seconds=45):
    deadline = time.time() + seconds
    while True:
        proc = sh(METRICS, check=False)
        if proc.returncode == 0 and "\npgbouncer_up 1\n" in "\n" + proc.stdout:
            return
        assert time.time() < deadline, "no pgbouncer_up 1 within %ds: %s%s" % (seconds, proc.stdout[-500:], proc.stderr[-500:])
        time.sleep(1)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory, sh):
    path = tmp_path_factory.mktemp("pgbx-ca") / "ca.crt"
    path.write_text(sh("cat " + CA).stdout)
    return str(path)


def test_service_runs_unprivileged_on_the_socket(sh):
    """Enabled and running as prometheus (Debian's unit says postgres, a superuser by peer);
    its environment file is root's alone; PgBouncer sees it as a Unix-socket client of the
    admin console, logged in as quant_monitor."""
    assert sh("systemctl is-enabled %s; systemctl is-active %s" % (UNIT, UNIT)).stdout.split() == ["enabled", "active"]
    pid = sh("systemctl show -p MainPID --value " + UNIT).stdout.strip()
    assert sh("ps -o user= -p " + pid).stdout.strip() == "prometheus"
    assert sh("stat -c '%U:%G %a' /etc/default/" + UNIT).stdout.strip() == "root:root 600"
    dsn = re.search(r"^PGBOUNCER_EXPORTER_CONNECTION_STRING='([^']+)'$", sh("cat /etc/default/" + UNIT).stdout, re.M)
    assert dsn, "no connection string in /etc/default/" + UNIT
    assert "host=%2Fvar%2Frun%2Fpostgresql" in dsn.group(1) and "port=6432" in dsn.group(1)
    assert "sslmode=disable" in dsn.group(1) and "@/pgbouncer?" in dsn.group(1)
    clients = sh("runuser -u pgbouncer -- psql -XAtq -h /var/run/postgresql -p 6432 -U pgbouncer pgbouncer -c 'SHOW CLIENTS'"
                 ).stdout
    assert re.search(r"^C\|quant_monitor\|pgbouncer\|.*\|unix\|", clients, re.M), clients


def test_pgbouncer_up_and_version(sh):
    wait_up(sh)
    samples = scrape(sh)
    assert value(samples, "pgbouncer_up") == 1
    versions = [have["version"] for name, have, _ in samples if name == "pgbouncer_version_info"]
    assert len(versions) == 1 and versions[0].startswith("PgBouncer 1.24"), versions
    # The pools PgBouncer is configured with (host_vars: quant_platform over the socket,
    # quant_platform_tcp over TCP) and its limits, from SHOW DATABASES / SHOW CONFIG.
    assert value(samples, "pgbouncer_databases_pool_size", name="quant_platform") == 25
    assert value(samples, "pgbouncer_databases_pool_size", name="quant_platform_tcp") == 25
    assert value(samples, "pgbouncer_config_max_client_connections") == 1000
    assert not [name for name, _, _ in samples if name.startswith("pgbouncer_process_")]   # no pid file: off


def test_stats_counters_move_with_queries_through_the_pool(sh):
    """20 statements through the pool (20 transactions in transaction pooling) raise
    quant_platform's counters by at least that much at the next scrape."""
    through_pool("SELECT 1;", sh)   # so the pool exists before the first reading
    before = scrape(sh)
    through_pool("SELECT count(*) FROM tickers;\n" * 20, sh)
    after = scrape(sh)
    for name in ("pgbouncer_stats_queries_pooled_total", "pgbouncer_stats_sql_transactions_pooled_total"):
        grown = value(after, name, database="quant_platform") - value(before, name, database="quant_platform")
        assert grown >= 20, (name, grown)
    assert (value(after, "pgbouncer_stats_received_bytes_total", database="quant_platform")
            > value(before, "pgbouncer_stats_received_bytes_total", database="quant_platform"))
    assert (value(after, "pgbouncer_stats_queries_duration_seconds_total", database="quant_platform")
            > value(before, "pgbouncer_stats_queries_duration_seconds_total", database="quant_platform"))


def test_pool_gauges_follow_an_open_transaction(sh, ca_file):
    """A client inside a transaction holds a server connection: quant_platform/quant_app shows
    it active on both sides while the transaction is open, and no longer after it ends; the
    maxwait gauge the PgBouncerClientsWaiting alert reads is there (0: nobody waits)."""
    pool = {"database": "quant_platform", "user": "quant_app"}
    conn = psycopg2.connect(host="127.0.0.1", port=PUBLISHED_PORT, dbname="quant_platform", user="quant_app",
                            password=APP_PASSWORD, sslmode="verify-full", sslrootcert=ca_file)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")   # opens a transaction: holds its server connection
        during = scrape(sh)
        assert value(during, "pgbouncer_pools_server_active_connections", **pool) >= 1
        assert value(during, "pgbouncer_pools_client_active_connections", **pool) >= 1
        assert value(during, "pgbouncer_pools_client_waiting_connections", **pool) == 0
        assert value(during, "pgbouncer_pools_client_maxwait_seconds", **pool) == 0
        conn.commit()
    finally:
        conn.close()
    after = scrape(sh)
    assert value(after, "pgbouncer_pools_server_active_connections", **pool) == 0
    assert value(after, "pgbouncer_pools_server_idle_connections", **pool) >= 1


def test_password_not_in_unit_command_line_or_journal(sh):
    """Only the root-only environment file holds the monitoring password: not the unit or its
    drop-in, not any process's command line, not the journal."""
    secrets = {MONITOR_PASSWORD, MONITOR_PASSWORD.replace("-", "%2D")}   # as written, and URL-encoded
    unit = sh("systemctl cat " + UNIT).stdout
    assert "User=prometheus" in unit and "EnvironmentFile=/etc/default/" + UNIT in unit
    command_lines = sh("ps -eo args").stdout
    assert "--web.listen-address=0.0.0.0:9127" in command_lines and "--pgBouncer.pid-file=" in command_lines
    journal = sh("journalctl --no-pager -o cat -u %s -u pgbouncer" % UNIT).stdout
    for secret in secrets:
        assert secret not in unit and secret not in command_lines and secret not in journal
    assert MONITOR_PASSWORD in sh("cat /etc/default/" + UNIT).stdout   # the check above can see one
    # The running exporter has logged no error (warn level: no line per scrape).
    pid = sh("systemctl show -p MainPID --value " + UNIT).stdout.strip()
    own = sh("journalctl --no-pager -o cat _PID=%s" % pid).stdout
    assert "level=ERROR" not in own, own[-2000:]


def test_restarted_pgbouncer_brings_the_exporter_back(sh):
    """A restart of PgBouncer (its unit Requires= PgBouncer's: restarted with it; Restart=on-failure
    covers a start before PgBouncer answers): pgbouncer_up 1 again without anyone's help."""
    sh("systemctl restart pgbouncer")
    wait_up(sh)
    assert sh("systemctl is-active " + UNIT).stdout.strip() == "active"
    assert value(scrape(sh), "pgbouncer_up") == 1
