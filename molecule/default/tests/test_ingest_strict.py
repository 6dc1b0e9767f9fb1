"""A strict ohlcv_ingest on the Molecule container: every lenient or broken input is
quarantined with its reason code and line, or fails the load with a clear message, and a
failure writes nothing (counts and sums unchanged).

Runs in databases of its own (qa_strict; qa_strict_empty for what needs an empty
ohlcv_data), so quant_platform stays as the market-data tests expect it. Dates in the data
are explicit; nothing reads the clock. The module's result is read from the json callback.
"""
import gzip
import json
import os
import subprocess
import sys
import time

import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
from test_default import psql, run_playbook  # noqa: E402
from test_market_data import schema_db  # noqa: E402   (a fresh database built by the schema role)

testinfra_hosts = ["podman://qdb-molecule-db1"]
CONTAINER = "qdb-molecule-db1"
DB = "qa_strict"
EMPTY_DB = "qa_strict_empty"
HEADER = "ticker,region,date,open,high,low,close,volume\n"
TICKERS_HEADER = "ticker,region,exchange,name,currency,sector\n"
SNAPSHOT = ("SELECT (SELECT count(*) FROM ohlcv_data) || '/' || (SELECT coalesce(sum(close), 0) FROM ohlcv_data)"
            " || '/' || (SELECT count(*) FROM tickers) || '/' || (SELECT count(*) FROM ohlcv_quarantine)")
INDEXES = "SELECT string_agg(indexrelid::text, ',' ORDER BY indexrelid) FROM pg_index WHERE indrelid = 'ohlcv_data'::regclass"


def playbook(name, *extra, json_output=False, wait=True):
    """playbooks/<name> on the Molecule host (its recap in `stats`, see test_default). With
    json_output the stdout is the json callback's, to read the module's result from; with
    wait=False a running process (no stats) is returned."""
    path = os.path.join(PROJECT, "playbooks", name)
    env = {"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"} if json_output else {}
    if wait:
        return run_playbook(path, *extra, env=env)
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], path] + list(extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **env))


def load_result(stdout, stderr=""):
    """The ohlcv_ingest task's result, from the json callback's output."""
    try:
        out = json.loads(stdout)
    except ValueError:
        raise AssertionError(stdout[-3000:] + stderr[-2000:])
    for task in out["plays"][0]["tasks"]:
        if task["task"]["name"].split(" : ")[-1] == "Load the bars":   # "ingest : Load the bars"
            return next(iter(task["hosts"].values()))
    raise AssertionError("the load task did not run: " + stdout[-3000:] + stderr[-2000:])


def ingest(path, *extra, db=DB):
    proc = playbook("ingest.yml", "-e", "ingest_src=%s" % path, "-e", "ingest_database=%s" % db,
                    "-e", "ingest_sync_calendars=false", *extra, json_output=True)
    result = load_result(proc.stdout, proc.stderr)
    assert_no_crash(result)
    return proc, result


def assert_no_crash(result):
    """A refusal or failure is a message; a crash would be MODULE FAILURE with a traceback."""
    assert "module_stderr" not in result and "Traceback" not in json.dumps(result), json.dumps(result)[-3000:]


def write(tmp, name, content):
    path = str(tmp / name)
    with open(path, "wb") as handle:
        handle.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def quarantine(host, name, db=DB):
    return psql(host, "SELECT string_agg(line || ':' || reason, ',' ORDER BY line) FROM ohlcv_quarantine "
                      "WHERE file_name = '%s'" % name, db=db)


def expected(lines):
    return ",".join("%d:%s" % (line, reason) for line, reason in sorted(lines.items()))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("strict")


@pytest.fixture(scope="module")
def strict_db(host, tmp):
    """qa_strict with a first bar, so later loads take the upsert path."""
    schema_db(DB)
    proc, result = ingest(write(tmp, "seed.csv", HEADER + "ZZSEED,US,2024-01-02,10,11,9,10,100\n"),
                          "-e", "ingest_register_tickers=true")
    assert proc.returncode == 0 and result["new"] == 1, result
    return DB


@pytest.fixture(scope="module")
def empty_db(host):
    schema_db(EMPTY_DB)
    assert psql(host, "SELECT count(*) FROM ohlcv_data", db=EMPTY_DB) == "0"
    return EMPTY_DB


