"""Snapshots through the runtime (6.824 part D in spirit): automatic snapshots bound the log,
a follower that missed compacted entries receives InstallSnapshot in chunks (also over a lossy
network and across a crash during the transfer), restart replays only the log after the
snapshot, and a corrupt snapshot file falls back to the older one.

The chunks a follower receives go to a temporary file of its snapshot directory (watched through
wrappers of the file store's methods, on the node's own threads, so without sleeps), which is
renamed into place once installed, deleted by stop() and, after a crash, by the next start; the
receiver's handling of transfers is also tested alone, on a memory store.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Config, LocalCluster, LogStateMachine, RaftNode
from engine.core import Message, MessageKind
from engine.errors import StorageError
from engine.runtime.snapshots import SnapshotReceiver
from engine.storage.snapshot import (
    FileIncomingSnapshot,
    FileSnapshotStore,
    MemorySnapshotStore,
    SnapshotMeta,
    encode_snapshot,
    snapshot_file_name,
)
from tests.conftest import FAST, LIVENESS
from tests.fds import leaked_fds, open_fds

SNAPPY = dataclasses.replace(FAST, snapshot_threshold=200, snapshot_trailing_entries=50,
                             snapshot_chunk_bytes=2048)


class CountingMachine(LogStateMachine):
    """LogStateMachine that also counts apply() and restore() calls (thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.apply_calls = 0
        self.restores = 0
        self._counter_lock = threading.Lock()

    def apply(self, index: int, command: bytes) -> object:
        with self._counter_lock:
            self.apply_calls += 1
        return super().apply(index, command)

    def restore(self, data: bytes) -> None:
        with self._counter_lock:
            self.restores += 1
        super().restore(data)


def _propose_all(leader: RaftNode, count: int, tag: str = "c") -> None:
    futures = [leader.propose(f"{tag}{k:05d}".encode()) for k in range(count)]
    for future in futures:
        future.result(LIVENESS)


def _propose_past_compaction(cluster: LocalCluster, leader: RaftNode, rounds: int = 4,
                             per_round: int = 300) -> None:
    """Propose in rounds, each waiting for the leader's next automatic snapshot, until the
    leader's log has been compacted (the first snapshot keeps the log; later ones trim it)."""
    for round_ in range(rounds):
        before = leader.status().snapshot_index
        _propose_all(leader, per_round, tag=f"r{round_}-")
        assert cluster.wait_for(lambda b=before: leader.status().snapshot_index > b, LIVENESS)
    status = leader.status()
    assert status.log_entries < status.last_log_index, "the leader's log was never compacted"


def _caught_up(cluster: LocalCluster, index: int) -> Callable[[], bool]:
    return lambda: all(n.last_applied >= index for n in cluster.nodes if n.status().running)


def _same_state(cluster: LocalCluster) -> None:
    states = [list(n.state_machine.commands) for n in cluster.nodes]
    assert all(s == states[0] for s in states), "replicas differ"


def test_log_stays_bounded_under_a_long_run(make_cluster: Callable[..., LocalCluster]) -> None:
    """With snapshot_threshold=N, once the nodes have snapshotted what they applied, each log
    holds about two snapshot intervals, not the whole history; every entry is still applied
    everywhere."""
    cluster = make_cluster(3, config=SNAPPY)
    leader = cluster.wait_for_leader(LIVENESS)
    for round_ in range(10):
        _propose_all(leader, 150, tag=f"r{round_}-")
    commit = leader.status().commit_index
    assert cluster.wait_for(_caught_up(cluster, commit), LIVENESS)
    threshold = SNAPPY.snapshot_threshold
    assert cluster.wait_for(lambda: all(n.status().snapshot_index > commit - threshold
                                        for n in cluster.nodes), LIVENESS)
    for node in cluster.nodes:
        entries = node.status().log_entries
        assert entries <= 3 * threshold, f"{node.id} holds {entries} of {commit} entries"
    _same_state(cluster)


def test_lagging_follower_receives_snapshot(make_cluster: Callable[..., LocalCluster]) -> None:
    """A follower cut off while the leader compacted its log catches up by InstallSnapshot
    (its snapshot_index jumps) and ends with the same state as the leader."""
    cluster = make_cluster(3, config=SNAPPY, state_machine=CountingMachine)
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(lagging)
    _propose_past_compaction(cluster, leader)
    cluster.rejoin(lagging)
    commit = leader.status().commit_index
    assert cluster.wait_for(_caught_up(cluster, commit), LIVENESS)
    follower = cluster.nodes[lagging]
    assert follower.state_machine.restores >= 1, "the follower never installed a snapshot"
    assert cluster.wait_for(lambda: follower.status().snapshot_index > 0, LIVENESS)
    _same_state(cluster)


def test_snapshot_over_lossy_network(make_cluster: Callable[..., LocalCluster]) -> None:
    """Chunks lost or reordered on a 20%-drop network are resent; the follower converges."""
    cluster = make_cluster(3, config=dataclasses.replace(SNAPPY, snapshot_chunk_bytes=512))
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(lagging)
    _propose_past_compaction(cluster, leader)
    cluster.set_faults(drop=0.2, delay=(0.0, 0.002), reorder=True)
    cluster.rejoin(lagging)

    def converged() -> bool:
        node = cluster.leader()
        return node is not None and _caught_up(cluster, node.status().commit_index)()

    assert cluster.wait_for(converged, 3 * LIVENESS)
    cluster.set_faults()
    leader = cluster.wait_for_leader(LIVENESS)
    leader.propose(b"final").result(LIVENESS)
    assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
    _same_state(cluster)


def test_crash_during_install_then_converge(make_cluster: Callable[..., LocalCluster]) -> None:
    """Crashing the receiving follower while chunks are in flight, then restarting it, still
    ends with a converged replica."""
    cluster = make_cluster(3, config=dataclasses.replace(SNAPPY, snapshot_chunk_bytes=256))
    leader = cluster.wait_for_leader(LIVENESS)
    lagging = (cluster.nodes.index(leader) + 1) % 3
    cluster.isolate(lagging)
    _propose_past_compaction(cluster, leader)
    cluster.rejoin(lagging)
    assert cluster.wait_for(lambda: cluster.nodes[lagging].status().term == leader.status().term,
                            LIVENESS)
    cluster.crash(lagging)
    cluster.restart(lagging)
    leader = cluster.wait_for_leader(LIVENESS)
    assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
    _same_state(cluster)


def test_restart_replays_only_the_suffix(make_cluster: Callable[..., LocalCluster]) -> None:
    """A node restarted after a snapshot restores it and applies only the later entries."""
    cluster = make_cluster(3, config=SNAPPY, state_machine=CountingMachine)
    leader = cluster.wait_for_leader(LIVENESS)
    _propose_all(leader, 700)
    victim = (cluster.nodes.index(leader) + 1) % 3
    # last_applied is read live; status() is republished after the round that resolved the
    # futures, so right after them it may still show an older commit index.
    assert cluster.wait_for(_caught_up(cluster, leader.last_applied), LIVENESS)
    snapshot_index = cluster.nodes[victim].snapshot().result(LIVENESS)
    assert snapshot_index >= 700
    cluster.crash(victim)
    node = cluster.restart(victim)
    machine = node.state_machine
    assert machine.restores == 1
    _propose_all(cluster.wait_for_leader(LIVENESS), 10, tag="after")
    leader = cluster.wait_for_leader(LIVENESS)
    assert cluster.wait_for(_caught_up(cluster, leader.last_applied), LIVENESS)
    assert machine.apply_calls <= len(machine.commands) - snapshot_index + 11
    _same_state(cluster)


def test_on_demand_snapshot_and_status(make_cluster: Callable[..., LocalCluster]) -> None:
    """RaftNode.snapshot() resolves to the snapshot's index and Status reports it."""
    cluster = make_cluster(1, config=dataclasses.replace(FAST, snapshot_threshold=0))
    leader = cluster.wait_for_leader(LIVENESS)
    _propose_all(leader, 20)
    index = leader.snapshot().result(LIVENESS)
    assert index == leader.status().commit_index
    assert cluster.wait_for(lambda: leader.status().snapshot_index == index, LIVENESS)


def test_corrupt_newest_snapshot_falls_back(tmp_path: Path) -> None:
    """On disk, a corrupt newest snapshot is skipped: the node restarts from the older one and
    the log behind it, and ends with the right state."""
    config = dataclasses.replace(SNAPPY, snapshot_threshold=0)
    with LocalCluster(1, config=config, data_dir=str(tmp_path), seed=5) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        _propose_all(leader, 30)
        leader.snapshot().result(LIVENESS)
        _propose_all(leader, 30, tag="d")
        leader.snapshot().result(LIVENESS)
        expected = list(leader.state_machine.commands)
        cluster.crash(0)
        snapshots = sorted((tmp_path / "n1").rglob("*.snap"))
        assert len(snapshots) == 2
        newest = snapshots[-1]
        raw = bytearray(newest.read_bytes())
        raw[-1] ^= 0xFF
        newest.write_bytes(bytes(raw))
        os.sync()
        node = cluster.restart(0)
        assert cluster.wait_for(lambda: node.last_applied >= len(expected), LIVENESS)
        assert list(node.state_machine.commands) == expected


def test_config_rejects_negative_snapshot_settings() -> None:
    """snapshot_threshold may be 0 (off) but not negative."""
    try:
        Config(snapshot_threshold=-1)
    except ValueError as exc:
        assert "snapshot_threshold=-1 must be >= 0" in str(exc)
    else:
        raise AssertionError("negative snapshot_threshold accepted")


# --- where received chunks go ---------------------------------------------------------------


def _incoming_names(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith("snapshot-incoming-"))


class IncomingWatch:
    """Wraps FileIncomingSnapshot.write and FileSnapshotStore.commit_incoming (for every node of
    the process) to look at the snapshot directory from the node's own thread, right after each
    call: deterministic views of a transfer in progress."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch,
                 after_write: Callable[[FileIncomingSnapshot], None] | None = None) -> None:
        self.writes: list[tuple[str, int, int, int, bool]] = []  # path, received, total, size,
        self.commits: list[tuple[str, bool, bool]] = []  # path, temp exists, final exists
        self._lock = threading.Lock()
        real_write = FileIncomingSnapshot.write
        real_commit = FileSnapshotStore.commit_incoming
        watch = self

        def write(incoming: FileIncomingSnapshot, data: bytes) -> None:
            real_write(incoming, data)
            with watch._lock:
                watch.writes.append((incoming.path, incoming.received, incoming.total,
                                     os.path.getsize(incoming.path),
                                     threading.current_thread().name.endswith("-loop")))
            if after_write is not None:
                after_write(incoming)

        def commit(store: FileSnapshotStore, incoming: FileIncomingSnapshot) -> None:
            real_commit(store, incoming)
            assert incoming.meta is not None
            final = os.path.join(store.directory, snapshot_file_name(incoming.meta))
            with watch._lock:
                watch.commits.append((incoming.path, os.path.exists(incoming.path),
                                      os.path.exists(final)))

        monkeypatch.setattr(FileIncomingSnapshot, "write", write)
        monkeypatch.setattr(FileSnapshotStore, "commit_incoming", commit)


@pytest.mark.parametrize("storage_thread", [False, True], ids=["inline", "storage-thread"])
def test_received_snapshot_goes_through_a_temp_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    storage_thread: bool) -> None:
    """With a data directory, a lagging follower writes the chunks to a temporary file in its
    snapshot directory (on disk as they arrive, the loop thread writing), which the thread that
    owns the stores (the loop thread, or the storage thread with Config.storage_thread) then
    renames into place as a regular snapshot file; nothing temporary remains."""
    watch = IncomingWatch(monkeypatch)
    config = dataclasses.replace(SNAPPY, snapshot_chunk_bytes=512, storage_thread=storage_thread)
    with LocalCluster(3, config=config, data_dir=str(tmp_path), seed=11) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lagging = (cluster.nodes.index(leader) + 1) % 3
        follower = cluster.nodes[lagging]
        snapshots = tmp_path / follower.id / "snapshots"
        cluster.isolate(lagging)
        _propose_past_compaction(cluster, leader)
        assert not watch.writes
        cluster.rejoin(lagging)
        assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
        assert cluster.wait_for(lambda: watch.commits, LIVENESS)
        with watch._lock:
            writes, commits = list(watch.writes), list(watch.commits)
        assert {os.path.dirname(path) for path, *_ in writes} == {str(snapshots)}
        assert all(os.path.basename(path).startswith("snapshot-incoming-")
                   and path.endswith(".tmp") for path, *_ in writes)
        # The bytes were on disk as they arrived: the file grew chunk by chunk while the
        # transfer was in progress.
        assert all(size == received for _, received, _, size, _ in writes)
        assert any(received < total for _, received, total, _, _ in writes)
        assert all(on_loop for *_, on_loop in writes)
        # Committed: the temporary file became the snapshot file.
        assert commits and all(not temp and final for _, temp, final in commits)
        assert {path for path, *_ in commits} <= {path for path, *_ in writes}
        assert _incoming_names(snapshots) == []
        assert cluster.wait_for(lambda: follower.status().snapshot_index > 0, LIVENESS)
        assert any(name.endswith(".snap") for name in os.listdir(snapshots))
        _same_state(cluster)
    assert _incoming_names(snapshots) == []


def _cut_off_mid_transfer(cluster: LocalCluster, lagging: int
                          ) -> tuple[threading.Event, list[tuple[str, int, int]],
                                     Callable[[FileIncomingSnapshot], None]]:
    """An after-write hook that isolates the follower again at its first chunk, so that the
    transfer stays in progress (at most a window of chunks is still in flight, far fewer than the
    snapshot has); it records (path, received, total) of that file."""
    started = threading.Event()
    first: list[tuple[str, int, int]] = []

    def after_write(incoming: FileIncomingSnapshot) -> None:
        if not started.is_set():
            first.append((incoming.path, incoming.received, incoming.total))
            cluster.isolate(lagging)
            started.set()

    return started, first, after_write


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_incoming_file_of_a_halted_follower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            how: str) -> None:
    """stop() deletes the incoming file of a transfer in progress; a crash leaves it, the next
    start deletes it, and the follower then gets the snapshot anew.  No file stays open."""
    config = dataclasses.replace(SNAPPY, snapshot_chunk_bytes=128)
    fds_before = open_fds()
    cluster = LocalCluster(3, config=config, data_dir=str(tmp_path), seed=12)
    with cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        lagging = (cluster.nodes.index(leader) + 1) % 3
        follower_id = cluster.ids[lagging]
        snapshots = tmp_path / follower_id / "snapshots"
        cluster.isolate(lagging)
        _propose_past_compaction(cluster, leader)
        started, first, after_write = _cut_off_mid_transfer(cluster, lagging)
        watch = IncomingWatch(monkeypatch, after_write=after_write)
        cluster.rejoin(lagging)
        assert started.wait(LIVENESS), "no snapshot transfer started"
        path, received, total = first[0]
        assert received < total // 4, f"the snapshot is too small: {received} of {total} bytes"
        assert os.path.exists(path)
        assert _incoming_names(snapshots) == [os.path.basename(path)]
        if how == "stop":
            cluster.nodes[lagging].stop()
            assert _incoming_names(snapshots) == []
        else:
            cluster.crash(lagging)
            assert _incoming_names(snapshots) == [os.path.basename(path)]
        node = cluster.restart(lagging)
        assert _incoming_names(snapshots) == []  # the store's open removed the leftover
        cluster.rejoin(lagging)
        leader = cluster.wait_for_leader(LIVENESS)
        assert cluster.wait_for(_caught_up(cluster, leader.status().commit_index), LIVENESS)
        # last_applied is read live from the apply thread, the rest of status() once the loop
        # thread finishes its round (which includes making the snapshot durable).
        assert cluster.wait_for(lambda: node.status().snapshot_index > 0, LIVENESS)
        assert cluster.wait_for(lambda: watch.commits, LIVENESS)
        assert _incoming_names(snapshots) == []
        _same_state(cluster)
    assert leaked_fds(fds_before) == set()


# --- the receiver alone (a memory store: no threads, no files) ------------------------------


class RecordingStore(MemorySnapshotStore):
    """A memory snapshot store that keeps every incoming snapshot it made, and can fail."""

    def __init__(self) -> None:
        super().__init__()
        self.begun: list = []
        self.fail_begin = False

    def begin_incoming(self, index: int, term: int, total: int):  # type: ignore[override]
        if self.fail_begin:
            raise StorageError("no space left on device")
        incoming = super().begin_incoming(index, term, total)
        self.begun.append(incoming)
        return incoming


def _snap(index: int, term: int) -> tuple[SnapshotMeta, bytes, bytes]:
    meta = SnapshotMeta(index, term, ("n1", "n2", "n3"))
    data = f"state machine at {index}|".encode() * 40
    return meta, data, encode_snapshot(meta, data)


def _chunk(meta: SnapshotMeta, buf: bytes, offset: int, size: int = 100, *, src: str = "n1",
           data: bytes | None = None) -> Message:
    return Message(kind=MessageKind.SNAPSHOT_CHUNK, src=src, dst="n2", term=5, index=meta.index,
                   log_term=meta.term, context=offset, commit=len(buf),
                   data=buf[offset:offset + size] if data is None else data)


def test_receiver_writes_chunks_through_the_store() -> None:
    """Each chunk goes to the store's incoming snapshot; the last one has it verified and hands
    it over, finished, with its meta."""
    store = RecordingStore()
    receiver = SnapshotReceiver("n2", store.begin_incoming)
    meta, data, buf = _snap(30, 4)
    done = None
    for offset in range(0, len(buf), 100):
        response, done = receiver.on_chunk(_chunk(meta, buf, offset))
        assert (response.kind, response.dst, response.index, response.log_term) == (
            MessageKind.SNAPSHOT_CHUNK_RESPONSE, "n1", 30, 4)
        assert response.context == min(offset + 100, len(buf)) and not response.reject
        if done is None:
            assert receiver.in_progress is store.begun[0]
            assert store.begun[0].received == response.context
    assert done is not None and len(store.begun) == 1
    got_meta, incoming = done
    assert got_meta == meta and incoming is store.begun[0]
    assert incoming.state == "finished" and receiver.in_progress is None
    assert incoming.read() == (buf, data)
    assert store.latest() is None  # the node commits it, not the receiver
    store.commit_incoming(incoming)
    assert store.latest() == (meta, data)


def test_receiver_switches_transfers() -> None:
    """A repeated chunk of the current transfer (offset 0 included) is answered with the offset
    wanted next; a late chunk of another transfer is answered with 0 and changes nothing; the
    first chunk of another transfer (other snapshot or other sender) aborts the current one."""
    store = RecordingStore()
    receiver = SnapshotReceiver("n2", store.begin_incoming)
    old_meta, _, old = _snap(10, 2)
    new_meta, new_data, new = _snap(20, 3)
    receiver.on_chunk(_chunk(old_meta, old, 0))
    receiver.on_chunk(_chunk(old_meta, old, 100))
    first = store.begun[0]
    response, _ = receiver.on_chunk(_chunk(old_meta, old, 0))  # the leader restarted it
    assert response.context == 200 and receiver.in_progress is first
    response, _ = receiver.on_chunk(_chunk(new_meta, new, 300))
    assert response.context == 0 and not response.reject
    assert receiver.in_progress is first and first.state == "being written"
    response, _ = receiver.on_chunk(_chunk(new_meta, new, 0))
    assert response.context == 100 and first.state == "aborted"
    second = store.begun[1]
    assert receiver.in_progress is second
    response, _ = receiver.on_chunk(_chunk(new_meta, new, 0, src="n3"))  # a new leader
    assert response.context == 100 and response.dst == "n3" and second.state == "aborted"
    third = store.begun[2]
    done = None
    for offset in range(100, len(new), 100):
        _, done = receiver.on_chunk(_chunk(new_meta, new, offset, src="n3"))
    assert done is not None and done[1] is third and third.read() == (new, new_data)
    assert [i.state for i in store.begun] == ["aborted", "aborted", "finished"]


def test_receiver_rejects_a_corrupt_snapshot() -> None:
    """A chunk damaged in transit is caught when the snapshot is complete: the response rejects
    it and the incoming snapshot is gone."""
    store = RecordingStore()
    receiver = SnapshotReceiver("n2", store.begin_incoming)
    meta, _, buf = _snap(30, 4)
    done = None
    for offset in range(0, len(buf), 100):
        chunk = buf[offset:offset + 100]
        if offset == 300:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        response, done = receiver.on_chunk(_chunk(meta, buf, offset, data=chunk))
    assert done is None and response.reject
    assert store.begun[0].state == "aborted" and receiver.in_progress is None


def test_receiver_rejects_when_the_store_fails() -> None:
    """A store that cannot make an incoming snapshot, or a chunk write that fails, rejects the
    transfer (the leader gives up on it and tries again later) without raising."""
    store = RecordingStore()
    receiver = SnapshotReceiver("n2", store.begin_incoming)
    meta, _, buf = _snap(30, 4)
    store.fail_begin = True
    response, done = receiver.on_chunk(_chunk(meta, buf, 0))
    assert response.reject and done is None and receiver.in_progress is None
    store.fail_begin = False
    receiver.on_chunk(_chunk(meta, buf, 0))
    incoming = store.begun[0]

    def full(view: memoryview) -> None:
        raise StorageError("no space left on device")

    incoming._append = full  # type: ignore[method-assign]
    response, done = receiver.on_chunk(_chunk(meta, buf, 100))
    assert response.reject and done is None
    assert incoming.state == "aborted" and receiver.in_progress is None


def test_receiver_abort() -> None:
    store = RecordingStore()
    receiver = SnapshotReceiver("n2", store.begin_incoming)
    meta, _, buf = _snap(30, 4)
    receiver.on_chunk(_chunk(meta, buf, 0))
    receiver.abort()
    receiver.abort()
    assert store.begun[0].state == "aborted" and receiver.in_progress is None
