"""Fixtures shared by the backup scenario's tests (test_backup*.py, test_restore*.py).

The scenario host is HOST (qdb-molecule-backup1), converged by site.yml (postgresql,
timescaledb, schema, access, backup) with inventory/lab/group_vars (archiving to stanza
main, an encrypted posix repository in /var/lib/pgbackrest) and host_vars/ (the webhook).

Fixtures (all session-scoped):

- run_playbook(path, *args, env=None, json_output=False) -> CompletedProcess
    ansible-playbook on the Molecule inventory; `path` is absolute or relative to the project
    (e.g. "playbooks/backup.yml"). Extra arguments as given ("-e", "backup_type=logical").
    The result has .stats: {"ok", "changed", "failures", "unreachable", "skipped", "rescued",
    "ignored"} of HOST from the quantdb_stats callback (None if the run stopped before its
    recap), and with json_output=True .report: the json callback's whole report (then stdout
    is that JSON, not the usual text).
- task_results(report, name) -> [result, ...] of HOST for the tasks named `name`
    ("backup : Run the backup") in a json_output report.
- psql(query, db="quant_platform", check=True) -> str
    psql -XAtq as postgres inside HOST; stripped stdout. check=False returns the
    CompletedProcess instead (rc, stdout, stderr) for queries expected to fail.
- sh(command, user="root", check=True) -> CompletedProcess
    bash -c command inside HOST, as user; check=True asserts rc 0.
- backup_status() -> dict
    the status JSON the backup wrapper writes (backup_status_file).
- pgbackrest_info(stanza="main") -> dict
    `pgbackrest --stanza=... --output=json info` as postgres, the stanza's object.
- full_backup -> dict
    the record (the status file's last_run) of one full backup taken through
    playbooks/backup.yml in this session; taken on first use.
- gateway_ip -> str
    the address of this machine on the container's network (podman's gateway); services the
    tests start for the container listen there (it is host.containers.internal inside).
- webhook -> Webhook
    an HTTP listener on gateway_ip:55481, the URL host_vars give backup_notify_webhook_url;
    .requests is the list of JSON bodies POSTed to it; .clear() empties it.
- moto_s3 -> dict
    a moto S3 server with TLS (self-signed) on gateway_ip:55482 and an empty bucket
    quantdb-backup-test; the dict
    holds the extra vars that point the backup role at it (backup_repo_type=s3,
    backup_s3_endpoint, _bucket, _region, _key, _key_secret, backup_s3_verify_tls=false,
    backup_s3_uri_style=path) plus "client", a boto3 S3 client of the same server.
- s3_extra_vars(moto_s3, **more) -> ["-e", json]   (a plain function, importable from conftest)

After test_backup_s3.py the role is converged back to the posix repository and a new full
backup is taken there; WAL archived while the S3 repository was configured went to S3, so
a point-in-time restore from the posix repository must target a time after that backup.
"""
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY",
                         os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
SCENARIO = os.path.join(PROJECT, "molecule", "backup")
HOST = "qdb-molecule-backup1"
STATUS_FILE = "/var/lib/quantdb-ops/backup/status.json"
WEBHOOK_PORT = 55481
S3_PORT = 55482
S3_BUCKET = "quantdb-backup-test"


sys.path.insert(0, os.path.join(PROJECT, "tests"))
# The fixtures run_playbook, task_results, sh and psql (tests/molecule_support.py).
from molecule_support import Scenario, psql, run_playbook, sh, task_results  # noqa: E402,F401

SCENARIO_HOST = Scenario(PROJECT, HOST, limit=False)
_run_playbook = SCENARIO_HOST.run_playbook
_sh = SCENARIO_HOST.sh


@pytest.fixture(scope="session")
def scenario_host():
    return SCENARIO_HOST


def _backup_status():
    return json.loads(_sh("cat " + STATUS_FILE).stdout)


@pytest.fixture(scope="session")
def backup_status():
    return _backup_status


def _pgbackrest_info(stanza="main"):
    out = _sh("pgbackrest --stanza=%s --output=json info" % stanza, user="postgres").stdout
    return json.loads(out)[0]


@pytest.fixture(scope="session")
def pgbackrest_info():
    return _pgbackrest_info


@pytest.fixture(scope="session")
def full_backup():
    proc = _run_playbook("playbooks/backup.yml", "-e", "backup_type=full")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    record = _backup_status()["last_run"]
    assert record["status"] == "success" and record["type"] == "full", record
    return record


@pytest.fixture(scope="session")
def gateway_ip():
    route = _sh("ip -4 route show default").stdout.split()
    return route[route.index("via") + 1]


class Webhook:
    def __init__(self, address, port):
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.requests.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def clear(self):
        self.requests.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def webhook(gateway_ip):
    hook = Webhook(gateway_ip, WEBHOOK_PORT)
    yield hook
    hook.close()


def _wait_for_port(address, port, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("nothing listens on %s:%d after %d s" % (address, port, seconds))


@pytest.fixture(scope="session")
def moto_s3(gateway_ip, tmp_path_factory):
    """moto's S3 with TLS (a self-signed certificate) for this session: tests/s3_server.py."""
    import boto3
    import botocore.config
    import urllib3

    urllib3.disable_warnings()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "s3_server.py"),
                               gateway_ip, str(S3_PORT)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(gateway_ip, S3_PORT)
        client = boto3.client("s3", endpoint_url="https://%s:%d" % (gateway_ip, S3_PORT), verify=False,
                              region_name="us-east-1", aws_access_key_id="lab-only-key",
                              aws_secret_access_key="lab-only-secret",
                              config=botocore.config.Config(s3={"addressing_style": "path"}))
        client.create_bucket(Bucket=S3_BUCKET)
        yield {
            "backup_repo_type": "s3",
            # An address, not host.containers.internal: moto would read "host" as a bucket
            # name in the Host header (virtual-hosted style).
            "backup_s3_endpoint": "%s:%d" % (gateway_ip, S3_PORT),
            "backup_s3_bucket": S3_BUCKET,
            "backup_s3_region": "us-east-1",
            "backup_s3_key": "lab-only-key",            # moto accepts any key
            "backup_s3_key_secret": "lab-only-secret",
            "backup_s3_verify_tls": False,              # moto's certificate is self-signed
            "backup_s3_uri_style": "path",
            "client": client,
        }
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def s3_extra_vars(moto, **more):
    """["-e", json] pointing the backup role at the moto server, plus any other variables."""
    values = {key: value for key, value in moto.items() if key != "client"}
    values.update(more)
    return ["-e", json.dumps(values)]
