"""A node over the fault-injecting stores (engine.storage.faulty): a failed fsync or a crash
during a stalled one fails the pending proposals with a StorageError that says what happened,
and a node restarted on what the disk kept has every acknowledged entry."""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import pytest

from engine import Config, LogStateMachine, RaftNode, StorageError
from engine.storage.faulty import DiskFaults, FaultyLogStore, FaultyStableStore, crash_stores
from engine.transport.memory import MemoryNetwork
from tests.conftest import FAST, LIVENESS, raft_threads
from tests.runtime.test_node import Watcher, leader_of
from tests.runtime.test_storage_failure import _wait_until

CONFIGS = [FAST, dataclasses.replace(FAST, storage_thread=True)]
IDS = ["inline", "storage-thread"]


@dataclasses.dataclass
class Rig:
    """One single-node cluster on a faulty disk."""

    disk: DiskFaults
    log: FaultyLogStore
    stable: FaultyStableStore
    node: RaftNode
    machine: LogStateMachine

    def commands(self) -> list[bytes]:
        with self.machine.lock:
            return [c for _, c in self.machine.commands]


@contextmanager
def running(config: Config, seed: int, log: FaultyLogStore | None = None,
            stable: FaultyStableStore | None = None) -> Iterator[Rig]:
    """A started leader "a" over ``log``/``stable`` (fresh faulty memory stores on one disk by
    default); crashed afterwards (a stall released first), leaving no thread behind."""
    disk = log.faults if log is not None else DiskFaults("a")
    log = log if log is not None else FaultyLogStore(faults=disk)
    stable = stable if stable is not None else FaultyStableStore(faults=disk)
    network = MemoryNetwork(seed=seed)
    machine = LogStateMachine()
    node = RaftNode("a", {"a": "memory:a"}, machine, config=config,
                    transport=network.endpoint("a"), log_store=log, stable_store=stable,
                    seed=seed)
    node.start()
    try:
        assert _wait_until(node, lambda: node.status().role == "leader")
        yield Rig(disk, log, stable, node, machine)
    finally:
        disk.release_sync()
        node.crash()
        network.close()
    assert not raft_threads(), raft_threads()


def restart_and_check(log: FaultyLogStore, stable: FaultyStableStore, config: Config,
                      acked: list[bytes]) -> None:
    """A node on what the disk kept applies every acknowledged command, in order."""
    with running(config, 7, log, stable) as rig:
        assert rig.node.propose(b"after restart").result(LIVENESS) >= 1
        assert _wait_until(rig.node, lambda: b"after restart" in rig.commands())
        got = rig.commands()
        assert got[:len(acked)] == acked, got


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_eio_on_sync_fails_pending_proposals_and_loses_nothing_acknowledged(
        config: Config) -> None:
    acked = [b"one", b"two", b"three"]
    with running(config, 1) as rig:
        for command in acked:
            assert rig.node.propose(command).result(LIVENESS) >= 1
        rig.disk.fail_next("sync", errno.EIO)
        future = rig.node.propose(b"lost")
        with pytest.raises(StorageError, match=r"fdatasync.*Input/output error.*EIO"):
            future.result(LIVENESS)
        assert _wait_until(rig.node, lambda: not rig.node.status().running)
        assert isinstance(rig.node.propose(b"after").exception(LIVENESS), StorageError)
        assert rig.log.poisoned and rig.disk.injected["sync"] == 1
    log, stable = crash_stores(rig.log, rig.stable)
    assert b"lost" not in [e.data for e in log.durable_entries()]
    restart_and_check(log, stable, config, acked)


def propose_into_a_stall(rig: Rig, committed: bytes, stalled: bytes) -> Future[object]:
    """Commit ``committed``, stall the disk, propose ``stalled`` and wait until its sync
    blocks; returns the stalled proposal's future."""
    assert rig.node.propose(committed).result(LIVENESS) >= 1
    rig.disk.stall_sync()
    future = rig.node.propose(stalled)
    assert rig.disk.wait_for_stalled(1, LIVENESS)
    return future


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_stalled_sync_holds_the_acknowledgement_until_released(config: Config) -> None:
    with running(config, 3) as rig:
        future = propose_into_a_stall(rig, b"before", b"stalled")
        assert not future.done()  # its sync has not completed, so it cannot have committed
        rig.disk.release_sync()
        assert future.result(LIVENESS) >= 1


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_power_cut_during_a_stalled_sync(config: Config) -> None:
    with running(config, 5) as rig:
        future = propose_into_a_stall(rig, b"kept", b"in flight")
        # The power goes while the disk hangs: the stalled sync wakes and fails.
        log, stable = crash_stores(rig.log, rig.stable)
        with pytest.raises(StorageError, match="crashed"):
            future.result(LIVENESS)
    assert b"in flight" not in [e.data for e in log.durable_entries()]
    restart_and_check(log, stable, config, [b"kept"])


def test_torn_durable_tail_makes_the_restarted_node_recover_it() -> None:
    """A follower whose disk lost its newest synced record (a torn write that a completed sync
    had reported durable) reads the loss from ``synced_index_at_open`` and boots recovering; it
    stays so while cut off, and a leader gives the entries back once it rejoins."""
    peers = {"a": "memory:a", "b": "memory:b", "c": "memory:c"}
    disks = {i: DiskFaults(i) for i in peers}
    stores = {i: (FaultyLogStore(faults=d), FaultyStableStore(faults=d))
              for i, d in disks.items()}
    network = MemoryNetwork(seed=11)
    nodes: dict[str, RaftNode] = {}
    machines: dict[str, LogStateMachine] = {}

    def start(node_id: str) -> RaftNode:
        log, stable = stores[node_id]
        machines[node_id] = LogStateMachine()
        node = RaftNode(node_id, peers, machines[node_id], config=FAST,
                        transport=network.endpoint(node_id), log_store=log,
                        stable_store=stable, seed=11 + len(nodes))
        nodes[node_id] = node
        watcher.watch(node)
        node.start()
        return node

    watcher = Watcher()
    try:
        for i in peers:
            start(i)
        assert watcher.wait_for(lambda: leader_of(list(nodes.values())) is not None)
        leader = leader_of(list(nodes.values()))
        assert leader is not None
        index = leader.propose(b"kept").result(LIVENESS)
        assert watcher.wait_for(lambda: all(n.last_applied >= index for n in nodes.values()))
        victim = next(i for i in peers if i != leader.id)
        nodes[victim].crash()
        log, stable = crash_stores(*stores[victim], torn=True)
        assert log.last_index() < log.synced_index_at_open
        stores[victim] = (log, stable)
        network.faults.isolate(victim)
        reborn = start(victim)
        assert reborn.status().recovering >= log.synced_index_at_open  # cut off: stays so
        network.faults.rejoin(victim)
        index2 = leader.propose(b"new").result(LIVENESS)
        assert watcher.wait_for(lambda: reborn.last_applied >= index2
                                and reborn.status().recovering == 0)
        with machines[victim].lock:
            assert [c for _, c in machines[victim].commands] == [b"kept", b"new"]
    finally:
        for node in nodes.values():
            node.crash()
        network.close()
    assert not raft_threads(), raft_threads()
