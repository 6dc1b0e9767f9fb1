"""Checks (issue 14, part B): security_audit.yml flags an injected trust line and an extra
superuser and fails; morning_check.yml green and red with an explicit as_of; end_of_day.yml
complete and incomplete loads; check mode changes nothing.

Fixtures from conftest.py (run_playbook, psql, sh, report_dir). Nothing here depends on the
day it runs: freshness and loads are judged as of dates of the test data (chk_data.sql).
"""
import json
import os

import pytest
from conftest import DATA_SQL

HERE = os.path.dirname(__file__)
TRUST_LINE = "host all all 0.0.0.0/0 trust   # qdb-test-injected"
STATE_FILE = "/var/lib/quantdb-ops/morning_check/state.json"


def _out(proc):
    return proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture
def insecure(psql, sh):
    """A trust line for any address in pg_hba.conf and an extra superuser, removed afterwards."""
    hba = psql("SHOW hba_file")
    sh("echo '%s' >> %s" % (TRUST_LINE, hba))
    psql("DROP ROLE IF EXISTS chk_intruder; CREATE ROLE chk_intruder SUPERUSER LOGIN; SELECT pg_reload_conf()")
    yield
    sh("sed -i '/qdb-test-injected/d' %s" % hba)
    psql("DROP ROLE IF EXISTS chk_intruder; SELECT pg_reload_conf()")
    assert psql("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'") == "0"


def test_security_audit_flags_trust_line_and_superuser(run_playbook, report_dir, insecure):
    report = os.path.join(report_dir, "security.json")
    proc = run_playbook("playbooks/security_audit.yml", "-e", "security_audit_report=" + report)
    assert proc.returncode != 0, _out(proc)
    assert "Critical security findings" in proc.stdout
    result = json.load(open(report))
    assert "superuser:chk_intruder" in result["critical"]
    assert "hba_trust:host/all/all/0.0.0.0/0" in result["critical"]
    ids = dict((f["id"], f) for f in result["findings"])
    assert ids["hba_open_address:host/all/all/0.0.0.0/0"]["severity"] == "warning"
    assert "password_no_expiry:chk_intruder" in ids
    assert ids["superuser:chk_intruder"]["severity"] == "critical"

    # Reviewed exceptions are reported as info and no longer fail the play.
    accepted = json.dumps({"security_audit_accepted": result["critical"], "security_audit_report": report})
    proc = run_playbook("playbooks/security_audit.yml", "-e", accepted)
    assert proc.returncode == 0, _out(proc)
    result = json.load(open(report))
    assert result["critical"] == [] and result["counts"]["critical"] == 0
    assert next(f for f in result["findings"] if f["id"] == "superuser:chk_intruder")["accepted"] is True


def _items(report):
    return dict((i["item"], i) for i in json.load(open(report))["items"])


def test_morning_check_green_then_red_as_of(run_playbook, sh, report_dir, zc_data):
    report = os.path.join(report_dir, "morning.json")
    args = ["-e", "morning_check_region=ZC", "-e", "morning_check_report=" + report]
    proc = run_playbook("playbooks/morning_check.yml", "-e", "morning_check_as_of=2024-03-29", *args)
    assert proc.returncode == 0, _out(proc)
    items = _items(report)
    assert set(items) == {"up", "version", "connections", "replication", "backup", "freshness", "disk", "log"}
    for name in ("up", "version", "connections", "replication", "freshness"):
        assert items[name]["status"] == "green", items[name]
    assert "XCHK expects 2024-03-29" in items["freshness"]["detail"]
    assert items["backup"]["status"] == "yellow"   # the scenario has no backup role: no status file
    assert json.load(open(report))["status"] != "red"
    state = json.loads(sh("cat " + STATE_FILE).stdout)
    assert state["offset"] > 0

    # A month later with no new bars: the region is 22 sessions behind, red, and the play fails.
    proc = run_playbook("playbooks/morning_check.yml", "-e", "morning_check_as_of=2024-04-30", *args)
    assert proc.returncode != 0, _out(proc)
    items = _items(report)
    assert items["freshness"]["status"] == "red" and '"sessions_behind": 22' in items["freshness"]["detail"]
    assert json.load(open(report))["status"] == "red"
    assert "Morning check red: freshness" in proc.stdout
    # The log is read from where the previous run stopped.
    assert "since the start of the log" not in items["log"]["detail"]
    assert json.loads(sh("cat " + STATE_FILE).stdout)["offset"] >= state["offset"]


def test_end_of_day_complete_then_incomplete(run_playbook, psql, report_dir, zc_data):
    report = os.path.join(report_dir, "eod.json")
    args = ["-e", "end_of_day_as_of=2024-03-29", "-e", "end_of_day_region=ZC", "-e", "end_of_day_report=" + report]
    proc = run_playbook("playbooks/end_of_day.yml", *args)
    assert proc.returncode == 0, _out(proc)
    result = json.load(open(report))
    assert result["backup"] == "skipped"   # no /etc/pgbackrest/pgbackrest.conf in this scenario
    assert [(r["region"], r["session"], r["loaded"], r["active"], r["complete"]) for r in result["regions"]] == \
        [("ZC", "2024-03-29", 3, 3, True)]
    audit = json.load(open(result["audit_report"]))
    assert audit["rows_scanned"] == 3
    try:
        psql("DELETE FROM ohlcv_data WHERE ticker = 'ZC003' AND region = 'ZC' AND date = '2024-03-29'")
        proc = run_playbook("playbooks/end_of_day.yml", "-e", "end_of_day_audit=false", *args)
        assert proc.returncode != 0, _out(proc)
        assert "ZC INCOMPLETE session of XCHK 2024-03-29 2 of 3" in proc.stdout
        region = json.load(open(report))["regions"][0]
        assert (region["loaded"], region["complete"]) == (2, False)
    finally:
        psql(DATA_SQL)


def test_check_mode_changes_nothing(run_playbook, psql, sh, report_dir, zc_data):
    psql("DROP EXTENSION IF EXISTS amcheck")
    state_before = sh("cat %s 2>/dev/null || true" % STATE_FILE).stdout
    runs = {
        "integrity_check.yml": ["-e", "integrity_check_report=%s/c-int.json" % report_dir],
        "morning_check.yml": ["-e", "morning_check_as_of=2024-03-29", "-e", "morning_check_region=ZC",
                              "-e", "morning_check_report=%s/c-mc.json" % report_dir],
        "end_of_day.yml": ["-e", "end_of_day_as_of=2024-03-29", "-e", "end_of_day_region=ZC",
                           "-e", "end_of_day_report=%s/c-eod.json" % report_dir],
    }
    for playbook, args in runs.items():
        proc = run_playbook("playbooks/" + playbook, *args, check=True)
        assert proc.returncode == 0, playbook + "\n" + _out(proc)
        if playbook != "morning_check.yml":   # the morning check would save its log position
            assert proc.stats["changed"] == 0, playbook
    integrity = json.load(open("%s/c-int.json" % report_dir))
    assert integrity["skipped"] == ["pg_amcheck: the amcheck extension is not installed (check mode)"]
    assert psql("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'") == "0"
    assert sh("cat %s 2>/dev/null || true" % STATE_FILE).stdout == state_before
