"""The wire frame for one Raft message, and a streaming decoder for a TCP byte stream.

A frame is a fixed little-endian header packed with :mod:`struct`, the two node ids, and the
entries as :func:`engine.codec.encode_entries` records (the native log's own record format, each
record with its own CRC32C)::

    offset size  field
    0      4     length         bytes after this field (= 85 + src_len + dst_len + entries_len)
    4      4     header_crc     zlib CRC-32 of bytes [8, 89 + src_len + dst_len): header and ids
    8      2     magic          0x5246 ("FR" little-endian)
    10     1     version        2
    11     1     kind           MessageKind value
    12     8     term
    20     8     log_term
    28     8     index
    36     8     commit
    44     8     reject_hint
    52     8     conflict_term
    60     8     context
    68     8     leader_last
    76     1     flags          bit 0: reject; bit 1: the payload is raw ``data`` (snapshot
                                chunks), not entry records; bit 2: the sender is recovering;
                                other bits must be 0
    77     2     src_len        utf-8 bytes of src (1..MAX_ID_BYTES)
    79     2     dst_len        utf-8 bytes of dst (1..MAX_ID_BYTES)
    81     4     entry_count    number of entry records
    85     4     entries_len    bytes of entry records
    89     ...   src, dst (utf-8), then entries_len bytes of records

The header CRC guards the fields the record CRCs do not cover, so a corrupted header is reported
as such instead of as a confusing decode error further on.  All integers are unsigned.

Everything malformed raises :class:`~engine.errors.FrameError` with a message that says what was
wrong and where; nothing else escapes :func:`decode_message` or :class:`FrameDecoder`.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator

from engine.codec import CodecError, decode_entries, encode_entries
from engine.core.messages import Message, MessageKind
from engine.errors import FrameError

logger = logging.getLogger(__name__)

MAGIC = 0x5246
VERSION = 2
HEADER = struct.Struct("<IIHBBQQQQQQQQBHHII")
HEADER_SIZE = HEADER.size  # 89
_LENGTH = struct.Struct("<I")
_PREFIX = _LENGTH.size  # the length field itself
_CRC_START = 8  # header_crc covers from here to the end of dst
MAX_ID_BYTES = 1024
DEFAULT_MAX_FRAME_SIZE = 64 << 20
"""Largest accepted frame, prefix included (bytes); bounds the memory a peer can make us use."""

_FLAG_REJECT = 0x01
_FLAG_DATA = 0x02
_FLAG_RECOVERING = 0x04
_KNOWN_FLAGS = _FLAG_REJECT | _FLAG_DATA | _FLAG_RECOVERING
_U64 = (1 << 64) - 1
_KINDS = {int(kind): kind for kind in MessageKind}
_INT_FIELDS = ("term", "log_term", "index", "commit", "reject_hint", "conflict_term", "context",
               "leader_last")


def encode_message(msg: Message, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The frame for ``msg``, length prefix included (frames concatenate into a stream).

    Raises:
        FrameError: the message cannot be framed (local fault, nothing sent): an integer field
            out of the unsigned 64-bit range, an entry that does not fit the record format, an
            empty or too long id, or a frame larger than ``max_frame_size``.
    """
    src = msg.src.encode()
    dst = msg.dst.encode()
    if not 0 < len(src) <= MAX_ID_BYTES or not 0 < len(dst) <= MAX_ID_BYTES:
        raise FrameError(f"cannot encode {msg.kind!r}: src/dst must be 1..{MAX_ID_BYTES} utf-8 "
                         f"bytes, got {len(src)} and {len(dst)}")
    entries = msg.entries
    flags = _FLAG_REJECT if msg.reject else 0
    if msg.recovering:
        flags |= _FLAG_RECOVERING
    if msg.data:
        if entries:
            raise FrameError(f"cannot encode {msg.kind.name}: both entries and data")
        payload = bytes(msg.data)
        flags |= _FLAG_DATA
    else:
        try:
            payload = encode_entries(entries) if entries else b""
        except CodecError as exc:
            raise FrameError(f"cannot encode {msg.kind.name}: {exc}") from None
    length = HEADER_SIZE - _PREFIX + len(src) + len(dst) + len(payload)
    if length + _PREFIX > max_frame_size:
        raise FrameError(f"cannot encode {msg.kind.name}: frame of {length + _PREFIX} bytes "
                         f"exceeds max_frame_size={max_frame_size}")
    try:
        header = HEADER.pack(
            length, 0, MAGIC, VERSION, msg.kind, msg.term, msg.log_term, msg.index, msg.commit,
            msg.reject_hint, msg.conflict_term, msg.context, msg.leader_last, flags,
            len(src), len(dst), len(entries), len(payload))
    except struct.error:
        bad = [name for name in _INT_FIELDS
               if not (isinstance(getattr(msg, name), int) and 0 <= getattr(msg, name) <= _U64)]
        raise FrameError(f"cannot encode {msg.kind!r}: fields {bad} must be ints in "
                         "[0, 2**64)") from None
    crc = zlib.crc32(dst, zlib.crc32(src, zlib.crc32(memoryview(header)[_CRC_START:])))
    return b"".join((header[:4], _LENGTH.pack(crc), header[_CRC_START:], src, dst, payload))


