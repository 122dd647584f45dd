"""Contract-level behaviour of LocalCluster (shared/DESIGN.md, "Public contract"): construction
and Config errors, lifecycle, node replacement on restart, fault controls, message counting,
the waiting helpers, and cluster sizes 1 and 5."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from engine import (
    Config,
    ConfigError,
    LocalCluster,
    LogStateMachine,
    NodeStopped,
    RaftNode,
)
from tests.conftest import FAST, LIVENESS, raft_threads
from tests.fds import leaked_fds, open_fds
from tests.runtime.scenario import agreed_commands, assert_identical, commands, one


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"heartbeat_interval": 0.5}, "heartbeat_interval"),
    ({"election_timeout_max": 0.1}, "election_timeout_max"),
    ({"election_timeout_min": -1.0}, "election_timeout_min"),
    ({"tick_interval": 0.2}, "tick_interval"),
    ({"max_inflight": 0}, "max_inflight"),
    ({"max_batch_entries": 1.5}, "max_batch_entries"),
    ({"pre_vote": "yes"}, "pre_vote"),
    ({"read_timeout": float("nan")}, "read_timeout"),
])
def test_bad_config_raises_config_error_naming_the_field(kwargs, field):
    """An invalid Config raises ConfigError (also a ValueError) at construction, and the message
    names the offending field."""
    with pytest.raises(ConfigError, match=field) as info:
        Config(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n": 0}, "n="),
    ({"n": "3"}, "n="),
    ({"n": True}, "n="),
    ({"transport": "udp"}, "transport"),
    ({"config": {"heartbeat_interval": 0.01}}, "config"),
])
def test_bad_cluster_arguments_raise_config_error(kwargs, field):
    """LocalCluster rejects a bad size, transport or config object with ConfigError naming the
    argument, before any thread starts."""
    with pytest.raises(ConfigError, match=field):
        LocalCluster(**kwargs)
    assert not raft_threads()


def test_context_manager_lifecycle_leaves_nothing_behind(seed):
    """``with LocalCluster(...)`` starts every node and stop() on exit leaves no raft thread and
    no extra file descriptor; stop() is idempotent."""
    fds = open_fds()
    cluster = LocalCluster(3, config=FAST, seed=seed)
    with cluster:
        assert [n.id for n in cluster.nodes] == ["n1", "n2", "n3"]
        assert all(isinstance(n, RaftNode) and n.status().running for n in cluster.nodes)
        one(cluster, b"x", expected=3)
    assert not any(n.status().running for n in cluster.nodes)
    cluster.stop()
    assert not raft_threads()
    assert leaked_fds(fds) == set()


def test_stop_without_start(seed):
    """A cluster that was never started can be stopped."""
    cluster = LocalCluster(2, config=FAST, seed=seed)
    cluster.stop()
    assert not raft_threads()


def test_single_node_cluster(make_cluster):
    """A one-node cluster elects itself, commits, serves reads and survives a restart."""
    cluster = make_cluster(1)
    leader = cluster.wait_for_leader(LIVENESS)
    assert leader is cluster.nodes[0]
    for k in range(5):
        one(cluster, b"s-%d" % k)
    assert leader.read(lambda m: len(m.commands)).result(LIVENESS) == 5
    cluster.crash(0)
    cluster.restart(0)
    one(cluster, b"s-5")
    assert agreed_commands(cluster.nodes) == [b"s-%d" % k for k in range(6)]


def test_five_nodes_tolerate_two_crashes(make_cluster):
    """Five nodes keep committing with two crashed (the leader among them), and the crashed ones
    catch up after restart."""
    cluster = make_cluster(5)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"five", expected=5)
    k = cluster.nodes.index(leader)
    cluster.crash(k)
    cluster.crash((k + 1) % 5)
    for i in range(3):
        one(cluster, b"three-%d" % i, expected=3)
    cluster.restart(k)
    cluster.restart((k + 1) % 5)
    one(cluster, b"again", expected=5)
    assert agreed_commands(cluster.nodes) == [
        b"five", b"three-0", b"three-1", b"three-2", b"again"]


def test_restart_replaces_the_node_object(make_cluster):
    """After restart(i), cluster.nodes[i] is a new RaftNode with the same id and a fresh state
    machine; the old object stays stopped, and its futures fail instead of hanging."""
    cluster = make_cluster(3)
    one(cluster, b"x", expected=3)
    old = cluster.nodes[2]
    cluster.crash(2)
    assert isinstance(old.propose(b"y").exception(0), NodeStopped)
    new = cluster.restart(2)
    assert cluster.nodes[2] is new and new is not old and new.id == old.id == "n3"
    assert isinstance(new.state_machine, LogStateMachine)
    assert new.state_machine is not old.state_machine
    assert not old.status().running and new.status().running
    one(cluster, b"z", expected=3)


def test_leader_and_wait_for_leader_without_a_majority(make_cluster):
    """With every node cut off, leader() is None and wait_for_leader() raises TimeoutError after
    its timeout; with every node crashed, leader() is None too."""
    cluster = make_cluster(3, start=False)
    for i in range(3):
        cluster.isolate(i)
    cluster.start()
    with pytest.raises(TimeoutError):
        cluster.wait_for_leader(timeout=0.5)
    assert cluster.leader() is None
    cluster.heal()
    cluster.wait_for_leader(LIVENESS)
    for i in range(3):
        cluster.crash(i)
    assert cluster.leader() is None


def test_message_count_includes_dropped_messages(make_cluster):
    """message_count() counts every message handed to the transport, also those the fault plan
    drops: isolated nodes' pre-votes are counted although none is ever answered."""
    cluster = make_cluster(3, start=False)
    assert cluster.message_count() == 0
    for i in range(3):
        cluster.isolate(i)
    cluster.start()
    assert cluster.wait_for(lambda: cluster.message_count() >= 12, LIVENESS)
    cluster.stop()  # freeze the counters
    counts = cluster.network.message_counts()
    assert counts["PRE_VOTE"] >= 6
    assert counts["PRE_VOTE_RESPONSE"] == 0 and counts["VOTE"] == 0
    assert sum(counts.values()) == cluster.message_count()


