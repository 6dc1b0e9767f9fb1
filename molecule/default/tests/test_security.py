"""Issue 15 on the Molecule container: no password in the server log or pg_stat_statements,
bookkeeping tables out of the application's reach, ingest and audit as least-privileged
logins, per-role idle-in-transaction timeouts, password expiry and its report."""
import json
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(__file__))
from test_default import PROJECT, lab_password, psql, psql_as, recap, run_playbook  # noqa: E402
from test_market_data import audit, ingest_args, playbook, sample, schema_db  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
SITE = os.path.join(PROJECT, "playbooks", "site.yml")
LOG = "/var/log/postgresql/postgresql-17-main.log"
ROLES = ["quant_app", "reporting_user", "quant_audit", "quant_monitor", "quant_backup"]


def log_size(host):
    return int(host.run("stat -c %%s %s", LOG).stdout.strip())


def log_since(host, offset):
    return host.run("tail -c +%s %s", str(offset + 1), LOG).stdout


def test_passwords_never_reach_the_server_log_or_pg_stat_statements(host):
    """Every statement is logged while the access role changes every password and
    sets it back: the log and pg_stat_statements hold verifiers, never a cleartext password."""
    changed = {role: "changed-%s-%s" % (role.replace("_", "-"), secrets.token_hex(6)) for role in ROLES}
    psql(host, "ALTER SYSTEM SET log_statement = 'all'")
    psql(host, "SELECT pg_reload_conf()")
    psql(host, "SELECT pg_stat_statements_reset()")
    offset = log_size(host)
    try:
        extra = []
        for role, password in changed.items():
            extra += ["-e", "access_%s_password=%s" % (role, password)]
        proc = run_playbook(SITE, "--tags", "access", *extra)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert recap(proc)["changed"] >= 1
        assert psql_as(host, "quant_app", changed["quant_app"], "SELECT 1").rc == 0
        assert psql_as(host, "quant_app", lab_password("quant_app"), "SELECT 1").rc != 0
        proc = run_playbook(SITE, "--tags", "access")     # and back to the lab's
        assert proc.returncode == 0, proc.stdout[-3000:]
        again = run_playbook(SITE, "--tags", "access")    # an unchanged password is no change
        assert recap(again)["changed"] == 0, again.stdout[-3000:]
    finally:
        psql(host, "ALTER SYSTEM RESET log_statement")
        psql(host, "SELECT pg_reload_conf()")
    for role in ROLES:
        assert psql_as(host, role, lab_password(role), "SELECT 1", db="quant_platform").rc == 0, role
    log = log_since(host, offset)
    statements = psql(host, "SELECT string_agg(query, E'\\n') FROM pg_stat_statements")
    # The role statements were logged and tracked (so the search below means something) ...
    assert "ALTER USER" in log and "SCRAM-SHA-256$4096:" in log, log[-3000:]
    assert "ALTER USER" in statements
    # ... with verifiers only.
    for password in list(changed.values()) + [lab_password(role) for role in ROLES]:
        assert password not in log, "a password reached %s" % LOG
        assert password not in statements, "a password reached pg_stat_statements"
    assert psql(host, "SELECT count(*) FROM pg_authid WHERE rolname = ANY('{%s}') "
                      "AND rolpassword LIKE 'SCRAM-SHA-256$4096:%%'" % ",".join(ROLES)) == str(len(ROLES))


def denied(host, role, statement, table):
    out = psql_as(host, role, lab_password(role), statement)
    assert out.rc != 0 and "permission denied for table %s" % table in out.stderr, (role, statement, out.stderr)


