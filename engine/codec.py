"""The one binary record format for batches of entries.

A batch is the concatenation of records; the same bytes are an AppendEntries payload on the wire
and a run of records in a native log segment, so a follower can append what it received without
re-encoding.  One record::

    offset size  field
    0      4     crc32c   little-endian CRC32C of bytes [4, 25 + length)
    4      4     length   payload length in bytes
    8      8     index    log index
    16     8     term     log term
    24     1     kind     EntryKind
    25     n     payload  the command bytes

All integers are little-endian and unsigned.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from engine.types import Entry

RECORD_HEADER = struct.Struct("<IIQQB")
HEADER_SIZE = RECORD_HEADER.size  # 25
MAX_RECORD_PAYLOAD = 64 << 20


class CodecError(ValueError):
    """Bytes that are not a well-formed batch of records (bad CRC, truncated, oversized)."""


def _make_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c_py(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli), pure Python: the reference implementation, slow."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c = crc32c_py


def encode_entries(entries: Sequence[Entry]) -> bytes:
    """Encode entries as a batch of records."""
    parts: list[bytes] = []
    pack = RECORD_HEADER.pack
    for entry in entries:
        body = pack(0, len(entry.data), entry.index, entry.term, entry.kind)[4:] + entry.data
        parts.append(struct.pack("<I", crc32c(body)) + body)
    return b"".join(parts)


def decode_entries(data: bytes | memoryview) -> list[Entry]:
    """Decode a batch of records, verifying every CRC.

    Raises:
        CodecError: truncated record, CRC mismatch, oversized length.
    """
    view = memoryview(data)
    out: list[Entry] = []
    offset = 0
    end = len(view)
    unpack = RECORD_HEADER.unpack_from
    while offset < end:
        if end - offset < HEADER_SIZE:
            raise CodecError(f"truncated record header at offset {offset}")
        crc, length, index, term, kind = unpack(view, offset)
        if length > MAX_RECORD_PAYLOAD or offset + HEADER_SIZE + length > end:
            raise CodecError(f"record at offset {offset} claims {length} bytes past the end")
        stop = offset + HEADER_SIZE + length
        if crc32c(view[offset + 4:stop]) != crc:
            raise CodecError(f"CRC mismatch in record at offset {offset} (index {index})")
        out.append(Entry(index, term, kind, bytes(view[offset + HEADER_SIZE:stop])))
        offset = stop
    return out
