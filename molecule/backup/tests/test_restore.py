"""Restores on the Molecule host with real pgBackRest (docs/restore.md): playbooks/restore.yml,
pitr_restore.yml and restore_drill.yml against the live cluster the scenario converged.

What a DBA would check by hand after each: the rows (a deleted marker row back after a
point-in-time restore, equal row counts after a restore and after a single-table restore from a
dump), the timeline, a write accepted, and, when a backup or a dump is corrupt, a refusal while
the live cluster keeps serving (same row count, same postmaster start time, same data
directory). The tests run in file order: each restore starts from what the previous left.
"""
import json
import time

import pytest

DATA = "/var/lib/postgresql/17/main"
REPO = "/var/lib/pgbackrest"
DUMPS = "/var/backups/quantdb-ops/logical"
DRILL_STATUS = "/var/lib/quantdb-ops/restore-drill/status.json"
SEED = """
INSERT INTO tickers (ticker, region, exchange, name)
  SELECT 'ZZRS' || i, 'US', 'XNYS', 'restore test' FROM generate_series(1, 20) i ON CONFLICT DO NOTHING;
INSERT INTO ohlcv_data (ticker, region, date, open, high, low, close, volume)
  SELECT 'ZZRS' || i, 'US', d::date, 10 + i, 11 + i, 9 + i, 10.5 + i, 1000 * i
  FROM generate_series(1, 20) i, generate_series(date '2024-01-01', date '2025-06-30', interval '1 day') d
  ON CONFLICT DO NOTHING;
"""


def flat(proc):
    return " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture(scope="module")
def live_state(psql, sh):
    """What must not move when a restore is refused or dry-run: the rows, the postmaster (its start
    time) and the data directory (its inode: the same directory, not a restored one; its mtime
    moves whenever the server replaces a file at its top, e.g. autoprewarm.blocks)."""
    def state():
        return {"rows": psql("SELECT count(*) FROM ohlcv_data"),
                "started": psql("SELECT pg_postmaster_start_time()"),
                "data_dir": sh("stat -c %%i %s" % DATA).stdout.strip()}
    return state


@pytest.fixture(scope="module")
def timeline(psql):
    return lambda: int(psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)


@pytest.fixture(scope="module")
def backup_now(run_playbook, pgbackrest_info):
    """A full backup through playbooks/backup.yml; returns its label."""
    def backup():
        proc = run_playbook("playbooks/backup.yml", "-e", "backup_type=full")
        assert proc.returncode == 0, flat(proc)[-3000:]
        return pgbackrest_info()["backup"][-1]["label"]
    return backup


@pytest.fixture(scope="module", autouse=True)
def seeded(psql, sh, backup_now):
    """Rows in the key tables (the restores verify they are not empty), then a full backup."""
    psql("DROP TABLE IF EXISTS restore_marker, ohlcv_data_restored, tickers_restored")
    psql(SEED)
    label = backup_now()
    yield label
    # The previous data directories every restore keeps (restore_keep_previous) cost disk only.
    sh("rm -rf %s.pre-restore-*" % DATA)


def test_a_bad_input_fails_naming_it_before_anything_changes(run_playbook, live_state):
    before = live_state()
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=yesterday")
    assert proc.returncode != 0 and "restore_source must be latest" in flat(proc)
    proc = run_playbook("playbooks/pitr_restore.yml", "-e", "pitr_target_time=2026-01-01 10:00:00")
    assert proc.returncode != 0 and "a UTC offset is required" in flat(proc)
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_table=tickers")
    assert proc.returncode != 0 and "restore_source must be a dump path" in flat(proc)
    proc = run_playbook("playbooks/restore.yml", "-e", '{"restore_keep_previous": "perhaps"}')
    assert proc.returncode != 0 and "restore_keep_previous" in flat(proc)
    assert live_state() == before