def test_the_application_cannot_touch_the_bookkeeping_tables(host):
    """quant_app could otherwise skip a migration or erase the audit's and the ingest's records."""
    denied(host, "quant_app", "INSERT INTO schema_migrations DEFAULT VALUES", "schema_migrations")
    denied(host, "quant_app", "DELETE FROM schema_migrations", "schema_migrations")
    denied(host, "quant_app", "UPDATE quality_audit_results SET status = 'pass'", "quality_audit_results")
    denied(host, "quant_app", "DELETE FROM quality_audit_results", "quality_audit_results")
    denied(host, "quant_app", "TRUNCATE quality_audit_results", "quality_audit_results")
    denied(host, "quant_app", "INSERT INTO quality_audit_results DEFAULT VALUES", "quality_audit_results")
    denied(host, "quant_app", "DELETE FROM ohlcv_quarantine", "ohlcv_quarantine")
    denied(host, "quant_app", "UPDATE ohlcv_quarantine SET reason = 'x'", "ohlcv_quarantine")
    denied(host, "quant_app", "TRUNCATE ohlcv_quarantine", "ohlcv_quarantine")
    # What the ingest needs stays: read everything, add to the quarantine, write the bars.
    privs = psql(host, "SELECT string_agg(t || ':' || p || ':' || has_table_privilege('quant_app', t, p), ',' ORDER BY t, p) "
                       "FROM unnest('{schema_migrations,quality_audit_results,ohlcv_quarantine}'::text[]) t, "
                       "unnest('{SELECT,INSERT}'::text[]) p")
    assert privs == ("ohlcv_quarantine:INSERT:true,ohlcv_quarantine:SELECT:true,quality_audit_results:INSERT:false,"
                     "quality_audit_results:SELECT:true,schema_migrations:INSERT:false,schema_migrations:SELECT:true")
    assert psql(host, "SELECT has_table_privilege('quant_app', 'ohlcv_data', 'INSERT,UPDATE,DELETE')") == "t"
    # The audit login: reads, records results, may delete duplicate bars; nothing else.
    assert psql(host, "SELECT has_table_privilege('quant_audit', 'quality_audit_results', 'INSERT')") == "t"
    denied(host, "quant_audit", "DELETE FROM quality_audit_results", "quality_audit_results")
    denied(host, "quant_audit", "INSERT INTO tickers (ticker, region, exchange) VALUES ('X', 'KR', 'XKRX')", "tickers")
    denied(host, "reporting_user", "INSERT INTO ohlcv_quarantine DEFAULT VALUES", "ohlcv_quarantine")


def test_ingest_and_audit_run_as_least_privileged_logins(host, tmp_path):
    """The ingest's statements are quant_app's and the audit's quant_audit's, never postgres'
    (pg_stat_statements records who ran each), on a database the schema role just built."""
    db = schema_db("qa_least_privilege")
    path = sample(tmp_path, "lp.csv.gz", "--tickers", "3", "--years", "1", "--seed", "5")
    psql(host, "SELECT pg_stat_statements_reset()")
    proc = playbook("ingest.yml", "-e", "ingest_database=%s" % db, *ingest_args(path))
    assert proc.returncode == 0, proc.stdout[-3000:]
    proc, report = audit(db, tmp_path / "lp.json")
    assert proc.returncode == 0 and report["rows_scanned"] > 0, proc.stdout[-3000:]
    assert "fail" not in [check["status"] for check in report["checks"].values()], report["checks"]
    who = psql(host, "SELECT string_agg(DISTINCT what || ':' || r.rolname, ',') FROM ("
                     "SELECT userid, CASE WHEN query LIKE '%%qdb_ref%%' OR query LIKE '%%INSERT INTO public.ohlcv_quarantine%%' "
                     "THEN 'ingest' WHEN query LIKE '%%qa_bars%%' OR query LIKE '%%INSERT INTO public.quality_audit_results%%' "
                     "THEN 'audit' END AS what FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                     "WHERE d.datname = '%s') q JOIN pg_roles r ON r.oid = q.userid WHERE what IS NOT NULL" % db)
    assert who == "audit:quant_audit,ingest:quant_app", who
    assert psql(host, "SELECT count(*) FROM ohlcv_data", db=db) != "0"
    assert psql(host, "SELECT count(DISTINCT check_name) FROM quality_audit_results", db=db) == "14"
    psql(host, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db, db="postgres")


