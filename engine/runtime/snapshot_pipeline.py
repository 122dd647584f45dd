"""The snapshot pipeline of one running node: taking, saving, sending and receiving snapshots.

Local snapshots: the state machine's owner takes a consistent copy (the applier calls
:meth:`SnapshotPipeline.taken`); the thread ``raft-<id>-snapshot`` encodes and saves it off the
hot path and posts ``SNAPSHOT_SAVED`` to the loop, which compacts the log behind the previous
snapshot (:meth:`SnapshotPipeline.saved`).  The newest encoded snapshot stays in memory: it is
what a follower that fell behind the log is sent.

InstallSnapshot: on the leader the core emits SNAPSHOT messages that :meth:`send` turns into a
chunked transfer (:class:`~engine.runtime.snapshots.SnapshotSender`); on a follower the chunks go
to a temporary file of the snapshot store (:class:`~engine.runtime.snapshots.SnapshotReceiver`),
the core installs the verified snapshot, the loop reads it back for the state machine
(:meth:`read_installed`), and the log writer commits the file (:meth:`commit_received`) before it
trims the log to match.

Ownership: the loop thread owns the sender, the receiver, the latest snapshot and the accepted
incoming snapshot.  The snapshot store is shared by the snapshot thread (save), the loop thread
(begin_incoming), the log writer (commit_incoming: the loop thread, or the storage thread with
``Config.storage_thread``) and the halting thread: every store call holds ``self._lock``, as does
every access to ``self._incoming`` (verified snapshots waiting, keyed by (index, term), for the
log writer).  Jobs for the snapshot thread wait in ``self._jobs`` under ``self._jobs_cond``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from engine.config import Config
from engine.core import Message, MessageKind, RawNode
from engine.errors import RaftError, StorageError
from engine.events import SnapshotInstalled, SnapshotReceived, SnapshotSent
from engine.runtime.proposals import settle
from engine.runtime.snapshots import SnapshotReceiver, SnapshotSender
from engine.runtime.telemetry import Telemetry, clock
from engine.runtime.workers import join_thread, start_thread
from engine.storage.base import IncomingSnapshot
from engine.storage.snapshot import SnapshotStore, encode_snapshot
from engine.types import SnapshotMeta

logger = logging.getLogger(__name__)

_SNAPSHOT = MessageKind.SNAPSHOT
_SNAPSHOT_CHUNK_RESPONSE = MessageKind.SNAPSHOT_CHUNK_RESPONSE

Job = tuple[SnapshotMeta, bytes, "Future | None"]


class SnapshotPipeline:
    """Snapshots of one running node; see the module docstring."""

    # Set by NodeLoop after construction (counters written by the loop thread, except
    # ``snapshots_installed``: the log writer's thread).
    telemetry: Telemetry | None = None

    def __init__(self, node_id: str, config: Config, store: SnapshotStore, *,
                 send: Callable[[list[Message]], None],
                 on_saved: Callable[[SnapshotMeta, bytes, Future | None], None],
                 on_failed: Callable[[], None],
                 latest: tuple[SnapshotMeta, bytes] | None) -> None:
        """``on_saved(meta, encoded, future)`` / ``on_failed()`` are called on the snapshot
        thread once a local snapshot is durable or could not be written (the node posts them to
        its loop).  ``latest`` is the snapshot start-up restored, encoded."""
        self._id = node_id
        self._config = config
        self._store = store
        self._send = send
        self._on_saved = on_saved
        self._on_failed = on_failed
        self._latest = latest  # loop thread
        self._sender = SnapshotSender(node_id, send, chunk_bytes=config.snapshot_chunk_bytes,
                                      stall_ticks=2 * config.heartbeat_ticks)
        self._receiver = SnapshotReceiver(node_id, self._begin_incoming)
        self._accepted: IncomingSnapshot | None = None  # loop thread
        self._send_started: dict[str, tuple[int, float]] = {}  # loop: peer -> (index, start)
        self._receive_started = 0.0  # loop: when the incoming transfer began
        self._lock = threading.Lock()
        self._incoming: dict[tuple[int, int], IncomingSnapshot] = {}  # guarded by _lock
        self._jobs: deque[Job | None] = deque()  # guarded by _jobs_cond; None: stop
        self._jobs_cond = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- lifecycle (the thread that starts and stops the node) ----------------------------------

    def start(self) -> None:
        """Start the ``raft-<id>-snapshot`` thread."""
        self._thread = start_thread(f"raft-{self._id}-snapshot", self._writer)

    def stop(self, error: BaseException) -> None:
        """Join the snapshot thread; snapshot requests still queued fail with ``error``."""
        with self._jobs_cond:
            self._jobs.append(None)
            self._jobs_cond.notify()
        join_thread(self._thread)
        while self._jobs:
            job = self._jobs.popleft()
            if job is not None and job[2] is not None:
                settle(job[2], error=error)

    def abort_incoming(self) -> None:
        """Once the loop and storage threads are joined (graceful stop): delete the incoming
        snapshots not committed (the one being received; one installed but never written).  A
        crash leaves them, as a power cut would: the file store deletes them when it opens."""
        self._receiver.abort()
        accepted, self._accepted = self._accepted, None
        with self._lock:
            leftovers = list(self._incoming.values())
            self._incoming.clear()
        for incoming in [accepted, *leftovers]:
            if incoming is not None:
                incoming.abort()

    # -- local snapshots -------------------------------------------------------------------------

    def taken(self, meta: SnapshotMeta, data: bytes, future: Future | None) -> None:
        """The owner of the state machine took a consistent snapshot: queue it for the snapshot
        thread (the applier's ``on_snapshot``)."""
        with self._jobs_cond:
            self._jobs.append((meta, data, future))
            self._jobs_cond.notify()

    def _writer(self) -> None:
        """The ``raft-<id>-snapshot`` thread: encode and store snapshots off the hot path."""
        while True:
            with self._jobs_cond:
                while not self._jobs:
                    self._jobs_cond.wait()
                job = self._jobs.popleft()
            if job is None:
                return
            meta, data, future = job
            try:
                encoded = encode_snapshot(meta, data)
                with self._lock:
                    self._store.save(meta, data)
            except Exception as exc:
                logger.error("%s: writing snapshot %d failed: %s", self._id, meta.index, exc)
                if future is not None:
                    settle(future, error=exc if isinstance(exc, StorageError)
                           else StorageError(str(exc)))
                self._on_failed()
            else:
                logger.info("%s: snapshot %d/%d saved (%d bytes)", self._id, meta.term,
                            meta.index, len(encoded))
                self._on_saved(meta, encoded, future)

    def saved(self, raw: RawNode, meta: SnapshotMeta, encoded: bytes,
              future: Future | None) -> int | None:
        """Loop thread: a local snapshot is durable; keep it for followers and compact.
        Returns the index the log was compacted to, or None when the snapshot is not newer
        than the one kept (nothing compacted)."""
        latest = self._latest
        compacted = None
        if latest is None or meta.index > latest[0].index:
            self._latest = (meta, encoded)
            # Keep the log back to the previous snapshot too: if the newest snapshot file is
            # ever found corrupt, the older one plus the log still rebuild the state.
            previous = latest[0].index if latest is not None else 0
            trailing = self._config.snapshot_trailing_entries
            compacted = min(previous, max(0, meta.index - trailing))
            raw.compact(meta, compacted)
        if future is not None:
            settle(future, meta.index)
        return compacted

    # -- InstallSnapshot (loop thread) ------------------------------------------------------------

    def send(self, raw: RawNode, messages: list[Message]) -> None:
        """The core asked to send the latest snapshot to these followers."""
        latest = self._latest
        for m in messages:
            if latest is None or latest[0].index != m.index:
                logger.warning("%s: no encoded snapshot %d to send to %s", self._id, m.index,
                               m.dst)
                raw.report_snapshot(m.dst, ok=False)
                continue
            self._sender.start(m.dst, m.term, latest[0], latest[1])
            self._send_started[m.dst] = (latest[0].index, clock())

    def tick(self, raw: RawNode) -> None:
        """Once per tick: resume stalled transfers, give up on dead ones."""
        for peer in self._sender.tick():
            raw.report_snapshot(peer, ok=False)
            self._count_sent(peer, False)

    def _count_sent(self, peer: str, ok: bool) -> None:
        """Loop thread: a transfer to ``peer`` ended."""
        started = self._send_started.pop(peer, None)
        telemetry = self.telemetry
        if telemetry is None or started is None:
            return
        index, at = started
        seconds = clock() - at
        if ok:
            telemetry.snapshots_sent += 1
            telemetry.snapshot_send.observe(seconds)
        else:
            telemetry.snapshots_send_failed += 1
        telemetry.events.emit(SnapshotSent(self._id, peer, index, ok, seconds))

    def leadership_lost(self) -> None:
        """Forget every outgoing transfer."""
        self._sender.cancel_all()

    def on_message(self, raw: RawNode, m: Message) -> None:
        """A SNAPSHOT_CHUNK or SNAPSHOT_CHUNK_RESPONSE from a peer (the chunk sub-protocol)."""
        if m.kind is _SNAPSHOT_CHUNK_RESPONSE:
            finished = self._sender.on_response(m)
            if finished is not None:
                raw.report_snapshot(finished[0], ok=finished[1])
                self._count_sent(finished[0], finished[1])
            return
        if m.term < raw.term:
            return  # a deposed leader's transfer
        response, done = self._receiver.on_chunk(m)
        self._send([response])
        if done is None:
            return
        meta, incoming = done
        telemetry = self.telemetry
        if telemetry is not None:
            seconds = clock() - self._receive_started
            telemetry.snapshots_received += 1
            telemetry.snapshot_receive.observe(seconds)
            telemetry.events.emit(SnapshotReceived(self._id, m.src, meta.index, meta.term,
                                                   seconds))
        before = raw.snapshot
        raw.step(Message(kind=_SNAPSHOT, src=m.src, dst=self._id, term=m.term,
                         index=meta.index, log_term=meta.term, data=meta.membership.encode()))
        if raw.snapshot is before:
            # Not installed: the log had committed past it meanwhile (the core answered the
            # leader from the log).  Nothing will ask for this one.
            incoming.abort()
            return
        if self._accepted is not None:
            # Installed over by this one before the core handed the earlier one out: the next
            # Ready carries only the newest.
            self._accepted.abort()
        self._accepted = incoming

    def read_installed(self, meta: SnapshotMeta) -> bytes:
        """The core handed out the snapshot it installed: read it back from its temporary file
        (returns the state machine's data; the encoded bytes are kept, as this node sends them
        if it leads) and leave the file for the log writer to commit.

        Raises:
            RaftError: the installed snapshot is not the one received (a bug).
            StorageError / CorruptLogError: the temporary file cannot be read back.
        """
        incoming, self._accepted = self._accepted, None
        if incoming is None or (incoming.index, incoming.term) != (meta.index, meta.term):
            raise RaftError(f"{self._id}: installed snapshot {meta.index}/{meta.term} does not "
                            f"match the one received ({incoming!r})")
        encoded, data = incoming.read()
        with self._lock:
            self._incoming[(meta.index, meta.term)] = incoming
        self._latest = (meta, encoded)
        return data

    def commit_received(self, meta: SnapshotMeta) -> None:
        """The log writer: make a snapshot received from the leader durable (its temporary file
        flushed and renamed into place)."""
        with self._lock:
            incoming = self._incoming.pop((meta.index, meta.term))
            self._store.commit_incoming(incoming)
        telemetry = self.telemetry
        if telemetry is not None:
            telemetry.snapshots_installed += 1
            telemetry.events.emit(SnapshotInstalled(self._id, meta.index, meta.term))

    def _begin_incoming(self, index: int, term: int, total: int) -> IncomingSnapshot:
        """The receiver's ``begin``: a new temporary place in the snapshot store."""
        self._receive_started = clock()
        with self._lock:
            return self._store.begin_incoming(index, term, total)
