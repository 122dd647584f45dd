"""Snapshots through the runtime (6.824 part D in spirit): automatic snapshots bound the log,
a follower that missed compacted entries receives InstallSnapshot in chunks (also over a lossy
network and across a crash during the transfer), restart replays only the log after the
snapshot, and a corrupt snapshot file falls back to the older one."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

from engine import Config, LocalCluster, LogStateMachine, RaftNode
from tests.conftest import FAST, LIVENESS

SNAPPY = dataclasses.replace(FAST, snapshot_threshold=200, snapshot_trailing_entries=50,
                             snapshot_chunk_bytes=2048)


class CountingMachine(LogStateMachine):
    """LogStateMachine that also counts apply() and restore() calls (thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.apply_calls = 0
        self.restores = 0
        self._counter_lock = threading.Lock()

    def apply(self, index: int, command: bytes) -> object:
        with self._counter_lock:
            self.apply_calls += 1
        return super().apply(index, command)

    def restore(self, data: bytes) -> None:
        with self._counter_lock:
            self.restores += 1
        super().restore(data)


def _propose_all(leader: RaftNode, count: int, tag: str = "c") -> None:
    futures = [leader.propose(f"{tag}{k:05d}".encode()) for k in range(count)]
    for future in futures:
        future.result(LIVENESS)


def _propose_past_compaction(cluster: LocalCluster, leader: RaftNode, rounds: int = 4,
                             per_round: int = 300) -> None:
    """Propose in rounds, each waiting for the leader's next automatic snapshot, until the
    leader's log has been compacted (the first snapshot keeps the log; later ones trim it)."""
    for round_ in range(rounds):
        before = leader.status().snapshot_index
        _propose_all(leader, per_round, tag=f"r{round_}-")
        assert cluster.wait_for(lambda b=before: leader.status().snapshot_index > b, LIVENESS)
    status = leader.status()
    assert status.log_entries < status.last_log_index, "the leader's log was never compacted"


def _caught_up(cluster: LocalCluster, index: int) -> Callable[[], bool]:
    return lambda: all(n.last_applied >= index for n in cluster.nodes if n.status().running)


def _same_state(cluster: LocalCluster) -> None:
    states = [list(n.state_machine.commands) for n in cluster.nodes]
    assert all(s == states[0] for s in states), "replicas differ"


def test_log_stays_bounded_under_a_long_run(make_cluster: Callable[..., LocalCluster]) -> None:
    """With snapshot_threshold=N, once the nodes have snapshotted what they applied, each log
    holds about two snapshot intervals, not the whole history; every entry is still applied
    everywhere."""
    cluster = make_cluster(3, config=SNAPPY)
    leader = cluster.wait_for_leader(LIVENESS)
    for round_ in range(10):
        _propose_all(leader, 150, tag=f"r{round_}-")
    commit = leader.status().commit_index
    assert cluster.wait_for(_caught_up(cluster, commit), LIVENESS)
    threshold = SNAPPY.snapshot_threshold
    assert cluster.wait_for(lambda: all(n.status().snapshot_index > commit - threshold
                                        for n in cluster.nodes), LIVENESS)
    for node in cluster.nodes:
        entries = node.status().log_entries
        assert entries <= 3 * threshold, f"{node.id} holds {entries} of {commit} entries"
    _same_state(cluster)


def test_lagging_follower_receives_snapshot(make_cluster: Callable[..., LocalCluster]) -> None:
    """A follower cut off while the leader compacted its log catches up by InstallSnapshot
    (its snapshot_index jumps) and ends with the same state as the leader."""
    cluster = make_cluster(3, config=SNAPPY, state_machine=CountingMachine)
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(lagging)
    _propose_past_compaction(cluster, leader)
    cluster.rejoin(lagging)
    commit = leader.status().commit_index
    assert cluster.wait_for(_caught_up(cluster, commit), LIVENESS)
    follower = cluster.nodes[lagging]
    assert follower.state_machine.restores >= 1, "the follower never installed a snapshot"
    assert follower.status().snapshot_index > 0
    _same_state(cluster)


def test_snapshot_over_lossy_network(make_cluster: Callable[..., LocalCluster]) -> None:
    """Chunks lost or reordered on a 20%-drop network are resent; the follower converges."""
    cluster = make_cluster(3, config=dataclasses.replace(SNAPPY, snapshot_chunk_bytes=512))
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(lagging)
    _propose_past_compaction(cluster, leader)
    cluster.set_faults(drop=0.2, delay=(0.0, 0.002), reorder=True)
    cluster.rejoin(lagging)

    def converged() -> bool:
        node = cluster.leader()
        return node is not None and _caught_up(cluster, node.status().commit_index)()

    assert cluster.wait_for(converged, 3 * LIVENESS)
    cluster.set_faults()
    leader = cluster.wait_for_leader(LIVENESS)
    leader.propose(b"final").result(LIVENESS)
    assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
    _same_state(cluster)


def test_crash_during_install_then_converge(make_cluster: Callable[..., LocalCluster]) -> None:
    """Crashing the receiving follower while chunks are in flight, then restarting it, still
    ends with a converged replica."""
    cluster = make_cluster(3, config=dataclasses.replace(SNAPPY, snapshot_chunk_bytes=256))
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(lagging)
    _propose_past_compaction(cluster, leader)
    cluster.rejoin(lagging)
    assert cluster.wait_for(lambda: cluster.nodes[lagging].status().term == leader.status().term,
                            LIVENESS)
    cluster.crash(lagging)
    cluster.restart(lagging)
    leader = cluster.wait_for_leader(LIVENESS)
    assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
    _same_state(cluster)


def test_restart_replays_only_the_suffix(make_cluster: Callable[..., LocalCluster]) -> None:
    """A node restarted after a snapshot restores it and applies only the later entries."""
    cluster = make_cluster(3, config=SNAPPY, state_machine=CountingMachine)
    leader = cluster.wait_for_leader(LIVENESS)
    _propose_all(leader, 700)
    victim = (cluster.nodes.index(leader) + 1) % 3
    assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
    snapshot_index = cluster.nodes[victim].snapshot().result(LIVENESS)
    assert snapshot_index >= 700
    cluster.crash(victim)
    node = cluster.restart(victim)
    machine = node.state_machine
    assert machine.restores == 1
    _propose_all(cluster.wait_for_leader(LIVENESS), 10, tag="after")
    leader = cluster.wait_for_leader(LIVENESS)
    assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
    assert machine.apply_calls <= len(machine.commands) - snapshot_index + 11
    _same_state(cluster)


def test_on_demand_snapshot_and_status(make_cluster: Callable[..., LocalCluster]) -> None:
    """RaftNode.snapshot() resolves to the snapshot's index and Status reports it."""
    cluster = make_cluster(1, config=dataclasses.replace(FAST, snapshot_threshold=0))
    leader = cluster.wait_for_leader(LIVENESS)
    _propose_all(leader, 20)
    index = leader.snapshot().result(LIVENESS)
    assert index == leader.status().commit_index
    assert cluster.wait_for(lambda: leader.status().snapshot_index == index, LIVENESS)


def test_corrupt_newest_snapshot_falls_back(tmp_path: Path) -> None:
    """On disk, a corrupt newest snapshot is skipped: the node restarts from the older one and
    the log behind it, and ends with the right state."""
    config = dataclasses.replace(SNAPPY, snapshot_threshold=0)
    with LocalCluster(1, config=config, data_dir=str(tmp_path), seed=5) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        _propose_all(leader, 30)
        leader.snapshot().result(LIVENESS)
        _propose_all(leader, 30, tag="d")
        leader.snapshot().result(LIVENESS)
        expected = list(leader.state_machine.commands)
        cluster.crash(0)
        snapshots = sorted((tmp_path / "n1").rglob("*.snap"))
        assert len(snapshots) == 2
        newest = snapshots[-1]
        raw = bytearray(newest.read_bytes())
        raw[-1] ^= 0xFF
        newest.write_bytes(bytes(raw))
        os.sync()
        node = cluster.restart(0)
        assert cluster.wait_for(lambda: node.last_applied >= len(expected), LIVENESS)
        assert list(node.state_machine.commands) == expected


def test_config_rejects_negative_snapshot_settings() -> None:
    """snapshot_threshold may be 0 (off) but not negative."""
    try:
        Config(snapshot_threshold=-1)
    except ValueError as exc:
        assert "snapshot_threshold=-1 must be >= 0" in str(exc)
    else:
        raise AssertionError("negative snapshot_threshold accepted")
