"""TLS that clients can verify (issue 15), on the controller, no container:

- the tls role's lab CA: a CA and a host certificate naming inventory_hostname, ansible_host,
  localhost and 127.0.0.1, signed by that CA, made once (a second run changes nothing);
- the tls role refuses incomplete or non-PEM inputs and a key that is not the certificate's;
- the postgresql role writes ssl, ssl_min_protocol_version and the tls role's files into its
  settings file (and no file names without them), and refuses a certificate without a key;
- the roles that run modules pass no sslmode by default (the modules' rule: verify-full for a
  remote host) and take <role>_ssl_rootcert.
Each playbook runs with Ansible against localhost; each case in a block whose rescue records
the failure message.
"""
import datetime
import ipaddress
import json
import os
import sys

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.dirname(__file__))
from role_cases import ansible_playbook, case_verdicts  # noqa: E402

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = "db1.quant.example.internal"


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return key, cert


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# ---------------------------------------------------------------- the lab CA

LAB_PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: Lab CA and host certificate
      ansible.builtin.include_role:
        name: tls
        tasks_from: lab_ca.yml
"""


@pytest.fixture(scope="module")
def lab_ca(tmp_path_factory):
    """The tls role's lab_ca.yml run twice for a host with an ansible_host; the CA dir and reports."""
    tmp = tmp_path_factory.mktemp("labca")
    (tmp / "inventory").mkdir()
    (tmp / "inventory" / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"hosts": {HOST: {"ansible_host": "192.0.2.10", "tls_lab_subject_alt_names": ["db1-alias.example"]}}}}))
    first = ansible_playbook(tmp, LAB_PLAY, inventory=str(tmp / "inventory"))
    second = ansible_playbook(tmp, LAB_PLAY, inventory=str(tmp / "inventory"))
    return tmp / "inventory" / ".tls-lab-ca", first, second


def test_lab_ca_lives_with_its_inventory_and_keeps_its_keys_private(lab_ca):
    ca_dir, first, _ = lab_ca
    assert first["stats"][HOST]["changed"] > 0
    assert {"ca.key", "ca.crt", HOST + ".key", HOST + ".crt"} <= set(os.listdir(str(ca_dir)))
    assert os.stat(str(ca_dir)).st_mode & 0o777 == 0o700
    for name in ("ca.key", HOST + ".key"):
        assert os.stat(str(ca_dir / name)).st_mode & 0o777 == 0o600, name


def test_lab_ca_second_run_changes_nothing(lab_ca):
    ca_dir, _, second = lab_ca
    assert second["stats"][HOST]["changed"] == 0, second["stats"]


