"""Helpers for ``test_durability_guards.py``: recording wrappers around the public store and
transport seams, a transport through which a test plays a node's peers, and a checker of the
order "durable write, then the message that depends on it".

Everything here goes through the public protocols only (``LogStore`` / ``StableStore`` of
``engine.storage.base``, ``Transport`` of ``engine.transport.base``) and ``RaftNode``'s
constructor arguments, so it keeps working whatever threads or event loop drive the node.

One :class:`EventLog` per node incarnation is shared by that node's log store, stable store and
transport wrappers.  A write is recorded *after* the wrapped store returned (the write is then
done); a send is recorded *before* the message is handed on (the moment it leaves the node).  So
"write before send" in the log is a sound witness of "write completed before the send began".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.core.messages import Message, MessageKind
from engine.errors import StorageError
from engine.storage.base import BackgroundSync, LogStore, StableStore
from engine.transport.base import MessageHandler, Transport, check_peer_book
from engine.types import Entry, HardState, Index

APPEND_RESPONSE = MessageKind.APPEND_RESPONSE
VOTE_RESPONSE = MessageKind.VOTE_RESPONSE


def is_ack(m: Message) -> bool:
    """An append acknowledgement (an APPEND_RESPONSE that does not reject)."""
    return m.kind is APPEND_RESPONSE and not m.reject


def is_vote_grant(m: Message) -> bool:
    """A granted (real, not pre-) vote: the only vote response that needs a durable vote."""
    return m.kind is VOTE_RESPONSE and not m.reject


class EventLog:
    """The ordered record of one node incarnation's durable writes and sends.

    ``initial_last_index`` and ``initial_hard_state`` are what the (durable) stores held when the
    incarnation began: entries up to that index were made durable by an earlier incarnation.
    """

    def __init__(self, node_id: str, *, initial_last_index: Index = 0,
                 initial_hard_state: HardState | None = None) -> None:
        self.node_id = node_id
        self.initial_last_index = initial_last_index
        self.initial_hard_state = initial_hard_state or HardState()
        self._lock = threading.Lock()
        self._events: list[tuple[Any, ...]] = []  # guarded by self._lock

    def add(self, *event: Any) -> None:
        with self._lock:
            self._events.append(event)

    def events(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._events)

    def sent(self) -> list[Message]:
        """Every message handed to the transport, in order."""
        return [e[1] for e in self.events() if e[0] == "send"]


class RecordingLogStore:
    """A ``LogStore`` forwarding to ``inner`` and recording appends, truncations, resets and
    syncs.  ``fail_appends()`` makes every later append raise StorageError (a full disk)
    without touching ``inner``."""

    def __init__(self, inner: LogStore, events: EventLog) -> None:
        self._inner = inner
        self._events = events
        self._failing = threading.Event()
        self.failed_appends = 0

    def fail_appends(self) -> None:
        self._failing.set()

    def first_index(self) -> Index:
        return self._inner.first_index()

    def last_index(self) -> Index:
        return self._inner.last_index()

    def append(self, entries: Sequence[Entry]) -> None:
        if entries and self._failing.is_set():
            self.failed_appends += 1
            self._events.add("append-failed", entries[0].index, entries[-1].index)
            raise StorageError("No space left on device (injected by the test)")
        self._inner.append(entries)
        if entries:
            self._events.add("append", entries[0].index, entries[-1].index)

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        return self._inner.entries(lo, hi)

    def term_at(self, index: Index) -> int:
        return self._inner.term_at(index)

    def truncate_suffix(self, index: Index) -> None:
        self._inner.truncate_suffix(index)
        self._events.add("truncate", index)

    def compact_prefix(self, index: Index) -> None:
        self._inner.compact_prefix(index)
        self._events.add("compact", index)

    def reset(self, next_index: Index) -> None:
        self._inner.reset(next_index)
        self._events.add("reset", next_index)

    def sync(self) -> None:
        self._inner.sync()
        self._events.add("sync")

    def close(self) -> None:
        self._inner.close()


class RecordingBackgroundLogStore(RecordingLogStore):
    """A RecordingLogStore over a store with background syncs (``BackgroundSync``): records
    "sync" when ``end_sync`` reports that the background sync has ended."""

    @property
    def background_sync(self) -> bool:
        return self._inner.background_sync  # type: ignore[attr-defined, no-any-return]

    def sync_fileno(self) -> int:
        return self._inner.sync_fileno()  # type: ignore[attr-defined, no-any-return]

    def begin_sync(self) -> None:
        self._inner.begin_sync()  # type: ignore[attr-defined]
        self._events.add("sync-begin")

    def end_sync(self, *, wait: bool = False) -> bool:
        done: bool = self._inner.end_sync(wait=wait)  # type: ignore[attr-defined]
        if done:
            self._events.add("sync")
        return done


class RecordingStableStore:
    """A ``StableStore`` forwarding to ``inner`` and recording each completed save."""

    def __init__(self, inner: StableStore, events: EventLog) -> None:
        self._inner = inner
        self._events = events

    def load(self) -> HardState:
        return self._inner.load()

    def save(self, state: HardState) -> None:
        self._inner.save(state)
        self._events.add("save", state)

    def close(self) -> None:
        self._inner.close()


class VoteProbe:
    """Checks, at the moment a granted vote response is handed to the transport, that the
    stable store already holds that vote (or a later term, which makes the vote moot: a node
    never votes again in a term it has left).  Pre-vote responses need no durable state."""

    def __init__(self, node_id: str, stable: StableStore) -> None:
        self._node_id = node_id
        self._stable = stable
        self._lock = threading.Lock()
        self.checked: list[Message] = []  # guarded by self._lock
        self.violations: list[str] = []  # guarded by self._lock

    def __call__(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if not is_vote_grant(m) or m.dst == self._node_id:
                continue
            saved = self._stable.load()
            ok = saved.term > m.term or (saved.term == m.term and saved.vote == m.dst)
            with self._lock:
                self.checked.append(m)
                if not ok:
                    self.violations.append(
                        f"{self._node_id} granted its term-{m.term} vote to {m.dst} while the "
                        f"stable store held {saved}")


class RecordingTransport:
    """A ``Transport`` forwarding to ``inner``, recording each message handed to ``send`` (before
    forwarding it) and calling ``before_send(messages)`` first, if given."""

    def __init__(self, inner: Transport, events: EventLog,
                 before_send: Callable[[Sequence[Message]], None] | None = None) -> None:
        self._inner = inner
        self._events = events
        self._before_send = before_send

    def start(self, handler: MessageHandler) -> None:
        self._inner.start(handler)

    def send(self, messages: Sequence[Message]) -> None:
        messages = list(messages)
        for m in messages:
            self._events.add("send", m)
        if self._before_send is not None:
            self._before_send(messages)
        self._inner.send(messages)

    def close(self) -> None:
        self._inner.close()

    def check_peers(self, peers: Mapping[str, str]) -> object:
        return self._inner.check_peers(peers)

    def update_peers(self, peers: Mapping[str, str]) -> None:
        self._inner.update_peers(peers)

    def __getattr__(self, name: str) -> Any:  # message_count() and the like
        return getattr(self._inner, name)


class ScriptedTransport:
    """A ``Transport`` whose far side is the test: :meth:`deliver` hands the node a message as
    if a peer had sent it, and every message the node sends is kept for :meth:`expect`."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._cond = threading.Condition()
        self._handler: MessageHandler | None = None  # guarded by self._cond
        self._sent: list[Message] = []  # guarded by self._cond

    def start(self, handler: MessageHandler) -> None:
        with self._cond:
            self._handler = handler

    def send(self, messages: Sequence[Message]) -> None:
        with self._cond:
            self._sent.extend(messages)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._handler = None

    def check_peers(self, peers: Mapping[str, str]) -> object:
        return check_peer_book(peers)

    def update_peers(self, peers: Mapping[str, str]) -> None:
        check_peer_book(peers)

    def deliver(self, message: Message) -> None:
        """Hand ``message`` to the node (as its transport would on arrival)."""
        with self._cond:
            handler = self._handler
        if handler is None:
            raise AssertionError(f"the transport of {self.node_id} is not started (or closed)")
        handler(message)

    def mark(self) -> int:
        """A position in the sent messages, for ``expect(..., since=mark)``."""
        with self._cond:
            return len(self._sent)

    def sent(self, since: int = 0) -> list[Message]:
        with self._cond:
            return list(self._sent[since:])

    def expect(self, predicate: Callable[[Message], bool], *, since: int = 0,
               timeout: float) -> Message:
        """The first message sent at or after position ``since`` that matches ``predicate``,
        waiting for it up to ``timeout`` seconds (then AssertionError)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._sent[since:]:
                    if predicate(m):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.node_id} sent no matching message within {timeout}s; it sent "
                        f"{[(m.kind.name, m.dst, m.term, m.index, m.reject) for m in self._sent]}")
                self._cond.wait(remaining)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checked whenever the node sends something (and
        at least every 50 ms); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True


def ordering_violations(log: EventLog) -> tuple[list[str], int, int]:
    """Replay ``log`` and list every message sent before the durable write it depends on:

    * an acknowledgement (APPEND_RESPONSE, not rejected) of index ``i`` must follow, for every
      index ``j <= i`` of the log, an append that wrote ``j`` (the latest one before the send)
      AND a log sync after that append;
    * a granted vote response for candidate ``X`` in term ``T`` must follow a save of
      ``(T, X)`` -- or of a later term, which makes the vote moot.

    Returns ``(violations, acks_checked, grants_checked)``.
    """
    node = log.node_id
    floor = log.initial_last_index  # every index <= floor is durable from a former life
    written: dict[Index, bool] = {}  # index > floor -> durable (synced since its last append)
    reset_pending: Index | None = None
    saved = log.initial_hard_state
    violations: list[str] = []
    acks = grants = 0
    for position, event in enumerate(log.events()):
        kind = event[0]
        if kind == "append":
            first, last = event[1], event[2]
            for index in [i for i in written if i > last]:
                del written[index]
            for index in range(first, last + 1):
                written[index] = False
            if first <= floor:
                floor = first - 1
        elif kind == "truncate":
            for index in [i for i in written if i >= event[1]]:
                del written[index]
            floor = min(floor, event[1] - 1)
        elif kind == "reset":
            # Only after a snapshot was installed: it covers everything below next_index.
            written.clear()
            floor = min(floor, event[1] - 1)
            reset_pending = event[1] - 1
        elif kind == "sync":
            for index in written:
                written[index] = True
            if reset_pending is not None:
                floor, reset_pending = max(floor, reset_pending), None
        elif kind == "save":
            saved = event[1]
        elif kind == "send":
            m = event[1]
            if m.dst == node:
                continue
            if is_ack(m) and m.index > 0:
                acks += 1
                for index in range(floor + 1, m.index + 1):
                    state = written.get(index)
                    if state is None:
                        violations.append(
                            f"event {position}: {node} acknowledged index {m.index} to {m.dst} "
                            f"(term {m.term}) before any append of index {index}")
                        break
                    if not state:
                        violations.append(
                            f"event {position}: {node} acknowledged index {m.index} to {m.dst} "
                            f"(term {m.term}) before a sync after the append of index {index}")
                        break
            elif is_vote_grant(m):
                grants += 1
                if not (saved.term > m.term or (saved.term == m.term and saved.vote == m.dst)):
                    violations.append(
                        f"event {position}: {node} granted its term-{m.term} vote to {m.dst} "
                        f"when the last save was {saved}")
    return violations, acks, grants


class RecordedNode:
    """The durable stores of one node (which survive its incarnations) plus the recording
    wrappers and event log of the current incarnation."""

    def __init__(self, node_id: str, log_store: LogStore, stable_store: StableStore) -> None:
        self.node_id = node_id
        self.log_store = log_store
        self.stable_store = stable_store
        self.lives: list[EventLog] = []
        self.probe = VoteProbe(node_id, stable_store)  # one for every incarnation
        self.log: RecordingLogStore | None = None

    def wrap(self, transport: Transport) -> dict[str, Any]:
        """Fresh wrappers for a new incarnation: the RaftNode keyword arguments
        ``log_store``, ``stable_store`` and ``transport``."""
        events = EventLog(self.node_id, initial_last_index=self.log_store.last_index(),
                          initial_hard_state=self.stable_store.load())
        self.lives.append(events)
        wrapper = (RecordingBackgroundLogStore if isinstance(self.log_store, BackgroundSync)
                   else RecordingLogStore)
        self.log = wrapper(self.log_store, events)
        return {"log_store": self.log,
                "stable_store": RecordingStableStore(self.stable_store, events),
                "transport": RecordingTransport(transport, events, self.probe)}

    @property
    def events(self) -> EventLog:
        return self.lives[-1]
