"""NodeLoop: the running part of a RaftNode, one thread running one event loop.

The thread ``raft-<id>-loop`` runs an asyncio event loop (uvloop when importable) and owns,
alone: the :class:`~engine.core.RawNode`, the pending-read table, the leader's progress copy,
the leadership transfer and membership change in progress, the loop-side half of the snapshot
pipeline (:mod:`engine.runtime.snapshot_pipeline`), the TCP connections of the node (when the
transport runs on this loop: see ``Transport.start(handler, loop=...)``), the tick timer, the
log writer (:mod:`engine.runtime.persister`) and, by default, the state machine (the
:class:`~engine.runtime.applier.Applier` in inline mode).

Everything else reaches it through ``self._inbox``, a deque that any thread appends to
(messages from a transport, proposals, reads, calls, notices from the snapshot and storage
threads) followed by one wake-up (``_wake``): ``call_soon`` from the loop thread itself,
``call_soon_threadsafe`` from others, at most one pending at a time.  A wake-up runs one
*round* (:meth:`NodeLoop._round`): drain the inbox, step every message, propose every queued
command as one batch, then hand the Readys out (:meth:`NodeLoop._drive`): send ``messages`` at
once (the TCP transport writes them to the sockets before ``send`` returns on this thread, so
followers receive entries while the leader syncs), give entries and hard state to the log
writer (which writes them at once and runs the fdatasync on the native store's C thread, or
inline), send ``messages_after_persist`` once durable, apply committed entries for at most
``Config.apply_slice`` seconds (more slices follow in later loop iterations, between network
rounds and ticks), resolve the futures of what was applied.  Everything that arrives during one
fdatasync is written by the next group and shares the next fdatasync (group commit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from engine import events as ev
from engine.config import Config
from engine.core import Message, MessageKind, PeerProgress, RaftOptions, RawNode, Ready, Role
from engine.errors import (
    ConfigError,
    NodeStopped,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    ReadTimeout,
    TransferError,
)
from engine.eventloop import close_event_loop, new_event_loop
from engine.membership import Membership
from engine.runtime.applier import Applier, ReadWaiter
from engine.runtime.election_timer import ElectionTimer
from engine.runtime.membership import MembershipChange
from engine.runtime.persister import Persister, StoreReader
from engine.runtime.proposals import ProposalRegistry, settle
from engine.runtime.recovery import Recovered, Stores, close_stores
from engine.runtime.rtt import RttMonitor
from engine.runtime.snapshot_pipeline import SnapshotPipeline
from engine.runtime.telemetry import Telemetry, clock
from engine.runtime.workers import join_thread, start_thread
from engine.statemachine import StateMachine
from engine.status import Status
from engine.transport.base import Transport
from engine.types import SnapshotMeta

logger = logging.getLogger(__name__)

# Inbox event tags (messages go on the inbox as bare Message objects, the common case).
PROPOSE = 1  # (PROPOSE, command, future)
READ = 2  # (READ, fn, future)
PERSISTED = 3  # (PERSISTED, readys): the storage thread wrote them
STOP = 4  # (STOP,)
CALL = 5  # (CALL, fn(raw), future)
SNAPSHOT_SAVED = 6  # (SNAPSHOT_SAVED, meta, encoded, future): the snapshot thread wrote it
SNAPSHOT_FAILED = 7  # (SNAPSHOT_FAILED,): the snapshot thread could not write it
PROPOSE_MANY = 8  # (PROPOSE_MANY, commands, futures)
CLIENT_EVENTS = (PROPOSE, READ, CALL, PROPOSE_MANY)

_SNAPSHOT = MessageKind.SNAPSHOT
_SNAPSHOT_CHUNK = MessageKind.SNAPSHOT_CHUNK
_SNAPSHOT_CHUNK_RESPONSE = MessageKind.SNAPSHOT_CHUNK_RESPONSE
_HEARTBEAT_RESPONSE = MessageKind.HEARTBEAT_RESPONSE
# What Status.role reports for each core role (a pre-candidate has not started a new term).
_STATUS_ROLE = {Role.FOLLOWER: "follower", Role.PRE_CANDIDATE: "follower",
                Role.CANDIDATE: "candidate", Role.LEADER: "leader"}

_MAX_EVENTS_PER_ROUND = 10_000
_READ_CHECK_INTERVAL = 0.1  # seconds between scans for expired reads
# A transfer whose outcome is still unknown this many maximal election timeouts after it began
# fails with TransferError (the core aborts by itself after one election timeout, but only
# while this node still leads).
_TRANSFER_TIMEOUT_ELECTIONS = 4


def start_transport(transport: Transport, handler: Callable[[Message], None],
                    loop: asyncio.AbstractEventLoop) -> None:
    """``transport.start(handler, loop=loop)``; a transport written before the ``loop`` argument
    existed is started with ``start(handler)`` (it then runs threads of its own)."""
    try:
        transport.start(handler, loop=loop)
    except TypeError as exc:
        if "loop" not in str(exc):
            raise
        transport.start(handler)


class NodeLoop:
    """One running node: built by ``RaftNode.start()`` in one step, discarded at stop.

    Thread-safe entry points: :meth:`post`, :meth:`halt`, :attr:`status`, the applier's
    ``last_applied``/``wait_applied``, a copy of :attr:`last_heard` (written by the loop thread
    only).  Everything else runs on the loop thread.
    """

    def __init__(self, node_id: str, peers: Mapping[str, str], config: Config,
                 state_machine: StateMachine, stores: Stores, recovered: Recovered,
                 transport: Transport, *, seed: int | None, join: bool,
                 registry: ProposalRegistry, notify: Callable[[], None],
                 telemetry: Telemetry | None = None) -> None:
        import random
        self.id = node_id
        self.config = config
        # Counters and histograms: see the thread-safety rule in engine.runtime.telemetry.
        self.telemetry = telemetry if telemetry is not None else Telemetry(
            node_id, config.latency_sample_every)
        self._peers = dict(peers)
        self.aloop = new_event_loop()  # run by the loop thread; other threads only post to it
        self._stores = stores
        self.transport = transport
        self.registry = registry
        self._notify = notify
        snapshot = recovered.snapshot
        bootstrap = Membership() if join else Membership.bootstrap(self._peers)
        # Owned by the loop thread (built here, before it starts).  The core reads entries
        # dropped from its cache (Config.entry_cache_bytes) back through the persister.
        log_reader = StoreReader()
        self.raw = RawNode(node_id, bootstrap, rng=random.Random(seed),
                           options=RaftOptions.from_config(config),
                           hard_state=recovered.hard_state, entries=recovered.entries,
                           snapshot=snapshot, log_reader=log_reader)
        self.applier = Applier(
            node_id, state_machine, registry, threaded=config.apply_thread,
            on_progress=notify,
            applied=snapshot.index if snapshot else 0,
            applied_term=snapshot.term if snapshot else 0,
            membership=snapshot.membership
            if snapshot is not None and not snapshot.membership.is_empty else bootstrap,
            snapshot_threshold=config.snapshot_threshold,
            on_snapshot=self._on_snapshot_taken)
        self._pending_reads: dict[int, tuple[float, list[ReadWaiter]]] = {}
        # When each Ready handed to the persister and not yet reported durable was handed over
        # (monotonic seconds, oldest first): how the loop sees a stalled disk.
        self._unpersisted_since: collections.deque[float] = collections.deque()
        self._read_ids = itertools.count(1)
        self._role = Role.FOLLOWER
        self._progress: dict[str, PeerProgress] = {}  # the leader's, as of the last tick
        # When a message from each peer was last stepped (monotonic seconds); status tools
        # read it as "last contact" (RaftNode.last_contact).
        self.last_heard: dict[str, float] = {}
        # The pending leadership transfer: (target, future, monotonic deadline).
        self._transfer: tuple[str, Future, float] | None = None
        self.change: MembershipChange | None = None
        self._address_book: dict[str, str] = dict(peers)
        self.snapshots = SnapshotPipeline(
            node_id, config, stores.snapshots, send=transport.send,
            on_saved=lambda meta, encoded, future: self.post(
                (SNAPSHOT_SAVED, meta, encoded, future)),
            on_failed=lambda: self.post((SNAPSHOT_FAILED,)),
            latest=(snapshot, recovered.encoded_snapshot)
            if snapshot is not None and recovered.encoded_snapshot is not None else None)
        self._halted = False  # set on the loop thread by STOP or a fatal error
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        # The election timeout at its drawn (sub-tick) resolution, and the leader's heartbeat
        # round trips (a warning when they approach the election timeout).
        self._election_timer = ElectionTimer(self.aloop, config.tick_interval,
                                             config.subticks_per_tick, self._on_election_timeout)
        self.rtt = RttMonitor(node_id, election_timeout_min=config.election_timeout_min,
                              election_timeout_max=config.election_timeout_max,
                              check_quorum=config.check_quorum)
        self._next_read_check = 0.0
        self._apply_scheduled = False
        self.persister = Persister(
            node_id, stores.log, stores.stable, threaded=config.storage_thread,
            send=transport.send, on_persisted=self._on_persisted,
            on_error=self._fatal, install_snapshot=self.snapshots.commit_received,
            loop=self.aloop)
        log_reader.persister = self.persister
        self.persister.telemetry = self.applier.telemetry = self.telemetry
        self.snapshots.telemetry = self.telemetry
        self._snapshot_started: dict[int, float] = {}  # local snapshot index -> taken at
        self._recovering = 0  # raw.recovering as last published (for the events)
        self._soft_leader: str | None = None  # the leader as of the last soft state
        self._soft_term = 0
        self._leader_since = 0.0  # monotonic time this node last became leader
        self._driving = False  # loop thread: inside _drive (a persisted group is stepped
        # back in by the drive in progress; otherwise it starts one)
        # Shared: any thread appends to the inbox, then calls _wake(); the loop thread pops.
        # _wake_pending is cleared by the loop BEFORE it drains, so nothing is left behind.
        self._inbox: deque[Any] = deque()
        self._wake_pending = False
        # One mark per proposal put on the inbox and not yet taken by the loop thread, for
        # back-pressure: user threads append, the loop thread pops (both atomic on a deque).
        self.queued_proposals: deque[None] = deque()
        # Set by halt() once the loop thread is gone, just before the final drain of the inbox;
        # from then on a client event put on the inbox is failed by the thread that put it.
        self._inbox_closed = False
        self._stop_error: BaseException | None = None
        self._halt_lock = threading.Lock()
        self._halting = False  # guarded by _halt_lock
        self._halt_thread: threading.Thread | None = None  # set when a node thread fails
        self.status = Status(node_id, "follower", 0, None, 0, 0, 0, running=False)
        self._thread: threading.Thread | None = None
        self._thread_ident = 0

    # -- start and stop (the thread that calls RaftNode.start / stop) ---------------------------

    def start(self) -> None:
        """Start the loop, snapshot (and apply, storage) threads and the transport.

        Raises:
            OSError / RaftError: the transport could not start (everything is stopped again).
        """
        running = threading.Event()
        self.aloop.call_soon(running.set)
        self._thread = start_thread(f"raft-{self.id}-loop", self._run)
        running.wait()
        self._publish_status()
        self.applier.start()
        self.snapshots.start()
        self._update_address_book(self.raw.membership)
        try:
            start_transport(self.transport, self._on_message, self.aloop)
        except BaseException as exc:
            self.halt(graceful=False, error=exc, close_transport=False)
            raise
        self.aloop.call_soon_threadsafe(self._begin)

    def _run(self) -> None:
        """Body of the ``raft-<id>-loop`` thread."""
        self._thread_ident = threading.get_ident()
        loop = self.aloop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            close_event_loop(loop)

    def _begin(self) -> None:
        """Loop thread, once the transport runs: arm the tick timer and run a first round."""
        now = self.aloop.time()
        self._next_tick = now + self.config.tick_interval
        self._next_read_check = time.monotonic() + _READ_CHECK_INTERVAL
        self._tick_handle = self.aloop.call_at(self._next_tick, self._on_tick)
        try:
            self.persister.start()
        except BaseException as exc:
            self._loop_failed(exc)
            return
        self._round()

    def halt(self, *, graceful: bool, error: BaseException | None = None,
             close_transport: bool = True) -> None:
        """Stop everything (any thread but the loop's; idempotent): the loop takes no more
        events, the transport closes, the threads are joined, every future still pending fails
        with ``error`` or NodeStopped, and the stores are closed.  ``graceful`` writes what is
        queued first; otherwise (a crash) queued writes are lost, as on a power cut."""
        with self._halt_lock:
            if self._halting:
                return
            self._halting = True
        self._stop_error = error
        stopped = error or NodeStopped(f"node {self.id} stopped")
        self.post((STOP,))
        if close_transport:
            try:
                self.transport.close()
            except Exception:
                logger.exception("%s: closing the transport failed", self.id)
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already closed
                self.aloop.call_soon_threadsafe(self.aloop.stop)
        join_thread(self._thread)
        self.persister.stop(flush=graceful and error is None)
        self.applier.stop(error)
        self.snapshots.stop(stopped)
        self.registry.fail_after(-1, stopped)
        self._fail_reads(stopped)
        if self._transfer is not None:
            settle(self._transfer[1], error=stopped)
            self._transfer = None
        if self.change is not None:
            self.change.fail(stopped)
            self.change = None
        self._inbox_closed = True
        self._fail_inbox(stopped)
        if graceful:
            self.snapshots.abort_incoming()
        close_stores(self._stores)
        status = self.status
        self.status = Status(self.id, "follower", status.term, None, status.commit_index,
                             self.applier.last_applied, status.last_log_index, running=False)
        logger.info("%s stopped (%s)", self.id, "graceful" if graceful else "crash")

    def join_halt_thread(self) -> None:
        """Wait for a halt started by a failing node thread (see :meth:`_fatal`)."""
        join_thread(self._halt_thread)

    def on_loop_thread(self) -> bool:
        """True when called from the loop thread."""
        return threading.get_ident() == self._thread_ident

    def _fatal(self, error: BaseException) -> None:
        """A node thread hit a fatal error: stop taking events, and stop the node from a thread
        of its own (the failing thread cannot join itself)."""
        if self.on_loop_thread():
            self._halted = True
        thread = threading.Thread(target=self.halt, kwargs={"graceful": False, "error": error},
                                  name=f"raft-{self.id}-halt", daemon=True)
        self._halt_thread = thread
        thread.start()

    # -- reaching the loop (any thread) ---------------------------------------------------------

    def post(self, event: tuple[Any, ...]) -> None:
        """Put an event on the inbox and wake the loop.

        A client that passed the "running?" check may still lose the race with ``halt()``: its
        event could land after the final drain and never be settled.  Whoever sees the inbox
        closed after putting drains it again (lock-free: both sides put/set first, then read).
        """
        self._inbox.append(event)
        if self._inbox_closed:
            self._fail_inbox(self._stop_error or NodeStopped(f"node {self.id} stopped"))
            return
        self._wake()

    def _on_message(self, message: Message) -> None:
        """The transport's handler: any thread (the loop thread for TCP on this loop)."""
        self._inbox.append(message)
        self._wake()

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            if threading.get_ident() == self._thread_ident:
                self.aloop.call_soon(self._round)
            else:
                self.aloop.call_soon_threadsafe(self._round)
        except RuntimeError:  # the loop is closed: the node is stopping; halt() fails events
            pass

    def _fail_inbox(self, error: BaseException) -> None:
        inbox = self._inbox
        while True:
            try:
                event = inbox.popleft()
            except IndexError:
                return
            if type(event) is tuple and event[0] in CLIENT_EVENTS:
                future = event[-1]
                for f in future if isinstance(future, list) else [future]:
                    settle(f, error=error)
            elif type(event) is tuple and event[0] == SNAPSHOT_SAVED and event[3]:
                settle(event[3], error=error)

    # -- the loop thread ------------------------------------------------------------------------

    def _round(self) -> None:
        """One wake-up: step everything queued, then hand the Readys out."""
        self._wake_pending = False  # before draining: see the inbox's comment
        if self._halted:
            return
        telemetry = self.telemetry
        started = clock() if telemetry.timing else 0.0
        try:
            inbox = self._inbox
            count = min(len(inbox), _MAX_EVENTS_PER_ROUND)
            events = [inbox.popleft() for _ in range(count)]
            self.raw.set_clock_phase(self._election_timer.phase())
            if self._handle_events(self.raw, events):
                self._halted = True
                if self._tick_handle is not None:
                    self._tick_handle.cancel()
                self.persister.close()
                return
            self._drive(self.raw)
            if self.change is not None:
                self._advance_change(self.raw)
                self._drive(self.raw)
            if inbox:
                self._wake()
        except BaseException as exc:  # a store, or user code run by the loop
            self._loop_failed(exc)
        if started:
            telemetry.loop_busy_seconds += clock() - started
        telemetry.loop_rounds += 1

    def _loop_failed(self, exc: BaseException) -> None:
        logger.critical("%s: the loop failed, stopping the node", self.id, exc_info=exc)
        self._halted = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        error = exc if isinstance(exc, RaftError) else RaftError(
            f"node {self.id} stopped: {type(exc).__name__}: {exc}")
        error.__cause__ = exc if error is not exc else None
        self._fatal(error)

    def _on_tick(self) -> None:
        if self._halted:
            return
        loop = self.aloop
        interval = self.config.tick_interval
        self._next_tick += interval
        now = loop.time()
        if self._next_tick < now:  # fell far behind (a GC pause, say): do not burst
            self._next_tick = now + interval
        self._tick_handle = loop.call_at(self._next_tick, self._on_tick)
        telemetry = self.telemetry
        started = clock() if telemetry.timing else 0.0
        try:
            raw = self.raw
            if self._unpersisted_since and self._disk_stalled(time.monotonic()):
                if not raw.disk_stalled:
                    telemetry.disk_stalls += 1
                    telemetry.events.emit(ev.DiskStallStarted(self.id))
                raw.set_disk_stalled(True)
            raw.tick()
            if raw.role is Role.LEADER and raw.heartbeat_elapsed == 0:
                self.rtt.broadcast(raw.peers, time.monotonic())
            self._refresh_progress(raw)
            if self._progress or telemetry.unreachable:
                self._check_reachability()
            if self._transfer is not None:
                self._check_transfer(raw)
            self.snapshots.tick(raw)
            wall = time.monotonic()
            if wall >= self._next_read_check:
                self._next_read_check = wall + _READ_CHECK_INTERVAL
                if self._pending_reads:
                    self._expire_reads(wall)
            self._drive(raw)
            if self.change is not None:
                self._advance_change(raw)
                self._drive(raw)
            self._election_timer.ticked(raw)
        except BaseException as exc:
            self._loop_failed(exc)
        if started:
            telemetry.loop_busy_seconds += clock() - started

    def _on_election_timeout(self, phase: int) -> None:
        """The sub-tick election deadline armed at the last tick passed (see ElectionTimer)."""
        if self._halted:
            return
        try:
            raw = self.raw
            raw.expire_election(phase)
            self._drive(raw)
        except BaseException as exc:
            self._loop_failed(exc)

    def _check_reachability(self) -> None:
        """Once per tick on the leader: a peer silent for longer than the maximal election
        timeout is reported unreachable (once), and reachable again when it is heard from."""
        telemetry = self.telemetry
        unreachable = telemetry.unreachable
        limit = self.config.election_timeout_max
        now = time.monotonic()
        heard = self.last_heard
        if not self._progress:  # no longer leading: forget
            unreachable.clear()
            return
        for peer in self._progress:
            if peer == self.id:
                continue
            # Never heard from since this node started: count from when it became leader.
            silent = now - heard.get(peer, self._leader_since)
            if silent > limit and peer not in unreachable:
                unreachable.add(peer)
                telemetry.events.emit(ev.PeerUnreachable(self.id, peer, silent))
            elif silent <= limit and peer in unreachable:
                unreachable.discard(peer)
                telemetry.events.emit(ev.PeerReachable(self.id, peer))

    def _handle_events(self, raw: RawNode, events: list[Any]) -> bool:
        """Step every event into the core; returns True when asked to stop."""
        commands: list[bytes] = []
        futures: list[Any] = []
        reads: list[ReadWaiter] = []
        own_id = self.id
        queued = self.queued_proposals
        heard, now = self.last_heard, time.monotonic()
        received = self.telemetry.received
        for position, event in enumerate(events):
            if type(event) is Message:
                if event.dst != own_id:
                    continue
                heard[event.src] = now
                kind = event.kind
                received[kind] = received.get(kind, 0) + 1
                if kind is _HEARTBEAT_RESPONSE:
                    self.rtt.response(event.src, now)
                if event.kind is _SNAPSHOT_CHUNK or event.kind is _SNAPSHOT_CHUNK_RESPONSE:
                    self.snapshots.on_message(raw, event)
                elif event.kind is not _SNAPSHOT:  # SNAPSHOT is local-only, never from a peer
                    raw.step(event)
                continue
            tag = event[0]
            if tag == PROPOSE:
                commands.append(event[1])
                futures.append(event[2])
                queued.pop()
            elif tag == PROPOSE_MANY:
                commands.extend(event[1])
                futures.extend(event[2])
                for _ in event[2]:
                    queued.pop()
            elif tag == PERSISTED:
                self._advance_persisted(event[1])
            elif tag == READ:
                reads.append((event[1], event[2]))
            elif tag == SNAPSHOT_SAVED:
                self._snapshot_saved(event[1],
                                     self.snapshots.saved(raw, event[1], event[2], event[3]))
                self.applier.snapshot_saved()
            elif tag == SNAPSHOT_FAILED:
                self.applier.snapshot_saved()
            elif tag == CALL:
                # Proposals queued before the call go into the core first (a transfer that
                # starts now must not refuse them).
                self._propose_batch(raw, commands, futures)
                commands, futures = [], []
                try:
                    settle(event[2], event[1](raw))
                except Exception as exc:
                    settle(event[2], error=exc)
            elif tag == STOP:
                error = NodeStopped(f"node {own_id} stopped")
                for future in futures:
                    settle(future, error=error)
                for _, future in reads:
                    settle(future, error=error)
                self._inbox.extendleft(reversed(events[position + 1:]))
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
                self._pending_reads[context] = (time.monotonic() + self.config.read_timeout,
                                                reads)
        return False

    def _propose_batch(self, raw: RawNode, commands: list[bytes], futures: list[Any]) -> None:
        """Propose ``commands`` as one batch and register their futures."""
        if not commands:
            return
        try:
            first, term = raw.propose(commands)
        except (NotLeaderError, ProposalDropped) as exc:
            if isinstance(exc, NotLeaderError):
                self.telemetry.proposals_not_leader += len(futures)
            else:
                self.telemetry.proposals_dropped += len(futures)
            for future in futures:
                settle(future, error=exc)
        else:
            self.registry.register(first, term, futures)
            telemetry = self.telemetry
            if telemetry.sample is None and telemetry.sample_every:
                telemetry.maybe_sample(first)

    def _drive(self, raw: RawNode) -> None:
        """Hand out Readys until the core has nothing more to do, then apply a slice."""
        self._driving = True
        try:
            self._drive_readys(raw)
        finally:
            self._driving = False

    def _drive_readys(self, raw: RawNode) -> None:
        persister = self.persister
        applier = self.applier
        send = self.transport.send
        changed = False
        telemetry = self.telemetry
        while raw.has_ready() and not self._halted:
            sample = telemetry.sample
            if sample is not None and raw.commit_index >= sample.index:
                telemetry.stamp(3, raw.commit_index)
            rd = raw.ready()
            if rd.soft_state is not None:
                changed = True
                self._on_soft_state(rd)
                # Publish the new role BEFORE this Ready's messages leave: a node that hears
                # from us as leader (the old leader settling a transfer, a client that follows
                # a redirect) must find status().role == 'leader' here, or propose() would
                # fail with NotLeaderError while our own durable write is still running.
                self._publish_status()
            if rd.membership is not None:
                changed = True
                self._update_address_book(rd.membership)
                telemetry.events.emit(ev.MembershipChanged(self.id, rd.membership))
            messages = rd.messages
            if messages:
                if any(m.kind is _SNAPSHOT for m in messages):
                    self.snapshots.send(raw, [m for m in messages if m.kind is _SNAPSHOT])
                    messages = [m for m in messages if m.kind is not _SNAPSHOT]
                send(messages)
            if rd.snapshot is not None:
                applier.submit_restore(rd.snapshot, self.snapshots.read_installed(rd.snapshot))
            if rd.must_persist() or rd.messages_after_persist:
                self._unpersisted_since.append(time.monotonic())
                persister.submit(rd)
            if rd.committed_entries:
                if telemetry.sample is not None:
                    telemetry.stamp(4, rd.committed_entries[-1].index)
                applier.submit_entries(rd.committed_entries)
            for read_state in rd.read_states:
                pending = self._pending_reads.pop(read_state.context, None)
                if pending is not None:
                    applier.submit_read(read_state.index, pending[1])
        # Publish before applying: a future resolved by this apply slice must never meet a
        # status() that shows an older commit index (last_applied is read live anyway).
        self._publish_status()
        if applier.has_work and not self._apply_scheduled:
            self._apply_slice()
        if changed:
            self._notify()

    def _apply_slice(self) -> None:
        """Inline apply: one slice of ``Config.apply_slice`` seconds; the rest later."""
        self._apply_scheduled = False
        if self._halted:
            return
        try:
            if self.applier.run(self.config.apply_slice):
                self._apply_scheduled = True
                self.aloop.call_soon(self._apply_slice)
        except BaseException as exc:  # restore() or snapshot() of the user's machine failed
            self._loop_failed(exc)

    def _disk_stalled(self, now: float) -> bool:
        """True when the oldest write in progress has run past ``Config.disk_stall_timeout``."""
        timeout = self.config.disk_stall_timeout
        unpersisted = self._unpersisted_since
        return bool(timeout and unpersisted and now - unpersisted[0] > timeout)

    def _advance_persisted(self, readys: list[Ready]) -> None:
        """``readys`` are durable: advance the core past them (loop thread), and tell it its
        disk answers again if it was stalled."""
        unpersisted = self._unpersisted_since
        raw = self.raw
        telemetry = self.telemetry
        for rd in readys:
            if unpersisted:
                unpersisted.popleft()
            if telemetry.sample is not None and rd.entries:
                telemetry.stamp(2, rd.entries[-1].index)
            raw.advance(rd)
        if raw.disk_stalled and not self._disk_stalled(time.monotonic()):
            raw.set_disk_stalled(False)
            telemetry.events.emit(ev.DiskStallEnded(self.id))

    def _on_persisted(self, readys: list[Ready]) -> None:
        """The log writer made ``readys`` durable: step their self-acknowledgements back in
        (loop thread: at once, and drive the result unless a drive is in progress; the storage
        thread posts them)."""
        if not self.on_loop_thread():
            self.post((PERSISTED, readys))
            return
        self._advance_persisted(readys)
        if not self._driving and not self._halted:
            try:
                self._drive(self.raw)
            except BaseException as exc:
                self._loop_failed(exc)

    def _check_transfer(self, raw: RawNode) -> None:
        """Settle the pending leadership transfer when its outcome is known."""
        if self._transfer is None:
            return
        target, future, deadline = self._transfer
        leading = raw.role is Role.LEADER
        if raw.leader_id == target and not leading:
            # We heard from ``target`` as leader of our current term (>= the term the transfer
            # started in).  Its status() said 'leader' before that message left it (see
            # _drive_readys), so a propose() on it right after this future resolves is
            # accepted.
            self._transfer = None
            settle(future, target)
        elif leading and raw.lead_transferee != target:
            self._transfer = None
            settle(future, error=TransferError(
                f"{target} did not take over within an election timeout"))
        elif not leading and raw.leader_id not in (None, target):
            self._transfer = None
            settle(future, error=TransferError(
                f"{raw.leader_id} took over instead of {target}"))
        elif not leading and time.monotonic() >= deadline:
            # We stepped down (the target's election reached us) but nobody has been heard
            # from as leader since: the core's own abort only runs while we lead.
            self._transfer = None
            settle(future, error=TransferError(
                f"{target} was not heard from as leader within "
                f"{_TRANSFER_TIMEOUT_ELECTIONS * self.config.election_timeout_max:g}s "
                f"(term {raw.term}, leader unknown to {self.id})"))

    def start_transfer(self, raw: RawNode, target: str, future: Future) -> None:
        """Begin handing leadership to ``target`` (a CALL from RaftNode.transfer_leadership)."""
        raw.transfer_leadership(target)
        if self._transfer is not None:
            settle(self._transfer[1], error=TransferError(f"superseded by a transfer to {target}"))
        deadline = (time.monotonic()
                    + _TRANSFER_TIMEOUT_ELECTIONS * self.config.election_timeout_max)
        self._transfer = (target, future, deadline)

    def _on_soft_state(self, rd: Ready) -> None:
        soft = rd.soft_state
        assert soft is not None
        raw = self.raw
        self._check_transfer(raw)
        was_leader = self._role is Role.LEADER
        previous_role = self._role
        self._role = soft.role
        self._count_soft_state(previous_role, soft)
        if was_leader and soft.role is not Role.LEADER:
            commit = raw.commit_index
            dropped = self.registry.fail_after(commit, ProposalDropped(
                f"{self.id} lost leadership at term {soft.term} before the entry committed"))
            self.telemetry.proposals_dropped += dropped
            self.telemetry.abandon_sample()
            self._fail_reads(NotLeaderError(soft.leader_id))
            if self.change is not None:
                self.change.leadership_lost(raw)
                self.change = None
            self.snapshots.leadership_lost()
            logger.info("%s lost leadership (term %d): %d proposals dropped", self.id,
                        soft.term, dropped)

    def _count_soft_state(self, previous: Role, soft: Any) -> None:
        """Election and leadership counters and the LeaderChanged event (loop thread; from the
        core's soft-state transitions, so the core itself stays free of metrics)."""
        telemetry = self.telemetry
        role = soft.role
        if role is not previous:
            if role is Role.PRE_CANDIDATE:
                telemetry.pre_votes_started += 1
            elif role is Role.CANDIDATE:
                telemetry.elections_started += 1
            elif role is Role.LEADER:
                if previous is not Role.CANDIDATE:  # won without being seen as a candidate
                    telemetry.elections_started += 1
                telemetry.elections_won += 1
                self._leader_since = time.monotonic()
        elif role is Role.CANDIDATE and soft.term != self._soft_term:
            telemetry.elections_started += 1  # a new election after a split vote
        self._soft_term = soft.term
        if soft.leader_id != self._soft_leader:
            previous_leader, self._soft_leader = self._soft_leader, soft.leader_id
            if soft.leader_id is not None:
                telemetry.leader_changes += 1
            telemetry.events.emit(ev.LeaderChanged(self.id, soft.leader_id, soft.term,
                                                   previous_leader))

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
                    f"{self.id} could not confirm leadership within "
                    f"{self.config.read_timeout}s"))

    def _refresh_progress(self, raw: RawNode) -> None:
        """Once per tick, copy the leader's per-peer progress for status() (cheaper than on
        every round; at most one tick stale)."""
        if raw.role is Role.LEADER:
            self._progress = raw.progress()
        elif self._progress:
            self._progress = {}

    def _publish_status(self) -> None:
        raw = self.raw
        role = raw.role
        snapshot = raw.snapshot
        commit = raw.commit_index
        self.status = Status(self.id, _STATUS_ROLE[role], raw.term, raw.leader_id, commit,
                             self.applier.last_applied, raw.last_index, running=True,
                             snapshot_index=snapshot.index if snapshot else 0,
                             log_entries=raw.log_entries, progress=self._progress,
                             membership=raw.membership,
                             membership_committed=commit >= raw.membership_index,
                             recovering=raw.recovering, disk_stalled=raw.disk_stalled)
        if raw.recovering != self._recovering:
            self._recovering_changed(raw.recovering)

    def _recovering_changed(self, recovering: int) -> None:
        telemetry = self.telemetry
        if recovering and not self._recovering:
            telemetry.recovering_episodes += 1
            telemetry.events.emit(ev.RecoveringStarted(self.id, recovering))
        elif not recovering:
            telemetry.events.emit(ev.RecoveringFinished(self.id))
        self._recovering = recovering

    # -- membership -----------------------------------------------------------------------------

    def begin_change(self, raw: RawNode, change: MembershipChange) -> None:
        """Start ``change`` (a CALL from RaftNode._begin_change)."""
        self.change = change
        change.start(raw)
        if change.done:
            self.change = None

    def _advance_change(self, raw: RawNode) -> None:
        change = self.change
        assert change is not None
        change.advance(raw, time.monotonic())
        if change.done:
            self.change = None

    def _update_address_book(self, membership: Membership) -> None:
        """Give the transport every address known (constructor peers, then the
        configuration's address book, which wins)."""
        book = dict(self._peers)
        book.update(membership.addresses)
        if book != self._address_book:
            self._address_book = book
            try:
                self.transport.update_peers(book)
            except ConfigError as exc:  # checked before proposing; only a foreign entry
                logger.error("%s: cannot use the configuration's address book: %s",
                             self.id, exc)

    # -- snapshots ------------------------------------------------------------------------------

    def request_snapshot(self, future: Future) -> None:
        """Take a snapshot at the next consistent point (a CALL from RaftNode.snapshot)."""
        self.applier.request_snapshot(future)
        if self.applier.has_work and not self._apply_scheduled:
            self._apply_scheduled = True
            self.aloop.call_soon(self._apply_slice)

    def _on_snapshot_taken(self, meta: SnapshotMeta, data: bytes, future: Future | None) -> None:
        """The owner of the state machine took a consistent snapshot: save it off the loop."""
        self._snapshot_started[meta.index] = clock()  # a plain dict store (any owner thread)
        self.snapshots.taken(meta, data, future)

    def _snapshot_saved(self, meta: SnapshotMeta, compacted: int | None) -> None:
        """Loop thread: count a durable local snapshot and report the compaction the snapshot
        pipeline made for it (None: none)."""
        telemetry = self.telemetry
        telemetry.snapshots_taken += 1
        started = self._snapshot_started.pop(meta.index, None)
        if started is not None:
            telemetry.snapshot_save.observe(clock() - started)
        if compacted is not None:
            telemetry.events.emit(ev.LogCompacted(self.id, meta.index, compacted))
