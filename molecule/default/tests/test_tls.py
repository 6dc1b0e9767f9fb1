"""TLS that clients can verify (roles/tls, docs/tls.md), tested as a client would use it.

site.yml gave the host a certificate from the lab CA of Molecule's inventory (tls_lab_ca in
the lab's group_vars). From the controller, through the published port (the connections then
come from podman's gateway, which the lab's pg_hba admits only as hostssl):
- sslmode=verify-full with the lab CA connects, by IP (127.0.0.1) and by name (localhost);
- the same with another CA is refused (the client cannot verify the server);
- a plaintext connection (sslmode=disable) is refused by pg_hba;
- the server's ssl_min_protocol_version is the postgresql role's variable: a client capped
  at it connects with it, a client capped below it is refused;
- the quality audit module, run on the controller (under --check: it audits, records nothing)
  with quality_audit_ssl_rootcert, connects with verify-full, and fails with a wrong CA;
- a renewed certificate (a new name in tls_lab_subject_alt_names, site.yml --tags tls) is
  served after a reload, the postmaster not restarted;
and on the host: the files are root's, the key 0640 root:ssl-cert, PostgreSQL names them.
"""
import datetime
import json
import os
import re
import socket
import ssl
import struct
import sys

import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROJECT = os.environ.get("MOLECULE_PROJECT_DIRECTORY", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "tests"))
from molecule_support import Scenario  # noqa: E402

HOST = "qdb-molecule-db1"
PUBLISHED_PORT = 55433     # molecule.yml publishes the container's 5432 here
SCENARIO = Scenario(PROJECT, HOST)
testinfra_hosts = ["podman://" + HOST]


def lab_password(name):
    with open(os.path.join(PROJECT, "inventory", "lab", "group_vars", "all.yml")) as handle:
        return re.search(r"^access_%s_password: (\S+)$" % name, handle.read(), re.M).group(1)


