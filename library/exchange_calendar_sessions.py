#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: exchange_calendar_sessions
short_description: Compute exchange trading sessions with the exchange_calendars library into a CSV
description:
  - For each exchange (a MIC such as XKRX or XNYS, or an alias exchange_calendars knows), lists
    the trading sessions between O(start) and O(end) (both included) with the C(exchange_calendars)
    Python library and writes them to O(dest) as a CSV C(exchange,session) with a header, sorted
    by exchange then session, so the same inputs always give the same bytes.
  - Runs where C(exchange_calendars) is installed, normally the controller
    (delegated to localhost, with C(ansible_python_interpreter) set to
    C(ansible_playbook_python)). No database is involved; the module C(exchange_sessions) loads
    the file on the database host.
  - An unknown exchange code fails the module naming it, before anything is written.
  - When O(start) is earlier than the first date the library covers for an exchange (its
    C(bound_min), e.g. XTKS 1997-01-01, XKRX 1956-01-01), the window is clipped to that date and
    a warning names the exchange, the asked start and the first date covered. The same holds for
    an O(end) beyond the library's last recorded year (its C(bound_max)).
  - C(changed) is true only when the content of O(dest) differs from what is already there.
    In check mode the sessions are still computed and reported, and O(dest) is not written.
options:
  exchanges:
    description:
      - Exchange codes as exchange_calendars names them (MICs such as C(XKRX), C(XNYS), C(XTKS)).
      - Duplicates are ignored; the file and the result are sorted by code.
      - The exchanges of O(region_exchanges) are always added.
    type: list
    elements: str
    default: []
  start:
    description:
      - First date of the window, ISO C(YYYY-MM-DD).
    type: str
    required: true
  end:
    description:
      - Last date of the window, ISO C(YYYY-MM-DD), not earlier than O(start).
    type: str
    required: true
  dest:
    description:
      - Path of the CSV to write. Its directory must exist.
    type: path
    required: true
extends_documentation_fragment: [quantdb_ohlcv.region_exchanges]
requirements:
  - exchange_calendars (4.x) on the host running the module
author: quantdb-ops maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Compute the XKRX and XNYS sessions on the controller
  exchange_calendar_sessions:
    exchanges: [XKRX, XNYS]
    start: "1990-01-01"
    end: "2027-11-28"
    dest: "{{ playbook_dir }}/../.cache/calendars/sessions.csv"
  delegate_to: localhost
  become: false
  check_mode: false   # a work file on the controller; the database load honours check mode
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  register: sessions_file
"""

RETURN = r"""
calendars:
  description:
    - Per exchange code, what was computed.
    - C(timezone) is the exchange's IANA time zone; C(requested_start) the O(start) asked;
      C(start) and C(end) the window actually covered (after clipping; null when nothing of
      the window is covered); C(first_session) and C(last_session) the first and last session
      in it (null when there are none); C(sessions) their count; C(clipped) whether the window
      was cut to the library's bounds; C(calendar) the library's own name for the code (differs
      for an alias such as XNAS, which is XNYS); C(warning) the warning given when it was clipped
      (empty otherwise).
  returned: always
  type: dict
  sample:
    XTKS:
      calendar: XTKS
      timezone: Asia/Tokyo
      requested_start: "1990-01-01"
      start: "1997-01-01"
      end: "2027-11-28"
      first_session: "1997-01-06"
      last_session: "2027-11-26"
      sessions: 7569
      clipped: true
      warning: >-
        exchange_calendars covers XTKS only from 1997-01-01; sessions before that are not loaded
        (asked from 1990-01-01)
windows:
  description:
    - The same calendars as a list ready for the C(calendars) option of the module
      C(exchange_sessions) - C(exchange), C(timezone), C(start), C(end) and C(source) of each exchange
      whose window is not empty, sorted by exchange.
  returned: always
  type: list
  elements: dict
  sample:
    - exchange: XTKS
      timezone: Asia/Tokyo
      start: "1997-01-01"
      end: "2027-11-28"
      source: exchange_calendars 4.13.2
source:
  description: The library and version the sessions come from, as recorded in the exchanges table.
  returned: always
  type: str
  sample: exchange_calendars 4.13.2
dest:
  description: The CSV written (or, in check mode, that would be).
  returned: always
  type: str
  sample: /srv/quantdb-ops/.cache/calendars/qdb-lab-db1_quant_platform.csv
rows:
  description: Data rows in the CSV (sessions of every exchange).
  returned: always
  type: int
  sample: 18917
sha256:
  description: SHA-256 of the CSV content.
  returned: always
  type: str
  sample: 0f3c6d8f2b0c4c2d9a1e6b7e5f4a3c2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a
