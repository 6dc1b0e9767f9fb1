"""Unit tests of the ingest's pure helpers (module_utils/quantdb_files.py): the date format
as a strict regex, and BarStream, which decides line by line what the typed COPY may see."""
import gzip
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "module_utils"))
import quantdb_files as qf  # noqa: E402

HEADER = b"ticker,region,date,open,high,low,close,volume\n"


def iso(fmt, text):
    """What the module's SQL does with the regex: year-month-day from the groups, or None.
    The regexes use only what POSIX AREs and Python's re read alike."""
    pattern, (y, m, d) = qf.strftime_to_regex(fmt)
    match = re.match(pattern, text)
    return "%s-%s-%s" % (match.group(y), match.group(m), match.group(d)) if match else None


@pytest.mark.parametrize("fmt, text, want", [
    ("%Y-%m-%d", "2024-01-02", "2024-01-02"),
    ("%Y-%m-%d", "2024-1-02", None),            # not zero-padded
    ("%Y-%m-%d", "20240102", None),
    ("%Y-%m-%d", "today", None),
    ("%Y-%m-%d", " 2024-01-02", None),
    ("%Y-%m-%d", "2024-01-02x", None),
    ("%d/%m/%Y", "01/02/2024", "2024-02-01"),   # day first: 1 February
    ("%d/%m/%Y", "2024-02-01", None),
    ("%m/%d/%Y", "01/02/2024", "2024-01-02"),
    ("%Y%m%d", "20240105", "2024-01-05"),
    ("%Y%m%d", "2024-01-05", None),
    ("%d.%m.%Y", "05.01.2024", "2024-01-05"),
    ("%d.%m.%Y", "05x01x2024", None),           # a literal point is not "any character"
    ("%Y-%m-%dT00:00", "2024-01-05T00:00", "2024-01-05"),
    ("%d %m %Y", "05 01 2024", "2024-01-05"),
    ("%Y%%%m%%%d", "2024%01%05", "2024-01-05"),
])
def test_date_format_reads_only_what_it_says(fmt, text, want):
    assert iso(fmt, text) == want


def test_date_format_groups_and_escapes():
    assert qf.strftime_to_regex("%d/%m/%Y") == ("^([0-9]{2})\\/([0-9]{2})\\/([0-9]{4})$", (3, 2, 1))
    assert qf.strftime_to_regex("%Y-%m-%d") == ("^([0-9]{4})\\-([0-9]{2})\\-([0-9]{2})$", (1, 2, 3))


@pytest.mark.parametrize("fmt, error", [
    ("%y-%m-%d", "%y is not supported"),
    ("%Y-%m", "must contain %Y, %m and %d once each"),
    ("%Y-%m-%d-%d", "%d twice"),
    ("%Y-%m-%b", "%b is not supported"),
    ("%Y-%m-%d%", "lone %"),
])
def test_date_format_refuses_what_it_cannot_read_exactly(fmt, error):
    with pytest.raises(ValueError) as exc:
        qf.strftime_to_regex(fmt)
    assert error in str(exc.value)


def test_format_literals_are_punctuation_safe_for_a_csv_line():
    assert qf.format_literals("%d/%m/%Y") == b"/"
    assert qf.format_literals("%Y-%m-%d") == b"-"
    assert qf.format_literals("%Y%m%d") == b""
    assert qf.format_literals('%d,%m"%Y') == b""      # a comma or quote never joins the fast path


def stream(tmp_path, content, name="bars.csv", **kwargs):
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    out = []
    result = qf.BarStream(str(path), **kwargs).run(out.append)
    return result, b"".join(out)


def test_a_clean_file_goes_through_unchanged(tmp_path):
    body = b"AAPL,US,2024-01-02,185.5,186,184.25,185.64,52000000\n005930,KR,2024-01-02,78000,79000,77500,78500,1e3\n"
    result, sent = stream(tmp_path, HEADER + body, "bars.csv.gz")
    # 1e3 as a volume is not the fast path's shape (digits only): that line is held apart.
    assert result.rows == 2 and result.bad == []
    assert result.suspects == [(3, ["005930", "KR", "2024-01-02", "78000", "79000", "77500", "78500", "1e3"])]
    assert sent == HEADER + body.splitlines(True)[0] + qf.BLANK_ROW