def test_dry_run_changes_nothing(run_playbook, psql, sh, live_state, pgbackrest_info, seeded):
    before = live_state()
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_dry_run=true")
    assert proc.returncode == 0, flat(proc)[-3000:]
    assert proc.stats["changed"] == 0
    assert "DRY RUN (nothing changed): would restore full backup %s" % pgbackrest_info()["backup"][-1]["label"] in flat(proc)
    assert "into %s" % DATA in flat(proc)
    target = psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
    proc = run_playbook("playbooks/pitr_restore.yml", "-e", "restore_dry_run=true", "-e", "pitr_target_time='%s'" % target)
    assert proc.returncode == 0, flat(proc)[-3000:]
    assert proc.stats["changed"] == 0 and "then archived WAL up to %s" % target in flat(proc)
    assert live_state() == before
    assert sh("ls -d %s.pre-restore-*" % DATA, check=False).returncode != 0


def test_a_corrupted_backup_is_refused_and_the_live_database_keeps_serving(run_playbook, psql, sh, live_state,
                                                                           pgbackrest_info, backup_now):
    label = backup_now()
    # Flip bytes in the middle of the largest file of that backup in the repository.
    path = sh("find %s/backup/main/%s/pg_data -type f -size +8k -printf '%%s %%p\\n' | sort -n | tail -1 | cut -d' ' -f2"
              % (REPO, label)).stdout.strip()
    assert path, "no file to corrupt in backup %s" % label
    sh("python3 -c \"import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); n=len(b)//2; "
       "b[n:n+16]=bytes(x ^ 0xff for x in b[n:n+16]); open(p,'wb').write(b)\" %s" % path)
    before = live_state()
    try:
        for source in (label, "latest"):          # named, and as the newest backup
            proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % source)
            assert proc.returncode != 0
            text = flat(proc)
            assert "REFUSED: backup %s fails verification" % label in text, text[-3000:]
            assert "checksum invalid: 1" in text and "Nothing was changed" in text
            assert "Stop the cluster" not in proc.stdout
            assert live_state() == before             # same rows, same postmaster, same data directory
            assert psql("SELECT count(*) FROM tickers") != "0"
    finally:
        sh("pgbackrest --stanza=main --set=%s expire" % label, user="postgres")
    assert label not in [b["label"] for b in pgbackrest_info()["backup"]]


def test_pitr_brings_back_a_deleted_row_on_a_new_timeline(run_playbook, psql, sh, timeline):
    psql("CREATE TABLE IF NOT EXISTS restore_marker (id int PRIMARY KEY, note text)")
    psql("INSERT INTO restore_marker VALUES (1, 'must come back')")
    time.sleep(1)
    target = psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(1)
    psql("DELETE FROM restore_marker")
    psql("SELECT pg_switch_wal()")               # the deleting commit reaches the archive
    rows, tl = psql("SELECT count(*) FROM ohlcv_data"), timeline()
    proc = run_playbook("playbooks/pitr_restore.yml", "-e", "pitr_target_time='%s'" % target)
    assert proc.returncode == 0, flat(proc)[-3000:]
    assert psql("SELECT note FROM restore_marker WHERE id = 1") == "must come back"
    assert timeline() > tl
    text = flat(proc)
    assert "promoted on timeline %d" % timeline() in text
    assert "stop to writable:" in text and "last replayed transaction: 20" in text
    assert psql("SELECT pg_is_in_recovery()") == "f"
    psql("INSERT INTO restore_marker VALUES (2, 'written after the restore')")     # accepts writes
    assert psql("SELECT count(*) FROM ohlcv_data") == rows
    # The data directory as it was before the restore is kept aside (restore_keep_previous).
    assert sh("ls -d %s.pre-restore-*" % DATA, check=False).returncode == 0