def test_lab_host_certificate_names_every_address_clients_use_and_is_signed_by_the_ca(lab_ca):
    ca_dir, _, _ = lab_ca
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((ca_dir / (HOST + ".crt")).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {HOST, "localhost", "db1-alias.example"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("192.0.2.10"),
                                                             ipaddress.ip_address("127.0.0.1")}
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)   # raises if the CA did not sign it
    key = serialization.load_pem_private_key((ca_dir / (HOST + ".key")).read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


# ---------------------------------------------------------------- input checks

CASE = """
    - name: Run the case's tasks file
      ansible.builtin.include_role:
        name: "{{ case.value.role }}"
        tasks_from: "{{ case.value.tasks }}"
      vars:
        tls_cert: "{{ case.value.vars.tls_cert | default('') }}"
        tls_key: "{{ case.value.vars.tls_key | default('') }}"
        tls_ca: "{{ case.value.vars.tls_ca | default('') }}"
        tls_dir: "{{ case.value.vars.tls_dir | default('/etc/quantdb-ops/tls') }}"
        tls_lab_subject_alt_names: "{{ case.value.vars.tls_lab_subject_alt_names | default([]) }}"
        postgresql_ssl: "{{ case.value.vars.postgresql_ssl | default(true) }}"
        postgresql_ssl_cert_file: "{{ case.value.vars.postgresql_ssl_cert_file | default('') }}"
        postgresql_ssl_key_file: "{{ case.value.vars.postgresql_ssl_key_file | default('') }}"
        postgresql_hba_entries: "{{ case.value.vars.postgresql_hba_entries | default([]) }}"
"""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tlscases")
    ca_key, ca = make_ca("test CA")
    other_key, _ = make_ca("other")
    cert, key, ca_pem = pem_cert(ca), pem_key(ca_key), pem_cert(ca)
    hostssl = [{"type": "hostssl", "database": "all", "user": "all", "address": "10.20.0.0/16", "method": "scram-sha-256"}]
    tls = lambda **v: {"role": "tls", "tasks": "validate.yml", "vars": v}  # noqa: E731
    pg = lambda **v: {"role": "postgresql", "tasks": "validate.yml", "vars": v}  # noqa: E731
    cases = {
        # tls role inputs
        "tls_none": tls(),
        "tls_all_three": tls(tls_cert=cert, tls_key=key, tls_ca=ca_pem),
        "tls_cert_without_key": tls(tls_cert=cert, tls_ca=ca_pem),
        "tls_key_without_cert": tls(tls_key=key),
        "tls_no_ca": tls(tls_cert=cert, tls_key=key),
        "tls_cert_not_pem": tls(tls_cert="MIIB...", tls_key=key, tls_ca=ca_pem),
        "tls_key_not_pem": tls(tls_cert=cert, tls_key="secret", tls_ca=ca_pem),
        "tls_relative_dir": tls(tls_dir="etc/tls"),
        "tls_san_with_space": tls(tls_lab_subject_alt_names=["db1 db2"]),
        # the key must belong to the certificate (checked before anything is written)
        "tls_key_of_another_certificate": {"role": "tls", "tasks": "install.yml",
                                           "vars": {"tls_cert": cert, "tls_key": pem_key(other_key), "tls_ca": ca_pem}},
        # postgresql role inputs
        "pg_snakeoil": pg(),
        "pg_cert_and_key": pg(postgresql_ssl_cert_file="/etc/quantdb-ops/tls/server.crt",
                              postgresql_ssl_key_file="/etc/quantdb-ops/tls/server.key"),
        "pg_cert_without_key": pg(postgresql_ssl_cert_file="/etc/quantdb-ops/tls/server.crt"),
        "pg_relative_cert": pg(postgresql_ssl_cert_file="server.crt", postgresql_ssl_key_file="server.key"),
        "pg_quote_in_path": pg(postgresql_ssl_cert_file="/etc/x'.crt", postgresql_ssl_key_file="/etc/x.key"),
        "pg_hostssl_with_ssl_off": pg(postgresql_ssl=False, postgresql_hba_entries=hostssl),
        "pg_hostssl_with_ssl_on": pg(postgresql_hba_entries=hostssl),
    }
    return case_verdicts(tmp, CASE, cases)


@pytest.mark.parametrize("name", ["tls_none", "tls_all_three", "pg_snakeoil", "pg_cert_and_key", "pg_hostssl_with_ssl_on"])
def test_accepted(verdicts, name):
    assert verdicts[name] == "accepted", verdicts[name]


@pytest.mark.parametrize("name,words", [
    ("tls_cert_without_key", "tls_cert, tls_key and tls_ca"),
    ("tls_key_without_cert", "tls_cert, tls_key and tls_ca"),
    ("tls_no_ca", "tls_cert, tls_key and tls_ca"),
    ("tls_cert_not_pem", "BEGIN CERTIFICATE"),
    ("tls_key_not_pem", "tls_cert, tls_key and tls_ca"),
    ("tls_relative_dir", "tls_dir an absolute path"),
    ("tls_san_with_space", "tls_lab_subject_alt_names"),
    ("tls_key_of_another_certificate", "tls_key is not the private key of tls_cert"),
    ("pg_cert_without_key", "postgresql_ssl_cert_file and postgresql_ssl_key_file go together"),
    ("pg_relative_cert", "absolute paths"),
    ("pg_quote_in_path", "absolute paths"),
    ("pg_hostssl_with_ssl_off", "hostssl entries in postgresql_hba_entries need postgresql_ssl"),
])
def test_refused_naming_the_variable(verdicts, name, words):
    assert verdicts[name] != "accepted", name
    assert words in verdicts[name], verdicts[name]


def test_the_private_key_never_reaches_the_output(verdicts):
    # The key's PEM is in the cases; the refusal messages never quote it.
    for name, message in verdicts.items():
        assert "PRIVATE KEY-----\n" not in message, name


# ---------------------------------------------------------------- postgresql settings file

RENDER_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - %(project)s/roles/postgresql/defaults/main.yml
  vars:
    postgresql_tuning:
      memory_mb: 2048
      cpus: 2
      detected: {meminfo_mb: 2048, cgroup_memory_mb: 2048, cpu_count: 2, cgroup_cpus: 2}
      settings: {shared_buffers: 512MB}
    __postgresql_preload_installed: [pg_stat_statements]
  tasks:
    - name: Without the tls role's facts (Debian's snakeoil)
      ansible.builtin.set_fact:
        snakeoil: "{{ lookup('ansible.builtin.template', '%(project)s/roles/postgresql/templates/quantdb-ops.conf.j2') }}"
    - name: The tls role's facts
      ansible.builtin.set_fact:
        tls_cert_file: /etc/quantdb-ops/tls/server.crt
        tls_key_file: /etc/quantdb-ops/tls/server.key
        tls_ca_file: /etc/quantdb-ops/tls/ca.crt
    - name: With them, and TLSv1.3
      ansible.builtin.set_fact:
        with_tls: "{{ lookup('ansible.builtin.template', '%(project)s/roles/postgresql/templates/quantdb-ops.conf.j2') }}"
      vars:
        postgresql_ssl_min_protocol_version: TLSv1.3
    - name: Results
      ansible.builtin.copy:
        content: "{{ {'snakeoil': snakeoil, 'with_tls': with_tls} | to_json }}"
        dest: "%(out)s"
        mode: "0644"
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    out = tmp / "rendered.json"
    ansible_playbook(tmp, RENDER_PLAY % {"project": PROJECT, "out": out})
    return json.loads(out.read_text())


