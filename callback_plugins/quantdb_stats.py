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
  - Its key C(returns) maps each quantdb-ops module (the modules in library/) that ran to the
    sorted keys its results carried, so tests can compare them with the module's RETURN.
  - Does nothing when C(QDB_STATS_FILE) is not set.
requirements:
  - enabled with C(ANSIBLE_CALLBACKS_ENABLED=quantdb_stats)
"""

import glob
import json
import os

from ansible.plugins.callback import CallbackBase

LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "library")
# Keys Ansible itself adds to every result; the rest is what the module returned.
ANSIBLE_KEYS = {"changed", "failed", "invocation", "warnings", "deprecations", "msg", "diff", "skipped",
                "skip_reason", "exception", "ansible_facts", "item", "ansible_loop_var", "failed_when_result",
                "changed_when_result", "attempts", "module_stdout", "module_stderr", "rc", "stdout", "stderr",
                "stdout_lines", "stderr_lines", "false_condition",
                # file attributes AnsibleModule adds to a result that names a path or dest
                "gid", "group", "mode", "owner", "size", "state", "uid", "secontext"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "quantdb_stats"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.modules = set(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(LIBRARY, "*.py")))
        self.returns = {}

    def v2_runner_on_ok(self, result):
        name = result._task.action.split(".")[-1]
        if name in self.modules and not result._result.get("skipped"):
            keys = set(k for k in result._result if not k.startswith("_ansible") and k not in ANSIBLE_KEYS)
            self.returns.setdefault(name, set()).update(keys)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("QDB_STATS_FILE")
        if not path:
            return
        report = {"stats": {host: stats.summarize(host) for host in sorted(stats.processed)},
                  "returns": {name: sorted(keys) for name, keys in self.returns.items()}}
        with open(path, "w") as handle:
            json.dump(report, handle, indent=1, sort_keys=True)