def test_restore_latest_brings_back_the_newest_state(run_playbook, psql, sh, timeline):
    psql("INSERT INTO restore_marker VALUES (3, 'before restore latest')")
    rows, tl = psql("SELECT count(*) FROM ohlcv_data"), timeline()
    previous = sh("ls -d %s.pre-restore-* 2>/dev/null | wc -l" % DATA).stdout.strip()
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_keep_previous=false")
    assert proc.returncode == 0, flat(proc)[-3000:]
    text = flat(proc)
    assert "then every archived WAL" in text and "removed once the restored cluster is verified" in text
    assert "previous data directory: removed" in text
    assert sh("ls -d %s.pre-restore-* 2>/dev/null | wc -l" % DATA).stdout.strip() == previous
    # pgbackrest check archived the newest WAL before the stop: the last commit is there.
    assert psql("SELECT count(*) FROM restore_marker") == "3"
    assert psql("SELECT count(*) FROM ohlcv_data") == rows
    assert timeline() > tl and psql("SELECT pg_is_in_recovery()") == "f"


def test_a_restore_that_fails_its_checks_puts_the_previous_cluster_back(run_playbook, psql, live_state, timeline):
    # An empty table named as a key table: the restored cluster promotes, then fails the row check.
    psql("CREATE TABLE IF NOT EXISTS restore_empty_check (x int)")
    before, tl = live_state(), timeline()
    proc = run_playbook("playbooks/restore.yml", "-e", '{"restore_verify_tables": ["ohlcv_data", "restore_empty_check"]}')
    assert proc.returncode != 0
    text = flat(proc)
    assert "The restored cluster has empty tables: ohlcv_data=%s, restore_empty_check=0" % before["rows"] in text, text[-3000:]
    assert "The previous data directory was put back at %s" % DATA in text and "The cluster is running again" in text
    after = live_state()
    assert after["rows"] == before["rows"]
    assert after["data_dir"] == before["data_dir"]                           # the same directory (inode) is live again
    assert timeline() == tl and psql("SELECT pg_is_in_recovery()") == "f"
    # The failed attempt's timeline left the archive: the next restore follows this cluster's WAL.
    assert "moved to /var/lib/quantdb-ops/restore/abandoned-timelines/" in text
    psql("INSERT INTO restore_marker VALUES (5, 'written after the rollback')")
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_keep_previous=false")
    assert proc.returncode == 0, flat(proc)[-3000:]
    assert psql("SELECT note FROM restore_marker WHERE id = 5") == "written after the rollback"
    psql("DROP TABLE restore_empty_check")


@pytest.fixture(scope="module")
def dump(run_playbook, sh):
    proc = run_playbook("playbooks/backup.yml", "-e", "backup_type=logical")
    assert proc.returncode == 0, flat(proc)[-3000:]
    path = sh("ls -t %s/quant_platform-*.dump | head -1" % DUMPS).stdout.strip()
    assert path and sh("test -s %s.sha256" % path, check=False).returncode == 0
    return path


def test_a_table_comes_back_from_a_logical_dump_into_a_side_table(run_playbook, psql, dump):
    rows = psql("SELECT count(*) FROM ohlcv_data")
    try:
        proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % dump, "-e", "restore_table=ohlcv_data")
        assert proc.returncode == 0, flat(proc)[-3000:]
        assert psql("SELECT count(*) FROM ohlcv_data_restored") == rows
        assert ("Restored %s rows of ohlcv_data from %s into quant_platform.public.ohlcv_data_restored" % (rows, dump)
                in flat(proc))
        assert psql("SELECT count(*) FROM ohlcv_data") == rows                  # the original untouched
        assert psql("SELECT count(*) FROM (SELECT ticker, region, date, close FROM ohlcv_data EXCEPT "
                    "SELECT ticker, region, date, close FROM ohlcv_data_restored) d") == "0"
        assert psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%restore_scratch'") == "0"
        # Again: the side table exists now, so the play refuses instead of appending.
        proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % dump, "-e", "restore_table=ohlcv_data")
        assert proc.returncode != 0 and "ohlcv_data_restored already exists" in flat(proc)
    finally:
        psql("DROP TABLE IF EXISTS ohlcv_data_restored")


