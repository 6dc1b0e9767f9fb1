"""ansible.cfg keeps SSH host key checking on (issue 15): a project-wide
`host_key_checking = false` would switch it off for production inventories too, where a
changed key is the sign of a man in the middle. The lab and Molecule use the podman
connection, which has no host key, so they need no exception."""
import configparser
import os
import subprocess
import sys

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_the_project_config_does_not_disable_host_key_checking():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(PROJECT, "ansible.cfg"))
    for section in cfg.sections():
        assert cfg.get(section, "host_key_checking", fallback="true").lower() not in ("false", "no", "0", "off"), section


def test_ansible_reports_host_key_checking_on():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(PROJECT, "ansible.cfg"))
    env.pop("ANSIBLE_HOST_KEY_CHECKING", None)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-config"), "dump", "--only-changed"],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HOST_KEY_CHECKING" not in proc.stdout, proc.stdout