def test_settings_keep_debians_snakeoil_without_the_tls_role_and_state_the_protocol_floor(rendered):
    text = rendered["snakeoil"]
    assert "ssl = 'on'" in text.splitlines()
    assert "ssl_min_protocol_version = 'TLSv1.2'" in text.splitlines()
    assert "ssl_cert_file" not in text and "ssl_key_file" not in text and "ssl_ca_file" not in text


def test_settings_name_the_tls_roles_files(rendered):
    lines = rendered["with_tls"].splitlines()
    assert "ssl_cert_file = '/etc/quantdb-ops/tls/server.crt'" in lines
    assert "ssl_key_file = '/etc/quantdb-ops/tls/server.key'" in lines
    assert "ssl_ca_file = '/etc/quantdb-ops/tls/ca.crt'" in lines
    assert "ssl_min_protocol_version = 'TLSv1.3'" in lines


# ---------------------------------------------------------------- the module-running roles


@pytest.mark.parametrize("role", ["ingest", "quality_audit", "validate_source"])
def test_module_roles_leave_sslmode_to_the_modules_rule_and_take_a_root_certificate(role):
    base = os.path.join(PROJECT, "roles", role)
    with open(os.path.join(base, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    with open(os.path.join(base, "meta", "argument_specs.yml")) as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    with open(os.path.join(base, "tasks", "main.yml")) as handle:
        tasks = handle.read()
    assert defaults[role + "_ssl_mode"] == "" and defaults[role + "_ssl_rootcert"] == ""
    assert spec[role + "_ssl_mode"]["default"] == "" and "" in spec[role + "_ssl_mode"]["choices"]
    assert spec[role + "_ssl_rootcert"]["default"] == ""
    assert 'ssl_mode: "{{ %s_ssl_mode or omit }}"' % role in tasks
    assert 'ssl_rootcert: "{{ %s_ssl_rootcert or omit }}"' % role in tasks
