"""DurableState: what a simulated node's disk holds (hard state, entries, snapshot).

Used by the simulator and by the core test harness; a Ready is "written" by ``persist`` and a
restarted node boots from what is here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.core import Ready
from engine.core.lost_entries import recovering_mark
from engine.types import Entry, HardState, Index, SnapshotMeta


@dataclass
class DurableState:
    """What a node's disk holds."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    #: the applied entries a snapshot stands for (the simulated state machine image)
    snapshot_state: list[Entry] = field(default_factory=list)
    #: the log's sync mark: the last index a completed write made durable (what the native
    #: store records in its ``syncmark`` file); a disk fault that loses entries leaves it
    synced_index: Index = 0

    @property
    def first(self) -> int:
        """Index of ``entries[0]``."""
        return self.snapshot.index + 1 if self.snapshot else 1

    def persist(self, rd: Ready, snapshot_state: list[Entry] | None = None) -> None:
        if rd.snapshot is not None:
            meta = rd.snapshot
            keep = [e for e in self.entries if e.index > meta.index]
            at = [e for e in self.entries if e.index == meta.index]
            self.entries = keep if at and at[0].term == meta.term else []
            self.snapshot = meta
            self.snapshot_state = list(snapshot_state or [])
        if rd.entries:
            start = rd.entries[0].index
            del self.entries[start - self.first:]
            if len(self.entries) != start - self.first:
                raise AssertionError(f"durable gap: have {len(self.entries)}, write at {start}")
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state
        if rd.entries or rd.snapshot is not None:
            self.synced_index = self.last_index

    @property
    def last_index(self) -> Index:
        """The last index held, in the log or (when the log is empty) the snapshot."""
        if self.entries:
            return self.entries[-1].index
        return self.snapshot.index if self.snapshot else 0

    def lose_tail(self, count: int) -> list[Entry]:
        """A disk fault: the newest ``count`` durable entries vanish (a rotten newest record
        that recovery cut off as a torn tail, a deleted newest segment).  The sync mark stays,
        as on a real disk.  Returns the entries lost."""
        if count <= 0:
            return []
        lost = self.entries[-count:]
        del self.entries[-count:]
        return lost

    def boot_hard_state(self) -> HardState:
        """The hard state a node boots with: the durable one, marked recovering when the disk
        lost entries the node may have acknowledged (and saved so, as the runtime does)."""
        mark = recovering_mark(self.hard_state, self.synced_index, self.last_index)
        if mark != self.hard_state.recovering:
            self.hard_state = dataclasses.replace(self.hard_state, recovering=mark)
        return self.hard_state

    def compact(self, meta: SnapshotMeta, state: list[Entry]) -> None:
        """A local snapshot covering ``state`` (the applied entries up to meta.index)."""
        self.entries = [e for e in self.entries if e.index > meta.index]
        self.snapshot = meta
        self.snapshot_state = list(state)