def test_lenient_dates_and_numbers_are_not_guessed(host, tmp, strict_db):
    """The issue's file, once loaded as 4 new bars: today, a DateStyle-dependent date, a
    compact date and a hex volume. Now each is quarantined with its reason, as is a date
    that does not exist."""
    path = write(tmp, "zzdate.csv", HEADER +
                 "ZZDATE,US,today,10,11,9,10,100\n"           # 2
                 "ZZDATE,US,01/02/2024,10,11,9,10,100\n"      # 3
                 "ZZDATE,US,20240105,10,11,9,10,100\n"        # 4
                 "ZZDATE,US,2024-01-08,10,11,9,10,0x10\n"     # 5
                 "ZZDATE,US,2024-01-09,10,11,9,10,100\n"      # 6: valid
                 "ZZDATE,US,2025-13-01,10,11,9,10,100\n")     # 7
    proc, result = ingest(path, "-e", "ingest_register_tickers=true")
    assert proc.returncode == 0, result
    assert (result["rows_read"], result["new"], result["quarantined"]) == (6, 1, 5)
    assert result["reasons"] == {"bad_date_format": 4, "bad_number": 1}
    assert quarantine(host, "zzdate.csv") == \
        "2:bad_date_format,3:bad_date_format,4:bad_date_format,5:bad_number,7:bad_date_format"
    assert psql(host, "SELECT string_agg(date || ':' || volume, ',') FROM ohlcv_data WHERE ticker = 'ZZDATE'",
                db=strict_db) == "2024-01-09:100"
    assert psql(host, "SELECT date || '|' || volume FROM ohlcv_quarantine WHERE file_name = 'zzdate.csv' AND line = 5",
                db=strict_db) == "2024-01-08|0x10"
    # Reloading it changes nothing.
    proc, result = ingest(path, "-e", "ingest_register_tickers=true")
    assert result["changed"] is False and result["quarantined_new"] == 0, result


REASON_ROWS = [
    ("ZZR,US,2024-02-01,10,11,9,10,100", None),
    ("ZZR,US,2024-02-02,10,11,9,,100", "missing_value"),
    ("ZZR,US,tomorrow,10,11,9,10,100", "bad_date_format"),
    ("ZZR,US,2024-02-05,1_0,11,9,10,100", "bad_number"),
    ("ZZR,US,2024-02-06,NaN,11,9,10,100", "bad_number"),
    ("ZZR,US,2024-02-07,10,Infinity,9,10,100", "bad_number"),
    ("ZZR,US,2024-02-08, 10,11,9,10,100", "bad_number"),
    ("ZZR,US,2024-02-09,10,11,9,10,1_000", "bad_number"),
    ("ZZR,US,2024-02-12,10,11,9,10,10.5", "bad_number"),
    ("ZZR,US,2024-02-13,0x0A,11,9,10,100", "bad_number"),
    ("ZZ R,US,2024-02-13,10,11,9,10,100", "bad_ticker"),
    ("ZZR,us,2024-02-14,10,11,9,10,100", "bad_region"),
    ("ZZR,US,2024-02-15,0,11,9,10,100", "non_positive_price"),
    ("ZZR,US,2024-02-16,10,11,-9,10,100", "non_positive_price"),
    ("ZZR,US,2024-02-20,10,2e9,9,10,100", "price_out_of_range"),
    ("ZZR,US,2024-02-21,1e-7,11,1e-7,10,100", "price_out_of_range"),
    ("ZZR,US,2024-02-23,10,11,9,10,-1", "negative_volume"),
    ("ZZR,US,2024-02-26,10,11,9,10,2000000000000000", "volume_out_of_range"),
    ("ZZR,US,2024-02-27,10,9,9.5,10,100", "ohlc_logic"),
    ("ZZR,US,2024-02-01,10,11,9,10,100", "duplicate_in_file"),
    ("ZZNEW,US,2024-02-01,10,11,9,10,100", "unknown_ticker"),
    ("ZZR,US,2024-02-28,10,11,9,10,1e3", None),                 # a whole volume written as 1e3
    ("ZZR,US,2024-02-29,+10.5,11,9,1.05E1,100", None),
    # First matching reason wins, in the documented order.
    ("ZZR,US,today,10,11,9,,100", "missing_value"),              # before bad_date_format
    ("ZZR,US,today,0x10,11,9,10,100", "bad_date_format"),        # before bad_number
    ("bad!,US,2024-03-01,0x10,11,9,10,100", "bad_number"),       # before bad_ticker
    ("bad!,US,2024-03-04,0,11,9,10,100", "bad_ticker"),          # before non_positive_price
    ("ZZR,US,2024-03-05,-1,11,9,10,-5", "non_positive_price"),   # before negative_volume
    ("ZZR,US,2024-03-06,10,9,9.5,10,-5", "negative_volume"),     # before ohlc_logic
    ("ZZNEW,US,2024-02-01,10,11,9,10,100", "duplicate_in_file"),  # before unknown_ticker
]


