"""The KV machine's snapshot/restore through the engine: a replica cut off while the leader
compacted its log catches up by InstallSnapshot and ends with the leader's exact data."""

from __future__ import annotations

import dataclasses

from engine import LocalCluster
from engine.kv.machine import KVMachine, Op, encode_command
from tests.conftest import FAST, LIVENESS


def test_kv_replica_catches_up_through_install_snapshot() -> None:
    config = dataclasses.replace(FAST, snapshot_threshold=100, snapshot_trailing_entries=10,
                                 snapshot_chunk_bytes=512)
    with LocalCluster(3, state_machine=KVMachine, config=config, seed=11) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lagging = (cluster.nodes.index(leader) + 1) % 3
        cluster.isolate(lagging)
        for round_ in range(4):
            before = leader.status().snapshot_index
            futures = [leader.propose(encode_command(Op.SET, [b"k%d" % (k % 50), b"v%d-%d" % (
                round_, k)])) for k in range(120)]
            futures += [leader.propose(encode_command(Op.INCR, [b"counter"]))
                        for _ in range(10)]
            for future in futures:
                future.result(LIVENESS)
            assert cluster.wait_for(lambda b=before: leader.status().snapshot_index > b,
                                    LIVENESS)
        cluster.rejoin(lagging)
        follower = cluster.nodes[lagging]
        commit = leader.status().commit_index
        assert cluster.wait_for(lambda: follower.last_applied >= commit, LIVENESS)
        assert follower.status().snapshot_index > 0, "caught up without a snapshot"
        expected = leader.read(lambda sm: dict(sm.data)).result(LIVENESS)
        assert expected[b"counter"] == b"40"
        assert dict(follower.state_machine.data) == expected
