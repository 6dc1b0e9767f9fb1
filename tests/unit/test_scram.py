"""The access role's SCRAM filter (roles/access/filter_plugins/scram.py, issue 15): the verifier
computed on the controller is the one PostgreSQL 17 stores, so a role can log in with its
password although the server never saw it in cleartext."""
import base64
import importlib.util
import os

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
spec = importlib.util.spec_from_file_location("qdb_access_scram", os.path.join(PROJECT, "roles", "access", "filter_plugins", "scram.py"))
scram = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scram)

# Known answers: verifiers PostgreSQL 17 stored for CREATE ROLE ... PASSWORD '<password>'
# (read from pg_authid on the lab; the second exercises SASLprep's NFKC mapping).
POSTGRES_VERIFIERS = {
    "lab-only-quant-app-pw": "SCRAM-SHA-256$4096:JN3ooMAH64GM0JJPO6m3Vg==$w4995Yn2/BprjINIIZEm57o0fOQQGrxQFUrQbNn7uX8=:"
                             "3EbeybAhxKy7dlbvmrDeUYsbQ+1I7bzxLtHlrz4kmd0=",
    "Grüße Ⅸ café": "SCRAM-SHA-256$4096:UnAe/fv7dTyxUViscHmPsA==$xmF0OSg/8ikldNfSUgWnpTw769llJCExZgMIxIx5YiA=:"
                    "nGwE1dBBSFN24HqZa4Vwm29oJ9EScIIAxi+KjEIy8J8=",
}


def test_same_salt_gives_the_verifier_postgres_stores():
    for password, verifier in POSTGRES_VERIFIERS.items():
        salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
        assert scram.scram_verifier(password, salt=salt) == verifier


def test_a_matching_stored_verifier_is_kept():
    for password, verifier in POSTGRES_VERIFIERS.items():
        assert scram.quantdb_scram_verifier(password, verifier) == verifier


def test_a_changed_password_gets_a_new_verifier_with_a_fresh_salt():
    old = POSTGRES_VERIFIERS["lab-only-quant-app-pw"]
    new = scram.quantdb_scram_verifier("another-password-1", old)
    again = scram.quantdb_scram_verifier("another-password-1", None)
    assert new != old and new.startswith("SCRAM-SHA-256$4096:")
    assert new.split("$")[1] != again.split("$")[1]          # random salt each time
    assert scram.scram_matches("another-password-1", new) and scram.scram_matches("another-password-1", again)
    assert not scram.scram_matches("lab-only-quant-app-pw", new)


def test_the_cleartext_is_nowhere_in_the_verifier():
    verifier = scram.quantdb_scram_verifier("lab-only-quant-app-pw", "md5abc")
    assert "lab-only-quant-app-pw" not in verifier
    assert scram.VERIFIER.match(verifier)


def test_empty_and_precomputed_passwords_pass_through():
    assert scram.quantdb_scram_verifier("", None) == ""
    verifier = POSTGRES_VERIFIERS["lab-only-quant-app-pw"]
    assert scram.quantdb_scram_verifier(verifier, None) == verifier
