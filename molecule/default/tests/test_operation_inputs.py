"""Operation playbooks take their inputs from the inventory and can run from the controller.

- An input set in the inventory's group_vars takes effect (inputs are role defaults, which
  group_vars outrank; play vars would have outranked group_vars).
- The audit runs on the controller and connects over TCP with libpq parameters, through the
  container's published port, as it would to a database this project did not provision.
"""
import json
import os
import shutil

from test_default import lab_password, psql  # noqa: E402
from test_market_data import AS_OF, audit, playbook  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
PUBLISHED_PORT = "55433"   # molecule.yml publishes the container's 5432 here


def flat(proc):
    return " ".join((proc.stdout + proc.stderr).split())


def test_an_input_set_in_group_vars_takes_effect(tmp_path):
    inventory = tmp_path / "inventory"
    # A real copy (links followed): the new group_vars file must not land in the project's.
    shutil.copytree(os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"]), str(inventory), symlinks=False)
    (inventory / "group_vars" / "quantdb_db.yml").write_text(
        "---\nquality_audit_checks: [duplicates, null_values]\nquality_audit_as_of: '%s'\n" % AS_OF)
    report = tmp_path / "report.json"
    env_inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    os.environ["MOLECULE_INVENTORY_FILE"] = str(inventory / os.path.basename(env_inventory))
    try:
        proc = playbook("quality_audit.yml", "-e", "quality_audit_report=%s" % report)
    finally:
        os.environ["MOLECULE_INVENTORY_FILE"] = env_inventory
    assert proc.returncode == 0, flat(proc)[-3000:]
    with open(str(report)) as handle:
        data = json.load(handle)
    assert sorted(data["checks"]) == ["duplicates", "null_values"]
    assert data["as_of"] == AS_OF


def test_a_bad_operation_input_fails_naming_it_before_anything_runs(tmp_path):
    proc = playbook("quality_audit.yml", "-e", "quality_audit_report=%s" % (tmp_path / "r.json"),
                    "-e", '{"quality_audit_stale_sessions": "many"}')
    assert proc.returncode != 0
    assert "quality_audit_stale_sessions" in flat(proc)
    assert "Run the audit" not in proc.stdout   # the argument spec stops it first
    assert not (tmp_path / "r.json").exists()


def test_the_audit_runs_from_the_controller_over_tcp(host, tmp_path):
    proc, report = audit("quant_platform", tmp_path / "tcp.json",
                         "-e", "quality_audit_from_controller=true", "-e", "quality_audit_login_host=127.0.0.1",
                         "-e", "quality_audit_login_port=%s" % PUBLISHED_PORT, "-e", "quality_audit_login_user=quant_audit",
                         "-e", "quality_audit_login_password=%s" % lab_password("quant_audit"), "-e", "quality_audit_ssl_mode=require")
    assert proc.returncode == 0, flat(proc)[-3000:]
    assert "qdb-molecule-db1 -> localhost" in proc.stdout           # the module ran on the controller
    assert lab_password("quant_audit") not in proc.stdout + proc.stderr
    assert report["rows_scanned"] == int(psql(host, "SELECT count(*) FROM ohlcv_data"))
    # It was a TCP session of quant_audit: the results it recorded are there.
    assert psql(host, "SELECT count(*) FROM quality_audit_results WHERE run_id = %d" % report["run_id"]) == "14"


def test_the_ingest_runs_from_the_controller_over_tcp(host, tmp_path):
    bars = tmp_path / "controller.csv"
    bars.write_text("ticker,region,date,open,high,low,close,volume\nZZCTL,US,2025-10-31,10,11,9,10.5,100\n")
    args = ["-e", "ingest_src=%s" % bars, "-e", "ingest_register_tickers=true", "-e", "ingest_from_controller=true",
            "-e", "ingest_login_host=127.0.0.1", "-e", "ingest_login_port=%s" % PUBLISHED_PORT,
            "-e", "ingest_login_user=quant_app", "-e", "ingest_login_password=%s" % lab_password("quant_app")]
    try:
        proc = playbook("ingest.yml", *args)
        assert proc.returncode == 0, flat(proc)[-3000:]
        assert "qdb-molecule-db1 -> localhost" in proc.stdout
        assert "Copy the files to the database host" in proc.stdout and "skipping" in proc.stdout
        assert psql(host, "SELECT close FROM ohlcv_data WHERE ticker = 'ZZCTL'") == "10.5"
        assert lab_password("quant_app") not in proc.stdout + proc.stderr
    finally:
        psql(host, "DELETE FROM ohlcv_data WHERE ticker = 'ZZCTL'")
        psql(host, "DELETE FROM tickers WHERE ticker = 'ZZCTL'")
