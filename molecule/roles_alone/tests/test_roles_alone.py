"""Each role converged alone, on its own defaults (converge.yml: one play per role, no
group_vars). Molecule's idempotence step has already shown the four plays change nothing on
a second run; these tests check each role delivered what its defaults promise, without the
wiring site.yml and the inventories add.
"""
import pytest
import yaml

HOST = "qdb-alone-db1"
testinfra_hosts = ["podman://" + HOST]


def sql(host, query, db="quant_platform"):
    """One value (first column of the first row) from psql as postgres."""
    cmd = host.run("runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d %s -c %s", db, query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def role_defaults(role):
    with open("%s/roles/%s/defaults/main.yml" % (pytest.importorskip("os").environ["MOLECULE_PROJECT_DIRECTORY"], role)) as f:
        return yaml.safe_load(f)


def test_postgresql_defaults_preload_every_library_once_installed(host):
    """The postgresql role's own default list (no group_vars) is what the server loads, in order,
    now that the timescaledb role installed timescaledb and pg_cron and re-applied the config."""
    wanted = role_defaults("postgresql")["postgresql_shared_preload_libraries"]
    assert {"timescaledb", "pg_cron"} <= set(wanted)
    loaded = sql(host, "SHOW shared_preload_libraries", db="postgres").split(",")
    assert [lib.strip() for lib in loaded] == wanted


def test_server_runs_no_pending_restart(host):
    assert sql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart", db="postgres") == "0"


def test_max_worker_processes_holds_the_extension_workers(host):
    workers = role_defaults("postgresql")["postgresql_extension_background_workers"]
    assert int(sql(host, "SHOW max_worker_processes", db="postgres")) >= workers
    assert sql(host, "SHOW timescaledb.max_background_workers", db="postgres") == str(
        role_defaults("timescaledb")["timescaledb_max_background_workers"])


def test_timescaledb_settings_in_the_default_cluster(host):
    conf = host.file("/etc/postgresql/17/main/conf.d/60-timescaledb.conf")
    assert conf.exists and conf.user == "postgres"
    assert sql(host, "SHOW cron.database_name", db="postgres") == "quant_platform"


def test_schema_alone_built_quant_platform(host):
    assert sql(host, "SELECT extname FROM pg_extension WHERE extname = 'timescaledb'") == "timescaledb"
    assert sql(host, "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'ohlcv_data'") == "1"
    applied = int(sql(host, "SELECT count(*) FROM schema_migrations"))
    assert applied >= 7
    # Apache edition + pg_cron in the schema's database by default: the rollup refresh job exists.
    assert sql(host, "SELECT count(*) FROM cron.job WHERE jobname = 'quantdb-refresh-ohlcv-monthly'") == "1"


def test_access_alone_created_its_login_roles(host):
    names = sql(host, "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles "
                      "WHERE rolname IN ('quant_app','reporting_user','quant_monitor','quant_backup')", db="postgres")
    assert names == "quant_app,quant_backup,quant_monitor,reporting_user"
