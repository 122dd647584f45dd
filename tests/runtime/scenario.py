"""Helpers for the scenario suites: a 6.824-style ``one()``, log comparisons, probes.

Nothing here sleeps: waiting goes through ``LocalCluster.wait_for`` (woken by the nodes when a
role changes or entries are applied) or ``Future.result(timeout)``.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future

from engine import LocalCluster, NodeStopped, NotLeaderError, ProposalDropped, RaftNode
from tests.conftest import LIVENESS

RETRYABLE = (NotLeaderError, ProposalDropped, NodeStopped)
"""Errors after which a client may try again (possibly elsewhere)."""


def commands(node: RaftNode) -> list[tuple[int, bytes]]:
    """A copy of what node's LogStateMachine applied, as (index, command) in apply order."""
    machine = node.state_machine
    with machine.lock:
        return list(machine.commands)


def has_applied(node: RaftNode, index: int, command: bytes) -> bool:
    """Whether node's LogStateMachine applied ``command`` at ``index``."""
    applied = commands(node)
    k = bisect.bisect_left(applied, (index, b""))
    return k < len(applied) and applied[k] == (index, command)


def running(cluster: LocalCluster) -> list[RaftNode]:
    """The nodes that currently run."""
    return [n for n in cluster.nodes if n.status().running]


def one(cluster: LocalCluster, command: bytes, expected: int | None = None,
        timeout: float = LIVENESS) -> int:
    """Commit ``command`` and wait until ``expected`` nodes (default: every running node) applied
    it at the same index; returns that index.

    Like 6.824's ``one()``: proposes through whichever node leads and retries on leader changes,
    so after a retry the command may be in the log twice.  Fails the test after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        leader = cluster.leader()
        if leader is None:
            cluster.wait_for(lambda: cluster.leader() is not None, timeout=remaining)
            continue
        try:
            index = leader.propose(command).result(timeout=min(remaining, 2.0))
        except (*RETRYABLE, TimeoutError):
            # Wait for a change of leader (or a short while) before trying again.
            cluster.wait_for(lambda old=leader: cluster.leader() is not old,
                             timeout=min(deadline - time.monotonic(), 0.05))
            continue
        need = expected if expected is not None else len(running(cluster))

        def replicated(index: int = index, need: int = need) -> bool:
            return sum(has_applied(n, index, command) for n in running(cluster)) >= need

        if cluster.wait_for(replicated, timeout=max(deadline - time.monotonic(), 0.0)):
            return index
    statuses = "\n".join(str(n.status()) for n in cluster.nodes)
    raise AssertionError(f"{command!r} was not committed on {expected} nodes within {timeout}s "
                         f"(seed {cluster.seed}):\n{statuses}")


def assert_prefix_consistent(nodes: Iterable[RaftNode]) -> None:
    """State machine safety: any two nodes applied the same commands at the same indexes, as
    far as both got."""
    logs = [(n.id, commands(n)) for n in nodes]
    for a_id, a in logs:
        for b_id, b in logs:
            common = min(len(a), len(b))
            if a[:common] != b[:common]:
                k = next(i for i in range(common) if a[i] != b[i])
                raise AssertionError(f"{a_id} and {b_id} diverge at position {k}: "
                                     f"{a[k]!r} != {b[k]!r}")


def assert_identical(nodes: Sequence[RaftNode]) -> list[tuple[int, bytes]]:
    """Every node applied exactly the same (index, command) sequence; returns it."""
    assert_prefix_consistent(nodes)
    logs = {n.id: commands(n) for n in nodes}
    lengths = {i: len(log) for i, log in logs.items()}
    assert len(set(lengths.values())) == 1, f"applied different numbers of commands: {lengths}"
    return logs[nodes[0].id]


def agreed_commands(nodes: Sequence[RaftNode]) -> list[bytes]:
    """Assert that every node applied the same log; return its commands in order of first
    appearance.  (``one()`` retries after a leader change, and a proposal reported dropped may
    still have committed, so a retried command can be in the log twice.)"""
    return list(dict.fromkeys(c for _, c in assert_identical(nodes)))


def wait_all_applied(cluster: LocalCluster, nodes: Sequence[RaftNode] | None = None,
                     timeout: float = LIVENESS) -> int:
    """Wait until the given nodes (default: every running node) applied everything the leader
    has committed at the moment of the call; returns that index."""
    leader = cluster.wait_for_leader(timeout)
    index = leader.status().commit_index
    chosen = list(nodes) if nodes is not None else running(cluster)
    assert cluster.wait_for(lambda: all(n.last_applied >= index for n in chosen), timeout), (
        f"not every node applied {index}: {[n.status() for n in chosen]}")
    return index


def settled(futures: Iterable[Future]) -> bool:
    """Whether every future is done."""
    return all(f.done() for f in futures)


def open_fds() -> int:
    """Number of open file descriptors of this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))
