"""Bounded lock waits and a staging directory no local user can redirect (issue 15), on the
Molecule container.

(a) A lock held by another session (psql in the container, inside an open transaction) makes
    the ingest fail within its lock_timeout, and the schema role's migrations within
    schema_lock_wait_seconds, each naming the session that holds the lock; nothing is written.
(b) A staging path through a symbolic link another user made is refused before anything is
    copied: nothing reaches the link's target.
(c) A staging directory (or a directory above it) owned by another user is refused.
(d) The staged files are gone after a load, a failed one included.

Runs in a database of its own (qa_locks). HOST is the container (a scratch copy of the
scenario sets QDB_MOLECULE_HOST to its own).
"""
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
from test_default import psql, run_playbook  # noqa: E402
from test_market_data import schema_db  # noqa: E402   (a fresh database built by the schema role)

HOST = os.environ.get("QDB_MOLECULE_HOST", "qdb-molecule-db1")
testinfra_hosts = ["podman://" + HOST]
DB = "qa_locks"
HEADER = "ticker,region,date,open,high,low,close,volume\n"
SNAPSHOT = ("SELECT (SELECT count(*) FROM ohlcv_data) || '/' || (SELECT coalesce(sum(close), 0) FROM ohlcv_data)"
            " || '/' || (SELECT count(*) FROM tickers) || '/' || (SELECT count(*) FROM ohlcv_quarantine)")
LOCK_TIMEOUT = 2          # seconds, given to the roles
SLACK = 8                 # module start, connecting, the second connection that reads pg_locks
HOLDER_APP = "qa_lock_holder"
INTRUDER = "qa_intruder"
STAGING = "/var/spool/quantdb-ops/ingest"
MIGRATIONS_LOCK = 4242001   # library/schema_migrations.py LOCK_KEY


