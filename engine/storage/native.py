"""The native (C) log and hard-state stores, bound with cffi.

``NativeLogStore`` and ``NativeStableStore`` implement the protocols of
:mod:`engine.storage.base` over ``native/`` (segmented log, CRC32C, fdatasync), in the on-disk
format described in :mod:`engine.storage.filestore`, whose pure-Python stores read and write the
same files (segments, the version-2 hard state with ``recovering``, the sync mark).

Protocol-aware recovery support: :attr:`NativeLogStore.synced_index_at_open` is the sync mark
as found at open (the last index a sync had made durable; the mark is written in C after every
successful sync, on the syncer thread for background syncs), every repair in
:attr:`NativeLogStore.recovery_report` names the first index it lost, and
``discard_corrupt_suffix=True`` cuts a log corrupt before its tail at the first damage instead
of raising :class:`CorruptLogError`.

Why C: the per-entry work (encoding, CRC, copying, the offset index) happens in one C call per
batch, and cffi releases the GIL for the duration of the call; the fdatasync itself can run on
the store's own C thread (:meth:`NativeLogStore.begin_sync`), so the Raft loop never waits for
the disk.  The Python side does a constant amount of work per
batch on the encoded path (:meth:`NativeLogStore.append_encoded`) and a few C-speed builtins per
entry on the Entry path (:meth:`NativeLogStore.append`).

Importing this module raises ImportError when the compiled module ``engine.storage._raftlog`` is
missing (``pip install .`` builds it); :func:`engine.storage.open.open_stores` then falls back to
the pure-Python stores.
"""

from __future__ import annotations

import logging
import os
from array import array
from collections.abc import Sequence
from itertools import repeat
from operator import add
from typing import Any

from engine.codec import CodecError
from engine.errors import CorruptLogError, StorageError
from engine.storage._raftlog import ffi, lib
from engine.storage.filestore import DEFAULT_SEGMENT_SIZE, RecoveryAction, log_recovery
from engine.types import EMPTY_HARD_STATE, Entry, HardState, Index, Term

logger = logging.getLogger(__name__)

_ERRLEN = 512
_MAX_VOTE = 4096
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_SMALL_BATCH = 16  # below this, passing tuples to cffi beats building array.array objects


def _error(rc: int, message: str, errno_value: int = 0) -> Exception:
    """The Python exception for a raftlog status code."""
    exc: Exception
    if rc == lib.RL_ERR_CORRUPT:
        exc = CorruptLogError(message)
    elif rc == lib.RL_ERR_INVAL:
        exc = ValueError(message)
    elif rc == lib.RL_ERR_RANGE:
        exc = IndexError(message)
    elif rc == lib.RL_ERR_BATCH:
        exc = CodecError(message)
    elif rc == lib.RL_ERR_NOMEM:
        exc = MemoryError(message)
    else:  # RL_ERR_IO, RL_ERR_STATE
        exc = StorageError(message)
        exc.errno = errno_value or None  # type: ignore[attr-defined]
    return exc


