"""Pure-Python log and hard-state stores, in exactly the on-disk format of the native store.

This module is also the Python statement of that format (constants below); the C side is
``native/include/raftlog.h``.  The two implementations read each other's files, and the test suite
checks it.  ``open_stores`` falls back to these classes when the compiled module is missing; they
are correct but slower (every record's CRC is computed by ``engine.codec.crc32c``, which is the
native CRC when the module exists and pure Python otherwise).

Layout of a store directory::

    <first index, 20 digits>.seg   segment: 32-byte header, then records (engine/codec.py format)
    hardstate                      term, vote, commit, recovering; replaced atomically
    hardstate.tmp                  a save in progress; ignored
    syncmark                       the sync mark: the last index a sync made durable

The hard state file is format version 2 (``HARDSTATE_HEADER``: magic, version, vote length,
term, commit, recovering, then the vote and a CRC32C); version 1 files (no ``recovering``) still
load, with ``recovering=0``.  Saves write version 2.

Sync mark (same as native, see ``raftlog.h``): after every successful ``sync()`` the store writes
the last index that sync made durable to ``syncmark`` (32 bytes, ``SYNCMARK``: magic, version,
size, index, 0, CRC32C of the first 28 bytes), with one ``pwrite`` at offset 0 once the
fdatasyncs returned and no flush of its own; it is skipped when the value would not rise, so a
sync never lowers it.  ``truncate_suffix(i)`` lowers it to ``i - 1`` first (flushed when fsync
is on), ``reset(n)`` sets it to ``n - 1``, ``compact_prefix`` leaves it, ``close()`` flushes it
(fsync on).  With ``fsync=False`` it is still written on every sync (the page cache outlives a
process crash) but never flushed.  So the value on the device never claims more than was made
durable.  On open it is read into :attr:`FileLogStore.synced_index_at_open` (0 when missing;
0 and a reported repair when unreadable): a recovered log that ends below it lost entries a
sync had made durable, which the node may have acknowledged.

Durability rules (same as native): appends reach the OS at once and the device at ``sync()``;
structural changes (new segment, removed segments, truncated suffix, repaired tail) are flushed
immediately when ``fsync`` is on, so that after a crash the segments always chain and a removed
suffix never reappears behind newer entries.  A failed fsync poisons the store (writes raise
:class:`StorageError` until it is reopened): after a failed fsync the kernel may have dropped the
dirty pages, and retrying would report success for data that is gone.

Recovery rules (same as native): see :class:`FileLogStore`.  A directory whose only segment is
a bare header starting at N (what ``reset(N)`` leaves) is an empty log at N.  With
``discard_corrupt_suffix`` corruption before the tail cuts the log at the first damage instead of
raising.  Every repair names the first index it lost (:attr:`RecoveryAction.first_lost`).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import logging
import os
import re
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from engine import codec
from engine.codec import HEADER_SIZE, MAX_RECORD_PAYLOAD, RECORD_HEADER, CodecError
from engine.errors import CorruptLogError, StorageError
from engine.types import EMPTY_HARD_STATE, Entry, HardState, Index, Term

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"RAFTSEG\0"
SEGMENT_HEADER = struct.Struct("<8sIIQII")  # magic, version, header size, first index, 0, crc32c
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32
HARDSTATE_MAGIC = b"RAFTHST\0"
HARDSTATE_VERSION = 2
# magic, version, vote length, term, commit, recovering (version 2; version 1 lacks recovering)
HARDSTATE_HEADER = struct.Struct("<8sIIQQQ")
HARDSTATE_HEADER_V1 = struct.Struct("<8sIIQQ")
HARDSTATE_FILE = "hardstate"
HARDSTATE_TMP = "hardstate.tmp"
NO_VOTE = 0xFFFFFFFF
MAX_VOTE = 4096
DEFAULT_SEGMENT_SIZE = 64 << 20
MAX_SEGMENT_SIZE = 1 << 31
MAX_BATCH = 1 << 30
SYNCMARK_FILE = "syncmark"
SYNCMARK_MAGIC = b"RAFTSYN\0"
SYNCMARK = SEGMENT_HEADER  # the same layout: magic, version (1), size (32), index, 0, crc32c
SYNCMARK_SIZE = SYNCMARK.size  # 32
_SEGMENT_NAME = re.compile(r"^[0-9]{20}\.seg$")
_CHUNK = 4 << 20


def segment_name(first: Index) -> str:
    """File name of the segment whose first record has index ``first``."""
    return f"{first:020d}.seg"


def _encode_fixed32(magic: bytes, value: int) -> bytes:
    """The 32-byte layout shared by segment headers and the sync mark: magic, version (1),
    size (32), value, 0, CRC32C of the first 28 bytes."""
    body = SEGMENT_HEADER.pack(magic, FORMAT_VERSION, SEGMENT_HEADER_SIZE, value, 0, 0)
    return body[:28] + struct.pack("<I", codec.crc32c(body[:28]))


def encode_segment_header(first: Index) -> bytes:
    """The 32-byte header of a segment starting at ``first``."""
    return _encode_fixed32(SEGMENT_MAGIC, first)


def check_segment_header(data: bytes) -> tuple[int, str | None]:
    """``(first index, None)`` for a good header, else ``(0, what is wrong)``."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return 0, "segment header cut short"
    magic, version, size, first, _, crc = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return 0, "bad segment magic"
    if codec.crc32c(data[:28]) != crc:
        return 0, "segment header CRC mismatch"
    if version != FORMAT_VERSION:
        return 0, "unsupported segment format version"
    if size != SEGMENT_HEADER_SIZE:
        return 0, "unexpected segment header size"
    if first == 0:
        return 0, "segment first index is 0"
    return first, None


