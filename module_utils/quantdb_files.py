# -*- coding: utf-8 -*-
"""Reading CSV files for the ingest modules: plain or gzip, streamed, with a checksum.

The bars file is streamed to COPY block by block (1 MB, cut at a line end). Each block is
checked at C speed (bytes.translate, a set of reduced lines) for the shape the fast path
relies on; only the lines of a block that fails are looked at one by one in Python. See
BarStream and docs/ingest.md.
"""
from __future__ import absolute_import, division, print_function

import csv
import gzip
import hashlib
import io
import re
import zlib

__metaclass__ = type

try:
    from psycopg.copy import LibpqWriter
    from psycopg.generators import copy_to
except ImportError:  # pragma: no cover - psycopg missing (connect() reports it) or too old
    LibpqWriter = None

CHUNK = 1 << 20
FLUSH_CHUNK = 64 * 1024
BAR_FIELDS = 8
BLANK_ROW = b",,,,,,,\n"          # eight NULLs: holds the line number of a line staged apart

# The fast path's shape of a line: ASCII letters, digits and . , + - only (no space, quote,
# underscore or byte above 127), and, once digits and signs are deleted, three free fields
# (ticker, region, date: each checked per distinct value in SQL), four prices with at most a
# point and an exponent mark, and a volume of digits alone.
BASE_ALLOWED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,+-"
REDUCE = b"0123456789+-"
SHAPE = re.compile(rb"[^,]*,[^,]*,[^,]*(?:,\.?[eE]?){4},")
NEVER_ALLOWED = b',"\\\r\n\x00'


class UnreadableFile(Exception):
    """The file cannot be read to its end: a truncated or corrupt gzip, an I/O error."""


class TooManySuspects(Exception):
    """More lines need the strict path than the typed staging should hold apart."""


def open_binary(path):
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def unreadable(path, exc):
    """An UnreadableFile naming the file, from a gzip/zlib/I/O exception."""
    if isinstance(exc, EOFError):
        what = "truncated gzip (%s)" % exc
    elif isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        what = "corrupt gzip (%s)" % exc
    else:
        what = "read error (%s)" % exc
    return UnreadableFile("%s: cannot read the file: %s" % (path, what))


READ_ERRORS = (EOFError, OSError, zlib.error)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_header(path):
    """The header's column names (CSV-parsed, so a quoted header reads the same)."""
    try:
        with open_binary(path) as handle:
            line = handle.readline()
    except READ_ERRORS as exc:
        raise unreadable(path, exc)
    text = line.decode("utf-8-sig", "replace").strip("\r\n")
    try:
        return next(csv.reader([text], strict=True), [""])
    except csv.Error:
        return text.split(",")


if LibpqWriter is not None:
    class FlushingWriter(LibpqWriter):
        """psycopg's COPY writer, but sending 64 kB at a time and flushing each piece before the
        next. The default queues 128 kB pieces in libpq without flushing; with the server busy,
        libpq then sends a little at a time and moves the rest of its buffer down after each
        send. Measured on the 6.2M-row bench file: 8.5 s of client CPU with the default, 2.3 s
        with this writer (decompression and checks included), the COPY 40% faster on 2 cores."""

        def write(self, data):
            view = memoryview(data)
            for start in range(0, len(view), FLUSH_CHUNK):
                self.connection.wait(copy_to(self._pgconn, view[start:start + FLUSH_CHUNK], flush=True))
else:  # pragma: no cover
    FlushingWriter = None


def copy_to_table(cursor, statement):
    """cursor.copy(statement) with the FlushingWriter when this psycopg allows it."""
    if FlushingWriter is not None:
        try:
            return cursor.copy(statement, writer=FlushingWriter(cursor))
        except TypeError:  # a psycopg without the writer argument
            pass
    return cursor.copy(statement)


def copy_file(cursor, statement, path):
    """COPY a CSV file (header included, the statement says HEADER) through psycopg."""
    try:
        with open_binary(path) as handle, copy_to_table(cursor, statement) as copy:
            for block in iter(lambda: handle.read(CHUNK), b""):
                copy.write(block)
    except READ_ERRORS as exc:
        raise unreadable(path, exc)


def strftime_to_regex(fmt):
    """A strict POSIX regular expression (for PostgreSQL's ~ and regexp_match) for a date
    format with %Y (4 digits), %m and %d (2 digits each), %% and literal characters, and the
    1-based group numbers of year, month and day. Nothing is guessed: the regex matches
    exactly the strings strftime writes for that format (zero-padded), e.g. "%d/%m/%Y" gives
    ^([0-9]{2})\\/([0-9]{2})\\/([0-9]{4})$ and (3, 2, 1).
    """
    parts, order, i = ["^"], [], 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%":
            if i + 1 >= len(fmt):
                raise ValueError("date_format %r ends with a lone %%" % fmt)
            code = fmt[i + 1]
            if code in "Ymd":
                if code in order:
                    raise ValueError("date_format %r has %%%s twice" % (fmt, code))
                order.append(code)
                parts.append("([0-9]{4})" if code == "Y" else "([0-9]{2})")
            elif code == "%":
                parts.append("\\%")
            else:
                raise ValueError("date_format %r: %%%s is not supported (only %%Y, %%m, %%d, %%%% and literal "
                                 "characters)" % (fmt, code))
            i += 2
            continue
        parts.append(ch if (ch.isalnum() or ord(ch) > 127) else "\\" + ch)
        i += 1
    if sorted(order) != ["Y", "d", "m"]:
        raise ValueError("date_format %r must contain %%Y, %%m and %%d once each" % fmt)
    parts.append("$")
    return "".join(parts), tuple(order.index(c) + 1 for c in "Ymd")


