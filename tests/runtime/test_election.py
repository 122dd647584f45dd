"""Leader election scenarios (6.824 lab 2A in spirit): initial election, stable leadership,
re-election after the leader is cut off, no leader without a majority, CheckQuorum step-down."""

from __future__ import annotations

import dataclasses

from tests.conftest import FAST, LIVENESS
from tests.runtime.scenario import one

STABLE_WINDOW = 4 * FAST.election_timeout_max
"""How long a "nothing happens" check watches: a few election timeouts."""


def test_initial_election(make_cluster):
    """Three fresh nodes elect exactly one leader, and every node learns who it is and agrees on
    the term."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    term = leader.status().term
    assert term >= 1

    def everyone_follows() -> bool:
        statuses = [n.status() for n in cluster.nodes]
        return all(s.leader_id == leader.id and s.term == term for s in statuses)

    assert cluster.wait_for(everyone_follows, LIVENESS), [n.status() for n in cluster.nodes]
    roles = sorted(n.status().role for n in cluster.nodes)
    assert roles == ["follower", "follower", "leader"]


def test_leadership_is_stable_without_failures(make_cluster):
    """With no failures, the leader and the term stay the same over several election timeouts:
    heartbeats keep followers from campaigning."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"settle")  # everyone has heard from the leader
    term = leader.status().term

    def changed() -> bool:
        return any(n.status().term != term for n in cluster.nodes) or cluster.leader() is not leader

    assert not cluster.wait_for(changed, STABLE_WINDOW), [n.status() for n in cluster.nodes]


def test_reelection_after_leader_isolated(make_cluster):
    """When the leader is cut off, the other two elect a new leader in a higher term; when the old
    leader rejoins it becomes a follower of the new one, and (PreVote + CheckQuorum) it does not
    depose it."""
    cluster = make_cluster(3)
    old = cluster.wait_for_leader(LIVENESS)
    old_index = cluster.nodes.index(old)
    old_term = old.status().term
    cluster.isolate(old_index)

    def new_leader_elected() -> bool:
        leader = cluster.leader()
        return leader is not None and leader is not old

    assert cluster.wait_for(new_leader_elected, LIVENESS)
    new = cluster.leader()
    assert new is not None
    new_term = new.status().term
    assert new_term > old_term
    one(cluster, b"while-isolated", expected=2)

    cluster.rejoin(old_index)

    def old_follows_new() -> bool:
        s = old.status()
        return s.role == "follower" and s.leader_id == new.id and s.term == new_term

    assert cluster.wait_for(old_follows_new, LIVENESS), old.status()
    assert cluster.leader() is new
    assert new.status().term == new_term
    one(cluster, b"after-rejoin", expected=3)


def test_reelection_after_leader_isolated_without_check_quorum(make_cluster):
    """Without CheckQuorum the isolated leader keeps believing it leads; the majority still elects
    a new leader, and the stale leader steps down as soon as it hears the higher term."""
    config = dataclasses.replace(FAST, check_quorum=False)
    cluster = make_cluster(3, config=config)
    old = cluster.wait_for_leader(LIVENESS)
    old_index = cluster.nodes.index(old)
    cluster.isolate(old_index)
    assert cluster.wait_for(lambda: cluster.leader() not in (None, old), LIVENESS)
    new = cluster.leader()
    assert old.status().role == "leader", "without CheckQuorum the isolated leader stays leader"
    assert old.status().term < new.status().term
    cluster.rejoin(old_index)
    assert cluster.wait_for(lambda: old.status().role == "follower", LIVENESS), old.status()
    one(cluster, b"after-rejoin", expected=3)


def test_leader_steps_down_without_quorum(make_cluster):
    """CheckQuorum: an isolated leader steps down within about an election timeout and reports
    no leader; the majority elects a new one."""
    cluster = make_cluster(3)
    old = cluster.wait_for_leader(LIVENESS)
    cluster.isolate(cluster.nodes.index(old))

    def stepped_down() -> bool:
        s = old.status()
        return s.role != "leader" and s.leader_id is None

    assert cluster.wait_for(stepped_down, LIVENESS), old.status()
    assert cluster.wait_for(lambda: cluster.leader() not in (None, old), LIVENESS)


def test_no_leader_in_a_minority(make_cluster):
    """With two of three nodes cut off (every node alone), no node leads: the old leader steps
    down and nobody can win an election.  After healing, a leader is elected again and commits."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    k = cluster.nodes.index(leader)
    follower = (k + 1) % 3
    cluster.isolate(k)
    cluster.isolate(follower)
    assert cluster.wait_for(lambda: leader.status().role != "leader", LIVENESS), leader.status()

    def anyone_leads() -> bool:
        return any(n.status().role == "leader" for n in cluster.nodes)

    assert not cluster.wait_for(anyone_leads, STABLE_WINDOW), [n.status() for n in cluster.nodes]
    # The node that was not cut off itself has nobody to talk to either: it forgets the leader.
    assert cluster.wait_for(lambda: all(n.status().leader_id is None for n in cluster.nodes),
                            LIVENESS), [n.status() for n in cluster.nodes]

    cluster.heal()
    cluster.wait_for_leader(LIVENESS)
    one(cluster, b"healed", expected=3)


def test_prevote_keeps_isolated_node_from_raising_the_term(make_cluster):
    """PreVote: a follower cut off for many election timeouts does not bump its term, so when it
    rejoins the leader keeps its term."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"x")
    term = leader.status().term
    victim = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(victim)
    # Let it time out several times; its term must not move (a wait expected to time out).
    assert not cluster.wait_for(lambda: cluster.nodes[victim].status().term != term,
                                STABLE_WINDOW)
    cluster.rejoin(victim)
    one(cluster, b"y", expected=3)
    assert leader.status().role == "leader" and leader.status().term == term


def test_five_nodes_elect_with_two_down(make_cluster):
    """Five nodes: with the leader and one follower cut off, the remaining three elect a leader
    and commit; after healing all five apply new commands."""
    cluster = make_cluster(5)
    leader = cluster.wait_for_leader(LIVENESS)
    k = cluster.nodes.index(leader)
    cluster.isolate(k)
    cluster.isolate((k + 1) % 5)
    assert cluster.wait_for(lambda: cluster.leader() not in (None, leader), LIVENESS)
    one(cluster, b"three-of-five", expected=3)
    cluster.heal()
    one(cluster, b"all-five", expected=5)
