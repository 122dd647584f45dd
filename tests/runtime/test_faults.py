"""Randomized fault scenarios (6.824 Figure 8 and churn tests in spirit).

Each test draws its fault schedule from ``random.Random(seed)`` (the per-test seed; set
``RAFT_TEST_SEED`` to vary it).  The schedule is paced by waiting on the cluster's condition with
a random deadline, so the run does not depend on any sleep being long enough: the checks at the
end hold for any interleaving.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import Future

import pytest

from engine import LocalCluster, ProposalDropped
from tests.conftest import FAST, LIVENESS
from tests.runtime.scenario import (
    RETRYABLE,
    assert_identical,
    assert_prefix_consistent,
    one,
    running,
    settled,
)


def _check_outcome(cluster: LocalCluster, proposals: list[tuple[bytes, Future]]) -> None:
    """The end-of-run checks shared by the randomized tests, once every node runs and has applied
    a final command.

    * all nodes applied the same commands at the same indexes (state machine safety);
    * no command was applied twice (each was proposed once);
    * every acknowledged proposal is applied, exactly at the index its future reported;
    * every future has completed.
    """
    log = assert_identical(cluster.nodes)
    counts = Counter(c for _, c in log)
    twice = [c for c, k in counts.items() if k > 1]
    assert not twice, f"applied more than once: {twice[:5]}"
    at = dict((c, i) for i, c in log)
    acked = 0
    for command, future in proposals:
        assert future.done(), f"future of {command!r} still pending"
        if future.exception() is None:
            acked += 1
            assert at.get(command) == future.result(), (
                f"{command!r} acknowledged at {future.result()} but applied at "
                f"{at.get(command)}")
        else:
            assert isinstance(future.exception(), RETRYABLE), future.exception()
    outcomes = Counter("ok" if f.exception() is None else type(f.exception()).__name__
                       for _, f in proposals)
    assert acked > 0, f"no proposal succeeded, the scenario proved nothing: {dict(outcomes)}"


def _restart_everything(cluster: LocalCluster) -> None:
    cluster.set_faults()
    cluster.heal()
    for i, node in enumerate(cluster.nodes):
        if not node.status().running:
            cluster.restart(i)


@pytest.mark.slow
def test_figure8_unreliable(make_cluster, seed):
    """Figure 8 under an unreliable network: messages are dropped, delayed and reordered while
    leaders are repeatedly crashed (with entries of their term possibly half-replicated) and
    restarted.  No leader may commit an entry of an earlier term by counting replicas, so at the
    end every node holds the same log, and every acknowledged command is in it at the index its
    future reported."""
    rng = random.Random(seed)
    cluster = make_cluster(5)
    cluster.set_faults(drop=0.1, delay=(0.0, 0.02), reorder=True)
    proposals: list[tuple[bytes, Future]] = []
    for round_ in range(30):
        # Give an election a chance to finish (a random bound: sometimes it will not).
        cluster.wait_for(lambda: cluster.leader() is not None, rng.uniform(0.05, 0.4))
        batch = []
        for node in cluster.nodes:
            if node.status().role == "leader":
                for k in range(rng.randint(1, 5)):
                    command = b"f8-%d-%s-%d" % (round_, node.id.encode(), k)
                    future = node.propose(command)
                    proposals.append((command, future))
                    batch.append(future)
        # Mostly crash while the batch is still replicating, sometimes after it committed.
        budget = rng.uniform(0.0, 0.02) if rng.random() < 0.7 else rng.uniform(0.05, 0.2)
        cluster.wait_for(lambda b=batch: bool(b) and settled(b), budget)
        leader = cluster.leader()
        if leader is not None and rng.random() < 0.5:
            cluster.crash(cluster.nodes.index(leader))
        down = [i for i, n in enumerate(cluster.nodes) if not n.status().running]
        if len(down) > 2 or (down and rng.random() < 0.3):
            cluster.restart(rng.choice(down))
        if round_ % 10 == 9:
            assert_prefix_consistent(cluster.nodes)
    _restart_everything(cluster)
    one(cluster, b"final", expected=5)
    assert cluster.wait_for(lambda: settled(f for _, f in proposals), LIVENESS)
    _check_outcome(cluster, proposals)
    print(f"figure8: {len(proposals)} proposals, "
          f"{sum(f.exception() is None for _, f in proposals)} acknowledged, "
          f"final term {cluster.nodes[0].status().term}")


def _churn(cluster: LocalCluster, seed: int, steps: int, clients: int = 3) -> None:
    """Run ``clients`` proposing threads while a control loop crashes, restarts, isolates and
    rejoins random nodes for ``steps`` steps; then heal everything (clients still running) until
    they get fresh acknowledgements, stop the clients and check the outcome."""
    rng = random.Random(seed)
    proposals: list[tuple[bytes, Future]] = []
    acknowledged = [0]  # guarded by lock
    lock = threading.Lock()
    halt = threading.Event()
    errors: list[BaseException] = []

    def client(number: int) -> None:
        picker = random.Random(seed * 31 + number)
        k = 0
        try:
            while not halt.is_set():
                node = cluster.leader() or picker.choice(cluster.nodes)
                command = b"c%d-%d" % (number, k)
                k += 1
                future = node.propose(command)
                with lock:
                    proposals.append((command, future))
                try:
                    future.result(LIVENESS)
                    with lock:
                        acknowledged[0] += 1
                except RETRYABLE:
                    cluster.wait_for(
                        lambda n=node: halt.is_set() or cluster.leader() not in (None, n), 0.05)
                except TimeoutError:
                    pass  # still pending; checked after stop()
        except BaseException as exc:  # surface crashes of the client itself
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,), name=f"churn-client-{c}", daemon=True)
               for c in range(clients)]
    for t in threads:
        t.start()
    n = len(cluster.nodes)
    isolated: set[int] = set()

    def unavailable() -> list[int]:
        return [i for i in range(n) if i in isolated or not cluster.nodes[i].status().running]

    try:
        for _ in range(steps):
            cluster.wait_for(halt.is_set, rng.uniform(0.0, 0.1))
            action = rng.random()
            victim = rng.randrange(n)
            if action < 0.2:
                cluster.crash(victim)
            elif action < 0.45:
                if not cluster.nodes[victim].status().running:
                    cluster.restart(victim)
            elif action < 0.6:
                cluster.isolate(victim)
                isolated.add(victim)
            elif action < 0.8:
                cluster.rejoin(victim)
                isolated.discard(victim)
            # Usually repair until a majority is up and connected, so that clients make
            # progress; sometimes leave the cluster without one for a step or more.
            while rng.random() < 0.8 and n - len(bad := unavailable()) <= n // 2:
                fix = rng.choice(bad)
                if not cluster.nodes[fix].status().running:
                    cluster.restart(fix)
                else:
                    cluster.rejoin(fix)
                    isolated.discard(fix)
            assert_prefix_consistent(running(cluster))
        # Recovery with the clients still at work: they must get fresh acknowledgements.
        with lock:
            before = acknowledged[0]
        _restart_everything(cluster)
        isolated.clear()

        def progressed() -> bool:
            with lock:
                return acknowledged[0] >= before + 2 * clients

        assert cluster.wait_for(progressed, LIVENESS), "no progress after healing"
    finally:
        halt.set()
        for t in threads:
            t.join(2 * LIVENESS)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a client thread is stuck"
    _restart_everything(cluster)
    one(cluster, b"final", expected=n)
    assert cluster.wait_for(lambda: settled(f for _, f in proposals), LIVENESS), (
        f"{sum(not f.done() for _, f in proposals)} proposals still pending after healing")
    _check_outcome(cluster, proposals)
    cluster.stop()
    assert settled(f for _, f in proposals)
    dropped = sum(isinstance(f.exception(), ProposalDropped) for _, f in proposals)
    print(f"churn: {len(proposals)} proposals, "
          f"{sum(f.exception() is None for _, f in proposals)} acknowledged, {dropped} dropped")


@pytest.mark.slow
def test_churn_reliable_network(make_cluster, seed):
    """Concurrent clients propose while nodes crash, restart, and are cut off at random, on a
    reliable network.  At the end every acknowledged proposal is applied exactly once on every
    node, at the index its future reported, and all nodes agree on the order."""
    _churn(make_cluster(5), seed, steps=40)


@pytest.mark.slow
def test_churn_unreliable_network(make_cluster, seed):
    """The churn scenario with messages also dropped, duplicated, delayed and reordered."""
    cluster = make_cluster(5)
    cluster.set_faults(drop=0.05, duplicate=0.05, delay=(0.0, 0.01), reorder=True)
    _churn(cluster, seed, steps=40)


@pytest.mark.slow
def test_churn_three_nodes_without_prevote_or_check_quorum(make_cluster, seed):
    """Churn on three nodes with PreVote and CheckQuorum switched off (classic Raft elections,
    disruptive rejoins): the same safety checks hold."""
    import dataclasses

    config = dataclasses.replace(FAST, pre_vote=False, check_quorum=False)
    _churn(make_cluster(3, config=config), seed, steps=30)
