"""Emergencies (issue 14, part B): integrity_check.yml on a deliberately corrupted B-tree index,
validate_source.yml on a row changed behind its back, crash_triage.yml with PostgreSQL stopped.

Fixtures from conftest.py (run_playbook, psql, sh, report_dir). Each destructive test puts the
host back as it found it (scratch table dropped, test rows deleted, PostgreSQL started), so the
tests run in any order with the others of the scenario.
"""
import csv
import glob
import json
import os
import sqlite3
import tarfile

import pytest
from conftest import DATA_SQL

HERE = os.path.dirname(__file__)
CORRUPT_SCRIPT = open(os.path.join(HERE, "chk_corrupt_btree.py")).read()
UNIT = "postgresql@17-main"


def _out(proc):
    return proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture
def corrupted_index(psql, sh):
    """public.chk_corrupt with a B-tree index whose leaf page has two tuples swapped, and a NOT
    VALID check constraint; dropped afterwards."""
    path = psql("DROP TABLE IF EXISTS public.chk_corrupt;"
                " CREATE TABLE public.chk_corrupt (id int);"
                " INSERT INTO public.chk_corrupt SELECT g FROM generate_series(1, 200) g;"
                " CREATE INDEX chk_corrupt_idx ON public.chk_corrupt (id);"
                " ALTER TABLE public.chk_corrupt ADD CONSTRAINT chk_corrupt_pos CHECK (id > 0) NOT VALID;"
                " CHECKPOINT;"
                " SELECT current_setting('data_directory') || '/' || pg_relation_filepath('chk_corrupt_idx')")
    sh("systemctl stop " + UNIT)
    try:
        proc = sh("python3 - %s 1 <<'PYEOF'\n%sPYEOF" % (path, CORRUPT_SCRIPT), check=False)
    finally:
        sh("systemctl start " + UNIT)
    assert proc.returncode == 0, proc.stderr
    assert psql("SELECT 1") == "1"   # the server answers again
    yield path
    psql("DROP TABLE IF EXISTS public.chk_corrupt")


def _filenode(psql, index):
    return psql("SELECT pg_relation_filenode('%s')" % index)


def test_integrity_check_finds_corrupted_index_and_rebuilds_only_it(run_playbook, psql, report_dir, corrupted_index):
    report = os.path.join(report_dir, "integrity.json")
    key_index = "public.idx_ohlcv_ticker_region_date"
    key_before = _filenode(psql, key_index)
    corrupt_before = _filenode(psql, "public.chk_corrupt_idx")

    found = run_playbook("playbooks/integrity_check.yml", "-e", "integrity_check_reindex=false",
                         "-e", "integrity_check_report=" + report)
    assert found.returncode != 0, _out(found)
    result = json.load(open(report))
    assert result["status"] == "corrupt"
    assert result["flagged_indexes"] == ["public.chk_corrupt_idx"], result["corruption"]
    assert "item order invariant violated" in result["corruption"][0]["summary"]
    assert result["reindexed"] == []
    assert result["checksum_failures"] == {} and result["data_checksums"] is True
    # The NOT VALID constraint was validated (its rows allow it); valid ones re-checked.
    assert "public.chk_corrupt.chk_corrupt_pos" in result["constraints"]["validated"]
    assert psql("SELECT convalidated FROM pg_constraint WHERE conname = 'chk_corrupt_pos'") == "t"
    assert result["constraints"]["rechecked"] > 0 and result["constraints"]["violations"] == []
    assert _filenode(psql, "public.chk_corrupt_idx") == corrupt_before   # report only: nothing rebuilt

    repaired = run_playbook("playbooks/integrity_check.yml", "-e", "integrity_check_report=" + report)
    assert repaired.returncode != 0, _out(repaired)   # corruption was found: still an incident
    result = json.load(open(report))
    assert result["status"] == "repaired"
    assert [r["index"] for r in result["reindexed"]] == ["public.chk_corrupt_idx"]
    assert result["reindexed"][0]["recheck"] == "rebuilt, re-check clean"
    assert _filenode(psql, "public.chk_corrupt_idx") != corrupt_before   # rebuilt
    assert _filenode(psql, key_index) == key_before                      # nothing else was

    clean = run_playbook("playbooks/integrity_check.yml", "-e", "integrity_check_report=" + report)
    assert clean.returncode == 0, _out(clean)
    assert clean.stats["changed"] == 0
    result = json.load(open(report))
    assert result["status"] == "clean" and result["corruption"] == [] and result["amcheck"]["rc"] == 0


def _source_rows(psql):
    out = psql("COPY (SELECT ticker, region, date, open, high, low, close, volume FROM ohlcv_data"
               " WHERE region = 'ZC' ORDER BY 1, 2, 3) TO STDOUT WITH CSV")
    return list(csv.reader(out.splitlines()))


