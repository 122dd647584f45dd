"""The one-loop runtime: slow state machines, many proposing threads, asyncio entry points, and
failures inside the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from engine import Config, LocalCluster, RaftError, RaftNode
from engine.statemachine import LogStateMachine
from engine.transport.memory import MemoryNetwork
from tests.conftest import FAST, LIVENESS, raft_threads
from tests.runtime.scenario import LeaderWatch, wait_all_applied


class SlowMachine(LogStateMachine):
    """Each apply() blocks for ``seconds`` (as a state machine doing real work would)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def apply(self, index: int, command: bytes) -> object:
        time.sleep(self.seconds)
        return super().apply(index, command)


# Timeouts generous enough for a loaded 2-core machine, but with CheckQuorum on: a leader whose
# loop starved its heartbeats for an election timeout would be deposed.
SLOW_APPLY = Config(tick_interval=0.005, heartbeat_interval=0.02, election_timeout_min=0.3,
                    election_timeout_max=0.6, fsync=False)


def test_slow_apply_burst_does_not_starve_heartbeats(make_cluster: Callable[..., LocalCluster]
                                                     ) -> None:
    """A burst whose apply() calls take 2 s in total on every node (1,000 entries of 2 ms) is
    applied in slices between network rounds and ticks: no election happens (the term and the
    leader stay the same on every node) and every entry is applied once, in order."""
    cluster = make_cluster(3, config=SLOW_APPLY, state_machine=lambda: SlowMachine(0.002))
    leader = cluster.wait_for_leader()
    assert leader.propose(b"warm-up").result(LIVENESS)
    watch = LeaderWatch()
    watch.watch(*cluster.nodes)
    term = leader.status().term
    futures = leader.propose_many([b"c%d" % i for i in range(1000)])
    for future in futures:
        future.result(LIVENESS * 3)
    wait_all_applied(cluster)
    for node in cluster.nodes:
        status = node.status()
        assert (status.term, status.leader_id) == (term, leader.id), status
    assert watch.leaders() == {term: {leader.id}}
    logs = [[c for _, c in node.state_machine.commands] for node in cluster.nodes]
    assert logs[0] == logs[1] == logs[2]
    assert logs[0][1:] == [b"c%d" % i for i in range(1000)]


def test_proposals_from_eight_threads_all_complete(make_cluster: Callable[..., LocalCluster]
                                                   ) -> None:
    """Eight threads proposing at once (one future each at a time, and batches) all complete;
    every command is applied exactly once on every node."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def client(k: int) -> None:
        try:
            barrier.wait(LIVENESS)
            for i in range(100):
                leader.propose(b"t%d-%d" % (k, i)).result(LIVENESS)
            for future in leader.propose_many([b"t%d-b%d" % (k, i) for i in range(100)]):
                future.result(LIVENESS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIVENESS * 3)
    assert not errors, errors
    wait_all_applied(cluster)
    expected = {b"t%d-%d" % (k, i) for k in range(8) for i in range(100)} | {
        b"t%d-b%d" % (k, i) for k in range(8) for i in range(100)}
    for node in cluster.nodes:
        applied = [c for _, c in node.state_machine.commands]
        assert len(applied) == len(expected) and set(applied) == expected


def test_propose_async_from_a_foreign_loop_and_from_the_nodes_own_loop(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """propose_async/read_async work from an event loop of the caller's and from the node's
    own loop (``node.loop``), where the future is an asyncio future settled on that loop."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()

    async def foreign() -> list[object]:
        results = await asyncio.gather(*(leader.propose_async(b"f%d" % i) for i in range(20)))
        count = await leader.read_async(lambda sm: len(sm.commands))
        return [*results, count]

    results = asyncio.run(foreign())
    assert results[-1] >= 20 and len(set(results[:-1])) == 20

    seen_threads: set[str] = set()

    async def on_own_loop() -> list[object]:
        seen_threads.add(threading.current_thread().name)
        values = [await leader.propose_async(b"own%d" % i) for i in range(10)]
        values.append(await leader.read_async(lambda sm: sm.commands[-1][1]))
        return values

    loop = leader.loop
    assert loop is not None
    values = asyncio.run_coroutine_threadsafe(on_own_loop(), loop).result(LIVENESS)
    assert seen_threads == {f"raft-{leader.id}-loop"}
    assert values[-1] == b"own9"
    assert values[:-1] == sorted(values[:-1])


def test_propose_many_on_a_follower_fails_every_future(make_cluster: Callable[..., LocalCluster]
                                                       ) -> None:
    """propose_many on a follower fails each of its futures with NotLeaderError; an empty list
    gives no futures; a non-bytes command raises before anything is proposed."""
    from engine import NotLeaderError
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    futures = follower.propose_many([b"a", b"b"])
    assert len(futures) == 2
    for future in futures:
        assert isinstance(future.exception(LIVENESS), NotLeaderError)
    assert leader.propose_many([]) == []
    with pytest.raises(TypeError):
        leader.propose_many([b"ok", "text"])  # type: ignore[list-item]


class ExplodingSnapshot(LogStateMachine):
    """snapshot() raises: a bug in user code that the loop cannot work around."""

    def snapshot(self) -> bytes:
        raise RuntimeError("the user's snapshot() is broken")


def test_an_exception_in_the_loop_fails_pending_futures_instead_of_hanging() -> None:
    """When user code run by the loop raises (here snapshot(), on a snapshot request), the node
    stops: pending and later futures fail with an error that names the cause, status() says
    it is not running, and stop() still joins every thread."""
    network = MemoryNetwork(seed=3)
    node = RaftNode("s", {"s": "memory:s"}, ExplodingSnapshot(), config=FAST,
                    transport=network.endpoint("s"))
    try:
        leading = threading.Event()
        node.add_observer(lambda: node.status().role == "leader" and leading.set())
        node.start()
        assert leading.wait(LIVENESS) or node.status().role == "leader"
        assert node.propose(b"x").result(LIVENESS) >= 1
        snapshot = node.snapshot()
        with pytest.raises(RaftError, match="snapshot\\(\\) is broken"):
            snapshot.result(LIVENESS)
        later = node.propose(b"y")
        with pytest.raises(RaftError):
            later.result(LIVENESS)
        assert not node.status().running
    finally:
        node.stop()
        network.close()
    assert not raft_threads()


def test_stop_from_the_loop_thread_raises() -> None:
    """stop() called by code on the node's loop (a done-callback, say) would join its own
    thread: it raises RaftError instead and the node keeps running."""
    network = MemoryNetwork(seed=4)
    node = RaftNode("s", {"s": "memory:s"}, LogStateMachine(),
                    config=dataclasses.replace(FAST), transport=network.endpoint("s"))
    node.start()
    try:
        loop = node.loop
        assert loop is not None
        outcome: concurrent.futures.Future = concurrent.futures.Future()

        def call_stop() -> None:
            try:
                node.stop()
            except RaftError as exc:
                outcome.set_result(exc)
            else:
                outcome.set_result(None)

        loop.call_soon_threadsafe(call_stop)
        assert isinstance(outcome.result(LIVENESS), RaftError)
        assert node.status().running
    finally:
        node.stop()
        network.close()
    assert not raft_threads()
