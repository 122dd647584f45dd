"""RaftNode on its own: lifecycle, threads, context manager, errors, observers, explicit stores.

Nodes here are wired by hand to a MemoryNetwork with explicit peers (no LocalCluster).  Waiting
goes through a condition notified by ``add_observer`` callbacks, never ``time.sleep``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from engine import (
    Config,
    ConfigError,
    LocalCluster,
    LogStateMachine,
    NodeStopped,
    NotLeaderError,
    RaftError,
    RaftNode,
)
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.transport.memory import MemoryNetwork
from tests.conftest import FAST, LIVENESS, raft_threads
from tests.fds import leaked_fds, open_fds
from tests.runtime.scenario import commands

PEERS = {"a": "memory:a", "b": "memory:b", "c": "memory:c"}


class Watcher:
    """Waits for conditions over a set of nodes, woken by their observer callbacks."""

    def __init__(self, nodes: Sequence[RaftNode] = ()) -> None:
        self._cond = threading.Condition()
        self.calls = 0
        for node in nodes:
            self.watch(node)

    def watch(self, node: RaftNode) -> None:
        node.add_observer(self._notify)

    def _notify(self) -> None:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = LIVENESS) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True


def leader_of(nodes: Sequence[RaftNode]) -> RaftNode | None:
    """The running node leading in the highest term, if any."""
    statuses = [(n, n.status()) for n in nodes]
    live = [(n, s) for n, s in statuses if s.running]
    if not live:
        return None
    top = max(s.term for _, s in live)
    return next((n for n, s in live if s.role == "leader" and s.term == top), None)


@pytest.fixture
def network(seed: int) -> Iterator[MemoryNetwork]:
    net = MemoryNetwork(seed=seed)
    yield net
    net.close()


@pytest.fixture
def make_node(network: MemoryNetwork, seed: int) -> Iterator[Callable[..., RaftNode]]:
    """``make_node(node_id, peers=PEERS, config=FAST, **kwargs)``: a stopped node on the shared
    network; every node made is stopped at teardown, and no raft thread may survive."""
    made: list[RaftNode] = []

    def make(node_id: str, peers: dict[str, str] = PEERS, config: Config = FAST,
             **kwargs: object) -> RaftNode:
        kwargs.setdefault("seed", seed + len(made))
        node = RaftNode(node_id, peers, kwargs.pop("state_machine", None) or LogStateMachine(),
                        config=config, transport=network.endpoint(node_id), **kwargs)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()
    network.close()
    assert not raft_threads(), raft_threads()


@pytest.fixture
def trio(make_node) -> list[RaftNode]:
    return [make_node(i) for i in PEERS]


def test_lifecycle_threads_are_named_and_joined(trio):
    """Before start() a node reports itself stopped and refuses work; start() runs the threads
    raft-<id>-loop (core, timers, writes and apply) and raft-<id>-snapshot, and nothing else
    (no apply thread by default, no storage thread with in-memory stores); the nodes elect a
    leader; stop() joins every thread and is idempotent."""
    a = trio[0]
    status = a.status()
    assert not status.running and status.role == "follower" and status.leader_id is None
    assert isinstance(a.propose(b"early").exception(), NodeStopped)
    assert a.wait_applied(1, timeout=0) is False
    for node in trio:
        node.start()
    names = set(raft_threads())
    assert {f"raft-{i}-{kind}" for i in PEERS for kind in ("loop", "snapshot")} == names
    watcher = Watcher(trio)
    assert watcher.wait_for(lambda: leader_of(trio) is not None)
    leader = leader_of(trio)
    assert leader is not None
    assert leader.propose(b"x").result(LIVENESS) >= 1
    for node in trio:
        node.stop()
        node.stop()
        assert not node.status().running
    assert not raft_threads()


def test_double_start_raises(trio):
    """start() twice raises RaftError and leaves the running node intact."""
    a = trio[0]
    a.start()
    with pytest.raises(RaftError, match="already started"):
        a.start()
    assert a.status().running
    assert {"raft-a-loop", "raft-a-snapshot"} == set(raft_threads())
    a.stop()
    assert not raft_threads()


def test_apply_thread_option_runs_apply_on_its_own_thread(make_node):
    """Config.apply_thread=True adds raft-<id>-apply (for state machines that block); the
    node still commits and applies, and stop() joins that thread too."""
    node = make_node("s", peers={"s": "memory:s"},
                     config=dataclasses.replace(FAST, apply_thread=True))
    node.start()
    assert {"raft-s-loop", "raft-s-apply", "raft-s-snapshot"} == set(raft_threads())
    assert Watcher([node]).wait_for(lambda: node.status().role == "leader")
    assert node.propose(b"x").result(LIVENESS) >= 1
    node.stop()
    assert not raft_threads()


def test_start_after_stop_raises(make_node):
    """A node that was stopped (even one never started) cannot be started: start() raises
    RaftError and no thread is left behind."""
    node = make_node("a")
    node.stop()
    with pytest.raises(RaftError):
        node.start()
    assert not raft_threads()
    other = make_node("b")
    other.start()
    other.stop()
    with pytest.raises(RaftError):
        other.start()
    assert not raft_threads()


def test_context_manager_starts_and_stops(make_node):
    """``with RaftNode(...) as node`` starts the node and stops it on exit, also when the block
    raises."""
    solo = {"s": "memory:s"}
    with make_node("s", peers=solo) as node:
        assert node.status().running
        assert "raft-s-loop" in raft_threads()
    assert not node.status().running
    assert not raft_threads()
    second = make_node("t", peers={"t": "memory:t"})
    with pytest.raises(KeyError), second:
        raise KeyError("boom")
    assert not second.status().running
    assert not raft_threads()


def test_single_node_commits_alone(make_node):
    """A one-member node elects itself and commits and reads without any peer."""
    node = make_node("s", peers={"s": "memory:s"})
    watcher = Watcher([node])
    node.start()
    assert watcher.wait_for(lambda: node.status().role == "leader")
    indexes = [node.propose(b"v-%d" % k) for k in range(10)]
    assert [f.result(LIVENESS) for f in indexes] == list(range(2, 12))
    assert node.read(lambda m: [c for _, c in m.commands]).result(LIVENESS) == [
        b"v-%d" % k for k in range(10)]
    status = node.status()
    assert status.leader_id == "s" and status.commit_index == 11


def test_campaign_makes_a_node_leader(make_node):
    """campaign() asks a node to run for leader at once; with slow election timers the node that
    campaigns becomes the leader and the others follow it."""
    config = dataclasses.replace(FAST, election_timeout_min=1.0, election_timeout_max=2.0,
                                 heartbeat_interval=0.02, check_quorum=False)
    nodes = [make_node(i, config=config) for i in PEERS]
    watcher = Watcher(nodes)
    for node in nodes:
        node.start()
    b = nodes[1]

    def b_leads() -> bool:
        if leader_of(nodes) is b:
            return True
        if b.status().role == "follower":
            b.campaign()
        return False

    assert watcher.wait_for(b_leads)
    assert watcher.wait_for(lambda: all(n.status().leader_id == "b" for n in nodes))
    assert b.campaign().result(LIVENESS) is None  # a no-op on the leader
    assert leader_of(nodes) is b


def test_peer_progress(trio):
    """peer_progress() on the leader reports every member's match index (all caught up after a
    commit); on a follower it is empty."""
    for node in trio:
        node.start()
    watcher = Watcher(trio)
    assert watcher.wait_for(lambda: leader_of(trio) is not None)
    leader = leader_of(trio)
    assert leader is not None
    index = leader.propose(b"p").result(LIVENESS)
    assert watcher.wait_for(lambda: all(n.last_applied >= index for n in trio))

    def all_matched() -> bool:
        progress = leader.peer_progress(LIVENESS)
        return set(progress) == set(PEERS) and all(p.match >= index for p in progress.values())

    assert watcher.wait_for(all_matched)
    follower = next(n for n in trio if n is not leader)
    assert follower.peer_progress(LIVENESS) == {}


def test_observers_are_called_and_may_fail(trio):
    """Observers run on role/leader/term changes and after applies; one that raises is logged
    and does not stop the node or the other observers."""
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("observer bug")

    for node in trio:
        node.add_observer(broken)
        node.add_observer(lambda n=node: calls.append(n.id))
    watcher = Watcher(trio)
    for node in trio:
        node.start()
    assert watcher.wait_for(lambda: leader_of(trio) is not None)
    leader = leader_of(trio)
    assert leader is not None
    index = leader.propose(b"o").result(LIVENESS)
    # Every node changes term or leader during the election and applies the entry.
    assert watcher.wait_for(lambda: set(calls) == set(PEERS)
                            and all(n.last_applied >= index for n in trio))
    assert all(n.status().running for n in trio)


def test_no_fd_or_thread_leak(network, seed):
    """Creating, running and stopping nodes (and closing their network) leaves the process with
    the file descriptors and threads it had before."""
    fds_before = open_fds()
    threads_before = {t.ident for t in threading.enumerate()}
    nodes = [RaftNode(i, PEERS, LogStateMachine(), config=FAST, transport=network.endpoint(i),
                      seed=seed + k) for k, i in enumerate(PEERS)]
    for node in nodes:
        node.start()
    watcher = Watcher(nodes)
    assert watcher.wait_for(lambda: leader_of(nodes) is not None)
    leader_of(nodes).propose(b"z").result(LIVENESS)
    for node in nodes:
        node.stop()
    network.close()
    assert {t.ident for t in threading.enumerate()} <= threads_before
    assert leaked_fds(fds_before) == set()


@pytest.mark.parametrize(("node_id", "peers", "field"), [
    ("x", PEERS, "node_id"),
    ("", PEERS, "node_id"),
    (None, PEERS, "node_id"),
])
def test_bad_node_arguments_raise_config_error(node_id, peers, field):
    """RaftNode rejects an id that is not a non-empty member of peers with ConfigError naming
    the field, before any thread exists."""
    with pytest.raises(ConfigError, match=field):
        RaftNode(node_id, peers, LogStateMachine(), config=FAST)  # type: ignore[arg-type]
    assert not raft_threads()


def test_non_config_object_is_rejected():
    """config must be an engine.Config: anything else raises ConfigError naming 'config'."""
    with pytest.raises(ConfigError, match="config"):
        RaftNode("a", PEERS, LogStateMachine(), config={"tick_interval": 1})  # type: ignore


def test_crash_and_rebuild_from_explicit_stores(make_node):
    """A node given explicit in-memory stores that crashes can be replaced by a new RaftNode on
    the same stores: it recovers term and log and replays the log into a fresh state machine."""
    stores = {i: (MemoryLogStore(), MemoryStableStore()) for i in PEERS}
    nodes = [make_node(i, log_store=stores[i][0], stable_store=stores[i][1]) for i in PEERS]
    watcher = Watcher(nodes)
    for node in nodes:
        node.start()
    assert watcher.wait_for(lambda: leader_of(nodes) is not None)
    leader = leader_of(nodes)
    assert leader is not None
    index = leader.propose(b"kept").result(LIVENESS)
    assert watcher.wait_for(lambda: all(n.last_applied >= index for n in nodes))
    victim = next(n for n in nodes if n is not leader)
    term = victim.status().term
    victim.crash()
    k = nodes.index(victim)
    reborn = make_node(victim.id, log_store=stores[victim.id][0],
                       stable_store=stores[victim.id][1])
    watcher.watch(reborn)
    nodes[k] = reborn
    reborn.start()
    assert reborn.status().term >= term
    index2 = leader.propose(b"new").result(LIVENESS)
    assert watcher.wait_for(lambda: reborn.last_applied >= index2)
    assert [c for _, c in commands(reborn)] == [b"kept", b"new"]


def test_pending_proposals_fail_with_node_stopped(make_node):
    """Proposals pending on a leader that cannot commit (its peers are gone) fail with
    NodeStopped when it stops; a follower's propose fails with NotLeaderError meanwhile."""
    config = dataclasses.replace(FAST, check_quorum=False)
    nodes = [make_node(i, config=config) for i in PEERS]
    watcher = Watcher(nodes)
    for node in nodes:
        node.start()
    assert watcher.wait_for(lambda: leader_of(nodes) is not None)
    leader = leader_of(nodes)
    assert leader is not None
    followers = [n for n in nodes if n is not leader]
    assert watcher.wait_for(lambda: all(n.status().leader_id == leader.id for n in followers))
    assert isinstance(followers[0].propose(b"f").exception(), NotLeaderError)
    for node in followers:
        node.stop()
    pending = [leader.propose(b"p-%d" % k) for k in range(5)]
    assert not any(f.done() for f in pending)
    leader.stop()
    assert all(isinstance(f.exception(0), NodeStopped) for f in pending)


