"""Typed events for embedders: ``node.subscribe(callback)`` receives frozen dataclasses.

Beside :meth:`RaftNode.add_observer` (a bare ``callback()`` on a node thread whenever role,
leader or term changes), a subscriber learns *what* happened::

    def on_event(event: engine.events.Event) -> None:
        if isinstance(event, engine.events.LeaderChanged):
            print(event.node, "sees leader", event.leader, "in term", event.term)

    unsubscribe = node.subscribe(on_event)

Delivery rule: events are put (one ``SimpleQueue.put``, a few hundred nanoseconds) on the
node's event queue by the thread that saw them (the loop thread, or the storage thread for a
received snapshot made durable) and delivered, in that order, by one thread per node,
``raft-<id>-events``, started on the first ``subscribe`` and joined by ``stop()``.  So a
subscriber never runs on the loop thread: a slow one delays only later events (never a
heartbeat), and one that raises is logged and keeps receiving.  The queue is bounded
(:data:`MAX_QUEUED`): beyond it new events are dropped and counted
(``EventBus.dropped``, exported as ``raft_events_dropped_total``) rather than letting a stuck
subscriber grow memory without bound.  Until the first ``subscribe``, the newest
:data:`EARLY_KEPT` events are kept and delivered to that first subscriber (so one that
subscribes right after ``start()`` still sees RecoveringStarted).  After ``stop()``, events
still queued are delivered before the thread ends (bounded by a join timeout).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine.membership import Membership

logger = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # events waiting for delivery beyond which new ones are dropped
EARLY_KEPT = 64  # events kept for the first subscriber


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event: ``node`` is the id of the node that emitted it."""

    node: str


@dataclass(frozen=True, slots=True)
class LeaderChanged(Event):
    """This node learned of a new leader (``leader`` None: none known) in ``term``."""

    leader: str | None
    term: int
    previous: str | None


@dataclass(frozen=True, slots=True)
class PeerUnreachable(Event):
    """Leader only: nothing heard from ``peer`` for ``silent_for`` seconds (more than the
    maximal election timeout)."""

    peer: str
    silent_for: float


@dataclass(frozen=True, slots=True)
class PeerReachable(Event):
    """Leader only: ``peer``, reported unreachable, was heard from again."""

    peer: str


@dataclass(frozen=True, slots=True)
class SnapshotSent(Event):
    """Leader: the transfer of snapshot ``index`` to ``peer`` ended (``ok`` False: failed)."""

    peer: str
    index: int
    ok: bool
    seconds: float


@dataclass(frozen=True, slots=True)
class SnapshotReceived(Event):
    """Follower: every chunk of snapshot ``index`` arrived from ``peer``."""

    peer: str
    index: int
    term: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SnapshotInstalled(Event):
    """Follower: a snapshot received from the leader is durable and replaces the log up to
    ``index``."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class LogCompacted(Event):
    """A local snapshot at ``snapshot_index`` is durable; the log up to ``compact_index`` may
    be dropped."""

    snapshot_index: int
    compact_index: int


@dataclass(frozen=True, slots=True)
class MembershipChanged(Event):
    """The configuration in force on this node changed (joint, then final, during a change)."""

    membership: Membership


@dataclass(frozen=True, slots=True)
class DiskStallStarted(Event):
    """A durable write has run past ``Config.disk_stall_timeout``."""


@dataclass(frozen=True, slots=True)
class DiskStallEnded(Event):
    """The stalled durable write completed."""


@dataclass(frozen=True, slots=True)
class RecoveringStarted(Event):
    """Start-up found lost, possibly acknowledged entries up to ``index``: the node does not
    vote or count towards quorums until a leader gives them back."""

    index: int


@dataclass(frozen=True, slots=True)
class RecoveringFinished(Event):
    """A leader gave the lost entries back; the node votes again."""


Subscriber = Callable[[Event], object]
_STOP = object()


class EventBus:
    """Per-node event queue and delivery thread (see the module docstring).

    Thread-safety: :meth:`emit` from any thread; :meth:`subscribe` / :meth:`close` from any
    thread (``self._lock`` guards the subscriber list and the thread's lifecycle).
    """

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()  # copy-on-write, read without the lock
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._early: collections.deque[Event] = collections.deque(maxlen=EARLY_KEPT)
        self.dropped = 0  # events not queued (full, or no subscriber yet is not counted)
        self.delivered = 0  # written by the delivery thread only

    @property
    def active(self) -> bool:
        """True once somebody subscribed (emitters may skip building events otherwise)."""
        return bool(self._subscribers)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Deliver every later event to ``callback(event)``; returns an unsubscribe function."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        with self._lock:
            first = not self._subscribers and self._thread is None
            self._subscribers = (*self._subscribers, callback)
            if first:
                while self._early:
                    self._queue.put(self._early.popleft())
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"raft-{self._node_id}-events")
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)
        return unsubscribe

    def emit(self, event: Event) -> None:
        """Queue ``event`` for the subscribers (any thread, never blocks)."""
        if not self._subscribers:
            if self._thread is None:
                self._early.append(event)  # for the first subscriber (deque: thread-safe)
            return
        if self._closed:
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.put(event)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then end the delivery thread (idempotent)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.error("%s: event subscriber still busy after %.1fs; not waiting",
                             self._node_id, timeout)

    def _run(self) -> None:
        """Body of ``raft-<id>-events``."""
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            for callback in self._subscribers:
                try:
                    callback(event)
                except Exception:
                    logger.exception("%s: event subscriber %r failed on %r", self._node_id,
                                     callback, event)
            self.delivered += 1