"""

import datetime
import hashlib
import os
import re
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.quantdb_ohlcv import region_exchanges

try:
    import exchange_calendars as xcals
    HAS_XCALS = True
    XCALS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through fail_json
    xcals = None
    HAS_XCALS = False
    XCALS_IMPORT_ERROR = traceback.format_exc()

ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
ONE_DAY = datetime.timedelta(days=1)


def parse_date(module, name, value):
    try:
        if not ISO_DATE.match(value):
            raise ValueError
        return datetime.datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        module.fail_json(msg="%s: '%s' is not an ISO date (YYYY-MM-DD)" % (name, value))


def as_date(stamp):
    """A pandas Timestamp (or None) as a datetime.date (or None)."""
    return None if stamp is None else stamp.date()


def library_bounds(code):
    """First and last dates the library can evaluate for this calendar (None: unbounded)."""
    cal = xcals.get_calendar(code)
    return as_date(cal.bound_min()), as_date(cal.bound_max())


def calendar(code, start, end):
    """The calendar over [start, end]; the library needs start < end, so a one-day window is
    read from a two-day calendar."""
    if end > start:
        return xcals.get_calendar(code, start=start, end=end)
    try:
        return xcals.get_calendar(code, start=start, end=start + ONE_DAY)
    except ValueError:  # the day is the library's last
        return xcals.get_calendar(code, start=start - ONE_DAY, end=start)


def sessions_of(module, code, start, end):
    """The sessions of code in [start, end] (clipped to the library's bounds) and a summary."""
    info = dict(calendar=xcals.resolve_alias(code), requested_start=start.isoformat(), clipped=False, warning="")
    notes = []
    try:
        cal = calendar(code, start, end)
    except ValueError:
        # Outside the library's bounds (anything else fails again below, with its message).
        lo, hi = library_bounds(code)
        if lo is not None and start < lo:
            notes.append("exchange_calendars covers %s only from %s; sessions before that are not loaded "
                         "(asked from %s)" % (code, lo.isoformat(), start.isoformat()))
            start, info["clipped"] = lo, True
        if hi is not None and end > hi:
            notes.append("exchange_calendars covers %s only up to %s; sessions after that are not loaded "
                         "(asked up to %s)" % (code, hi.isoformat(), end.isoformat()))
            end, info["clipped"] = hi, True
        if start > end:
            notes.append("no sessions of %s loaded: the window asked is outside what exchange_calendars covers" % code)
        for note in notes:
            module.warn(note)
        info["warning"] = "; ".join(notes)
        if start > end:
            info.update(timezone=str(xcals.get_calendar(code).tz), start=None, end=None,
                        first_session=None, last_session=None, sessions=0)
            return info, []
        cal = calendar(code, start, end)
    days = [d.date() for d in cal.sessions if start <= d.date() <= end]
    info.update(timezone=str(cal.tz), start=start.isoformat(), end=end.isoformat(),
                first_session=days[0].isoformat() if days else None,
                last_session=days[-1].isoformat() if days else None,
                sessions=len(days))
    return info, days


def write_if_different(module, dest, content):
    """Write content to dest atomically unless it is already there. Returns changed."""
    try:
        with open(dest, "rb") as handle:
            if handle.read() == content:
                return False
    except (IOError, OSError):
        pass  # missing or unreadable: (re)write it
    if module.check_mode:
        return True
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        module.fail_json(msg="dest: directory %s does not exist" % directory)
    fd, tmp = tempfile.mkstemp(prefix=".exchange_calendar_sessions.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        module.atomic_move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            exchanges=dict(type="list", elements="str", default=[]),
            region_exchanges=dict(type="dict", default=region_exchanges()),
            start=dict(type="str", required=True),
            end=dict(type="str", required=True),
            dest=dict(type="path", required=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_XCALS:
        reason = ("(run this module on the controller: delegate_to localhost "
                  "with ansible_python_interpreter set to ansible_playbook_python)")
        module.fail_json(msg=missing_required_lib("exchange_calendars", reason=reason), exception=XCALS_IMPORT_ERROR)
    p = module.params
    start = parse_date(module, "start", p["start"])
    end = parse_date(module, "end", p["end"])
    if start > end:
        module.fail_json(msg="start %s is later than end %s" % (p["start"], p["end"]))
    codes = sorted(set(str(code).strip() for code in list(p["exchanges"]) + list(p["region_exchanges"].values())))
    if "" in codes:
        module.fail_json(msg="exchanges: an empty exchange code in %s or region_exchanges %s"
                             % (p["exchanges"], p["region_exchanges"]))
    if not codes:
        module.fail_json(msg="no exchange to compute: exchanges and region_exchanges are both empty")
    known = set(xcals.get_calendar_names(include_aliases=True))
    unknown = [code for code in codes if code not in known]
    if unknown:
        module.fail_json(msg="unknown exchange calendar code(s): %s (not in exchange_calendars %s; codes are MICs "
                             "such as XKRX, XNYS, XTKS)" % (", ".join(unknown), xcals.__version__))

    calendars = {}
    lines = ["exchange,session"]
    try:
        for code in codes:
            info, days = sessions_of(module, code, start, end)
            calendars[code] = info
            lines.extend("%s,%s" % (code, day.isoformat()) for day in days)
    except ValueError as exc:
        module.fail_json(msg="exchange_calendars could not compute %s: %s" % (code, exc))
    content = ("\n".join(lines) + "\n").encode("utf-8")
    changed = write_if_different(module, p["dest"], content)
    source = "exchange_calendars %s" % xcals.__version__
    windows = [dict(exchange=code, timezone=info["timezone"], start=info["start"], end=info["end"], source=source)
               for code, info in sorted(calendars.items()) if info["start"] is not None]
    module.exit_json(changed=changed, calendars=calendars, windows=windows, source=source,
                     dest=p["dest"], rows=len(lines) - 1, sha256=hashlib.sha256(content).hexdigest())


if __name__ == "__main__":
    main()