def _write_sqlite(path, rows):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ohlcv_data (ticker TEXT, region TEXT, date TEXT, open REAL, high REAL, low REAL,"
                 " close REAL, volume INTEGER)")
    conn.executemany("INSERT INTO ohlcv_data VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [(r[0], r[1], r[2], float(r[3]), float(r[4]), float(r[5]), float(r[6]), int(r[7])) for r in rows])
    conn.commit()
    conn.close()


def test_validate_source_names_ticker_and_dates_of_a_changed_row(run_playbook, psql, report_dir, zc_data):
    rows = _source_rows(psql)
    assert len(rows) == 195
    legacy = os.path.join(report_dir, "legacy.db")
    if os.path.exists(legacy):
        os.unlink(legacy)
    _write_sqlite(legacy, rows)
    archive = os.path.join(report_dir, "vendor.csv")
    with open(archive, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ticker", "region", "date", "open", "high", "low", "close", "volume"])
        writer.writerows(rows)
    report = os.path.join(report_dir, "validate.json")
    common = ["-e", "validate_source_region=ZC", "-e", "validate_source_report=" + report]

    same = run_playbook("playbooks/validate_source.yml", "-e", "validate_source_src=" + legacy, *common)
    assert same.returncode == 0, _out(same)
    result = json.load(open(report))
    assert result["status"] == "match" and result["counts"] == {"compared": 3, "matching": 3, "differing": 0}
    assert result["rows"] == {"source": 195, "database": 195}

    try:
        psql("UPDATE ohlcv_data SET close = close + 0.0001 WHERE ticker = 'ZC002' AND region = 'ZC' AND date = '2024-02-14';"
             " DELETE FROM ohlcv_data WHERE ticker = 'ZC003' AND region = 'ZC' AND date BETWEEN '2024-03-04' AND '2024-03-06'")
        for source in (archive,):   # the SQLite source differs alike (same canonical text)
            differ = run_playbook("playbooks/validate_source.yml", "-e", "validate_source_src=" + source, *common)
            assert differ.returncode != 0, _out(differ)
            result = json.load(open(report))
            assert result["status"] == "differ" and result["counts"]["differing"] == 2, result
            by_ticker = dict((d["ticker"], d) for d in result["differences"])
            assert by_ticker["ZC002"]["issue"] == "values"
            assert by_ticker["ZC002"]["ranges"] == [{"from": "2024-02-14", "to": "2024-02-14", "dates": 1,
                                                     "missing_in_database": 0, "extra_in_database": 0, "changed": 1}]
            assert by_ticker["ZC003"]["issue"] == "rows"
            assert by_ticker["ZC003"]["ranges"] == [{"from": "2024-03-04", "to": "2024-03-06", "dates": 3,
                                                     "missing_in_database": 3, "extra_in_database": 0, "changed": 0}]
            assert "DIFFER ZC002 ZC: values" in differ.stdout and "2024-02-14 (1 changed)" in differ.stdout
    finally:
        psql(DATA_SQL)


def test_crash_triage_collects_evidence_with_postgresql_stopped(run_playbook, sh, psql, report_dir):
    archive_dir = os.path.join(report_dir, "crash")
    report = os.path.join(report_dir, "crash.json")
    sh("systemctl stop " + UNIT)
    try:
        proc = run_playbook("playbooks/crash_triage.yml", "-e", "crash_triage_dir=" + archive_dir,
                            "-e", "crash_triage_report=" + report)
    finally:
        sh("systemctl start " + UNIT)
    assert proc.returncode == 0, _out(proc)
    assert proc.stats["changed"] == 0
    result = json.load(open(report))
    assert result["running"] is False and result["state"] == "shut down"
    assert result["redo_wal_file"].startswith("0000000") and "/" in result["checkpoint_lsn"]
    assert "playbooks/restore.yml" in result["next_step"] and "pitr_restore.yml" in result["next_step"]
    archives = glob.glob(os.path.join(archive_dir, "*-crash-triage.tar.gz"))
    assert archives == [result["archive"]]
    with tarfile.open(archives[0]) as tar:
        names = set(os.path.basename(n) for n in tar.getnames())
        control = tar.extractfile([m for m in tar.getmembers() if m.name.endswith("pg_controldata.txt")][0]).read().decode()
    assert {"journal.txt", "server_log_tail.txt", "pg_controldata.txt", "pg_lsclusters.txt", "df.txt",
            "systemctl_status.txt", "postmaster_pid.txt", "findings.json"} <= names
    assert "Database cluster state:               shut down" in control
    assert "NEXT: " in proc.stdout
    assert psql("SELECT 1") == "1"   # started again
