"""Leadership transfer through RaftNode.transfer_leadership: under load, to a lagging node, and
the failure path when the target cannot take over."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine import LocalCluster, NotLeaderError
from engine.errors import TransferError
from tests.conftest import LIVENESS


def test_transfer_under_load(make_cluster: Callable[..., LocalCluster]) -> None:
    """Proposals in flight when the transfer starts still commit; the target ends up leading
    and accepts new proposals."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    in_flight = [leader.propose(f"a{k}".encode()) for k in range(300)]
    target = next(n for n in cluster.nodes if n is not leader)
    assert leader.transfer_leadership(target.id).result(LIVENESS) == target.id
    for future in in_flight:
        future.result(LIVENESS)
    assert cluster.wait_for(lambda: target.status().role == "leader", LIVENESS)
    target.propose(b"after").result(LIVENESS)


def test_transfer_to_lagging_node_catches_it_up(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """A target that missed entries is brought up to date first, then leads with every
    committed entry."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
    cluster.isolate(lagging)
    for future in [leader.propose(f"b{k}".encode()) for k in range(200)]:
        future.result(LIVENESS)
    cluster.rejoin(lagging)
    target = cluster.nodes[lagging]
    assert leader.transfer_leadership(target.id).result(LIVENESS) == target.id
    commit = leader.status().commit_index
    assert target.wait_applied(commit, LIVENESS)
    assert [c for _, c in target.state_machine.commands][:200] == [
        f"b{k}".encode() for k in range(200)]


def test_transfer_to_unreachable_node_fails_and_leader_resumes(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """The transfer fails with TransferError after an election timeout; proposals made during
    it fail with ProposalDropped, later ones commit on the same leader."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    target_index = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
    cluster.isolate(target_index)
    transfer = leader.transfer_leadership(cluster.nodes[target_index].id)
    with pytest.raises(TransferError):
        transfer.result(LIVENESS)
    assert leader.status().role == "leader"
    leader.propose(b"resumed").result(LIVENESS)


def test_transfer_errors(make_cluster: Callable[..., LocalCluster]) -> None:
    """A follower cannot transfer; the target must be another member."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    follower = next(n for n in cluster.nodes if n is not leader)
    with pytest.raises(NotLeaderError):
        follower.transfer_leadership(leader.id).result(LIVENESS)
    with pytest.raises(ValueError):
        leader.transfer_leadership("nobody").result(LIVENESS)
    with pytest.raises(ValueError):
        leader.transfer_leadership(leader.id).result(LIVENESS)
