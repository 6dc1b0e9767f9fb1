# -*- coding: utf-8 -*-
# The lab's connection: containers.podman.podman, pipelined, entering the container with nsenter when root.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: quantdb_podman
    short_description: Run tasks in a local podman container, pipelined, through nsenter when root
    description:
      - The connection of the lab (inventory/lab) and of the Molecule scenarios. It is the
        containers.podman.podman connection with one change, made because the lab runs every
        task through it, where real hosts use SSH with pipelining already.
      - containers.podman runs C(podman exec) without C(-i), so a module cannot be fed on
        stdin and every task costs three or four C(podman exec) calls (make a temporary
        directory, set its permissions, run, clean up), about 160 ms each here. With
        pipelining this plugin runs C(podman exec -i) and a task costs one.
      - Run as root (the lab and CI are), it goes one step further and enters the container's
        namespaces with C(nsenter) instead of C(podman exec) (about 4 ms against 190 ms), and
        skips the C(podman mount) the collection does on every connection (about 60 ms),
        together about a quarter of a second on every task of every playbook run against the
        lab and the Molecule containers. The container's PID comes from C(podman inspect) once
        and is cached under C(/run/quantdb-ops/podman) with the container's ID, checked on every
        use against C(/proc/PID/cgroup), which names the container's ID; a recreated container
        is looked up again. The command runs with the container's configured environment, as
        C(podman exec) would. Processes stay in the caller's cgroup (the container's memory
        limit still shows in its C(/sys/fs/cgroup), which is what the tuning probe reads);
        services started through systemd run in the container's as before. Without root or
        C(nsenter), with a C(remote_user), or with I(nsenter=false) (C(QDB_PODMAN_NSENTER=0))
        it runs C(podman exec) as before.
    author: quantdb-ops
    options:
      nsenter:
        description: Enter the container with C(nsenter) (root only) instead of C(podman exec).
        type: boolean
        default: true
        env:
          - name: QDB_PODMAN_NSENTER
        vars:
          - name: quantdb_podman_nsenter
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

import json
import os
import shlex
import shutil
import subprocess

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible.utils.display import Display
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

display = Display()
CACHE_DIR = "/run/quantdb-ops/podman"


class Connection(PodmanConnection):
    transport = "quantdb_podman"
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super(Connection, self).__init__(*args, **kwargs)
        self._target = None     # {"pid", "id", "env"} when entering with nsenter

    # -- nsenter: the container's PID, cached and checked ------------------------------------
    def _use_nsenter(self):
        return (self.get_option("nsenter") and not self.user and os.geteuid() == 0
                and shutil.which("nsenter") is not None)

    @staticmethod
    def _alive(target):
        """The cached PID still runs inside the container of the cached ID."""
        try:
            with open("/proc/%d/cgroup" % int(target["pid"])) as handle:
                return target["id"] in handle.read()
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _lookup_target(self):
        name = self._container_id
        cache = os.path.join(CACHE_DIR, name.replace("/", "_") + ".json")
        try:
            with open(cache) as handle:
                target = json.load(handle)
            if self._alive(target):
                return target
        except (OSError, ValueError):
            pass
        rc, out, err = self._inspect(name)
        if rc != 0:
            return None
        pid, cid, env = out.split(" ", 2)
        target = {"pid": json.loads(pid), "id": json.loads(cid), "env": json.loads(env) or []}
        if not target["pid"] or not self._alive(target):
            return None
        try:
            os.makedirs(CACHE_DIR, mode=0o700, exist_ok=True)
            tmp = "%s.%d" % (cache, os.getpid())
            with open(tmp, "w") as handle:
                json.dump(target, handle)
            os.rename(tmp, cache)
        except OSError:
            pass
        return target

    def _inspect(self, name):
        rc, out, err = self._podman(["inspect", "--type", "container", "--format",
                                     "{{json .State.Pid}} {{json .ID}} {{json .Config.Env}}", name],
                                    use_container_id=False)
        return rc, to_native(out).strip(), err

    def _nsenter(self, argv, in_data=None):
        env = ["env", "-i"] + [to_native(item) for item in self._target["env"]]
        local_cmd = ["nsenter", "--target", str(self._target["pid"]), "--all", "--root", "--wd", "--"] + env + argv
        display.vvv("NSENTER %s" % (local_cmd,), host=self._container_id)
        proc = subprocess.Popen([to_bytes(i, errors="surrogate_or_strict") for i in local_cmd], shell=False,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate(input=in_data)
        return proc.returncode, stdout, stderr

    # -- the connection ------------------------------------------------------------------------
    def _connect(self):
        if self._connected:
            return self
        if self._use_nsenter():
            self._target = self._lookup_target()
        if self._target is None:
            return super(Connection, self)._connect()   # podman mount + podman exec
        self._connected = True
        return self

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        if self._target is None and in_data is None:
            return super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        argv = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        if self._target is not None:
            return self._nsenter(argv, in_data)
        # pipelined: keep stdin open so the interpreter reads the module from it
        exec_args = ["exec", "-i"] + (["--user", self.user] if self.user else [])
        return self._podman(exec_args, argv, in_data)

    @ensure_connect
    def put_file(self, in_path, out_path):
        if self._target is None:
            return super(Connection, self).put_file(in_path, out_path)
        ConnectionBase.put_file(self, in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._container_id)
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as handle:
            data = handle.read()
        rc, stdout, stderr = self._nsenter(["/bin/sh", "-c", 'cat > "$1"', "sh", to_native(out_path)], data)
        if rc != 0:
            raise AnsibleError("Failed to copy %s to %s in container %s: %s"
                               % (in_path, out_path, self._container_id, to_native(stderr)))

    @ensure_connect
    def fetch_file(self, in_path, out_path):
        if self._target is None:
            return super(Connection, self).fetch_file(in_path, out_path)
        ConnectionBase.fetch_file(self, in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._container_id)
        rc, stdout, stderr = self._nsenter(["cat", to_native(in_path)])
        if rc != 0:
            raise AnsibleError("Failed to fetch %s from container %s: %s"
                               % (in_path, self._container_id, to_native(stderr)))
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as handle:
            handle.write(stdout)
