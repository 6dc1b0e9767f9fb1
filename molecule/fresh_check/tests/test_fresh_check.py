"""A cautious DBA's first step on a brand-new host: `site.yml --check --diff`.

The container is the bare Debian 13 image (python3, sudo, systemd; no PostgreSQL) and is
never converged. Molecule's `check` step has run site.yml with --check once; the fixture
below runs `site.yml --check --diff` again from here, with the json callback, and the tests
read that structured report and then look at the host: the check must fail nothing, say
what a real run would do, and leave PostgreSQL uninstalled.
"""
import json
import os
import re
import subprocess
import time

import pytest
import yaml

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HOST = "qdb-fresh-db1"

# The podman backend runs `podman exec` directly: far faster than testinfra's ansible one.
testinfra_hosts = ["podman://" + HOST]


@pytest.fixture(scope="module")
def check_run():
    """Run site.yml --check --diff on the fresh host; return (json report, seconds)."""
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
           os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml"), "--check", "--diff"]
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    print("site.yml --check --diff on a new host took %.1f s" % seconds)
    return json.loads(proc.stdout), seconds


def task_results(report):
    """[(task name, result on HOST)] in the order they ran."""
    return [(task["task"]["name"], task["hosts"][HOST])
            for play in report["plays"] for task in play["tasks"] if HOST in task["hosts"]]


def result_of(report, name, runs=1):
    """The first result of a task; `runs`: how many times it must have run (the postgresql
    role's configure tasks run twice: in the role, then re-applied by the timescaledb role)."""
    found = [result for task, result in task_results(report) if task == name]
    assert len(found) == runs, "%d results for task %r, expected %d" % (len(found), name, runs)
    return found[0]


def debug_text(report, name):
    msg = result_of(report, name)["msg"]
    return " ".join(msg) if isinstance(msg, list) else msg


def new_packages(result):
    """Package names under apt's `The following NEW packages will be installed:`."""
    prepared = result["diff"]["prepared"]
    match = re.search(r"The following NEW packages will be installed:\n((?:  .*\n?)+)", prepared)
    assert match, prepared
    return set(match.group(1).split())


def test_first_check_fails_nothing_and_would_change_things(check_run):
    report, _ = check_run
    stats = report["stats"][HOST]
    assert stats["failures"] == 0 and stats["unreachable"] == 0, stats
    assert stats["ignored"] == 0, stats   # nothing failed quietly either
    assert stats["changed"] > 0, stats


def test_check_lists_the_packages_a_real_run_would_install(check_run):
    report, _ = check_run
    server = result_of(report, "postgresql : Install the server, client and Python driver")
    assert server["changed"]
    assert {"postgresql-17", "postgresql-client-17", "python3-psycopg", "acl"} <= new_packages(server)
    timescaledb = result_of(report, "timescaledb : Install TimescaleDB and pg_cron")
    assert {"postgresql-17-timescaledb", "postgresql-17-cron"} <= new_packages(timescaledb)


def test_check_says_it_would_create_and_start_the_cluster(check_run):
    report, _ = check_run
    assert result_of(report, "postgresql : Create the cluster with data checksums")["changed"]
    assert result_of(report, "postgresql : Start the cluster and enable it at boot").get("skipped")
    text = debug_text(report, "postgresql : Say what a real run would do with the cluster")
    assert "would create cluster 17/main in /var/lib/postgresql/17/main" in text, text
    assert "data checksums" in text and "start and enable postgresql@17-main" in text, text


def test_check_shows_the_tuned_settings_for_the_container_limit(check_run):
    # The tuning is computed on the host under --check too: 25% of the 2 GB cgroup limit,
    # not of the machine's RAM; the diff shows the file a real run would write.
    report, _ = check_run
    settings = result_of(report, "postgresql : Write the managed settings file", runs=2)
    assert settings["changed"]
    after = settings["diff"][0]["after"] if isinstance(settings["diff"], list) else settings["diff"]["after"]
    assert "shared_buffers = '512MB'" in after, after
    hba = result_of(report, "postgresql : Write pg_hba.conf", runs=2)["diff"]
    hba_after = hba[0]["after"] if isinstance(hba, list) else hba["after"]
    assert "trust" not in hba_after and "scram-sha-256" in hba_after


def test_check_lists_the_database_migrations_and_roles_it_would_create(check_run):
    report, _ = check_run
    with open(os.path.join(PROJECT, "roles", "schema", "vars", "main.yml")) as handle:
        migrations = yaml.safe_load(handle)["__schema_migrations"]
    schema = debug_text(report, "schema : Say what a real run would create")
    assert "the server does not run yet" in schema, schema
    assert "all %d on a new host" % len(migrations) in schema, schema
    for migration in migrations:
        assert "%s %s" % (migration["version"], migration["name"]) in schema, schema
    assert "timescaledb, pg_stat_statements, pg_prewarm, pg_cron" in schema, schema
    access = debug_text(report, "access : Say what a real run would create")
    for role in ("quant_app as writer", "reporting_user as readonly", "quant_monitor as monitoring", "quant_backup as backup"):
        assert role in access, access
    assert "lab-only" not in json.dumps(report)   # no password reaches the output
    license_note = debug_text(report, "timescaledb : Say what a real run would read")
    assert "would read timescaledb.license" in license_note, license_note


def test_check_left_the_host_without_postgresql(check_run, host):
    # Only python3-apt is installed by a check (the apt module needs it to dry-run); the
    # first check (Molecule's) installed it, so this second one had nothing to install.
    assert host.package("python3-apt").is_installed
    report, _ = check_run
    assert result_of(report, "postgresql : Install python3-apt, which the apt module needs, also under --check").get("skipped")
    for package in ("postgresql-common", "postgresql-17", "postgresql-17-timescaledb", "postgresql-17-cron"):
        assert host.run("dpkg -s %s", package).rc != 0, package + " is installed"
    for path in ("/etc/postgresql", "/etc/postgresql-common", "/var/lib/postgresql", "/var/run/postgresql"):
        assert not host.file(path).exists, path
    assert not host.user("postgres").exists
    assert host.run("systemctl cat postgresql@17-main").rc != 0
