# -*- coding: utf-8 -*-
"""The libpq connection options every quantdb-ops database module takes, documented once
(module_utils/quantdb_pg.py connection_argument_spec() is their argument_spec)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_db:
    description:
      - Database to connect to.
    type: str
    required: true
    aliases: [db, dbname]
  login_host:
    description:
      - Host name, IP address or unix socket directory of the server (for example
        C(/var/run/postgresql)). Empty means libpq's default (C(PGHOST), else the local socket).
    type: str
    default: ""
    aliases: [host]
  login_port:
    description:
      - Server port.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - Role to connect as. Empty means libpq's default (C(PGUSER), else the OS user the module
        runs as, for example C(postgres) with C(become_user=postgres)).
    type: str
    default: ""
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Never logged. Empty means libpq's default (C(PGPASSWORD),
        C(~/.pgpass), or no password for peer authentication on the local socket).
    type: str
    default: ""
    aliases: [password]
  ssl_mode:
    description:
      - libpq C(sslmode) of the connection.
      - Unset means C(verify-full) when O(login_host) is a remote host (the server certificate
        must be signed by O(ssl_rootcert) and name the host), and C(prefer) on a unix socket or
        loopback (C(localhost), C(127.0.0.1), C(::1)).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ssl_rootcert:
    description:
      - CA certificate file (PEM) that verifies the server with C(verify-ca) or C(verify-full)
        (libpq C(sslrootcert); C(system) for the system store). Empty means libpq's default,
        C(~/.postgresql/root.crt).
    type: str
    default: ""
  lock_timeout:
    description:
      - C(lock_timeout) of the module's session (a PostgreSQL duration such as C(10s); C(0)
        waits for ever). A statement that cannot get its lock in time fails the module, naming
        the lock timeout, instead of queueing the application's queries behind it.
    type: str
    default: 10s
  connect_timeout:
    description:
      - Seconds to wait for the connection before failing.
    type: int
    default: 10
  application_name:
    description:
      - C(application_name) the session reports in pg_stat_activity.
    type: str
    default: quantdb-ops
requirements:
  - psycopg (3) on the host the module runs on.
"""
