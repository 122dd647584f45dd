"""Snapshots: their one binary format, and the stores that keep them.

A snapshot is the state machine's bytes at a log index, plus the index, the term of the entry at
that index and the cluster configuration there (:class:`SnapshotMeta`, defined in
:mod:`engine.types` and re-exported here with the :class:`SnapshotStore` protocol).  The
encoded form (:func:`encode_snapshot` / :func:`decode_snapshot`) is at once the file on disk and
what a leader streams to a follower in InstallSnapshot chunks.

Receiving a snapshot (the incoming-snapshot protocol of :class:`SnapshotStore`, objects of the
:class:`IncomingSnapshot` protocol): the follower's store hands out an incoming snapshot
(``begin_incoming(index, term, total)``) that the chunks are appended to as they arrive -- a
temporary file in the store's directory for :class:`FileSnapshotStore`, a bytearray for
:class:`MemorySnapshotStore` -- so the whole snapshot is never buffered in memory before it is
verified.  ``finish()`` checks it exactly as a stored file is checked (streamed in 1 MiB reads:
length, header, CRC32C, membership block, and the index and term the leader announced) and
deletes it when anything is wrong (CorruptSnapshotError); ``read()`` gives back the verified
bytes; ``commit_incoming()`` flushes it and renames it into place as a regular snapshot file
(then fsyncs the directory and prunes, as ``save`` does); ``abort()`` deletes it.  In the runtime
the loop thread writes, finishes, reads and aborts, and the log-writing thread commits (see
:mod:`engine.runtime.snapshots` and ``RaftNode``).

Format (little-endian, all integers unsigned)::

    offset size  field
    0      8     magic            b"RAFTSNP\\0"
    8      4     version          2
    12     4     crc32c           CRC32C of every byte after this field, [16, end)
    16     8     index            log index of the last entry the snapshot includes
    24     8     term             term of that entry
    32     4     membership_len   bytes of the membership block
    36     8     data_len         bytes of the state machine data
    44     m     membership       the configuration: exactly ``Membership.encode()``
                                  (canonical JSON: voters, outgoing, learners, addresses)
    44+m   d     data

The length of the whole is exactly ``44 + membership_len + data_len``; anything else (cut short,
trailing bytes) is corrupt, and so is a membership block that ``Membership.decode`` rejects
(even with a matching CRC).

Version 1 (still read, never written) differs only in the block at offset 44, the *voters
block*: per voter a 4-byte length, then that many bytes of UTF-8.  It decodes to a configuration
of just those voters (no learners, no addresses).  A version-1 file is kept and streamed to
followers as it is; the next snapshot saved is version 2.

Files of :class:`FileSnapshotStore`, in its own directory (``<data dir>/snapshots``, see
:func:`engine.storage.open.open_snapshot_store`)::

    snapshot-<term:016x>-<index:016x>.snap   one snapshot each
    snapshot-*.tmp                           a save in progress; deleted when the store opens
    snapshot-incoming-<term>-<index>-*.tmp   a snapshot being received from the leader (not
                                             committed or aborted yet); deleted when the store
                                             opens, like any ``snapshot-*.tmp``

"Newest" means the highest ``(index, term)``: snapshots of one history only move forward, and a
higher index is a later state.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import tempfile
import threading
from abc import ABC, abstractmethod
from typing import BinaryIO

from engine import codec
from engine.errors import StorageError
from engine.membership import Membership
from engine.storage.base import IncomingSnapshot, SnapshotStore
from engine.storage.filestore import _pwrite_all, storage_error
from engine.types import SnapshotMeta

__all__ = [
    "CorruptSnapshotError",
    "FileIncomingSnapshot",
    "FileSnapshotStore",
    "IncomingSnapshot",
    "MemoryIncomingSnapshot",
    "MemorySnapshotStore",
    "SnapshotMeta",
    "SnapshotStore",
    "decode_snapshot",
    "encode_snapshot",
    "snapshot_file_name",
]

logger = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"RAFTSNP\0"
SNAPSHOT_VERSION = 2  # the version written
SNAPSHOT_VERSIONS_READ = (1, 2)  # 1: a voters block instead of the membership block
SNAPSHOT_HEADER = struct.Struct("<8sIIQQIQ")  # magic, version, crc, index, term, block, data
SNAPSHOT_HEADER_SIZE = SNAPSHOT_HEADER.size  # 44
CRC_START = 16  # the CRC covers [CRC_START, end)
_VOTER_LEN = struct.Struct("<I")
_U64 = 1 << 64
_NAME = re.compile(r"^snapshot-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_TMP = re.compile(r"^snapshot-.*\.tmp$")
INCOMING_PREFIX = "snapshot-incoming-"  # + "<term:016x>-<index:016x>-<random>.tmp"; matches _TMP
_CHUNK = 1 << 20


class CorruptSnapshotError(StorageError):
    """Bytes that are not a valid encoded snapshot (cut short, bad magic, version or CRC, or a
    malformed membership block).

    ``reason`` says what is wrong (the message also names the file, when there is one).  Raised
    by :func:`decode_snapshot` and ``save_encoded`` (nothing was stored); stores skip such files
    in ``latest()`` with a logged warning.
    """

    def __init__(self, reason: str, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"corrupt snapshot {where}: {reason}" if where else
                         f"corrupt snapshot: {reason}")


# --- the format -----------------------------------------------------------------------------


def _decode_voters(block: memoryview | bytes) -> tuple[str, ...]:
    """The voters of a version-1 voters block."""
    voters = []
    at, end = 0, len(block)
    while at < end:
        if end - at < _VOTER_LEN.size:
            raise CorruptSnapshotError(f"voter length cut short at offset {44 + at}")
        (n,) = _VOTER_LEN.unpack_from(block, at)
        at += _VOTER_LEN.size
        if n > end - at:
            raise CorruptSnapshotError(
                f"voter at offset {44 + at - 4} claims {n} bytes past the voters block")
        try:
            voters.append(bytes(block[at:at + n]).decode("utf-8"))
        except UnicodeDecodeError:
            raise CorruptSnapshotError(f"voter at offset {44 + at - 4} is not UTF-8") from None
        at += n
    return tuple(voters)


def _decode_meta(version: int, index: int, term: int, block: memoryview | bytes
                 ) -> SnapshotMeta:
    """The meta of a snapshot whose header (already checked) and block are given.

    Raises:
        CorruptSnapshotError: the block is not a valid configuration of its version.
    """
    if version == 1:
        voters = _decode_voters(block)
        try:
            membership = Membership(voters=voters)
        except (ValueError, TypeError) as exc:
            raise CorruptSnapshotError(
                f"voters block at offset {SNAPSHOT_HEADER_SIZE} is not a valid configuration: "
                f"{exc}") from None
    else:
        try:
            membership = Membership.decode(block)
        except (ValueError, TypeError) as exc:  # TypeError: e.g. ids of mixed JSON types
            raise CorruptSnapshotError(
                f"membership block at offset {SNAPSHOT_HEADER_SIZE} ({len(block)} bytes) is "
                f"malformed: {exc}") from None
    return SnapshotMeta(index, term, membership)


def _header(meta: SnapshotMeta, block: bytes, data_len: int, crc: int) -> bytes:
    return SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc, meta.index, meta.term,
                                len(block), data_len)


def _check_meta(meta: SnapshotMeta) -> bytes:
    """The membership block of a meta that fits the format.

    Raises:
        TypeError: ``meta`` is not a SnapshotMeta.
        ValueError: ``index``/``term`` not an int in ``[0, 2**64)``, ``membership`` not a
            Membership, or an id or address not encodable (e.g. a lone surrogate).
    """
    if not isinstance(meta, SnapshotMeta):
        raise TypeError(f"meta must be a SnapshotMeta, not {type(meta).__name__}")
    for name in ("index", "term"):
        value = getattr(meta, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
            raise ValueError(f"SnapshotMeta.{name}={value!r} must be an int in [0, 2**64)")
    membership = meta.membership
    if not isinstance(membership, Membership):
        raise ValueError(f"SnapshotMeta.membership={membership!r} must be a Membership")
    try:
        block = membership.encode()
    except TypeError as exc:  # orjson.JSONEncodeError, e.g. a lone surrogate in an id
        raise ValueError(f"membership {membership.describe()} is not encodable: {exc}"
                         ) from None
    if len(block) >= 1 << 32:
        raise ValueError("the membership does not fit in 4 GiB")
    return block


def _encode_parts(meta: SnapshotMeta, data: bytes | bytearray | memoryview) -> list:
    """``[header, membership, data]``: the encoded snapshot in pieces (data is not copied)."""
    block = _check_meta(meta)
    view = memoryview(data).cast("B")
    body = _header(meta, block, len(view), 0)[CRC_START:]
    crc = codec.crc32c(view, codec.crc32c(block, codec.crc32c(body)))
    return [_header(meta, block, len(view), crc), block, view]


def encode_snapshot(meta: SnapshotMeta, data: bytes | bytearray | memoryview) -> bytes:
    """The encoded snapshot (the file contents and the InstallSnapshot stream).

    Raises:
        TypeError: ``meta`` is not a SnapshotMeta or ``data`` is not bytes-like.
        ValueError: a field does not fit the format (see the module docstring).
    """
    return b"".join(_encode_parts(meta, data))


def _check_header(head: bytes | memoryview, total: int
                  ) -> tuple[int, int, int, int, int, int]:
    """``(version, crc, index, term, block_len, data_len)`` of a header whose whole is
    ``total`` bytes.

    Raises:
        CorruptSnapshotError: cut short, bad magic or version, lengths that disagree.
    """
    if total < SNAPSHOT_HEADER_SIZE or len(head) < SNAPSHOT_HEADER_SIZE:
        raise CorruptSnapshotError(
            f"{min(total, len(head))} bytes, shorter than the {SNAPSHOT_HEADER_SIZE}-byte header")
    magic, version, crc, index, term, blen, dlen = SNAPSHOT_HEADER.unpack_from(head)
    if magic != SNAPSHOT_MAGIC:
        raise CorruptSnapshotError("bad magic at offset 0")
    if version not in SNAPSHOT_VERSIONS_READ:
        raise CorruptSnapshotError(f"unsupported format version {version} at offset 8")
    want = SNAPSHOT_HEADER_SIZE + blen + dlen
    if want != total:
        block = "voters" if version == 1 else "membership"
        raise CorruptSnapshotError(
            f"{total} bytes, but the header ({block} {blen}, data {dlen} bytes) says {want}")
    return version, crc, index, term, blen, dlen


def _verify(view: memoryview) -> tuple[SnapshotMeta, int]:
    """The meta of a whole encoded snapshot and the offset of its data; every check done."""
    version, crc, index, term, blen, _ = _check_header(view, len(view))
    got = codec.crc32c(view[CRC_START:])
    if got != crc:
        raise CorruptSnapshotError(f"CRC mismatch (stored {crc:#010x}, computed {got:#010x})")
    start = SNAPSHOT_HEADER_SIZE + blen
    return _decode_meta(version, index, term, view[SNAPSHOT_HEADER_SIZE:start]), start


def decode_snapshot(buf: bytes | bytearray | memoryview) -> tuple[SnapshotMeta, bytes]:
    """Check and split an encoded snapshot.

    Raises:
        CorruptSnapshotError: anything wrong with the bytes (``.reason`` says what); never
            returns data that does not match its CRC.
        TypeError: ``buf`` is not bytes-like.
    """
    view = memoryview(buf).cast("B")
    meta, start = _verify(view)
    return meta, bytes(view[start:])


def snapshot_file_name(meta: SnapshotMeta) -> str:
    """``snapshot-<term:016x>-<index:016x>.snap``."""
    return f"snapshot-{meta.term:016x}-{meta.index:016x}.snap"


def _parse_name(name: str) -> tuple[int, int] | None:
    """``(index, term)`` of a snapshot file name, else None."""
    m = _NAME.match(name)
    return (int(m.group(2), 16), int(m.group(1), 16)) if m else None


def _newer(a: SnapshotMeta, b: SnapshotMeta) -> bool:
    return (a.index, a.term) > (b.index, b.term)


# --- incoming snapshots ---------------------------------------------------------------------

_WRITING, _FINISHED, _COMMITTED, _ABORTED = "being written", "finished", "committed", "aborted"


def _check_incoming_args(index: int, term: int, total: int) -> None:
    for name, value in (("index", index), ("term", term), ("total", total)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r} must be an int >= 0")


class _IncomingBase(ABC):
    """What both kinds of :class:`IncomingSnapshot` share: the states (being written ->
    finished -> committed, or aborted from the first two) and the checks of ``finish``.
    Subclasses keep the bytes (``_append``, ``_check_bytes``, ``_read_all``, ``_discard``)."""

    def __init__(self, index: int, term: int, total: int) -> None:
        self.index = index
        self.term = term
        self.total = total
        self._received = 0
        self._meta: SnapshotMeta | None = None
        self._state = _WRITING

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} index={self.index} term={self.term} "
                f"{self._received}/{self.total} bytes, {self._state}>")

    @property
    def received(self) -> int:
        """Bytes written so far (the offset the next chunk is written at)."""
        return self._received

    @property
    def meta(self) -> SnapshotMeta | None:
        """The verified meta once :meth:`finish` succeeded, else None."""
        return self._meta

    @property
    def state(self) -> str:
        """``"being written"``, ``"finished"``, ``"committed"`` or ``"aborted"``."""
        return self._state

    def _require(self, state: str, what: str) -> None:
        if self._state != state:
            raise ValueError(f"cannot {what} {self!r}")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` at offset :attr:`received` (see :class:`IncomingSnapshot`)."""
        self._require(_WRITING, "write to")
        view = memoryview(data).cast("B")
        self._append(view)
        self._received += len(view)

    def finish(self) -> SnapshotMeta:
        """Verify the whole (see :class:`IncomingSnapshot`); deletes it when that fails."""
        if self._state == _FINISHED:
            assert self._meta is not None
            return self._meta
        self._require(_WRITING, "finish")
        where = self._where()
        try:
            if self._received != self.total:
                raise CorruptSnapshotError(
                    f"{self._received} bytes received, the leader announced {self.total}", where)
            meta = self._check_bytes()
            if (meta.index, meta.term) != (self.index, self.term):
                raise CorruptSnapshotError(
                    f"the header says index {meta.index} term {meta.term}, the leader announced "
                    f"index {self.index} term {self.term}", where)
        except BaseException:
            self.abort()
            raise
        self._meta = meta
        self._state = _FINISHED
        return meta

    def read(self) -> tuple[bytes, bytes]:
        """``(encoded, data)`` of a finished incoming snapshot (see :class:`IncomingSnapshot`)."""
        self._require(_FINISHED, "read")
        encoded = self._read_all()
        try:
            _, _, _, _, blen, _ = _check_header(encoded, len(encoded))
        except CorruptSnapshotError as exc:  # changed since finish(): not by this process
            raise CorruptSnapshotError(exc.reason, self._where()) from None
        return encoded, encoded[SNAPSHOT_HEADER_SIZE + blen:]

    def abort(self) -> None:
        """Delete it unless committed.  Idempotent."""
        if self._state in (_WRITING, _FINISHED):
            self._state = _ABORTED
            self._discard()

    # --- for the subclasses and their stores ---

    def _where(self) -> str | None:
        return None

    @abstractmethod
    def _append(self, view: memoryview) -> None:
        """Add ``view`` at the end of what was received."""

    @abstractmethod
    def _check_bytes(self) -> SnapshotMeta:
        """Verify everything received (header, CRC, membership); its meta."""

    @abstractmethod
    def _read_all(self) -> bytes:
        """Everything received, as one bytes object."""

    @abstractmethod
    def _discard(self) -> None:
        """Drop what was received (delete the file, free the buffer)."""