def sh(command, user="root", check=True):
    proc = subprocess.run(["podman", "exec", "-u", user, HOST, "bash", "-c", command], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, "%s\n%s%s" % (command, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def playbook(path, *extra):
    """ansible-playbook with the json callback: (process, report)."""
    proc = run_playbook(path, *extra, env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-2000:])
    return proc, report


def task(report, name):
    """(the host's result, seconds the task took) of the first task named `name` (role prefix
    ignored), or (None, None) when it did not run."""
    for play in report["plays"]:
        for entry in play["tasks"]:
            if entry["task"]["name"].split(" : ")[-1] == name and entry["hosts"]:
                duration = entry["task"].get("duration") or {}
                stamps = [datetime.strptime(duration[k], "%Y-%m-%dT%H:%M:%S.%fZ") for k in ("start", "end")]
                return next(iter(entry["hosts"].values())), (stamps[1] - stamps[0]).total_seconds()
    return None, None


def ingest(path, *extra):
    return playbook(os.path.join(PROJECT, "playbooks", "ingest.yml"), "-e", "ingest_src=%s" % path,
                    "-e", "ingest_database=%s" % DB, "-e", "ingest_sync_calendars=false", *extra)


def write(tmp, name, content):
    path = str(tmp / name)
    with open(path, "w") as handle:
        handle.write(content)
    return path


@contextmanager
def holding(host, statement, db=DB):
    """psql as postgres in the container, application_name qa_lock_holder, runs `statement`
    in an open transaction and sleeps; yields its pid once it holds the lock, and is
    terminated afterwards."""
    proc = subprocess.Popen(["podman", "exec", "-u", "postgres", "-e", "PGAPPNAME=" + HOLDER_APP, HOST, "psql", "-XAtq",
                             "-d", db, "-c", "BEGIN; %s; SELECT pg_sleep(300)" % statement],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = ""
        for _ in range(100):
            pid = psql(host, "SELECT pid FROM pg_stat_activity WHERE application_name = '%s' AND wait_event = 'PgSleep'"
                       % HOLDER_APP)
            if pid or proc.poll() is not None:
                break
            time.sleep(0.2)
        assert pid, "the lock holder did not start: %s" % (proc.stderr.read() if proc.poll() is not None else "")
        yield int(pid)
    finally:
        psql(host, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '%s'" % HOLDER_APP)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("locks")


@pytest.fixture(scope="module")
def locks_db(host, tmp):
    """qa_locks with one bar, so loads take the upsert path."""
    schema_db(DB)
    proc, report = ingest(write(tmp, "seed.csv", HEADER + "ZZSEED,US,2024-01-02,10,11,9,10,100\n"),
                          "-e", "ingest_register_tickers=true")
    result, _seconds = task(report, "Load the bars")
    assert proc.returncode == 0 and result["new"] == 1, json.dumps(result)[-3000:]
    return DB


@pytest.fixture(scope="module")
def intruder(host):
    """A local user without privileges, and a clean /var/tmp for its traps."""
    sh("id %s >/dev/null 2>&1 || useradd -m %s" % (INTRUDER, INTRUDER))
    sh("rm -rf /var/tmp/qa-stage-* /home/%s/trap*" % INTRUDER)
    yield INTRUDER
    sh("rm -rf /var/tmp/qa-stage-* /home/%s/trap*" % INTRUDER)


def staged_files():
    return sh("ls -A %s" % STAGING).stdout.split()


def test_a_held_table_lock_fails_the_ingest_within_lock_timeout(host, tmp, locks_db):
    """The old module waited for as long as the lock was held (here 300 s); now it gives up
    after ingest_lock_timeout, names the holder, and writes nothing."""
    before = psql(host, SNAPSHOT, db=DB)
    path = write(tmp, "zzlock.csv", HEADER + "ZZLOCK,US,2024-01-03,10,11,9,10,100\n")
    with holding(host, "LOCK TABLE ohlcv_data IN ACCESS EXCLUSIVE MODE") as pid:
        proc, report = ingest(path, "-e", "ingest_lock_timeout=%ds" % LOCK_TIMEOUT, "-e", "ingest_register_tickers=true")
        held = psql(host, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % pid)
    result, seconds = task(report, "Load the bars")
    assert proc.returncode != 0 and result and result.get("failed"), json.dumps(result)[-3000:]
    assert result["msg"] == ("zzlock.csv: could not lock public.ohlcv_data within lock_timeout=%ds (held by pid %d app=%s "
                             "AccessExclusiveLock); nothing written" % (LOCK_TIMEOUT, pid, HOLDER_APP)), result["msg"]
    assert LOCK_TIMEOUT <= seconds < LOCK_TIMEOUT + SLACK, seconds
    assert held == "1"                          # it gave up while the lock was still held
    assert result["new"] == 0 and result["updated"] == 0
    assert psql(host, SNAPSHOT, db=DB) == before
    assert staged_files() == []                 # (d) removed after a failed load too


def test_a_held_migrations_lock_fails_the_schema_role_within_its_wait(host, tmp, locks_db):
    """Another run holding the migrations' advisory lock: the schema role's migrations give up
    after schema_lock_wait_seconds naming it (pg_advisory_lock waited for ever)."""
    play = write(tmp, "schema.yml", "- hosts: quantdb_db[0]\n  gather_facts: false\n  become: true\n  tasks:\n"
                 "    - ansible.builtin.include_role:\n        name: %s/roles/schema\n" % os.path.abspath(PROJECT))
    wait = 3
    with holding(host, "SELECT pg_advisory_lock(%d)" % MIGRATIONS_LOCK) as pid:
        proc, report = playbook(play, "-e", "schema_database=%s" % DB, "-e", "schema_lock_wait_seconds=%d" % wait,
                                "-e", "schema_lock_timeout=%ds" % LOCK_TIMEOUT)
    result, seconds = task(report, "Apply pending migrations")
    assert proc.returncode != 0 and result and result.get("failed"), proc.stdout[-3000:]
    assert result["msg"] == ("another run holds the migrations lock (advisory lock %d): pid %d app=%s; waited %ds "
                             "(lock_wait_seconds); nothing applied" % (MIGRATIONS_LOCK, pid, HOLDER_APP, wait)), result["msg"]
    assert wait <= seconds < wait + SLACK, seconds
    # Released, the same run goes through with nothing to apply.
    proc, report = playbook(play, "-e", "schema_database=%s" % DB)
    result, _seconds = task(report, "Apply pending migrations")
    assert proc.returncode == 0 and result["applied"] == [] and result["pending"] == [], proc.stdout[-3000:]


@pytest.mark.parametrize("case, remote_dir, trap, refusal", [
    # A link as a directory above the staging directory, then as the staging directory itself.
    ("parent link", "/var/tmp/qa-stage-link/ingest", "trap1",
     "/var/tmp/qa-stage-link is a symbolic link (to /home/qa_intruder/trap1)"),
    ("leaf link", "/var/tmp/qa-stage-leaf", "trap2", "/var/tmp/qa-stage-leaf is a symbolic link (to /home/qa_intruder/trap2)"),
    # (c) directories the intruder owns, world-writable, above and as the staging directory.
    ("foreign parent", "/var/tmp/qa-stage-foreign/ingest", None, "/var/tmp/qa-stage-foreign is owned by qa_intruder, not root"),
    ("foreign leaf", "/var/tmp/qa-stage-mine", None, "/var/tmp/qa-stage-mine is owned by qa_intruder, not root"),
])
def test_a_staging_path_another_user_controls_is_refused(host, tmp, locks_db, intruder, case, remote_dir, trap, refusal):
    """The old role created the directory and copied the files through the link (the file and
    copy modules follow it), as root, into the intruder's directory."""
    planted = remote_dir.split("/")[3]
    if trap:
        sh("mkdir -p ~/%s && ln -sfn ~/%s /var/tmp/%s" % (trap, trap, planted), user=intruder)
    else:
        sh("mkdir -p -m 0777 /var/tmp/%s" % planted, user=intruder)
    before = psql(host, SNAPSHOT, db=DB)
    path = write(tmp, "zztrap.csv", HEADER + "ZZTRAP,US,2024-01-03,10,11,9,10,100\n")
    proc, report = ingest(path, "-e", "ingest_remote_dir=%s" % remote_dir, "-e", "ingest_register_tickers=true")
    refused, _seconds = task(report, "Refuse a staging path another user could redirect")
    assert proc.returncode != 0 and refused and refused.get("failed"), proc.stdout[-3000:]
    assert refused["msg"].startswith("REFUSED: %s." % refusal) and "Nothing was copied" in refused["msg"], refused["msg"]
    assert task(report, "Copy the files to the database host") == (None, None)
    assert task(report, "Load the bars") == (None, None)
    # Nothing reached the intruder's directory: no staging directory, no file.
    target = "/home/%s/%s" % (intruder, trap) if trap else "/var/tmp/%s" % planted
    assert sh("find %s -mindepth 1" % target).stdout.strip() == "", case
    assert psql(host, SNAPSHOT, db=DB) == before


def test_the_staging_directory_is_root_s_and_empty_after_a_load(host, tmp, locks_db):
    """(d) A load reads its files from the root-owned staging directory; they are gone after."""
    path = write(tmp, "zzok.csv", HEADER + "ZZOK,US,2024-01-03,10,11,9,10,100\nZZOK,US,2024-01-04,10,11,9,10,100\n")
    proc, report = ingest(path, "-e", "ingest_register_tickers=true")
    result, _seconds = task(report, "Load the bars")
    assert proc.returncode == 0 and result["new"] == 2, proc.stdout[-3000:]
    assert result["invocation"]["module_args"]["src"] == STAGING + "/zzok.csv"   # read from the staging directory
    assert sh("stat -c '%%U:%%G %%a' %s %s" % (os.path.dirname(STAGING), STAGING)).stdout.split("\n")[1] == "root:postgres 750"
    assert staged_files() == []
    assert psql(host, "SELECT count(*) FROM ohlcv_data WHERE ticker = 'ZZOK'", db=DB) == "2"
    # The calendars role stages its CSV the same way and removes it.
    proc = run_playbook(os.path.join(PROJECT, "playbooks", "calendars.yml"), "-e", "calendars_database=%s" % DB)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sh("stat -c '%U:%G %a' /var/spool/quantdb-ops/calendars").stdout.strip() == "root:postgres 750"
    assert sh("ls -A /var/spool/quantdb-ops/calendars").stdout.strip() == ""
