#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_security_audit
short_description: Audit a PostgreSQL cluster's roles, pg_hba rules, privileges, SSL and extensions
description:
  - Reads the catalogs and returns findings, each with a stable C(id) (C(<check>:<subject>), for
    example C(superuser:alice) or C(hba_trust:host/all/all/0.0.0.0/0)), a severity (C(critical),
    C(warning) or C(info)) and a message. Changes nothing, so it always reports C(changed=false)
    and runs in check mode too.
  - Checks are superusers beyond O(allowed_superusers); login roles without a password expiry
    (C(rolvaliduntil) NULL or infinity), whose password expires within O(expiry_warning_days) of
    O(as_of) or has expired, and roles whose password is stored as MD5; pg_hba rules
    (C(pg_hba_file_rules)) with C(trust), C(password), C(md5), an open address (C(all),
    C(0.0.0.0/0), C(::/0)) or a prefix shorter than O(min_prefix_ipv4) / O(min_prefix_ipv6), and
    rules the server could not parse; CREATE on schema C(public) for PUBLIC or any role but its
    owner; tables of O(rls_required_tables) without row level security; C(ssl) off; extensions
    not in O(allowed_extensions); default privileges (C(pg_default_acl)), write privileges granted
    to PUBLIC by default being a warning.
  - Findings whose id is in O(accepted) are returned with C(accepted=true) and severity C(info),
    so a reviewed exception stops failing the play without disappearing from the report.
  - Needs a superuser connection (C(pg_authid), C(pg_hba_file_rules)).
options:
  allowed_superusers:
    description:
      - Roles allowed to be superuser. Any other superuser is a C(critical) finding.
    type: list
    elements: str
    default: [postgres]
  expiry_exempt:
    description:
      - Login roles not required to have a password expiry (for example C(postgres), which logs
        in over the local socket by peer authentication).
    type: list
    elements: str
    default: [postgres]
  min_prefix_ipv4:
    description:
      - An IPv4 rule whose prefix is shorter than this (a wider network) is a C(warning).
    type: int
    default: 16
  min_prefix_ipv6:
    description:
      - An IPv6 rule whose prefix is shorter than this is a C(warning).
    type: int
    default: 48
  rls_required_tables:
    description:
      - Tables that must have row level security enabled, as C(schema.table) or C(table) (schema
        C(public)). A listed table without it is C(critical); a listed table that does not exist
        is a C(warning).
    type: list
    elements: str
    default: []
  allowed_extensions:
    description:
      - Extensions allowed in the database. Any other installed extension is a C(warning).
    type: list
    elements: str
    default: [plpgsql, timescaledb, pg_cron, pg_prewarm, pg_stat_statements, amcheck, pgcrypto, pgaudit]
  ssl_required:
    description:
      - When true, C(ssl=off) is C(critical); otherwise a C(warning).
    type: bool
    default: false
  as_of:
    description:
      - Day (C(YYYY-MM-DD)) password expiries are judged on. Empty means the server's C(current_date).
    type: str
    default: ""
  expiry_warning_days:
    description:
      - A login role whose password expires within this many days of O(as_of) is a C(warning)
        (C(password_expiring)); one already expired is C(critical) (C(password_expired)).
    type: int
    default: 14
  accepted:
    description:
      - Finding ids reviewed and accepted; they are reported with severity C(info) and C(accepted=true).
    type: list
    elements: str
    default: []
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Audit the cluster's security settings
  pg_security_audit:
    login_db: quant_platform
    login_host: /var/run/postgresql
    rls_required_tables: [public.tickers]
    accepted: ["password_no_expiry:quant_monitor"]
  become: true
  become_user: postgres
  register: security
"""

RETURN = r"""
findings:
  description: Every finding, most severe first, then by id.
  returned: always
  type: list
  elements: dict
  sample:
    - {id: "hba_trust:host/all/all/0.0.0.0/0", check: hba_trust, severity: critical, accepted: false,
       message: "pg_hba.conf line 12: host all all 0.0.0.0/0 trust: no password asked"}
counts:
  description: Findings per severity (accepted ones count as info).
  returned: always
  type: dict
  sample: {critical: 1, warning: 3, info: 2}
critical:
  description: Ids of the critical findings.
  returned: always
  type: list
  elements: str
  sample: ["superuser:intruder"]
checks:
  description: The checks run, each with the number of findings it produced.
  returned: always
  type: dict
  sample: {superuser: 1, password_no_expiry: 2, hba_trust: 0}
server_version:
  description: The server's version (C(server_version)).
  returned: always
  type: str
  sample: "17.6 (Debian 17.6-0+deb13u1)"
