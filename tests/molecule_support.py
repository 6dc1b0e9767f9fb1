"""Helpers the Molecule scenarios' conftest.py files share (molecule/backup, molecule/maintenance):
ansible-playbook on the scenario's inventory with the project's plugins and the quantdb_stats
recap, and psql or bash inside a scenario container. Not a test module (no test_ prefix):
`make test`'s pytest step imports nothing from it.

    import sys; sys.path.insert(0, os.path.join(PROJECT, "tests"))
    from molecule_support import Scenario, psql, run_playbook, sh, task_results  # the fixtures
    SCENARIO_HOST = Scenario(PROJECT, "qdb-molecule-backup1")

    @pytest.fixture(scope="session")
    def scenario_host():
        return SCENARIO_HOST

The fixtures run_playbook, task_results, sh and psql hand out the scenario_host's methods.
"""
import json
import os
import subprocess
import tempfile

import pytest


def inventory(extra_env="QDB_TEST_INVENTORY"):
    """The inventory to run playbooks with: $QDB_TEST_INVENTORY (a developer's own container),
    else Molecule's (MOLECULE_INVENTORY_FILE, else MOLECULE_EPHEMERAL_DIRECTORY/inventory)."""
    found = os.environ.get(extra_env) or os.environ.get("MOLECULE_INVENTORY_FILE")
    if found:
        return found
    # Outside `molecule verify` (a developer's pytest run after `molecule converge -s <scenario>`).
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    assert ephemeral, "set %s or run under molecule (MOLECULE_INVENTORY_FILE or MOLECULE_EPHEMERAL_DIRECTORY)" % extra_env
    return os.path.join(ephemeral, "inventory")


class Scenario(object):
    """One scenario host: `host` is both its podman container name and its inventory name."""

    def __init__(self, project, host, limit=False):
        self.project = project
        self.host = host
        self.limit = limit   # add --limit host to every playbook run

    def run_playbook(self, path, *args, env=None, json_output=False, check=False):
        """ansible-playbook `path` (absolute or relative to the project) with `args`; the result
        has .stats (the host's recap from the quantdb_stats callback, None if the run stopped
        before it) and, with json_output=True, .report (the json callback's whole report)."""
        fd, stats_file = tempfile.mkstemp(prefix="qdb-stats-", suffix=".json")
        os.close(fd)
        path = path if os.path.isabs(path) else os.path.join(self.project, path)
        p = self.project
        run_env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", QDB_STATS_FILE=stats_file,
                       ANSIBLE_CONFIG=os.path.join(p, "ansible.cfg"),
                       ANSIBLE_ROLES_PATH=os.path.join(p, "roles"),
                       ANSIBLE_LIBRARY=os.path.join(p, "library"),
                       ANSIBLE_MODULE_UTILS=os.path.join(p, "module_utils"),
                       ANSIBLE_CONNECTION_PLUGINS=os.path.join(p, "connection_plugins"),
                       ANSIBLE_CALLBACK_PLUGINS=os.path.join(p, "callback_plugins"),
                       ANSIBLE_CALLBACKS_ENABLED="quantdb_stats", **(env or {}))
        if json_output:
            run_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
        command = (["ansible-playbook", "-i", inventory()] + (["--limit", self.host] if self.limit else [])
                   + [path] + (["--check"] if check else []) + list(args))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=run_env, cwd=p)
            with open(stats_file) as handle:
                text = handle.read()
        finally:
            os.unlink(stats_file)
        proc.stats = (json.loads(text).get("stats") or {}).get(self.host) if text else None
        proc.report = json.loads(proc.stdout) if json_output and proc.stdout.strip().startswith("{") else None
        return proc

    def task_results(self, report, name):
        """The host's results of the tasks named `name` in a json_output report."""
        return [task["hosts"][self.host] for play in report["plays"] for task in play["tasks"]
                if task["task"]["name"] == name and self.host in task["hosts"]]

    def sh(self, command, user="root", check=True):
        """bash -c `command` inside the container as `user`; check=True asserts rc 0."""
        proc = subprocess.run(["podman", "exec", "-u", user, self.host, "bash", "-c", command],
                              capture_output=True, text=True)
        if check:
            assert proc.returncode == 0, "%s\n%s%s" % (command, proc.stdout[-3000:], proc.stderr[-3000:])
        return proc

    def psql(self, query, db="quant_platform", check=True):
        """psql -XAtq as postgres inside the container: stripped stdout, or with check=False the
        CompletedProcess (for queries expected to fail)."""
        proc = subprocess.run(["podman", "exec", "-i", "-u", "postgres", self.host, "psql", "-XAtq", "-v",
                               "ON_ERROR_STOP=1", "-d", db], input=query, capture_output=True, text=True)
        if not check:
            return proc
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()


@pytest.fixture(scope="session")
def run_playbook(scenario_host):
    return scenario_host.run_playbook


@pytest.fixture(scope="session")
def task_results(scenario_host):
    return scenario_host.task_results


@pytest.fixture(scope="session")
def sh(scenario_host):
    return scenario_host.sh


@pytest.fixture(scope="session")
def psql(scenario_host):
    return scenario_host.psql