def test_message_count_grows_monotonically_across_restarts(make_cluster):
    """Messages sent by a node before it crashed stay counted after it restarts."""
    cluster = make_cluster(3)
    one(cluster, b"a", expected=3)
    before = cluster.message_count()
    cluster.crash(0)
    assert cluster.message_count() >= before
    cluster.restart(0)
    one(cluster, b"b", expected=3)
    assert cluster.message_count() > before


def test_partition_groups(make_cluster):
    """partition([a, b], [c]) lets only the majority group elect and commit; heal() reunites
    everyone."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    k = cluster.nodes.index(leader)
    minority = (k + 2) % 3
    cluster.partition([k, (k + 1) % 3], [minority])
    one(cluster, b"majority", expected=2)
    assert cluster.nodes[minority].status().role != "leader"
    assert b"majority" not in [c for _, c in commands(cluster.nodes[minority])]
    cluster.heal()
    one(cluster, b"healed", expected=3)
    assert_identical(cluster.nodes)


def test_set_faults_total_loss_then_recovery(make_cluster):
    """set_faults(drop=1.0) stops all traffic (proposals do not commit); set_faults() with no
    arguments switches faults off and the cluster recovers."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    base = one(cluster, b"base", expected=3)
    cluster.set_faults(drop=1.0)
    future = leader.propose(b"lost-in-the-void") if leader.status().role == "leader" else None
    assert not cluster.wait_for(
        lambda: any(n.status().commit_index > base for n in cluster.nodes), 0.5)
    cluster.set_faults()
    one(cluster, b"after", expected=3)
    if future is not None:
        assert cluster.wait_for(future.done, LIVENESS)
    assert_identical(cluster.nodes)


def test_duplicated_and_reordered_messages_apply_once(make_cluster):
    """With messages duplicated, delayed and reordered, every command is still applied exactly
    once, in the same order, on every node."""
    cluster = make_cluster(3)
    cluster.set_faults(duplicate=0.3, delay=(0.0, 0.005), reorder=True)
    sent = []
    for k in range(30):
        command = b"d-%d" % k
        one(cluster, command)
        sent.append(command)
    cluster.set_faults()
    one(cluster, b"end", expected=3)
    assert agreed_commands(cluster.nodes) == [*sent, b"end"]


def test_wait_applied_on_chosen_nodes(make_cluster):
    """wait_applied(index, nodes=[...]) waits on the chosen nodes only: it succeeds for the two
    connected nodes and times out for one that is cut off."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    k = cluster.nodes.index(leader)
    cut = (k + 1) % 3
    cluster.isolate(cut)
    index = leader.propose(b"w").result(LIVENESS)
    assert cluster.wait_applied(index, nodes=[k, (k + 2) % 3], timeout=LIVENESS)
    assert not cluster.wait_applied(index, nodes=[cut], timeout=0.3)
    cluster.rejoin(cut)
    assert cluster.wait_applied(index, timeout=LIVENESS)


def test_config_is_shared_and_immutable(make_cluster):
    """The cluster's Config is the one passed in; Config is frozen (changes need
    dataclasses.replace)."""
    config = dataclasses.replace(FAST, max_batch_entries=7)
    cluster = make_cluster(1, config=config)
    assert cluster.config is config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_batch_entries = 8  # type: ignore[misc]
    leader = cluster.wait_for_leader(LIVENESS)
    futures = [leader.propose(b"%d" % k) for k in range(20)]
    assert [f.result(LIVENESS) for f in futures] == list(range(2, 22))


def test_wait_for_predicate_may_wait_on_the_nodes(make_cluster):
    """A wait_for() predicate may itself block on the cluster (here: a linearizable read): node
    threads notify waiters without waiting for the predicate, so this neither deadlocks nor
    stalls the node until the read times out."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    for k in range(3):
        leader.propose(b"r-%d" % k)
    assert cluster.wait_for(
        lambda: leader.read(lambda m: len(m.commands)).result(LIVENESS / 2) >= 3, LIVENESS)


def test_wait_for_leader_skips_a_cut_off_leader(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """After isolate(leader), wait_for_leader() returns the newly elected leader, never the old
    one that still believes it leads; after heal the old one is a follower."""
    cluster = make_cluster(3, config=dataclasses.replace(FAST, check_quorum=False))
    old = cluster.wait_for_leader(LIVENESS)
    cluster.isolate(cluster.nodes.index(old))
    new = cluster.wait_for_leader(LIVENESS)
    assert new is not old
    assert old.status().role == "leader"  # without CheckQuorum it still believes it leads
    cluster.heal()
    assert cluster.wait_for(lambda: old.status().role == "follower", LIVENESS)
    assert cluster.wait_for_leader(LIVENESS) is new