queries:
  description: The statements run, in order.
  returned: always
  type: list
  elements: str
  sample: ["SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY 1"]
"""

import ipaddress

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_pg import connect, connection_argument_spec, psycopg, record_queries

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
CHECKS = ["superuser", "password_no_expiry", "password_md5", "hba_trust", "hba_password", "hba_md5",
          "hba_open_address", "hba_wide_cidr", "hba_error", "public_schema_create", "rls_missing",
          "rls_table_missing", "ssl_off", "extension_not_allowed", "default_privileges", "default_privileges_public",
          "password_expiring", "password_expired"]
WRITE_PRIVILEGES = {"INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "CREATE", "USAGE"}
DEFACL_TYPES = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}


def prefix_of(address, netmask):
    """(version, prefix length) of a pg_hba address with an optional netmask; None for names."""
    try:
        if "/" in address:
            net = ipaddress.ip_network(address, strict=False)
            return net.version, net.prefixlen
        ip = ipaddress.ip_address(address)
        if netmask:
            net = ipaddress.ip_network("%s/%s" % (address, netmask), strict=False)
            return net.version, net.prefixlen
        return ip.version, ip.max_prefixlen
    except ValueError:
        return None


def hba_findings(rules, min4, min6):
    """Findings (check, subject, severity, message) for the rows of pg_hba_file_rules."""
    out = []
    for line, rtype, databases, users, address, netmask, method, error in rules:
        where = "pg_hba.conf line %s" % line
        if error:
            out.append(("hba_error", "line%s" % line, "warning", "%s: %s" % (where, error)))
            continue
        dbs = ",".join(databases or [])
        usrs = ",".join(users or [])
        addr = address or ""
        if netmask and addr and "/" not in addr:
            found = prefix_of(addr, netmask)
            addr = "%s/%s" % (addr, found[1]) if found else addr
        subject = "/".join(x for x in (rtype, dbs, usrs, addr) if x)
        text = "%s: %s %s %s %s %s" % (where, rtype, dbs, usrs, addr, method)
        text = " ".join(text.split())
        if method == "trust":
            out.append(("hba_trust", subject, "critical", text + ": no password asked"))
        elif method == "password":
            sev = "warning" if rtype == "hostssl" else "critical"
            out.append(("hba_password", subject, sev, text + ": the password travels in clear text"))
        elif method == "md5":
            out.append(("hba_md5", subject, "warning", text + ": md5 (use scram-sha-256)"))
        if rtype == "local" or method == "reject" or not address:
            continue
        if address in ("all", "0.0.0.0/0", "::/0") or (prefix_of(addr, None) or (0, 1))[1] == 0:
            out.append(("hba_open_address", subject, "warning", text + ": open to any address"))
            continue
        found = prefix_of(addr, None)
        if found:
            version, prefix = found
            minimum = min4 if version == 4 else min6
            if prefix < minimum:
                out.append(("hba_wide_cidr", subject, "warning",
                            "%s: /%d is wider than /%d" % (text, prefix, minimum)))
    return out


def rls_targets(names):
    """(schema, table) pairs of rls_required_tables entries."""
    out = []
    for name in names:
        parts = name.rsplit(".", 1)
        out.append((parts[0], parts[1]) if len(parts) == 2 else ("public", name))
    return out


def audit(cur, params):
    findings = []
    cur.execute("SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY 1")
    for (role,) in cur.fetchall():
        if role not in params["allowed_superusers"]:
            findings.append(("superuser", role, "critical", "role %s is a superuser" % role))

    cur.execute("""SELECT rolname, rolvaliduntil IS NULL OR rolvaliduntil = 'infinity',
                          coalesce(rolpassword LIKE 'md5%%', false),
                          CASE WHEN rolvaliduntil NOT IN ('infinity', '-infinity')
                               THEN rolvaliduntil::date - coalesce(%(as_of)s::date, current_date) END,
                          rolvaliduntil::date::text
                   FROM pg_authid WHERE rolcanlogin ORDER BY 1""", dict(as_of=params["as_of"] or None))
    for role, no_expiry, md5, days_left, until in cur.fetchall():
        if no_expiry and role not in params["expiry_exempt"]:
            findings.append(("password_no_expiry", role, "warning",
                             "login role %s has no password expiry (VALID UNTIL)" % role))
        if days_left is not None and days_left < 0:
            findings.append(("password_expired", role, "critical",
                             "the password of login role %s expired on %s: it cannot log in" % (role, until)))
        elif days_left is not None and days_left <= params["expiry_warning_days"]:
            findings.append(("password_expiring", role, "warning",
                             "the password of login role %s expires on %s, in %d days" % (role, until, days_left)))
        if md5:
            findings.append(("password_md5", role, "warning",
                             "role %s has an MD5 password hash (reset it under scram-sha-256)" % role))

    cur.execute("""SELECT line_number, type, database, user_name, address, netmask, auth_method, error
                   FROM pg_hba_file_rules ORDER BY line_number""")
    findings.extend(hba_findings(cur.fetchall(), params["min_prefix_ipv4"], params["min_prefix_ipv6"]))

    cur.execute("""SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                   FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                   WHERE n.nspname = 'public' AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
                   ORDER BY 1""")
    for (grantee,) in cur.fetchall():
        sev = "critical" if grantee == "PUBLIC" else "warning"
        findings.append(("public_schema_create", grantee, sev,
                         "%s may CREATE in schema public" % grantee))

    for schema, table in rls_targets(params["rls_required_tables"]):
        cur.execute("""SELECT c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')""", (schema, table))
        row = cur.fetchone()
        name = "%s.%s" % (schema, table)
        if row is None:
            findings.append(("rls_table_missing", name, "warning",
                             "table %s must have row level security but does not exist" % name))
        elif not row[0]:
            findings.append(("rls_missing", name, "critical",
                             "table %s has no row level security (ALTER TABLE ... ENABLE ROW LEVEL SECURITY)" % name))

    cur.execute("SELECT current_setting('ssl'), current_setting('server_version')")
    ssl, version = cur.fetchone()
    if ssl != "on":
        findings.append(("ssl_off", "server", "critical" if params["ssl_required"] else "warning",
                         "ssl is off: passwords and data travel in clear text over TCP"))

    cur.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1")
    for name, ext_version in cur.fetchall():
        if name not in params["allowed_extensions"]:
            findings.append(("extension_not_allowed", name, "warning",
                             "extension %s %s is installed but not in the allowed list" % (name, ext_version)))

    cur.execute("""SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype,
                          CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                          string_agg(a.privilege_type, ',' ORDER BY a.privilege_type)
                   FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
                        aclexplode(d.defaclacl) a
                   GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""")
    for owner, schema, objtype, grantee, privileges in cur.fetchall():
        kind = DEFACL_TYPES.get(objtype, objtype)
        subject = "%s/%s/%s/%s" % (owner, schema or "*", kind, grantee)
        text = "objects %s creates in %s (%s): %s get %s" % (
            owner, ("schema " + schema) if schema else "any schema", kind, grantee, privileges)
        writes = set(privileges.split(",")) & WRITE_PRIVILEGES
        if grantee == "PUBLIC" and writes and objtype in ("r", "n"):
            findings.append(("default_privileges_public", subject, "warning", text + " (write privileges to PUBLIC)"))
        else:
            findings.append(("default_privileges", subject, "info", text))
    return findings, version


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        allowed_superusers=dict(type="list", elements="str", default=["postgres"]),
        expiry_exempt=dict(type="list", elements="str", default=["postgres"]),
        min_prefix_ipv4=dict(type="int", default=16),
        min_prefix_ipv6=dict(type="int", default=48),
        rls_required_tables=dict(type="list", elements="str", default=[]),
        allowed_extensions=dict(type="list", elements="str",
                                default=["plpgsql", "timescaledb", "pg_cron", "pg_prewarm", "pg_stat_statements",
                                         "amcheck", "pgcrypto", "pgaudit"]),
        ssl_required=dict(type="bool", default=False),
        as_of=dict(type="str", default=""),
        expiry_warning_days=dict(type="int", default=14),
        accepted=dict(type="list", elements="str", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result = dict(changed=False, findings=[], counts={"critical": 0, "warning": 0, "info": 0}, critical=[],
                  checks=dict((c, 0) for c in CHECKS), server_version="", queries=[])
    conn = connect(module, autocommit=True)
    record_queries(conn, result["queries"])
    try:
        with conn.cursor() as cur:
            raw, result["server_version"] = audit(cur, module.params)
    except psycopg.Error as exc:
        conn.close()
        module.fail_json(msg="security audit failed: %s" % str(exc).strip(), **result)
    conn.close()
    accepted = set(module.params["accepted"])
    for check, subject, severity, message in raw:
        fid = "%s:%s" % (check, subject)
        is_accepted = fid in accepted
        result["findings"].append(dict(id=fid, check=check, severity="info" if is_accepted else severity,
                                       accepted=is_accepted, message=message))
        result["checks"][check] += 1
    result["findings"].sort(key=lambda f: (SEVERITY_ORDER[f["severity"]], f["id"]))
    for finding in result["findings"]:
        result["counts"][finding["severity"]] += 1
        if finding["severity"] == "critical":
            result["critical"].append(finding["id"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