def role_default(role, name):
    with open(os.path.join(PROJECT, "roles", role, "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)[name]


@pytest.fixture(scope="module")
def lab_ca():
    """The lab CA the tls role made for Molecule's inventory (tls_lab_ca_dir's default)."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE") or os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"],
                                                                          "inventory", "x")
    path = os.path.join(os.path.dirname(inventory), ".tls-lab-ca", "ca.crt")
    assert os.path.exists(path), path
    return path


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A throwaway CA that signed nothing the server has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quantdb-ops lab CA")])   # same name, other key
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("otherca") / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def connect(host="127.0.0.1", user="quant_app", **kwargs):
    return psycopg.connect(host=host, port=PUBLISHED_PORT, dbname="quant_platform", user=user,
                           password=lab_password(user), connect_timeout=10, **kwargs)


def session_tls(conn):
    return conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost"])
def test_verify_full_with_the_lab_ca_connects(lab_ca, address):
    with connect(host=address, sslmode="verify-full", sslrootcert=lab_ca) as conn:
        ssl, version = session_tls(conn)
        assert ssl and version in ("TLSv1.2", "TLSv1.3"), (ssl, version)
        assert conn.execute("SELECT current_user").fetchone()[0] == "quant_app"


# OpenSSL's words for a server certificate the client's CA did not sign: "certificate verify
# failed", or "bad signature" when that CA has the issuer's name (our throwaway one does).
NOT_VERIFIED = re.compile(r"certificate verify failed|bad signature")


def test_verify_full_with_another_ca_is_refused(other_ca):
    with pytest.raises(psycopg.OperationalError) as refused:
        connect(sslmode="verify-full", sslrootcert=other_ca)
    assert NOT_VERIFIED.search(str(refused.value)), refused.value


def test_plaintext_over_tcp_is_refused_by_hostssl():
    with pytest.raises(psycopg.OperationalError) as refused:
        connect(sslmode="disable")
    # pg_hba has no line for a connection without TLS from the lab network.
    assert "no pg_hba.conf entry" in str(refused.value) and "no encryption" in str(refused.value), refused.value


def test_server_tls_floor_is_the_variable(lab_ca):
    floor = role_default("postgresql", "postgresql_ssl_min_protocol_version")
    assert SCENARIO.psql("SHOW ssl_min_protocol_version", db="postgres") == floor   # superuser-only setting
    with connect(sslmode="verify-full", sslrootcert=lab_ca, ssl_max_protocol_version=floor) as conn:
        assert session_tls(conn) == (True, floor)
    below = {"TLSv1.2": "TLSv1.1", "TLSv1.3": "TLSv1.2"}[floor]
    with pytest.raises(psycopg.OperationalError):
        connect(sslmode="verify-full", sslrootcert=lab_ca, ssl_max_protocol_version=below)


def test_server_uses_the_tls_roles_files_and_only_root_writes_them(host):
    settings = dict(line.split("|", 1) for line in SCENARIO.psql(
        "SELECT name, setting FROM pg_settings WHERE name IN ('ssl', 'ssl_cert_file', 'ssl_key_file', 'ssl_ca_file')",
        db="postgres").splitlines())
    assert settings == {"ssl": "on", "ssl_cert_file": "/etc/quantdb-ops/tls/server.crt",
                        "ssl_key_file": "/etc/quantdb-ops/tls/server.key", "ssl_ca_file": "/etc/quantdb-ops/tls/ca.crt"}
    assert SCENARIO.sh("stat -c '%U:%G %a' /etc/quantdb-ops/tls /etc/quantdb-ops/tls/ca.crt "
                       "/etc/quantdb-ops/tls/server.crt /etc/quantdb-ops/tls/server.key").stdout.split("\n")[:4] == [
        "root:root 755", "root:root 644", "root:root 644", "root:ssl-cert 640"]
    # postgres reads the key through the ssl-cert group; any other user cannot.
    assert SCENARIO.sh("head -c 5 /etc/quantdb-ops/tls/server.key", user="postgres").stdout == "-----"
    assert SCENARIO.sh("head -c 5 /etc/quantdb-ops/tls/server.key", user="nobody", check=False).returncode != 0


def run_audit_from_controller(tmp_path, ca):
    """The audit playbook under --check (the module connects and audits, records nothing)."""
    report = tmp_path / "tls-audit.json"
    proc = SCENARIO.run_playbook(
        "playbooks/quality_audit.yml", "-e", "quality_audit_report=%s" % report,
        "-e", '{"quality_audit_checks": ["duplicates"]}', "-e", "quality_audit_as_of=2025-10-31",
        "-e", "quality_audit_from_controller=true", "-e", "quality_audit_login_host=127.0.0.1",
        "-e", "quality_audit_login_port=%d" % PUBLISHED_PORT, "-e", "quality_audit_login_user=quant_audit",
        "-e", "quality_audit_login_password=%s" % lab_password("quant_audit"),
        "-e", "quality_audit_ssl_mode=verify-full", "-e", "quality_audit_ssl_rootcert=%s" % ca, check=True)
    return proc, report


def test_a_module_on_the_controller_verifies_the_server_with_the_ca(lab_ca, tmp_path):
    proc, report = run_audit_from_controller(tmp_path, lab_ca)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, out[-3000:]
    assert proc.stats["failures"] == 0, proc.stats
    assert re.search(r"ok: \[%s -> localhost\]" % HOST, proc.stdout), out[-3000:]   # the module ran on the controller


def test_a_module_on_the_controller_refuses_a_server_another_ca_signed(other_ca, tmp_path):
    proc, report = run_audit_from_controller(tmp_path, other_ca)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "sslmode=verify-full" in out and NOT_VERIFIED.search(out), out[-3000:]


def served_certificate(ca):
    """The certificate the server presents on the published port (PostgreSQL's SSLRequest, then
    TLS verified against `ca` for 127.0.0.1)."""
    with socket.create_connection(("127.0.0.1", PUBLISHED_PORT), timeout=10) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"S"
        with ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


def test_a_renewed_certificate_is_served_after_a_reload_without_restart(lab_ca):
    converge = os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml")
    started = SCENARIO.psql("SELECT pg_postmaster_start_time()", db="postgres")
    assert "renewed.example" not in served_certificate(lab_ca)
    try:
        proc = SCENARIO.run_playbook(converge, "--tags", "tls", "-e", json.dumps({"tls_lab_subject_alt_names": ["renewed.example"]}))
        assert proc.returncode == 0 and proc.stats["changed"] > 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert "renewed.example" in served_certificate(lab_ca)
        with connect(sslmode="verify-full", sslrootcert=lab_ca) as conn:
            assert session_tls(conn)[0]
        assert SCENARIO.psql("SELECT pg_postmaster_start_time()", db="postgres") == started
    finally:
        back = SCENARIO.run_playbook(converge, "--tags", "tls")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-2000:]
    assert "renewed.example" not in served_certificate(lab_ca)
    assert SCENARIO.psql("SELECT pg_postmaster_start_time()", db="postgres") == started
