"""Typed events (``RaftNode.subscribe``): each kind fires in the scenario that should raise it,
and a slow or raising subscriber cannot stall the node.

Waiting goes through a Condition the subscriber notifies, or ``LocalCluster.wait_for``, always
with a deadline; nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

from engine import LocalCluster, LogStateMachine, RaftNode
from engine import events as ev
from engine.storage import damage
from engine.storage.faulty import DiskFaults, FaultyLogStore, FaultyStableStore
from engine.transport.memory import MemoryNetwork
from tests.conftest import FAST, LIVENESS, raft_threads

SNAPPY = dataclasses.replace(FAST, snapshot_threshold=200, snapshot_trailing_entries=50,
                             snapshot_chunk_bytes=2048)


class Recorder:
    """A subscriber that keeps every event; ``wait(predicate)`` waits with a deadline."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: ev.Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def of(self, kind: type, node: str | None = None) -> list[ev.Event]:
        with self.cond:
            return [e for e in self.events if isinstance(e, kind)
                    and (node is None or e.node == node)]

    def wait(self, kind: type, node: str | None = None,
             where: Callable[[ev.Event], bool] = lambda e: True) -> ev.Event:
        with self.cond:
            assert self.cond.wait_for(
                lambda: any(where(e) for e in self.of(kind, node)), LIVENESS), (
                kind.__name__, node, self.events)
            return next(e for e in self.of(kind, node) if where(e))


def _propose(leader: RaftNode, count: int, tag: str = "c") -> None:
    futures = [leader.propose(f"{tag}{k:05d}".encode()) for k in range(count)]
    for future in futures:
        future.result(LIVENESS)


def test_leader_change_membership_snapshot_and_compaction_events() -> None:
    seen = Recorder()
    with LocalCluster(3, state_machine=LogStateMachine, config=SNAPPY, seed=11) as cluster:
        for node in cluster.nodes:
            node.subscribe(seen)
        leader = cluster.wait_for_leader(LIVENESS)
        changed = seen.wait(ev.LeaderChanged, leader.id, lambda e: e.leader == leader.id)
        assert changed.term == leader.status().term

        # A follower cut off while the leader compacts catches up by InstallSnapshot.
        lagging = (cluster.nodes.index(leader) + 1) % 3
        lagging_id = cluster.ids[lagging]
        cluster.isolate(lagging)
        unreachable = seen.wait(ev.PeerUnreachable, leader.id, lambda e: e.peer == lagging_id)
        assert unreachable.silent_for > SNAPPY.election_timeout_max
        for round_ in range(4):
            before = leader.status().snapshot_index
            _propose(leader, 300, f"r{round_}-")
            assert cluster.wait_for(lambda b=before: leader.status().snapshot_index > b,
                                    LIVENESS)
        compacted = seen.wait(ev.LogCompacted, leader.id)
        assert compacted.snapshot_index > 0
        cluster.rejoin(lagging)
        seen.wait(ev.PeerReachable, leader.id, lambda e: e.peer == lagging_id)
        sent = seen.wait(ev.SnapshotSent, leader.id, lambda e: e.peer == lagging_id)
        assert sent.ok and sent.index > 0
        received = seen.wait(ev.SnapshotReceived, lagging_id)
        installed = seen.wait(ev.SnapshotInstalled, lagging_id)
        assert installed.index == received.index == sent.index
        telemetry = leader.telemetry
        assert telemetry.snapshots_sent >= 1 and telemetry.snapshots_taken >= 1
        assert cluster.nodes[lagging].telemetry.snapshots_installed >= 1

        # Membership: remove a follower; every remaining node reports the new configuration.
        leader = cluster.wait_for_leader(LIVENESS)
        removed = next(n.id for n in cluster.nodes if n is not leader)
        leader.remove_member(removed).result(LIVENESS)
        change = seen.wait(ev.MembershipChanged, leader.id,
                           lambda e: removed not in e.membership.members())
        assert leader.id in change.membership.voters

        # A transfer: the target reports itself as the new leader.
        target = next(n for n in cluster.nodes if n is not leader and n.id != removed)
        leader.transfer_leadership(target.id).result(LIVENESS)
        seen.wait(ev.LeaderChanged, target.id, lambda e: e.leader == target.id
                  and e.previous != target.id)
        assert target.telemetry.leader_changes >= 2
        assert target.telemetry.elections_won >= 1


