"""The contract over real loopback sockets: LocalCluster(transport="tcp") with the scenario
checks of the memory suite (election, re-election, minority, crash/restart, unreliable network,
snapshot catch-up, no stale read).  Faults are applied by the TCP transport's FaultPlan."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import LocalCluster, NotLeaderError, ReadTimeout
from tests.conftest import FAST, LIVENESS, raft_threads
from tests.runtime.scenario import agreed_commands, one, running, wait_all_applied


@pytest.fixture
def tcp_cluster(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    return make_cluster(3, transport="tcp")


def test_tcp_election_agreement_and_reelection(tcp_cluster: LocalCluster) -> None:
    """A leader is elected over TCP, commands commit everywhere, isolating the leader elects
    another one, and the old leader rejoins as a follower with the same log."""
    cluster = tcp_cluster
    leader = cluster.wait_for_leader(LIVENESS)
    for k in range(5):
        one(cluster, f"a{k}".encode())
    old = cluster.nodes.index(leader)
    cluster.isolate(old)
    assert cluster.wait_for(lambda: (lead := cluster.leader()) is not None
                            and lead is not leader, LIVENESS)
    one(cluster, b"while-isolated", expected=2)
    cluster.rejoin(old)
    one(cluster, b"after-rejoin")
    wait_all_applied(cluster)
    assert agreed_commands(cluster.nodes)[-2:] == [b"while-isolated", b"after-rejoin"]


def test_tcp_no_leader_in_minority_and_no_stale_read(tcp_cluster: LocalCluster) -> None:
    """A leader cut off in a minority steps down (CheckQuorum) and never serves a read."""
    cluster = tcp_cluster
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"before")
    cluster.isolate(cluster.nodes.index(leader))
    assert cluster.wait_for(lambda: leader.status().role != "leader", LIVENESS)
    with pytest.raises((NotLeaderError, ReadTimeout)):
        leader.read(lambda sm: list(sm.commands)).result(LIVENESS)


def test_tcp_crash_restart_and_unreliable_network(tcp_cluster: LocalCluster, seed: int) -> None:
    """Random crashes and restarts under 10% drop with delay and reordering: every node ends
    with the same applied log, containing every command committed by one()."""
    cluster = tcp_cluster
    rng = random.Random(seed)
    cluster.set_faults(drop=0.1, delay=(0.0, 0.005), reorder=True)
    committed = []
    for k in range(12):
        committed.append(f"c{k}".encode())
        one(cluster, committed[-1], expected=2, timeout=3 * LIVENESS)
        if k % 4 == 3:
            victim = rng.randrange(3)
            cluster.crash(victim)
            cluster.restart(victim)
    cluster.set_faults()
    one(cluster, b"final", timeout=3 * LIVENESS)
    wait_all_applied(cluster)
    agreed = agreed_commands(running(cluster))
    assert all(c in agreed for c in committed)


@pytest.mark.parametrize("storage_thread", [False, True], ids=["inline", "storage-thread"])
def test_tcp_snapshot_catch_up(seed: int, tmp_path: Path, storage_thread: bool) -> None:
    """With the native store on disk, a follower that missed compacted entries catches up over
    TCP through InstallSnapshot (writes inline on the loop thread, or on a storage thread)."""
    config = dataclasses.replace(FAST, snapshot_threshold=100, snapshot_trailing_entries=10,
                                 snapshot_chunk_bytes=1024, storage_thread=storage_thread)
    with LocalCluster(3, config=config, transport="tcp", data_dir=str(tmp_path),
                      seed=seed) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lagging = (cluster.nodes.index(leader) + 1) % 3
        cluster.isolate(lagging)
        for round_ in range(3):
            before = leader.status().snapshot_index
            for future in [leader.propose(f"r{round_}-{k}".encode()) for k in range(150)]:
                future.result(LIVENESS)
            assert cluster.wait_for(lambda b=before: leader.status().snapshot_index > b,
                                    LIVENESS)
        cluster.rejoin(lagging)
        wait_all_applied(cluster)
        follower = cluster.nodes[lagging]
        assert cluster.wait_for(lambda: follower.status().snapshot_index > 0, LIVENESS)
        assert list(follower.state_machine.commands) == list(leader.state_machine.commands)
    assert not raft_threads()


def test_fuzzed_frames_neither_crash_nor_change_a_node(seed: int) -> None:
    """Random bytes, and valid frames with one byte flipped, sent to every node of a TCP
    cluster (both before and after the connection handshake) are dropped: no node crashes,
    the leader and term stay the same, and the cluster keeps committing."""
    import socket

    from engine.core import Message, MessageKind
    from engine.transport.framing import encode_message
    from tests.transport.test_tcp import _hello

    config = dataclasses.replace(FAST, check_quorum=False)  # a steady leader for the comparison
    with LocalCluster(3, config=config, transport="tcp", seed=seed) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        one(cluster, b"before")
        before = [(n.status().term, n.status().leader_id) for n in cluster.nodes]
        rng = random.Random(seed)
        valid = encode_message(Message(kind=MessageKind.VOTE, src="n9", dst="n1",
                                       term=before[0][0] + 5, index=10**6, log_term=10**3))
        for target, address in cluster.addresses.items():
            host, port = address.rsplit(":", 1)
            for attempt in range(20):
                if attempt % 2:
                    payload = rng.randbytes(rng.randrange(1, 400))
                    prefix = b""
                else:
                    mutated = bytearray(valid.replace(b"n1", target.encode()))
                    mutated[rng.randrange(4, len(mutated))] ^= 1 << rng.randrange(8)
                    payload = bytes(mutated)
                    prefix = _hello("n9", target, auth=False)[0]
                with socket.create_connection((host, int(port)), timeout=2) as sock:
                    try:
                        sock.sendall(prefix + payload)
                        sock.settimeout(0.2)
                        while sock.recv(4096):
                            pass
                    except OSError:
                        pass
        assert all(n.status().running for n in cluster.nodes)
        assert [(n.status().term, n.status().leader_id) for n in cluster.nodes] == before
        one(cluster, b"after")
        assert cluster.leader() is leader
