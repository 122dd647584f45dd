"""InstallSnapshot as a runtime sub-protocol: streaming a snapshot to a follower in chunks.

The core only decides that a follower needs a snapshot (it emits a SNAPSHOT message, which the
runtime intercepts) and installs one that has fully arrived (the runtime steps a SNAPSHOT message
back into it).  In between, the bytes of the encoded snapshot (``engine.storage.snapshot``
format, with its own checksum) travel as SNAPSHOT_CHUNK messages:

* flow control: at most ``window`` chunks of ``chunk_bytes`` are unacknowledged at once; each
  SNAPSHOT_CHUNK_RESPONSE says which offset the follower wants next (cumulative acks);
* resumable: a lost chunk shows up as repeated responses asking for the same earlier offset
  (two duplicate acks trigger a resend from there, like TCP's fast retransmit) or as silence
  (after ``stall_ticks`` ticks without progress the sender resumes from the last acknowledged
  offset);
* bounded: after ``max_stalls`` silent periods in a row the transfer is abandoned and the core is
  told (``report_snapshot(ok=False)``); it will ask again later;
* written as it arrives: the receiver appends each chunk to an incoming snapshot of the node's
  snapshot store (``store.begin_incoming``: a temporary file in the snapshot directory, a
  bytearray for a memory store; see :mod:`engine.storage.snapshot`), never to a buffer of its
  own;
* verified: when the last byte is in, the receiver has the incoming snapshot check itself
  (``finish()``: length, header, the whole snapshot's checksum, the announced index and term)
  before the core sees it, and rejects a corrupt one (it is deleted; the sender then gives up
  on that transfer).  A local write error also rejects the transfer (the leader tries again
  later).

Both classes are owned by the node's loop thread.  A verified incoming snapshot is handed to the
node, which installs it and has its log-writing thread commit it (``store.commit_incoming``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from engine.core import Message, MessageKind
from engine.errors import StorageError
from engine.storage.base import IncomingSnapshot
from engine.types import NodeId, SnapshotMeta

logger = logging.getLogger(__name__)

SNAPSHOT_CHUNK = MessageKind.SNAPSHOT_CHUNK
SNAPSHOT_CHUNK_RESPONSE = MessageKind.SNAPSHOT_CHUNK_RESPONSE

SendFn = Callable[[list[Message]], None]
BeginFn = Callable[[int, int, int], IncomingSnapshot]
"""``begin(index, term, total)``: a new incoming snapshot (``SnapshotStore.begin_incoming``)."""


@dataclass(slots=True)
class _Transfer:
    peer: NodeId
    term: int
    meta: SnapshotMeta
    encoded: bytes
    acked: int = 0
    sent: int = 0
    idle_ticks: int = 0
    stalls: int = 0
    duplicate_acks: int = 0


class SnapshotSender:
    """Leader side: one transfer per follower at a time."""

    def __init__(self, node_id: NodeId, send: SendFn, *, chunk_bytes: int, window: int = 8,
                 stall_ticks: int = 10, max_stalls: int = 20) -> None:
        self._id = node_id
        self._send = send
        self._chunk_bytes = chunk_bytes
        self._window = window
        self._stall_ticks = stall_ticks
        self._max_stalls = max_stalls
        self._transfers: dict[NodeId, _Transfer] = {}

    def __len__(self) -> int:
        return len(self._transfers)

    def start(self, peer: NodeId, term: int, meta: SnapshotMeta, encoded: bytes) -> None:
        """Begin (or restart) sending ``encoded`` (the snapshot ``meta``) to ``peer``."""
        transfer = _Transfer(peer, term, meta, encoded)
        self._transfers[peer] = transfer
        self._pump(transfer)

    def cancel_all(self) -> None:
        """Forget every transfer (leadership was lost)."""
        self._transfers.clear()

    def on_response(self, m: Message) -> tuple[NodeId, bool] | None:
        """Handle a SNAPSHOT_CHUNK_RESPONSE; returns (peer, ok) when a transfer ends."""
        transfer = self._transfers.get(m.src)
        if (transfer is None or m.index != transfer.meta.index
                or m.log_term != transfer.meta.term):
            return None
        if m.reject:
            del self._transfers[m.src]
            logger.warning("%s: %s rejected snapshot %d", self._id, m.src, m.index)
            return (m.src, False)
        total = len(transfer.encoded)
        if m.context > transfer.acked:
            transfer.acked = min(m.context, total)
            # A restarted transfer learns here how much the receiver already has: skip that.
            transfer.sent = max(transfer.sent, transfer.acked)
            transfer.idle_ticks = transfer.stalls = transfer.duplicate_acks = 0
        elif transfer.sent > transfer.acked:
            # The receiver asks again for an offset it asked for before while later chunks
            # are out: one was lost (or overtaken).  As TCP's fast retransmit: after two such
            # duplicate acks, go back to the gap once.
            transfer.duplicate_acks += 1
            if transfer.duplicate_acks == 2:
                transfer.sent = transfer.acked
        if transfer.acked >= total:
            del self._transfers[m.src]
            return (m.src, True)
        self._pump(transfer)
        return None

    def tick(self) -> list[NodeId]:
        """Advance time; resend stalled transfers.  Returns the peers given up on."""
        abandoned: list[NodeId] = []
        for peer, transfer in list(self._transfers.items()):
            transfer.idle_ticks += 1
            if transfer.idle_ticks < self._stall_ticks:
                continue
            transfer.idle_ticks = transfer.duplicate_acks = 0
            transfer.stalls += 1
            if transfer.stalls > self._max_stalls:
                del self._transfers[peer]
                abandoned.append(peer)
                continue
            transfer.sent = transfer.acked
            self._pump(transfer)
        return abandoned

    def _pump(self, transfer: _Transfer) -> None:
        total = len(transfer.encoded)
        limit = transfer.acked + self._window * self._chunk_bytes
        out: list[Message] = []
        while transfer.sent < total and transfer.sent < limit:
            offset = transfer.sent
            chunk = transfer.encoded[offset:offset + self._chunk_bytes]
            out.append(Message(kind=SNAPSHOT_CHUNK, src=self._id, dst=transfer.peer,
                               term=transfer.term, index=transfer.meta.index,
                               log_term=transfer.meta.term, context=offset, commit=total,
                               data=chunk))
            transfer.sent = offset + len(chunk)
        if out:
            self._send(out)


@dataclass(slots=True)
class _Incoming:
    src: NodeId
    index: int
    log_term: int
    total: int
    snapshot: IncomingSnapshot


class SnapshotReceiver:
    """Follower side: writes one snapshot at a time, through an incoming snapshot of the store
    that ``begin`` makes (``begin(index, term, total)``), and has it verified.

    A chunk of another transfer (another sender, index, term or size) starts a new one when it
    is the first chunk (offset 0), aborting (deleting) the incoming snapshot in progress; other
    chunks of another transfer are answered with offset 0, and leave the one in progress alone
    (a late chunk of an old transfer does not wipe the current one).  A repeated chunk of the
    current transfer -- offset 0 included: a leader restarting the same transfer -- is answered
    with the offset wanted next, so the sender resumes from there.
    """

    def __init__(self, node_id: NodeId, begin: BeginFn) -> None:
        self._id = node_id
        self._begin = begin
        self._incoming: _Incoming | None = None

    @property
    def in_progress(self) -> IncomingSnapshot | None:
        """The incoming snapshot being written, if any."""
        return self._incoming.snapshot if self._incoming is not None else None

    def abort(self) -> None:
        """Abort (delete) the incoming snapshot being written, if any (the node stops)."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming.snapshot.abort()

    def on_chunk(self, m: Message) -> tuple[Message, tuple[SnapshotMeta, IncomingSnapshot] | None]:
        """Take one chunk; returns the response to send and, when the snapshot is complete and
        verified, (its meta, the finished incoming snapshot).  The caller then owns that: it
        reads, commits or aborts it."""
        incoming = self._incoming
        reject = False
        if (incoming is None or incoming.src != m.src or incoming.index != m.index
                or incoming.log_term != m.log_term or incoming.total != m.commit):
            incoming = None
            if m.context == 0:
                self.abort()
                try:
                    snapshot = self._begin(m.index, m.log_term, m.commit)
                except (StorageError, ValueError) as exc:
                    logger.error("%s: cannot receive snapshot %d from %s: %s", self._id, m.index,
                                 m.src, exc)
                    reject = True
                else:
                    incoming = self._incoming = _Incoming(m.src, m.index, m.log_term, m.commit,
                                                          snapshot)
        if incoming is not None and m.context == incoming.snapshot.received:
            try:
                incoming.snapshot.write(m.data)
            except StorageError as exc:
                logger.error("%s: writing snapshot %d from %s failed: %s", self._id, m.index,
                             m.src, exc)
                self.abort()
                incoming, reject = None, True
        received = 0 if incoming is None else incoming.snapshot.received
        done: tuple[SnapshotMeta, IncomingSnapshot] | None = None
        if incoming is not None and received >= incoming.total:
            self._incoming = None
            try:
                meta = incoming.snapshot.finish()  # deletes it when that fails
            except StorageError as exc:
                logger.warning("%s: snapshot %d from %s is rejected: %s", self._id, m.index,
                               m.src, exc)
                reject = True
            else:
                done = (meta, incoming.snapshot)
        response = Message(kind=SNAPSHOT_CHUNK_RESPONSE, src=self._id, dst=m.src, term=m.term,
                           index=m.index, log_term=m.log_term, context=received, reject=reject)
        return response, done