def test_status_reports_peer_progress_on_the_leader(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """The leader's Status.progress lists every node with its match index; followers' is empty."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    index = leader.propose(b"x").result(LIVENESS)
    assert cluster.wait_for(
        lambda: all(p.match >= index for p in leader.status().progress.values())
        and len(leader.status().progress) == 3, LIVENESS)
    assert all(n.status().progress == {} for n in cluster.nodes if n is not leader)


def test_tcp_nodes_run_on_one_thread_each_and_leave_nothing_behind(tmp_path, seed):
    """Over TCP with on-disk stores (the real shape), each node runs its sockets on its own loop
    thread: while running, the engine's threads are exactly raft-<id>-loop and
    raft-<id>-snapshot (no -net, -apply or -storage thread); stop() joins them all and closes
    every socket and file."""
    from engine.eventloop import new_event_loop
    from engine.transport.tcp import free_loopback_ports

    new_event_loop().close()  # uvloop keeps one process-wide pipe from its first loop on
    fds_before = open_fds()
    threads_before = {t.ident for t in threading.enumerate()}
    ports = free_loopback_ports(3)
    peers = {node_id: f"127.0.0.1:{port}" for node_id, port in zip(PEERS, ports, strict=True)}
    nodes = [RaftNode(i, peers, LogStateMachine(), config=FAST, data_dir=str(tmp_path / i),
                      seed=seed + k) for k, i in enumerate(PEERS)]
    try:
        for node in nodes:
            node.start()
        assert set(raft_threads()) == {f"raft-{i}-{kind}" for i in PEERS
                                       for kind in ("loop", "snapshot")}
        watcher = Watcher(nodes)
        assert watcher.wait_for(lambda: leader_of(nodes) is not None)
        leader = leader_of(nodes)
        assert leader is not None
        futures = leader.propose_many([b"t%d" % i for i in range(50)])
        assert [f.result(LIVENESS) for f in futures] == sorted(f.result(0) for f in futures)
    finally:
        for node in nodes:
            node.stop()
    assert not raft_threads()
    assert {t.ident for t in threading.enumerate()} <= threads_before
    assert leaked_fds(fds_before) == set()
