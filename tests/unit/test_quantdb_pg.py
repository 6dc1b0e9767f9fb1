"""module_utils/quantdb_pg.py without a database: the transaction() helper every module writes
through (commit, check-mode rollback, refusals, database errors, a lost COMMIT, after_commit),
the statements log behind `queries`, and ohlcv_ingest's failure messages built on them."""
import importlib.util
import os
import sys

import psycopg
import pytest

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "module_utils"))
import quantdb_pg  # noqa: E402


class Failed(Exception):
    pass


class FakeModule(object):
    def __init__(self, check_mode=False):
        self.check_mode = check_mode
        self.failed = None
        self.warnings = []

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise Failed(kwargs["msg"])

    def warn(self, text):
        self.warnings.append(text)


class FakeConn(object):
    def __init__(self, commit_error=None, broken=False):
        self.log = []
        self.closed = False
        self.broken = broken
        self.autocommit = False
        self.commit_error = commit_error

    def commit(self):
        self.log.append("commit")
        if self.commit_error:
            self.broken = True
            raise self.commit_error

    def rollback(self):
        self.log.append("rollback")

    def close(self):
        self.log.append("close")
        self.closed = True


def test_commits_and_closes():
    module, conn = FakeModule(), FakeConn()
    with quantdb_pg.transaction(module, conn, "x failed"):
        conn.log.append("work")
    assert conn.log == ["work", "commit", "close"]
    assert module.failed is None


def test_check_mode_rolls_back():
    module, conn = FakeModule(check_mode=True), FakeConn()
    with quantdb_pg.transaction(module, conn, "x failed"):
        conn.log.append("work")
    assert conn.log == ["work", "rollback", "close"]


def test_a_database_error_fails_with_the_prefix_and_the_result():
    module, conn = FakeModule(), FakeConn()
    result = {"n": 1}
    with pytest.raises(Failed):
        with quantdb_pg.transaction(module, conn, "sync failed, nothing written", result):
            raise psycopg.errors.UniqueViolation("duplicate key value")
    assert module.failed == {"msg": "sync failed, nothing written: duplicate key value", "n": 1}
    assert conn.log == ["rollback", "close"]


def test_a_refusal_is_its_own_message_and_on_rollback_runs():
    class Refused(Exception):
        pass

    module, conn = FakeModule(), FakeConn()
    result = {"new": 5}
    with pytest.raises(Failed):
        with quantdb_pg.transaction(module, conn, "x", result, refusals={Refused: lambda e: "no: %s" % e},
                                    on_rollback=lambda r: r.update(new=0)):
            raise Refused("bad header")
    assert module.failed == {"msg": "no: bad header", "new": 0}


def test_other_exceptions_pass_through_and_close():
    module, conn = FakeModule(), FakeConn()
    with pytest.raises(SystemExit):
        with quantdb_pg.transaction(module, conn, "x"):
            raise SystemExit(0)   # exit_json inside the body
    assert conn.log == ["close"]


def test_a_connection_lost_during_commit_is_not_reported_as_rolled_back():
    seen = {}

    def failure(exc, lost=False, committing=False):
        seen.update(lost=lost, committing=committing)
        return "unknown outcome"

    module, conn = FakeModule(), FakeConn(commit_error=psycopg.errors.AdminShutdown("terminating connection"))
    result = {"new": 5}
    with pytest.raises(Failed):
        with quantdb_pg.transaction(module, conn, failure, result, on_rollback=lambda r: r.update(new=0)):
            pass
    assert seen == {"lost": True, "committing": True}
    assert module.failed == {"msg": "unknown outcome", "new": 5}


def test_after_commit_runs_in_autocommit_only_after_a_real_commit():
    calls = []
    module, conn = FakeModule(), FakeConn()
    with quantdb_pg.transaction(module, conn, "x", after_commit=lambda c: calls.append(c.autocommit)):
        pass
    assert calls == [True]
    assert conn.log == ["commit", "close"]
    module, conn = FakeModule(check_mode=True), FakeConn()
    with quantdb_pg.transaction(module, conn, "x", after_commit=lambda c: calls.append("check")):
        pass
    assert calls == [True]


def test_an_after_commit_database_error_is_a_warning():
    def analyze(conn):
        raise psycopg.errors.QueryCanceled("canceling statement")

    module, conn = FakeModule(), FakeConn()
    with quantdb_pg.transaction(module, conn, "x", after_commit=analyze):
        pass
    assert module.failed is None
    assert module.warnings == ["committed; then failed: canceling statement"]


def test_statement_text_joins_stripped_lines():
    assert quantdb_pg.statement_text(None, "\n  SELECT 1\n    FROM t\n\n  WHERE x  \n") == "SELECT 1 FROM t WHERE x"
    assert quantdb_pg.statement_text(None, b"SELECT 2") == "SELECT 2"


