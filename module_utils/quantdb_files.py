# -*- coding: utf-8 -*-
"""Reading CSV files for the ingest modules: plain or gzip, streamed, with a checksum."""
from __future__ import absolute_import, division, print_function

import gzip
import hashlib

__metaclass__ = type

CHUNK = 1 << 20


def open_binary(path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_header(path):
    with open_binary(path) as handle:
        return handle.readline().decode("utf-8-sig").strip().split(",")


def copy_file(cursor, statement, path):
    """COPY a CSV file (header included, the statement says HEADER) through psycopg."""
    with open_binary(path) as handle, cursor.copy(statement) as copy:
        for block in iter(lambda: handle.read(CHUNK), b""):
            copy.write(block)
