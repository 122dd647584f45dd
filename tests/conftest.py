"""Shared fixtures: a fast seeded Config, a LocalCluster factory, failure diagnostics.

Every cluster built by ``make_cluster`` is seeded from the test's node id (override with the
environment variable ``RAFT_TEST_SEED``), stopped at teardown, and checked to have left no
``raft-*`` thread behind.  When a test fails, the seed and each node's status are printed so the
failure report says which run it was.  The seed fixes election timeouts and fault decisions; thread
scheduling still varies from run to run, so a seed narrows a failure down rather than replaying it.

Tests wait on conditions (``cluster.wait_for``, ``wait_for_leader``, ``wait_applied``,
``future.result(timeout)``), never on ``time.sleep``; every timeout is a generous upper bound for
liveness (``LIVENESS`` seconds), not a performance claim.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterator

import pytest

from engine import Config, LocalCluster
from engine.statemachine import StateMachine

FAST = Config(tick_interval=0.005, heartbeat_interval=0.02, election_timeout_min=0.1,
              election_timeout_max=0.2, fsync=False)
"""Fast timeouts: an election takes ~0.1-0.2 s, a heartbeat goes out every 20 ms."""

LIVENESS = 10.0
"""Seconds: the upper bound for anything that must eventually happen (noisy shared machines)."""

_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    item.stash.setdefault(_REPORT_KEY, {})[report.when] = report
    return report


def raft_threads() -> list[str]:
    """Names of the live threads that belong to the engine (``raft-*``)."""
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith("raft-") and t.is_alive())


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A per-test seed: stable across runs, different between tests."""
    override = os.environ.get("RAFT_TEST_SEED")
    if override:
        return int(override)
    return zlib.crc32(request.node.nodeid.encode())


@pytest.fixture
def fast_config() -> Config:
    """The fast Config shared by the scenario tests."""
    return FAST


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest,
                 seed: int) -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(n=3, config=FAST, state_machine=None, start=True, transport="memory")
    -> LocalCluster``.

    Seeded; stopped at teardown, which also checks for leaked raft threads.
    """
    clusters: list[LocalCluster] = []

    def make(n: int = 3, *, config: Config = FAST,
             state_machine: Callable[[], StateMachine] | None = None,
             start: bool = True, transport: str = "memory") -> LocalCluster:
        cluster = LocalCluster(n, state_machine=state_machine, config=config,
                               transport=transport, seed=seed + len(clusters))
        clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    yield make

    reports = request.node.stash.get(_REPORT_KEY, {})
    failed = any(r.failed for r in reports.values())
    for cluster in clusters:
        if failed:
            _print_diagnostics(cluster, seed)
        cluster.stop()
    leftover = raft_threads()
    assert not leftover, f"threads left running after LocalCluster.stop(): {leftover}"


def _print_diagnostics(cluster: LocalCluster, base_seed: int) -> None:
    print(f"--- cluster seed={cluster.seed} (rerun the test with RAFT_TEST_SEED={base_seed})")
    for node in cluster.nodes:
        print(f"    {node.status()}")
        machine = node.state_machine
        commands = getattr(machine, "commands", None)
        if commands is not None:
            print(f"    {node.id}: {len(commands)} commands applied, last {commands[-3:]}")
