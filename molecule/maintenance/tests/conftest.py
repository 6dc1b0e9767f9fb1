"""Fixtures shared by the maintenance scenario's tests (test_maintenance.py,
test_troubleshooting.py, test_schedule.py, and the checks/emergencies of test_checks.py and
test_emergency.py).

The scenario host is HOST, converged by site.yml without the backup and monitoring tags
(postgresql, timescaledb, schema, access) with inventory/lab/group_vars and host_vars/.

Environment:
- QDB_TEST_HOST: the host the tests run against (default qdb-molecule-maint1), a podman
  container name that is also its inventory name.
- QDB_TEST_INVENTORY: the inventory to run the playbooks with; when unset, Molecule's
  (MOLECULE_INVENTORY_FILE, else MOLECULE_EPHEMERAL_DIRECTORY/inventory).

Fixtures (all session-scoped):

- run_playbook(path, *args, env=None, json_output=False, check=False) -> CompletedProcess
    ansible-playbook on the inventory above, limited to HOST; `path` is absolute or relative to
    the project (e.g. "playbooks/maintenance_weekly.yml"). Extra arguments as given ("-e",
    "maintenance_retention=5 years"); check=True adds --check. The result has .stats: {"ok",
    "changed", "failures", "unreachable", "skipped", "rescued", "ignored"} of HOST from the
    quantdb_stats callback (None if the run stopped before its recap), and with
    json_output=True .report: the json callback's whole report (then stdout is that JSON).
- task_results(report, name) -> [result, ...] of HOST for the tasks named `name`
    ("maintenance : Run the maintenance module") in a json_output report.
- psql(query, db="quant_platform", check=True) -> str
    psql -XAtq as postgres inside HOST; stripped stdout. check=False returns the
    CompletedProcess instead (rc, stdout, stderr) for queries expected to fail.
- sh(command, user="root", check=True) -> CompletedProcess
    bash -c command inside HOST, as user; check=True asserts rc 0.
- report_dir -> str
    a temporary directory on the controller for JSON reports and snapshot archives
    (pass it as -e maintenance_report_dir=... / incident_snapshot_dir=...).
"""
import json
import os
import subprocess
import tempfile

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY",
                         os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
SCENARIO = os.path.join(PROJECT, "molecule", "maintenance")
HOST = os.environ.get("QDB_TEST_HOST", "qdb-molecule-maint1")


def _inventory():
    inventory = os.environ.get("QDB_TEST_INVENTORY") or os.environ.get("MOLECULE_INVENTORY_FILE")
    if inventory:
        return inventory
    # Outside `molecule verify` (a developer's pytest run after `molecule converge -s maintenance`).
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    assert ephemeral, "set QDB_TEST_INVENTORY or run under molecule (MOLECULE_INVENTORY_FILE or MOLECULE_EPHEMERAL_DIRECTORY)"
    return os.path.join(ephemeral, "inventory")


def _run_playbook(path, *args, env=None, json_output=False, check=False):
    fd, stats_file = tempfile.mkstemp(prefix="qdb-stats-", suffix=".json")
    os.close(fd)
    path = path if os.path.isabs(path) else os.path.join(PROJECT, path)
    run_env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", QDB_STATS_FILE=stats_file,
                   ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"),
                   ANSIBLE_ROLES_PATH=os.path.join(PROJECT, "roles"),
                   ANSIBLE_LIBRARY=os.path.join(PROJECT, "library"),
                   ANSIBLE_MODULE_UTILS=os.path.join(PROJECT, "module_utils"),
                   ANSIBLE_CONNECTION_PLUGINS=os.path.join(PROJECT, "connection_plugins"),
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(PROJECT, "callback_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="quantdb_stats", **(env or {}))
    if json_output:
        run_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
    command = ["ansible-playbook", "-i", _inventory(), "--limit", HOST, path] + (["--check"] if check else []) + list(args)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=run_env, cwd=PROJECT)
        with open(stats_file) as handle:
            text = handle.read()
    finally:
        os.unlink(stats_file)
    proc.stats = (json.loads(text).get("stats") or {}).get(HOST) if text else None
    proc.report = json.loads(proc.stdout) if json_output and proc.stdout.strip().startswith("{") else None
    return proc


@pytest.fixture(scope="session")
def run_playbook():
    return _run_playbook


def _task_results(report, name):
    return [task["hosts"][HOST] for play in report["plays"] for task in play["tasks"]
            if task["task"]["name"] == name and HOST in task["hosts"]]


@pytest.fixture(scope="session")
def task_results():
    return _task_results


def _sh(command, user="root", check=True):
    proc = subprocess.run(["podman", "exec", "-u", user, HOST, "bash", "-c", command], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, "%s\n%s%s" % (command, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="session")
def sh():
    return _sh


def _psql(query, db="quant_platform", check=True):
    proc = subprocess.run(["podman", "exec", "-i", "-u", "postgres", HOST, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1",
                           "-d", db], input=query, capture_output=True, text=True)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def psql():
    return _psql


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qdb-maintenance-reports"))
