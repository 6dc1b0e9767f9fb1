"""PgBouncer in front of PostgreSQL (roles/pgbouncer, docs/pgbouncer.md): what a DBA checks by
hand. Clients connect to 127.0.0.1:6432 inside the container (TLS required), or from the
controller through the published port 55438 with verify-full against the tls role's CA."""
import os
import re
import subprocess
import time

import psycopg2
import pytest
import yaml

from conftest import BARS_END, HOST, PROJECT

with open(os.path.join(PROJECT, "inventory", "lab", "group_vars", "all.yml"), encoding="utf-8") as _handle:
    LAB = yaml.safe_load(_handle)
PASSWORDS = {"quant_app": LAB["access_quant_app_password"], "reporting_user": LAB["access_reporting_user_password"],
             "quant_monitor": LAB["access_quant_monitor_password"]}
PUBLISHED_PORT = 55438   # molecule.yml publishes the container's 6432 here
CA = "/etc/quantdb-ops/tls/ca.crt"


def pool(sql, user, password=None, db="quant_platform", sslmode="require"):
    """psql through PgBouncer over TCP inside the container; the CompletedProcess."""
    dsn = "host=127.0.0.1 port=6432 dbname=%s user=%s sslmode=%s" % (db, user, sslmode)
    return subprocess.run(["podman", "exec", "-i", "-e", "PGPASSWORD=" + (password or PASSWORDS[user]), HOST,
                           "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", dsn], input=sql, capture_output=True, text=True)


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def admin(sql, sh):
    """The admin console on the Unix socket as PgBouncer's own OS user (no password)."""
    return sh("runuser -u pgbouncer -- psql -XAtq -h /var/run/postgresql -p 6432 -U pgbouncer pgbouncer -c %s"
              % subprocess.list2cmdline([sql])).stdout.strip()


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory, sh):
    path = tmp_path_factory.mktemp("pgb-ca") / "ca.crt"
    path.write_text(sh("cat " + CA).stdout)
    return str(path)


SERVER_SIDE = ("SELECT current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),"
               " coalesce(host(inet_client_addr()), 'socket'),"
               " (SELECT a.application_name FROM pg_stat_activity a WHERE a.pid = pg_backend_pid())")


def test_app_and_reporting_go_through_the_pool_over_the_socket(psql, sh):
    """The default: PgBouncer reaches the PostgreSQL beside it over its Unix socket (no
    network between them; no second TLS encryption in PgBouncer's one thread)."""
    assert psql("SHOW max_connections") == "100"
    assert re.search(r"^quant_platform = host=/var/run/postgresql port=5432 ", sh("cat /etc/pgbouncer/pgbouncer.ini").stdout,
                     re.M)
    for user in ("quant_app", "reporting_user"):
        name, server_tls, origin, _ = ok(pool(SERVER_SIDE, user)).split("|")
        assert (name, server_tls, origin) == (user, "f", "socket")


def test_a_database_entry_over_tcp_uses_verified_server_tls(psql, sh):
    """An entry with a host address (host_vars: quant_platform_tcp at 127.0.0.1) goes over TCP
    with server_tls_sslmode verify-full against the tls role's CA."""
    ini = sh("cat /etc/pgbouncer/pgbouncer.ini").stdout
    assert "server_tls_sslmode = verify-full" in ini and "server_tls_ca_file = %s" % CA in ini
    for user in ("quant_app", "reporting_user"):
        name, server_tls, origin, _ = ok(pool(SERVER_SIDE, user, db="quant_platform_tcp")).split("|")
        assert (name, server_tls, origin) == (user, "t", "127.0.0.1"), "PgBouncer's TCP connection is not TLS"


def test_reporting_insert_denied_through_the_pool():
    proc = pool("INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume)"
                " VALUES ('PGBX', 'US', '2025-01-02', 1, 1, 1, 1, 1)", "reporting_user")
    assert proc.returncode != 0 and "permission denied for table ohlcv_data" in proc.stderr, proc.stderr
    assert ok(pool("SELECT count(*) >= 0 FROM ohlcv_data", "reporting_user")) == "t"