def encode_syncmark(index: Index) -> bytes:
    """The 32 bytes of a ``syncmark`` file recording ``index``."""
    return _encode_fixed32(SYNCMARK_MAGIC, index)


def decode_syncmark(data: bytes) -> tuple[int, str | None]:
    """``(index, None)`` for a good ``syncmark`` file (``(0, None)`` when empty: no record), else
    ``(0, what is wrong)``."""
    if not data:
        return 0, None
    if len(data) != SYNCMARK_SIZE:
        return 0, "wrong size"
    index = SYNCMARK.unpack(data)[3]
    if data == encode_syncmark(index):
        return index, None
    if not data.startswith(SYNCMARK_MAGIC):
        return 0, "bad magic"
    if codec.crc32c(data[:28]) != SYNCMARK.unpack(data)[5]:
        return 0, "CRC mismatch"
    return 0, "unsupported version"


def encode_hard_state(state: HardState) -> bytes:
    """The bytes of a ``hardstate`` file (version 2) holding ``state``.

    Raises:
        ValueError: a negative or oversized field, or a vote over 4096 bytes of UTF-8.
    """
    vote = b"" if state.vote is None else state.vote.encode("utf-8")
    if len(vote) > MAX_VOTE:
        raise ValueError(f"vote {state.vote!r} is over {MAX_VOTE} bytes")
    try:
        body = HARDSTATE_HEADER.pack(
            HARDSTATE_MAGIC,
            HARDSTATE_VERSION,
            NO_VOTE if state.vote is None else len(vote),
            state.term,
            state.commit,
            state.recovering,
        )
    except struct.error as exc:
        raise ValueError(f"hard state {state!r} does not fit the format: {exc}") from None
    body += vote
    return body + struct.pack("<I", codec.crc32c(body))


def decode_hard_state(data: bytes, path: str) -> HardState:
    """Parse a ``hardstate`` file, version 2 or 1 (``recovering=0``).

    Raises:
        CorruptLogError: the file is cut short, has a bad magic, version or CRC (names ``path``).
    """
    if len(data) < HARDSTATE_HEADER_V1.size + 4:
        raise CorruptLogError(f"corrupt hard state: {path} is {len(data)} bytes, cut short")
    magic, version, vote_len, term, commit = HARDSTATE_HEADER_V1.unpack_from(data)
    if magic != HARDSTATE_MAGIC:
        raise CorruptLogError(f"corrupt hard state: bad magic in {path} at offset 0")
    if version not in (1, HARDSTATE_VERSION):
        raise CorruptLogError(
            f"hard state {path} has unsupported format version {version} at offset 8"
        )
    fixed = HARDSTATE_HEADER_V1.size if version == 1 else HARDSTATE_HEADER.size
    if vote_len != NO_VOTE and vote_len > MAX_VOTE:
        raise CorruptLogError(
            f"corrupt hard state: vote length {vote_len} at offset 12 of {path} is too large"
        )
    body = fixed + (0 if vote_len == NO_VOTE else vote_len)
    if len(data) != body + 4:
        raise CorruptLogError(
            f"corrupt hard state: {path} is {len(data)} bytes, expected {body + 4}"
        )
    (crc,) = struct.unpack_from("<I", data, body)
    if codec.crc32c(data[:body]) != crc:
        raise CorruptLogError(f"corrupt hard state: CRC mismatch in {path} at offset {body}")
    vote = None
    if vote_len != NO_VOTE:
        try:
            vote = data[fixed:body].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptLogError(f"corrupt hard state: vote in {path} is not UTF-8") from None
    recovering = 0 if version == 1 else HARDSTATE_HEADER.unpack_from(data)[5]
    return HardState(term=term, vote=vote, commit=commit, recovering=recovering)


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    """One repair that opening a log store made: bytes that were dropped.

    ``file`` is the file name inside the store directory (a segment, or ``syncmark``),
    ``offset`` where the dropped bytes started, ``bytes_dropped`` how many; ``removed`` is True
    when the whole file went (a segment whose creation was torn, or one discarded with
    ``discard_corrupt_suffix``).  ``first_lost`` is the first log index the repair lost: the
    index the first dropped record had or would have had (for a segment that does not chain, the
    first missing index); 0 when no entry was lost (an unreadable sync mark, taken as no record).

    A torn tail or torn segment creation normally holds nothing a successful ``sync()`` made
    durable -- but a rotten newest record looks exactly like a torn tail, so compare with
    ``synced_index_at_open``.  A discarded range may hold entries that were durable and even
    committed.
    """

    file: str
    offset: int
    bytes_dropped: int
    removed: bool
    reason: str
    first_lost: int = 0

    def __str__(self) -> str:
        what = "removed" if self.removed else "truncated"
        lost = f", entries from index {self.first_lost} on" if self.first_lost else ""
        return (
            f"{self.file}: {what} {self.bytes_dropped} bytes at offset {self.offset}{lost} "
            f"({self.reason})"
        )


def log_recovery(directory: str, actions: Sequence[RecoveryAction]) -> None:
    """Log one warning per recovery action (shared by the native and Python stores)."""
    for action in actions:
        logger.warning("log recovery in %s: %s", directory, action)


def storage_error(exc: OSError, what: str) -> StorageError:
    """A StorageError that names the operation and file, keeping ``errno``."""
    err = StorageError(f"{what}: {exc.strerror or exc}")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


def _fsync_dir(fd: int) -> None:
    os.fsync(fd)


