"""A durable write that fails (full disk, I/O error) stops the node cleanly: the error reaches
the pending futures, status() reports it stopped, and no thread is left behind."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

import pytest

from engine import Config, LogStateMachine, RaftNode, StorageError
from engine.storage.memory import MemoryLogStore
from engine.transport.memory import MemoryNetwork
from engine.types import Entry
from tests.conftest import FAST, LIVENESS, raft_threads


def _wait_until(node: RaftNode, predicate: Callable[[], bool]) -> bool:
    """Wait (woken by the node's observer callbacks) until ``predicate()`` holds."""
    changed = threading.Condition()

    def notify() -> None:
        with changed:
            changed.notify_all()

    node.add_observer(notify)
    with changed:
        return changed.wait_for(predicate, LIVENESS)


class FailingLogStore(MemoryLogStore):
    """A memory log store whose appends fail once ``armed`` is set, like a disk that filled."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = threading.Event()

    def append(self, entries: Sequence[Entry]) -> None:
        if self.armed.is_set():
            raise StorageError("No space left on device (injected)")
        super().append(entries)


@pytest.mark.parametrize("config", [FAST, dataclasses.replace(FAST, storage_thread=True)],
                         ids=["inline", "storage-thread"])
def test_failed_write_stops_the_node_and_fails_futures(config: Config) -> None:
    network = MemoryNetwork(seed=1)
    store = FailingLogStore()
    node = RaftNode("a", {"a": "memory:a"}, LogStateMachine(), config=config,
                    transport=network.endpoint("a"), log_store=store, seed=1)
    node.start()
    try:
        assert _wait_until(node, lambda: node.status().role == "leader")
        assert node.propose(b"ok").result(LIVENESS) >= 1
        store.armed.set()
        future = node.propose(b"lost")
        with pytest.raises(StorageError, match="injected"):
            future.result(LIVENESS)
        assert _wait_until(node, lambda: not node.status().running)
        assert isinstance(node.propose(b"after").exception(LIVENESS), StorageError)
    finally:
        node.stop()
        network.close()
    assert not raft_threads(), raft_threads()


def test_failed_background_fsync_stops_the_node_and_fails_futures(tmp_path) -> None:
    """With the native store and fsync on, fdatasync runs on the store's syncer thread while the
    loop goes on; when it fails (EIO), the node stops as with an inline failure: the pending
    proposal fails with StorageError, later ones too, and no thread is left behind."""
    import errno

    pytest.importorskip("engine.storage._raftlog", reason="the native store is not built")
    from engine.storage._raftlog import lib

    from engine.storage.native import NativeLogStore

    network = MemoryNetwork(seed=2)
    store = NativeLogStore(str(tmp_path / "log"), fsync=True)
    node = RaftNode("a", {"a": "memory:a"}, LogStateMachine(),
                    config=dataclasses.replace(FAST, fsync=True),
                    transport=network.endpoint("a"), log_store=store, seed=2)
    node.start()
    try:
        assert _wait_until(node, lambda: node.status().role == "leader")
        assert node.propose(b"ok").result(LIVENESS) >= 1
        lib.rl_fault_set(lib.RL_FAULT_FSYNC, 0, errno.EIO, -1)
        future = node.propose(b"lost")
        with pytest.raises(StorageError, match="fdatasync"):
            future.result(LIVENESS)
        assert _wait_until(node, lambda: not node.status().running)
        assert isinstance(node.propose(b"after").exception(LIVENESS), StorageError)
    finally:
        lib.rl_fault_clear()
        node.stop()
        store.close()
        network.close()
    assert not raft_threads(), raft_threads()
