"""Run Ansible on the controller for the unit tests: a throwaway playbook, and the "cases"
harness that includes one role tasks file per case (usually validate.yml) in a block whose
rescue records the failure message, so one playbook run judges every case."""
import json
import os
import subprocess
import sys

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CASES_PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    results: {}
  tasks:
    - name: Each case
      ansible.builtin.include_tasks: case.yml
      loop: "{{ cases | dict2items }}"
      loop_control:
        loop_var: case
    - name: Results
      ansible.builtin.copy:
        content: "{{ results | to_json }}"
        dest: "%s"
        mode: "0644"
"""


def ansible_playbook(tmp, play, extra_vars=None, inventory=None):
    """ansible-playbook on localhost (local connection, this venv's Python) with the project's
    roles; returns the json callback's output and fails the test on a non-zero exit."""
    (tmp / "play.yml").write_text(play)
    (tmp / "vars.json").write_text(json.dumps(extra_vars or {}))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"),
               ANSIBLE_ROLES_PATH=os.path.join(PROJECT, "roles"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory or "localhost,",
         "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable, "-e", "@%s" % (tmp / "vars.json"),
         str(tmp / "play.yml")],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


# Each case: its task (indented as an item of `block:`), then "accepted", or in the rescue the
# messages of the failed loop items (validate.yml's range checks loop) and of the task itself.
CASE_BLOCK = """
- name: One case
  block:
%s
    - name: Accepted
      ansible.builtin.set_fact:
        results: "{{ results | combine({case.key: 'accepted'}) }}"
  rescue:
    - name: Refused
      ansible.builtin.set_fact:
        results: "{{ results | combine({case.key: ((ansible_failed_result.results | default([]) | selectattr('failed', 'defined')
                                                     | selectattr('failed') | map(attribute='msg') | list)
                                                    + [ansible_failed_result.msg | default('failed')]) | join('; ')}) }}"
"""


def case_verdicts(tmp, case_task, cases):
    """{case name: 'accepted' or the failure messages}: case_task is the one task each case
    runs, as YAML indented four spaces (it sees `case.key` and `case.value`)."""
    (tmp / "case.yml").write_text(CASE_BLOCK % case_task.strip("\n"))
    out = tmp / "results.json"
    ansible_playbook(tmp, CASES_PLAY % out, {"cases": cases})
    return json.loads(out.read_text())
