"""Exchange calendars on the Molecule container: playbooks/calendars.yml (roles/calendars)
keeps exchange_sessions equal to the exchange_calendars library, in a database of its own
(qa_calendars) so the other tests' data is not touched.

Every count is compared with exchange_calendars' own count for the same window, computed
here; the window is always given explicitly, never taken from the clock.
"""
import json
import os
import subprocess
import sys

import exchange_calendars as xcals
import pytest

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
from test_default import psql, recap, run_playbook  # noqa: E402

testinfra_hosts = ["podman://qdb-molecule-db1"]
DB = "qa_calendars"
START, END = "1995-01-01", "2026-12-31"
WINDOW = ["-e", "calendars_database=%s" % DB, "-e", "calendars_start=%s" % START, "-e", "calendars_end=%s" % END]
TIMEZONES = {"XKRX": "Asia/Seoul", "XNYS": "America/New_York", "XTKS": "Asia/Tokyo"}


def playbook(name, *extra):
    """playbooks/<name> on the Molecule host; the result's `stats` is its recap as JSON."""
    return run_playbook(os.path.join(PROJECT, "playbooks", name), *extra)


def flat(proc):
    """stdout and stderr (warnings and errors) on one line: long messages wrap."""
    return " ".join((proc.stdout + proc.stderr).split())


def library_sessions(code, start=START, end=END):
    return [d.date().isoformat() for d in xcals.get_calendar(code, start=start, end=end).sessions]


def stored(host, code, start=START, end=END):
    return int(psql(host, "SELECT count(*) FROM exchange_sessions WHERE exchange = '%s' "
                          "AND session BETWEEN '%s' AND '%s'" % (code, start, end), db=DB))


def summary(code, added, removed, start=START, end=END, check=False):
    """The role's summary line for one exchange."""
    return "%s (%s) %s..%s: %d sessions, %d added, %d removed%s" % (
        code, TIMEZONES[code], start, end, len(library_sessions(code, start, end)), added, removed,
        " (check mode, nothing written)" if check else "")


def state(host):
    """Sessions stored, and each exchanges row with its synced_at (the latest last)."""
    return (psql(host, "SELECT count(*) FROM exchange_sessions", db=DB),
            psql(host, "SELECT string_agg(exchange || '=' || synced_at, ',' ORDER BY synced_at, exchange) FROM exchanges",
                 db=DB))


@pytest.fixture(scope="module")
def db(host):
    proc = playbook("site.yml", "--tags", "schema", "-e", "schema_database=%s" % DB)
    assert proc.returncode == 0, proc.stdout[-3000:]
    psql(host, "TRUNCATE exchange_sessions, exchanges", db=DB)
    return DB


def test_check_mode_reports_every_session_and_writes_nothing(host, db):
    proc = playbook("calendars.yml", "--check", "--diff", *WINDOW)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = flat(proc)
    for code in ("XKRX", "XNYS"):
        assert summary(code, len(library_sessions(code)), 0, check=True) in out
    assert recap(proc)["changed"] > 0
    assert psql(host, "SELECT count(*) FROM exchange_sessions", db=db) == "0"
    assert psql(host, "SELECT count(*) FROM exchanges", db=db) == "0"


def test_sync_loads_exactly_the_library_sessions(host, db):
    proc = playbook("calendars.yml", *WINDOW)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = flat(proc)
    for code in ("XKRX", "XNYS"):
        expected = library_sessions(code)
        assert summary(code, len(expected), 0) in out
        assert stored(host, code) == len(expected)
        assert psql(host, "SELECT min(session) || '/' || max(session) FROM exchange_sessions WHERE exchange = '%s'" % code,
                    db=db) == "%s/%s" % (expected[0], expected[-1])
        assert psql(host, "SELECT timezone || '/' || synced_from || '/' || synced_to || '/' || source "
                          "FROM exchanges WHERE exchange = '%s'" % code, db=db) == \
            "%s/%s/%s/exchange_calendars %s" % (TIMEZONES[code], START, END, xcals.__version__)
    # The regions' exchanges, and only they, when there are no tickers.
    assert psql(host, "SELECT string_agg(exchange, ',' ORDER BY exchange) FROM exchanges", db=db) == "XKRX,XNYS"


def test_second_run_changes_nothing(host, db):
    synced_at = psql(host, "SELECT string_agg(synced_at::text, ',' ORDER BY exchange) FROM exchanges", db=db)
    proc = playbook("calendars.yml", *WINDOW)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]
    for code in ("XKRX", "XNYS"):
        assert summary(code, 0, 0) in flat(proc)
    assert psql(host, "SELECT string_agg(synced_at::text, ',' ORDER BY exchange) FROM exchanges", db=db) == synced_at