def test_statement_text_renders_composed_sql():
    class Composed(object):
        def as_string(self, conn):
            return 'DROP INDEX "k"\n'
    assert quantdb_pg.statement_text("conn", Composed()) == 'DROP INDEX "k"'


def test_record_queries_logs_execute_executemany_and_copy():
    class BaseCursor(object):
        def execute(self, query, params=None, **kwargs):
            return "executed"

        def executemany(self, query, params_seq, **kwargs):
            return "many"

        def copy(self, statement, params=None, **kwargs):
            return "copy"

    class Conn(object):
        cursor_factory = BaseCursor

    conn = Conn()
    log = quantdb_pg.record_queries(conn)
    cur = conn.cursor_factory()
    assert cur.execute("SELECT\n 1", (1,)) == "executed"
    assert cur.executemany("INSERT x", [(1,), (2,)]) == "many"
    assert cur.copy("COPY t FROM STDIN") == "copy"
    assert log == ["SELECT 1", "INSERT x", "COPY t FROM STDIN"]
    shared = []
    quantdb_pg.record_queries(conn, shared)
    conn.cursor_factory().execute("SELECT 3")
    assert shared == ["SELECT 3"]


def test_conninfo_leaves_empty_values_to_libpq():
    params = dict(login_db="d", login_port=5432, ssl_mode="prefer", connect_timeout=10, application_name="a",
                  login_host="", login_user="u", login_password="")
    kwargs = quantdb_pg.conninfo_kwargs(params)
    assert kwargs["user"] == "u" and "host" not in kwargs and "password" not in kwargs


# ohlcv_ingest's failure messages (the Molecule tests check the same texts against a database).

def load_ingest():
    import ansible.module_utils
    utils = os.path.join(PROJECT, "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)
    spec = importlib.util.spec_from_file_location("qdb_lib_ohlcv_ingest_pg", os.path.join(PROJECT, "library", "ohlcv_ingest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ingest_failure_messages():
    ingest = load_ingest()
    message = ingest.load_failure("f.csv")
    exc = psycopg.errors.DataError("invalid input")
    assert message(exc) == "f.csv: load failed, nothing written: invalid input"
    assert message(exc, lost=True) == "f.csv: connection lost, nothing written: invalid input"
    assert message(exc, lost=True, committing=True).startswith(
        "f.csv: connection lost during COMMIT, so whether the load was committed is unknown")


def test_ingest_refusals_and_nothing_written():
    ingest = load_ingest()
    assert ingest.REFUSALS[ingest.LoadFailed](ingest.LoadFailed("f.csv: 3 invalid row(s)")) == "f.csv: 3 invalid row(s)"
    assert ingest.REFUSALS[ingest.UnreadableFile](ingest.UnreadableFile("f.gz: corrupt")) == "f.gz: corrupt; nothing written"
    result = ingest.nothing_written(dict(changed=True, new=4, updated=1, unchanged=2, quarantined=3, quarantined_new=3,
                                         tickers_registered=1, sessions_added=1, bulk=True, reasons={"bad_row": 3}))
    assert result == dict(changed=False, new=0, updated=0, unchanged=0, quarantined=3, quarantined_new=0,
                          tickers_registered=0, sessions_added=0, bulk=False, reasons={"bad_row": 3})


def test_ingest_reason_codes_are_one_based_in_order():
    ingest = load_ingest()
    assert [ingest.R[name] for name in ingest.REASONS] == list(range(1, len(ingest.REASONS) + 1))
    assert ingest.REASONS[0] == "bad_encoding" and ingest.REASONS[-1] == "unknown_ticker"


@pytest.mark.parametrize("host, expected", [
    ("", "prefer"), ("/var/run/postgresql", "prefer"), ("localhost", "prefer"), ("127.0.0.1", "prefer"),
    ("::1", "prefer"), ("db1.example.com", "verify-full"), ("10.0.0.5", "verify-full"),
    ("localhost,db2.example.com", "verify-full")])
def test_remote_hosts_default_to_verify_full(host, expected):
    params = dict(login_db="d", login_port=5432, ssl_mode=None, ssl_rootcert="/etc/ca.crt", connect_timeout=10,
                  application_name="a", login_host=host, login_user="", login_password="")
    kwargs = quantdb_pg.conninfo_kwargs(params)
    assert kwargs["sslmode"] == expected
    assert kwargs["sslrootcert"] == "/etc/ca.crt"


def test_an_explicit_ssl_mode_wins():
    params = dict(login_db="d", login_port=5432, ssl_mode="require", connect_timeout=10,
                  application_name="a", login_host="db1.example.com")
    assert quantdb_pg.conninfo_kwargs(params)["sslmode"] == "require"
