"""Helpers for the scenario suites: a 6.824-style ``one()``, log comparisons, probes.

Nothing here sleeps: waiting goes through ``LocalCluster.wait_for`` (woken by the nodes when a
role changes or entries are applied) or ``Future.result(timeout)``.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future

from engine import (
    LocalCluster,
    NodeStopped,
    NotLeaderError,
    Overloaded,
    ProposalDropped,
    RaftNode,
)
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


class Load:
    """A client thread that proposes unique commands one after another through whichever node
    leads (highest term among the nodes reporting the leader role), for as long as it runs.

    A command is never proposed twice: after a retryable error the next attempt uses a new
    command, so every command may be applied at most once and every acknowledged one exactly
    once.  ``acked`` maps each acknowledged command to the index its future resolved to.  It
    reads ``cluster.nodes`` through a copy and never calls ``cluster.leader()`` (the cluster's
    methods belong to the controlling thread).  Use as a context manager or start()/stop().
    """

    def __init__(self, cluster: LocalCluster, prefix: str = "load") -> None:
        self._cluster = cluster
        self._prefix = prefix
        self._lock = threading.Lock()
        self._acked: dict[bytes, int] = {}  # guarded by self._lock
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"test-{prefix}", daemon=True)

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(LIVENESS)

    def start(self) -> None:
        self._thread.start()

    @property
    def count(self) -> int:
        """Commands acknowledged so far."""
        with self._lock:
            return len(self._acked)

    def wait_more(self, more: int, timeout: float = LIVENESS) -> None:
        """Wait until ``more`` further commands are acknowledged (the cluster still commits)."""
        target = self.count + more
        assert self._cluster.wait_for(lambda: self.count >= target or self._error is not None,
                                      timeout), (
            f"load stalled at {self.count} acknowledged commands (seed {self._cluster.seed})")
        self._raise_error()

    def stop(self) -> dict[bytes, int]:
        """Stop the thread; returns the acknowledged commands.  Re-raises what it failed with."""
        self._stop.set()
        self._thread.join(LIVENESS)
        assert not self._thread.is_alive(), "the load thread did not stop"
        self._raise_error()
        with self._lock:
            return dict(self._acked)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise AssertionError(f"the load thread failed: {self._error!r}") from self._error

    def _leader(self) -> RaftNode | None:
        best: tuple[int, RaftNode] | None = None
        for node in list(self._cluster.nodes):
            status = node.status()
            if status.running and status.role == "leader" and (
                    best is None or status.term > best[0]):
                best = (status.term, node)
        return best[1] if best is not None else None

    def _run(self) -> None:
        cluster, stop = self._cluster, self._stop
        try:
            for k in range(1 << 62):
                if stop.is_set():
                    return
                leader = self._leader()
                if leader is None:
                    cluster.wait_for(lambda: stop.is_set() or self._leader() is not None, 0.5)
                    continue
                command = f"{self._prefix}-{k}".encode()
                try:
                    index = leader.propose(command).result(LIVENESS)
                except (*RETRYABLE, Overloaded):
                    cluster.wait_for(lambda old=leader: stop.is_set() or self._leader() is not old,
                                     0.05)
                    continue
                with self._lock:
                    self._acked[command] = index
        except BaseException as exc:  # reported by stop() / wait_more()
            self._error = exc


def assert_applied_exactly_once(nodes: Sequence[RaftNode], acked: dict[bytes, int]) -> None:
    """Every node applied the same (index, command) sequence, no command twice, and every
    acknowledged command at the index its future reported."""
    log = assert_identical(nodes)
    twice = [c for c, n in collections.Counter(c for _, c in log).items() if n > 1]
    assert not twice, f"applied more than once: {twice[:5]}"
    where = {c: i for i, c in log}
    lost = [c for c in acked if c not in where]
    assert not lost, f"{len(lost)} acknowledged commands were lost, e.g. {lost[:5]}"
    moved = [(c, i, where[c]) for c, i in acked.items() if where[c] != i]
    assert not moved, f"acknowledged at one index, applied at another: {moved[:5]}"


class LeaderWatch:
    """Records, from an observer on each watched node, which nodes reported the leader role in
    which term (observers run whenever role, leader or term changes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leaders: dict[int, set[str]] = collections.defaultdict(set)  # guarded by _lock

    def watch(self, *nodes: RaftNode) -> None:
        for node in nodes:
            node.add_observer(lambda node=node: self._seen(node))
            self._seen(node)

    def _seen(self, node: RaftNode) -> None:
        status = node.status()
        if status.running and status.role == "leader":
            with self._lock:
                self._leaders[status.term].add(status.id)

    def leaders(self) -> dict[int, set[str]]:
        """term -> ids of the nodes seen leading in it."""
        with self._lock:
            return {term: set(ids) for term, ids in self._leaders.items()}

    def assert_one_leader_per_term(self) -> None:
        both = {term: sorted(ids) for term, ids in self.leaders().items() if len(ids) > 1}
        assert not both, f"two leaders in the same term: {both}"


def committed_config(node: RaftNode) -> bool:
    """Whether ``node`` knows its configuration to be committed and not joint."""
    status = node.status()
    return (status.running and status.membership is not None and status.membership_committed
            and not status.membership.is_joint)