def test_a_deleted_and_a_fake_session_are_corrected_and_reported(host, db):
    deleted = library_sessions("XKRX")[100]
    fake = "2025-12-25"   # Christmas: no XNYS session
    outside = "1994-12-31"  # before the window: left alone
    assert fake not in library_sessions("XNYS")
    psql(host, "DELETE FROM exchange_sessions WHERE exchange = 'XKRX' AND session = '%s'; "
               "INSERT INTO exchange_sessions VALUES ('XNYS', '%s'), ('XNYS', '%s')" % (deleted, fake, outside), db=db)
    before = state(host)
    latest = psql(host, "SELECT max(synced_at) FROM exchanges", db=db)

    proc = playbook("calendars.yml", "--check", "--diff", *WINDOW)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = flat(proc)
    assert summary("XKRX", 1, 0, check=True) in out and summary("XNYS", 0, 1, check=True) in out
    assert "+XKRX %s" % deleted in proc.stdout and "-XNYS %s" % fake in proc.stdout
    assert state(host) == before

    proc = playbook("calendars.yml", *WINDOW)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert summary("XKRX", 1, 0) in flat(proc) and summary("XNYS", 0, 1) in flat(proc)
    assert stored(host, "XKRX") == len(library_sessions("XKRX"))
    assert stored(host, "XNYS") == len(library_sessions("XNYS"))
    assert psql(host, "SELECT count(*) FROM exchange_sessions WHERE exchange = 'XKRX' AND session = '%s'" % deleted, db=db) == "1"
    assert psql(host, "SELECT count(*) FROM exchange_sessions WHERE exchange = 'XNYS' AND session = '%s'" % fake, db=db) == "0"
    assert psql(host, "SELECT count(*) FROM exchange_sessions WHERE exchange = 'XNYS' AND session = '%s'" % outside, db=db) == "1"
    # Both exchanges changed, so both were stamped again.
    assert psql(host, "SELECT string_agg(exchange, ',' ORDER BY exchange) FROM exchanges "
                      "WHERE synced_at > '%s'" % latest, db=db) == "XKRX,XNYS"
    psql(host, "DELETE FROM exchange_sessions WHERE exchange = 'XNYS' AND session = '%s'" % outside, db=db)
    proc = playbook("calendars.yml", *WINDOW)
    assert recap(proc)["changed"] == 0, proc.stdout[-3000:]


def test_a_start_before_the_library_covers_xtks_is_clipped_with_a_warning(host, db):
    proc = playbook("calendars.yml", "-e", '{"calendars_exchanges": ["XTKS"]}', "-e", "calendars_database=%s" % DB,
                    "-e", "calendars_start=1990-01-01", "-e", "calendars_end=%s" % END)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = flat(proc)
    assert "exchange_calendars covers XTKS only from 1997-01-01; sessions before that are not loaded (asked from 1990-01-01)" in out
    assert summary("XTKS", len(library_sessions("XTKS", "1997-01-01")), 0, start="1997-01-01") in out
    assert stored(host, "XTKS", "1900-01-01") == len(library_sessions("XTKS", "1997-01-01"))
    assert psql(host, "SELECT synced_from || '/' || synced_to FROM exchanges WHERE exchange = 'XTKS'", db=db) == \
        "1997-01-01/%s" % END
    # XKRX and XNYS are covered from 1990: their windows grow, nothing clipped.
    for code in ("XKRX", "XNYS"):
        older = len(library_sessions(code, "1990-01-01")) - len(library_sessions(code))
        assert summary(code, older, 0, start="1990-01-01") in out
        assert stored(host, code, "1900-01-01") == len(library_sessions(code, "1990-01-01"))


def test_an_unknown_exchange_fails_naming_it_and_writes_nothing(host, db):
    before = state(host)
    proc = playbook("calendars.yml", "-e", '{"calendars_exchanges": ["XFOO"]}', *WINDOW)
    assert proc.returncode != 0
    assert "unknown exchange calendar code(s): XFOO" in flat(proc)
    assert recap(proc)["changed"] == 0
    assert state(host) == before


def test_the_load_module_refuses_a_bad_file_naming_the_line(host, db):
    before = psql(host, "SELECT count(*) FROM exchange_sessions", db=db)
    window = [dict(exchange="XKRX", timezone="Asia/Seoul", start=START, end=END)]
    for name, content, message in (
            ("bad_date.csv", "exchange,session\nXKRX,2025-01-02\nXKRX,2025-13-01\n",
             "line 3 (XKRX,2025-13-01): session is not an ISO date (YYYY-MM-DD)"),
            ("bad_header.csv", "exchange,date\nXKRX,2025-01-02\n",
             "line 1: header must be exchange,session, got exchange,date"),
            ("bad_exchange.csv", "exchange,session\nXKRX,2025-01-02\nXNYS,2025-01-02\n",
             "line 3 (XNYS,2025-01-02): exchange not in the calendars option")):
        path = "/var/tmp/qa_calendars_%s" % name
        assert host.run("printf %s > " + path, content).rc == 0
        args = dict(login_db=DB, login_host="/var/run/postgresql", src=path, calendars=window)
        proc = subprocess.run(["ansible", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "quantdb_db", "-b",
                               "--become-user", "postgres", "-m", "exchange_sessions", "-a", json.dumps(args)],
                              capture_output=True, text=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
        assert proc.returncode != 0
        assert message in flat(proc), flat(proc)[-2000:]
        assert psql(host, "SELECT count(*) FROM exchange_sessions", db=db) == before
