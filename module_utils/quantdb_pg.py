# -*- coding: utf-8 -*-
"""Connection plumbing shared by every quantdb-ops module.

Modules connect with ordinary libpq parameters (host, port, dbname, user, password,
sslmode), so the same module runs on a provisioned host over its unix socket as
postgres, or from the controller against any PostgreSQL, such as a Homebrew install.
One driver generation only: psycopg 3.
"""
from __future__ import absolute_import, division, print_function

import contextlib
import hashlib
import time
import traceback

__metaclass__ = type

try:
    import psycopg
    # sql is re-exported for the modules.
    from psycopg import sql  # noqa: F401  pylint: disable=unused-import
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through fail_json
    psycopg = None
    sql = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()


def connection_argument_spec():
    """libpq connection options merged into every module's argument_spec."""
    return dict(
        login_host=dict(type="str", default="", aliases=["host"]),
        login_port=dict(type="int", default=5432, aliases=["port"]),
        login_user=dict(type="str", default="", aliases=["user"]),
        login_password=dict(type="str", default="", no_log=True, aliases=["password"]),
        login_db=dict(type="str", required=True, aliases=["db", "dbname"]),
        # None: verify-full for a remote host, prefer on a socket or loopback (resolve_ssl_mode).
        ssl_mode=dict(type="str", default=None,
                      choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
        ssl_rootcert=dict(type="str", default=""),
        lock_timeout=dict(type="str", default="10s"),
        connect_timeout=dict(type="int", default=10),
        application_name=dict(type="str", default="quantdb-ops"),
    )


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_remote_host(host):
    """Whether libpq would reach `host` over a network: not a socket directory, not loopback.
    A comma-separated list counts as remote if any of its hosts is."""
    hosts = [h.strip() for h in (host or "").split(",") if h.strip()]
    return any(not h.startswith("/") and not h.startswith("@") and h.lower() not in LOOPBACK_HOSTS
               for h in hosts)


def resolve_ssl_mode(params):
    """The sslmode a connection uses: the one given, else verify-full for a remote host (the
    server's certificate is checked against ssl_rootcert, so a stolen address or a man in the
    middle is refused) and prefer on a unix socket or loopback, where TLS protects nothing
    (and a local install such as Homebrew's usually has no certificate)."""
    if params.get("ssl_mode"):
        return params["ssl_mode"]
    return "verify-full" if is_remote_host(params.get("login_host")) else "prefer"


def conninfo_kwargs(params):
    """libpq keyword arguments from module params; empty values fall back to libpq defaults."""
    kwargs = {
        "dbname": params["login_db"],
        "port": params["login_port"],
        "sslmode": resolve_ssl_mode(params),
        "connect_timeout": params["connect_timeout"],
        "application_name": params["application_name"],
    }
    for key, param in (("host", "login_host"), ("user", "login_user"), ("password", "login_password"),
                       ("sslrootcert", "ssl_rootcert")):
        if params.get(param):
            kwargs[key] = params[param]
    return kwargs


def connect(module, autocommit=False):
    """Open a psycopg connection or fail the module with a message that names the target."""
    if not HAS_PSYCOPG:
        module.fail_json(msg="the psycopg (3) Python package is required on the host running this module",
                         exception=PSYCOPG_IMPORT_ERROR)
    kwargs = conninfo_kwargs(module.params)
    target = "%s:%s/%s" % (kwargs.get("host", "<socket>"), kwargs["port"], kwargs["dbname"])
    try:
        conn = psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        module.fail_json(msg="cannot connect to %s (sslmode=%s): %s" % (target, kwargs["sslmode"], str(exc).strip()))
    # Every session waits at most lock_timeout for a lock: a module fails clearly instead of
    # queueing the application's traffic behind its own lock request.
    lock_timeout = module.params.get("lock_timeout")
    if lock_timeout:
        try:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
            if not autocommit:
                conn.commit()
        except psycopg.Error as exc:
            quiet_close(conn)
            module.fail_json(msg="lock_timeout=%r is not a PostgreSQL duration: %s" % (lock_timeout, str(exc).strip()))
    return conn


def connection_lost(conn, exc):
    """Whether exc means the server connection is gone (so the transaction is gone with it)."""
    return bool(conn.broken or conn.closed
                or isinstance(exc, (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown)))


def quiet_rollback(conn):
    """Roll back if the connection still can; a lost connection has rolled back already."""
    try:
        if not conn.closed:
            conn.rollback()
    except psycopg.Error:
        pass


def quiet_close(conn):
    try:
        conn.close()
    except psycopg.Error:
        pass


def database_failure(prefix):
    """The default failure message of transaction(): `<prefix>: <error>`."""
    def message(exc, lost=False, committing=False):  # pylint: disable=unused-argument
        return "%s: %s" % (prefix, str(exc).strip())
    return message


@contextlib.contextmanager
def transaction(module, conn, failure, result=None, refusals=None, on_rollback=None, after_commit=None):
    """The body's work as one transaction on conn: committed, or rolled back in check mode so
    a module can do the real work and still report it truthfully. Closes conn.

    A failure rolls everything back and fails the module with `result`, from outside any except
    block (a refusal reads as a message, never as a traceback):
      - a database error: `failure` is either a prefix (the message is `<failure>: <error>`)
        or a function (exc, lost, committing) -> message, where lost says the connection is
        gone and committing that the error came from the COMMIT itself (with lost, whether
        the work was committed is unknown);
      - refusals: {exception class: function(exc) -> message} for the module's own errors
        raised in the body, such as input that cannot be parsed;
      - on_rollback(result), when given, runs first when nothing was committed (say, to zero the
        counts of what was not written); not after a connection lost during COMMIT, whose
        outcome is unknown.
    after_commit(conn), when given, runs after a real commit (never in check mode) on the same
    connection in autocommit mode, say for ANALYZE: the work is committed by then, so a database
    error it does not handle itself becomes a warning, not a failure.
    Anything else raised in the body (exit_json, fail_json, a bug) passes through; the
    connection is closed, which rolls back what was not committed."""
    refusals = refusals or {}
    describe = failure if callable(failure) else database_failure(failure)
    message = None
    committing = unknown = False
    try:
        try:
            yield
            if module.check_mode:
                conn.rollback()
            else:
                committing = True
                conn.commit()
                committing = False
        except tuple(refusals) as exc:
            message = [fmt(exc) for cls, fmt in refusals.items() if isinstance(exc, cls)][0]
        except psycopg.Error as exc:
            lost = connection_lost(conn, exc)
            unknown = committing and lost
            message = describe(exc, lost=lost, committing=committing)
        if message is None and after_commit is not None and not module.check_mode:
            try:
                conn.autocommit = True
                after_commit(conn)
            except psycopg.Error as exc:
                warning = "committed; then failed: %s" % str(exc).strip()
            else:
                warning = None
            if warning:
                module.warn(warning)
        if message is not None:
            quiet_rollback(conn)
    finally:
        quiet_close(conn)
    if message is not None:
        if on_rollback is not None and not unknown:
            on_rollback(result)
        module.fail_json(msg=message, **(result or {}))


# Waiting for a lock: every session has a lock_timeout (connect()), so a statement that cannot
# get its lock fails with LockNotAvailable (SQLSTATE 55P03) instead of queueing; these name
# the timeout and, read on a second connection, who holds (or queues ahead for) the lock.

# PostgreSQL's table lock modes as pg_locks names them, weakest first, and the modes each one
# conflicts with (the documentation's "Conflicting Lock Modes" table).
LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
              "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
LOCK_CONFLICTS = {
    "AccessShareLock": LOCK_MODES[7:],
    "RowShareLock": LOCK_MODES[6:],
    "RowExclusiveLock": LOCK_MODES[4:],
    "ShareUpdateExclusiveLock": LOCK_MODES[3:],
    "ShareLock": LOCK_MODES[2:4] + LOCK_MODES[5:],
    "ShareRowExclusiveLock": LOCK_MODES[2:],
    "ExclusiveLock": LOCK_MODES[1:],
    "AccessExclusiveLock": LOCK_MODES,
}
FIRST_NORMAL_OID = 16384   # relations below it are the system catalogs'

# Granted or queued locks of other sessions that conflict with the wanted mode: on the given
# relations, on the advisory lock given, or, with neither, on any user relation of this
# database. The strongest first; a session's chunk locks after its hypertable's.
LOCK_HOLDERS = """
SELECT l.pid, coalesce(a.application_name, ''), l.mode, l.granted,
       CASE WHEN l.locktype = 'relation' THEN coalesce(r.name, l.relation::text)
            ELSE 'advisory lock ' || ((l.classid::bigint << 32) | l.objid::bigint) END
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
LEFT JOIN LATERAL (SELECT format('%%I.%%I', n.nspname, c.relname) AS name, n.nspname = '_timescaledb_internal' AS chunk
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = l.relation) r ON true
WHERE l.pid <> pg_backend_pid() AND l.pid <> ALL(%(exclude)s::int[]) AND l.mode = ANY(%(modes)s::text[])
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND CASE WHEN %(key)s::bigint IS NOT NULL
           THEN l.locktype = 'advisory' AND l.objsubid = 1
                AND ((l.classid::bigint << 32) | l.objid::bigint) = %(key)s::bigint
           WHEN cardinality(%(relations)s::text[]) > 0
           THEN l.locktype = 'relation'
                AND l.relation IN (SELECT to_regclass(x)::oid FROM unnest(%(relations)s::text[]) x)
           ELSE l.locktype = 'relation' AND l.relation::oid >= %(first_oid)s END
ORDER BY l.granted DESC, array_position(%(order)s::text[], l.mode::text) DESC, r.chunk, l.pid
LIMIT 200"""


def is_lock_timeout(exc):
    """Whether exc is PostgreSQL's LockNotAvailable (55P03): lock_timeout expired, or NOWAIT."""
    return bool(HAS_PSYCOPG and isinstance(exc, psycopg.errors.LockNotAvailable))


def lock_holders(module, relations=(), mode=None, advisory_key=None, exclude_pids=()):
    """Sessions holding (or queued ahead for) a lock conflicting with `mode` (any mode when
    None) on `relations`, or on the advisory lock `advisory_key`: dicts of pid,
    application_name, mode, granted and relation, one per session, strongest lock first.
    Read on a second, short connection made with the module's parameters; [] when they
    cannot be read (the lock is gone, or the connection is refused)."""
    if not HAS_PSYCOPG:
        return []
    modes = list(LOCK_CONFLICTS.get(mode, LOCK_MODES)) if mode else list(LOCK_MODES)
    kwargs = conninfo_kwargs(module.params)
    kwargs["application_name"] = (kwargs["application_name"] + " lock probe")[:63]
    kwargs["connect_timeout"] = min(int(kwargs["connect_timeout"] or 5), 5)
    try:
        with psycopg.connect(autocommit=True, **kwargs) as probe:
            probe.execute("SELECT set_config('statement_timeout', '5s', false)")
            rows = probe.execute(LOCK_HOLDERS, dict(
                exclude=[int(p) for p in exclude_pids if p], modes=modes, key=advisory_key,
                relations=list(relations or []), first_oid=FIRST_NORMAL_OID, order=list(LOCK_MODES))).fetchall()
    except psycopg.Error:
        return []
    holders, seen = [], set()
    for pid, app, lock_mode, granted, relation in rows:
        if pid in seen:
            continue
        seen.add(pid)
        holders.append(dict(pid=pid, application_name=app, mode=lock_mode, granted=granted, relation=relation))
    return holders


def lock_timeout_message(lock_timeout, holders, target=None, outcome="nothing written"):
    """The message of a lock that was not granted in time, e.g. "could not lock
    public.ohlcv_data within lock_timeout=10s (held by pid 123 app=psql AccessExclusiveLock);
    nothing written". `target` is what was to be locked when known (else the holders'
    relations); a holder on another relation is named with it, a queued one as waiting."""
    named = sorted(set(h["relation"] for h in holders)) if not target else None
    what = target or (", ".join(named) if named else None)
    parts = []
    for holder in holders[:3]:
        text = "pid %s app=%s %s" % (holder["pid"], holder.get("application_name") or "?", holder["mode"])
        if holder.get("relation") and what and holder["relation"] != what and (target or len(named) > 1):
            text += " on %s" % holder["relation"]
        if not holder.get("granted", True):
            text += " (waiting, ahead in the queue)"
        parts.append(text)
    if len(holders) > 3:
        parts.append("%d more" % (len(holders) - 3))
    why = ("held by " + ", ".join(parts)) if parts else "the holder could not be identified: it has gone since, or it is a row lock"
    subject = ("could not lock " + what) if what else "could not get a lock"
    message = "%s within lock_timeout=%s (%s)" % (subject, lock_timeout or "0", why)
    return "%s; %s" % (message, outcome) if outcome else message


def lock_failure(module, relations=(), mode=None, target=None, outcome="nothing written", exclude_pids=()):
    """lock_timeout_message() with the holders read now (lock_holders())."""
    holders = lock_holders(module, relations, mode, exclude_pids=exclude_pids)
    if target is None and len(relations or ()) == 1:
        target = relations[0]
    return lock_timeout_message(module.params.get("lock_timeout"), holders, target, outcome)


def backend_pid(conn):
    """The server pid of conn's session (None when it cannot be read)."""
    try:
        return conn.info.backend_pid
    except Exception:  # pylint: disable=broad-except
        return None


def lock_aware(module, failure, conn=None, relations=(), mode=None, prefix=None, outcome="nothing written"):
    """A transaction() `failure` that names the lock timeout and the lock's holders when a
    statement was refused its lock (is_lock_timeout), and is `failure` otherwise. `prefix`,
    when given, starts the lock message (say, the file name)."""
    describe = failure if callable(failure) else database_failure(failure)
    own_pid = backend_pid(conn) if conn is not None else None

    def message(exc, lost=False, committing=False):
        if is_lock_timeout(exc) and not lost:
            text = lock_failure(module, relations, mode, outcome=outcome, exclude_pids=[own_pid])
            return "%s: %s" % (prefix, text) if prefix else text
        return describe(exc, lost=lost, committing=committing)
    return message


def statement_text(conn, query):
    """A statement as it reads in `queries`: composed SQL rendered, each line stripped."""
    if hasattr(query, "as_string"):
        query = query.as_string(conn)
    elif isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    return " ".join(line.strip() for line in query.strip().splitlines() if line.strip())


def record_queries(conn, log=None):
    """From now on, every statement a cursor of conn (or conn.execute) runs is appended to log
    (a new list unless given) as statement_text(): the `queries` a module returns, as
    community.postgresql modules do. Statements only, parameters are not shown."""
    log = [] if log is None else log
    base = conn.cursor_factory

    class RecordingCursor(base):  # pylint: disable=too-few-public-methods
        def execute(self, query, params=None, **kwargs):
            log.append(statement_text(conn, query))
            return super(RecordingCursor, self).execute(query, params, **kwargs)

        def executemany(self, query, params_seq, **kwargs):
            log.append(statement_text(conn, query))
            return super(RecordingCursor, self).executemany(query, params_seq, **kwargs)

        def copy(self, statement, params=None, **kwargs):
            log.append(statement_text(conn, statement))
            return super(RecordingCursor, self).copy(statement, params, **kwargs)

    conn.cursor_factory = RecordingCursor
    return log


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Stopwatch(object):
    """Elapsed wall time in milliseconds, for the timings modules return."""

    def __init__(self):
        self.start = time.monotonic()

    @property
    def ms(self):
        return round((time.monotonic() - self.start) * 1000.0, 1)
