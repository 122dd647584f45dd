"""RaftLog: the core's view of the replicated log and its cursors.

The core keeps the newest entries in memory (a Python list, so that batches are sliced and
extended at C speed); the LogStore is where they are made durable.  Without a :class:`LogReader`
it keeps every entry since the last compaction point.  With one it keeps an *entry cache*: once
the cached entries exceed ``cache_bytes`` (payload plus :data:`ENTRY_OVERHEAD` per entry), the
oldest entries that are durable here and already handed out for application are dropped from
memory, and read back through the reader when a follower needs them (as etcd's raftLog reads
its Storage).  Entries that are not yet durable or not yet handed out for application are never
dropped.  The terms of dropped entries stay in memory, run-length encoded (one pair per term),
so term lookups never read the store.  Four cursors walk the log; their order is the log's
central invariant::

    compacted <= applying <= committed <= last_index
                 stable <= handed <= last_index

``handed`` is how far entries have been handed out in a Ready for persistence, ``stable`` how
far the driver has confirmed them durable, ``applying`` how far committed entries have been handed
out for application.  Only entries at or below ``min(committed, stable)`` are handed out for
application, so a state machine never runs ahead of this node's durable log.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate, islice
from operator import itemgetter
from typing import Protocol

from engine.errors import InvariantError
from engine.types import Entry, Index, Term

ENTRY_OVERHEAD = 150
"""Bytes of memory one cached entry costs besides its payload (the Entry tuple, its index int,
the bytes object header and the list slot: about 169 bytes measured for a 16-byte payload on CPython
3.11), counted against the cache budget."""

_data_of = itemgetter(3)
_term_of = itemgetter(1)


class LogReader(Protocol):
    """Read-only access to the entries this node has made durable (its LogStore), which the core
    uses to read back the entries it dropped from its cache.  Called on the core's thread; the
    core only asks for entries in ``[first_index, min(stable, applying)]`` of its log, which are
    committed and durable, so the store holds them and they never change."""

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        """Entries with indexes in ``[lo, hi)`` (as ``LogStore.entries``).

        Raises:
            IndexError: a range the store does not hold (an engine bug).
            StorageError: the read failed.
        """
        ...


class RaftLog:
    """The in-memory log of one core.  Owned by the core; not thread-safe."""

    __slots__ = ("_cache_budget", "_cached_bytes", "_entries", "_offset", "_reader",
                 "_run_starts", "_run_terms", "_snapshot_index", "_snapshot_term", "applying",
                 "committed", "handed", "stable")

    def __init__(self, entries: Sequence[Entry] = (), *, snapshot_index: Index = 0,
                 snapshot_term: Term = 0, committed: Index = 0, applied: Index = 0,
                 reader: LogReader | None = None, cache_bytes: int = 64 << 20) -> None:
        """Build a log from durable state: ``entries`` follow the snapshot point and are stable.
        With a ``reader``, entries beyond the ``cache_bytes`` budget may be dropped from memory
        once durable and handed out for application (see the module docstring).

        Raises:
            InvariantError: when the entries are not contiguous after the snapshot point.
        """
        self._snapshot_index = snapshot_index
        self._snapshot_term = snapshot_term
        self._reader = reader
        self._cache_budget = cache_bytes
        # Invariant: self._entries[k].index == self._offset + k.  Entries in
        # [snapshot_index + 1, _offset) were dropped from the cache (only with a reader); their
        # terms are runs: _run_terms[k] from index _run_starts[k] up to the next run's start
        # (or _offset - 1).  Both lists are empty when nothing is dropped.
        self._offset = snapshot_index + 1
        self._run_starts: list[Index] = []
        self._run_terms: list[Term] = []
        self._entries: list[Entry] = list(entries)
        # Invariant: == sum(len(e.data) + ENTRY_OVERHEAD for e in self._entries).
        self._cached_bytes = self._size(self._entries)
        if self._entries and (self._entries[0].index != self._offset
                              or self._entries[-1].index != self._offset + len(self._entries) - 1):
            raise InvariantError(
                f"log entries {self._entries[0].index}..{self._entries[-1].index} are not "
                f"contiguous after snapshot index {snapshot_index}")
        last = self.last_index()
        self.stable: Index = last
        self.handed: Index = last
        self.committed: Index = min(max(committed, snapshot_index), last)
        self.applying: Index = max(applied, snapshot_index)
        if self.applying > self.committed:
            raise InvariantError(f"applied {applied} > committed {self.committed}")

    # -- queries ---------------------------------------------------------------------------

    @property
    def snapshot_index(self) -> Index:
        """Index of the last entry compacted into a snapshot (0 when none)."""
        return self._snapshot_index

    @property
    def snapshot_term(self) -> Term:
        """Term of the entry at :attr:`snapshot_index`."""
        return self._snapshot_term

    def __len__(self) -> int:
        """Entries after the compaction point (cached or not)."""
        return self.last_index() - self._snapshot_index

    @property
    def cached_entries(self) -> int:
        """Entries held in memory."""
        return len(self._entries)

    @property
    def cached_bytes(self) -> int:
        """What the entries held in memory count against the cache budget."""
        return self._cached_bytes

    def first_index(self) -> Index:
        """Index of the first entry held (snapshot index + 1)."""
        return self._snapshot_index + 1

    def last_index(self) -> Index:
        """Index of the last entry (the snapshot index when the log is empty)."""
        return self._offset + len(self._entries) - 1

    def last_term(self) -> Term:
        """Term of the last entry (the snapshot term when the log is empty)."""
        return self._entries[-1].term if self._entries else self._snapshot_term

    def term(self, index: Index) -> Term | None:
        """Term of the entry at ``index``; None when the index is compacted or beyond the end.

        Index 0 (before the first entry) has term 0.
        """
        offset = index - self._offset
        if offset < 0:
            if index > self._snapshot_index:
                return self._run_terms[bisect_right(self._run_starts, index) - 1]
            if index == self._snapshot_index:
                return self._snapshot_term
            return None
        if offset >= len(self._entries):
            return None
        return self._entries[offset].term

    def match_term(self, index: Index, term: Term) -> bool:
        """True when the log holds an entry at ``index`` with ``term``."""
        return self.term(index) == term

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """The election restriction (section 5.4.1): is a log ending at (index, term) at least as
        up to date as this one?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: Index, hi: Index, max_bytes: int = 0) -> list[Entry]:
        """Entries in ``[lo, hi)``, clipped to what the log holds; those dropped from the cache
        are read back through the reader.  With ``max_bytes``, entries read back stop once
        their payload reaches it (the result may still exceed it: callers trim; it holds at
        least one entry when the range is not empty), so a sender of a few MiB does not read
        ``hi - lo`` large entries from the store.

        Raises:
            StorageError: the reader failed.
        """
        offset = self._offset
        if lo < offset and self._run_starts:
            lo = max(lo, self._snapshot_index + 1)
            if hi <= lo:
                return []
            entries, size = self._read(lo, min(hi, offset), max_bytes)
            if hi > offset and (not max_bytes or size < max_bytes) \
                    and entries[-1].index == offset - 1:
                entries += self._entries[:hi - offset]
            return entries
        return self._entries[max(lo - offset, 0):max(hi - offset, 0)]

    def _read(self, lo: Index, hi: Index, max_bytes: int = 0) -> tuple[list[Entry], int]:
        """Entries ``[lo, hi)`` read back through the reader (only up to ``max_bytes`` of
        payload when given: see :meth:`slice`), and their payload size (0 if not counted)."""
        reader = self._reader
        if reader is None:
            raise InvariantError(f"entries [{lo}, {hi}) were dropped but there is no reader")
        if not max_bytes:
            return self._checked_read(lo, hi), 0
        # Read in chunks sized from the average entry: the cache's for the first (capped), then
        # what was read so far.
        cached = len(self._entries)
        average = max(1, (self._cached_bytes - ENTRY_OVERHEAD * cached) // cached) \
            if cached else max_bytes
        count = min(hi - lo, max(1, max_bytes // average), 64)
        entries: list[Entry] = []
        size = 0
        while True:
            chunk = self._checked_read(lo, lo + count)
            entries += chunk
            size += sum(map(len, map(_data_of, chunk)))
            lo += count
            if lo >= hi or size >= max_bytes:
                return entries, size
            average = max(1, size // len(entries))
            count = min(hi - lo, max(1, (max_bytes - size) // average + 1))

    def _checked_read(self, lo: Index, hi: Index) -> list[Entry]:
        entries = self._reader.entries(lo, hi)  # type: ignore[union-attr]
        if len(entries) != hi - lo or (entries and entries[0].index != lo):
            raise InvariantError(f"log reader returned {len(entries)} entries for [{lo}, {hi})")
        return entries

    def entry(self, index: Index) -> Entry:
        """The entry at ``index`` (read back through the reader when not cached).

        Raises:
            IndexError: when it is compacted or beyond the end.
        """
        offset = index - self._offset
        if offset < 0:
            if index <= self._snapshot_index:
                raise IndexError(f"entry {index} is compacted")
            return self._checked_read(index, index + 1)[0]
        return self._entries[offset]

    def first_index_of_term_at(self, index: Index) -> Index:
        """The first index of the run of entries sharing the term of the entry at ``index``."""
        if index <= self._snapshot_index:
            return index
        term = self.term(index)
        offset = index - self._offset
        if offset >= 0:
            entries = self._entries
            while offset > 0 and entries[offset - 1].term == term:
                offset -= 1
            if offset > 0 or not self._run_terms or self._run_terms[-1] != term:
                return self._offset + offset
            index = self._offset - 1
        # Dropped from the cache: the start of its term's run (runs of equal terms are merged).
        return self._run_starts[bisect_right(self._run_starts, index) - 1]

    def last_index_of_term(self, term: Term, upto: Index) -> Index | None:
        """The last index ``<= upto`` whose entry has ``term``; None when there is none."""
        upto = min(upto, self.last_index())
        offset = upto - self._offset
        entries = self._entries
        while offset >= 0:
            entry_term = entries[offset].term
            if entry_term == term:
                return self._offset + offset
            if entry_term < term:
                return None
            offset -= 1
        starts, terms = self._run_starts, self._run_terms
        k = bisect_right(starts, upto) - 1
        while k >= 0:
            if terms[k] == term:
                return min(upto, (starts[k + 1] if k + 1 < len(starts) else self._offset) - 1)
            if terms[k] < term:
                return None
            k -= 1
        if term == self._snapshot_term and upto >= self._snapshot_index:
            return self._snapshot_index
        return None

    # -- mutations ---------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries; those at or after ``entries[0].index`` are replaced first.

        Raises:
            InvariantError: on a gap, or when committed entries would be replaced.
        """
        if not entries:
            return
        start = entries[0].index
        last = self.last_index()
        if start > last + 1:
            raise InvariantError(f"append at {start} leaves a gap after {last}")
        if start <= self.committed:
            raise InvariantError(
                f"append at {start} would overwrite committed entries (committed={self.committed})")
        if start <= last:
            cut = start - self._offset
            if cut < 0:
                raise InvariantError(f"append at {start} would replace entries dropped from "
                                     f"the cache (cached from {self._offset})")
            self._cached_bytes -= self._size(self._entries[cut:])
            del self._entries[cut:]
            if self.stable >= start:
                self.stable = start - 1
            if self.handed >= start:
                self.handed = start - 1
        self._entries.extend(entries)
        self._cached_bytes += self._size(entries)

    def maybe_append(self, prev_index: Index, prev_term: Term, leader_commit: Index,
                     entries: Sequence[Entry]) -> Index | None:
        """A follower's AppendEntries check (Figure 2, receiver steps 2-5).

        Returns the index of the last entry the message covers when the log matches at
        ``prev_index``, else None.  Only a conflicting suffix is removed; entries that match are
        kept, so duplicated and reordered messages are harmless.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        if entries:
            conflict = self._find_conflict(entries)
            if conflict:
                self.append(entries[conflict - entries[0].index:])
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> Index:
        """The first index in ``entries`` that is new or has a different term here; 0 if none."""
        last = self.last_index()
        tail = entries[-1]
        if tail.index <= last and self.term(tail.index) == tail.term:
            return 0  # Log Matching: if the last entry matches, every earlier one does.
        if entries[0].index > last:
            return entries[0].index
        for entry in entries:
            if self.term(entry.index) != entry.term:
                return entry.index
        return 0

    def commit_to(self, index: Index) -> bool:
        """Raise the commit index (never lowers it).  Returns True if it moved.

        Raises:
            InvariantError: when ``index`` is beyond the last entry.
        """
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise InvariantError(f"commit {index} beyond last index {self.last_index()}")
        self.committed = index
        return True

    def take_unpersisted(self) -> list[Entry]:
        """Entries not yet handed out for persistence; marks them handed."""
        if self.handed >= self.last_index():
            return []
        entries = self._entries[self.handed + 1 - self._offset:]
        self.handed = self.last_index()
        return entries

    def stable_to(self, index: Index, term: Term) -> None:
        """The driver made entries up to (index, term) durable.

        Ignored when the entry has since been replaced (its term differs).
        """
        if index > self.stable and self.term(index) == term and index <= self.handed:
            self.stable = index
            if self._cached_bytes > self._cache_budget and self._reader is not None:
                self._evict()

    def has_committed_to_apply(self) -> bool:
        """True when committed, durable entries wait to be handed out for application."""
        return self.applying < min(self.committed, self.stable)

    def take_committed(self, max_entries: int) -> list[Entry]:
        """Committed, durable entries not yet handed out for application (at most
        ``max_entries``); marks them handed."""
        hi = min(self.committed, self.stable, self.applying + max_entries)
        if hi <= self.applying:
            return []
        entries = self.slice(self.applying + 1, hi + 1)
        self.applying = hi
        if self._cached_bytes > self._cache_budget and self._reader is not None:
            self._evict()
        return entries

    # -- the entry cache -----------------------------------------------------------------------

    @staticmethod
    def _size(entries: Sequence[Entry]) -> int:
        """What ``entries`` count against the cache budget."""
        return sum(map(len, map(_data_of, entries))) + ENTRY_OVERHEAD * len(entries)

    def _evict(self) -> None:
        """Over budget: drop the oldest cached entries that are durable and handed out for
        application (never the last entry), down to three quarters of the budget, so that
        the list's front is cut once per quarter budget of new entries, not once per Ready."""
        evictable = min(self.stable, self.applying, self.last_index() - 1) - self._offset + 1
        if evictable <= 0:
            return
        entries = self._entries
        need = self._cached_bytes - self._cache_budget * 3 // 4
        # Cumulative sizes of the evictable prefix: sizes[k] is what dropping k + 1 entries frees.
        sizes = list(accumulate(map(len, map(_data_of, islice(entries, evictable)))))
        count = 1 + bisect_left(range(evictable), need,
                                key=lambda k: sizes[k] + ENTRY_OVERHEAD * (k + 1))
        count = min(count, evictable)
        freed = sizes[count - 1] + ENTRY_OVERHEAD * count
        # Record the dropped entries' terms as runs (terms never decrease along a log).
        terms = list(map(_term_of, islice(entries, count)))
        starts, run_terms = self._run_starts, self._run_terms
        k = 0
        while k < count:
            term = terms[k]
            if not run_terms or run_terms[-1] != term:
                starts.append(self._offset + k)
                run_terms.append(term)
            k = bisect_right(terms, term, k)
        del entries[:count]
        self._offset += count
        self._cached_bytes -= freed

    def _drop_runs_through(self, index: Index) -> None:
        """Forget the terms of dropped entries up to ``index`` (compacted or replaced by a
        snapshot); the run holding ``index + 1``, if any, then starts there."""
        starts, terms = self._run_starts, self._run_terms
        if index + 1 >= self._offset:
            starts.clear()
            terms.clear()
            return
        k = bisect_right(starts, index + 1) - 1
        del starts[:k], terms[:k]
        starts[0] = index + 1

    # -- snapshots ---------------------------------------------------------------------------

    def compact(self, index: Index) -> None:
        """Drop entries up to ``index`` (they are covered by a durable snapshot).

        Raises:
            InvariantError: when ``index`` is not yet applied or not durable locally.
        """
        if index <= self._snapshot_index:
            return
        if index > self.applying or index > self.stable:
            raise InvariantError(
                f"compact to {index} beyond applying {self.applying} or stable {self.stable}")
        term = self.term(index)
        if term is None:
            raise InvariantError(f"compact to {index}: no such entry")
        self._drop_cached_through(index)
        self._snapshot_index, self._snapshot_term = index, term

    def _drop_cached_through(self, index: Index) -> None:
        """Drop every entry up to ``index`` (cached or not) from memory."""
        self._drop_runs_through(index)
        cut = index - self._offset + 1
        if cut > 0:
            self._cached_bytes -= self._size(self._entries[:cut])
            del self._entries[:cut]
            self._offset = index + 1

    def restore(self, index: Index, term: Term) -> bool:
        """Install a snapshot covering entries up to (index, term) received from the leader.

        Entries after it are kept when the log holds the snapshot's last entry (Figure 13,
        step 6); otherwise the whole log is discarded.  Returns True when entries were kept.
        """
        keep = self.match_term(index, term) and index >= self._snapshot_index
        if keep:
            self._drop_cached_through(index)
        else:
            self._entries.clear()
            self._run_starts.clear()
            self._run_terms.clear()
            self._cached_bytes = 0
            self._offset = index + 1
        self._snapshot_index, self._snapshot_term = index, term
        self.committed = max(self.committed, index)
        self.applying = max(self.applying, index)
        if not keep:
            self.stable = self.handed = index
        else:
            self.stable = max(self.stable, index)
            self.handed = max(self.handed, index)
        return keep
