"""The core's entry cache in a running node (issue 12): with a small ``entry_cache_bytes`` the
leader keeps only its newest entries in memory and a follower that was cut off catches up from
entries read back from the leader's log store, whichever way the log writer runs (inline with
the memory store, background syncs of the native store, or the storage thread)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine import Config, LocalCluster, LogStateMachine
from engine.core import RawNode
from tests.conftest import FAST, LIVENESS

BUDGET = 64 * 1024
COMMANDS = 600
SIZE = 1000  # payload bytes per command: 600 x ~1.1 KiB is ten times the budget


def _cache(node: object) -> tuple[int, int]:
    """(cached entries, cached bytes) of the node's core, read on its loop thread."""
    def read(raw: RawNode) -> tuple[int, int]:
        log = raw.raft.log
        return log.cached_entries, log.cached_bytes
    return node._call(read).result(LIVENESS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("on_disk", "storage_thread"),
                         [(False, False), (True, False), (True, True)],
                         ids=["memory-store", "disk-background-sync", "disk-storage-thread"])
def test_cut_off_follower_catches_up_from_the_store(tmp_path: Path, on_disk: bool,
                                                     storage_thread: bool) -> None:
    config: Config = dataclasses.replace(FAST, entry_cache_bytes=BUDGET, fsync=on_disk,
                                         storage_thread=storage_thread, max_batch_entries=64)
    with LocalCluster(3, state_machine=LogStateMachine, config=config,
                      data_dir=str(tmp_path) if on_disk else None, seed=12) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lagging = (cluster.nodes.index(leader) + 1) % 3
        cluster.isolate(lagging)
        futures = [leader.propose(b"%06d" % k + b"p" * (SIZE - 6)) for k in range(COMMANDS)]
        for future in futures:
            future.result(LIVENESS)
        cached, cached_bytes = _cache(leader)
        assert cached_bytes <= BUDGET and cached < COMMANDS // 5, (cached, cached_bytes)
        assert leader.status().last_log_index > COMMANDS
        cluster.rejoin(lagging)
        # More writes while it catches up: reads back overlap the leader's own writes/syncs.
        futures = [leader.propose(b"%06d" % k + b"q" * (SIZE - 6))
                   for k in range(COMMANDS, COMMANDS + 200)]
        for future in futures:
            future.result(LIVENESS)
        commit = leader.status().commit_index
        assert cluster.wait_for(
            lambda: all(n.status().last_applied >= commit for n in cluster.nodes), LIVENESS)
        machines = [n.state_machine for n in cluster.nodes]
        assert all(m.commands == machines[0].commands for m in machines)  # type: ignore[attr-defined]
        assert len(machines[lagging].commands) == COMMANDS + 200  # type: ignore[attr-defined]


def test_reading_back_during_a_background_sync_waits_for_it(tmp_path: Path) -> None:
    """The native store is lent to its syncer thread while a background sync runs: a read
    back then waits for the sync, and the group it covered is still finished (its Readys
    reported durable, in order) from the loop afterwards."""
    pytest.importorskip("engine.storage._raftlog")
    import asyncio

    from engine.core import Ready
    from engine.eventloop import close_event_loop, new_event_loop
    from engine.runtime.persister import Persister
    from engine.storage.memory import MemoryStableStore
    from engine.storage.native import NativeLogStore
    from engine.types import Entry

    entries = [Entry(i, 1, 0, b"e%d" % i) for i in range(1, 31)]
    loop = new_event_loop()
    store = NativeLogStore(str(tmp_path), fsync=True)
    persisted: list[Ready] = []
    errors: list[BaseException] = []
    persister = Persister("n", store, MemoryStableStore(), threaded=False,
                          send=lambda messages: None, on_persisted=persisted.extend,
                          on_error=errors.append, loop=loop)
    try:
        assert persister.mode == "background"
        persister.start()
        first = Ready(entries=entries[:10])
        persister.submit(first)  # written, its sync started
        second = Ready(entries=entries[10:30])
        persister.submit(second)  # waits for the first sync
        assert persister.read_entries(1, 11) == entries[:10]
        assert persister.read_entries(5, 8) == entries[4:7], "no sync in flight any more"

        async def settle() -> None:
            for _ in range(500):
                if len(persisted) == 2:
                    return
                await asyncio.sleep(0.01)
        loop.run_until_complete(settle())
        assert persisted == [first, second] and not errors
        assert persister.read_entries(1, 31) == entries
    finally:
        persister.stop(flush=True)
        persister.close()
        store.close()
        close_event_loop(loop)
