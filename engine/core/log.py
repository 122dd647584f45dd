"""RaftLog: the core's view of the replicated log and its cursors.

The core keeps every entry since the last compaction point in memory (a Python list, so that
batches are sliced and extended at C speed); the LogStore is where they are made durable.  Four
cursors walk the log; their order is the log's central invariant::

    compacted <= applying <= committed <= last_index
                 stable <= handed <= last_index

``handed`` is how far entries have been handed out in a Ready for persistence, ``stable`` how
far the driver has confirmed them durable, ``applying`` how far committed entries have been handed
out for application.  Only entries at or below ``min(committed, stable)`` are handed out for
application, so a state machine never runs ahead of this node's durable log.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import InvariantError
from engine.types import Entry, Index, Term


class RaftLog:
    """The in-memory log of one core.  Owned by the core; not thread-safe."""

    __slots__ = ("_entries", "_offset", "_snapshot_index", "_snapshot_term", "applying",
                 "committed", "handed", "stable")

    def __init__(self, entries: Sequence[Entry] = (), *, snapshot_index: Index = 0,
                 snapshot_term: Term = 0, committed: Index = 0, applied: Index = 0) -> None:
        """Build a log from durable state: ``entries`` follow the snapshot point and are stable.

        Raises:
            InvariantError: when the entries are not contiguous after the snapshot point.
        """
        self._snapshot_index = snapshot_index
        self._snapshot_term = snapshot_term
        # Invariant: self._entries[k].index == self._offset + k.
        self._offset = snapshot_index + 1
        self._entries: list[Entry] = list(entries)
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
        """Entries held in memory (after the compaction point)."""
        return len(self._entries)

    def first_index(self) -> Index:
        """Index of the first entry held (snapshot index + 1)."""
        return self._offset

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

    def slice(self, lo: Index, hi: Index) -> list[Entry]:
        """Entries in ``[lo, hi)``, clipped to what the log holds."""
        offset = self._offset
        return self._entries[max(lo - offset, 0):max(hi - offset, 0)]

    def entry(self, index: Index) -> Entry:
        """The entry at ``index``.

        Raises:
            IndexError: when it is compacted or beyond the end.
        """
        offset = index - self._offset
        if offset < 0:
            raise IndexError(f"entry {index} is compacted")
        return self._entries[offset]

    def first_index_of_term_at(self, index: Index) -> Index:
        """The first index of the run of entries sharing the term of the entry at ``index``."""
        term = self.term(index)
        offset = index - self._offset
        entries = self._entries
        while offset > 0 and entries[offset - 1].term == term:
            offset -= 1
        return self._offset + offset

    def last_index_of_term(self, term: Term, upto: Index) -> Index | None:
        """The last index ``<= upto`` whose entry has ``term``; None when there is none."""
        offset = min(upto, self.last_index()) - self._offset
        entries = self._entries
        while offset >= 0:
            entry_term = entries[offset].term
            if entry_term == term:
                return self._offset + offset
            if entry_term < term:
                return None
            offset -= 1
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
            del self._entries[start - self._offset:]
            if self.stable >= start:
                self.stable = start - 1
            if self.handed >= start:
                self.handed = start - 1
        self._entries.extend(entries)

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
        return entries

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
        del self._entries[:index - self._offset + 1]
        self._snapshot_index, self._snapshot_term = index, term
        self._offset = index + 1

    def restore(self, index: Index, term: Term) -> bool:
        """Install a snapshot covering entries up to (index, term) received from the leader.

        Entries after it are kept when the log holds the snapshot's last entry (Figure 13,
        step 6); otherwise the whole log is discarded.  Returns True when entries were kept.
        """
        keep = self.match_term(index, term) and index >= self._offset - 1
        if keep:
            del self._entries[:index - self._offset + 1]
        else:
            self._entries.clear()
        self._snapshot_index, self._snapshot_term = index, term
        self._offset = index + 1
        self.committed = max(self.committed, index)
        self.applying = max(self.applying, index)
        if not keep:
            self.stable = self.handed = index
        else:
            self.stable = max(self.stable, index)
            self.handed = max(self.handed, index)
        return keep
