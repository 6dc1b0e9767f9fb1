#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: exchange_sessions
short_description: Make exchange_sessions equal a session calendar file within each exchange's window
description:
  - Loads a CSV C(exchange,session) (as written by the module C(exchange_calendar_sessions)) and,
    for each entry of O(calendars), makes C(public.exchange_sessions) hold exactly the file's
    sessions of that exchange between its C(start) and C(end) (both included) - missing sessions
    are inserted, sessions the file does not have are deleted (a calendar corrected upstream,
    e.g. a holiday declared late). Sessions outside the window, and exchanges not in
    O(calendars), are left alone.
  - Upserts the exchange's row of C(public.exchanges) (timezone, synced_from, synced_to, source)
    and sets its C(synced_at) to now() only when something about that exchange changed
    (sessions added or removed, or one of those values).
  - Set-based, in one transaction - the file is COPYed into a temporary table, checked, and
    applied with one DELETE, one INSERT and one upsert. C(changed) is true when any session
    was added or removed or any exchanges row changed, so a re-run with the same inputs reports
    C(changed=false).
  - Bad input fails the module before anything is written, naming the option, or the file and
    line - a header other than C(exchange,session), a session not an ISO date (C(YYYY-MM-DD)),
    an empty exchange, an exchange not in O(calendars), a session outside its exchange's
    window, a repeated row, a window whose start is after its end, a repeated exchange in
    O(calendars), a time zone PostgreSQL does not know. A lock on C(exchange_sessions) or
    C(exchanges) not granted within O(lock_timeout) fails it too, naming the session holding it.
  - Check mode does all the work and rolls back, so it reports the exact counts and writes
    nothing. With C(--diff) the exchanges rows and up to ten added and removed sessions per
    exchange are shown.
options:
  src:
    description:
      - CSV C(exchange,session) with that header, plain or gzip, on the host running the module.
    type: path
    required: true
  calendars:
    description:
      - The exchanges to synchronise, one entry per exchange, each with the window the file covers.
    type: list
    elements: dict
    required: true
    suboptions:
      exchange:
        description:
          - Exchange code (MIC) as in the file and in tickers.exchange.
        type: str
        required: true
      timezone:
        description:
          - IANA time zone of the exchange, e.g. C(Asia/Seoul); must be known to PostgreSQL.
        type: str
        required: true
      start:
        description:
          - First date of the window, ISO C(YYYY-MM-DD).
        type: str
        required: true
      end:
        description:
          - Last date of the window, ISO C(YYYY-MM-DD), not earlier than C(start).
        type: str
        required: true
      source:
        description:
          - Where the sessions come from, recorded in exchanges.source, e.g. C(exchange_calendars 4.13.2).
        type: str
notes:
  - Needs the tables exchange_sessions and exchanges (schema migrations 0006 and 0007) and
    PostgreSQL 16 or later (pg_input_is_valid).
  - What check mode costs. The sync runs in its transaction and is rolled back, so the counts are
    exact; it holds the row locks of the sessions it would change until then (a second or less
    for two exchanges over 35 years).
extends_documentation_fragment: [quantdb_pg]
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Synchronise the XKRX and XNYS calendars
  exchange_sessions:
    login_db: quant_platform
    login_host: /var/run/postgresql
    src: /var/tmp/quantdb-ops/calendars/sessions.csv
    calendars:
      - exchange: XKRX
        timezone: Asia/Seoul
        start: "1990-01-01"
        end: "2027-11-28"
        source: exchange_calendars 4.13.2
      - exchange: XNYS
        timezone: America/New_York
        start: "1990-01-01"
        end: "2027-11-28"
        source: exchange_calendars 4.13.2
  become: true
  become_user: postgres
  register: sessions_sync
"""

RETURN = r"""
queries:
  description: The statements that write (delete corrected sessions, insert missing ones, upsert exchanges), for C(-v).
  returned: always
  type: list
  sample: ["DELETE FROM public.exchange_sessions s USING qdb_windows w ...", "INSERT INTO public.exchange_sessions ..."]
