"""Persistence scenarios (6.824 lab 2C in spirit): crash and restart one, some and all nodes; the
durable term, vote and log survive, and each restarted node's state machine is rebuilt by
replaying the log into a fresh instance."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import FAST, LIVENESS
from tests.runtime.scenario import agreed_commands, assert_identical, commands, one


def test_restart_one_follower_replays_its_log(make_cluster):
    """A crashed follower restarts with a fresh state machine that replay plus catch-up brings to
    exactly the leader's commands, including those committed while it was down."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"a", expected=3)
    victim = (cluster.nodes.index(leader) + 1) % 3
    old_machine = cluster.nodes[victim].state_machine
    term = cluster.nodes[victim].status().term
    cluster.crash(victim)
    assert not cluster.nodes[victim].status().running
    one(cluster, b"b", expected=2)
    node = cluster.restart(victim)
    assert cluster.nodes[victim] is node and node.status().running
    assert node.state_machine is not old_machine
    assert node.status().term >= term, "the durable term survives a crash"
    one(cluster, b"c", expected=3)
    assert agreed_commands(cluster.nodes) == [b"a", b"b", b"c"]


def test_restart_all_nodes(make_cluster):
    """After every node crashes and restarts, the cluster elects a leader in a term at least as
    high as before, every committed command is replayed into the fresh state machines, and new
    commands commit after them."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    for k in range(5):
        one(cluster, b"before-%d" % k, expected=3)
    term = leader.status().term
    for i in range(3):
        cluster.crash(i)
    assert cluster.leader() is None
    for i in range(3):
        cluster.restart(i)
    new_leader = cluster.wait_for_leader(LIVENESS)
    assert new_leader.status().term >= term
    one(cluster, b"after", expected=3)
    assert agreed_commands(cluster.nodes) == [*(b"before-%d" % k for k in range(5)), b"after"]


def test_restart_all_nodes_repeatedly(make_cluster):
    """Several rounds of "commit, crash everyone, restart everyone": nothing committed is ever
    lost or reordered, and terms never go backwards."""
    cluster = make_cluster(3)
    expected: list[bytes] = []
    term = 0
    for round_ in range(3):
        cluster.wait_for_leader(LIVENESS)
        for k in range(3):
            command = b"r%d-%d" % (round_, k)
            one(cluster, command, expected=3)
            expected.append(command)
        terms = [n.status().term for n in cluster.nodes]
        assert min(terms) >= term
        term = max(terms)
        for i in range(3):
            cluster.crash(i)
        for i in (2, 0, 1):
            cluster.restart(i)
    one(cluster, b"end", expected=3)
    assert agreed_commands(cluster.nodes) == [*expected, b"end"]


@pytest.mark.parametrize("storage_thread", [False, True], ids=["inline", "storage-thread"])
def test_committed_entries_survive_crashes_of_their_majority(make_cluster, storage_thread):
    """6.824 TestPersist2: five nodes; two followers crash, the other three commit a command,
    then those three crash too.  The two stale nodes plus one of the three restart: the command
    the crashed majority committed must survive (the restarted holder wins the election) and new
    commands commit on top of it.  Repeated a few times; with writes inline on the loop thread
    and on a storage thread (Config.storage_thread)."""
    cluster = make_cluster(5, config=dataclasses.replace(FAST, storage_thread=storage_thread))
    expected: list[bytes] = []
    for round_ in range(3):
        command = b"all-%d" % round_
        one(cluster, command, expected=5)
        expected.append(command)
        k = cluster.nodes.index(cluster.wait_for_leader(LIVENESS))
        cluster.crash((k + 1) % 5)
        cluster.crash((k + 2) % 5)
        command = b"three-%d" % round_
        one(cluster, command, expected=3)
        expected.append(command)
        for d in (0, 3, 4):
            cluster.crash((k + d) % 5)
        for d in (1, 2, 3):
            cluster.restart((k + d) % 5)
        command = b"restarted-%d" % round_
        one(cluster, command, expected=3)
        expected.append(command)
        for d in (4, 0):
            cluster.restart((k + d) % 5)
    one(cluster, b"end", expected=5)
    assert agreed_commands(cluster.nodes) == [*expected, b"end"]


def test_isolated_follower_and_crashed_leader(make_cluster):
    """6.824 TestPersist3: a follower is cut off; the other two commit; then both of them crash.
    The cut-off follower rejoins and the old leader restarts: together they commit on top of
    the command the follower never saw (the restarted leader holds it).  Finally the third node
    restarts and catches up."""
    cluster = make_cluster(3)
    one(cluster, b"101", expected=3)
    k = cluster.nodes.index(cluster.wait_for_leader(LIVENESS))
    cluster.isolate((k + 2) % 3)
    one(cluster, b"102", expected=2)
    cluster.crash(k)
    cluster.crash((k + 1) % 3)
    cluster.rejoin((k + 2) % 3)
    cluster.restart(k)
    one(cluster, b"103", expected=2)
    cluster.restart((k + 1) % 3)
    one(cluster, b"104", expected=3)
    assert agreed_commands(cluster.nodes) == [b"101", b"102", b"103", b"104"]


def test_restart_of_running_node_crashes_it_first(make_cluster):
    """restart(i) on a running node replaces it (crashing the old one), and the replacement
    rebuilds the same state machine contents."""
    cluster = make_cluster(3)
    one(cluster, b"x", expected=3)
    old = cluster.nodes[1]
    before = commands(old)
    new = cluster.restart(1)
    assert not old.status().running
    assert new is cluster.nodes[1] and new is not old
    one(cluster, b"y", expected=3)
    assert commands(new)[: len(before)] == before
    assert_identical(cluster.nodes)
