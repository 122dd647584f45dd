"""Snapshots in the core: compaction, InstallSnapshot to a follower behind the compaction point,
keeping a matching suffix (Figure 13 step 6), and restarting from a snapshot."""

from __future__ import annotations

import pytest

from engine.core import MessageKind
from engine.core.tracker import ProgressState
from engine.errors import InvariantError
from engine.types import SnapshotMeta
from tests.core.harness import CoreNetwork


def _propose(net: CoreNetwork, leader: str, count: int, tag: str = "x") -> None:
    for k in range(count):
        net.nodes[leader].propose([f"{tag}{k}".encode()])
        net.stabilize()


def test_compaction_drops_the_log_prefix_and_keeps_serving() -> None:
    """After compact(), entries up to the snapshot are gone from memory and new ones commit."""
    net = CoreNetwork(3)
    net.elect("1")
    _propose(net, "1", 20)
    meta = net.take_snapshot("1")
    log = net.nodes["1"].raft.log
    assert log.snapshot_index == meta.index and log.first_index() == meta.index + 1
    assert len(log) == 0
    _propose(net, "1", 5, tag="y")
    net.tick_all(3)
    assert net.user_data("2")[-5:] == [f"y{k}".encode() for k in range(5)]


def test_follower_behind_compaction_point_gets_a_snapshot() -> None:
    """A follower that missed entries the leader compacted away is sent the snapshot, installs
    it, and then catches up from the log; its state equals the leader's."""
    net = CoreNetwork(3)
    net.elect("1")
    net.isolate("3")
    _propose(net, "1", 30)
    net.take_snapshot("1")
    _propose(net, "1", 3, tag="after")
    net.heal()
    net.tick_all(5)
    assert net.count(MessageKind.SNAPSHOT, dst="3") >= 1
    assert net.user_data("3") == net.user_data("1")
    follower = net.nodes["3"].raft
    assert follower.log.snapshot_index > 0
    assert net.nodes["1"].raft.progress["3"].state is ProgressState.REPLICATE


def test_install_keeps_a_matching_suffix() -> None:
    """A snapshot whose last entry the follower holds keeps the entries after it."""
    net = CoreNetwork(3)
    net.elect("1")
    _propose(net, "1", 10)
    net.tick_all(2)
    log = net.nodes["2"].raft.log
    term = log.term(5)
    assert term is not None
    kept = log.restore(5, term)
    leader_last = net.nodes["1"].raft.log.last_index()
    assert kept and log.first_index() == 6 and log.last_index() == leader_last


def test_install_discards_a_conflicting_log() -> None:
    """A snapshot that does not match the follower's entry at its index discards the log."""
    net = CoreNetwork(3)
    net.elect("1")
    _propose(net, "1", 4)
    log = net.nodes["2"].raft.log
    kept = log.restore(9, 7)
    assert not kept and log.first_index() == 10 and log.last_index() == 9
    assert log.committed == 9


def test_restart_from_snapshot_replays_only_the_suffix() -> None:
    """A node restarted from disk holds the snapshot and the entries after it, and applies
    only those entries again."""
    net = CoreNetwork(3)
    net.elect("1")
    _propose(net, "1", 12)
    net.tick_all(2)
    meta = net.take_snapshot("2")
    _propose(net, "1", 3, tag="z")
    net.tick_all(2)
    net.restart("2")
    raw = net.nodes["2"].raft
    assert raw.log.snapshot_index == meta.index
    net.tick_all(3)
    assert net.user_data("2") == net.user_data("1")


def test_compact_refuses_unapplied_index() -> None:
    """Compacting past what was applied is a driver bug and raises InvariantError."""
    net = CoreNetwork(1)
    net.elect("1")
    with pytest.raises(InvariantError):
        net.nodes["1"].compact(SnapshotMeta(50, 1, ("1",)), 50)


def test_failed_snapshot_transfer_is_retried() -> None:
    """When the transfer fails (link cut), the leader goes back to probing and sends the
    snapshot again once the follower answers a heartbeat."""
    net = CoreNetwork(3)
    net.elect("1")
    net.isolate("3")
    _propose(net, "1", 10)
    net.take_snapshot("1")
    net.tick_all(3)  # heartbeats to 3 are cut, no snapshot yet (3 never answered)
    net.heal()
    net.tick_all(5)
    assert net.user_data("3") == net.user_data("1")


def test_leadership_transfer_to_an_up_to_date_follower() -> None:
    """The leader sends TIMEOUT_NOW; the target wins at once even though the other follower is
    inside CheckQuorum's lease, and proposals are refused while the transfer runs."""
    from engine.errors import ProposalDropped

    net = CoreNetwork(3, check_quorum=True, pre_vote=True)
    net.elect("1")
    _propose(net, "1", 3)
    net.nodes["1"].raft.transfer_leadership("2")
    with pytest.raises(ProposalDropped):
        net.nodes["1"].propose([b"refused"])
    net.stabilize()
    assert net.leader() == "2"
    assert net.count(MessageKind.TIMEOUT_NOW, dst="2") == 1


def test_leadership_transfer_catches_a_lagging_target_up_first() -> None:
    """A target that lacks entries gets them before TIMEOUT_NOW, and then wins."""
    net = CoreNetwork(3)
    net.elect("1")
    net.isolate("3")
    _propose(net, "1", 5)
    net.heal()
    net.nodes["1"].raft.transfer_leadership("3")
    net.stabilize()
    assert net.leader() == "3"
    assert net.user_data("3")[:5] == [f"x{k}".encode() for k in range(5)] or \
        net.terms("3")[:6] == net.terms("1")[:6]


def test_leadership_transfer_times_out() -> None:
    """An unreachable target never takes over: after an election timeout the leader gives up
    and accepts proposals again."""
    net = CoreNetwork(3)
    net.elect("1")
    net.isolate("3")
    net.nodes["1"].raft.transfer_leadership("3")
    net.tick_all(net.options.election_ticks_min + 1)
    assert net.nodes["1"].raft.lead_transferee is None
    net.heal()
    net.nodes["1"].propose([b"again"])
    net.stabilize()
