"""The interfaces of durable storage: LogStore and StableStore.

Every implementation (in-memory for tests and ``data_dir=None``; native C; pure-Python file store)
passes the same contract suite in ``tests/storage/test_contract.py``.

Threading: a store is used by one thread at a time.  The runtime's storage thread owns it while
the node runs; the node's constructor reads it before that thread starts.  Implementations need
no locking of their own unless they document otherwise.

Durability: ``append``/``truncate_suffix``/``set`` make data visible to later reads at once, and
durable (surviving a power cut) once ``sync()`` returns.  Stores opened with ``fsync=False`` may
skip the device flush; they still write in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from engine.types import Entry, HardState, Index, Term


@runtime_checkable
class LogStore(Protocol):
    """An append-only sequence of entries with contiguous indexes ``[first_index, last_index]``.

    An empty store has ``first_index() == last_index() + 1``; a fresh one reports
    ``first_index() == 1, last_index() == 0``.  After ``compact_prefix(i)`` the first index may be
    at most ``i + 1`` (implementations that drop whole segments keep some entries below it).
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
        """Allow removal of entries with index ``<= index`` (those are in a snapshot)."""
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
