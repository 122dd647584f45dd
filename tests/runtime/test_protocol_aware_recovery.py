"""Protocol-aware recovery end to end, on real on-disk stores (issue 12's reproductions).

* One replica's disk rots the newest record of its log, which held an acknowledged entry that
  only it and the leader had; the leader is down.  The damaged replica comes up *recovering*:
  it refuses to vote, so it and the third node cannot elect a leader without the entry; once
  the old leader is back the entry survives everywhere.
* A follower restarts with a shorter log under the same leader (its newest segment deleted):
  the leader resets it and it catches up at once, without a leader change.

The stores are the ones ``data_dir`` opens (native when built, else the file store: both keep
the sync mark).  Waiting goes through ``LocalCluster.wait_for``; "time passes" is measured in
messages exchanged, never slept.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from engine import CorruptLogError, LocalCluster, LogStateMachine, RaftNode
from engine.runtime.recovery import Stores, recover
from engine.storage import damage
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.storage.snapshot import MemorySnapshotStore
from engine.types import Entry, HardState, SnapshotMeta
from tests.conftest import FAST, LIVENESS

CONFIG = dataclasses.replace(FAST, fsync=True, snapshot_threshold=0)


def _applied(node: RaftNode) -> list[bytes]:
    """The commands ``node``'s LogStateMachine applied (read under its lock)."""
    machine = node.state_machine
    assert isinstance(machine, LogStateMachine)
    with machine.lock:
        return [command for _, command in machine.commands]


def test_rotten_newest_record_does_not_lose_an_acknowledged_write(tmp_path: Path) -> None:
    cluster = LocalCluster(3, state_machine=LogStateMachine, config=CONFIG,
                           data_dir=str(tmp_path), seed=5)
    with cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lead = cluster.nodes.index(leader)
        follower, third = (lead + 1) % 3, (lead + 2) % 3
        assert leader.propose(b"first").result(LIVENESS)
        cluster.isolate(third)
        index = leader.propose(b"acknowledged").result(LIVENESS)
        follower_id = cluster.ids[follower]
        cluster.nodes[follower].stop()
        assert damage.flip_byte(tmp_path / follower_id, index).index == index
        cluster.crash(lead)
        cluster.rejoin(third)
        node = cluster.restart(follower)
        status = node.status()
        assert status.recovering >= index, status
        assert status.last_log_index < index
        # Let elections be tried for a while: the third node's campaigns must all fail.
        before = cluster.message_count()
        assert cluster.wait_for(lambda: cluster.message_count() > before + 60, LIVENESS)
        roles = [n.status().role for i, n in enumerate(cluster.nodes) if i != lead]
        assert "leader" not in roles, roles
        assert node.status().recovering >= index

        cluster.restart(lead)
        leader = cluster.wait_for_leader(LIVENESS)
        assert cluster.wait_for(lambda: node.status().recovering == 0, LIVENESS)
        assert leader.propose(b"after").result(LIVENESS)
        commit = leader.status().commit_index
        for n in cluster.nodes:
            assert cluster.wait_for(lambda n=n: n.status().last_applied >= commit, LIVENESS)
        for n in cluster.nodes:
            assert _applied(n) == [b"first", b"acknowledged", b"after"], n.id


