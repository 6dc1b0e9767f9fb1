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
    from psycopg import sql  # noqa: F401  (re-exported for modules)
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
        ssl_mode=dict(type="str", default="prefer",
                      choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
        connect_timeout=dict(type="int", default=10),
        application_name=dict(type="str", default="quantdb-ops"),
    )


def conninfo_kwargs(params):
    """libpq keyword arguments from module params; empty values fall back to libpq defaults."""
    kwargs = {
        "dbname": params["login_db"],
        "port": params["login_port"],
        "sslmode": params["ssl_mode"],
        "connect_timeout": params["connect_timeout"],
        "application_name": params["application_name"],
    }
    for key, param in (("host", "login_host"), ("user", "login_user"), ("password", "login_password")):
        if params.get(param):
            kwargs[key] = params[param]
    return kwargs


def connect(module, autocommit=False):
    """Open a psycopg connection or fail the module with a message that names the target."""
    if not HAS_PSYCOPG:
        module.fail_json(msg="the psycopg (3) Python package is required on the host running this module",
                         exception=PSYCOPG_IMPORT_ERROR)
    kwargs = conninfo_kwargs(module.params)
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        target = "%s:%s/%s" % (kwargs.get("host", "<socket>"), kwargs["port"], kwargs["dbname"])
        module.fail_json(msg="cannot connect to %s: %s" % (target, str(exc).strip()))


@contextlib.contextmanager
def transaction(module, conn, failure, result=None):
    """The body's work as one transaction on conn: committed, or rolled back in check mode so
    a module can do the real work and still report it truthfully. A database error rolls it
    back and fails the module with `failure: <error>` (and `result`). Closes conn."""
    try:
        yield
        if module.check_mode:
            conn.rollback()
        else:
            conn.commit()
    except psycopg.Error as exc:
        conn.rollback()
        module.fail_json(msg="%s: %s" % (failure, str(exc).strip()), **(result or {}))
    finally:
        conn.close()


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Stopwatch(object):
    """Elapsed wall time in milliseconds, for the timings modules return."""

    def __init__(self):
        self.start = time.monotonic()

    @property
    def ms(self):
        return round((time.monotonic() - self.start) * 1000.0, 1)