def test_roles_carry_idle_in_transaction_timeouts(host):
    settings = psql(host, "SELECT string_agg(r.rolname || '=' || split_part(c, '=', 2), ',' ORDER BY r.rolname) "
                          "FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c "
                          "WHERE c LIKE 'idle_in_transaction_session_timeout=%%'")
    assert settings == ("quant_app=5min,quant_audit=5min,quant_backup=10min,quant_monitor=1min,"
                        "reporting_user=2min"), settings
    out = psql_as(host, "reporting_user", lab_password("reporting_user"), "SHOW idle_in_transaction_session_timeout")
    assert out.stdout.strip() == "2min"


def test_password_expiry_is_set_and_reported(host, tmp_path):
    """valid_until reaches VALID UNTIL; the security audit names a role expiring within its
    warning window as of a given day, and an expired one as critical."""
    report = tmp_path / "security.json"
    base = ["--tags", "access", "-e", json.dumps({"access_roles": [
        {"name": "quant_app", "profile": "writer", "password": lab_password("quant_app"), "connection_limit": 50,
         "statement_timeout": "15min", "idle_in_transaction_session_timeout": "5min", "valid_until": "2026-01-10"}]})]
    try:
        proc = run_playbook(SITE, *base)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert psql(host, "SELECT rolvaliduntil::date FROM pg_roles WHERE rolname = 'quant_app'") == "2026-01-10"
        run = playbook("security_audit.yml", "-e", "security_audit_report=%s" % report, "-e", "security_audit_as_of=2026-01-01",
                       "-e", "security_audit_allow_critical=true")
        assert run.returncode == 0, run.stdout[-3000:]
        findings = {f["id"]: f["severity"] for f in json.load(open(str(report)))["findings"]}
        assert findings.get("password_expiring:quant_app") == "warning", findings
        run = playbook("security_audit.yml", "-e", "security_audit_report=%s" % report, "-e", "security_audit_as_of=2026-02-01",
                       "-e", "security_audit_allow_critical=true")
        findings = {f["id"]: f["severity"] for f in json.load(open(str(report)))["findings"]}
        assert findings.get("password_expired:quant_app") == "critical", findings
    finally:
        proc = run_playbook(SITE, "--tags", "access", "-e", json.dumps({"access_roles": [
            {"name": "quant_app", "profile": "writer", "password": lab_password("quant_app"), "connection_limit": 50,
             "statement_timeout": "15min", "idle_in_transaction_session_timeout": "5min", "valid_until": "infinity"}]}))
        assert proc.returncode == 0, proc.stdout[-3000:]


def test_api_keys_are_stored_encrypted_and_the_key_never_logged(host):
    """roles/app_config: the lab's entry is stored encrypted; a changed value is rewritten once,
    with neither the value nor the key in the log (every statement logged meanwhile) or in
    pg_stat_statements; a wrong key fails, naming nothing secret."""
    key = "lab-only-config-encryption-key"
    assert psql(host, "SELECT pgp_sym_decrypt(api_key, '%s') FROM config WHERE name = 'vendor_prices'" % key) == \
        "lab-only-vendor-api-key"
    assert psql(host, "SELECT position(convert_to('lab-only-vendor-api-key', 'UTF8') IN api_key) FROM config") == "0"
    value = "rotated-%s" % secrets.token_hex(8)
    entries = {"app_config_api_keys": [{"name": "vendor_prices", "value": value}]}
    psql(host, "ALTER SYSTEM SET log_statement = 'all'")
    psql(host, "SELECT pg_reload_conf()")
    psql(host, "SELECT pg_stat_statements_reset()")
    offset = log_size(host)
    try:
        first = run_playbook(SITE, "--tags", "app_config", "-e", json.dumps(entries))
        second = run_playbook(SITE, "--tags", "app_config", "-e", json.dumps(entries))
        wrong = run_playbook(SITE, "--tags", "app_config", "-e", json.dumps(dict(entries, app_config_encryption_key="x" * 20)))
    finally:
        psql(host, "ALTER SYSTEM RESET log_statement")
        psql(host, "SELECT pg_reload_conf()")
        restore = run_playbook(SITE, "--tags", "app_config")
    assert first.returncode == 0 and recap(first)["changed"] == 1, first.stdout[-3000:]
    assert second.returncode == 0 and recap(second)["changed"] == 0, second.stdout[-3000:]
    assert wrong.returncode != 0 and "x" * 20 not in wrong.stdout + wrong.stderr
    assert restore.returncode == 0 and recap(restore)["changed"] == 1
    log = log_since(host, offset)
    statements = psql(host, "SELECT coalesce(string_agg(query, E'\\n'), '') FROM pg_stat_statements")
    for secret in (value, key, "x" * 20):
        assert secret not in log and secret not in statements, secret
    assert psql(host, "SELECT pgp_sym_decrypt(api_key, '%s') FROM config WHERE name = 'vendor_prices'" % key) == \
        "lab-only-vendor-api-key"


