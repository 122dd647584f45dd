"""RaftNode: the public façade of one Raft member.

``RaftNode`` holds what the user gave it and, while running, one
:class:`~engine.runtime.loop.NodeLoop` built by :meth:`RaftNode.start` in one step (stores
opened, state recovered, core built, threads started) and discarded by :meth:`RaftNode.stop`.
Every public method is thread-safe: it reads the loop's published status, or posts an event to
the loop's inbox and returns a future.  The threads and what each owns are listed in
:mod:`engine.runtime` (the thread map).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from engine.config import Config
from engine.core import RawNode, Role
from engine.errors import (
    ConfigError,
    MembershipChangeInProgress,
    MembershipError,
    NodeStopped,
    NotLeaderError,
    Overloaded,
    RaftError,
)
from engine.membership import Membership
from engine.runtime.loop import CALL, PROPOSE, PROPOSE_MANY, READ, NodeLoop
from engine.runtime.membership import MembershipChange
from engine.runtime.proposals import ProposalRegistry, new_future, settle
from engine.runtime.recovery import close_stores, open_stores, recover
from engine.runtime.telemetry import Telemetry
from engine.statemachine import StateMachine
from engine.status import Status
from engine.storage.base import LogStore, StableStore
from engine.storage.snapshot import SnapshotStore
from engine.transport.base import Transport

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _failed(error: BaseException) -> Future:
    future = new_future()
    future.set_exception(error)
    return future


def _as_command(command: object) -> bytes:
    if type(command) is bytes:  # the common case skips the isinstance() and the copy
        return command
    if not isinstance(command, bytes | bytearray | memoryview):
        raise TypeError(f"command must be bytes, not {type(command).__name__}")
    return bytes(command)


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
                ``peers[node_id]``, running on the node's event loop.
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
        self._lifecycle_lock = threading.Lock()  # guards _started, _stopped, _running
        self._started = False
        self._stopped = False
        # Written once by start() (under the lifecycle lock), read by any thread.
        self._running: NodeLoop | None = None
        self._transport: Transport | None = None
        self._observers: list[Callable[[], None]] = []
        self._registry = ProposalRegistry()
        self._final_status = Status(node_id, "follower", 0, None, 0, 0, 0, running=False)
        # Counters, histograms and the event bus (engine.runtime.telemetry: one writer thread
        # per field, read by engine.metrics at scrape time).
        self._telemetry = Telemetry(node_id, self._config.latency_sample_every)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """This node's id."""
        return self._id

    @property
    def state_machine(self) -> StateMachine:
        """The user's state machine (touch it only from read() functions while running)."""
        return self._state_machine

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The node's event loop while it runs (None before start).

        Embedders may run their own servers on it (the KV example does): proposals and reads
        made from its thread skip the thread hand-off, and their futures are settled on it.
        Code on this loop must never block (it would stall heartbeats) and must not call
        :meth:`stop`."""
        running = self._running
        return running.aloop if running is not None else None

    def __enter__(self) -> RaftNode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_observer(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from a node thread) whenever role, leader or term changes and
        after each applied batch.  It must be quick and must not block."""
        self._observers.append(callback)

    def subscribe(self, callback: Callable[[Any], object]) -> Callable[[], None]:
        """Call ``callback(event)`` with each typed event (:mod:`engine.events`: leader
        changed, peer unreachable/reachable, snapshot sent/received/installed, log compacted,
        membership changed, disk stall started/ended, recovering started/finished) from now on;
        returns a function that unsubscribes.  Delivered in order on the node's
        ``raft-<id>-events`` thread, never on the loop thread: a slow or raising subscriber
        cannot stall or stop the node (exceptions are logged).  Subscribe before
        :meth:`start` to see the events of start-up (RecoveringStarted).

        Raises:
            TypeError: ``callback`` is not callable.
        """
        return self._telemetry.events.subscribe(callback)

    @property
    def telemetry(self) -> Telemetry:
        """This node's counters and histograms (read them through :mod:`engine.metrics`)."""
        return self._telemetry

    @property
    def transport(self) -> Transport | None:
        """The transport while running or after (None before start)."""
        return self._transport

    def start(self) -> None:
        """Open storage, replay the log into a fresh state machine, start the threads.

        Raises:
            RaftError: already started or stopped; storage errors (CorruptLogError).
            OSError: the TCP transport could not listen on its address.
        """
        with self._lifecycle_lock:
            if self._started or self._stopped:
                state = "started" if self._started else "stopped"
                raise RaftError(f"node {self._id} was already {state}")
            self._started = True
            stores = open_stores(self._config, self._data_dir, self._log_store_arg,
                                 self._stable_store_arg, self._snapshot_store_arg)
            try:
                recovered = recover(self._id, stores, self._state_machine,
                                    discard_gaps=self._config.recover_corrupt_log)
                transport = self._transport_arg or self._default_transport()
                running = NodeLoop(self._id, self._peers, self._config, self._state_machine,
                                   stores, recovered, transport, seed=self._seed,
                                   join=self._join, registry=self._registry,
                                   notify=self._notify_observers,
                                   telemetry=self._telemetry)
            except BaseException:
                close_stores(stores)
                self._stopped = True
                raise
            self._transport = transport
            try:
                running.start()
            except BaseException:
                self._stopped = True
                self._final_status = running.status
                raise
            self._running = running
            hard_state = recovered.hard_state
            logger.info("%s started: term=%d log=[%d, %d] commit=%d", self._id,
                        hard_state.term, stores.log.first_index(), stores.log.last_index(),
                        hard_state.commit)

    def _default_transport(self) -> Transport:
        from engine.transport.tcp import TcpTransport
        return TcpTransport(self._id, self._peers)

    def stop(self) -> None:
        """Stop gracefully: write what is queued, join every thread, close transport and files.

        Pending futures fail with NodeStopped.  Idempotent.  Not from the node's loop thread
        (its callbacks): that would join itself (RaftError).
        """
        self._halt(graceful=True)

    def crash(self) -> None:
        """Stop abruptly, as a power cut would: queued writes are lost, nothing is flushed.
        What earlier writes made durable survives.  For tests and fault benchmarks."""
        self._halt(graceful=False)

    def _halt(self, *, graceful: bool) -> None:
        running = self._running
        if running is not None and running.on_loop_thread():
            raise RaftError(f"node {self._id}: stop() and crash() must not be called from the "
                            "node's own loop thread")
        with self._lifecycle_lock:
            first = not self._stopped
            self._stopped = True
        if running is None:
            return
        if first:
            running.halt(graceful=graceful)
        running.join_halt_thread()
        if first:
            self._notify_observers()
            self._telemetry.events.close()

    # -- requests to the loop ------------------------------------------------------------------

    def _live(self) -> NodeLoop | None:
        """The running loop, or None when not started or stopped (also after a fatal error)."""
        running = self._running
        if running is None or self._stopped or not running.status.running:
            return None
        return running

    def _not_running(self) -> Future:
        running = self._running
        error = running._stop_error if running is not None else None
        return _failed(error or NodeStopped(f"node {self._id} is not running"))

    def _submit_to_leader(self, tag: int, payload: Any, count: int = 1, *,
                          on_loop: bool = False) -> Any:
        """Queue a leader-only request for the loop thread, or fail it at once when this node
        is stopped or (as far as its last published status says) not the leader.  Returns the
        future (a list of ``count`` futures for PROPOSE_MANY); an asyncio future of the node's
        loop when ``on_loop`` (the caller is on that loop and apply runs there too)."""
        running = self._live()
        if running is None:
            return self._not_running()
        status = running.status
        if status.role != "leader":
            if tag != READ:
                self._telemetry.proposals_not_leader += count  # racy across threads: approx.
            return _failed(NotLeaderError(status.leader_id))
        if tag != READ:
            pending = self._registry.approximate_len() + len(running.queued_proposals)
            if pending + count > self._config.max_pending_proposals:
                self._telemetry.proposals_overloaded += count
                return _failed(Overloaded(
                    f"{pending} proposals are waiting to commit on {self._id} "
                    f"(max_pending_proposals={self._config.max_pending_proposals})"))
        if tag == PROPOSE_MANY:
            futures = [new_future(running=True) for _ in range(count)]
            running.queued_proposals.extend([None] * count)
            running.post((tag, payload, futures))
            return futures
        # In flight: cancel() returns False.
        future = running.aloop.create_future() if on_loop else new_future(running=True)
        if tag == PROPOSE:
            running.queued_proposals.append(None)
        running.post((tag, payload, future))
        return future

    def _on_own_loop(self) -> bool:
        """True when the caller runs on the node's loop thread and apply runs there too (so
        asyncio futures of that loop can be settled where they live)."""
        running = self._running
        return (running is not None and running.on_loop_thread()
                and not self._config.apply_thread)

    def _call(self, fn: Callable[[RawNode], Any]) -> Future:
        """Run ``fn(raw)`` on the loop thread; the future gets its result or exception."""
        running = self._live()
        if running is None:
            return self._not_running()
        future: Future = Future()
        running.post((CALL, fn, future))
        return future

    def _start_on_loop(self, start: Callable[[RawNode], None], future: Future) -> Future:
        """Run ``start(raw)`` on the loop thread to begin a long operation that settles
        ``future`` later; an exception from ``start`` (or a stopped node) fails it at once."""
        def on_started(done: Future) -> None:
            error = done.exception()
            if error is not None:
                settle(future, error=error)

        self._call(start).add_done_callback(on_started)
        return future

    # -- public operations ---------------------------------------------------------------------

    def propose(self, command: bytes) -> Future:
        """Replicate ``command``; the future resolves to what ``apply()`` returned on this node.

        The future (a :class:`~engine.runtime.proposals.ProposalFuture`) is handed out RUNNING:
        a proposal cannot be withdrawn, so ``cancel()`` returns False and the entry may still
        commit.  To stop waiting, use a timeout (``result(timeout)``, ``asyncio.wait_for``).
        From any thread it costs one hand-off to the loop thread (one wake-up serves all the
        proposals queued meanwhile); from the node's own loop thread, none.

        Raises (through the future):
            NotLeaderError: at once, when this node is not the leader.
            Overloaded: at once, when ``config.max_pending_proposals`` proposals are already
                waiting to commit (nothing is proposed).
            ProposalDropped: leadership was lost before the entry committed.
            NodeStopped: the node stopped first.
            TypeError: at once, when ``command`` is not bytes.
        """
        return self._submit_to_leader(PROPOSE, _as_command(command))

    def propose_many(self, commands: Sequence[bytes]) -> list[Future]:
        """Replicate several commands in one step: one future per command, in order, each as
        :meth:`propose` describes.  They are registered with the loop in one hand-off and
        proposed together (usually one log batch).  When the node is not the leader, stopped or
        overloaded, every future fails at once with the same error.

        Raises:
            TypeError: at once, when a command is not bytes (nothing is proposed).
        """
        payload = [_as_command(c) for c in commands]
        if not payload:
            return []
        result = self._submit_to_leader(PROPOSE_MANY, payload, len(payload))
        if isinstance(result, list):
            return result
        error = result.exception()
        return [_failed(error) for _ in payload]

    def read(self, fn: Callable[[Any], T]) -> Future:
        """Run ``fn(state_machine)`` at a linearizable point (ReadIndex) and resolve to its result.

        No log entry is written: the leader confirms it still leads with a heartbeat round, then
        ``fn`` runs where ``apply()`` runs (the loop thread, or the apply thread with
        ``Config.apply_thread``) once everything committed before the read is applied.  As with
        :meth:`propose`, the future is handed out RUNNING: ``cancel()`` returns False.

        Raises (through the future):
            NotLeaderError: this node is not (or stopped being) the leader.
            ReadTimeout: leadership was not confirmed within ``config.read_timeout``.
            NodeStopped: the node stopped first.
        """
        return self._submit_to_leader(READ, fn)

    async def propose_async(self, command: bytes) -> object:
        """``await node.propose_async(cmd)``: :meth:`propose` for asyncio code.  Awaited on the
        node's own loop (see :attr:`loop`) it costs no thread hand-off at all; from any other
        event loop it costs what :meth:`propose` costs."""
        return await self._await(self._submit_to_leader(
            PROPOSE, _as_command(command), on_loop=self._on_own_loop()))

    async def read_async(self, fn: Callable[[Any], T]) -> T:
        """``await node.read_async(fn)``: :meth:`read` for asyncio code (see propose_async)."""
        return await self._await(self._submit_to_leader(READ, fn, on_loop=self._on_own_loop()))

    @staticmethod
    async def _await(future: Any) -> Any:
        if isinstance(future, asyncio.Future):
            return await future
        return await asyncio.wrap_future(future)

    def status(self) -> Status:
        """A snapshot of this node (never blocks); ``last_applied`` is read live."""
        running = self._running
        if running is None:
            return self._final_status
        status = running.status
        if status.running:
            applied = running.applier.last_applied
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

    def last_contact(self) -> dict[str, float]:
        """Seconds since this node last received a message from each peer it has heard from
        since it started (on the leader: how long ago each follower answered); {} when not
        running.  Never blocks: it copies a dict only the loop thread writes (one C-level copy
        under the GIL)."""
        running = self._running
        if running is None or not running.status.running:
            return {}
        now = time.monotonic()
        return {peer: max(0.0, now - heard) for peer, heard in dict(running.last_heard).items()
                if peer != self._id}

    def snapshot(self) -> Future:
        """Take a snapshot now; resolves to its index once it is durable (and the log has been
        compacted behind it).  Works on any running node.

        Raises (through the future):
            NodeStopped: the node is not running or stopped first.
            StorageError: the snapshot could not be written.
        """
        running = self._live()
        if running is None:
            return self._not_running()
        future: Future = Future()
        return self._start_on_loop(lambda raw: running.request_snapshot(future), future)

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
        running = self._live()
        if running is None:
            return self._not_running()
        future: Future = Future()
        return self._start_on_loop(lambda raw: running.start_transfer(raw, target_id, future),
                                   future)

    # -- membership ------------------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The configuration in force on this node (as of its last loop round)."""
        membership = self.status().membership
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
        running = self._live()
        if running is None:
            return self._not_running()
        future: Future = Future()

        def start(raw: RawNode) -> None:
            if running.change is not None:
                raise MembershipChangeInProgress("a membership change is in progress "
                                                 f"({running.change.stage.value} stage)")
            if raw.role is not Role.LEADER:
                raise NotLeaderError(raw.leader_id)
            current = raw.membership
            if addresses:
                running.transport.check_peers(dict(addresses))  # ConfigError: nothing proposed
            voters, learners = target(current)
            if voters == frozenset(current.voters) and learners == frozenset(current.learners):
                raise MembershipError(f"{current.describe()} is already the configuration")
            change = MembershipChange(voters, learners, addresses or {}, future,
                                      catchup_timeout=self._config.catchup_timeout)
            running.begin_change(raw, change)
        return self._start_on_loop(start, future)

    @property
    def last_applied(self) -> int:
        """Index of the last entry applied to the state machine."""
        running = self._running
        return running.applier.last_applied if running is not None else 0

    def wait_applied(self, index: int, timeout: float | None = None) -> bool:
        """Block until ``last_applied >= index`` (False on timeout, when not started, or once the
        node has stopped short of ``index``)."""
        running = self._running
        if running is None:
            return False
        return running.applier.wait_applied(index, timeout)

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