def test_every_lenient_or_broken_line_is_held_apart_with_its_line(tmp_path):
    lines = [
        b"A,US,2024-01-02,10,11,9,10,100",            # 2 clean
        b"A,US,2024-01-03,0x10,11,9,10,100",          # 3 hex: suspect
        b"A,US,2024-01-04,10,11,9,10,1_000",          # 4 underscore: suspect
        b"A,US,2024-01-05,NaN,11,9,10,100",           # 5 letters in a price: suspect
        b"A,US,2024-01-08, 10,11,9,10,100",           # 6 space: suspect
        b'"A","US","2024-01-09","10","11","9","10","100"',  # 7 quoted: suspect, fields parsed
        b"A,US,2024-01-10,10,11,9,10",                # 8 seven fields: bad_row
        b"A,US,2024-01-11,10,11,9,10,100,1",          # 9 nine fields: bad_row
        b'A"B,US,2024-01-12,10,11,9,10,100',          # 10 stray quote: bad_row
        b'"A,US,2024-01-15,10,11,9,10,100',           # 11 unterminated quote: bad_row
        b"A\xff,US,2024-01-16,10,11,9,10,100",        # 12 not UTF-8: bad_encoding
        b"A,US,2024-01-17,10,11,9,10,1\x000",         # 13 NUL: bad_encoding
        b"",                                          # 14 empty line: bad_row
        b"\\.",                                       # 15 COPY's end-of-data marker: bad_row
        b"A,US,today,10,11,9,10,100",                 # 16 clean (dates are checked in SQL)
    ]
    result, sent = stream(tmp_path, HEADER + b"\r\n".join(lines) + b"\r\n")
    assert result.rows == len(lines)
    assert [(line, reason) for line, reason, _pieces in result.bad] == [
        (8, "bad_row"), (9, "bad_row"), (10, "bad_row"), (11, "bad_row"), (12, "bad_encoding"), (13, "bad_encoding"),
        (14, "bad_row"), (15, "bad_row")]
    assert [line for line, _fields in result.suspects] == [3, 4, 5, 6, 7]
    assert result.suspects[4][1] == ["A", "US", "2024-01-09", "10", "11", "9", "10", "100"]
    assert result.bad[1][2] == ["A", "US", "2024-01-11", "10", "11", "9", "10", "100,1"]   # extra field kept
    assert result.bad[4][2][0] == "A\\xff"
    # One COPY row per line, CRLF made LF: the identity column numbers rows by their line.
    rows = sent.split(b"\n")
    assert len(rows) == len(lines) + 2 and rows[-1] == b""
    assert rows[1] == lines[0] and rows[15] == lines[14]
    assert all(rows[i] == qf.BLANK_ROW[:-1] for i in range(2, 15))


def test_text_staging_writes_suspects_as_parsed_csv(tmp_path):
    result, sent = stream(tmp_path, HEADER + b'"A","US","2024-01-09","1,5","11","9","10","100"\nA,US,2024-01-10,10,11,9,10\n',
                          typed=False)
    assert result.suspects == [] and [b[:2] for b in result.bad] == [(3, "bad_row")]
    assert sent == HEADER + b'A,US,2024-01-09,"1,5",11,9,10,100\n' + qf.BLANK_ROW


def test_too_many_suspects_stops_the_typed_staging(tmp_path):
    body = b"".join(b"A,US,2024-01-%02d,0x10,11,9,10,100\n" % d for d in range(1, 5))
    with pytest.raises(qf.TooManySuspects):
        stream(tmp_path, HEADER + body, max_suspects=3)


def test_date_format_literals_keep_a_vendor_file_on_the_fast_path(tmp_path):
    body = b"A,US,02/01/2024,10,11,9,10,100\n"
    assert stream(tmp_path, HEADER + body)[0].suspects            # '/' is not fast-path by default
    result, sent = stream(tmp_path, HEADER + body, extra_allowed=qf.format_literals("%d/%m/%Y"))
    assert result.suspects == [] and sent == HEADER + body
    # The literal is allowed in the date only: in a price it still holds the line apart.
    result, _sent = stream(tmp_path, HEADER + b"A,US,02/01/2024,1/0,11,9,10,100\n",
                           extra_allowed=qf.format_literals("%d/%m/%Y"))
    assert [line for line, _fields in result.suspects] == [2]


def test_last_line_without_newline_and_lines_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(qf, "CHUNK", 7)     # lines longer than a block, cut anywhere
    body = b"A,US,2024-01-02,10,11,9,10,100\nA,US,2024-01-03,10,11,9,10,0x1\nA,US,2024-01-04,10,11,9,10,100"
    result, sent = stream(tmp_path, HEADER + body)
    assert result.rows == 3 and [line for line, _fields in result.suspects] == [3]
    assert sent == HEADER + body.split(b"\n")[0] + b"\n" + qf.BLANK_ROW + body.split(b"\n")[2] + b"\n"


def test_truncated_and_corrupt_gzip_name_the_file(tmp_path):
    data = gzip.compress(HEADER + b"A,US,2024-01-02,10,11,9,10,100\n" * 50000)
    path = tmp_path / "t.csv.gz"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(qf.UnreadableFile) as exc:
        qf.BarStream(str(path)).run(lambda block: None)
    assert str(exc.value).startswith("%s: cannot read the file: truncated gzip" % path)
    corrupt = bytearray(data)
    corrupt[-8] ^= 0xFF                    # the CRC-32 of the trailer
    path.write_bytes(bytes(corrupt))
    with pytest.raises(qf.UnreadableFile) as exc:
        qf.BarStream(str(path)).run(lambda block: None)
    assert "cannot read the file: corrupt gzip (CRC check failed" in str(exc.value)


def test_read_header_reads_a_quoted_header_and_a_bom(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b'\xef\xbb\xbf"ticker","region",date\r\nx\n')
    assert qf.read_header(str(path)) == ["ticker", "region", "date"]


def test_lines_copy_refused_before_are_held_apart(tmp_path):
    body = b"A,US,2024-01-02,10,1e400,9,10,100\nA,US,2024-01-03,10,11,9,10,100\n"
    result, sent = stream(tmp_path, HEADER + body, strict_lines={2})
    assert result.suspects == [(2, ["A", "US", "2024-01-02", "10", "1e400", "9", "10", "100"])]
    assert sent == HEADER + qf.BLANK_ROW + body.split(b"\n")[1] + b"\n"
