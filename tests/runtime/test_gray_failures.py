"""Gray failures: nodes whose links work in one direction only, over memory and TCP.

PreVote and CheckQuorum are on (the defaults).  Three cases, each on a 3-node cluster:

(a) a follower that can send but not receive (``cut_incoming``): it times out again and again
    and pre-votes, but it never hears an answer, so it never starts a real election;
(b) a follower that can receive but not send (``cut_outgoing``): it keeps hearing heartbeats,
    so it never even times out;
(c) a leader that can send but not receive (``cut_incoming``): it hears no acknowledgement, so
    CheckQuorum makes it step down, and the two others elect a new leader.

"Time passes" under a fault by waiting for protocol activity (committed proposals, heartbeat
rounds, pre-vote rounds counted by ``LocalCluster.message_counts()``), never by sleeping.  No
election storm is checked through terms: terms only grow, and a term has at most one leader, so
a node whose term is the same before and after a fault has seen no election and no leader change
in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from engine import LocalCluster, RaftNode
from tests.conftest import FAST, LIVENESS
from tests.runtime.scenario import assert_identical, wait_all_applied

ROUNDS = 3
"""Fault duration, in maximal election timeouts (long enough for repeated timeouts)."""


@pytest.fixture(params=["memory", "tcp"])
def cluster(request: pytest.FixtureRequest,
            make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    assert FAST.pre_vote and FAST.check_quorum  # the defaults, which these tests rely on
    return make_cluster(3, transport=request.param)


def _sent(cluster: LocalCluster, kind: str) -> int:
    return cluster.message_counts()[kind]


def _wait_sent(cluster: LocalCluster, kind: str, more: int) -> None:
    """Wait until the cluster has sent ``more`` further messages of ``kind``."""
    target = _sent(cluster, kind) + more
    assert cluster.wait_for(lambda: _sent(cluster, kind) >= target, LIVENESS), (
        f"only {_sent(cluster, kind)} of {target} {kind} messages sent (seed {cluster.seed})")


def _heartbeat_rounds_for(elections: float) -> int:
    """Heartbeat rounds that span ``elections`` maximal election timeouts."""
    return math.ceil(elections * FAST.election_timeout_max / FAST.heartbeat_interval)


def _commit(leader: RaftNode, prefix: str, count: int = 20) -> None:
    """Propose ``count`` commands through ``leader`` and wait for each to commit and apply."""
    for future in [leader.propose(f"{prefix}{k}".encode()) for k in range(count)]:
        future.result(LIVENESS)


def _terms(cluster: LocalCluster) -> dict[str, tuple[int, str | None]]:
    """Each node's (term, leader id) as it reports them now."""
    statuses = [n.status() for n in cluster.nodes]
    return {s.id: (s.term, s.leader_id) for s in statuses}


def _stable_leader(cluster: LocalCluster) -> tuple[RaftNode, int]:
    """The leader once every node follows it (same term, same leader), and that term."""
    leader = cluster.wait_for_leader(LIVENESS)
    term = leader.status().term
    assert cluster.wait_for(
        lambda: all(v == (term, leader.id) for v in _terms(cluster).values()), LIVENESS), (
        f"not every node follows {leader.id} at term {term}: {_terms(cluster)}")
    return leader, term


def _caught_up(cluster: LocalCluster) -> None:
    """Every node applied the leader's commit index and holds the same applied log."""
    wait_all_applied(cluster)
    assert_identical(cluster.nodes)