def test_into_the_original_table_only_with_the_confirmation(run_playbook, psql, dump):
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % dump, "-e", "restore_table=tickers",
                        "-e", "restore_table_target=tickers")
    assert proc.returncode != 0 and "restore_confirm_overwrite=true" in flat(proc)
    tickers = psql("SELECT count(*) FROM tickers")
    psql("UPDATE tickers SET name = 'overwritten' WHERE ticker = 'ZZRS1'")
    proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % dump, "-e", "restore_table=tickers",
                        "-e", "restore_table_target=tickers", "-e", "restore_confirm_overwrite=true")
    assert proc.returncode == 0, flat(proc)[-3000:]
    assert psql("SELECT name FROM tickers WHERE ticker = 'ZZRS1'") == "restore test"
    assert psql("SELECT count(*) FROM tickers") == tickers


def test_a_corrupted_dump_is_refused(run_playbook, psql, sh, live_state, dump):
    bad = dump.replace(".dump", "-corrupt.dump")
    junk = dump.replace(".dump", "-junk.dump")
    sh("cp %s %s && cp %s.sha256 %s.sha256" % (dump, bad, dump, bad))
    sh("printf 'XXXX' | dd of=%s bs=1 seek=4096 conv=notrunc status=none" % bad)
    sh("head -c 65536 /dev/urandom > %s && sha256sum %s > %s.sha256" % (junk, junk, junk))
    before = live_state()
    try:
        proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % bad, "-e", "restore_table=tickers")
        assert proc.returncode != 0
        assert "REFUSED: %s fails its checksum" % bad in flat(proc)
        proc = run_playbook("playbooks/restore.yml", "-e", "restore_source=%s" % junk)
        assert proc.returncode != 0
        assert "REFUSED: pg_restore --list cannot read %s" % junk in flat(proc)
        assert live_state() == before
        assert psql("SELECT to_regclass('tickers_restored') IS NULL") == "t"
        assert psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'quant_platform_%'") == "0"
    finally:
        sh("rm -f %s %s.sha256 %s %s.sha256" % (bad, bad, junk, junk))


def test_the_drill_restores_into_a_scratch_instance_and_reports_matching_counts_and_rto(run_playbook, psql, sh,
                                                                                        live_state, backup_now):
    backup_now()
    psql("INSERT INTO restore_marker VALUES (4, 'after the backup: reaches the drill through WAL')")
    before = live_state()
    proc = run_playbook("playbooks/restore_drill.yml")
    assert proc.returncode == 0, flat(proc)[-3000:]
    status = json.loads(sh("cat %s" % DRILL_STATUS).stdout)
    assert status["ok"] and status["mismatches"] == [] and status["torn_down"]
    assert status["rto_seconds"] > 0 and "RTO %s s" % status["rto_seconds"] in flat(proc)
    assert status["tables"]["ohlcv_data"]["restored_rows"] == int(before["rows"])
    assert status["tables"]["tickers"]["source_checksum"] == status["tables"]["tickers"]["restored_checksum"]
    assert "ohlcv_data %s %s checksum match" % (before["rows"], before["rows"]) in flat(proc)
    assert live_state() == before                              # the live cluster never stopped
    assert sh("test -e /var/lib/postgresql/17/restore-drill", check=False).returncode != 0
    assert sh("ss -ltn | grep -q ':5499 '", check=False).returncode != 0
    assert sh("systemctl is-enabled quantdb-restore-drill.timer").stdout.strip() == "enabled"


def test_the_drill_exits_non_zero_with_a_reason_when_it_cannot_compare(sh):
    """Nothing to compare is a failed drill (exit 2, the timer's unit fails), never a pass."""
    out = sh("/usr/local/sbin/quantdb-restore-drill --tables=nosuchtable --status=/tmp/drill-bad.json",
             user="postgres", check=False)
    assert out.returncode == 2
    report = json.loads(out.stdout)
    assert not report["ok"] and "none of the key tables" in report["error"]
