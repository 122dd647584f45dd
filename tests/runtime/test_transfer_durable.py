"""Regression: with a ``data_dir`` (real files, fsync on), ``transfer_leadership()`` used to
resolve while the target's own status still said 'candidate' (its no-op write was in progress),
so a ``propose()`` on the target right after ``result()`` failed with NotLeaderError in most
seeds.  The target now publishes its new role before any message that says it leads leaves it,
and the old leader resolves the future only when it hears from the target as leader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine import LocalCluster
from engine.errors import TransferError
from tests.conftest import FAST, LIVENESS, raft_threads

DURABLE = dataclasses.replace(FAST, fsync=True)


TRANSFERS = 4
"""Transfers per seed, each to the next node round the ring (each one a chance to hit the race)."""


@pytest.mark.parametrize("seed", range(8))
def test_target_accepts_proposals_once_the_transfer_resolves(tmp_path: Path, seed: int) -> None:
    """Right after ``result()`` the target reports 'leader' at a term above the one the
    transfer began in, and ``propose()`` on it commits."""
    cluster = LocalCluster(3, config=DURABLE, data_dir=str(tmp_path), seed=seed)
    cluster.start()
    try:
        leader = cluster.wait_for_leader(LIVENESS)
        leader.propose(b"before").result(LIVENESS)
        for k in range(TRANSFERS):
            start_term = leader.status().term
            target = cluster.nodes[(cluster.nodes.index(leader) + 1) % len(cluster.nodes)]
            assert leader.transfer_leadership(target.id).result(LIVENESS) == target.id
            status = target.status()
            assert status.role == "leader" and status.term > start_term, (
                f"transfer {k} of seed {seed}: {status}")
            assert target.propose(f"after-{k}".encode()).result(LIVENESS) is not None
            leader = target
    finally:
        cluster.stop()
    assert not raft_threads()


def test_transfer_to_an_unreachable_target_fails_with_transfer_error(tmp_path: Path) -> None:
    """The future always settles: a target that cannot take over yields TransferError."""
    cluster = LocalCluster(3, config=DURABLE, data_dir=str(tmp_path), seed=1)
    cluster.start()
    try:
        leader = cluster.wait_for_leader(LIVENESS)
        target_index = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
        cluster.isolate(target_index)
        with pytest.raises(TransferError):
            leader.transfer_leadership(cluster.nodes[target_index].id).result(LIVENESS)
    finally:
        cluster.stop()
    assert not raft_threads()