exchanges:
  description:
    - Per exchange, C(added) and C(removed) sessions (that would be, in check mode), C(sessions)
      in the window after the sync, C(stored) sessions of the exchange in the table altogether,
      C(metadata_changed) whether its exchanges row was inserted or updated, and up to ten
      C(added_sample) and C(removed_sample) dates.
  returned: always
  type: dict
  sample:
    XKRX:
      added: 1
      removed: 1
      sessions: 9328
      stored: 9328
      metadata_changed: true
      added_sample: ["2024-10-01"]
      removed_sample: ["2024-10-05"]
totals:
  description: Sums of added, removed and sessions over the exchanges.
  returned: always
  type: dict
  sample:
    added: 18873
    removed: 0
    sessions: 18873
rows_read:
  description: Data rows in the file.
  returned: always
  type: int
  sample: 18873
seconds:
  description: Wall time of the sync.
  returned: always
  type: float
  sample: 0.41
"""

import os
import re
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantdb_files import copy_file, read_header
from ansible.module_utils.quantdb_pg import Stopwatch, connect, connection_argument_spec, lock_aware, psycopg, transaction

COLUMNS = ["exchange", "session"]
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
SAMPLES = 10

STAGE = """
CREATE TEMP TABLE qdb_cal_text (
    line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2), exchange text, session text) ON COMMIT DROP;
CREATE TEMP TABLE qdb_windows (
    exchange text PRIMARY KEY, timezone text NOT NULL, lo date NOT NULL, hi date NOT NULL, source text) ON COMMIT DROP"""
COPY = "COPY qdb_cal_text (exchange, session) FROM STDIN WITH (FORMAT csv, HEADER true)"

# The first bad rows of the file, in line order, with the reason.
BAD_ROWS = """
WITH checked AS (
    SELECT t.line, t.exchange, t.session,
           CASE WHEN coalesce(t.exchange, '') = '' THEN 'no exchange'
                WHEN coalesce(t.session, '') !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' OR NOT pg_input_is_valid(t.session, 'date')
                     THEN 'session is not an ISO date (YYYY-MM-DD)'
                WHEN w.exchange IS NULL THEN 'exchange not in the calendars option'
                WHEN t.session::date NOT BETWEEN w.lo AND w.hi THEN 'session outside the window ' || w.lo || '..' || w.hi
                WHEN row_number() OVER (PARTITION BY t.exchange, t.session ORDER BY t.line) > 1
                     THEN 'repeated row (first on line ' || min(t.line) OVER (PARTITION BY t.exchange, t.session) || ')'
           END AS reason
    FROM qdb_cal_text t LEFT JOIN qdb_windows w ON w.exchange = t.exchange)
SELECT line, coalesce(exchange, ''), coalesce(session, ''), reason, count(*) OVER () FROM checked
WHERE reason IS NOT NULL ORDER BY line LIMIT 5"""

TYPED = """
CREATE TEMP TABLE qdb_cal ON COMMIT DROP AS SELECT exchange, session::date AS session FROM qdb_cal_text;
ALTER TABLE qdb_cal ADD PRIMARY KEY (exchange, session);
ANALYZE qdb_cal"""

REMOVED = """
CREATE TEMP TABLE qdb_removed ON COMMIT DROP AS
WITH gone AS (
    DELETE FROM public.exchange_sessions s USING qdb_windows w
    WHERE s.exchange = w.exchange AND s.session BETWEEN w.lo AND w.hi
      AND NOT EXISTS (SELECT 1 FROM qdb_cal c WHERE c.exchange = s.exchange AND c.session = s.session)
    RETURNING s.exchange, s.session)
SELECT * FROM gone"""

ADDED = """
CREATE TEMP TABLE qdb_added ON COMMIT DROP AS
WITH new AS (
    INSERT INTO public.exchange_sessions (exchange, session)
    SELECT exchange, session FROM qdb_cal ORDER BY exchange, session
    ON CONFLICT (exchange, session) DO NOTHING
    RETURNING exchange, session)
