"""Corrupt a B-tree leaf page the way amcheck's own tests do (pg_amcheck's t/003_check.pl
overwrites line pointers): swap the first two line pointers of block <block> of the index file
<file>, so two index tuples are out of order, and store a valid data checksum for the changed
page, so amcheck sees the logical damage ("item order invariant violated") instead of a checksum
failure (which would also count in pg_stat_database.checksum_failures for good).

Run inside the container with the server stopped: python3 - <file> <block> < chk_corrupt_btree.py
The checksum is PostgreSQL's pg_checksum_page (storage/checksum_impl.h): 32 FNV-1a-style lanes
over the page as uint32 words with pd_checksum zeroed, two rounds of zeros, XOR-folded, XOR the
block number, then mod 65535 plus 1. The script first checks it reproduces the stored checksum.
"""
import struct
import sys

BASE = [0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
        0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
        0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
        0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756]
def checksum(page, blkno):
    page = page[:8] + b"\0\0" + page[10:]
    words = struct.unpack("<2048I", page)
    sums = list(BASE)
    def comp(s, v):
        t = (s ^ v) & 0xFFFFFFFF
        return ((t * 16777619) & 0xFFFFFFFF) ^ (t >> 17)
    for i in range(64):
        row = words[i * 32:(i + 1) * 32]
        for j in range(32):
            sums[j] = comp(sums[j], row[j])
    for _ in range(2):
        for j in range(32):
            sums[j] = comp(sums[j], 0)
    result = 0
    for s in sums:
        result ^= s
    result ^= blkno
    return (result % 65535) + 1
path, blkno = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(blkno * 8192)
    page = f.read(8192)
    stored = struct.unpack_from("<H", page, 8)[0]
    assert checksum(page, blkno) == stored, "checksum algorithm does not match the page (%d)" % stored
    lp1, lp2 = page[24:28], page[28:32]
    page = page[:24] + lp2 + lp1 + page[32:]
    page = page[:8] + struct.pack("<H", checksum(page, blkno)) + page[10:]
    f.seek(blkno * 8192)
    f.write(page)
print("swapped line pointers 1 and 2 of block %d" % blkno)
