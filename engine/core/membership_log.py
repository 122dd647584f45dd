"""MembershipLog: which configuration is in force, given the log.

A configuration takes effect when its CONFIG entry is appended (thesis 4.1), so the one in force
is that of the newest CONFIG entry in the log, or, when the log holds none, the configuration
recorded with the compaction point (the snapshot's, or the bootstrap configuration).  When a
follower's log is truncated the newest surviving entry's configuration applies again; entries are
identified by (index, term), which Log Matching makes unique, so a record whose entry has been
replaced is found by comparing terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter

from engine.errors import InvariantError
from engine.membership import Membership
from engine.types import Entry, EntryKind, Index, Term

_kind_of = itemgetter(2)
_CONFIG = EntryKind.CONFIG


class MembershipLog:
    """The configurations of one core's log.  Owned by the core; not thread-safe."""

    __slots__ = ("_base", "_base_index", "_records")

    def __init__(self, base: Membership, base_index: Index = 0) -> None:
        """``base`` is in force at ``base_index`` (the compaction point) and after it until a
        CONFIG entry says otherwise."""
        self._base = base
        self._base_index = base_index
        # (index, term, configuration) of each CONFIG entry after the base, in index order.
        self._records: list[tuple[Index, Term, Membership]] = []

    @property
    def current(self) -> Membership:
        """The configuration in force."""
        return self._records[-1][2] if self._records else self._base

    @property
    def base(self) -> Membership:
        """The configuration recorded with the compaction point (in force there)."""
        return self._base

    @property
    def current_index(self) -> Index:
        """Index of the entry that set the configuration in force (the base index if none)."""
        return self._records[-1][0] if self._records else self._base_index

    def at(self, index: Index) -> Membership:
        """The configuration in force at ``index`` (>= the base index)."""
        found = self._base
        for record_index, _, membership in self._records:
            if record_index > index:
                break
            found = membership
        return found

    def observe(self, entries: Sequence[Entry], term_at: Callable[[Index], Term | None]) -> bool:
        """Entries were appended (some may have replaced others): forget configurations whose
        entry is gone, record those of ``entries`` now in the log.  ``term_at`` is the log's
        term lookup.  Returns True when the configuration in force changed."""
        before = self.current
        records = self._records
        while records and term_at(records[-1][0]) != records[-1][1]:
            records.pop()
        if any(map(_kind_of, entries)):  # cheap C-level scan: NORMAL is 0
            last_recorded = records[-1][0] if records else self._base_index
            for entry in entries:
                if (entry.kind == _CONFIG and entry.index > last_recorded
                        and term_at(entry.index) == entry.term):
                    records.append((entry.index, entry.term, decode_config_entry(entry)))
                    last_recorded = entry.index
        return self.current is not before

    def compact(self, index: Index) -> None:
        """The log was compacted through ``index``: fold the records up to it into the base."""
        records = self._records
        while records and records[0][0] <= index:
            self._base = records.pop(0)[2]
        self._base_index = max(self._base_index, index)

    def restore(self, base: Membership, base_index: Index,
                term_at: Callable[[Index], Term | None]) -> bool:
        """A snapshot through ``base_index`` with configuration ``base`` was installed: keep
        the records of the surviving suffix only.  Returns True when the configuration in force
        changed."""
        before = self.current
        self._records = [r for r in self._records
                         if r[0] > base_index and term_at(r[0]) == r[1]]
        self._base, self._base_index = base, base_index
        return self.current != before


def decode_config_entry(entry: Entry) -> Membership:
    """The configuration a CONFIG entry carries.

    Raises:
        InvariantError: the entry does not decode (only the engine writes CONFIG entries, and
            every durable record is CRC-checked, so this is a bug, not bad input).
    """
    try:
        return Membership.decode(entry.data)
    except ValueError as exc:
        raise InvariantError(f"CONFIG entry {entry.term}/{entry.index} is malformed: {exc}") \
            from None
