"""Bounded lock waits without a database (issue 15): the lock-timeout message every module that
takes locks fails with (module_utils/quantdb_pg.py), the ingest's and the migrations' use of it,
and schema_migrations' advisory lock taken with pg_try_advisory_lock and a bounded wait.
The Molecule test molecule/default/tests/test_locks_staging.py checks the same against a real
lock held by another session."""
import importlib.util
import os
import sys
import time

import psycopg
import pytest

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "module_utils"))
import quantdb_pg  # noqa: E402

HOLDER = dict(pid=123, application_name="psql", mode="AccessExclusiveLock", granted=True, relation="public.ohlcv_data")


class Failed(Exception):
    pass


class FakeModule(object):
    def __init__(self, **params):
        self.params = dict(lock_timeout="10s", lock_wait_seconds=60)
        self.params.update(params)
        self.failed = None

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise Failed(kwargs["msg"])


def load_library(name):
    import ansible.module_utils
    utils = os.path.join(PROJECT, "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)
    spec = importlib.util.spec_from_file_location("qdb_lib_%s_locks" % name, os.path.join(PROJECT, "library", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_message_names_the_timeout_the_holder_and_the_outcome():
    assert quantdb_pg.lock_timeout_message("10s", [HOLDER], "public.ohlcv_data") == (
        "could not lock public.ohlcv_data within lock_timeout=10s (held by pid 123 app=psql AccessExclusiveLock); "
        "nothing written")
    assert quantdb_pg.lock_timeout_message("2s", [HOLDER], outcome="nothing changed") == (
        "could not lock public.ohlcv_data within lock_timeout=2s (held by pid 123 app=psql AccessExclusiveLock); "
        "nothing changed")


def test_holders_on_several_relations_queued_ones_and_many():
    other = dict(HOLDER, pid=7, application_name="", mode="ShareLock", relation="public.tickers")
    queued = dict(HOLDER, pid=8, application_name="etl", granted=False)
    text = quantdb_pg.lock_timeout_message("10s", [HOLDER, other, queued], outcome=None)
    assert text == ("could not lock public.ohlcv_data, public.tickers within lock_timeout=10s (held by pid 123 app=psql "
                    "AccessExclusiveLock on public.ohlcv_data, pid 7 app=? ShareLock on public.tickers, pid 8 app=etl "
                    "AccessExclusiveLock on public.ohlcv_data (waiting, ahead in the queue))")
    many = [dict(HOLDER, pid=pid) for pid in range(1, 6)]
    assert quantdb_pg.lock_timeout_message("1s", many, "public.ohlcv_data").endswith(
        "pid 3 app=psql AccessExclusiveLock, 2 more); nothing written")


def test_without_holders_it_still_names_the_timeout():
    assert quantdb_pg.lock_timeout_message("10s", [], "public.ohlcv_data") == (
        "could not lock public.ohlcv_data within lock_timeout=10s (the holder could not be identified: it has gone "
        "since, or it is a row lock); nothing written")
    assert quantdb_pg.lock_timeout_message(None, []).startswith("could not get a lock within lock_timeout=0 (")


def test_lock_conflicts_are_postgresql_s_table():
    conflicts = quantdb_pg.LOCK_CONFLICTS
    assert set(conflicts) == set(quantdb_pg.LOCK_MODES)
    for mode, others in conflicts.items():       # the relation is symmetric
        for other in others:
            assert mode in conflicts[other], (mode, other)
    assert conflicts["AccessShareLock"] == ("AccessExclusiveLock",)
    assert "RowExclusiveLock" not in conflicts["RowExclusiveLock"]        # writers do not block writers
    assert "ShareLock" not in conflicts["ShareLock"]
    assert "ShareUpdateExclusiveLock" in conflicts["ShareUpdateExclusiveLock"]   # two VACUUMs do
    assert len(conflicts["AccessExclusiveLock"]) == 8


def test_only_lock_not_available_is_a_lock_timeout():
    assert quantdb_pg.is_lock_timeout(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"))
    assert not quantdb_pg.is_lock_timeout(psycopg.errors.QueryCanceled("canceling statement due to statement timeout"))
    assert not quantdb_pg.is_lock_timeout(ValueError("x"))


def test_lock_aware_failure(monkeypatch):
    asked = []

    def holders(module, relations=(), mode=None, advisory_key=None, exclude_pids=()):
        asked.append((tuple(relations), mode, tuple(exclude_pids)))
        return [HOLDER]
    monkeypatch.setattr(quantdb_pg, "lock_holders", holders)
    module = FakeModule(lock_timeout="3s")
    message = quantdb_pg.lock_aware(module, "adopting ohlcv_data failed, nothing changed", None, ["public.ohlcv_data"],
                                    "ShareRowExclusiveLock", prefix="adopting ohlcv_data", outcome="nothing changed")
    assert message(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")) == (
        "adopting ohlcv_data: could not lock public.ohlcv_data within lock_timeout=3s (held by pid 123 app=psql "
        "AccessExclusiveLock); nothing changed")
    assert asked == [(("public.ohlcv_data",), "ShareRowExclusiveLock", (None,))]
    # Any other error keeps the module's own message.
    assert message(psycopg.errors.DataError("bad")) == "adopting ohlcv_data failed, nothing changed: bad"


def test_lock_holders_is_empty_when_the_probe_cannot_connect():
    params = dict(login_db="d", login_port=1, login_host="127.0.0.1", login_user="", login_password="", ssl_mode="disable",
                  ssl_rootcert="", lock_timeout="1s", connect_timeout=1, application_name="quantdb-ops")
    assert quantdb_pg.lock_holders(FakeModule(**params), ["public.ohlcv_data"], "RowExclusiveLock") == []


def test_ingest_names_the_lock_and_writes_nothing(monkeypatch):
    ingest = load_library("ohlcv_ingest")
    modes = []

    def holders(module, relations=(), mode=None, advisory_key=None, exclude_pids=()):
        modes.append(mode)
        assert "public.ohlcv_data" in relations
        return [HOLDER]
    monkeypatch.setattr(ingest, "lock_holders", holders)
    result = dict(bulk=False)
    message = ingest.load_failure("bars.csv", FakeModule(lock_timeout="2s"), None, result)
    exc = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
    assert message(exc) == ("bars.csv: could not lock public.ohlcv_data within lock_timeout=2s "
                            "(held by pid 123 app=psql AccessExclusiveLock); nothing written")
    result["bulk"] = True            # a backfill drops the indexes: any lock blocks it
    message(exc)
    assert modes == ["RowExclusiveLock", "AccessExclusiveLock"]
    # Without a module (the old signature) the message still names the lock timeout.
    assert ingest.load_failure("bars.csv")(exc).startswith("bars.csv: could not get a lock within lock_timeout=")


class AdvisoryConn(object):
    """pg_try_advisory_lock answers False `busy` times, then True."""

    def __init__(self, busy):
        self.busy = busy
        self.tries = 0
        self.info = type("Info", (), {"backend_pid": 99})()

    def execute(self, query, params=None):
        assert "pg_try_advisory_lock" in query and "pg_advisory_lock(" not in query
        self.tries += 1
        got = self.tries > self.busy
        return type("Cursor", (), {"fetchone": lambda _self: (got,)})()


def test_migrations_lock_is_retried_then_taken():
    migrations = load_library("schema_migrations")
    conn = AdvisoryConn(busy=2)
    migrations.take_migrations_lock(FakeModule(lock_wait_seconds=5), conn, {})
    assert conn.tries == 3


def test_migrations_lock_wait_is_bounded_and_names_the_holder(monkeypatch):
    migrations = load_library("schema_migrations")
    asked = []

    def holders(module, relations=(), mode=None, advisory_key=None, exclude_pids=()):
        asked.append((advisory_key, tuple(exclude_pids)))
        return [dict(HOLDER, pid=4321, application_name="quantdb-ops", mode="ExclusiveLock",
                     relation="advisory lock 4242001")]
    monkeypatch.setattr(migrations, "lock_holders", holders)
    module, conn = FakeModule(lock_wait_seconds=1), AdvisoryConn(busy=10 ** 6)
    start = time.monotonic()
    with pytest.raises(Failed) as failed:
        migrations.take_migrations_lock(module, conn, dict(applied=[]))
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 2.0
    assert str(failed.value) == ("another run holds the migrations lock (advisory lock 4242001): pid 4321 "
                                 "app=quantdb-ops; waited 1s (lock_wait_seconds); nothing applied")
    assert asked == [(migrations.LOCK_KEY, (99,))] and module.failed["applied"] == []
    # lock_wait_seconds=0: one try, no wait.
    conn = AdvisoryConn(busy=1)
    with pytest.raises(Failed):
        migrations.take_migrations_lock(FakeModule(lock_wait_seconds=0), conn, {})
    assert conn.tries == 1