def test_wrong_password_and_plaintext_tcp_are_rejected():
    proc = pool("SELECT 1", "quant_app", password="not-the-password-at-all")
    assert proc.returncode != 0 and "authentication failed" in proc.stderr, proc.stderr
    proc = pool("SELECT 1", "quant_app", sslmode="disable")
    assert proc.returncode != 0 and "SSL required" in proc.stderr, proc.stderr
    # A superuser is never looked up: the lookup function serves no superuser's verifier.
    proc = pool("SELECT 1", "postgres", password="anything-at-all-here")
    assert proc.returncode != 0 and "no such user" in proc.stderr, proc.stderr


def test_client_tls_verifies_from_the_controller(ca_file):
    conn = psycopg2.connect(host="127.0.0.1", port=PUBLISHED_PORT, dbname="quant_platform", user="quant_app",
                            password=PASSWORDS["quant_app"], sslmode="verify-full", sslrootcert=ca_file)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == "quant_app"
    finally:
        conn.close()


def test_lookup_function_is_locked_down(psql, sh):
    row = psql("SELECT p.prosecdef, p.proconfig::text, pg_get_userbyid(p.proowner), p.proacl::text"
               " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
               " WHERE n.nspname = 'pgbouncer' AND p.proname = 'get_auth'").split("|")
    assert row[0] == "t"
    assert row[1] == '{"search_path=pg_catalog, pg_temp"}'
    assert row[2] == "postgres"
    grantees = sorted(re.findall(r"(\w*)=X", row[3]))
    assert grantees == ["pgbouncer", "postgres"], row[3]   # owner and the auth user; no PUBLIC (=X)
    assert psql("SELECT has_function_privilege('quant_app', 'pgbouncer.get_auth(text)', 'EXECUTE'),"
                " has_function_privilege('quant_monitor', 'pgbouncer.get_auth(text)', 'EXECUTE')") == "f|f"
    # What the auth user sees: a SCRAM verifier for an application role, nothing for a
    # superuser or a replication role (peer login on the socket, no password anywhere).
    lookup = ("runuser -u pgbouncer -- psql -XAtq -w -h /var/run/postgresql -U pgbouncer -d quant_platform -c %s")
    verifier = sh(lookup % subprocess.list2cmdline(["SELECT passwd FROM pgbouncer.get_auth('quant_app')"])).stdout
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    for role in ("postgres", "quant_backup"):
        assert sh(lookup % subprocess.list2cmdline(["SELECT count(*) FROM pgbouncer.get_auth('%s')" % role])
                  ).stdout.strip() == "0"
    # The auth user can do nothing else: no password, and no table reads.
    denied = sh(lookup % subprocess.list2cmdline(["SELECT count(*) FROM ohlcv_data"]), check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr


def test_no_trust_and_no_secret_in_files(psql, sh):
    assert psql("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'") == "0"
    assert psql("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method NOT IN"
                " ('peer', 'scram-sha-256', 'reject', 'cert')") == "0"
    files = sh("cat /etc/pgbouncer/pgbouncer.ini /etc/pgbouncer/userlist.txt").stdout
    assert "SCRAM-SHA-256$" not in files and "md5" not in files and "password=" not in files
    assert "auth_type = scram-sha-256" in files and "pool_mode = transaction" in files
    assert sh("stat -c '%U:%G %a' /etc/pgbouncer/pgbouncer.ini").stdout.strip() == "root:pgbouncer 640"
    assert sh("ps -o user= -C pgbouncer").stdout.split() == ["pgbouncer"]


def test_stats_user_reads_stats_and_pools_but_is_no_admin():
    ok(pool("SELECT 1", "quant_app"))   # so quant_platform has a pool to show
    stats = ok(pool("SHOW STATS", "quant_monitor", db="pgbouncer"))
    assert re.search(r"^quant_platform\|", stats, re.M), stats
    pools = ok(pool("SHOW POOLS", "quant_monitor", db="pgbouncer"))
    assert re.search(r"^quant_platform\|quant_app\|", pools, re.M), pools
    proc = pool("RELOAD", "quant_monitor", db="pgbouncer")
    assert proc.returncode != 0 and "admin access needed" in proc.stderr, proc.stderr
    proc = pool("SHOW STATS", "quant_app", db="pgbouncer")
    assert proc.returncode != 0 and "not allowed" in proc.stderr, proc.stderr


def test_check_diff_changes_nothing_and_bad_input_is_named(run_playbook):
    check = run_playbook("playbooks/site.yml", "--tags", "pgbouncer", "--diff", check=True)
    assert check.returncode == 0, check.stdout[-3000:]
    assert check.stats["changed"] == 0 and check.stats["failures"] == 0, check.stdout[-3000:]
    bad = run_playbook("playbooks/site.yml", "--tags", "pgbouncer", "-e", "pgbouncer_min_pool_size=30")
    assert bad.returncode != 0 and bad.stats["changed"] == 0
    assert "pgbouncer_min_pool_size" in bad.stdout


def test_reload_keeps_connected_clients(run_playbook, sh, ca_file):
    """A client inside a transaction when the configuration changes (a reload) goes on."""
    main_pid = sh("systemctl show -p MainPID --value pgbouncer").stdout.strip()
    conn = psycopg2.connect(host="127.0.0.1", port=PUBLISHED_PORT, dbname="quant_platform", user="quant_app",
                            password=PASSWORDS["quant_app"], sslmode="verify-full", sslrootcert=ca_file)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")   # opens a transaction: holds its server connection
        backend = cur.fetchone()[0]
        changed = run_playbook("playbooks/site.yml", "--tags", "pgbouncer", "-e", "pgbouncer_default_pool_size=20")
        assert changed.returncode == 0, changed.stdout[-3000:]
        assert changed.stats["changed"] >= 1
        assert "RUNNING HANDLER [pgbouncer : Reload pgbouncer]" in changed.stdout
        assert "Restart pgbouncer" not in changed.stdout
        assert admin("SHOW CONFIG", sh).count("default_pool_size|20|") == 1
        cur.execute("SELECT pg_backend_pid()")    # same transaction, same server connection
        assert cur.fetchone()[0] == backend
        conn.commit()
        cur.execute("SELECT count(*) >= 0 FROM ohlcv_data")
        assert cur.fetchone()[0] is True
        conn.commit()
    finally:
        conn.close()
    assert sh("systemctl show -p MainPID --value pgbouncer").stdout.strip() == main_pid   # not restarted
    back = run_playbook("playbooks/site.yml", "--tags", "pgbouncer")
    assert back.returncode == 0 and back.stats["changed"] >= 1, back.stdout[-3000:]
    assert admin("SHOW CONFIG", sh).count("default_pool_size|25|") == 1


def test_pgbench_200_clients_through_the_pool(bars, psql, sh):
    """200 clients (twice max_connections) of quant reads for 20 s: no failure, and the server
    sees at most the pool (25 + 5 reserve) for quant_app."""
    start250 = psql("SELECT to_char(min(date), 'YYYYMMDD') FROM (SELECT date FROM ohlcv_data"
                    " WHERE region = 'US' AND ticker = 'US0000' ORDER BY date DESC LIMIT 250) s")
    start1y = psql("SELECT to_char(DATE '%s' - INTERVAL '1 year', 'YYYYMMDD')" % BARS_END)
    for name in ("single_ticker_250d.sql", "single_ticker_1y.sql"):
        subprocess.run(["podman", "cp", os.path.join(PROJECT, "bench", "pgbench", name), "%s:/tmp/%s" % (HOST, name)],
                       check=True)
    peak = {"server": 0}
    proc = subprocess.Popen(
        ["podman", "exec", "-e", "PGPASSWORD=" + PASSWORDS["quant_app"], "-e", "PGSSLMODE=require", HOST,
         "pgbench", "-n", "-h", "127.0.0.1", "-p", "6432", "-U", "quant_app", "-c", "200", "-j", "2", "-T", "20",
         "-D", "ntickers=%d" % bars, "-D", "start250=" + start250, "-D", "start1y=" + start1y,
         "-f", "/tmp/single_ticker_250d.sql", "-f", "/tmp/single_ticker_1y.sql", "quant_platform"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    for _ in range(5):
        peak["server"] = max(peak["server"], int(psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'quant_app'")))
        time.sleep(1)
    out, err = proc.communicate(timeout=120)
    print(out)
    assert proc.returncode == 0, err[-3000:]
    assert "number of clients: 200" in out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed and failed.group(1) == "0", out
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out).group(1))
    print("pgbench through PgBouncer: 200 clients, %d transactions, %.1f tps, server connections of quant_app"
          " at most %d" % (done, tps, peak["server"]))
    assert done > 0 and tps > 0
    assert 0 < peak["server"] <= 30