# Values COPY itself refuses in lines of a clean shape: each is held apart and the typed COPY
# runs again; past three such lines the whole file is staged as text.
COPY_REFUSED = [
    ("ZZR,US,2024-03-07,10,1e400,9,10,100", "price_out_of_range"),               # beyond float8
    ("ZZR,US,2024-03-08,-1e400,11,9,10,100", "non_positive_price"),
    ("ZZR,US,2024-03-11,10,11,1e-400,10,100", "price_out_of_range"),             # below float8
    ("ZZR,US,2024-03-12,10,11,9,10,99999999999999999999", "volume_out_of_range"),  # beyond bigint
    ("ZZR,US,2024-03-13,10,11,9,1-2,100", "bad_number"),
]


@pytest.mark.parametrize("staging", ["typed", "text"])
def test_every_reason_code_in_its_order(host, tmp, strict_db, staging):
    """Each reason on the fast path (typed COPY; the lines that need it typed one by one) and
    on the all-text path: both classify alike."""
    rows = list(REASON_ROWS) + (COPY_REFUSED[:1] if staging == "typed" else COPY_REFUSED)
    name = "reasons_%s.csv" % staging
    tickers = write(tmp, name + ".tickers", TICKERS_HEADER + "ZZR,US,XNYS,ZZ R,USD,Test\n")
    path = write(tmp, name, HEADER + "".join(row + "\n" for row, _reason in rows))
    proc, result = ingest(path, "-e", "ingest_tickers_src=%s" % tickers)
    assert proc.returncode == 0, result
    assert result["staging"] == staging
    want = dict((i + 2, reason) for i, (_row, reason) in enumerate(rows) if reason)
    assert quarantine(host, name) == expected(want)
    assert result["rows_read"] == len(rows) and result["quarantined"] == len(want)
    assert psql(host, "SELECT string_agg(date || ':' || open || ':' || close || ':' || volume, ',' ORDER BY date) "
                      "FROM ohlcv_data WHERE ticker = 'ZZR'", db=strict_db) == \
        "2024-02-01:10:10:100,2024-02-28:10:10:1000,2024-02-29:10.5:10.5:100"
    assert psql(host, "SELECT count(*) FROM tickers WHERE ticker = 'ZZNEW'", db=strict_db) == "0"


def test_date_format_reads_a_vendor_format_exactly(host, tmp, strict_db):
    path = write(tmp, "dmy.csv", HEADER +
                 "ZZDMY,US,01/02/2024,10,11,9,10,100\n"     # 2: 1 February
                 "ZZDMY,US,2024-02-02,10,11,9,10,100\n"     # 3: ISO is not this file's format
                 "ZZDMY,US,31/02/2024,10,11,9,10,100\n"     # 4: no such day
                 "ZZDMY,US,5/2/2024,10,11,9,10,100\n")      # 5: not zero-padded
    proc, result = ingest(path, "-e", "ingest_date_format=%d/%m/%Y", "-e", "ingest_register_tickers=true")
    assert proc.returncode == 0, result
    assert psql(host, "SELECT string_agg(date::text, ',') FROM ohlcv_data WHERE ticker = 'ZZDMY'", db=strict_db) == \
        "2024-02-01"
    assert quarantine(host, "dmy.csv") == "3:bad_date_format,4:bad_date_format,5:bad_date_format"

    path = write(tmp, "ymd.csv", HEADER + "ZZYMD,US,20240105,10,11,9,10,100\nZZYMD,US,2024-01-08,10,11,9,10,100\n")
    proc, result = ingest(path, "-e", "ingest_date_format=%Y%m%d", "-e", "ingest_register_tickers=true")
    assert proc.returncode == 0, result
    assert psql(host, "SELECT string_agg(date::text, ',') FROM ohlcv_data WHERE ticker = 'ZZYMD'", db=strict_db) == \
        "2024-01-05"
    assert quarantine(host, "ymd.csv") == "3:bad_date_format"

    proc, result = ingest(path, "-e", "ingest_date_format=%y%m%d")
    assert proc.returncode != 0 and "%y is not supported" in result["msg"], result


