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
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
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