def _u64(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ValueError(f"{what}={value!r} must be an int in [0, 2**64)")
    return value


class NativeLogStore:
    """A :class:`~engine.storage.base.LogStore` backed by the C segmented log.

    Files: ``<first index>.seg`` segments of about ``segment_size`` bytes in ``directory``
    (shared with the hard state file).  ``fsync=False`` skips every device flush (tests,
    benchmarks); writes are still ordered.

    Recovery: opening checks every record's CRC and rebuilds the in-memory offset index.  A torn
    tail of the last segment is truncated, logged as a warning and listed in
    :attr:`recovery_report`; corruption before the tail raises :class:`CorruptLogError` naming
    the file and offset -- or, with ``discard_corrupt_suffix=True``, cuts the log at the first
    damage (durably; every file touched is listed in :attr:`recovery_report`).  Each
    :class:`~engine.storage.filestore.RecoveryAction` names the first index it lost.

    Sync mark (:class:`~engine.storage.base.SyncMarkStore`): every successful sync records the
    last index it made durable in the file ``syncmark``; :attr:`synced_index_at_open` is what it
    said at open (see the module docs of :mod:`engine.storage.filestore` and raftlog.h).

    Errors: I/O failures (ENOSPC, EIO) raise :class:`StorageError` (with ``.errno``) and leave the
    log as it was, so the store is usable again once space is freed.  A failed fsync is the
    exception: the store then refuses writes until reopened (see raftlog.h).

    Threading: one thread at a time (the node's log-writing thread owns it while the node runs);
    no locks.  The GIL is released inside every C call.  :meth:`begin_sync` lends the handle to
    a C thread for one fdatasync (see :class:`~engine.storage.base.BackgroundSync`): until
    :meth:`end_sync` reports the end, every other call raises StorageError.
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
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create log directory {self.directory}: {exc}") from exc
        opts = ffi.new("rl_options *", {
            "segment_size": int(segment_size),
            "fsync": int(bool(fsync)),
            "discard_corrupt_suffix": int(bool(discard_corrupt_suffix)),
        })
        out = ffi.new("rl_log **")
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.rl_open(os.fsencode(self.directory), opts, out, err, _ERRLEN)
        if rc != lib.RL_OK:
            raise _error(rc, ffi.string(err).decode("utf-8", "replace"))
        # Owned by one thread at a time.  _first/_last mirror the C handle after every call.
        self._log: Any = ffi.gc(out[0], lib.rl_close)
        self._fsync = bool(fsync)
        # The C syncer thread (created by the first begin_sync) and whether it holds the handle.
        self._syncer: Any = None
        self._lent = False
        self._result = ffi.new("int *")
        self._u64 = ffi.new("uint64_t *")
        self._first: Index = lib.rl_first_index(self._log)
        self._last: Index = lib.rl_last_index(self._log)
        rep = ffi.new("rl_repair *")
        actions = []
        for i in range(lib.rl_recovery_count(self._log)):
            lib.rl_recovery_get(self._log, i, rep)
            actions.append(RecoveryAction(
                file=ffi.string(rep.file).decode("utf-8", "replace"),
                offset=rep.offset,
                bytes_dropped=rep.bytes,
                removed=bool(rep.removed),
                reason=ffi.string(rep.reason).decode("utf-8", "replace"),
                first_lost=rep.first_lost,
            ))
        self._synced_at_open: Index = lib.rl_synced_index_at_open(self._log)
        self.recovery_report: tuple[RecoveryAction, ...] = tuple(actions)
        """What recovery repaired when this store was opened (empty when nothing)."""
        log_recovery(self.directory, self.recovery_report)

    @property
    def synced_index_at_open(self) -> Index:
        """The last index this log had recorded as durable (its sync mark) before it was opened;
        0 when it kept no record.  When the recovered log ends below it, entries that a sync had
        made durable -- which the node may have acknowledged -- are gone."""
        return self._synced_at_open

    # --- helpers ---------------------------------------------------------------------------

    def _handle(self) -> Any:
        log = self._log
        if log is None:
            raise StorageError(f"log store {self.directory} is closed")
        if self._lent:
            raise StorageError(f"log store {self.directory} is busy with a background sync "
                               "(call end_sync first)")
        return log

    def _fail(self, rc: int) -> Exception:
        """Refresh the cached bounds (a failed call may have truncated) and build the error."""
        log = self._log
        self._first = lib.rl_first_index(log)
        self._last = lib.rl_last_index(log)
        return _error(rc, ffi.string(lib.rl_errmsg(log)).decode("utf-8", "replace"),
                      lib.rl_errno(log))

    # --- LogStore --------------------------------------------------------------------------

    def first_index(self) -> Index:
        """Index of the oldest stored entry (``last_index() + 1`` when empty)."""
        return self._first

    def last_index(self) -> Index:
        """Index of the newest stored entry (``first_index() - 1`` when empty)."""
        return self._last

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries in one write, replacing a conflicting suffix first.

        Per-entry Python work is C-speed builtins only (``zip(*entries)``, ``array``,
        ``bytes.join``); encoding and CRC happen in C.

        Raises:
            ValueError: indexes not contiguous, a gap after ``last_index()``, before
                ``first_index()``, or a field that does not fit the record format.
            StorageError: the write failed (e.g. disk full); the log is as it was, except that a
                conflicting suffix may already be gone.
        """
        n = len(entries)
        if not n:
            return
        log = self._handle()
        indexes, terms, kinds, datas = zip(*entries, strict=False)
        try:
            payload = b"".join(datas)
            knd = bytes(kinds)
            if n < _SMALL_BATCH:
                # cffi converts short tuples to C arrays itself, cheaper than building arrays.
                rc = lib.rl_append_parts(
                    log, n, indexes, terms, knd, list(map(len, datas)), payload, len(payload)
                )
            else:
                rc = lib.rl_append_parts(
                    log,
                    n,
                    ffi.from_buffer("uint64_t[]", array("Q", indexes)),
                    ffi.from_buffer("uint64_t[]", array("Q", terms)),
                    knd,
                    ffi.from_buffer("uint32_t[]", array("I", map(len, datas))),
                    payload,
                    len(payload),
                )
        except (OverflowError, ValueError, TypeError) as exc:
            raise ValueError(f"entries do not fit the record format: {exc}") from None
        if rc:
            raise self._fail(rc)
        self._last = indexes[-1]

    def append_encoded(self, data: bytes | bytearray | memoryview) -> None:
        """Append a batch of encoded records (engine.codec format) as-is, in one write.

        This is the follower's path for a batch received on the wire: the records are checked
        (lengths, contiguous indexes, every CRC) in C and written without re-encoding.

        Raises:
            CodecError: the batch is malformed (truncated, bad CRC); nothing was written.
            ValueError: indexes not contiguous, a gap, or before ``first_index()``.
            StorageError: the write failed; the log is as it was.
        """
        log = self._handle()
        buf = ffi.from_buffer(data)
        rc = lib.rl_append_records(log, buf, len(buf))
        if rc:
            raise self._fail(rc)
        self._last = lib.rl_last_index(log)

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        """Entries with indexes in ``[lo, hi)``, every CRC checked.

        Raises:
            IndexError: when ``lo < first_index()`` or ``hi > last_index() + 1`` or ``lo > hi``.
            CorruptLogError: a record changed on disk since it was written.
            StorageError: the read failed.
        """
        log = self._handle()
        if lo < self._first or hi > self._last + 1 or lo > hi:
            raise IndexError(
                f"entries [{lo}, {hi}) outside stored [{self._first}, {self._last}]"
            )
        n = hi - lo
        if n == 0:
            return []
        size = self._u64
        rc = lib.rl_read_size(log, lo, hi, size)
        if rc:
            raise self._fail(rc)
        nbytes = size[0]
        buf = _alloc("uint8_t[]", nbytes)
        terms = _alloc("uint64_t[]", n)
        kinds = _alloc("uint8_t[]", n)
        offsets = _alloc("uint64_t[]", n)
        lens = _alloc("uint32_t[]", n)
        rc = lib.rl_read(log, lo, hi, buf, nbytes, terms, kinds, offsets, lens)
        if rc:
            raise self._fail(rc)
        raw = ffi.buffer(buf, nbytes)[:]
        starts = ffi.unpack(offsets, n)
        payloads = map(raw.__getitem__, map(slice, starts, map(add, starts, ffi.unpack(lens, n))))
        fields = zip(range(lo, hi), ffi.unpack(terms, n), ffi.unpack(kinds, n), payloads,
                     strict=False)
        return list(map(tuple.__new__, repeat(Entry, n), fields))

    def entries_encoded(self, lo: Index, hi: Index) -> bytes:
        """The records of ``[lo, hi)`` as one encoded batch (for the wire), CRCs checked.

        Raises:
            IndexError, CorruptLogError, StorageError: as :meth:`entries`.
        """
        log = self._handle()
        if lo < self._first or hi > self._last + 1 or lo > hi:
            raise IndexError(
                f"entries [{lo}, {hi}) outside stored [{self._first}, {self._last}]"
            )
        if lo == hi:
            return b""
        size = self._u64
        rc = lib.rl_read_size(log, lo, hi, size)
        if rc:
            raise self._fail(rc)
        nbytes = size[0]
        buf = _alloc("uint8_t[]", nbytes)
        rc = lib.rl_read(log, lo, hi, buf, nbytes, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL)
        if rc:
            raise self._fail(rc)
        return ffi.buffer(buf, nbytes)[:]

    def term_at(self, index: Index) -> Term:
        """Term of the entry at ``index`` (from memory, no I/O).

        Raises:
            IndexError: when the entry is not stored.
        """
        log = self._handle()
        if index < self._first or index > self._last:
            raise IndexError(f"no entry at index {index}")
        term = self._u64
        lib.rl_term_at(log, index, term)
        return term[0]

    def truncate_suffix(self, index: Index) -> None:
        """Remove every entry with index ``>= index`` (no entry goes past the end).

        Durable before this returns when fsync is on.  First lowers the sync mark to
        ``index - 1`` when it is higher, even past the end.

        Raises:
            StorageError: a file could not be removed or truncated, or the sync mark could not be
                lowered (then nothing changed).
        """
        log = self._handle()
        rc = lib.rl_truncate_suffix(log, min(max(index, 0), (1 << 64) - 1))
        if rc:
            raise self._fail(rc)
        self._first = lib.rl_first_index(log)
        self._last = lib.rl_last_index(log)

    def compact_prefix(self, index: Index) -> None:
        """Remove whole segments whose entries all have index ``<= index``.

        The segment holding the last entry stays, so a non-empty log stays non-empty.

        Raises:
            StorageError: a file could not be removed.
        """
        log = self._handle()
        if index < self._first:
            return
        # Past the last entry it is the same as at it (the last entry always stays).
        rc = lib.rl_compact_prefix(log, min(index, self._last))
        if rc:
            raise self._fail(rc)
        self._first = lib.rl_first_index(log)

    def reset(self, next_index: Index) -> None:
        """Drop every entry; afterwards ``first_index() == next_index`` and
        ``last_index() == next_index - 1``.

        Leaves one header-only segment ``<next_index>.seg``; durable on return when fsync is
        on (see ``rl_reset`` in raftlog.h for the steps and what a crash leaves).

        Raises:
            ValueError: ``next_index`` is not an int in ``[1, 2**64)``.
            StorageError: a file operation failed.  Before the oldest segment was cut the log
                is a shorter prefix of the old one and still usable; after it the store
                refuses writes until reopened (reopening completes or undoes the cut).
        """
        log = self._handle()
        if _u64(next_index, "next_index") == 0:
            raise ValueError("log indexes start at 1, cannot reset to 0")
        rc = lib.rl_reset(log, next_index)
        if rc:
            raise self._fail(rc)
        self._first = lib.rl_first_index(log)
        self._last = lib.rl_last_index(log)

    def sync(self) -> None:
        """Make every earlier write durable (fdatasync; the GIL is released meanwhile), then
        record the last index as the sync mark.

        Raises:
            StorageError: the flush failed; the store refuses writes until reopened.
        """
        rc = lib.rl_sync(self._handle())
        if rc:
            raise self._fail(rc)

    # --- BackgroundSync ---------------------------------------------------------------------

    @property
    def background_sync(self) -> bool:
        """True: syncs flush to the device, so it pays to run them on the syncer thread."""
        return self._fsync

    def sync_fileno(self) -> int:
        """A file descriptor that turns readable when a background sync has finished.

        Raises:
            StorageError: the syncer thread cannot be started, or the store is closed.
        """
        if self._log is None:
            raise StorageError(f"log store {self.directory} is closed")
        if self._syncer is None:
            out = ffi.new("rl_syncer **")
            rc = lib.rl_syncer_open(out)
            if rc:
                raise _error(rc, f"{self.directory}: cannot start the syncer thread")
            self._syncer = out[0]
        return int(lib.rl_syncer_fd(self._syncer))

    def begin_sync(self) -> None:
        """Start making every earlier write durable on the syncer thread, and return at once.
        Until :meth:`end_sync` returns True the store must not be used otherwise.

        Raises:
            StorageError: a background sync is already running, or the store is closed.
        """
        log = self._handle()
        self.sync_fileno()
        rc = lib.rl_syncer_submit(self._syncer, log)
        if rc:
            raise StorageError(f"{self.directory}: a background sync is already running")
        self._lent = True

    def end_sync(self, *, wait: bool = False) -> bool:
        """Collect the background sync: True once it has finished (the store is usable again),
        False while it is still running (unless ``wait``, which blocks until it ends).

        Raises:
            StorageError: the flush failed (the store then refuses writes until reopened, as
                after a failed :meth:`sync`), or no background sync was started.
        """
        if not self._lent:
            raise StorageError(f"{self.directory}: no background sync to collect")
        collect = lib.rl_syncer_wait if wait else lib.rl_syncer_collect
        rc = collect(self._syncer, self._result)
        if rc == lib.RL_ERR_RANGE:
            return False
        self._lent = False
        if rc:
            raise StorageError(f"{self.directory}: cannot collect the background sync ({rc})")
        if self._result[0]:
            raise self._fail(self._result[0])
        return True

    def close(self) -> None:
        """Close every file (does not sync; waits for a background sync still running; flushes
        the sync mark when fsync is on and it was written since).  Idempotent."""
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            lib.rl_syncer_close(syncer)  # finishes a sync in flight first
        self._lent = False
        log, self._log = self._log, None
        if log is not None:
            ffi.release(log)

    @property
    def segment_count(self) -> int:
        """Number of segment files (for tests and diagnostics)."""
        return lib.rl_segment_count(self._handle())

    def __enter__(self) -> NativeLogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NativeStableStore:
    """A :class:`~engine.storage.base.StableStore` in the file ``hardstate``, written in C
    (format version 2, with ``recovering``; version-1 files load with ``recovering=0``).

    ``save`` writes ``hardstate.tmp``, fsyncs it, renames it over ``hardstate`` and fsyncs the
    directory, so a reader sees the old or the new state, never a mix.  A save of the state
    already saved is skipped (the runtime saves after every Ready).  Threading: one thread at a
    time.
    """

    def __init__(self, directory: str, *, fsync: bool = True) -> None:
        """Open the store (creating the directory if needed).

        Raises:
            StorageError: the directory cannot be created or opened.
        """
        self.directory = os.fspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory {self.directory}: {exc}") from exc
        out = ffi.new("rl_hs **")
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.rl_hs_open(os.fsencode(self.directory), int(bool(fsync)), out, err, _ERRLEN)
        if rc != lib.RL_OK:
            raise _error(rc, ffi.string(err).decode("utf-8", "replace"))
        self._hs: Any = ffi.gc(out[0], lib.rl_hs_close)
        self._saved: HardState | None = None  # what the file holds, when known

    def _handle(self) -> Any:
        if self._hs is None:
            raise StorageError(f"stable store {self.directory} is closed")
        return self._hs

    def _fail(self, rc: int) -> Exception:
        hs = self._hs
        return _error(rc, ffi.string(lib.rl_hs_errmsg(hs)).decode("utf-8", "replace"),
                      lib.rl_hs_errno(hs))

    def load(self) -> HardState:
        """The last saved hard state, or ``HardState()`` when nothing was saved.

        Raises:
            CorruptLogError: the file is damaged (names the file and offset).
            StorageError: the file cannot be read.
        """
        hs = self._handle()
        term = ffi.new("uint64_t *")
        commit = ffi.new("uint64_t *")
        recovering = ffi.new("uint64_t *")
        vote = ffi.new("char[]", _MAX_VOTE)
        vote_len = ffi.new("int64_t *")
        found = ffi.new("int *")
        rc = lib.rl_hs_load(hs, term, commit, recovering, vote, _MAX_VOTE, vote_len, found)
        if rc:
            raise self._fail(rc)
        if not found[0]:
            return EMPTY_HARD_STATE
        voted = None
        if vote_len[0] >= 0:
            try:
                voted = ffi.buffer(vote, vote_len[0])[:].decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptLogError(
                    f"corrupt hard state: vote in {self.directory}/hardstate is not UTF-8"
                ) from None
        state = HardState(term=term[0], vote=voted, commit=commit[0], recovering=recovering[0])
        self._saved = state
        return state

    def save(self, state: HardState) -> None:
        """Replace the hard state atomically; durable when this returns (if fsync is on).

        Raises:
            ValueError: a negative or oversized field, or a vote over 4096 bytes of UTF-8.
            StorageError: the write failed; the previous state is still the saved one.
        """
        hs = self._handle()
        if state == self._saved:
            return
        term = _u64(state.term, "term")
        commit = _u64(state.commit, "commit")
        recovering = _u64(state.recovering, "recovering")
        if state.vote is None:
            vote, vote_len = ffi.NULL, -1
        else:
            vote = state.vote.encode("utf-8")
            vote_len = len(vote)
            if vote_len > _MAX_VOTE:
                raise ValueError(f"vote {state.vote!r} is over {_MAX_VOTE} bytes")
        self._saved = None
        rc = lib.rl_hs_save(hs, term, commit, recovering, vote, vote_len)
        if rc:
            raise self._fail(rc)
        self._saved = state

    def close(self) -> None:
        """Release the directory handle.  Idempotent."""
        hs, self._hs = self._hs, None
        if hs is not None:
            ffi.release(hs)

    def __enter__(self) -> NativeStableStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def crc32c_implementation() -> str:
    """``"sse4.2"`` or ``"table"``: which CRC32C the native library uses on this CPU."""
    return "sse4.2" if lib.rl_crc32c_hw_available() else "table"