SELECT * FROM new"""

# Per exchange: counts and samples of what changed, and the sessions now in the window.
PER_EXCHANGE = """
SELECT w.exchange,
       (SELECT count(*) FROM qdb_added a WHERE a.exchange = w.exchange),
       (SELECT count(*) FROM qdb_removed r WHERE r.exchange = w.exchange),
       (SELECT count(*) FROM qdb_cal c WHERE c.exchange = w.exchange),
       (SELECT count(*) FROM public.exchange_sessions s WHERE s.exchange = w.exchange),
       ARRAY(SELECT a.session::text FROM qdb_added a WHERE a.exchange = w.exchange ORDER BY a.session LIMIT %(n)s),
       ARRAY(SELECT r.session::text FROM qdb_removed r WHERE r.exchange = w.exchange ORDER BY r.session LIMIT %(n)s)
FROM qdb_windows w ORDER BY w.exchange"""

BEFORE = """
SELECT exchange, timezone, synced_from::text, synced_to::text, source, synced_at::text
FROM public.exchanges WHERE exchange = ANY(%s) ORDER BY exchange"""

# synced_at moves only for an exchange whose row differs or whose sessions changed.
UPSERT = """
INSERT INTO public.exchanges AS e (exchange, timezone, synced_from, synced_to, source, synced_at)
SELECT exchange, timezone, lo, hi, source, now() FROM qdb_windows
ON CONFLICT (exchange) DO UPDATE
   SET timezone = EXCLUDED.timezone, synced_from = EXCLUDED.synced_from, synced_to = EXCLUDED.synced_to,
       source = EXCLUDED.source, synced_at = EXCLUDED.synced_at
 WHERE (e.timezone, e.synced_from, e.synced_to, e.source)
       IS DISTINCT FROM (EXCLUDED.timezone, EXCLUDED.synced_from, EXCLUDED.synced_to, EXCLUDED.source)
    OR e.exchange = ANY(%s)
