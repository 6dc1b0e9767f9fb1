"""Runs last (by name): the keys each quantdb-ops module really returned, over every playbook
run of this session (collected by the quantdb_stats callback), against the module's RETURN.
A key returned but not documented, or documented as returned always but never seen, fails."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_default import PROJECT, RETURNS  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
# Every module the scenario runs; a module missing here was not exercised by any test.
EXERCISED = ["exchange_calendar_sessions", "exchange_sessions", "ohlcv_constraints", "ohlcv_ingest",
             "ohlcv_quality_audit", "ohlcv_unique_key", "pg_tuning_facts", "schema_migrations"]


def documented_returns(name):
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-M",
                           os.path.join(PROJECT, "library"), "--json", name], capture_output=True, text=True,
                          env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg")))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[name].get("return") or {}


@pytest.mark.parametrize("name", EXERCISED)
def test_returned_keys_match_the_documented_return(name):
    assert name in RETURNS, "no playbook run of this session ran %s (seen: %s)" % (name, sorted(RETURNS))
    documented = documented_returns(name)
    undocumented = sorted(RETURNS[name] - set(documented))
    assert not undocumented, "%s returns keys its RETURN does not document: %s" % (name, undocumented)
    always = sorted(k for k, v in documented.items() if v.get("returned") == "always")
    never_seen = sorted(set(always) - RETURNS[name])
    assert not never_seen, "%s documents as always returned keys no run returned: %s" % (name, never_seen)