def test_broken_lines_are_quarantined_each_with_its_line(host, tmp, strict_db):
    """Wrong column counts, bad UTF-8, stray and unterminated quotes: each line on its own,
    the rest of the file loads. CRLF line ends throughout; the last line has none."""
    lines = [
        (b"ZZL,US,2024-04-01,10,11,9,10,100", None),
        (b"ZZL,US,2024-04-02,10,11,9,10,100,7", "bad_row"),
        (b"ZZL,US,2024-04-03,10,11,9,10", "bad_row"),
        (b"ZZ\xffL,US,2024-04-04,10,11,9,10,100", "bad_encoding"),
        (b'ZZ"L,US,2024-04-05,10,11,9,10,100', "bad_row"),
        (b'"ZZL,US,2024-04-08,10,11,9,10,100', "bad_row"),
        (b'"ZZL","US","2024-04-09","10","11","9","10","100"', None),
        (b"", "bad_row"),
        (b"\\.", "bad_row"),
        (b"ZZL,US,2024-04-10,10,11,9,10,1\x0000", "bad_encoding"),
    ]
    content = HEADER.replace("\n", "\r\n").encode() + b"".join(line + b"\r\n" for line, _reason in lines) + \
        b"ZZL,US,2024-04-11,10,11,9,10,100"
    proc, result = ingest(write(tmp, "broken.csv", content), "-e", "ingest_register_tickers=true")
    assert proc.returncode == 0, result
    want = dict((i + 2, reason) for i, (_line, reason) in enumerate(lines) if reason)
    assert quarantine(host, "broken.csv") == expected(want)
    assert (result["rows_read"], result["new"]) == (len(lines) + 1, 3)
    assert psql(host, "SELECT string_agg(date::text, ',' ORDER BY date) FROM ohlcv_data WHERE ticker = 'ZZL'",
                db=strict_db) == "2024-04-01,2024-04-09,2024-04-11"
    # The quarantine keeps what could be read of the line.
    assert psql(host, "SELECT ticker || '|' || volume FROM ohlcv_quarantine WHERE file_name = 'broken.csv' AND line = 3",
                db=strict_db) == "ZZL|100,7"