def _decode_frame(view: memoryview, start: int, length: int) -> Message:
    """Decode the frame at ``view[start:]`` whose length field says ``length``.

    The caller has checked that ``length + 4`` bytes are present.
    """
    if length < HEADER_SIZE - _PREFIX:
        raise FrameError(f"frame length {length} is shorter than the {HEADER_SIZE}-byte header")
    (_, crc, magic, version, kind_value, term, log_term, index, commit, reject_hint,
     conflict_term, context, leader_last, flags, src_len, dst_len, entry_count,
     entries_len) = HEADER.unpack_from(view, start)
    if magic != MAGIC:
        raise FrameError(f"bad magic 0x{magic:04x} (expected 0x{MAGIC:04x}): not a raft frame")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this node speaks {VERSION})")
    expected = HEADER_SIZE - _PREFIX + src_len + dst_len + entries_len
    if expected != length:
        raise FrameError(f"frame length {length} disagrees with its header (src_len={src_len} "
                         f"dst_len={dst_len} entries_len={entries_len} need {expected})")
    ids_end = start + HEADER_SIZE + src_len + dst_len
    actual = zlib.crc32(view[start + _CRC_START:ids_end])
    if actual != crc:
        raise FrameError(f"header CRC mismatch (frame says 0x{crc:08x}, computed 0x{actual:08x})")
    kind = _KINDS.get(kind_value)
    if kind is None:
        raise FrameError(f"unknown message kind {kind_value}")
    if flags & ~_KNOWN_FLAGS:
        raise FrameError(f"unknown flag bits 0x{flags & ~_KNOWN_FLAGS:02x} in {kind.name} frame")
    if not 0 < src_len <= MAX_ID_BYTES or not 0 < dst_len <= MAX_ID_BYTES:
        raise FrameError(f"{kind.name} frame: src_len={src_len} dst_len={dst_len} must be "
                         f"1..{MAX_ID_BYTES}")
    pos = start + HEADER_SIZE
    try:
        src = str(view[pos:pos + src_len], "utf-8")
        dst = str(view[pos + src_len:ids_end], "utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"{kind.name} frame: node id is not valid utf-8 ({exc.reason})") from None
    data = b""
    if flags & _FLAG_DATA:
        if entry_count:
            raise FrameError(f"{kind.name} frame from {src!r}: data frame claims "
                             f"{entry_count} entries")
        data = bytes(view[ids_end:ids_end + entries_len])
        entries: tuple = ()
    elif entries_len:
        try:
            entries = tuple(decode_entries(view[ids_end:ids_end + entries_len]))
        except CodecError as exc:
            raise FrameError(f"{kind.name} frame from {src!r}: bad entries: {exc}") from None
    else:
        entries = ()
    if len(entries) != entry_count:
        raise FrameError(f"{kind.name} frame from {src!r}: header says {entry_count} entries, "
                         f"payload holds {len(entries)}")
    return Message(kind=kind, src=src, dst=dst, term=term, log_term=log_term, index=index,
                   entries=entries, commit=commit, reject=bool(flags & _FLAG_REJECT),
                   reject_hint=reject_hint, conflict_term=conflict_term, context=context,
                   leader_last=leader_last, recovering=bool(flags & _FLAG_RECOVERING),
                   data=data)


def decode_message(buf: bytes | bytearray | memoryview,
                   max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> Message:
    """Decode exactly one frame (length prefix included).

    Raises:
        FrameError: truncated, trailing bytes, oversized, bad magic/version/CRC, unknown kind or
            flags, bad ids or entries.  The message names the problem.
    """
    view = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
    if len(view) < HEADER_SIZE:
        raise FrameError(f"truncated frame: {len(view)} bytes, header alone is {HEADER_SIZE}")
    (length,) = _LENGTH.unpack_from(view, 0)
    if length + _PREFIX > max_frame_size:
        raise FrameError(f"frame of {length + _PREFIX} bytes exceeds max_frame_size="
                         f"{max_frame_size}")
    if len(view) < length + _PREFIX:
        raise FrameError(f"truncated frame: length field says {length + _PREFIX} bytes, "
                         f"got {len(view)}")
    if len(view) > length + _PREFIX:
        raise FrameError(f"{len(view) - length - _PREFIX} trailing bytes after the frame")
    return _decode_frame(view, 0, length)


class FrameDecoder:
    """Turns a byte stream (as TCP delivers it, in arbitrary pieces) into messages.

    Usage: ``for msg in decoder.feed(data): ...``.  ``feed`` buffers the data at once; iterating
    its result decodes the complete frames buffered so far.  Stopping the iteration early is
    safe: the remaining frames are decoded by the next ``feed``.

    Frames are decoded in place from the received chunk; a frame split across chunks is joined
    once, when all of its bytes are there (so a large frame costs one copy, not one per chunk).
    An oversized length is refused as soon as its 4 bytes arrive, before anything is buffered.

    After a :class:`FrameError` the stream has lost its framing; the decoder refuses further
    input (raising FrameError again) and the connection should be closed.

    Not thread-safe: one decoder per connection, used by that connection's thread.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < HEADER_SIZE:
            raise ValueError(f"max_frame_size={max_frame_size} must be >= {HEADER_SIZE}")
        self.max_frame_size = max_frame_size
        self._data = b""  # current chunk; bytes before self._pos are decoded
        self._pos = 0
        self._pending: list[bytes] = []  # chunks received after self._data
        self._pending_size = 0
        self._need = _PREFIX  # bytes from self._pos needed before the next decode attempt
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (a partial frame)."""
        return len(self._data) - self._pos + self._pending_size

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Message]:
        """Buffer ``data`` and return an iterator over the messages now complete.

        Raises (from the iterator, after yielding the good messages before the bad frame):
            FrameError: a malformed or oversized frame, or input after an earlier FrameError.
        """
        if self._failed is None and len(data):
            chunk = data if isinstance(data, bytes) else bytes(data)
            if self._pos >= len(self._data) and not self._pending:
                self._data, self._pos = chunk, 0
            else:
                self._pending.append(chunk)
                self._pending_size += len(chunk)
        return self._drain()

    def _fail(self, message: str) -> FrameError:
        self._failed = message
        self._data, self._pos, self._pending, self._pending_size = b"", 0, [], 0
        return FrameError(message)

    def _drain(self) -> Iterator[Message]:
        if self._failed is not None:
            raise FrameError(f"decoder already failed: {self._failed}")
        limit = self.max_frame_size
        while True:
            data, pos = self._data, self._pos
            have = len(data) - pos
            if have < self._need:
                if not self._pending or have + self._pending_size < self._need:
                    return
                self._pending.insert(0, data[pos:])
                self._data, self._pos = b"".join(self._pending), 0
                self._pending, self._pending_size = [], 0
                continue
            (length,) = _LENGTH.unpack_from(data, pos)
            if length + _PREFIX > limit:
                raise self._fail(f"frame of {length + _PREFIX} bytes exceeds "
                                 f"max_frame_size={limit}")
            if length < HEADER_SIZE - _PREFIX:
                raise self._fail(f"frame length {length} is shorter than the "
                                 f"{HEADER_SIZE}-byte header")
            total = length + _PREFIX
            if have < total:
                self._need = total
                continue
            try:
                msg = _decode_frame(memoryview(data), pos, length)
            except FrameError as exc:
                raise self._fail(str(exc)) from None
            self._pos = pos + total
            self._need = _PREFIX
            yield msg
