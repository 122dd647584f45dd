"""In-memory stores, for tests, benchmarks and ``data_dir=None``.

They model a disk whose every write is durable at once: ``LocalCluster.crash()`` keeps them, so a
restarted node finds exactly what it wrote.  Nothing survives the process.

Locking: each store has one lock (``self._lock``) taken by every method, so the cluster's control
thread may inspect a store while a node's thread writes to it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from engine.types import EMPTY_HARD_STATE, Entry, HardState, Index, Term


class MemoryLogStore:
    """A :class:`~engine.storage.base.LogStore` kept in a Python list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Guarded by self._lock.  Invariant: self._entries[k].index == self._first + k.
        self._entries: list[Entry] = []
        self._first: Index = 1

    def first_index(self) -> Index:
        with self._lock:
            return self._first

    def last_index(self) -> Index:
        with self._lock:
            return self._first + len(self._entries) - 1

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        start = entries[0].index
        if entries[-1].index - start + 1 != len(entries):
            raise ValueError(f"entries {start}..{entries[-1].index} are not contiguous")
        with self._lock:
            last = self._first + len(self._entries) - 1
            if start > last + 1:
                raise ValueError(f"append at {start} leaves a gap after last index {last}")
            if start < self._first:
                raise ValueError(f"append at {start} is before first index {self._first}")
            del self._entries[start - self._first:]
            self._entries.extend(entries)

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        with self._lock:
            last = self._first + len(self._entries) - 1
            if lo < self._first or hi > last + 1 or lo > hi:
                raise IndexError(f"entries [{lo}, {hi}) outside stored [{self._first}, {last}]")
            return self._entries[lo - self._first:hi - self._first]

    def term_at(self, index: Index) -> Term:
        with self._lock:
            offset = index - self._first
            if offset < 0 or offset >= len(self._entries):
                raise IndexError(f"no entry at index {index}")
            return self._entries[offset].term

    def truncate_suffix(self, index: Index) -> None:
        with self._lock:
            if index < self._first:
                index = self._first
            del self._entries[index - self._first:]

    def compact_prefix(self, index: Index) -> None:
        """Remove the entries with index ``<= min(index, last_index() - 1)``.

        Like the disk stores (which keep the segment holding the last entry), the last entry
        always stays; :meth:`reset` drops everything.
        """
        with self._lock:
            drop = min(max(0, index - self._first + 1), len(self._entries) - 1)
            if drop > 0:
                del self._entries[:drop]
                self._first += drop

    def reset(self, next_index: Index) -> None:
        """Drop every entry; the log restarts empty at ``next_index``.

        Raises:
            ValueError: ``next_index`` is not an int in ``[1, 2**64)``.
        """
        if not isinstance(next_index, int) or not 1 <= next_index < 1 << 64:
            raise ValueError(f"next_index={next_index!r} must be an int in [1, 2**64)")
        with self._lock:
            self._entries = []
            self._first = next_index

    def sync(self) -> None:
        """Nothing to flush: every write is already 'durable'."""

    @property
    def synced_index_at_open(self) -> Index:
        """:class:`~engine.storage.base.SyncMarkStore`: every write is durable at once and a
        crash keeps everything, so the mark is simply the last index, read live: the log never
        ends below it.  (A fault-injecting wrapper such as
        :class:`~engine.storage.faulty.FaultyLogStore` models losses on top.)"""
        return self.last_index()

    def close(self) -> None:
        """Nothing to release; the entries stay for a restarted node."""


class MemoryStableStore:
    """A :class:`~engine.storage.base.StableStore` holding one HardState in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: HardState = EMPTY_HARD_STATE  # guarded by self._lock

    def load(self) -> HardState:
        with self._lock:
            return self._state

    def save(self, state: HardState) -> None:
        with self._lock:
            self._state = state

    def close(self) -> None:
        """Nothing to release."""