def test_a_truncated_or_corrupt_gzip_fails_naming_the_file(host, tmp, strict_db):
    body = HEADER + "".join("ZZGZ,US,%s,10,11,9,10,100\n" % day for day in
                            ("2023-%02d-%02d" % (m, d) for m in range(1, 13) for d in range(1, 29)))
    data = gzip.compress(body.encode() * 40)
    before = psql(host, SNAPSHOT, db=strict_db)
    proc, result = ingest(write(tmp, "truncated.csv.gz", data[:len(data) // 2]), "-e", "ingest_register_tickers=true")
    assert proc.returncode != 0
    assert "truncated.csv.gz: cannot read the file: truncated gzip" in result["msg"], result["msg"]
    assert "nothing written" in result["msg"] and result["new"] == 0
    corrupt = bytearray(data)
    corrupt[-8] ^= 0xFF                    # the CRC-32 of the gzip trailer
    proc, result = ingest(write(tmp, "corrupt.csv.gz", bytes(corrupt)), "-e", "ingest_register_tickers=true")
    assert proc.returncode != 0
    assert "corrupt.csv.gz: cannot read the file: corrupt gzip (CRC check failed" in result["msg"], result["msg"]
    assert psql(host, SNAPSHOT, db=strict_db) == before


def test_a_bad_ticker_in_the_tickers_file_fails_naming_its_line(host, tmp, strict_db):
    before = psql(host, SNAPSHOT, db=strict_db)
    tickers = write(tmp, "bad.tickers", TICKERS_HEADER + "ZZT1,US,XNYS,One,USD,Test\nZZ T2,US,XNYS,Two,USD,Test\n")
    bars = write(tmp, "t.csv", HEADER + "ZZT1,US,2024-05-01,10,11,9,10,100\n")
    proc, result = ingest(bars, "-e", "ingest_tickers_src=%s" % tickers)
    assert proc.returncode != 0
    assert 'bad.tickers line 3: ticker "ZZ T2" does not match ticker_pattern' in result["msg"], result["msg"]
    assert psql(host, SNAPSHOT, db=strict_db) == before


def test_ticker_pattern_and_bounds_are_options(host, tmp, strict_db):
    path = write(tmp, "bounds.csv", HEADER +
                 "ZZBND,US,2024-05-02,10,11,9,10,100\n"      # 2: 5 letters, the pattern allows 4
                 "ZZB,US,2024-05-02,60,61,59,60,100\n"       # 3: above max_price 50
                 "ZZB,US,2024-05-03,10,11,9,10,2000\n"       # 4: above max_volume 1000
                 "ZZB,US,2024-05-06,10,11,9,10,1000\n")      # 5: valid
    proc, result = ingest(path, "-e", "ingest_register_tickers=true", "-e", json.dumps(dict(
        ingest_ticker_pattern="^[A-Z]{1,4}$", ingest_max_price=50, ingest_max_volume=1000)))
    assert proc.returncode == 0, result
    assert quarantine(host, "bounds.csv") == "2:bad_ticker,3:price_out_of_range,4:volume_out_of_range"
    assert result["new"] == 1 and result["tickers_registered"] == 1   # ZZBND is not registered


def test_on_invalid_fail_writes_nothing_and_reports_nothing_new(host, tmp, strict_db):
    before = psql(host, SNAPSHOT, db=strict_db)
    path = write(tmp, "fail.csv", HEADER + "ZZFAIL,US,2024-06-03,10,11,9,10,100\nZZFAIL,US,2024-06-04,10,11,9,10,0x10\n")
    proc, result = ingest(path, "-e", "ingest_on_invalid=fail", "-e", "ingest_register_tickers=true")
    assert proc.returncode != 0
    assert "1 invalid row(s) (bad_number: 1); nothing was written" in result["msg"]
    assert (result["new"], result["updated"], result["quarantined"], result["tickers_registered"]) == (0, 0, 1, 0)
    assert result["changed"] is False
    assert psql(host, SNAPSHOT, db=strict_db) == before


def test_connection_lost_mid_load_reports_nothing_written(host, tmp, strict_db):
    """The load is made to wait on a lock just before it writes, and its backend is then
    terminated from another session: a clear message, no traceback, nothing written."""
    before = psql(host, SNAPSHOT, db=strict_db)
    locker = subprocess.Popen(["podman", "exec", "-u", "postgres", "-e", "PGAPPNAME=qdb_test_locker", CONTAINER,
                               "psql", "-XAtq", "-d", strict_db, "-c",
                               "BEGIN; LOCK TABLE public.ohlcv_data IN EXCLUSIVE MODE; SELECT pg_sleep(600); COMMIT;"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    load = None
    try:
        wait_for(host, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = "
                       "'qdb_test_locker' AND l.relation = 'public.ohlcv_data'::regclass AND l.granted", strict_db)
        path = write(tmp, "lost.csv", HEADER + "ZZLOST,US,2024-07-01,10,11,9,10,100\n")
        load = playbook("ingest.yml", "-e", "ingest_src=%s" % path, "-e", "ingest_database=%s" % strict_db,
                        "-e", "ingest_sync_calendars=false", "-e", "ingest_register_tickers=true",
                        json_output=True, wait=False)
        waiting = "FROM pg_stat_activity WHERE datname = '%s' AND wait_event_type = 'Lock' " \
                  "AND query LIKE '%%INSERT INTO public.ohlcv_data%%'" % strict_db
        wait_for(host, "SELECT count(*) " + waiting, strict_db)
        psql(host, "SELECT pg_terminate_backend(pid) " + waiting, db=strict_db)
        stdout, stderr = load.communicate(timeout=300)
    finally:
        psql(host, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'qdb_test_locker'",
             db=strict_db)
        locker.wait(timeout=60)
        if load is not None and load.poll() is None:
            load.kill()
    assert load.returncode != 0
    result = load_result(stdout, stderr)
    assert "lost.csv: connection lost, nothing written" in result["msg"], result
    assert_no_crash(result)
    assert result["new"] == 0 and result["changed"] is False
    assert psql(host, SNAPSHOT, db=strict_db) == before


def wait_for(host, count_query, db, timeout=120):
    deadline = time.monotonic() + timeout
    while int(psql(host, count_query, db=db) or 0) == 0:
        assert time.monotonic() < deadline, "timed out waiting for: " + count_query
        time.sleep(0.2)


def test_a_header_only_file_into_an_empty_table_changes_nothing(host, tmp, empty_db):
    indexes = psql(host, INDEXES, db=empty_db)
    proc, result = ingest(write(tmp, "header_only.csv", HEADER), db=empty_db)
    assert proc.returncode == 0, result
    assert (result["changed"], result["bulk"], result["rows_read"], result["new"]) == (False, False, 0, 0)
    assert psql(host, INDEXES, db=empty_db) == indexes   # no index dropped and rebuilt


def test_on_invalid_fail_decides_before_a_backfill_writes(host, tmp, empty_db):
    """A repeated key in a backfill file, with on_invalid=fail: found before anything is
    written, the indexes untouched."""
    indexes = psql(host, INDEXES, db=empty_db)
    path = write(tmp, "dup.csv", HEADER + "ZZDUP,US,2024-08-01,10,11,9,10,100\nZZDUP,US,2024-08-01,10,11,9,10,100\n")
    proc, result = ingest(path, "-e", "ingest_on_invalid=fail", "-e", "ingest_register_tickers=true", db=empty_db)
    assert proc.returncode != 0
    assert result["reasons"] == {"duplicate_in_file": 1} and result["new"] == 0 and result["bulk"] is False
    assert psql(host, SNAPSHOT, db=empty_db) == "0/0/0/0"
    assert psql(host, INDEXES, db=empty_db) == indexes


def test_analyze_failing_after_the_commit_is_a_warning(host, tmp, empty_db):
    """Extended statistics on an expression that raises make ANALYZE (and nothing else) fail:
    the backfill is committed and says so."""
    psql(host, "CREATE FUNCTION qdb_test_boom(float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE "
               "AS $$ BEGIN RAISE EXCEPTION 'boom in ANALYZE'; END $$", db=empty_db)
    psql(host, "CREATE STATISTICS qdb_test_boom ON (qdb_test_boom(close)) FROM public.ohlcv_data", db=empty_db)
    try:
        path = write(tmp, "backfill.csv", HEADER + "ZZBF,US,2024-08-01,10,11,9,10,100\nZZBF,US,2024-08-02,10,11,9,10,100\n")
        # The bulk path (indexes dropped and rebuilt) needs the table's owner: the postgres
        # login, not quant_app, the ingest's default (docs/ingest.md).
        proc, result = ingest(path, "-e", "ingest_register_tickers=true", "-e", "ingest_login_user=",
                              "-e", "ingest_login_password=", db=empty_db)
        assert proc.returncode == 0, result
        assert (result["bulk"], result["new"], result["analyzed"], result["changed"]) == (True, 2, False, True)
        warnings = " ".join(result.get("warnings", []))
        assert "committed (2 new bars); ANALYZE public.ohlcv_data failed" in warnings and "boom in ANALYZE" in warnings
        assert "nothing written" not in warnings + result.get("msg", "")
        assert psql(host, "SELECT count(*) FROM ohlcv_data", db=empty_db) == "2"
    finally:
        psql(host, "DROP STATISTICS IF EXISTS qdb_test_boom", db=empty_db)
        psql(host, "DROP FUNCTION IF EXISTS qdb_test_boom(float8)", db=empty_db)
