"""Progress and Inflights: the leader's per-follower bookkeeping and its transitions."""

from __future__ import annotations

import pytest

from engine.core.tracker import Inflights, Progress, ProgressState
from engine.errors import InvariantError

# -- Inflights -------------------------------------------------------------------------------


def test_inflights_fill_and_overflow_raises() -> None:
    """The window holds ``capacity`` messages; one more is a bug and raises InvariantError."""
    inf = Inflights(3)
    assert not inf.full()
    for last in (10, 20, 30):
        inf.add(last)
    assert inf.full() and len(inf) == 3
    with pytest.raises(InvariantError):
        inf.add(40)


def test_inflights_indexes_must_increase() -> None:
    """Messages are recorded in send order, so their last indexes strictly increase."""
    inf = Inflights(4)
    inf.add(10)
    with pytest.raises(InvariantError):
        inf.add(10)
    with pytest.raises(InvariantError):
        inf.add(5)


def test_inflights_free_le_is_cumulative() -> None:
    """An ack for index i frees every message ending at or before i, and nothing after."""
    inf = Inflights(4)
    for last in (10, 20, 30, 40):
        inf.add(last)
    inf.free_le(9)
    assert len(inf) == 4
    inf.free_le(25)  # frees 10 and 20: an ack in the middle of a message frees only earlier ones
    assert len(inf) == 2 and not inf.full()
    inf.free_le(25)  # a duplicate ack changes nothing
    assert len(inf) == 2
    inf.free_le(1000)
    assert len(inf) == 0
    inf.add(50)
    inf.reset()
    assert len(inf) == 0


def test_inflights_capacity_must_be_positive() -> None:
    """A zero-sized window would stall replication forever; it is rejected."""
    with pytest.raises(InvariantError):
        Inflights(0)


# -- Progress --------------------------------------------------------------------------------


def test_new_progress_probes_one_message_at_a_time() -> None:
    """A new follower starts in PROBE: one append, then paused until an answer."""
    pr = Progress(next_index=11, max_inflight=4)
    assert pr.state is ProgressState.PROBE and pr.match == 0 and pr.next == 11
    assert not pr.is_paused()
    pr.sent_append(5, 15)
    assert pr.is_paused()
    assert pr.next == 11, "PROBE does not advance next optimistically"
    assert len(pr.inflights) == 0


def test_probe_to_replicate_on_ack() -> None:
    """An ack in PROBE raises match; becoming REPLICATE restarts streaming at match+1."""
    pr = Progress(next_index=11, max_inflight=4)
    pr.sent_append(5, 15)
    assert pr.maybe_update(15)
    assert pr.match == 15 and pr.next == 16 and not pr.is_paused()
    pr.become_replicate()
    assert pr.state is ProgressState.REPLICATE and pr.next == 16


def test_replicate_pipelines_until_window_full() -> None:
    """In REPLICATE next advances optimistically per message; the window pauses sending."""
    pr = Progress(next_index=1, max_inflight=3)
    pr.become_replicate()
    for k in range(3):
        assert not pr.is_paused()
        pr.sent_append(10, 10 * (k + 1))
    assert pr.next == 31 and pr.is_paused()
    assert pr.maybe_update(10)  # the first message's ack frees one slot
    assert pr.match == 10 and not pr.is_paused() and pr.next == 31
    pr.sent_append(0, 30)  # an empty append (commit only) takes no window slot
    assert len(pr.inflights) == 2


def test_stale_acks_do_not_lower_match() -> None:
    """Acks may be duplicated and reordered: match never decreases."""
    pr = Progress(next_index=1, max_inflight=8)
    pr.become_replicate()
    pr.sent_append(10, 10)
    pr.sent_append(10, 20)
    assert pr.maybe_update(20)
    assert not pr.maybe_update(10)
    assert not pr.maybe_update(20)
    assert pr.match == 20 and pr.next == 21


def test_rejection_in_replicate_moves_next_back() -> None:
    """A rejection above match moves next back to the hint (never at or below match)."""
    pr = Progress(next_index=1, max_inflight=8)
    pr.match = 5
    pr.become_replicate()
    pr.sent_append(10, 15)
    assert pr.maybe_decrease_to(rejected=15, next_hint=8)
    assert pr.next == 8
    pr2 = Progress(next_index=1, max_inflight=8)
    pr2.match = 5
    pr2.become_replicate()
    pr2.sent_append(10, 15)
    assert pr2.maybe_decrease_to(rejected=15, next_hint=1)
    assert pr2.next == 6, "next never drops to or below match"


def test_stale_rejection_in_replicate_is_ignored() -> None:
    """A rejection of an index the follower already matched is stale and changes nothing."""
    pr = Progress(next_index=1, max_inflight=8)
    pr.match = 20
    pr.become_replicate()
    pr.sent_append(5, 25)
    assert not pr.maybe_decrease_to(rejected=20, next_hint=3)
    assert not pr.maybe_decrease_to(rejected=7, next_hint=3)
    assert pr.next == 26 and pr.state is ProgressState.REPLICATE


def test_stale_rejection_in_probe_is_ignored() -> None:
    """In PROBE only a rejection of the outstanding probe (prev index next-1) counts; it
    unpauses the follower."""
    pr = Progress(next_index=11, max_inflight=8)
    pr.sent_append(1, 11)
    assert pr.is_paused()
    assert not pr.maybe_decrease_to(rejected=14, next_hint=3)  # answers an older probe
    assert pr.next == 11 and pr.is_paused()
    assert pr.maybe_decrease_to(rejected=10, next_hint=4)
    assert pr.next == 4 and not pr.is_paused()


def test_become_probe_restarts_from_match() -> None:
    """Falling back to PROBE forgets the window and resumes just past match."""
    pr = Progress(next_index=1, max_inflight=2)
    pr.match = 7
    pr.become_replicate()
    pr.sent_append(3, 10)
    pr.sent_append(3, 13)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.next == 8
    assert len(pr.inflights) == 0 and not pr.is_paused()


def test_snapshot_state_is_always_paused() -> None:
    """SNAPSHOT (reserved) sends no appends."""
    pr = Progress(next_index=1, max_inflight=2)
    pr.state = ProgressState.SNAPSHOT
    assert pr.is_paused()


def test_progress_overflow_raises_through_sent_append() -> None:
    """Sending past a full window is an engine bug: Inflights raises InvariantError."""
    pr = Progress(next_index=1, max_inflight=1)
    pr.become_replicate()
    pr.sent_append(1, 1)
    with pytest.raises(InvariantError):
        pr.sent_append(1, 2)