RETURNING e.exchange"""


def check_calendars(module):
    """Option-level checks; returns rows for qdb_windows."""
    rows, seen = [], set()
    for index, entry in enumerate(module.params["calendars"]):
        where = "calendars[%d]" % index
        code = (entry["exchange"] or "").strip()
        if not code:
            module.fail_json(msg="%s: exchange is empty" % where)
        where = "calendars[%d] (%s)" % (index, code)
        if code in seen:
            module.fail_json(msg="%s: exchange listed twice" % where)
        seen.add(code)
        dates = {}
        for key in ("start", "end"):
            value = entry[key]
            try:
                if not ISO_DATE.match(value):
                    raise ValueError
                dates[key] = datetime.strptime(value, "%Y-%m-%d").date()
            except ValueError:
                module.fail_json(msg="%s: %s '%s' is not an ISO date (YYYY-MM-DD)" % (where, key, value))
        if dates["start"] > dates["end"]:
            module.fail_json(msg="%s: start %s is later than end %s" % (where, entry["start"], entry["end"]))
        if not entry["timezone"]:
            module.fail_json(msg="%s: timezone is empty" % where)
        rows.append((code, entry["timezone"], dates["start"], dates["end"], entry["source"]))
    return rows


def diff_text(rows, per, samples):
    """--diff: the exchanges rows, then the sample sessions per exchange."""
    out = []
    for row in rows:
        out.append("%s timezone=%s synced=%s..%s source=%s" % row[:5])
    for code in sorted(per):
        for session in samples.get(code, []):
            out.append("%s %s" % (code, session))
        more = per[code] - len(samples.get(code, []))
        if more > 0:
            out.append("%s ... and %d more session(s)" % (code, more))
    return "\n".join(out) + ("\n" if out else "")


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        src=dict(type="path", required=True),
        calendars=dict(type="list", elements="dict", required=True, options=dict(
            exchange=dict(type="str", required=True),
            timezone=dict(type="str", required=True),
            start=dict(type="str", required=True),
            end=dict(type="str", required=True),
            source=dict(type="str"),
        )),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    src = module.params["src"]
    if not os.path.isfile(src):
        module.fail_json(msg="src: no such file %s" % src)
    header = read_header(src)
    if header != COLUMNS:
        module.fail_json(msg="%s line 1: header must be %s, got %s" % (src, ",".join(COLUMNS), ",".join(header)))
    windows = check_calendars(module)
    codes = [w[0] for w in windows]

    watch = Stopwatch()
    result = dict(changed=False, exchanges={}, totals=dict(added=0, removed=0, sessions=0), rows_read=0,
                  queries=[" ".join(q.split()) for q in (REMOVED, ADDED, UPSERT)])   # the writes, for -v
    conn = connect(module)
    failure = lock_aware(module, "%s: sync of exchange_sessions failed, nothing written" % src, conn,
                         ["public.exchange_sessions", "public.exchanges"], "RowExclusiveLock", prefix=src)
    with transaction(module, conn, failure, result):
        with conn.cursor() as cur:
            cur.execute("SELECT array_agg(tz) FROM unnest(%s::text[]) tz "
                        "WHERE NOT EXISTS (SELECT 1 FROM pg_timezone_names n WHERE n.name = tz)",
                        ([w[1] for w in windows],))
            bad_tz = cur.fetchone()[0]
            if bad_tz:
                module.fail_json(msg="calendars: time zone(s) unknown to PostgreSQL: %s" % ", ".join(sorted(set(bad_tz))))
            cur.execute(STAGE)
            cur.executemany("INSERT INTO qdb_windows VALUES (%s, %s, %s, %s, %s)", windows)
            try:
                copy_file(cur, COPY, src)
            except psycopg.Error as exc:  # e.g. a line with a third column: name it
                context = (exc.diag.context or "").replace("COPY qdb_cal_text, ", "")
                module.fail_json(msg="%s: cannot read as CSV, nothing written: %s%s" % (
                    src, exc.diag.message_primary or str(exc).strip(), " (%s)" % context.strip() if context else ""), **result)
            cur.execute("SELECT count(*) FROM qdb_cal_text")
            result["rows_read"] = cur.fetchone()[0]
            cur.execute(BAD_ROWS)
            bad = cur.fetchall()
            if bad:
                first = "; ".join("line %d (%s,%s): %s" % (line, exchange, session, reason)
                                  for line, exchange, session, reason, _total in bad)
                module.fail_json(msg="%s: %d bad row(s), nothing written: %s%s" % (
                    src, bad[0][4], first, "; ..." if bad[0][4] > len(bad) else ""), **result)

            cur.execute(BEFORE, (codes,))
            before = cur.fetchall()
            cur.execute(TYPED)
            cur.execute(REMOVED)
            cur.execute(ADDED)
            cur.execute(PER_EXCHANGE, dict(n=SAMPLES))
            per = cur.fetchall()
            touched = [row[0] for row in per if row[1] or row[2]]   # (code, added, removed, ...)
            cur.execute(UPSERT, (touched,))
            upserted = set(r[0] for r in cur.fetchall())
            cur.execute(BEFORE, (codes,))
            after = cur.fetchall()

        for code, added, removed, sessions, stored, added_sample, removed_sample in per:
            result["exchanges"][code] = dict(added=added, removed=removed, sessions=sessions, stored=stored,
                                             metadata_changed=code in upserted,
                                             added_sample=added_sample, removed_sample=removed_sample)
            for key, value in (("added", added), ("removed", removed), ("sessions", sessions)):
                result["totals"][key] += value
        result["changed"] = bool(result["totals"]["added"] or result["totals"]["removed"] or upserted)
        if module._diff:
            result["diff"] = dict(
                before=diff_text(before, dict((c, e["removed"]) for c, e in result["exchanges"].items()),
                                 dict((c, e["removed_sample"]) for c, e in result["exchanges"].items())),
                after=diff_text(after, dict((c, e["added"]) for c, e in result["exchanges"].items()),
                                dict((c, e["added_sample"]) for c, e in result["exchanges"].items())))
    result["seconds"] = round(watch.ms / 1000.0, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
