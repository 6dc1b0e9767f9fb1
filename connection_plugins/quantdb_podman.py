# -*- coding: utf-8 -*-
# The lab's connection: containers.podman.podman, plus pipelining.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: quantdb_podman
    short_description: Run tasks in a local podman container, pipelined
    description:
      - The connection of the lab (inventory/lab) and of the Molecule scenarios. It is the
        containers.podman.podman connection with one change, made because the lab runs every
        task through it, where real hosts use SSH with pipelining already.
      - containers.podman runs C(podman exec) without C(-i), so a module cannot be fed on
        stdin and every task costs three or four C(podman exec) calls (make a temporary
        directory, set its permissions, run, clean up), about 160 ms each here. With
        pipelining this plugin runs C(podman exec -i) and a task costs one.
    author: quantdb-ops
    options:
      remote_addr:
        description: Name or ID of the container.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User (name or UID) to run commands as inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments for the podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: The podman executable.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
      pipelining:
        description: Feed modules to the interpreter on stdin of one C(podman exec -i).
        type: boolean
        default: true
        ini:
          - section: connection
            key: pipelining
        env:
          - name: ANSIBLE_PIPELINING
        vars:
          - name: ansible_pipelining
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    transport = "quantdb_podman"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        if in_data is None:
            return super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        # pipelined: keep stdin open so the interpreter reads the module from it
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        exec_args = ["exec", "-i"] + (["--user", self.user] if self.user else [])
        return self._podman(exec_args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