class _Segment:
    """One open segment file.  Invariant: offsets[k]/terms[k] belong to index first + k."""

    __slots__ = ("dirty", "fd", "first", "name", "offsets", "path", "size", "terms")

    def __init__(self, directory: str, first: Index, fd: int, size: int) -> None:
        self.name = segment_name(first)
        self.path = os.path.join(directory, self.name)
        self.first = first
        self.fd = fd
        self.size = size
        self.offsets = array("Q")
        self.terms = array("Q")
        self.dirty = False

    @property
    def count(self) -> int:
        return len(self.offsets)

    def record_end(self, index: Index) -> int:
        k = index - self.first
        return self.offsets[k + 1] if k + 1 < len(self.offsets) else self.size


def _check_record(
    data: bytes | memoryview, at: int, end: int, expect: int
) -> tuple[str | None, int]:
    """``(None, size)`` for a good record at ``at``, else ``(reason, claimed size or 0)``."""
    if end - at < HEADER_SIZE:
        return "record header cut short", 0
    crc, length, index, _term, _kind = RECORD_HEADER.unpack_from(data, at)
    if length > MAX_RECORD_PAYLOAD:
        return "record length over the 64 MiB limit", 0
    need = HEADER_SIZE + length
    if end - at < need:
        return "record cut short", need
    if expect and index != expect:
        return "record has an unexpected index", need
    if codec.crc32c(data[at + 4:at + need]) != crc:
        return "record CRC mismatch", need
    return None, need


def _valid_record_after(data: bytes, at: int, expect: int) -> int:
    """Offset of a complete, CRC-valid record with a plausible index after ``at``, else 0."""
    end = len(data)
    span = (end - at) // HEADER_SIZE + 1
    unpack = RECORD_HEADER.unpack_from
    for p in range(at + 1, end - HEADER_SIZE + 1):
        crc, length, index, _, _ = unpack(data, p)
        if length > MAX_RECORD_PAYLOAD or not 0 <= index - expect <= span:
            continue
        stop = p + HEADER_SIZE + length
        if stop <= end and codec.crc32c(data[p + 4:stop]) == crc:
            return p
    return 0