def test_slow_and_raising_subscribers_do_not_stall_the_node() -> None:
    release = threading.Event()
    entered = threading.Event()

    def stuck(event: ev.Event) -> None:
        entered.set()
        release.wait(LIVENESS)

    def broken(event: ev.Event) -> None:
        raise RuntimeError("subscriber bug")

    with LocalCluster(3, state_machine=LogStateMachine, config=FAST, seed=3) as cluster:
        for node in cluster.nodes:
            node.subscribe(broken)
            node.subscribe(stuck)
        leader = cluster.wait_for_leader(LIVENESS)
        assert entered.wait(LIVENESS)  # a subscriber is blocked inside a callback ...
        _propose(leader, 200)  # ... and the cluster still commits
        assert leader.status().commit_index >= 200
        release.set()
        seen = Recorder()
        unsubscribe = leader.subscribe(seen)
        other = next(n for n in cluster.nodes if n is not leader)
        leader.transfer_leadership(other.id).result(LIVENESS)
        seen.wait(ev.LeaderChanged, leader.id, lambda e: e.leader == other.id)
        unsubscribe()
    assert not [t for t in raft_threads() if t.endswith("-events")]


def test_recovering_started_and_finished(tmp_path: Path) -> None:
    """protocol-aware recovery: a follower whose newest, acknowledged record rots comes up
    recovering (RecoveringStarted, kept for a subscriber that arrives after start) and
    finishes once the leader gave the entry back."""
    config = dataclasses.replace(FAST, fsync=True, snapshot_threshold=0)
    cluster = LocalCluster(3, state_machine=LogStateMachine, config=config,
                           data_dir=str(tmp_path), seed=5)
    with cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lead = cluster.nodes.index(leader)
        follower = (lead + 1) % 3
        assert leader.propose(b"first").result(LIVENESS)
        index = leader.propose(b"second").result(LIVENESS)
        follower_id = cluster.ids[follower]
        # Committed needs only one follower: wait until this one holds the entry (applied
        # implies durable there), or there is no record of it to rot.
        assert cluster.wait_for(
            lambda: cluster.nodes[follower].status().last_applied >= index, LIVENESS)
        cluster.nodes[follower].stop()
        assert damage.flip_byte(tmp_path / follower_id, index).index == index
        node = cluster.restart(follower)
        seen = Recorder()
        node.subscribe(seen)
        started = seen.wait(ev.RecoveringStarted, follower_id)
        assert started.index >= index
        seen.wait(ev.RecoveringFinished, follower_id)
        assert node.telemetry.recovering_episodes == 1
        assert node.status().recovering == 0


def test_disk_stall_started_and_ended() -> None:
    config = dataclasses.replace(FAST, storage_thread=True, disk_stall_timeout=0.3)
    ids = ("a", "b", "c")
    network = MemoryNetwork(seed=4)
    disks = {i: DiskFaults(i) for i in ids}
    peers = {i: f"memory:{i}" for i in ids}
    nodes = {i: RaftNode(i, peers, LogStateMachine(), config=config,
                         transport=network.endpoint(i), seed=k,
                         log_store=FaultyLogStore(faults=disks[i]),
                         stable_store=FaultyStableStore(faults=disks[i]))
             for k, i in enumerate(ids)}
    seen = Recorder()
    for node in nodes.values():
        node.subscribe(seen)
        node.start()
    try:
        first = seen.wait(ev.LeaderChanged, where=lambda e: e.leader is not None)
        leader = nodes[first.leader]
        seen.wait(ev.LeaderChanged, leader.id, lambda e: e.leader == leader.id)
        assert leader.propose(b"before").result(LIVENESS) >= 1
        disks[leader.id].stall_sync()
        leader.propose(b"during")
        seen.wait(ev.DiskStallStarted, leader.id)
        disks[leader.id].release_sync()
        seen.wait(ev.DiskStallEnded, leader.id)
        assert leader.telemetry.disk_stalls == 1
    finally:
        for disk in disks.values():
            disk.release_sync()
        for node in nodes.values():
            node.stop()
        network.close()
    assert not raft_threads(), raft_threads()