def format_literals(fmt):
    """ASCII punctuation a date format writes (e.g. / for %d/%m/%Y): allowed in fast-path blocks."""
    literal = re.sub("%.", "", fmt)
    return bytes(sorted(set(c for c in literal.encode("ascii", "ignore")
                            if not chr(c).isalnum() and c not in NEVER_ALLOWED)))


class BarStream(object):
    """Streams a bars CSV to a COPY (write callback), one physical line per COPY row, so a
    COPY identity column numbers rows by their line in the file.

    A block whose every line has the fast-path shape goes through unchanged. In any other
    block each line is looked at: a line that is not UTF-8 (or holds a NUL) is `bad_encoding`;
    one that strict CSV parsing refuses, with a quote inside a value or not exactly 8 fields is
    `bad_row`; those are replaced by BLANK_ROW and kept in `bad` as (line, reason, pieces).
    Other lines, and those listed in strict_lines, are `suspects` (a space, a letter in a
    number, a quoted field, a number COPY refused...): with typed=True they are replaced by
    BLANK_ROW and kept in `suspects` as (line, fields) for the strict SQL path
    (TooManySuspects past max_suspects); with typed=False they are written as CSV of their
    parsed fields. CRLF line ends become LF. `rows` counts the data lines.
    """

    def __init__(self, path, typed=True, extra_allowed=b"", max_suspects=100000, check_every_line=False,
                 strict_lines=()):
        self.path = path
        self.typed = typed
        self.max_suspects = max_suspects
        self.check_every_line = check_every_line
        self.strict_lines = frozenset(strict_lines)   # lines COPY refused before: suspects whatever their shape
        self.allowed = BASE_ALLOWED + bytes(c for c in bytearray(extra_allowed) if c not in NEVER_ALLOWED)
        self.block_allowed = self.allowed + b"\n"
        self.rows = 0
        self.bad = []
        self.suspects = []

    def run(self, write):
        try:
            with open_binary(self.path) as handle:
                header = handle.readline()
                write(header.rstrip(b"\r\n") + b"\n")
                tail = b""
                while True:
                    data = handle.read(CHUNK)
                    if not data:
                        break
                    data = tail + data
                    cut = data.rfind(b"\n") + 1
                    tail = data[cut:]
                    if cut:
                        self._block(data[:cut], write)
                if tail:
                    self._block(tail + b"\n", write)
        except READ_ERRORS as exc:
            raise unreadable(self.path, exc)
        return self

    def line_is_clean(self, line):
        return not line.translate(None, self.allowed) and SHAPE.fullmatch(line.translate(None, REDUCE)) is not None

    def _block(self, block, write):
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        lines = block.count(b"\n")
        first = self.rows + 2   # the file line of the block's first line (the header is line 1)
        forced = any(first <= line < first + lines for line in self.strict_lines)
        if not (self.check_every_line or forced) and not block.translate(None, self.block_allowed):
            shapes = set(block[:-1].translate(None, REDUCE).split(b"\n"))
            if all(SHAPE.fullmatch(s) for s in shapes):
                self.rows += lines
                write(block)
                return
        out = []
        for raw in block[:-1].split(b"\n"):
            self.rows += 1
            if self.line_is_clean(raw) and self.rows + 1 not in self.strict_lines:
                out.append(raw + b"\n")
                continue
            reason, fields = self.classify(raw)
            if reason:
                self.bad.append((self.rows + 1, reason, fields))
                out.append(BLANK_ROW)
            elif self.typed:
                self.suspects.append((self.rows + 1, fields))
                if len(self.suspects) > self.max_suspects:
                    raise TooManySuspects()
                out.append(BLANK_ROW)
            else:
                out.append(csv_line(fields))
        write(b"".join(out))

    @staticmethod
    def classify(raw):
        """(reason, pieces) for a line that cannot be staged, (None, fields) for one that can."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:        # PostgreSQL text cannot hold a NUL either
            return "bad_encoding", pieces(raw.replace(b"\x00", b"\\x00").decode("utf-8", "backslashreplace"))
        try:
            fields = next(csv.reader([text], strict=True), [])
        except csv.Error:
            return "bad_row", pieces(text)
        if len(fields) != BAR_FIELDS or any('"' in f for f in fields):
            return "bad_row", pieces(text)
        return None, fields


def pieces(text):
    """A line cut at commas into the 8 quarantine columns (the last keeps any extra ones)."""
    parts = text.split(",", BAR_FIELDS - 1)
    return parts + [None] * (BAR_FIELDS - len(parts))


_BUFFER = io.StringIO()
_WRITER = csv.writer(_BUFFER, lineterminator="\n")


def csv_line(fields):
    """One CSV line (LF-terminated bytes) holding exactly these fields."""
    _BUFFER.seek(0)
    _BUFFER.truncate()
    _WRITER.writerow(fields)
    return _BUFFER.getvalue().encode("utf-8")