@pytest.mark.parametrize("fault", ["delete_newest_segment", "flip_newest_record"])
def test_follower_that_lost_its_tail_catches_up_under_the_same_leader(
        tmp_path: Path, fault: str) -> None:
    config = dataclasses.replace(CONFIG, max_batch_entries=4)
    cluster = LocalCluster(3, state_machine=LogStateMachine, config=config,
                           data_dir=str(tmp_path), seed=6)
    with cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lead = cluster.nodes.index(leader)
        follower = (lead + 1) % 3
        for k in range(20):
            leader.propose(f"v{k}".encode()).result(LIVENESS)
        term = leader.status().term
        target = leader.status().commit_index
        assert cluster.wait_for(
            lambda: cluster.nodes[follower].status().last_applied >= target, LIVENESS)
        follower_id = cluster.ids[follower]
        cluster.nodes[follower].stop()
        if fault == "delete_newest_segment":
            damage.delete_newest_segment(tmp_path / follower_id)
        else:
            damage.flip_byte(tmp_path / follower_id, target)
        node = cluster.restart(follower)
        assert node.status().last_log_index < target
        assert cluster.wait_for(lambda: node.status().last_log_index >= target
                                and node.status().recovering == 0, LIVENESS)
        assert leader.status().term == term and leader.status().role == "leader"
        assert leader.propose(b"more").result(LIVENESS)
        assert cluster.wait_for(
            lambda: node.status().last_applied >= leader.status().commit_index, LIVENESS)


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "recover_corrupt_log"])
def test_corruption_inside_the_committed_prefix(tmp_path: Path, opt_in: bool) -> None:
    """A bad record with good ones after it (inside the committed prefix) stops the node with
    CorruptLogError by default; with ``recover_corrupt_log`` the node discards the damaged
    suffix, comes up recovering and gets it back from its peers."""
    config = dataclasses.replace(CONFIG, recover_corrupt_log=opt_in)
    cluster = LocalCluster(3, state_machine=LogStateMachine, config=config,
                           data_dir=str(tmp_path), seed=8)
    with cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        follower = (cluster.nodes.index(leader) + 1) % 3
        for k in range(12):
            leader.propose(f"v{k}".encode()).result(LIVENESS)
        target = leader.status().commit_index
        assert cluster.wait_for(
            lambda: cluster.nodes[follower].status().last_applied >= target, LIVENESS)
        cluster.nodes[follower].stop()
        damage.flip_byte(tmp_path / cluster.ids[follower], 5)
        if not opt_in:
            with pytest.raises(CorruptLogError, match="corrupt"):
                cluster.restart(follower)
            return
        node = cluster.restart(follower)
        status = node.status()
        assert status.last_log_index < 5 and status.recovering >= target, status
        assert cluster.wait_for(lambda: node.status().recovering == 0
                                and node.status().last_applied >= target, LIVENESS)
        assert _applied(node) == _applied(leader)


def test_rotten_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path) -> None:
    """The newest snapshot rots: the store falls back to the older one and the log (which keeps
    whole segments behind a snapshot) covers the rest, so the node comes back with the same
    state and nothing to recover."""
    config = dataclasses.replace(CONFIG, snapshot_threshold=10, snapshot_trailing_entries=0)
    cluster = LocalCluster(3, state_machine=LogStateMachine, config=config,
                           data_dir=str(tmp_path), seed=9)
    with cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        follower = (cluster.nodes.index(leader) + 1) % 3
        node = cluster.nodes[follower]
        for k in range(45):
            leader.propose(f"v{k}".encode()).result(LIVENESS)
        target = leader.status().commit_index
        assert cluster.wait_for(lambda: node.status().last_applied >= target
                                and node.status().snapshot_index >= 30, LIVENESS)
        newest = node.status().snapshot_index
        node.stop()
        assert damage.corrupt_snapshot(tmp_path / cluster.ids[follower]).index == newest
        node = cluster.restart(follower)
        assert node.status().snapshot_index < newest
        assert node.status().recovering == 0
        assert cluster.wait_for(lambda: node.status().last_applied >= target, LIVENESS)
        assert _applied(node)[:target] == _applied(leader)[:target]


@pytest.mark.parametrize("discard", [False, True], ids=["default", "recover_corrupt_log"])
def test_log_gap_after_the_newest_valid_snapshot(discard: bool) -> None:
    """The newest snapshot rotted and the log was compacted past the older one (a gap): refuse
    to start, naming the opt-in; with it, discard the log and recover from the peers."""
    log, stable, snapshots = MemoryLogStore(), MemoryStableStore(), MemorySnapshotStore()
    log.append([Entry(i, 1, 0, b"x") for i in range(1, 41)])
    log.compact_prefix(30)  # the log now starts at 31
    stable.save(HardState(term=1, vote="a", commit=40))
    snapshots.save(SnapshotMeta(20, 1, ("a", "b", "c")), orjson.dumps([]))
    stores = Stores(log, stable, snapshots, owned=False)
    if not discard:
        with pytest.raises(CorruptLogError, match="recover_corrupt_log"):
            recover("a", stores, LogStateMachine())
        return
    recovered = recover("a", stores, LogStateMachine(), discard_gaps=True)
    assert recovered.entries == []
    assert (log.first_index(), log.last_index()) == (21, 20)
    assert recovered.hard_state.recovering == 40
    assert stable.load().recovering == 40  # saved before the node starts
