"""The interfaces of durable storage: LogStore, StableStore and SnapshotStore.

Every log/stable implementation (in-memory for tests and ``data_dir=None``; native C; pure-Python
file store) passes the same contract suite in ``tests/storage/test_contract.py``; the snapshot
stores (:mod:`engine.storage.snapshot`) pass ``tests/storage/test_snapshot.py``.

Threading: a store is used by one thread at a time.  The runtime's storage thread owns it while
the node runs; the node's constructor reads it before that thread starts.  Implementations need
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
class StableStore(Protocol):
    """Holds the single :class:`HardState` record, replaced atomically."""

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
class SnapshotStore(Protocol):
    """Keeps the newest snapshots of the state machine (format: :mod:`engine.storage.snapshot`).

    "Newest" is the highest ``(index, term)`` of the :class:`~engine.types.SnapshotMeta`.
    Implementations: :class:`~engine.storage.snapshot.MemorySnapshotStore` (tests,
    ``data_dir=None``; survives a node restart when the same object is passed again) and
    :class:`~engine.storage.snapshot.FileSnapshotStore` (``<data dir>/snapshots``, see
    :func:`engine.storage.open.open_snapshot_store`).
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
        """Check bytes in the encoded format (e.g. a follower's joined InstallSnapshot chunks),
        then store them as :meth:`save` does; returns their meta.

        Raises:
            CorruptSnapshotError: the bytes are not a valid snapshot; nothing was stored.
            StorageError: the write failed, as in :meth:`save`.
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
