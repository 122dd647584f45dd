"""DurableState: what a simulated node's disk holds (hard state, entries, snapshot).

Used by the simulator and by the core test harness; a Ready is "written" by ``persist`` and a
restarted node boots from what is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core import Ready
from engine.types import Entry, HardState, SnapshotMeta


@dataclass
class DurableState:
    """What a node's disk holds."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    #: the applied entries a snapshot stands for (the simulated state machine image)
    snapshot_state: list[Entry] = field(default_factory=list)

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

    def compact(self, meta: SnapshotMeta, state: list[Entry]) -> None:
        """A local snapshot covering ``state`` (the applied entries up to meta.index)."""
        self.entries = [e for e in self.entries if e.index > meta.index]
        self.snapshot = meta
        self.snapshot_state = list(state)
