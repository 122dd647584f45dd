"""ReadIndex (Raft thesis section 6.4): a read point is released only once a quorum confirmed,
after the request, that this node still leads, and only after it committed an entry of its term.
"""

from __future__ import annotations

import pytest

from engine.core import MessageKind, ReadState
from engine.errors import NotLeaderError
from tests.core.harness import CoreNetwork

HEARTBEAT = MessageKind.HEARTBEAT
HEARTBEAT_RESPONSE = MessageKind.HEARTBEAT_RESPONSE
APPEND = MessageKind.APPEND


def elected(n: int, **options: object) -> CoreNetwork:
    net = CoreNetwork(n, seed=41, **options)
    net.elect("1")
    net.tick_all()
    return net


def relay(net: CoreNetwork, dst: str) -> None:
    """Deliver everything queued for ``dst`` and let it answer (answers stay queued)."""
    for m in net.take(lambda m: m.dst == dst):
        net.deliver(m)
    net.process_ready(dst)


def test_released_only_after_quorum_acks_heartbeats_sent_after_request() -> None:
    """Acks of a heartbeat round sent before the request prove nothing about the request and
    do not release it; one ack of the request's own round (leader + 1 = 2 of 3) does."""
    net = elected(3)
    leader = net.nodes["1"]
    commit = leader.status().commit_index
    leader.tick()  # a heartbeat round BEFORE the request
    net.process_ready("1")
    early = net.take(lambda m: m.kind is HEARTBEAT)
    assert len(early) == 2 and all(m.context == 0 for m in early)
    leader.read_index(42)
    net.process_ready("1")
    assert net.read_states["1"] == []
    own_round = net.take(lambda m: m.kind is HEARTBEAT)
    assert sorted((m.dst, m.context) for m in own_round) == [("2", 42), ("3", 42)]
    for m in early:
        net.deliver(m)
        relay(net, "1")
    net.process_ready("2")
    net.process_ready("3")
    relay(net, "1")
    assert net.read_states["1"] == [], "acks of an earlier round released the read"
    net.deliver(next(m for m in own_round if m.dst == "2"))
    net.process_ready("2")
    assert net.read_states["1"] == []
    relay(net, "1")
    assert net.read_states["1"] == [ReadState(commit, 42)]


def test_five_nodes_need_two_follower_acks() -> None:
    """With five voters the leader plus two acks form the quorum; one is not enough."""
    net = elected(5)
    net.nodes["1"].read_index(7)
    net.process_ready("1")
    for follower in ("2", "3"):
        relay(net, follower)
    for m in net.take(lambda m: m.dst == "1" and m.src == "2"):
        net.deliver(m)
    net.process_ready("1")
    assert net.read_states["1"] == []
    for m in net.take(lambda m: m.dst == "1" and m.src == "3"):
        net.deliver(m)
    net.process_ready("1")
    assert [r.context for r in net.read_states["1"]] == [7]


def test_newer_round_releases_older_requests() -> None:
    """An ack of a later request's heartbeat also confirms every earlier pending request."""
    net = elected(3)
    leader = net.nodes["1"]
    leader.read_index(1)
    net.process_ready("1")
    net.take(lambda m: m.kind is HEARTBEAT)  # the first round is lost
    leader.propose([b"w"])
    leader.read_index(2)
    net.stabilize()
    assert [r.context for r in net.read_states["1"]] == [1, 2]
    first, second = net.read_states["1"]
    assert second.index >= first.index


def test_not_released_before_leader_commits_entry_of_its_term() -> None:
    """A new leader's commit index may lag what its predecessor committed: until its own
    no-op commits, reads wait (even with heartbeat acks), then are released at an index that
    includes the no-op."""
    net = CoreNetwork(3, seed=43)
    net.nodes["1"].campaign()
    net.stabilize(keep=lambda m: m.kind is not APPEND)  # the no-op reaches no follower
    leader = net.nodes["1"]
    assert leader.status().role == "leader"
    noop_index = leader.status().last_log_index
    assert leader.status().commit_index < noop_index
    leader.read_index(5)
    for _ in range(3):
        leader.tick()
        net.stabilize(keep=lambda m: m.kind is not APPEND)
    assert net.count(HEARTBEAT_RESPONSE) > 0, "followers did answer heartbeats"
    assert net.read_states["1"] == []
    net.tick_all()
    net.stabilize()
    assert leader.status().commit_index >= noop_index
    assert net.read_states["1"] == [ReadState(noop_index, 5)]


@pytest.mark.parametrize("check_quorum", [True, False])
def test_isolated_leader_never_releases(check_quorum: bool) -> None:
    """A leader cut off from every follower cannot confirm leadership, so the read is never
    released: with CheckQuorum the leader steps down while isolated; without it, it leads on
    alone (while the others elect a new leader) and steps down once healed, dropping the read."""
    net = elected(3, check_quorum=check_quorum)
    net.isolate("1")
    net.nodes["1"].read_index(11)
    net.tick_all(5 * net.options.election_ticks_max)
    assert net.read_states["1"] == []
    assert (net.nodes["1"].status().role == "leader") is not check_quorum
    net.heal()
    net.tick_all(5)
    assert net.nodes["1"].status().role == "follower"
    assert net.read_states["1"] == [], "a deposed leader never releases its old read"


def test_single_node_releases_at_once() -> None:
    """A one-node cluster is its own quorum: the read point comes out in the next Ready, with
    no message sent."""
    net = CoreNetwork(1, seed=0)
    net.elect("1")
    net.stabilize()
    node = net.nodes["1"]
    node.read_index(3)
    rd = node.ready()
    assert rd.read_states == [ReadState(node.status().commit_index, 3)]
    assert rd.messages == []


def test_non_leader_raises_not_leader() -> None:
    """read_index on a follower raises NotLeaderError naming the known leader; context 0 is
    reserved and rejected."""
    net = elected(3)
    with pytest.raises(NotLeaderError) as info:
        net.nodes["2"].read_index(1)
    assert info.value.leader_id == "1"
    with pytest.raises(ValueError):
        net.nodes["1"].read_index(0)
    fresh = CoreNetwork(3, seed=0)
    with pytest.raises(NotLeaderError) as info:
        fresh.nodes["1"].read_index(1)
    assert info.value.leader_id is None
