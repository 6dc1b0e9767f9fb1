# -*- coding: utf-8 -*-
"""SCRAM-SHA-256 verifiers computed on the controller (role access, issue 15).

A role's password is sent to PostgreSQL as its verifier, never as cleartext, so a slow or
failing CREATE/ALTER ROLE cannot write the password to the server log, pg_stat_statements or
pg_stat_activity. The verifier is what PostgreSQL itself would store for the password
(RFC 5802/7677, PostgreSQL's scram-common.c): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.

The salt is random, so a new verifier differs on every run; `quantdb_scram_verifier(current)`
keeps the stored verifier when it already matches the password, which keeps the role
idempotent (changed only when the password really changed).
"""
from __future__ import absolute_import, division, print_function

import base64
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata

__metaclass__ = type

VERIFIER = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")
DEFAULT_ITERATIONS = 4096   # PostgreSQL's scram_iterations default
SALT_BYTES = 16             # as PostgreSQL's SCRAM_DEFAULT_SALT_LEN


def saslprep(password):
    """SASLprep (RFC 4013) as PostgreSQL applies it: the prepared string, or the password
    unchanged when it holds a prohibited character (PostgreSQL then uses the raw bytes)."""
    if all(32 <= ord(ch) < 127 for ch in password):
        return password
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch
                     for ch in password if not stringprep.in_table_b1(ch))
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
                  stringprep.in_table_a1)
    if any(test(ch) for ch in prepared for test in prohibited):
        return password
    return prepared


def _keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def scram_verifier(password, salt=None, iterations=DEFAULT_ITERATIONS):
    """The verifier PostgreSQL stores for password (a new random salt unless given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored_key), b64(server_key))


def scram_matches(password, verifier):
    """Whether verifier (as stored in pg_authid.rolpassword) belongs to password."""
    match = VERIFIER.match(verifier or "")
    if not match:
        return False
    iterations, salt, stored, server = match.groups()
    stored_key, server_key = _keys(password, base64.b64decode(salt), int(iterations))
    return (hmac.compare_digest(stored_key, base64.b64decode(stored))
            and hmac.compare_digest(server_key, base64.b64decode(server)))


def quantdb_scram_verifier(password, current=None, iterations=DEFAULT_ITERATIONS):
    """Filter: the verifier to send for password: `current` when it already matches it (no
    change), else a new one. An empty password stays empty (no password); a password given as
    a verifier is sent as it is."""
    if password in (None, ""):
        return ""
    if VERIFIER.match(password):   # already a verifier (computed elsewhere, kept in the vault)
        return password
    if scram_matches(password, current):
        return current
    return scram_verifier(password, iterations=iterations)


class FilterModule(object):
    def filters(self):
        return {"quantdb_scram_verifier": quantdb_scram_verifier}
