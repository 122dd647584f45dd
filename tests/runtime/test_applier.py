"""The apply thread's automatic snapshots, driven directly (no cluster)."""

from __future__ import annotations

import queue
from concurrent.futures import Future

from engine.runtime.applier import Applier
from engine.runtime.proposals import ProposalRegistry
from engine.statemachine import LogStateMachine
from engine.types import Entry, EntryKind, SnapshotMeta
from tests.conftest import LIVENESS


def _entries(first: int, last: int) -> list[Entry]:
    return [Entry(i, 1, EntryKind.NORMAL, b"c%d" % i) for i in range(first, last + 1)]


def test_threshold_crossed_while_a_snapshot_is_written_is_taken_once_it_is_saved() -> None:
    """Entries that cross the threshold while the previous snapshot is still being written
    must not be forgotten: once it is saved, the next one is taken even if no entry follows
    (an idle cluster would otherwise keep its log uncompacted)."""
    taken: queue.SimpleQueue[SnapshotMeta] = queue.SimpleQueue()

    def on_snapshot(meta: SnapshotMeta, data: bytes, future: Future | None) -> None:
        taken.put(meta)  # not saved yet: the snapshot stays "in flight"

    applier = Applier("a", LogStateMachine(), ProposalRegistry(), snapshot_threshold=10,
                      on_snapshot=on_snapshot)
    applier.start()
    try:
        applier.submit_entries(_entries(1, 10))
        assert taken.get(timeout=LIVENESS).index == 10
        applier.submit_entries(_entries(11, 25))  # crosses the threshold again, in flight
        assert applier.wait_applied(25, LIVENESS)
        assert taken.empty(), "a second snapshot was started while the first was in flight"
        applier.snapshot_saved()
        assert taken.get(timeout=LIVENESS).index == 25
        applier.snapshot_saved()
        applier.submit_entries(_entries(26, 30))  # below the threshold: nothing more
        assert applier.wait_applied(30, LIVENESS)
    finally:
        applier.stop()
    assert taken.empty()