class FileLogStore:
    """A :class:`~engine.storage.base.LogStore` in segment files, written in pure Python.

    Same format, durability and recovery as :class:`engine.storage.native.NativeLogStore`.

    Recovery on open: every record's CRC is checked and the in-memory offset index rebuilt.  In
    the last segment, a record cut short or a bad record that no valid record follows is a torn
    write: it is truncated away and reported in :attr:`recovery_report` (and logged as a
    warning).  A bad record followed by a valid one, a bad record or header in an earlier segment,
    or a gap between segments raises :class:`CorruptLogError` naming the file and offset --
    unless ``discard_corrupt_suffix`` is set: then the log is cut at the first damage, durably
    (later segments removed newest first, then the damaged segment truncated at its first bad
    record, or removed when its header is bad or it does not chain), and each file touched is
    reported.  Every repair names the first index it lost (:attr:`RecoveryAction.first_lost`).

    A last segment holding only a header starting at N is an empty log at N (after
    :meth:`reset`).  A zero-length last segment is a torn creation: it is removed and recreated
    empty at the index its name says (reported as a repair).

    Sync mark (see the module docstring): implements
    :class:`~engine.storage.base.SyncMarkStore`.

    Threading: one thread at a time (the node's log-writing thread); no locks.  Extra methods
    beyond the protocol: :meth:`append_encoded`, :meth:`entries_encoded`.
    """

    def __init__(
        self,
        directory: str,
        *,
        fsync: bool = True,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        discard_corrupt_suffix: bool = False,
    ) -> None:
        """Open (creating the directory and first segment if needed) and recover the log.

        Raises:
            CorruptLogError: the log is corrupt before its tail (never with
                ``discard_corrupt_suffix``).
            StorageError: the directory or a segment cannot be read or repaired.
        """
        self.directory = os.fspath(directory)
        self._fsync = bool(fsync)
        self._discard = bool(discard_corrupt_suffix)
        # The sync mark: its fd, the value on disk (None: unknown after a failed write), whether
        # it was written since its last flush, and what it said at open.
        self._markfd = -1
        self._mark: int | None = 0
        self._mark_unflushed = False
        self._synced_at_open = 0
        self._segment_size = min(max(int(segment_size), SEGMENT_HEADER_SIZE + HEADER_SIZE),
                                 MAX_SEGMENT_SIZE)
        # Owned by one thread at a time.  Invariant: _segs[i + 1].first ==
        # _segs[i].first + _segs[i].count, and len(_segs) >= 1 while open.
        self._segs: list[_Segment] = []
        self._poisoned: str | None = None
        self._closed = False
        actions: list[RecoveryAction] = []
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise storage_error(exc, f"cannot open log directory {self.directory}") from exc
        try:
            self._recover(actions)
            self._open_mark(actions)
        except BaseException:
            self._release()
            raise
        # What a crashed process left in the page cache may not be on the device yet: the next
        # sync flushes the last segment (earlier ones were flushed before the next was created).
        self._segs[-1].dirty = self._fsync
        self.recovery_report: tuple[RecoveryAction, ...] = tuple(actions)
        """What recovery repaired when this store was opened (empty when nothing)."""
        log_recovery(self.directory, self.recovery_report)

    # --- recovery -------------------------------------------------------------------------

    def _recover(self, actions: list[RecoveryAction]) -> None:
        try:
            names = sorted(n for n in os.listdir(self.directory) if _SEGMENT_NAME.match(n))
        except OSError as exc:
            raise storage_error(exc, f"cannot list {self.directory}") from exc
        recreate_first = 1
        for i, name in enumerate(names):
            is_last = i + 1 == len(names)
            first = int(name[:20])
            path = os.path.join(self.directory, name)
            expect = self._segs[-1].first + self._segs[-1].count if self._segs else first
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError as exc:
                raise storage_error(exc, f"cannot open {path}") from exc
            seg = _Segment(self.directory, first, fd, 0)
            try:
                data = self._read_file(fd, path)
                hfirst, why = check_segment_header(data)
                bad: str | None = None  # discard mode: what is wrong with this segment
                if why is not None:
                    if is_last and not data[SEGMENT_HEADER_SIZE:].strip(b"\0"):
                        actions.append(self._remove_whole(
                            seg, len(data), first, "torn segment", f"torn segment creation: {why}"))
                        recreate_first = first
                        break
                    follow = " (records follow it)" if is_last else ""
                    bad = self._damage(f"{why} at offset 0",
                                       f"corrupt log: {why} in {path} at offset 0{follow}")
                elif hfirst != first:
                    bad = self._damage(
                        f"header at offset 16 says first index {hfirst}",
                        f"corrupt log: {path} at offset 16 says first index {hfirst}, "
                        f"its name says {first}")
                elif self._segs and expect != first:
                    prev = self._segs[-1]
                    bad = self._damage(
                        f"starts at index {first} but {prev.name} ends at index {expect - 1}",
                        f"corrupt log: {path} starts at index {first} but {prev.name} ends "
                        f"at index {expect - 1} (a segment is missing or was cut short)")
                whole = bad is not None
                if not whole:
                    bad = self._scan(seg, data, is_last, actions)
                if bad is not None:
                    # Discard mode: everything from the damage on goes, newest first.
                    self._remove_files(names[i + 1:], name, actions)
                    if whole:
                        actions.append(self._remove_whole(
                            seg, len(data), expect, "damaged segment", f"discarded: {bad}"))
                        recreate_first = expect
                        break
                    try:
                        if self._fsync and i + 1 < len(names):
                            _fsync_dir(self._dirfd)
                        os.ftruncate(seg.fd, seg.size)
                        if self._fsync:
                            os.fdatasync(seg.fd)
                    except OSError as exc:
                        raise storage_error(
                            exc, f"cannot truncate {path} at offset {seg.size}") from exc
                    actions.append(RecoveryAction(
                        name, seg.size, len(data) - seg.size, False, f"discarded: {bad}",
                        seg.first + seg.count))
                    self._segs.append(seg)
                    break
            except BaseException:
                if seg.fd >= 0:
                    os.close(seg.fd)
                raise
            self._segs.append(seg)
        if not self._segs:
            self._create_segment(recreate_first)

    def _remove_whole(self, seg: _Segment, size: int, first_lost: Index, what: str,
                      reason: str) -> RecoveryAction:
        """Close and unlink a whole segment being recovered (the directory flushed when fsync is
        on); the repair that reports it."""
        os.close(seg.fd)
        seg.fd = -1
        try:
            os.unlink(seg.path)
            if self._fsync:
                _fsync_dir(self._dirfd)
        except OSError as exc:
            raise storage_error(exc, f"cannot remove {what} {seg.path}") from exc
        return RecoveryAction(seg.name, 0, size, True, reason, first_lost)

    def _damage(self, short: str, message: str) -> str:
        """Corruption found: in discard mode its short description, else CorruptLogError."""
        if not self._discard:
            raise CorruptLogError(message)
        return short

    def _remove_files(self, names: Sequence[str], damaged: str,
                      actions: list[RecoveryAction]) -> None:
        """Discard mode: unlink the segment files ``names`` (in order), newest first."""
        for name in reversed(names):
            path = os.path.join(self.directory, name)
            try:
                size = os.stat(path).st_size
                os.unlink(path)
            except OSError as exc:
                raise storage_error(exc, f"cannot remove {path}") from exc
            actions.append(RecoveryAction(
                name, 0, size, True, f"discarded: follows the damage in {damaged}",
                int(name[:20])))

    def _open_mark(self, actions: list[RecoveryAction]) -> None:
        """Open (creating) the sync mark and read it into ``synced_index_at_open``."""
        path = os.path.join(self.directory, SYNCMARK_FILE)
        try:
            self._markfd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            data = self._read_file(self._markfd, path)
        except OSError as exc:
            raise storage_error(exc, f"cannot open the sync mark {path}") from exc
        index, why = decode_syncmark(data)
        if why is not None:
            # Never an error: an unknown mark claims nothing.  Cut it, so that it reads as 0
            # until the next sync writes it whole.
            try:
                os.ftruncate(self._markfd, 0)
            except OSError:
                self._mark = None
            actions.append(RecoveryAction(
                SYNCMARK_FILE, 0, len(data), False,
                f"unreadable sync mark ({why}): taken as no record", 0))
        if self._mark is not None:
            self._mark = index
        self._synced_at_open = index

    @property
    def synced_index_at_open(self) -> Index:
        """The last index this log had recorded as durable (its sync mark) before it was opened;
        0 when it kept no record.  When the recovered log ends below it, entries that a sync had
        made durable -- which the node may have acknowledged -- are gone."""
        return self._synced_at_open

    def _write_mark(self, index: Index) -> None:
        """Write ``index`` as the sync mark (no flush).

        Raises:
            OSError: the write failed (the mark on disk is then unknown).
        """
        try:
            _pwrite_all(self._markfd, encode_syncmark(index), 0)
        except OSError:
            self._mark = None
            raise
        self._mark = index
        self._mark_unflushed = True

    def _lower_mark(self, index: Index) -> None:
        """Before removing entries >= ``index``: lower a higher mark to ``index - 1``, flushed
        when fsync is on, so the mark on the device never names an entry that is gone.

        Raises:
            StorageError: the write (nothing changed) or the flush (poisoned) failed.
        """
        want = index - 1
        if self._mark is not None and self._mark <= want:
            return
        try:
            self._write_mark(want)
        except OSError as exc:
            raise storage_error(exc, f"cannot lower the sync mark of {self.directory}") from exc
        if self._fsync:
            try:
                os.fdatasync(self._markfd)
            except OSError as exc:
                self._mark = None
                raise self._poison(exc, f"fdatasync of the sync mark of {self.directory}") from exc
            self._mark_unflushed = False

    @staticmethod
    def _read_file(fd: int, path: str) -> bytes:
        try:
            size = os.fstat(fd).st_size
            parts = []
            at = 0
            while at < size:
                chunk = os.pread(fd, min(_CHUNK, size - at), at)
                if not chunk:
                    break
                parts.append(chunk)
                at += len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise storage_error(exc, f"cannot read {path}") from exc

    def _scan(self, seg: _Segment, data: bytes, is_last: bool,
              actions: list[RecoveryAction]) -> str | None:
        """Fill ``seg``'s index from ``data``; cut (and report) a torn tail of the last segment.

        Returns None, or in discard mode a description of other damage (``seg.size`` is then
        the offset of the bad record).

        Raises:
            CorruptLogError: other damage, without discard mode.
        """
        at = SEGMENT_HEADER_SIZE
        end = len(data)
        expect = seg.first
        offsets, terms = seg.offsets, seg.terms
        unpack = RECORD_HEADER.unpack_from
        crc32c = codec.crc32c
        view = memoryview(data)
        why: str | None = None
        # Fast path inline; _check_record gives the reason when something is off.
        while at < end:
            if end - at >= HEADER_SIZE:
                crc, length, index, term, _ = unpack(data, at)
                stop = at + HEADER_SIZE + length
                if (length <= MAX_RECORD_PAYLOAD and stop <= end and index == expect
                        and crc32c(view[at + 4:stop]) == crc):
                    offsets.append(at)
                    terms.append(term)
                    expect += 1
                    at = stop
                    continue
            why, _need = _check_record(data, at, end, expect)
            break
        seg.size = at
        if at == end:
            return None
        if not is_last:
            return self._damage(
                f"{why} at offset {at} (expected index {expect}) in a segment that is not the "
                f"last",
                f"corrupt log: {why} in {seg.path} at offset {at} (expected index {expect}); "
                f"it is not the last segment, so this is not a torn write")
        found = _valid_record_after(data, at, expect)
        if found:
            return self._damage(
                f"{why} at offset {at} (expected index {expect}), followed by a valid record "
                f"at offset {found}",
                f"corrupt log: {why} in {seg.path} at offset {at} (expected index {expect}), "
                f"followed by a valid record at offset {found}")
        try:
            os.ftruncate(seg.fd, at)
            if self._fsync:
                os.fdatasync(seg.fd)
        except OSError as exc:
            raise storage_error(exc, f"cannot truncate the torn tail of {seg.path}") from exc
        actions.append(RecoveryAction(
            seg.name, at, end - at, False, f"torn tail: {why} (expected index {expect})",
            expect))
        return None

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log store {self.directory} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._poisoned is not None:
            raise StorageError(
                f"log store {self.directory} is unusable after a failed fsync "
                f"({self._poisoned}); reopen it to recover what is on disk"
            )

    def _poison(self, exc: OSError, what: str) -> StorageError:
        self._poisoned = f"{what}: {exc.strerror or exc}"
        return storage_error(exc, f"{what} failed; the log must be reopened")

    def _create_segment(self, first: Index) -> None:
        """Create ``first``'s segment with its header; durable at once when fsync is on."""
        path = os.path.join(self.directory, segment_name(first))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise storage_error(exc, f"cannot create segment {path}") from exc
        try:
            _pwrite_all(fd, encode_segment_header(first), 0)
            if self._fsync:
                os.fdatasync(fd)
                _fsync_dir(self._dirfd)
        except OSError as exc:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                logger.warning("could not remove the half-created segment %s", path)
            raise storage_error(exc, f"cannot write the header of segment {path}") from exc
        self._segs.append(_Segment(self.directory, first, fd, SEGMENT_HEADER_SIZE))

    def _find(self, index: Index) -> int:
        """Position in _segs of the segment holding ``index`` (which must be stored)."""
        lo, hi = 0, len(self._segs)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._segs[mid].first <= index:
                lo = mid
            else:
                hi = mid
        return lo

    def _range_error(self, lo: Index, hi: Index) -> IndexError:
        return IndexError(
            f"entries [{lo}, {hi}) outside stored [{self.first_index()}, {self.last_index()}]"
        )

    # --- LogStore --------------------------------------------------------------------------

    def first_index(self) -> Index:
        """Index of the oldest stored entry (``last_index() + 1`` when empty)."""
        return self._segs[0].first

    def last_index(self) -> Index:
        """Index of the newest stored entry (``first_index() - 1`` when empty)."""
        seg = self._segs[-1]
        return seg.first + len(seg.offsets) - 1

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries in one write, replacing a conflicting suffix first.

        Raises:
            ValueError: indexes not contiguous, a gap after ``last_index()``, before
                ``first_index()``, or a field that does not fit the record format.
            StorageError: the write failed (e.g. disk full); the log is as it was.
        """
        if not entries:
            return
        self._check_writable()
        start = entries[0].index
        n = len(entries)
        if [e.index for e in entries] != list(range(start, start + n)):
            raise ValueError(f"entries {start}..{entries[-1].index} are not contiguous")
        data = codec.encode_entries(entries)
        self._append_checked(data, start, n)

    def append_encoded(self, data: bytes | memoryview) -> None:
        """Append a batch of encoded records (engine.codec format, e.g. as received on the wire).

        Every CRC is checked before anything is written.

        Raises:
            CodecError: the batch is malformed (truncated, bad CRC); nothing was written.
            ValueError: indexes not contiguous, or a gap, or before ``first_index()``.
            StorageError: the write failed; the log is as it was.
        """
        self._check_writable()
        data = bytes(data)
        if not data:
            return
        if len(data) > MAX_BATCH:
            raise ValueError(f"batch of {len(data)} bytes is over the 1 GiB limit")
        if len(data) < HEADER_SIZE:
            raise CodecError("record header cut short at offset 0 of the batch")
        start = RECORD_HEADER.unpack_from(data, 0)[2]
        at, n = 0, 0
        while at < len(data):
            why, need = _check_record(data, at, len(data), 0)
            if why is not None:
                raise CodecError(f"{why} at offset {at} of the batch")
            index = RECORD_HEADER.unpack_from(data, at)[2]
            if index != start + n:
                raise ValueError(
                    f"batch indexes are not contiguous: index {index} at offset {at}, "
                    f"expected {start + n}"
                )
            at += need
            n += 1
        self._append_checked(data, start, n)

    def _append_checked(self, data: bytes, start: Index, n: int) -> None:
        if start == 0:
            raise ValueError("log indexes start at 1, got index 0")
        first, last = self.first_index(), self.last_index()
        if start > last + 1:
            raise ValueError(f"append at {start} leaves a gap after last index {last}")
        if start < first:
            raise ValueError(f"append at {start} is before first index {first}")
        if start <= last:
            self.truncate_suffix(start)
        seg = self._segs[-1]
        if seg.count and seg.size + len(data) > self._segment_size:
            if self._fsync and seg.dirty:
                try:
                    os.fdatasync(seg.fd)
                except OSError as exc:
                    raise self._poison(exc, f"fdatasync of {seg.path}") from exc
                seg.dirty = False
            self._create_segment(start)
            seg = self._segs[-1]
        try:
            _pwrite_all(seg.fd, data, seg.size)
        except OSError as exc:
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError as undo:
                raise self._poison(undo, f"append to {seg.path} (and the undo)") from exc
            raise storage_error(
                exc, f"cannot append {len(data)} bytes to {seg.path} at offset {seg.size}"
            ) from exc
        at = 0
        base = seg.size
        unpack = RECORD_HEADER.unpack_from
        offsets, terms = seg.offsets, seg.terms
        for _ in range(n):
            _, length, _, term, _ = unpack(data, at)
            offsets.append(base + at)
            terms.append(term)
            at += HEADER_SIZE + length
        seg.size += len(data)
        seg.dirty = True

    def _read(self, lo: Index, hi: Index) -> list[tuple[_Segment, int, bytes]]:
        """Raw bytes of [lo, hi) as (segment, file offset, bytes) pieces; range already checked."""
        out = []
        for seg in self._segs[self._find(lo):]:
            if seg.first >= hi:
                break
            a, b = max(lo, seg.first), min(hi, seg.first + seg.count)
            if a >= b:
                continue
            start = seg.offsets[a - seg.first]
            stop = seg.record_end(b - 1)
            try:
                chunk = os.pread(seg.fd, stop - start, start)
            except OSError as exc:
                raise storage_error(exc, f"cannot read {seg.path} at offset {start}") from exc
            if len(chunk) != stop - start:
                raise CorruptLogError(
                    f"corrupt log: {seg.path} is shorter than its index (offset {start})"
                )
            out.append((seg, start, chunk))
        return out

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        """Entries with indexes in ``[lo, hi)``, every CRC checked.

        Raises:
            IndexError: when ``lo < first_index()`` or ``hi > last_index() + 1`` or ``lo > hi``.
            CorruptLogError: a record changed on disk since it was written.
            StorageError: the read failed.
        """
        self._check_open()
        if lo < self.first_index() or hi > self.last_index() + 1 or lo > hi:
            raise self._range_error(lo, hi)
        out: list[Entry] = []
        for seg, start, chunk in self._read(lo, hi):
            try:
                got = codec.decode_entries(chunk)
            except CodecError as exc:
                raise CorruptLogError(
                    f"corrupt log: {exc} in {seg.path} (piece at offset {start}) on read"
                ) from None
            expect = max(lo, seg.first)
            for k, entry in enumerate(got):
                if entry.index != expect + k or entry.term != seg.terms[entry.index - seg.first]:
                    raise CorruptLogError(
                        f"corrupt log: record for index {expect + k} in {seg.path} at offset "
                        f"{seg.offsets[expect + k - seg.first]} disagrees with the index"
                    )
            out.extend(got)
        return out

    def entries_encoded(self, lo: Index, hi: Index) -> bytes:
        """The records of ``[lo, hi)`` as one encoded batch (for the wire), CRCs checked.

        Raises:
            IndexError, CorruptLogError, StorageError: as :meth:`entries`.
        """
        self._check_open()
        if lo < self.first_index() or hi > self.last_index() + 1 or lo > hi:
            raise self._range_error(lo, hi)
        pieces = self._read(lo, hi)
        for seg, start, chunk in pieces:
            try:
                codec.decode_entries(chunk)
            except CodecError as exc:
                raise CorruptLogError(
                    f"corrupt log: {exc} in {seg.path} (piece at offset {start}) on read"
                ) from None
        return b"".join(chunk for _, _, chunk in pieces)

    def term_at(self, index: Index) -> Term:
        """Term of the entry at ``index`` (from memory, no I/O).

        Raises:
            IndexError: when the entry is not stored.
        """
        if index < self.first_index() or index > self.last_index():
            raise IndexError(f"no entry at index {index}")
        seg = self._segs[self._find(index)]
        return seg.terms[index - seg.first]

    def _remove_newest_segments(self, first_at_least: Index) -> bool:
        """Unlink the newest segments whose first index is >= ``first_at_least``, newest first,
        always keeping the oldest one.  Returns True when any was removed (the directory then
        needs an fsync).

        Raises:
            StorageError: a segment could not be removed (the ones before it are gone).
        """
        removed = False
        while len(self._segs) > 1 and self._segs[-1].first >= first_at_least:
            seg = self._segs[-1]
            try:
                os.unlink(seg.path)
            except OSError as exc:
                raise storage_error(exc, f"cannot remove {seg.path}") from exc
            os.close(seg.fd)
            self._segs.pop()
            removed = True
        return removed

    def truncate_suffix(self, index: Index) -> None:
        """Remove every entry with index ``>= index`` (no entry goes past the end).

        Durable before this returns when fsync is on (newest segments are removed first, so the
        files always hold a prefix of the log).  First lowers the sync mark to ``index - 1``
        when it is higher, even past the end.

        Raises:
            StorageError: a file could not be removed or truncated, or the sync mark could not be
                lowered (then nothing changed).
        """
        self._check_writable()
        index = max(index, self.first_index())
        self._lower_mark(index)
        if index > self.last_index():
            return
        dir_changed = self._remove_newest_segments(index)
        seg = self._segs[-1]
        keep = index - seg.first
        if keep < seg.count:
            size = seg.offsets[keep]
            try:
                os.ftruncate(seg.fd, size)
            except OSError as exc:
                raise storage_error(exc, f"cannot truncate {seg.path} at offset {size}") from exc
            del seg.offsets[keep:]
            del seg.terms[keep:]
            seg.size = size
            seg.dirty = True
        if self._fsync:
            try:
                if dir_changed:
                    _fsync_dir(self._dirfd)
                if seg.dirty:
                    os.fdatasync(seg.fd)
            except OSError as exc:
                raise self._poison(exc, f"fsync after truncating {seg.path}") from exc
            seg.dirty = False

    def compact_prefix(self, index: Index) -> None:
        """Remove whole segments whose entries all have index ``<= index``.

        The segment holding the last entry stays (and the newest one always does), so a
        non-empty log stays non-empty.  Durable on return when fsync is on.

        Raises:
            StorageError: a file could not be removed.
        """
        self._check_writable()
        # A segment may go when the next one starts at or before both index + 1 and the last
        # index (a recovered or failed roll can leave the newest segment empty).
        bound = min(index + 1, self.last_index())
        drop = 0
        while drop + 1 < len(self._segs) and self._segs[drop + 1].first <= bound:
            drop += 1
        if not drop:
            return
        removed = 0
        try:
            for seg in self._segs[:drop]:
                os.unlink(seg.path)
                os.close(seg.fd)
                removed += 1
        except OSError as exc:
            raise storage_error(exc, f"cannot remove {self._segs[removed].path}") from exc
        finally:
            del self._segs[:removed]
        if self._fsync:
            try:
                _fsync_dir(self._dirfd)
            except OSError as exc:
                raise self._poison(exc, f"fsync of {self.directory}") from exc

    def reset(self, next_index: Index) -> None:
        """Drop every entry; afterwards ``first_index() == next_index`` and
        ``last_index() == next_index - 1``.

        Same steps and crash behaviour as ``rl_reset`` (raftlog.h): remove every segment but the
        oldest, newest first; cut the oldest to 0 bytes; rename it to ``<next_index>.seg``;
        write its header -- each step flushed before the next when fsync is on, so the reset is
        durable on return.  A crash leaves a prefix of the old log or a zero-length only
        segment, which recovery recreates empty at the index its name says.

        Raises:
            ValueError: ``next_index`` is not an int in ``[1, 2**64)``.
            StorageError: a file operation failed.  Before the oldest segment was cut the log
                is a shorter prefix of the old one and still usable; after it the store
                refuses writes until reopened (reopening completes or undoes the cut).
        """
        self._check_writable()
        if not isinstance(next_index, int) or not 1 <= next_index < 1 << 64:
            raise ValueError(f"next_index={next_index!r} must be an int in [1, 2**64)")
        seg = self._segs[0]
        if (len(self._segs) == 1 and seg.first == next_index and not seg.offsets
                and seg.size == SEGMENT_HEADER_SIZE):
            return  # already there
        # The sync mark becomes next_index - 1: lowered before anything goes, raised at the end.
        self._lower_mark(next_index)
        # 1. Every segment but the oldest, newest first: each step is a suffix truncation.
        dir_changed = self._remove_newest_segments(0)
        if self._fsync and dir_changed:
            try:
                _fsync_dir(self._dirfd)
            except OSError as exc:
                raise self._poison(exc, f"fsync of {self.directory}") from exc
        seg = self._segs[0]
        # 2. Cut it to nothing: a zero-length only segment is a torn creation to recovery, which
        # recreates it empty at the first index its name says.
        try:
            os.ftruncate(seg.fd, 0)
        except OSError as exc:
            raise storage_error(exc, f"cannot truncate {seg.path} to reset the log") from exc
        del seg.offsets[:]
        del seg.terms[:]
        seg.size = 0
        seg.dirty = False
        try:
            if self._fsync:
                os.fdatasync(seg.fd)
        except OSError as exc:
            raise self._poison(exc, f"fdatasync of {seg.path}") from exc
        # 3. Rename it to next_index's name, durably, before the header names the new index.
        if seg.first != next_index:
            name = segment_name(next_index)
            path = os.path.join(self.directory, name)
            try:
                os.rename(seg.path, path)
            except OSError as exc:
                raise self._poison(exc, f"rename of {seg.path} to {path}") from exc
            seg.name, seg.path, seg.first = name, path, next_index
            if self._fsync:
                try:
                    _fsync_dir(self._dirfd)
                except OSError as exc:
                    raise self._poison(exc, f"fsync of {self.directory}") from exc
        # 4. The header.
        try:
            _pwrite_all(seg.fd, encode_segment_header(next_index), 0)
            seg.size = SEGMENT_HEADER_SIZE
            if self._fsync:
                os.fdatasync(seg.fd)
        except OSError as exc:
            raise self._poison(exc, f"header write of {seg.path}") from exc
        if self._mark != next_index - 1:
            # No flush needed: a lost raise leaves a lower mark, which claims less.
            with contextlib.suppress(OSError):
                self._write_mark(next_index - 1)

    def sync(self) -> None:
        """Make every earlier write durable (fdatasync of the segments written since), then
        record the last index as the sync mark (see the module docstring).  A failed write of the
        mark does not fail the sync: the mark on disk then claims less (or reads as 0), and the
        next sync writes it again.

        Raises:
            StorageError: the flush failed; the store is poisoned until reopened.
        """
        self._check_writable()
        last = self.last_index()
        if self._fsync:
            for seg in self._segs:
                if seg.dirty:
                    try:
                        os.fdatasync(seg.fd)
                    except OSError as exc:
                        raise self._poison(exc, f"fdatasync of {seg.path}") from exc
                    seg.dirty = False
        # Only now, after the data's fdatasync returned: the mark never runs ahead of the device.
        if self._mark is None or last > self._mark:
            with contextlib.suppress(OSError):
                self._write_mark(last)

    def close(self) -> None:
        """Close every file (does not sync the segments; flushes the sync mark when fsync is on
        and it was written since -- a failure there is only logged, as the mark then claims
        less).  Idempotent."""
        if not self._closed:
            self._closed = True
            try:
                if (self._fsync and self._mark_unflushed and self._poisoned is None
                        and self._markfd >= 0):
                    os.fdatasync(self._markfd)
            except OSError as exc:
                logger.warning("fdatasync of the sync mark of %s failed: %s", self.directory, exc)
            finally:
                self._release()

    def _release(self) -> None:
        if self._markfd >= 0:
            os.close(self._markfd)
            self._markfd = -1
        for seg in self._segs:
            if seg.fd >= 0:
                os.close(seg.fd)
                seg.fd = -1
        if getattr(self, "_dirfd", -1) >= 0:
            os.close(self._dirfd)
            self._dirfd = -1

    @property
    def segment_count(self) -> int:
        """Number of segment files (for tests and diagnostics)."""
        return len(self._segs)

    def __enter__(self) -> FileLogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno_mod.EIO, "short write")
        view = view[n:]
        offset += n


class FileStableStore:
    """A :class:`~engine.storage.base.StableStore` in the file ``hardstate``, pure Python.

    ``save`` writes ``hardstate.tmp``, fsyncs it, renames it over ``hardstate`` and fsyncs the
    directory, so a reader sees the old or the new state, never a mix.  A save of the state
    already saved is skipped.  Threading: one thread at a time.
    """

    def __init__(self, directory: str, *, fsync: bool = True) -> None:
        """Open the store (creating the directory if needed).

        Raises:
            StorageError: the directory cannot be created or opened.
        """
        self.directory = os.fspath(directory)
        self._fsync = bool(fsync)
        self._path = os.path.join(self.directory, HARDSTATE_FILE)
        self._tmp = os.path.join(self.directory, HARDSTATE_TMP)
        self._saved: HardState | None = None  # what the file holds, when known
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise storage_error(exc, f"cannot open directory {self.directory}") from exc

    def load(self) -> HardState:
        """The last saved hard state, or ``HardState()`` when nothing was saved.

        Raises:
            CorruptLogError: the file is damaged (names the file and offset).
            StorageError: the file cannot be read.
        """
        if self._dirfd < 0:
            raise StorageError(f"stable store {self.directory} is closed")
        try:
            with open(self._path, "rb") as f:
                data = f.read(HARDSTATE_HEADER.size + MAX_VOTE + 8)
        except FileNotFoundError:
            return EMPTY_HARD_STATE
        except OSError as exc:
            raise storage_error(exc, f"cannot read {self._path}") from exc
        state = decode_hard_state(data, self._path)
        self._saved = state
        return state

    def save(self, state: HardState) -> None:
        """Replace the hard state atomically; durable when this returns (if fsync is on).

        Raises:
            ValueError: a negative or oversized field.
            StorageError: the write failed; the previous state is still the saved one.
        """
        if self._dirfd < 0:
            raise StorageError(f"stable store {self.directory} is closed")
        if state == self._saved:
            return
        data = encode_hard_state(state)
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _pwrite_all(fd, data, 0)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self._path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            raise storage_error(exc, f"cannot save the hard state to {self._path}") from exc
        self._saved = None  # unknown until the directory entry is durable
        if self._fsync:
            try:
                _fsync_dir(self._dirfd)
            except OSError as exc:
                raise storage_error(
                    exc, f"fsync of {self.directory} after saving {self._path}"
                ) from exc
        self._saved = state

    def close(self) -> None:
        """Release the directory handle.  Idempotent."""
        if self._dirfd >= 0:
            os.close(self._dirfd)
            self._dirfd = -1

    def __enter__(self) -> FileStableStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
