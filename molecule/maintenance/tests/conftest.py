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
- zc_data (module scope): the checks' own rows (chk_data.sql: region ZC on the made-up
    exchange XCHK), deleted after the module.
- report_dir -> str
    a temporary directory on the controller for JSON reports and snapshot archives
    (pass it as -e maintenance_report_dir=... / incident_snapshot_dir=...).
"""
import os
import sys

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY",
                         os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
SCENARIO = os.path.join(PROJECT, "molecule", "maintenance")
HOST = os.environ.get("QDB_TEST_HOST", "qdb-molecule-maint1")


sys.path.insert(0, os.path.join(PROJECT, "tests"))
# The fixtures run_playbook, task_results, sh and psql (tests/molecule_support.py).
from molecule_support import Scenario, psql, run_playbook, sh, task_results  # noqa: E402,F401

SCENARIO_HOST = Scenario(PROJECT, HOST, limit=True)
_run_playbook = SCENARIO_HOST.run_playbook
_sh = SCENARIO_HOST.sh


@pytest.fixture(scope="session")
def scenario_host():
    return SCENARIO_HOST


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("qdb-maintenance-reports"))


with open(os.path.join(os.path.dirname(__file__), "chk_data.sql"), encoding="utf-8") as _handle:
    DATA_SQL = _handle.read()   # importable: `from conftest import DATA_SQL` puts the rows back


@pytest.fixture(scope="module")
def zc_data(psql):
    psql(DATA_SQL)
    yield
    psql("DELETE FROM ohlcv_data WHERE region = 'ZC'; DELETE FROM tickers WHERE region = 'ZC';"
         " DELETE FROM exchange_sessions WHERE exchange = 'XCHK';")
