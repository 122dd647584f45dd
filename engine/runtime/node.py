"""RaftNode: the threads that drive one Raft core.

Threads (all named, all joined by ``stop()``):

``raft-<id>-loop``
    Owns the :class:`~engine.core.RawNode`, the pending-read table and the tick clock.  Every other
    thread talks to it by putting events on ``self._inbox`` (a queue.SimpleQueue): messages from
    the transport, proposals, reads, persistence notices.  It drains everything queued, steps it
    all into the core, proposes all pending commands as one batch, ticks, and hands the Ready out.
``raft-<id>-storage``
    Only with ``Config.storage_thread``: the
    :class:`~engine.runtime.persister.Persister` (group commit); by default the loop thread
    writes inline.
``raft-<id>-apply``
    The :class:`~engine.runtime.applier.Applier`: owns the state machine.
transport threads
    Deliver inbound messages by putting them on the inbox.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from engine.config import Config
from engine.core import Message, MessageKind, PeerProgress, RaftOptions, RawNode, Ready
from engine.errors import (
    ConfigError,
    CorruptLogError,
    MembershipChangeInProgress,
    MembershipError,
    NodeStopped,
    NotLeaderError,
    Overloaded,
    ProposalDropped,
    RaftError,
    ReadTimeout,
    TransferError,
)
from engine.membership import Membership
from engine.runtime.applier import Applier, ReadWaiter
from engine.runtime.membership import MembershipChange
from engine.runtime.persister import Persister
from engine.runtime.proposals import ProposalRegistry, new_future, settle
from engine.runtime.snapshots import SnapshotReceiver, SnapshotSender
from engine.runtime.workers import join_thread, start_thread
from engine.statemachine import StateMachine
from engine.status import Status
from engine.storage.base import IncomingSnapshot, LogStore, StableStore
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.storage.snapshot import MemorySnapshotStore, SnapshotStore, encode_snapshot
from engine.transport.base import Transport
from engine.types import SnapshotMeta

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Inbox event tags (messages go on the inbox as bare Message objects, the common case).
_PROPOSE = 1
_READ = 2
_PERSISTED = 3
_STOP = 4
_CALL = 5
_SNAPSHOT_SAVED = 6

_SNAPSHOT = MessageKind.SNAPSHOT
_SNAPSHOT_CHUNK = MessageKind.SNAPSHOT_CHUNK
_SNAPSHOT_CHUNK_RESPONSE = MessageKind.SNAPSHOT_CHUNK_RESPONSE

_MAX_EVENTS_PER_ROUND = 10_000


def _failed(error: BaseException) -> Future:
    future = new_future()
    future.set_exception(error)
    return future


class RaftNode:
    """One member of a Raft cluster, replicating ``state_machine``.

    Use ``start()``/``stop()`` or ``with RaftNode(...) as node:``.  All public methods are
    thread-safe.
    """

    def __init__(self, node_id: str, peers: Mapping[str, str], state_machine: StateMachine, *,
                 config: Config | None = None, data_dir: str | None = None,
                 transport: Transport | None = None, log_store: LogStore | None = None,
                 stable_store: StableStore | None = None,
                 snapshot_store: SnapshotStore | None = None, seed: int | None = None,
                 join: bool = False) -> None:
        """Create a stopped node.

        Args:
            node_id: this node's id; must be a key of ``peers``.
            peers: every member's id -> "host:port", this node included.  Unless ``join``,
                they are also the bootstrap configuration (all voters) that is in force until
                the log or a snapshot holds a configuration.
            state_machine: the user's object (see :class:`~engine.statemachine.StateMachine`).
            config: tunables; ``Config()`` when None.
            data_dir: directory for the durable log and hard state (native store); None keeps
                them in memory (they die with the process).
            transport: how messages travel; None = a TCP transport listening on
                ``peers[node_id]``.
            log_store / stable_store / snapshot_store: explicit stores (tests and
                LocalCluster); override ``data_dir``.
            seed: seeds the election-timeout randomness (None: from os.urandom).
            join: this node is being added to a running cluster: it starts with no
                configuration (it never campaigns) and learns one from the leader's log or
                snapshot once the leader adds it (``add_learner`` / ``change_membership``).
                ``peers`` then only needs its own address and those of the current members.
                Pass it again when restarting such a node before it received anything.

        Raises:
            ConfigError: bad ids, peers or config.
            CorruptLogError: the durable log is corrupt in its committed prefix.
        """
        if not isinstance(node_id, str) or not node_id:
            raise ConfigError(f"node_id={node_id!r} must be a non-empty string")
        if node_id not in peers:
            raise ConfigError(f"node_id={node_id!r} must be one of peers={sorted(peers)!r}")
        self._config = config if config is not None else Config()
        if not isinstance(self._config, Config):
            raise ConfigError(f"config={config!r} must be an engine.Config")
        self._id = node_id
        self._peers = dict(peers)
        self._state_machine = state_machine
        self._data_dir = data_dir
        self._transport_arg = transport
        self._log_store_arg = log_store
        self._stable_store_arg = stable_store
        self._snapshot_store_arg = snapshot_store
        self._seed = seed
        self._join = bool(join)
        self._lifecycle_lock = threading.Lock()
        self._started = False
        self._stopped = False
        self._stop_error: BaseException | None = None
        self._observers: list[Callable[[], None]] = []
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Set by _halt() once the loop thread is gone, just before the final drain of the inbox;
        # from then on a client event put on the inbox is failed by the thread that put it.
        self._inbox_closed = False
        self._registry = ProposalRegistry()
        # One mark per proposal put on the inbox and not yet taken by the loop thread, for
        # back-pressure: user threads append, the loop thread pops (both atomic on a deque).
        self._queued_proposals: collections.deque[None] = collections.deque()
        self._status = Status(node_id, "follower", 0, None, 0, 0, 0, running=False)
        # Owned by the loop thread:
        self._raw: RawNode | None = None
        self._pending_reads: dict[int, tuple[float, list[ReadWaiter]]] = {}
        self._read_ids = itertools.count(1)
        self._role = "follower"
        # Created by start():
        self._transport: Transport | None = None
        self._log_store: LogStore | None = None
        self._stable_store: StableStore | None = None
        self._owns_stores = False
        self._persister: Persister | None = None
        self._applier: Applier | None = None
        self._loop_thread: threading.Thread | None = None
        self._halt_thread: threading.Thread | None = None  # set when a node thread fails
        # Owned by the loop thread: the leader's per-peer progress as of the last tick.
        self._progress: dict[str, PeerProgress] = {}
        # Snapshots.  The store is shared by the snapshot thread (save: local snapshots), the
        # loop thread (begin_incoming: a snapshot arriving from the leader), the log writer (the
        # Persister, inline or on its thread: commit_incoming) and start()/stop(): all store
        # calls hold the lock, as does every access to _incoming_snapshots.  A snapshot
        # received from the leader goes to a temporary file of the store (IncomingSnapshot),
        # owned by the loop thread while it is written, verified (the receiver), installed
        # (_accepted_snapshot, until the core hands it out in a Ready) and read back (_drive);
        # then it waits in _incoming_snapshots, keyed by (index, term), for the log writer to
        # commit it.  None of these hold its bytes.
        self._snapshot_store: SnapshotStore | None = None
        self._snapshot_lock = threading.Lock()
        self._incoming_snapshots: dict[tuple[int, int], IncomingSnapshot] = {}
        self._accepted_snapshot: IncomingSnapshot | None = None  # owned by the loop thread
        self._snapshot_jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._snapshot_thread: threading.Thread | None = None
        # Owned by the loop thread: the newest durable snapshot (meta, encoded bytes), which is
        # what followers that fell behind the log are sent; and the chunk protocol endpoints.
        self._latest_snapshot: tuple[SnapshotMeta, bytes] | None = None
        self._snapshot_sender: SnapshotSender | None = None
        self._snapshot_receiver = SnapshotReceiver(node_id, self._begin_incoming_snapshot)
        # Owned by the loop thread: the pending leadership transfer (target, future), the
        # membership change in progress, and the address book last given to the transport.
        self._transfer: tuple[str, Future] | None = None
        self._change: MembershipChange | None = None
        self._address_book: dict[str, str] = dict(peers)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """This node's id."""
        return self._id

    @property
    def state_machine(self) -> StateMachine:
        """The user's state machine (touch it only from read() functions while running)."""
        return self._state_machine

    def __enter__(self) -> RaftNode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_observer(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from a node thread) whenever role, leader or term changes and
        after each applied batch.  It must be quick and must not block."""
        self._observers.append(callback)

    def start(self) -> None:
        """Open storage, replay the log into a fresh state machine, start the threads.

        Raises:
            RaftError: already started or stopped; storage errors (CorruptLogError).
        """
        with self._lifecycle_lock:
            if self._started or self._stopped:
                state = "started" if self._started else "stopped"
                raise RaftError(f"node {self._id} was already {state}")
            self._started = True
            self._open_stores()
            assert self._log_store is not None and self._stable_store is not None
            hard_state = self._stable_store.load()
            snapshot, entries = self._recover_log()
            first, last = self._log_store.first_index(), self._log_store.last_index()
            rng = random.Random(self._seed)
            bootstrap = Membership() if self._join else Membership.bootstrap(self._peers)
            self._raw = RawNode(self._id, bootstrap, rng=rng,
                                options=RaftOptions.from_config(self._config),
                                hard_state=hard_state, entries=entries,
                                snapshot=snapshot)
            self._applier = Applier(
                self._id, self._state_machine, self._registry,
                on_progress=self._notify_observers,
                applied=snapshot.index if snapshot else 0,
                applied_term=snapshot.term if snapshot else 0,
                membership=snapshot.membership
                if snapshot is not None and not snapshot.membership.is_empty else bootstrap,
                snapshot_threshold=self._config.snapshot_threshold,
                on_snapshot=self._on_snapshot_taken)
            self._transport = self._transport_arg or self._default_transport()
            self._update_address_book(self._raw.membership)
            self._snapshot_sender = SnapshotSender(
                self._id, self._transport.send, chunk_bytes=self._config.snapshot_chunk_bytes,
                stall_ticks=2 * self._config.heartbeat_ticks)
            self._persister = Persister(
                self._id, self._log_store, self._stable_store,
                threaded=self._config.storage_thread,
                send=self._transport.send, on_persisted=self._on_persisted,
                on_error=self._on_storage_error, install_snapshot=self._store_received_snapshot)
            self._publish_status()
            self._applier.start()
            self._snapshot_thread = start_thread(f"raft-{self._id}-snapshot",
                                                 self._snapshot_writer)
            self._loop_thread = start_thread(f"raft-{self._id}-loop", self._loop)
            self._transport.start(self._inbox.put)
            logger.info("%s started: term=%d log=[%d, %d] commit=%d", self._id,
                        hard_state.term, first, last, hard_state.commit)

    def _open_stores(self) -> None:
        if (self._log_store_arg is not None or self._stable_store_arg is not None
                or self._snapshot_store_arg is not None):
            self._log_store = self._log_store_arg or MemoryLogStore()
            self._stable_store = self._stable_store_arg or MemoryStableStore()
            self._snapshot_store = self._snapshot_store_arg or MemorySnapshotStore()
        elif self._data_dir is not None:
            from engine.storage.open import open_snapshot_store, open_stores
            self._log_store, self._stable_store = open_stores(self._data_dir,
                                                              fsync=self._config.fsync)
            self._snapshot_store = open_snapshot_store(self._data_dir, fsync=self._config.fsync)
            self._owns_stores = True
        else:
            self._log_store, self._stable_store = MemoryLogStore(), MemoryStableStore()
            self._snapshot_store = MemorySnapshotStore()

    def _recover_log(self) -> tuple[SnapshotMeta | None, list[Any]]:
        """Restore the state machine from the newest valid snapshot and return it with the log
        entries that follow it (the ones to replay).

        Raises:
            CorruptLogError: the log has a gap after the snapshot.
        """
        assert self._log_store is not None and self._snapshot_store is not None
        store = self._log_store
        with self._snapshot_lock:
            latest = self._snapshot_store.latest()
        first, last = store.first_index(), store.last_index()
        if latest is None:
            if first != 1 and last >= first:
                raise CorruptLogError(f"{self._id}: the log starts at {first} but there is no "
                                      "snapshot covering the entries before it")
            return None, store.entries(first, last + 1) if last >= first else []
        meta, data = latest
        self._state_machine.restore(data)
        self._latest_snapshot = (meta, encode_snapshot(meta, data))
        if first <= meta.index <= last and store.term_at(meta.index) != meta.term:
            logger.warning("%s: log disagrees with snapshot %d/%d; discarding the log",
                           self._id, meta.term, meta.index)
            store.reset(meta.index + 1)
            store.sync()
        elif first > meta.index + 1:
            raise CorruptLogError(f"{self._id}: the log starts at {first}, after the newest "
                                  f"valid snapshot at {meta.index}: entries are missing")
        elif last < meta.index:
            store.reset(meta.index + 1)
            store.sync()
        lo, hi = max(store.first_index(), meta.index + 1), store.last_index() + 1
        logger.info("%s: restored snapshot %d/%d, replaying %d entries", self._id, meta.term,
                    meta.index, max(0, hi - lo))
        return meta, store.entries(lo, hi) if hi > lo else []

    def _default_transport(self) -> Transport:
        from engine.transport.tcp import TcpTransport
        return TcpTransport(self._id, self._peers)

    def stop(self) -> None:
        """Stop gracefully: write what is queued, join every thread, close transport and files.

        Pending futures fail with NodeStopped.  Idempotent.
        """
        self._halt(graceful=True)
        join_thread(self._halt_thread)

    def crash(self) -> None:
        """Stop abruptly, as a power cut would: queued writes are lost, nothing is flushed.
        What earlier writes made durable survives.  For tests and fault benchmarks."""
        self._halt(graceful=False)
        join_thread(self._halt_thread)

    def _halt(self, *, graceful: bool, error: BaseException | None = None) -> None:
        with self._lifecycle_lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop_error = error
        if not self._started:
            return
        self._inbox.put((_STOP,))
        if self._transport is not None:
            self._transport.close()
        join_thread(self._loop_thread)
        if self._persister is not None:
            self._persister.stop(flush=graceful and error is None)
        if self._applier is not None:
            self._applier.stop()
        self._snapshot_jobs.put(None)
        join_thread(self._snapshot_thread)
        stopped = error or NodeStopped(f"node {self._id} stopped")
        self._fail_snapshot_jobs(stopped)
        self._registry.fail_after(-1, stopped)
        self._fail_reads(stopped)
        if self._transfer is not None:
            settle(self._transfer[1], error=stopped)
            self._transfer = None
        if self._change is not None:
            self._change.fail(stopped)
            self._change = None
        self._inbox_closed = True
        self._fail_inbox(stopped)
        if graceful:
            self._abort_incoming_snapshots()
        if self._owns_stores:
            for store in (self._log_store, self._stable_store, self._snapshot_store):
                if store is not None:
                    store.close()
        self._status = Status(self._id, "follower", self._status.term, None,
                              self._status.commit_index, self.last_applied,
                              self._status.last_log_index, running=False)
        self._notify_observers()
        logger.info("%s stopped (%s)", self._id, "graceful" if graceful else "crash")

    def _post(self, event: tuple[Any, ...]) -> None:
        """Put a client event (propose, read, call) on the inbox.

        A client that passed the "running?" check may still lose the race with ``_halt()``: its
        event could land after the final drain and never be settled.  Whoever sees the inbox
        closed after putting drains it again (lock-free: both sides put/set first, then read).
        """
        self._inbox.put(event)
        if self._inbox_closed:
            self._fail_inbox(self._stop_error or NodeStopped(f"node {self._id} stopped"))

    def _fail_inbox(self, error: BaseException) -> None:
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, tuple) and event[0] in (_PROPOSE, _READ, _CALL):
                settle(event[-1], error=error)
            elif isinstance(event, tuple) and event[0] == _SNAPSHOT_SAVED and event[3]:
                settle(event[3], error=error)

    def _on_storage_error(self, error: BaseException) -> None:
        """A node thread hit a fatal error: stop the node from a thread of its own (the failing
        thread cannot join itself); stop() and crash() join that thread too."""
        thread = threading.Thread(target=self._halt, kwargs={"graceful": False, "error": error},
                                  name=f"raft-{self._id}-halt", daemon=True)
        self._halt_thread = thread
        thread.start()

    # -- public operations ---------------------------------------------------------------------

    def propose(self, command: bytes) -> Future:
        """Replicate ``command``; the future resolves to what ``apply()`` returned on this node.

        The future (a :class:`~engine.runtime.proposals.ProposalFuture`) is handed out RUNNING:
        a proposal cannot be withdrawn, so ``cancel()`` returns False and the entry may still
        commit.  To stop waiting, use a timeout (``result(timeout)``, ``asyncio.wait_for``).

        Raises (through the future):
            NotLeaderError: at once, when this node is not the leader.
            Overloaded: at once, when ``config.max_pending_proposals`` proposals are already
                waiting to commit (nothing is proposed).
            ProposalDropped: leadership was lost before the entry committed.
            NodeStopped: the node stopped first.
            TypeError: at once, when ``command`` is not bytes.
        """
        if type(command) is not bytes:  # the common case skips the isinstance() and the copy
            if not isinstance(command, bytes | bytearray | memoryview):
                raise TypeError(f"command must be bytes, not {type(command).__name__}")
            command = bytes(command)
        return self._submit_to_leader(_PROPOSE, command)

    def read(self, fn: Callable[[Any], T]) -> Future:
        """Run ``fn(state_machine)`` at a linearizable point (ReadIndex) and resolve to its result.

        No log entry is written: the leader confirms it still leads with a heartbeat round, then
        ``fn`` runs on the apply thread once everything committed before the read is applied.
        As with :meth:`propose`, the future is handed out RUNNING: ``cancel()`` returns False.

        Raises (through the future):
            NotLeaderError: this node is not (or stopped being) the leader.
            ReadTimeout: leadership was not confirmed within ``config.read_timeout``.
            NodeStopped: the node stopped first.
        """
        return self._submit_to_leader(_READ, fn)

    def _submit_to_leader(self, tag: int, payload: object) -> Future:
        """Queue a leader-only request for the loop thread, or fail it at once when this node
        is stopped or (as far as its last published status says) not the leader."""
        if not self._started or self._stopped:
            return _failed(self._stop_error or NodeStopped(f"node {self._id} is not running"))
        status = self._status
        if status.role != "leader":
            return _failed(NotLeaderError(status.leader_id))
        if tag == _PROPOSE:
            pending = self._registry.approximate_len() + len(self._queued_proposals)
            if pending >= self._config.max_pending_proposals:
                return _failed(Overloaded(
                    f"{pending} proposals are waiting to commit on {self._id} "
                    f"(max_pending_proposals={self._config.max_pending_proposals})"))
        future = new_future(running=True)  # in flight: cancel() returns False
        if tag == _PROPOSE:
            self._queued_proposals.append(None)
        self._post((tag, payload, future))
        return future

    async def propose_async(self, command: bytes) -> object:
        """``await node.propose_async(cmd)``: :meth:`propose` for asyncio code."""
        return await asyncio.wrap_future(self.propose(command))

    async def read_async(self, fn: Callable[[Any], T]) -> T:
        """``await node.read_async(fn)``: :meth:`read` for asyncio code."""
        return await asyncio.wrap_future(self.read(fn))

    def status(self) -> Status:
        """A snapshot of this node (never blocks); ``last_applied`` is read live."""
        status = self._status
        if status.running and self._applier is not None:
            applied = self._applier.last_applied
            if applied != status.last_applied:
                return dataclasses.replace(status, last_applied=applied)
        return status

    def campaign(self) -> Future:
        """Start an election now (tests, tools).  Resolves once the core has been told."""
        return self._call(lambda raw: raw.campaign())

    def peer_progress(self, timeout: float = 5.0) -> dict[str, Any]:
        """The leader's view of each peer (match, next, state, inflight); {} on a follower.

        Raises:
            NodeStopped: the node is not running.
            TimeoutError: the loop thread did not answer in ``timeout`` seconds.
        """
        return self._call(lambda raw: raw.status().progress).result(timeout)

    def snapshot(self) -> Future:
        """Take a snapshot now; resolves to its index once it is durable (and the log has been
        compacted behind it).  Works on any running node.

        Raises (through the future):
            NodeStopped: the node is not running or stopped first.
            StorageError: the snapshot could not be written.
        """
        if not self._started or self._stopped or self._applier is None:
            return _failed(self._stop_error or NodeStopped(f"node {self._id} is not running"))
        future: Future = Future()
        self._applier.request_snapshot(future)
        return future

    def transfer_leadership(self, target_id: str) -> Future:
        """Hand leadership to ``target_id``; resolves to it once it leads.

        The leader stops accepting proposals (they fail with ProposalDropped), brings the target
        up to date, and tells it to campaign at once.

        Raises (through the future):
            NotLeaderError: this node is not the leader.
            ValueError: ``target_id`` is not another member.
            TransferError: the target did not take over within an election timeout (this
                node then accepts proposals again) or another node took over.
            NodeStopped: the node stopped first.
        """
        def start(raw: RawNode) -> None:
            raw.transfer_leadership(target_id)
            if self._transfer is not None:
                settle(self._transfer[1], error=TransferError(
                    f"superseded by a transfer to {target_id}"))
            self._transfer = (target_id, future)

        future: Future = Future()
        return self._start_on_loop(start, future)

    def _start_on_loop(self, start: Callable[[RawNode], None], future: Future) -> Future:
        """Run ``start(raw)`` on the loop thread to begin a long operation that settles
        ``future`` later; an exception from ``start`` (or a stopped node) fails it at once."""
        def on_started(done: Future) -> None:
            error = done.exception()
            if error is not None:
                settle(future, error=error)

        self._call(start).add_done_callback(on_started)
        return future

    # -- membership ------------------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The configuration in force on this node (as of its last loop round)."""
        membership = self._status.membership
        return membership if membership is not None else Membership()

    def change_membership(self, voters: Iterable[str], learners: Iterable[str] | None = None,
                          *, addresses: Mapping[str, str] | None = None) -> Future:
        """Move the cluster to ``voters`` and ``learners`` by joint consensus; the future
        resolves to the new :class:`~engine.membership.Membership` once C_new is committed.

        Voters that are not members yet are first added as learners and made voters only once
        they have caught up with the leader's log (``Config.catchup_timeout``), so a new empty
        node never stalls commits.  ``learners`` None keeps the current learners (minus those
        that become voters).  ``addresses`` gives "host:port" of new members; the address book
        travels with the configuration.  A removed leader steps down once C_new commits (the
        most up-to-date voter takes over at once).

        Raises (through the future):
            NotLeaderError: this node is not the leader.
            MembershipError: another change is in progress, the configuration is invalid or
                already in force, or new voters did not catch up in time (they stay learners).
            ProposalDropped: leadership was lost before the change completed (a new leader
                may still complete it: check ``membership``).
            NodeStopped: the node stopped first.
            ConfigError: an address the transport cannot use (nothing is proposed).
            TypeError / ValueError: at once, for ids that are not non-empty strings.
        """
        voter_set = _id_set(voters, "voters")
        learner_set = None if learners is None else _id_set(learners, "learners")

        def target(current: Membership) -> tuple[frozenset[str], frozenset[str]]:
            if learner_set is None:
                return voter_set, frozenset(current.learners) - voter_set
            return voter_set, learner_set
        return self._begin_change(target, addresses)

    def add_learner(self, node_id: str, address: str | None = None) -> Future:
        """Add ``node_id`` as a non-voting member that receives the log (start it with
        ``join=True``); resolves to the new Membership once the change is committed.  See
        :meth:`change_membership` for the errors."""
        _id_set([node_id], "node_id")

        def target(current: Membership) -> tuple[frozenset[str], frozenset[str]]:
            if node_id in current.members():
                raise MembershipError(f"{node_id} is already a member ({current.describe()})")
            return frozenset(current.voters), frozenset(current.learners) | {node_id}
        return self._begin_change(target, {node_id: address} if address else None)

    def promote(self, node_id: str) -> Future:
        """Make the learner ``node_id`` a voter once it has caught up (joint consensus);
        resolves to the new Membership.  See :meth:`change_membership` for the errors."""
        def target(current: Membership) -> tuple[frozenset[str], frozenset[str]]:
            if node_id not in current.learners:
                raise MembershipError(f"{node_id} is not a learner ({current.describe()})")
            return frozenset(current.voters) | {node_id}, frozenset(current.learners) - {node_id}
        return self._begin_change(target, None)

    def remove_member(self, node_id: str) -> Future:
        """Remove ``node_id`` (voter or learner) from the cluster; resolves to the new
        Membership once committed.  Removing the leader itself works: it steps down after.
        See :meth:`change_membership` for the errors."""
        def target(current: Membership) -> tuple[frozenset[str], frozenset[str]]:
            if node_id not in current.members():
                raise MembershipError(f"{node_id} is not a member ({current.describe()})")
            return (frozenset(current.voters) - {node_id},
                    frozenset(current.learners) - {node_id})
        return self._begin_change(target, None)

    def _begin_change(self, target: Callable[[Membership], tuple[frozenset[str], frozenset[str]]],
                      addresses: Mapping[str, str] | None) -> Future:
        future: Future = Future()

        def start(raw: RawNode) -> None:
            if self._change is not None:
                raise MembershipChangeInProgress("a membership change is in progress "
                                      f"({self._change.stage.value} stage)")
            if raw.raft.role.value != "leader":
                raise NotLeaderError(raw.raft.leader_id)
            current = raw.membership
            if addresses:
                check = getattr(self._transport, "check_peers", None)
                if check is not None:
                    check(dict(addresses))  # ConfigError: nothing is proposed
            voters, learners = target(current)
            if voters == frozenset(current.voters) and learners == frozenset(current.learners):
                raise MembershipError(f"{current.describe()} is already the configuration")
            change = MembershipChange(voters, learners, addresses or {}, future,
                                      catchup_timeout=self._config.catchup_timeout)
            self._change = change
            change.start(raw)
            if change.done:
                self._change = None
        return self._start_on_loop(start, future)

    def _advance_change(self, raw: RawNode) -> None:
        """Loop thread: move the membership change in progress along."""
        change = self._change
        assert change is not None
        change.advance(raw, time.monotonic())
        if change.done:
            self._change = None

    def _update_address_book(self, membership: Membership) -> None:
        """Loop thread: give the transport every address known (constructor peers, then the
        configuration's address book, which wins)."""
        book = dict(self._peers)
        book.update(membership.addresses)
        if book != self._address_book:
            self._address_book = book
            update = getattr(self._transport, "update_peers", None)
            if update is not None:
                try:
                    update(book)
                except ConfigError as exc:  # checked before proposing; only a foreign entry
                    logger.error("%s: cannot use the configuration's address book: %s",
                                 self._id, exc)

    @property
    def last_applied(self) -> int:
        """Index of the last entry applied to the state machine."""
        return self._applier.last_applied if self._applier is not None else 0

    def wait_applied(self, index: int, timeout: float | None = None) -> bool:
        """Block until ``last_applied >= index`` (False on timeout, when not started, or once the
        node has stopped short of ``index``)."""
        if self._applier is None:
            return False
        return self._applier.wait_applied(index, timeout)

    def _call(self, fn: Callable[[RawNode], Any]) -> Future:
        if not self._started or self._stopped:
            return _failed(NodeStopped(f"node {self._id} is not running"))
        future: Future = Future()
        self._post((_CALL, fn, future))
        return future

    # -- snapshots -------------------------------------------------------------------------------

    def _on_snapshot_taken(self, meta: SnapshotMeta, data: bytes, future: Future | None) -> None:
        """Apply thread: a consistent snapshot was taken; write it on the snapshot thread."""
        self._snapshot_jobs.put((meta, data, future))

    def _snapshot_writer(self) -> None:
        """The ``raft-<id>-snapshot`` thread: encode and store snapshots off the hot path."""
        assert self._snapshot_store is not None and self._applier is not None
        while True:
            job = self._snapshot_jobs.get()
            if job is None:
                return
            meta, data, future = job
            try:
                encoded = encode_snapshot(meta, data)
                with self._snapshot_lock:
                    self._snapshot_store.save(meta, data)
            except Exception as exc:
                logger.error("%s: writing snapshot %d failed: %s", self._id, meta.index, exc)
                if future is not None:
                    settle(future, error=exc)
            else:
                logger.info("%s: snapshot %d/%d saved (%d bytes)", self._id, meta.term,
                            meta.index, len(encoded))
                self._inbox.put((_SNAPSHOT_SAVED, meta, encoded, future))
            finally:
                self._applier.snapshot_saved()

    def _fail_snapshot_jobs(self, error: BaseException) -> None:
        while True:
            try:
                job = self._snapshot_jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[2] is not None:
                settle(job[2], error=error)

    def _begin_incoming_snapshot(self, index: int, term: int, total: int) -> IncomingSnapshot:
        """Loop thread (the receiver's ``begin``): a new temporary place in the snapshot store
        for a snapshot the leader starts sending."""
        assert self._snapshot_store is not None
        with self._snapshot_lock:
            return self._snapshot_store.begin_incoming(index, term, total)

    def _store_received_snapshot(self, meta: SnapshotMeta) -> None:
        """Storage thread: make a snapshot received from the leader durable (its temporary file
        flushed and renamed into place)."""
        assert self._snapshot_store is not None
        with self._snapshot_lock:
            incoming = self._incoming_snapshots.pop((meta.index, meta.term))
            self._snapshot_store.commit_incoming(incoming)

    def _abort_incoming_snapshots(self) -> None:
        """stop(), once the loop and storage threads are joined: delete the incoming snapshots
        not committed (the one being received; one installed but never written).  A crash
        leaves them, as a power cut would: the file store deletes them when it opens."""
        self._snapshot_receiver.abort()
        accepted, self._accepted_snapshot = self._accepted_snapshot, None
        with self._snapshot_lock:
            leftovers = list(self._incoming_snapshots.values())
            self._incoming_snapshots.clear()
        for incoming in [accepted, *leftovers]:
            if incoming is not None:
                incoming.abort()

    def _handle_snapshot_message(self, raw: RawNode, m: Message) -> None:
        """Loop thread: the chunk sub-protocol of InstallSnapshot (engine.runtime.snapshots)."""
        assert self._transport is not None and self._snapshot_sender is not None
        if m.kind is _SNAPSHOT_CHUNK_RESPONSE:
            finished = self._snapshot_sender.on_response(m)
            if finished is not None:
                raw.report_snapshot(finished[0], ok=finished[1])
            return
        if m.term < raw.raft.term:
            return  # a deposed leader's transfer
        response, done = self._snapshot_receiver.on_chunk(m)
        self._transport.send([response])
        if done is None:
            return
        meta, incoming = done
        before = raw.raft.snapshot
        raw.step(Message(kind=_SNAPSHOT, src=m.src, dst=self._id, term=m.term,
                         index=meta.index, log_term=meta.term, data=meta.membership.encode()))
        if raw.raft.snapshot is before:
            # Not installed: the log had committed past it meanwhile (the core answered the
            # leader from the log).  Nothing will ask for this one.
            incoming.abort()
            return
        if self._accepted_snapshot is not None:
            # Installed over by this one before the core handed the earlier one out: the next
            # Ready carries only the newest.
            self._accepted_snapshot.abort()
        self._accepted_snapshot = incoming

    def _on_snapshot_saved(self, raw: RawNode, meta: SnapshotMeta, encoded: bytes,
                           future: Future | None) -> None:
        latest = self._latest_snapshot
        if latest is None or meta.index > latest[0].index:
            self._latest_snapshot = (meta, encoded)
            # Keep the log back to the previous snapshot too: if the newest snapshot file is
            # ever found corrupt, the older one plus the log still rebuild the state.
            previous = latest[0].index if latest is not None else 0
            compact_to = min(previous, max(0, meta.index - self._config.snapshot_trailing_entries))
            raw.compact(meta, compact_to)
        if future is not None:
            settle(future, meta.index)

    def _send_snapshots(self, raw: RawNode, messages: list[Message]) -> None:
        """Loop thread: the core asked to send the latest snapshot to these followers."""
        assert self._snapshot_sender is not None
        latest = self._latest_snapshot
        for m in messages:
            if latest is None or latest[0].index != m.index:
                logger.warning("%s: no encoded snapshot %d to send to %s", self._id, m.index,
                               m.dst)
                raw.report_snapshot(m.dst, ok=False)
                continue
            self._snapshot_sender.start(m.dst, m.term, latest[0], latest[1])

    # -- the loop thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        raw = self._raw
        assert raw is not None
        inbox = self._inbox
        tick_interval = self._config.tick_interval
        next_tick = time.monotonic() + tick_interval
        next_read_check = time.monotonic() + 0.1
        try:
            while True:
                timeout = next_tick - time.monotonic()
                try:
                    event = inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
                except queue.Empty:
                    event = None
                events = [] if event is None else [event]
                while len(events) < _MAX_EVENTS_PER_ROUND:
                    try:
                        events.append(inbox.get_nowait())
                    except queue.Empty:
                        break
                if self._handle_events(raw, events):
                    return
                now = time.monotonic()
                if now >= next_tick:
                    raw.tick()
                    self._refresh_progress(raw)
                    if self._transfer is not None:
                        self._check_transfer(raw)
                    if self._snapshot_sender:
                        for peer in self._snapshot_sender.tick():
                            raw.report_snapshot(peer, ok=False)
                    next_tick += tick_interval
                    if next_tick < now:  # fell far behind (a GC pause, say): do not burst
                        next_tick = now + tick_interval
                    if now >= next_read_check and self._pending_reads:
                        next_read_check = now + 0.1
                        self._expire_reads(now)
                self._drive(raw)
                if self._change is not None:
                    self._advance_change(raw)
                    self._drive(raw)
        except Exception as exc:
            logger.critical("%s: loop thread failed, stopping the node", self._id, exc_info=True)
            self._on_storage_error(exc)

    def _handle_events(self, raw: RawNode, events: list[Any]) -> bool:
        """Step every event into the core; returns True when asked to stop."""
        commands: list[bytes] = []
        futures: list[Future] = []
        reads: list[ReadWaiter] = []
        own_id = self._id
        for position, event in enumerate(events):
            if type(event) is Message:
                if event.dst != own_id:
                    continue
                if event.kind is _SNAPSHOT_CHUNK or event.kind is _SNAPSHOT_CHUNK_RESPONSE:
                    self._handle_snapshot_message(raw, event)
                elif event.kind is not _SNAPSHOT:  # SNAPSHOT is local-only, never from a peer
                    raw.step(event)
                continue
            tag = event[0]
            if tag == _PROPOSE:
                commands.append(event[1])
                futures.append(event[2])
                self._queued_proposals.pop()
            elif tag == _PERSISTED:
                for rd in event[1]:
                    raw.advance(rd)
            elif tag == _READ:
                reads.append((event[1], event[2]))
            elif tag == _SNAPSHOT_SAVED:
                self._on_snapshot_saved(raw, event[1], event[2], event[3])
            elif tag == _CALL:
                # Proposals queued before the call go into the core first (a transfer that
                # starts now must not refuse them).
                self._propose_batch(raw, commands, futures)
                commands, futures = [], []
                try:
                    settle(event[2], event[1](raw))
                except Exception as exc:
                    settle(event[2], error=exc)
            elif tag == _STOP:
                error = NodeStopped(f"node {own_id} stopped")
                for future in futures:
                    settle(future, error=error)
                for _, future in reads:
                    settle(future, error=error)
                for later in events[position + 1:]:  # client events queued behind the stop
                    if type(later) is not Message and later[0] in (_PROPOSE, _READ, _CALL):
                        settle(later[-1], error=error)
                return True
        self._propose_batch(raw, commands, futures)
        if reads:
            context = next(self._read_ids)
            try:
                raw.read_index(context)
            except NotLeaderError as exc:
                for _, future in reads:
                    settle(future, error=exc)
            else:
                self._pending_reads[context] = (time.monotonic() + self._config.read_timeout,
                                                reads)
        return False

    def _propose_batch(self, raw: RawNode, commands: list[bytes], futures: list[Future]) -> None:
        """Propose ``commands`` as one batch and register their futures."""
        if not commands:
            return
        try:
            first, term = raw.propose(commands)
        except (NotLeaderError, ProposalDropped) as exc:
            for future in futures:
                settle(future, error=exc)
        else:
            self._registry.register(first, term, futures)

    def _drive(self, raw: RawNode) -> None:
        """Hand out Readys until the core has nothing more to do."""
        persister = self._persister
        applier = self._applier
        transport = self._transport
        assert persister is not None and applier is not None and transport is not None
        changed = False
        while raw.has_ready():
            rd = raw.ready()
            if rd.soft_state is not None:
                changed = True
                self._on_soft_state(rd)
            if rd.membership is not None:
                changed = True
                self._update_address_book(rd.membership)
            messages = rd.messages
            if messages:
                if any(m.kind is _SNAPSHOT for m in messages):
                    self._send_snapshots(raw, [m for m in messages if m.kind is _SNAPSHOT])
                    messages = [m for m in messages if m.kind is not _SNAPSHOT]
                transport.send(messages)
            if rd.snapshot is not None:
                # A snapshot received from the leader was installed: read it back from its
                # temporary file (the state machine needs the data; the encoded bytes are what
                # this node sends if it leads), then let the log writer commit the file.
                meta = rd.snapshot
                incoming, self._accepted_snapshot = self._accepted_snapshot, None
                assert incoming is not None and (incoming.index, incoming.term) == (
                    meta.index, meta.term), (incoming, meta)
                encoded, data = incoming.read()
                with self._snapshot_lock:
                    self._incoming_snapshots[(meta.index, meta.term)] = incoming
                self._latest_snapshot = (meta, encoded)
                applier.submit_restore(meta, data)
            if rd.must_persist() or rd.messages_after_persist:
                persister.submit(rd)
            if rd.committed_entries:
                applier.submit_entries(rd.committed_entries)
            for read_state in rd.read_states:
                pending = self._pending_reads.pop(read_state.context, None)
                if pending is not None:
                    applier.submit_read(read_state.index, pending[1])
        self._publish_status()
        if changed:
            self._notify_observers()

    def _on_persisted(self, readys: list[Ready]) -> None:
        if self._persister is not None and threading.current_thread() is self._loop_thread:
            for rd in readys:
                assert self._raw is not None
                self._raw.advance(rd)
        else:
            self._inbox.put((_PERSISTED, readys))

    def _check_transfer(self, raw: RawNode) -> None:
        """Loop thread: settle the pending leadership transfer when its outcome is known."""
        assert self._transfer is not None
        target, future = self._transfer
        r = raw.raft
        if r.leader_id == target and r.role.value != "leader":
            self._transfer = None
            settle(future, target)
        elif r.role.value == "leader" and r.lead_transferee != target:
            self._transfer = None
            settle(future, error=TransferError(
                f"{target} did not take over within an election timeout"))
        elif r.role.value != "leader" and r.leader_id not in (None, target):
            self._transfer = None
            settle(future, error=TransferError(f"{r.leader_id} took over instead of {target}"))

    def _on_soft_state(self, rd: Ready) -> None:
        soft = rd.soft_state
        assert soft is not None
        if self._transfer is not None:
            assert self._raw is not None
            self._check_transfer(self._raw)
        was_leader = self._role == "leader"
        self._role = soft.role
        if was_leader and soft.role != "leader":
            assert self._raw is not None
            commit = self._raw.status().commit_index
            dropped = self._registry.fail_after(commit, ProposalDropped(
                f"{self._id} lost leadership at term {soft.term} before the entry committed"))
            self._fail_reads(NotLeaderError(soft.leader_id))
            if self._change is not None:
                self._change.leadership_lost(self._raw)
                self._change = None
            if self._snapshot_sender is not None:
                self._snapshot_sender.cancel_all()
            logger.info("%s lost leadership (term %d): %d proposals dropped", self._id,
                        soft.term, dropped)

    def _fail_reads(self, error: BaseException) -> None:
        pending, self._pending_reads = self._pending_reads, {}
        for _, waiters in pending.values():
            for _, future in waiters:
                settle(future, error=error)

    def _expire_reads(self, now: float) -> None:
        expired = [c for c, (deadline, _) in self._pending_reads.items() if deadline <= now]
        for context in expired:
            _, waiters = self._pending_reads.pop(context)
            for _, future in waiters:
                settle(future, error=ReadTimeout(
                    f"{self._id} could not confirm leadership within "
                    f"{self._config.read_timeout}s"))

    def _refresh_progress(self, raw: RawNode) -> None:
        """Once per tick, copy the leader's per-peer progress for status() (cheaper than on
        every loop round; at most one tick stale)."""
        raft = raw.raft
        if raft.role.value == "leader":
            self._progress = {peer: PeerProgress(pr.match, pr.next, pr.state.value,
                                                 len(pr.inflights), pr.recent_active)
                              for peer, pr in raft.progress.items()}
        elif self._progress:
            self._progress = {}

    def _publish_status(self) -> None:
        raw = self._raw
        assert raw is not None
        r = raw.raft
        role = r.role.value
        if role == "pre-candidate":
            role = "follower"
        self._status = Status(self._id, role, r.term, r.leader_id, r.log.committed,
                              self.last_applied, r.log.last_index(), running=True,
                              snapshot_index=r.snapshot.index if r.snapshot else 0,
                              log_entries=len(r.log), progress=self._progress,
                              membership=r.membership,
                              membership_committed=r.log.committed
                              >= r.memberships.current_index)

    def _notify_observers(self) -> None:
        for callback in self._observers:
            try:
                callback()
            except Exception:
                logger.exception("%s: observer failed", self._id)


def _id_set(ids: Iterable[str], what: str) -> frozenset[str]:
    """``ids`` as a frozenset of non-empty strings.

    Raises:
        TypeError: ``ids`` is a single string or holds a non-string.
        ValueError: an id is empty.
    """
    if isinstance(ids, str | bytes):
        raise TypeError(f"{what} must be a collection of node ids, not a single string")
    result = frozenset(ids)
    for node_id in result:
        if not isinstance(node_id, str):
            raise TypeError(f"{what}: node ids are strings, got {node_id!r}")
        if not node_id:
            raise ValueError(f"{what}: node ids must not be empty")
    return result
