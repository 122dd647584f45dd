"""The applier's automatic snapshots and slicing, driven directly (no cluster), in both modes:
inline (the loop thread calls ``run(budget)``) and threaded (``raft-<id>-apply``)."""

from __future__ import annotations

import queue
import time
from concurrent.futures import Future

import pytest

from engine.runtime.applier import Applier
from engine.runtime.proposals import ProposalRegistry, new_future
from engine.statemachine import LogStateMachine
from engine.types import Entry, EntryKind, SnapshotMeta
from tests.conftest import LIVENESS


def _entries(first: int, last: int) -> list[Entry]:
    return [Entry(i, 1, EntryKind.NORMAL, b"c%d" % i) for i in range(first, last + 1)]


def _settle(applier: Applier, index: int) -> bool:
    """Inline: run the queued work to the end; threaded: wait for the thread."""
    if not applier.threaded:
        while applier.run(10.0):
            pass
    return applier.wait_applied(index, LIVENESS)


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "threaded"])
def test_threshold_crossed_while_a_snapshot_is_written_is_taken_once_it_is_saved(
        threaded: bool) -> None:
    """Entries that cross the threshold while the previous snapshot is still being written
    must not be forgotten: once it is saved, the next one is taken even if no entry follows
    (an idle cluster would otherwise keep its log uncompacted)."""
    taken: queue.SimpleQueue[SnapshotMeta] = queue.SimpleQueue()

    def on_snapshot(meta: SnapshotMeta, data: bytes, future: Future | None) -> None:
        taken.put(meta)  # not saved yet: the snapshot stays "in flight"

    applier = Applier("a", LogStateMachine(), ProposalRegistry(), threaded=threaded,
                      snapshot_threshold=10, on_snapshot=on_snapshot)
    applier.start()
    try:
        applier.submit_entries(_entries(1, 10))
        assert _settle(applier, 10)
        assert taken.get(timeout=LIVENESS).index == 10
        applier.submit_entries(_entries(11, 25))  # crosses the threshold again, in flight
        assert _settle(applier, 25)
        assert taken.empty(), "a second snapshot was started while the first was in flight"
        applier.snapshot_saved()
        _settle(applier, 25)
        assert taken.get(timeout=LIVENESS).index == 25
        applier.snapshot_saved()
        applier.submit_entries(_entries(26, 30))  # below the threshold: nothing more
        assert _settle(applier, 30)
    finally:
        applier.stop()
    assert taken.empty()


class _Slow(LogStateMachine):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def apply(self, index: int, command: bytes) -> object:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return super().apply(index, command)


def test_inline_run_stops_at_its_budget_and_resumes_in_order() -> None:
    """A slice stops once its budget is spent (never inside one apply) and the next slice goes
    on from the next entry: every entry is applied once, in order, and every future resolves
    to its own result."""
    machine = _Slow(0.001)
    registry = ProposalRegistry()
    futures = [new_future(running=True) for _ in range(40)]
    registry.register(1, 1, futures)
    applier = Applier("a", machine, registry)
    applier.submit_entries(_entries(1, 40))
    slices = 0
    while applier.run(0.005):
        slices += 1
        assert applier.last_applied < 40
    assert slices >= 2  # 40 ms of work in 5 ms slices cannot fit in one or two
    assert [i for i, _ in machine.commands] == list(range(1, 41))
    assert [f.result(0) for f in futures] == list(range(1, 41))


class _Batched(LogStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def apply_batch(self, first_index: int, commands: list[bytes]) -> list[object]:
        self.calls.append((first_index, len(commands)))
        if b"boom" in commands:
            raise ValueError("boom")
        return [super(_Batched, self).apply(first_index + k, c) for k, c in enumerate(commands)]


def test_apply_batch_gets_runs_of_consecutive_user_entries() -> None:
    """apply_batch receives each run of consecutive user entries (an internal entry splits a
    run); results map back to the futures; an exception fails every future of its run only."""
    machine = _Batched()
    registry = ProposalRegistry()
    futures = [new_future(running=True) for _ in range(8)]
    registry.register(1, 1, futures)
    entries = [*_entries(1, 3), Entry(4, 1, EntryKind.NOOP, b""),
               Entry(5, 1, EntryKind.NORMAL, b"boom"), Entry(6, 1, EntryKind.NORMAL, b"x"),
               Entry(7, 1, EntryKind.NOOP, b""), *_entries(8, 8)]
    applier = Applier("a", machine, registry)
    applier.submit_entries(entries)
    while applier.run(10.0):
        pass
    assert machine.calls == [(1, 3), (5, 2), (8, 1)]
    assert [f.result(0) for f in futures[:3]] == [1, 2, 3]
    for f in futures[4:6]:
        with pytest.raises(ValueError, match="boom"):
            f.result(0)
    assert futures[7].result(0) == 8
    assert applier.last_applied == 8
