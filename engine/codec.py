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

Speed: when the compiled native log store (``engine.storage._raftlog``) imports, ``crc32c``,
``encode_entries`` and ``decode_entries`` run their per-byte and per-record work in C (SSE4.2
CRC32C where the CPU has it) and only build the Python objects here; otherwise the pure-Python
reference versions below are used.  Both produce identical bytes.  Setting the environment
variable ``RAFT_ENGINE_NO_NATIVE=1`` forces the pure-Python versions (the tests use it).
``NATIVE`` tells which is active.
"""

from __future__ import annotations

import logging
import os
import struct
from array import array
from collections.abc import Sequence
from itertools import repeat
from operator import add
from typing import Any

from engine.types import Entry

logger = logging.getLogger(__name__)

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


def encode_entries_py(entries: Sequence[Entry]) -> bytes:
    """Encode entries as a batch of records, pure Python (the reference implementation).

    Raises:
        CodecError: a field does not fit its record field (negative, too large, kind > 255).
    """
    parts: list[bytes] = []
    pack = RECORD_HEADER.pack
    for entry in entries:
        try:
            body = pack(0, len(entry.data), entry.index, entry.term, entry.kind)[4:] + entry.data
        except (struct.error, TypeError) as exc:
            raise CodecError(
                f"entry {entry.index!r} does not fit the record format: {exc}"
            ) from None
        parts.append(struct.pack("<I", crc32c(body)) + body)
    return b"".join(parts)


def decode_entries_py(data: bytes | memoryview) -> list[Entry]:
    """Decode a batch of records, verifying every CRC; pure Python (the reference implementation).

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


# --- native acceleration ----------------------------------------------------------------------

_ffi: Any = None
_lib: Any = None


def _load_native() -> tuple[Any, Any]:
    """The cffi ``(ffi, lib)`` of the native store, or ``(None, None)`` when unavailable."""
    if os.environ.get("RAFT_ENGINE_NO_NATIVE", "") not in ("", "0"):
        return None, None
    try:
        from engine.storage._raftlog import ffi, lib
    except ImportError as exc:
        logger.debug("native codec unavailable (%s); using pure Python", exc)
        return None, None
    return ffi, lib


def crc32c_native(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C computed in C (SSE4.2 when available); same results as :func:`crc32c_py`."""
    buf = _ffi.from_buffer(data)
    return _lib.rl_crc32c(crc, buf, len(buf))


def encode_entries_native(entries: Sequence[Entry]) -> bytes:
    """Encode entries as a batch of records, the CRC and copying done in C.

    The only per-entry Python work is transposing the entries (``zip(*entries)``) and building
    the length array, both at C speed inside the interpreter.

    Raises:
        CodecError: a field does not fit its record field (negative, too large, kind > 255).
    """
    n = len(entries)
    if n == 0:
        return b""
    indexes, terms, kinds, datas = zip(*entries, strict=False)
    try:
        payload = b"".join(datas)
        idx = array("Q", indexes)
        trm = array("Q", terms)
        knd = bytes(kinds)
        lens = array("I", map(len, datas))
    except (OverflowError, ValueError, TypeError) as exc:
        raise CodecError(f"entries do not fit the record format: {exc}") from None
    size = HEADER_SIZE * n + len(payload)
    out = bytearray(size)
    ffi = _ffi
    written = _lib.rl_encode_parts(
        n,
        ffi.from_buffer("uint64_t[]", idx),
        ffi.from_buffer("uint64_t[]", trm),
        knd,
        ffi.from_buffer("uint32_t[]", lens),
        payload,
        len(payload),
        ffi.from_buffer(out),
        size,
    )
    if written != size:
        raise CodecError("entries do not fit the record format (a payload is over 64 MiB)")
    return bytes(out)


def decode_entries_native(data: bytes | memoryview) -> list[Entry]:
    """Decode a batch of records, the scan and CRC checks done in C.

    Raises:
        CodecError: truncated record, CRC mismatch, oversized length.
    """
    ffi, lib = _ffi, _lib
    raw = data if isinstance(data, bytes) else bytes(data)
    if not raw:
        return []
    count = ffi.new("size_t *")
    bad = ffi.new("size_t *")
    err = ffi.new("char[]", 256)
    if lib.rl_batch_scan(raw, len(raw), count, bad, err, 256) != 0:
        raise CodecError(ffi.string(err).decode("utf-8", "replace"))
    n = count[0]
    indexes = ffi.new("uint64_t[]", n)
    terms = ffi.new("uint64_t[]", n)
    kinds = ffi.new("uint8_t[]", n)
    offsets = ffi.new("uint64_t[]", n)
    lens = ffi.new("uint32_t[]", n)
    lib.rl_batch_fields(raw, len(raw), n, indexes, terms, kinds, offsets, lens)
    starts = ffi.unpack(offsets, n)
    payloads = map(raw.__getitem__, map(slice, starts, map(add, starts, ffi.unpack(lens, n))))
    fields = zip(
        ffi.unpack(indexes, n), ffi.unpack(terms, n), ffi.unpack(kinds, n), payloads, strict=False
    )
    return list(map(tuple.__new__, repeat(Entry, n), fields))


_ffi, _lib = _load_native()
NATIVE: bool = _lib is not None
"""True when the C implementations are in use."""

if NATIVE:
    crc32c = crc32c_native
    encode_entries = encode_entries_native
    decode_entries = decode_entries_native
else:
    crc32c = crc32c_py
    encode_entries = encode_entries_py
    decode_entries = decode_entries_py
