"""The interfaces of durable storage: LogStore, StableStore, SnapshotStore (and the
IncomingSnapshot a snapshot store hands out for a snapshot being received from the leader).

Every log/stable implementation (in-memory for tests and ``data_dir=None``; native C; pure-Python
file store) passes the same contract suite in ``tests/storage/test_contract.py``; the snapshot
stores (:mod:`engine.storage.snapshot`) pass ``tests/storage/test_snapshot.py``.

Threading: a store is used by one thread at a time.  While the node runs it belongs to the
thread that writes the log (the loop thread, or the storage thread with
``Config.storage_thread``); ``start()`` reads it before that thread starts.  Implementations need
no locking of their own unless they document otherwise.

Durability: ``append``/``truncate_suffix``/``compact_prefix``/``reset``/``save`` make data
visible to later reads at once, and durable (surviving a power cut) once ``sync()`` returns (the
stable and snapshot stores' ``save`` once it returns).  Stores opened with ``fsync=False`` may
skip the device flush; they still write in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from engine.types import Entry, HardState, Index, SnapshotMeta, Term


@runtime_checkable
class LogStore(Protocol):
    """An append-only sequence of entries with contiguous indexes ``[first_index, last_index]``.

    An empty store has ``first_index() == last_index() + 1``; a fresh one reports
    ``first_index() == 1, last_index() == 0``, and one after ``reset(n)`` reports
    ``first_index() == n, last_index() == n - 1``.  ``compact_prefix`` never removes the last
    entry; only ``truncate_suffix`` and ``reset`` make a non-empty store empty.
    """

    def first_index(self) -> Index:
        """Index of the oldest stored entry (``last_index() + 1`` when empty)."""
        ...

    def last_index(self) -> Index:
        """Index of the newest stored entry (``first_index() - 1`` when empty)."""
        ...

    def append(self, entries: Sequence[Entry]) -> None:
        """Write entries whose indexes are contiguous.

        ``entries[0].index`` may be at most ``last_index() + 1``; entries at or after it are
        replaced first (a suffix truncation), so a follower can overwrite a conflicting tail in one
        call.  An empty sequence is a no-op.

        Raises:
            ValueError: indexes not contiguous, or a gap after ``last_index()``, or before
                ``first_index()``.
            StorageError: the write failed (e.g. disk full); the store is unchanged.
        """
        ...

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        """Entries with indexes in ``[lo, hi)``.

        Raises:
            IndexError: when ``lo < first_index()`` or ``hi > last_index() + 1`` or ``lo > hi``.
        """
        ...

    def term_at(self, index: Index) -> Term:
        """Term of the entry at ``index``.

        Raises:
            IndexError: when the entry is not stored.
        """
        ...

    def truncate_suffix(self, index: Index) -> None:
        """Remove every entry with index ``>= index`` (no-op past the end)."""
        ...

    def compact_prefix(self, index: Index) -> None:
        """Allow removal of entries with index ``<= index`` (those are in a snapshot).

        The last entry always stays: a non-empty log stays non-empty and ``last_index()`` does
        not change.  Afterwards ``first_index()`` lies between its old value and
        ``max(old first_index(), min(index + 1, last_index()))``; an empty log is unchanged.
        The memory store removes exactly the entries ``<= min(index, last_index() - 1)``; the
        disk stores drop whole segments only (never the one holding the last entry), so they
        keep up to a segment's worth below that bound.  To drop everything -- a snapshot at or
        past the end of the log -- use :meth:`reset`.  Durable on return on the disk stores
        with fsync on.

        Raises:
            StorageError: a file could not be removed.
        """
        ...

    def reset(self, next_index: Index) -> None:
        """Drop every entry; afterwards ``first_index() == next_index`` and
        ``last_index() == next_index - 1``, so the next append must start at ``next_index``.

        Used when a follower installs a snapshot that is ahead of its log (save the snapshot
        first).  Durable after ``sync()``; the disk stores with fsync on make it durable before
        returning.  Not atomic on disk: a crash during it leaves a prefix of the old log
        (possibly empty, at the old first index) or the reset log -- the same states a crash
        during ``truncate_suffix`` can leave -- so after a restart the caller must check the log
        against the latest snapshot and reset again if they disagree.

        Raises:
            ValueError: ``next_index`` is not an int in ``[1, 2**64)``.
            StorageError: a file operation failed; the log holds a prefix of the old one, or
                (disk stores) refuses writes until reopened -- see the implementation.
        """
        ...

    def sync(self) -> None:
        """Make every earlier write durable.

        Raises:
            StorageError: the flush failed; earlier writes may not be durable.
        """
        ...

    def close(self) -> None:
        """Release files; the store must not be used afterwards.  Idempotent."""
        ...


@runtime_checkable
class BackgroundSync(Protocol):
    """Optional extension of a :class:`LogStore`: its sync can run on a thread of the store's
    own, so the thread that writes the log (the node's event loop) keeps working meanwhile.

    Protocol: ``begin_sync()`` starts a sync of every earlier write and returns at once; from
    then until ``end_sync()`` returns True the store belongs to that sync and must not be used
    (its other methods raise StorageError).  ``sync_fileno()`` turns readable when the sync has
    ended (watch it with ``loop.add_reader``); ``end_sync()`` then returns True, or raises
    StorageError when the flush failed.  ``end_sync(wait=True)`` blocks until the end (for
    shutdown).  ``background_sync`` is False when syncing is cheap (fsync off), and the caller
    then simply calls ``sync()``.  The native store implements it; the runtime uses it by
    default when present (Config.storage_thread False).
    """

    @property
    def background_sync(self) -> bool:
        """True when syncs are worth running in the background."""
        ...

    def sync_fileno(self) -> int:
        """The descriptor that turns readable when a background sync has ended."""
        ...

    def begin_sync(self) -> None:
        """Start a background sync of every earlier write."""
        ...

    def end_sync(self, *, wait: bool = False) -> bool:
        """True once the background sync has ended (raises StorageError if it failed)."""
        ...


@runtime_checkable
class SyncMarkStore(Protocol):
    """Optional extension of a :class:`LogStore`: it keeps a durable *sync mark*, the last index
    a completed ``sync()`` made durable, so that start-up can tell whether the log lost entries
    it had made durable (and the node may have acknowledged): a rotten newest record cut off as
    a torn tail, a deleted newest segment, a corrupt suffix discarded on purpose.

    The rules an implementation keeps: the mark on the device never claims more than was
    durable (it is written only after the data's flush returned); ``truncate_suffix(i)`` lowers
    it to ``i - 1`` at once when higher, ``reset(n)`` sets it to ``n - 1``, ``compact_prefix``
    leaves it, and a sync never lowers it.  The runtime computes ``expected =
    max(hard_state.commit, synced_index_at_open)``; a log (after the open-time repairs) that
    ends below ``expected`` lost entries.  Implemented by the native and file stores (file
    ``syncmark``) and, trivially, the memory store.
    """

    @property
    def synced_index_at_open(self) -> Index:
        """The last index this log had recorded as durable before it was opened; 0 when it kept
        no record (e.g. a directory made by an older version, or an unreadable mark)."""
        ...


@runtime_checkable
class StableStore(Protocol):
    """Holds the single :class:`HardState` record (term, vote, commit, recovering), replaced
    atomically."""

    def load(self) -> HardState:
        """The last saved hard state, or ``HardState()`` when nothing was saved."""
        ...

    def save(self, state: HardState) -> None:
        """Replace the hard state atomically; durable when this returns (if fsync is on).

        Raises:
            StorageError: the write failed; the previous state is still the saved one.
        """
        ...

    def close(self) -> None:
        """Release files.  Idempotent."""
        ...


@runtime_checkable
class IncomingSnapshot(Protocol):
    """An encoded snapshot being received from the leader in InstallSnapshot chunks, written as
    it arrives to a temporary place of its store (a ``snapshot-incoming-*.tmp`` file of a
    :class:`~engine.storage.snapshot.FileSnapshotStore`, a bytearray in memory); made by
    :meth:`SnapshotStore.begin_incoming`.

    Life cycle: :meth:`write` the chunks in order, :meth:`finish` (verify), :meth:`read` the
    verified bytes back, then either :meth:`SnapshotStore.commit_incoming` (it becomes a
    regular snapshot, the store's latest) or :meth:`abort` (it is deleted).  A failed
    ``finish`` has already deleted it.  An incoming snapshot that is neither committed nor
    aborted (the process crashed) is a leftover temporary file, which the file store deletes
    the next time it opens.  It holds no open file between calls.

    Threading: not thread-safe; one thread at a time.  In the runtime the loop thread writes,
    finishes, reads and aborts it; the thread that writes the log commits it.
    """

    index: int
    """The log index the leader announced for the snapshot."""
    term: int
    """The term the leader announced for it."""
    total: int
    """The size of the encoded snapshot the leader announced, in bytes."""

    @property
    def received(self) -> int:
        """Bytes written so far (the offset the next chunk is written at)."""
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` at offset :attr:`received`.

        Raises:
            StorageError: the write failed (e.g. disk full); :attr:`received` is unchanged.
            ValueError: already finished, committed or aborted.
        """
        ...

    def finish(self) -> SnapshotMeta:
        """Verify the whole: exactly :attr:`total` bytes, header, CRC32C and membership block
        (the checks of :func:`~engine.storage.snapshot.decode_snapshot`, reading a file in
        1 MiB pieces), and the header's index and term equal the announced ones.  Returns the
        snapshot's meta.  Idempotent once it succeeded.

        Raises:
            CorruptSnapshotError: anything does not match; the incoming snapshot was deleted.
            StorageError: it could not be read back; it was deleted.
            ValueError: already committed or aborted.
        """
        ...

    def read(self) -> tuple[bytes, bytes]:
        """``(encoded, data)`` of a finished incoming snapshot: its encoded bytes (what a leader
        streams to followers) and the state machine data in them, read back in one piece.

        Raises:
            StorageError: it could not be read.
            ValueError: not finished (or already committed or aborted).
        """
        ...

    def abort(self) -> None:
        """Delete it (unfinished or finished, not committed).  Idempotent; a no-op after
        commit."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    """Keeps the newest snapshots of the state machine (format: :mod:`engine.storage.snapshot`).

    "Newest" is the highest ``(index, term)`` of the :class:`~engine.types.SnapshotMeta`.
    Implementations: :class:`~engine.storage.snapshot.MemorySnapshotStore` (tests,
    ``data_dir=None``; survives a node restart when the same object is passed again) and
    :class:`~engine.storage.snapshot.FileSnapshotStore` (``<data dir>/snapshots``, see
    :func:`engine.storage.open.open_snapshot_store`).

    Two ways in: :meth:`save` (a snapshot this node took) and the incoming-snapshot protocol
    for one received from the leader in InstallSnapshot chunks, which never holds the whole
    snapshot in memory before it is verified::

        incoming = store.begin_incoming(index, term, total)   # a temporary file
        incoming.write(chunk) ...                             # each chunk, in order
        meta = incoming.finish()                              # CRC etc.; CorruptSnapshotError
        encoded, data = incoming.read()                       # for the state machine
        store.commit_incoming(incoming)                       # fsync, rename: now latest()
        # or, at any point before the commit: incoming.abort()

    Threading in the runtime (:class:`~engine.runtime.node.RaftNode`): the store is shared by
    the snapshot thread (``save``), the log-writing thread (``commit_incoming``), the loop thread
    (``begin_incoming``) and ``start()`` (``latest``); the node serializes these calls with a
    lock of its own, so an implementation needs none for them.  The :class:`IncomingSnapshot`
    objects are used by one thread at a time (see there).
    """

    def save(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot; durable when this returns (if fsync is on).

        Raises:
            ValueError, TypeError: ``meta`` or ``data`` cannot be encoded.
            StorageError: the write failed (e.g. disk full); the previously saved snapshots are
                unchanged and ``latest()`` returns what it returned before.
        """
        ...

    def save_encoded(self, buf: bytes | bytearray | memoryview) -> SnapshotMeta:
        """Check bytes in the encoded format (e.g. a snapshot file copied from another node),
        then store them as :meth:`save` does; returns their meta.  (A follower receiving
        InstallSnapshot chunks uses :meth:`begin_incoming` instead.)

        Raises:
            CorruptSnapshotError: the bytes are not a valid snapshot; nothing was stored.
            StorageError: the write failed, as in :meth:`save`.
        """
        ...

    def begin_incoming(self, index: Index, term: Term, total: int) -> IncomingSnapshot:
        """Start receiving the encoded snapshot the leader announced as ``index``/``term``,
        ``total`` bytes long, into a new temporary place of this store (nothing else changes).

        Raises:
            ValueError: ``index``, ``term`` or ``total`` is not an int >= 0.
            StorageError: the temporary file cannot be created, or the store is closed.
        """
        ...

    def commit_incoming(self, incoming: IncomingSnapshot) -> None:
        """Make a finished incoming snapshot of this store a regular one, as :meth:`save` does
        (durable when this returns, if fsync is on; older ones pruned).  It is then used up.

        Raises:
            ValueError: ``incoming`` is not a finished incoming snapshot of this store.
            StorageError: the flush or rename failed; the incoming snapshot was deleted and the
                previously saved snapshots are unchanged.
        """
        ...

    def latest(self) -> tuple[SnapshotMeta, bytes] | None:
        """The newest valid snapshot and its data, or None.

        A stored snapshot that fails its checks (CRC, length, header) is skipped with a logged
        warning and the next older one is returned; wrong data is never returned.

        Raises:
            StorageError: a snapshot exists but cannot be read (I/O error).
        """
        ...

    def open_latest(self) -> tuple[SnapshotMeta, BinaryIO] | None:
        """As :meth:`latest`, but the encoded bytes as a stream from offset 0 (to send to a
        follower in chunks); the caller closes it.  A later save or prune does not affect an
        open stream."""
        ...

    def close(self) -> None:
        """Release files.  Idempotent."""
        ...