def test_team_rows_are_separated_by_row_level_security(host):
    """access_row_security: a member of team_kr sees and writes team_kr's rows only."""
    psql(host, "DROP TABLE IF EXISTS team_signals; DROP ROLE IF EXISTS team_kr; DROP ROLE IF EXISTS team_us; "
               "CREATE TABLE team_signals (team name NOT NULL, signal text); "
               "INSERT INTO team_signals VALUES ('team_kr', 'kr1'), ('team_us', 'us1'); "
               "CREATE ROLE team_kr NOLOGIN; CREATE ROLE team_us NOLOGIN; GRANT team_kr TO quant_app")
    rls = json.dumps({"access_row_security": [{"table": "team_signals", "column": "team"}]})
    try:
        first = run_playbook(SITE, "--tags", "access", "-e", rls)
        again = run_playbook(SITE, "--tags", "access", "-e", rls)
        assert first.returncode == 0, first.stdout[-3000:]
        assert recap(again)["changed"] == 0, again.stdout[-3000:]
        app = lab_password("quant_app")
        assert psql_as(host, "quant_app", app, "SELECT string_agg(signal, ',') FROM team_signals").stdout.strip() == "kr1"
        assert psql_as(host, "quant_app", app, "INSERT INTO team_signals VALUES ('team_kr', 'kr2')").rc == 0
        out = psql_as(host, "quant_app", app, "INSERT INTO team_signals VALUES ('team_us', 'us2')")
        assert out.rc != 0 and "row-level security policy" in out.stderr
        assert psql_as(host, "reporting_user", lab_password("reporting_user"),
                       "SELECT count(*) FROM team_signals").stdout.strip() == "0"
        assert psql(host, "SELECT count(*) FROM team_signals") == "3"      # the owner sees every row
    finally:
        psql(host, "DROP TABLE IF EXISTS team_signals; DROP ROLE IF EXISTS team_kr; DROP ROLE IF EXISTS team_us")


PUBLISHED_PORT = "55433"   # molecule.yml publishes the container's 5432 here


def test_quant_backup_is_refused_beyond_the_backup_host(host):
    """quant_backup reads everything (pg_read_all_data): its reject line refuses it from the
    network, where quant_app gets in; on the database host (pgBackRest's side) it still logs in."""
    import psycopg
    params = dict(host="127.0.0.1", port=PUBLISHED_PORT, dbname="quant_platform", connect_timeout=10)
    with psycopg.connect(user="quant_app", password=lab_password("quant_app"), **params) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "quant_app"
    try:
        psycopg.connect(user="quant_backup", password=lab_password("quant_backup"), **params).close()
        raise AssertionError("quant_backup connected from the network")
    except psycopg.OperationalError as exc:
        assert "pg_hba.conf rejects connection" in str(exc), str(exc)
    assert psql_as(host, "quant_backup", lab_password("quant_backup"), "SELECT current_user").stdout.strip() == "quant_backup"
