"""Gray failure: a leader whose disk stalls (fdatasync that never returns) stops leading once
its write has run past ``Config.disk_stall_timeout``; the others elect a new leader and keep
committing; when the disk answers again the old leader catches up and may lead again.

The stores are :class:`~engine.storage.faulty.FaultyLogStore` / ``FaultyStableStore`` with a
stalled sync (it blocks on an event, no sleep), written from the storage thread so the loop
stays free to notice the stall.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from engine import LogStateMachine, ProposalDropped, RaftNode
from engine.storage.faulty import DiskFaults, FaultyLogStore, FaultyStableStore
from engine.transport.memory import MemoryNetwork
from tests.conftest import FAST, LIVENESS, raft_threads

CONFIG = dataclasses.replace(FAST, storage_thread=True, disk_stall_timeout=0.3)
IDS = ("a", "b", "c")


class _Cluster:
    """Three nodes over one memory network, each with its own faulty disk."""

    def __init__(self) -> None:
        self.network = MemoryNetwork(seed=4)
        self.disks = {i: DiskFaults(i) for i in IDS}
        peers = {i: f"memory:{i}" for i in IDS}
        self.changed = threading.Condition()
        self.nodes: dict[str, RaftNode] = {}
        self.machines = {i: LogStateMachine() for i in IDS}
        for k, i in enumerate(IDS):
            node = RaftNode(i, peers, self.machines[i], config=CONFIG,
                            transport=self.network.endpoint(i), seed=k,
                            log_store=FaultyLogStore(faults=self.disks[i]),
                            stable_store=FaultyStableStore(faults=self.disks[i]))
            node.add_observer(self._notify)
            self.nodes[i] = node

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool]) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, LIVENESS)

    def leader(self) -> str | None:
        leading = [(n.status().term, i) for i, n in self.nodes.items()
                   if n.status().role == "leader"]
        return max(leading)[1] if leading else None


def test_stalled_leader_steps_down_and_the_cluster_goes_on() -> None:
    cluster = _Cluster()
    for node in cluster.nodes.values():
        node.start()
    try:
        assert cluster.wait(lambda: cluster.leader() is not None)
        old = cluster.leader()
        assert old is not None
        stalled = cluster.nodes[old]
        old_term = stalled.status().term
        assert stalled.propose(b"before").result(LIVENESS) >= 1

        cluster.disks[old].stall_sync()
        during = stalled.propose(b"during")  # its write stalls on the leader's disk
        assert cluster.disks[old].wait_for_stalled(1, LIVENESS)
        assert cluster.wait(lambda: stalled.status().disk_stalled)
        assert cluster.wait(lambda: cluster.leader() not in (None, old))
        new = cluster.leader()
        assert new is not None and cluster.nodes[new].status().term > old_term
        assert stalled.status().role != "leader"
        # The healthy pair commits without the stalled node.
        assert cluster.nodes[new].propose(b"after").result(LIVENESS) >= 1
        assert not during.done()  # nothing is applied here before it is durable here

        cluster.disks[old].release_sync()
        # The proposal made during the stall ends one way or the other once the disk answers.
        outcome = during.exception(LIVENESS)
        assert outcome is None or isinstance(outcome, ProposalDropped), outcome
        assert cluster.wait(lambda: not stalled.status().disk_stalled)
        target = cluster.nodes[new].status().commit_index
        assert cluster.wait(lambda: stalled.status().last_applied >= target)
    finally:
        for disk in cluster.disks.values():
            disk.release_sync()  # a stalled fdatasync cannot be interrupted: stop() waits
        for node in cluster.nodes.values():
            node.stop()
        cluster.network.close()
    assert not raft_threads(), raft_threads()
    logs = {i: [c for _, c in m.commands] for i, m in cluster.machines.items()}
    shortest = min(map(len, logs.values()))
    assert len({tuple(log[:shortest]) for log in logs.values()}) == 1, logs
    for i in (old, new):  # the two whose progress the test waited for
        assert b"before" in logs[i] and b"after" in logs[i], logs