@pytest.mark.parametrize("direction", ["send-only", "receive-only"])
def test_one_way_follower_keeps_the_leader(cluster: LocalCluster, direction: str) -> None:
    """(a) send-only and (b) receive-only follower: the leader keeps leading and committing at
    the same term on every node while the fault lasts, and the follower catches up on heal.

    Why no new term can appear (so the assertion is exact, not statistical):
    (a) the follower never receives, so its pre-votes (which do not raise its term) get no
        grant back; it never becomes a candidate.  The others ignore them anyway (CheckQuorum's
        lease: they hear from the leader) and do not adopt the pre-vote's term.
    (b) the follower keeps receiving the leader's heartbeats, so its election timer never
        fires; the leader keeps its quorum through the healthy follower.
    """
    leader, term = _stable_leader(cluster)
    _commit(leader, "before-")
    follower = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
    if direction == "send-only":
        cluster.cut_incoming(follower)
    else:
        cluster.cut_outgoing(follower)
    _commit(leader, "during-a-")
    if direction == "send-only":
        # The follower times out ROUNDS times and pre-votes each time, to its two peers.
        _wait_sent(cluster, "PRE_VOTE", 2 * ROUNDS)
    else:
        # ROUNDS election timeouts' worth of heartbeat rounds, to both followers.
        _wait_sent(cluster, "HEARTBEAT", 2 * _heartbeat_rounds_for(ROUNDS))
    _commit(leader, "during-b-")
    assert leader.status().role == "leader"
    assert cluster.leader() is leader
    assert {v[0] for v in _terms(cluster).values()} == {term}, (
        f"a term changed during the fault: {_terms(cluster)} (seed {cluster.seed})")
    votes = _sent(cluster, "VOTE")
    cluster.heal()
    _commit(leader, "after-")
    _caught_up(cluster)
    assert _terms(cluster) == {n.id: (term, leader.id) for n in cluster.nodes}
    assert _sent(cluster, "VOTE") == votes  # no real election was ever attempted


def test_send_only_leader_steps_down_and_heals_without_a_storm(cluster: LocalCluster) -> None:
    """(c) a leader that can send but not receive steps down through CheckQuorum; the others
    elect a new leader and commit; on heal the old leader follows it at its term, catches up,
    and no further election happens.

    Terms: while the fault lasts the old leader hears nothing, so its term stays put (with
    PreVote it does not raise its term when it times out: no grant reaches it).  The two others
    need a term or more (a split vote between them costs one term each; four in a row is already
    very unlikely, hence the bound).  After heal nothing may change: the old leader's pre-votes
    (at its old term + 1 <= the new term) are refused, and the first heartbeat it hears makes it
    follow the new leader.  Without PreVote it would have raised its term at every timeout and
    deposed the new leader on heal: the storm this test rules out.
    """
    old, term = _stable_leader(cluster)
    _commit(old, "before-")
    index = cluster.nodes.index(old)
    cluster.cut_incoming(index)
    assert cluster.wait_for(lambda: old.status().role != "leader", LIVENESS), (
        f"{old.id} still leads without hearing from anyone (seed {cluster.seed})")
    assert cluster.wait_for(lambda: cluster.leader() not in (None, old), LIVENESS)
    new = cluster.leader()
    assert new is not None and new is not old
    new_term = new.status().term
    assert term < new_term <= term + 4, f"terms {term} -> {new_term} (seed {cluster.seed})"
    _commit(new, "during-")
    # Let the fault last: the old leader times out and pre-votes ROUNDS times meanwhile.
    _wait_sent(cluster, "PRE_VOTE", 2 * ROUNDS)
    _commit(new, "during-b-")
    assert old.status().term == term, f"{old.id} raised its term alone: {old.status()}"
    assert cluster.leader() is new and new.status().term == new_term
    cluster.heal()
    assert cluster.wait_for(lambda: old.status().leader_id == new.id, LIVENESS), (
        f"{old.id} does not follow {new.id} after heal: {old.status()}")
    _commit(new, "after-")
    _wait_sent(cluster, "HEARTBEAT", 2 * _heartbeat_rounds_for(ROUNDS))
    _commit(new, "after-b-")
    _caught_up(cluster)
    assert _terms(cluster) == {n.id: (new_term, new.id) for n in cluster.nodes}, (
        f"an election after heal: {_terms(cluster)} (seed {cluster.seed})")