class MemoryIncomingSnapshot(_IncomingBase):
    """An :class:`IncomingSnapshot` of a :class:`MemorySnapshotStore`: a bytearray."""

    def __init__(self, store: MemorySnapshotStore, index: int, term: int, total: int) -> None:
        super().__init__(index, term, total)
        self._store = store
        self._buffer = bytearray()

    def _append(self, view: memoryview) -> None:
        self._buffer += view

    def _check_bytes(self) -> SnapshotMeta:
        meta, _ = _verify(memoryview(self._buffer))
        return meta

    def _read_all(self) -> bytes:
        return bytes(self._buffer)

    def _discard(self) -> None:
        self._buffer = bytearray()  # rebound, not cleared: a memoryview may still be alive

    def _take_data(self) -> bytes:
        """The state machine data, once, for the store's commit."""
        view = memoryview(self._buffer)
        _, _, _, _, blen, _ = _check_header(view, len(view))
        data = bytes(view[SNAPSHOT_HEADER_SIZE + blen:])
        self._state = _COMMITTED
        self._buffer = bytearray()
        return data


class FileIncomingSnapshot(_IncomingBase):
    """An :class:`IncomingSnapshot` of a :class:`FileSnapshotStore`: the temporary file
    :attr:`path` (``snapshot-incoming-<term:016x>-<index:016x>-<random>.tmp`` in the store's
    directory).  Each write opens the file, writes at offset :attr:`received` and closes it, so
    nothing stays open between calls."""

    def __init__(self, store: FileSnapshotStore, path: str, index: int, term: int,
                 total: int) -> None:
        super().__init__(index, term, total)
        self._store = store
        self.path = path

    def _where(self) -> str:
        return self.path

    def _append(self, view: memoryview) -> None:
        self._store._check_open()
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                _pwrite_all(fd, view, self._received)
            finally:
                os.close(fd)
        except OSError as exc:
            raise storage_error(exc, f"cannot write to {self.path}") from exc

    def _check_bytes(self) -> SnapshotMeta:
        try:
            with open(self.path, "rb") as f:  # _check_file turns its own OSErrors into
                meta, _ = FileSnapshotStore._check_file(f, self.path, whole=False)  # StorageError
        except OSError as exc:
            raise storage_error(exc, f"cannot open {self.path}") from exc
        return meta

    def _read_all(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise storage_error(exc, f"cannot read {self.path}") from exc

    def _discard(self) -> None:
        # On failure the file is left for the next open of the store to delete.
        _remove_file(self.path, "the incoming snapshot file")


def _remove_file(path: str, what: str) -> bool:
    """Delete ``path``; True when this call removed it.  A file already gone is fine; any other
    failure is logged (naming ``what``) and left for a later attempt, never raised: removing is
    housekeeping, and nothing depends on it having worked."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        logger.warning("cannot remove %s %s: %s", what, path, exc)
        return False
    return True


# --- stores ---------------------------------------------------------------------------------


class MemorySnapshotStore:
    """A :class:`~engine.storage.base.SnapshotStore` in memory, for tests and ``data_dir=None``.

    Keeps only the newest snapshot.  Like the memory log store it models a disk whose writes are
    durable at once, and :meth:`close` keeps the snapshot, so a node restarted with the same
    object (as ``LocalCluster`` does with its memory stores) finds it.  Every method takes one
    lock, so any thread may call it.  An incoming snapshot (:meth:`begin_incoming`) is a
    bytearray of its own until :meth:`commit_incoming` stores its data.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[SnapshotMeta, bytes] | None = None  # guarded by self._lock

    def _put(self, meta: SnapshotMeta, data: bytes) -> None:
        with self._lock:
            if self._latest is not None and _newer(self._latest[0], meta):
                logger.warning("saved snapshot at index %d term %d is older than the stored "
                               "one at index %d; latest() keeps returning that one",
                               meta.index, meta.term, self._latest[0].index)
                return
            self._latest = (meta, data)

    def save(self, meta: SnapshotMeta, data: bytes | bytearray | memoryview) -> None:
        """Store a snapshot (replaces an older one).

        Raises:
            TypeError, ValueError: as :func:`encode_snapshot`.
        """
        _check_meta(meta)  # the same errors as the file store
        self._put(meta, bytes(memoryview(data).cast("B")))

    def save_encoded(self, buf: bytes | bytearray | memoryview) -> SnapshotMeta:
        """Check an encoded snapshot (e.g. the joined InstallSnapshot chunks) and store it.

        Raises:
            CorruptSnapshotError: the bytes are not a valid snapshot; nothing was stored.
        """
        meta, data = decode_snapshot(buf)
        self._put(meta, data)
        return meta

    def begin_incoming(self, index: int, term: int, total: int) -> MemoryIncomingSnapshot:
        """Start receiving a snapshot from the leader into a bytearray (see
        :class:`~engine.storage.base.SnapshotStore`).

        Raises:
            ValueError: ``index``, ``term`` or ``total`` is not an int >= 0.
        """
        _check_incoming_args(index, term, total)
        return MemoryIncomingSnapshot(self, index, term, total)

    def commit_incoming(self, incoming: IncomingSnapshot) -> None:
        """Store a finished incoming snapshot of this store, as :meth:`save` does.

        Raises:
            ValueError: not a finished incoming snapshot of this store.
        """
        if not isinstance(incoming, MemoryIncomingSnapshot) or incoming._store is not self:
            raise ValueError(f"{incoming!r} is not an incoming snapshot of this store")
        incoming._require(_FINISHED, "commit")
        meta = incoming.meta
        assert meta is not None
        self._put(meta, incoming._take_data())

    def latest(self) -> tuple[SnapshotMeta, bytes] | None:
        """The newest snapshot, or None."""
        with self._lock:
            return self._latest

    def open_latest(self) -> tuple[SnapshotMeta, BinaryIO] | None:
        """The newest snapshot's meta and its encoded bytes as a binary stream, or None."""
        latest = self.latest()
        if latest is None:
            return None
        return latest[0], io.BytesIO(encode_snapshot(*latest))

    def close(self) -> None:
        """Nothing to release; the snapshot stays for a restarted node."""


class FileSnapshotStore:
    """A :class:`~engine.storage.base.SnapshotStore` of files in ``directory`` (format: module
    docstring).

    ``save`` writes a temporary file in the same directory, fsyncs it, renames it to its final
    name and fsyncs the directory; it then deletes all but the newest ``keep`` snapshots (those
    deletions are not flushed: an old snapshot that comes back after a crash is harmless).  With
    ``fsync=False`` nothing is flushed.  Leftover temporary files are deleted when the store
    opens.

    A snapshot received from the leader is written to its own temporary file
    (:meth:`begin_incoming`, ``snapshot-incoming-*.tmp``; not flushed while it is written),
    verified from that file (``finish``), and made a regular snapshot by
    :meth:`commit_incoming` exactly as :meth:`save` finishes its own temporary file (fsync,
    rename, directory fsync, prune).  The scan for snapshots only matches ``*.snap`` names, so
    incoming files are never read, streamed or pruned as snapshots.

    ``latest`` reads newest first and skips, with a logged warning, a file that fails any
    check (CRC, length, header, membership block, or a header that disagrees with the file
    name), so a damaged newest snapshot falls back to the one before.  That older snapshot
    only helps if the log still holds the entries after it: compact the log no further than
    the oldest kept snapshot, or treat ``log.first_index() > meta.index + 1`` as needing a
    snapshot from the leader.  Corrupt files are left in place (for inspection) until pruned
    by later saves.

    Threading: saves and commits are serialized by a lock; reads take no lock and work on an
    open file descriptor, so a prune during a read (or during streaming from
    :meth:`open_latest`) does not disturb it.  ``begin_incoming`` takes no lock (each incoming
    file has a fresh name); an incoming snapshot is used by one thread at a time.

    Raises (constructor):
        ValueError: ``keep < 1``.
        StorageError: the directory cannot be created or listed.
    """

    def __init__(self, directory: str, *, fsync: bool = True, keep: int = 2) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep={keep!r} must be an int >= 1")
        self.directory = os.fspath(directory)
        self._fsync = bool(fsync)
        self._keep = keep
        self._lock = threading.Lock()
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise storage_error(exc, f"cannot open snapshot directory {self.directory}") from exc
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            self.close()
            raise storage_error(exc, f"cannot list {self.directory}") from exc
        for name in names:
            if _TMP.match(name):
                path = os.path.join(self.directory, name)
                if _remove_file(path, "the leftover snapshot temp file"):
                    logger.info("removed the leftover snapshot temp file %s", path)

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._dirfd < 0:
            raise StorageError(f"snapshot store {self.directory} is closed")

    def _candidates(self) -> list[tuple[tuple[int, int], str]]:
        """``((index, term), name)`` of every snapshot file, newest first."""
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise storage_error(exc, f"cannot list {self.directory}") from exc
        found = [(key, name) for name in names if (key := _parse_name(name)) is not None]
        found.sort(reverse=True)
        return found

    def _write(self, meta: SnapshotMeta, parts: list) -> None:
        """Store the encoded snapshot given in pieces under its name, then prune."""
        with self._lock:
            self._check_open()
            try:
                fd, tmp = tempfile.mkstemp(prefix="snapshot-", suffix=".tmp", dir=self.directory)
            except OSError as exc:
                raise storage_error(exc, f"cannot create a snapshot file in {self.directory}"
                                    ) from exc
            self._install(tmp, meta, fd, parts)

    def _install(self, tmp: str, meta: SnapshotMeta, fd: int, parts: list) -> None:
        """With the lock held: write ``parts`` (maybe none) to the temporary file ``tmp`` open
        as ``fd``, flush and close it, rename it to the snapshot's name, flush the directory,
        prune.  On failure ``tmp`` is deleted (``fd`` is always closed)."""
        final = os.path.join(self.directory, snapshot_file_name(meta))
        try:
            try:
                at = 0
                for part in parts:
                    _pwrite_all(fd, part, at)
                    at += len(part)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise storage_error(exc, f"cannot save snapshot {final}") from exc
        if self._fsync:
            try:
                os.fsync(self._dirfd)
            except OSError as exc:
                raise storage_error(
                    exc, f"fsync of {self.directory} after saving {final} (it may not be "
                    "durable)") from exc
        self._prune(meta)

    def _prune(self, saved: SnapshotMeta) -> None:
        candidates = self._candidates()
        key = (saved.index, saved.term)
        if candidates and candidates[0][0] != key:
            pruned = key not in {k for k, _ in candidates[:self._keep]}
            logger.warning(
                "saved snapshot at index %d term %d is older than %s in %s; latest() returns "
                "that one%s", saved.index, saved.term, candidates[0][1], self.directory,
                " and the new one was pruned at once" if pruned else "")
        for _, name in candidates[self._keep:]:
            _remove_file(os.path.join(self.directory, name), "old snapshot")

    def _open_valid(self, name: str, key: tuple[int, int], whole: bool
                    ) -> tuple[SnapshotMeta, BinaryIO, bytes | None] | None:
        """Open and check one snapshot file: ``(meta, file, data or None)``, or None when it
        is gone or corrupt (warned).  ``whole`` reads it all into memory and returns the data.
        """
        path = os.path.join(self.directory, name)
        try:
            f = open(path, "rb")  # noqa: SIM115 - returned open to the caller
        except FileNotFoundError:
            return None  # pruned meanwhile
        except OSError as exc:
            raise storage_error(exc, f"cannot open {path}") from exc
        try:
            meta, data = self._check_file(f, path, whole)
            if (meta.index, meta.term) != key:
                raise CorruptSnapshotError(
                    f"the header says index {meta.index} term {meta.term}, the name says "
                    f"index {key[0]} term {key[1]}", path)
        except CorruptSnapshotError as exc:
            f.close()
            logger.warning("skipping %s; using an older snapshot if there is one", exc)
            return None
        except BaseException:
            f.close()
            raise
        return meta, f, data

    @staticmethod
    def _check_file(f: BinaryIO, path: str, whole: bool) -> tuple[SnapshotMeta, bytes | None]:
        try:
            if whole:
                buf = f.read()
                try:
                    meta, data = decode_snapshot(buf)
                except CorruptSnapshotError as exc:
                    raise CorruptSnapshotError(exc.reason, path) from None
                return meta, data
            size = os.fstat(f.fileno()).st_size
            head = f.read(SNAPSHOT_HEADER_SIZE)
            try:
                version, crc, index, term, blen, _ = _check_header(head, size)
            except CorruptSnapshotError as exc:
                raise CorruptSnapshotError(exc.reason, path) from None
            block = f.read(blen)
            if len(block) != blen:
                raise CorruptSnapshotError("file shrank while being read", path)
            got = codec.crc32c(block, codec.crc32c(head[CRC_START:]))
            left = size - SNAPSHOT_HEADER_SIZE - blen
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise CorruptSnapshotError("file shrank while being read", path)
                got = codec.crc32c(chunk, got)
                left -= len(chunk)
            if got != crc:
                raise CorruptSnapshotError(
                    f"CRC mismatch (stored {crc:#010x}, computed {got:#010x})", path)
            try:
                meta = _decode_meta(version, index, term, block)
            except CorruptSnapshotError as exc:
                raise CorruptSnapshotError(exc.reason, path) from None
            f.seek(0)
            return meta, None
        except OSError as exc:
            raise storage_error(exc, f"cannot read {path}") from exc

    # --- SnapshotStore ---------------------------------------------------------------------

    def save(self, meta: SnapshotMeta, data: bytes | bytearray | memoryview) -> None:
        """Store a snapshot; durable when this returns (if fsync is on).

        Raises:
            TypeError, ValueError: as :func:`encode_snapshot`.
            StorageError: the write failed (e.g. disk full, with ``.errno``); the previous
                snapshots are untouched and no temporary file is left.
        """
        self._write(meta, _encode_parts(meta, data))

    def save_encoded(self, buf: bytes | bytearray | memoryview) -> SnapshotMeta:
        """Check an encoded snapshot (e.g. the joined InstallSnapshot chunks), then store it
        byte for byte; durable when this returns (if fsync is on).  Returns its meta.

        Raises:
            CorruptSnapshotError: the bytes are not a valid snapshot; nothing was stored.
            StorageError: the write failed; as :meth:`save`.
        """
        view = memoryview(buf).cast("B")
        meta, _ = _verify(view)
        self._write(meta, [view])
        return meta

    def begin_incoming(self, index: int, term: int, total: int) -> FileIncomingSnapshot:
        """Start receiving a snapshot from the leader into a new temporary file of this
        directory (see :class:`~engine.storage.base.SnapshotStore`).  It is not flushed until
        :meth:`commit_incoming`; a leftover one is deleted when the store opens.

        Raises:
            ValueError: ``index``, ``term`` or ``total`` is not an int >= 0.
            StorageError: the file cannot be created, or the store is closed.
        """
        _check_incoming_args(index, term, total)
        self._check_open()
        try:
            fd, path = tempfile.mkstemp(prefix=f"{INCOMING_PREFIX}{term:016x}-{index:016x}-",
                                        suffix=".tmp", dir=self.directory)
        except OSError as exc:
            raise storage_error(exc, f"cannot create an incoming snapshot file in "
                                f"{self.directory}") from exc
        os.close(fd)
        return FileIncomingSnapshot(self, path, index, term, total)

    def commit_incoming(self, incoming: IncomingSnapshot) -> None:
        """Make a finished incoming snapshot of this store a regular snapshot file: fsync it,
        rename it to its name, fsync the directory, prune (as :meth:`save`).

        Raises:
            ValueError: not a finished incoming snapshot of this store.
            StorageError: the flush or rename failed, or the store is closed; the incoming
                file was deleted and the previous snapshots are untouched.
        """
        if not isinstance(incoming, FileIncomingSnapshot) or incoming._store is not self:
            raise ValueError(f"{incoming!r} is not an incoming snapshot of this store")
        incoming._require(_FINISHED, "commit")
        meta = incoming.meta
        assert meta is not None
        try:
            with self._lock:
                self._check_open()
                try:
                    fd = os.open(incoming.path, os.O_RDONLY)
                except OSError as exc:
                    raise storage_error(exc, f"cannot open {incoming.path}") from exc
                self._install(incoming.path, meta, fd, [])
        except BaseException:
            incoming.abort()  # (the file is gone already if the rename happened)
            raise
        incoming._state = _COMMITTED

    def latest(self) -> tuple[SnapshotMeta, bytes] | None:
        """The newest valid snapshot and its data, or None when there is none.

        Raises:
            StorageError: a snapshot file exists but cannot be read (an I/O error, not
                corruption: that is skipped with a warning).
        """
        self._check_open()
        for key, name in self._candidates():
            got = self._open_valid(name, key, whole=True)
            if got is not None:
                meta, f, data = got
                f.close()
                assert data is not None
                return meta, data
        return None

    def open_latest(self) -> tuple[SnapshotMeta, BinaryIO] | None:
        """The newest valid snapshot's meta and its file, open for reading the encoded bytes
        from the start (to stream them to a follower); the caller closes it.  None when there
        is no valid snapshot.  The file was checked end to end first, in 1 MiB reads.

        Raises:
            StorageError: as :meth:`latest`.
        """
        self._check_open()
        for key, name in self._candidates():
            got = self._open_valid(name, key, whole=False)
            if got is not None:
                return got[0], got[1]
        return None

    def close(self) -> None:
        """Release the directory handle.  Idempotent."""
        if getattr(self, "_dirfd", -1) >= 0:
            os.close(self._dirfd)
            self._dirfd = -1

    def __enter__(self) -> FileSnapshotStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
