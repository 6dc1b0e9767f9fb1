# -*- coding: utf-8 -*-
"""Write a playbook run's per-host recap as JSON to the file named by QDB_STATS_FILE.

Tests and scripts read this instead of parsing the human-readable PLAY RECAP, so a change of
Ansible's wording cannot break or fool them; the normal output is left as it is.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: quantdb_stats
type: aggregate
short_description: Per-host recap of a run as JSON, for tests and scripts
description:
  - At the end of a run, writes a JSON object to the file named by the environment variable
    C(QDB_STATS_FILE). Its key C(stats) maps each host to its counts ok, changed, failures,
    unreachable, skipped, rescued and ignored.
  - Does nothing when C(QDB_STATS_FILE) is not set.
requirements:
  - enabled with C(ANSIBLE_CALLBACKS_ENABLED=quantdb_stats)
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "quantdb_stats"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("QDB_STATS_FILE")
        if not path:
            return
        report = {"stats": {host: stats.summarize(host) for host in sorted(stats.processed)}}
        with open(path, "w") as handle:
            json.dump(report, handle, indent=1, sort_keys=True)
