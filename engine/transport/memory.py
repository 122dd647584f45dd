"""An in-process network for tests, demos and benchmarks, with fault injection.

One :class:`MemoryNetwork` connects the :class:`MemoryTransport` endpoints of a cluster.  Sending
is cheap: a message that the :class:`~engine.transport.faults.FaultPlan` does not delay is handed
to the destination's handler directly from the sender's thread (the handler only enqueues).
Delayed copies wait in a heap ordered by ``(due, seq)`` served by one thread,
``raft-memnet-delay``, started on the first delayed message and joined by ``close()``.

Messages to a node with no endpoint, or whose endpoint is not started or is closed, are dropped.
An endpoint can be created again for the same node id once the old one is closed (a node
restart); delayed copies still in flight are then delivered to the new endpoint, as packets in
flight would be.  A delayed copy whose link has been cut (isolate, partition, one-way cut) by
the time it is due is dropped, as it would be by a cable pulled while it was in flight.

Membership changes: the network routes by node id, and a node id has no address here, so
``MemoryTransport.update_peers`` only validates its argument.  It does not restrict delivery to
the listed ids: whom a node talks to is Raft's decision (a removed node's messages are ignored
by the recipients' Raft state, not by the network), and any endpoint on the network can reach any
other, as any TCP node can connect to any other.

Threads and locks:

* ``MemoryNetwork._lock`` guards the endpoint registry and the counters.  Senders read the
  registry dict without the lock (one dict lookup is atomic under the GIL; a sender that races a
  restart sees the old or the new endpoint, and a closed endpoint drops).
* ``MemoryNetwork._delay_cv`` and ``_idle_cv`` (two Conditions sharing one lock) guard the delay
  heap, the :class:`~engine.transport.faults.LinkOrder` and the delay thread's lifecycle; the
  first wakes the delay thread, the second wakes :meth:`MemoryNetwork.wait_idle` callers.
* ``MemoryTransport._gate`` (a Condition) guards each endpoint's handler, its state and the count
  of deliveries in progress, so that ``close()`` can wait for those to finish.  The handler itself
  is called outside every lock.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Mapping, Sequence

from engine.core.messages import Message, MessageKind
from engine.errors import ConfigError, RaftError
from engine.transport.base import MessageHandler, check_peer_book
from engine.transport.faults import FaultPlan, LinkOrder

logger = logging.getLogger(__name__)

_KINDS = tuple(MessageKind)
_KIND_SLOTS = max(int(k) for k in _KINDS) + 1

DELAY_THREAD_NAME = "raft-memnet-delay"


class MemoryTransport:
    """One node's endpoint on a :class:`MemoryNetwork`.  Implements ``Transport``.

    Created by :meth:`MemoryNetwork.endpoint`, not directly.
    """

    def __init__(self, network: MemoryNetwork, node_id: str) -> None:
        self._network = network
        self.node_id = node_id
        self._gate = threading.Condition(threading.Lock())
        # --- guarded by self._gate ---
        self._handler: MessageHandler | None = None
        self._state = "new"  # "new" -> "started" -> "closed"
        self._active = 0  # deliveries in progress (handler being called outside the lock)
        # --- guarded by network._lock ---
        self._sent = 0

    def __repr__(self) -> str:
        return f"MemoryTransport({self.node_id!r}, {self._state})"

    def start(self, handler: MessageHandler, *,
              loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Begin delivering messages addressed to this node to ``handler``.

        ``loop`` is accepted for the :class:`~engine.transport.base.Transport` interface and
        ignored: this transport does no IO, and it calls the handler from the sender's thread
        (or the network's delay thread), whatever loop the node runs, so the runtime's handler
        must be thread-safe here.

        Raises:
            RaftError: already started or closed.
        """
        with self._gate:
            if self._state != "new":
                raise RaftError(f"memory transport {self.node_id!r} is {self._state}; "
                                "start() may be called once")
            self._handler = handler
            self._state = "started"

    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery; see :meth:`Transport.send`.  Never raises."""
        if messages:
            self._network._send(self, messages)

    def check_peers(self, peers: Mapping[str, str]) -> None:
        """Check an address book without using it (any str address will do here).

        Raises:
            ConfigError: ``peers`` is not a mapping of non-empty str ids to str addresses.
        """
        check_peer_book(peers)

    def update_peers(self, peers: Mapping[str, str]) -> None:
        """Accept a new address book; see :meth:`Transport.update_peers`.

        The in-memory network routes by node id and has no addresses, so after checking the
        argument there is nothing to do: messages to an id with an endpoint on the network are
        delivered whether or not the id is in ``peers`` (see the module docstring).  Allowed in
        any state.

        Raises:
            ConfigError: ``peers`` is not a mapping of non-empty str ids to str addresses.
        """
        check_peer_book(peers)

    def close(self) -> None:
        """Stop delivering to the handler; waits for deliveries in progress.  Idempotent."""
        with self._gate:
            if self._state == "closed":
                return
            self._state = "closed"
            self._handler = None
            while self._active:
                self._gate.wait()
        self._network._forget(self)

    def message_count(self) -> int:
        """Messages handed to this endpoint's ``send`` (including those then dropped)."""
        with self._network._lock:
            return self._sent

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._state == "closed"

    def _deliver(self, messages: Sequence[Message]) -> None:
        """Call the handler for each message, unless this endpoint is not started or is closed.

        Called from a sender's thread or the delay thread.
        """
        gate = self._gate
        with gate:
            handler = self._handler
            if handler is None:
                return
            self._active += 1
        try:
            for msg in messages:
                try:
                    handler(msg)
                except Exception:
                    logger.exception("handler of %s raised on %s from %s; message dropped",
                                     self.node_id, msg.kind.name, msg.src)
        finally:
            with gate:
                self._active -= 1
                if not self._active and self._state == "closed":
                    gate.notify_all()


class MemoryNetwork:
    """The in-process network: endpoint registry, fault plan, delay thread and counters.

    Args:
        seed: seed of the network's :class:`FaultPlan` (``network.faults``).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.faults = FaultPlan(seed)
        self._lock = threading.Lock()
        # --- guarded by self._lock (the registry dict is also read lock-free by senders) ---
        self._endpoints: dict[str, MemoryTransport] = {}
        self._total = 0
        self._per_kind = [0] * _KIND_SLOTS
        self._closed = False
        # --- guarded by self._delay_cv ---
        delay_lock = threading.Lock()
        self._delay_cv = threading.Condition(delay_lock)  # wakes the delay thread
        self._idle_cv = threading.Condition(delay_lock)  # wakes wait_idle() callers
        self._heap: list[tuple[float, int, str, Message]] = []
        self._seq = 0
        self._order = LinkOrder()
        self._delay_thread: threading.Thread | None = None
        self._delay_stop = False

    # ------------------------------------------------------------------ endpoints

    def endpoint(self, node_id: str) -> MemoryTransport:
        """A new endpoint for ``node_id`` (replacing a closed one after a node restart).

        Raises:
            ConfigError: ``node_id`` already has an endpoint that is not closed.
            RaftError: the network is closed.
        """
        with self._lock:
            if self._closed:
                raise RaftError("memory network is closed")
            old = self._endpoints.get(node_id)
            if old is not None and not old.closed:
                raise ConfigError(f"node_id={node_id!r} already has an open endpoint; "
                                  "close it before creating another")
            transport = MemoryTransport(self, node_id)
            self._endpoints[node_id] = transport
            return transport

    def _forget(self, transport: MemoryTransport) -> None:
        with self._lock:
            if self._endpoints.get(transport.node_id) is transport:
                del self._endpoints[transport.node_id]

    # ------------------------------------------------------------------ counters

    def message_count(self) -> int:
        """Messages handed to any endpoint's ``send`` since creation or ``reset_counts()``,
        including those then dropped."""
        with self._lock:
            return self._total

    def message_counts(self) -> dict[str, int]:
        """``message_count()`` split by :class:`MessageKind` name (every kind present)."""
        with self._lock:
            return {kind.name: self._per_kind[kind] for kind in _KINDS}

    def reset_counts(self) -> None:
        """Zero the network-wide counters (per-endpoint counts are kept)."""
        with self._lock:
            self._total = 0
            self._per_kind = [0] * _KIND_SLOTS

    # ------------------------------------------------------------------ sending

    def _send(self, sender: MemoryTransport, messages: Sequence[Message]) -> None:
        """Count, apply faults, then deliver at once or via the delay heap."""
        with self._lock:
            count = len(messages)
            self._total += count
            sender._sent += count
            per_kind = self._per_kind
            for msg in messages:
                per_kind[msg.kind] += 1
            if self._closed or sender._state == "closed":
                return
        endpoints = self._endpoints
        plan = self.faults
        if not plan.active and not self._order.has_pending():
            # Fast path: no faults and nothing delayed (a racy read; see the module docstring).
            if count == 1:
                msg = messages[0]
                target = endpoints.get(msg.dst)
                if target is not None:
                    target._deliver(messages)
                return
            by_dst: dict[str, list[Message]] = {}
            for msg in messages:
                bucket = by_dst.get(msg.dst)
                if bucket is None:
                    by_dst[msg.dst] = [msg]
                else:
                    bucket.append(msg)
            for dst, batch in by_dst.items():
                target = endpoints.get(dst)
                if target is not None:
                    target._deliver(batch)
            return
        self._send_with_faults(sender.node_id, messages)

    def _send_with_faults(self, src: str, messages: Sequence[Message]) -> None:
        now_by_dst: dict[str, list[Message]] = {}
        decide = self.faults.decide_ordered
        delayed: list[tuple[float, str, Message]] = []
        cv = self._delay_cv
        with cv:
            order = self._order
            now = time.monotonic()
            for msg in messages:
                delays, reorder = decide(src, msg.dst)
                for delay in delays:
                    due = order.schedule((src, msg.dst), now, delay, reorder)
                    if due is None:
                        now_by_dst.setdefault(msg.dst, []).append(msg)
                    else:
                        delayed.append((due, src, msg))
            if delayed:
                if self._delay_stop:
                    for _, _, msg in delayed:
                        order.released((src, msg.dst))
                else:
                    for due, link_src, msg in delayed:
                        self._seq += 1
                        heapq.heappush(self._heap, (due, self._seq, link_src, msg))
                    if self._delay_thread is None:
                        self._delay_thread = threading.Thread(
                            target=self._delay_loop, name=DELAY_THREAD_NAME, daemon=True)
                        self._delay_thread.start()
                    cv.notify()
        endpoints = self._endpoints
        for dst, batch in now_by_dst.items():
            target = endpoints.get(dst)
            if target is not None:
                target._deliver(batch)

    def _delay_loop(self) -> None:
        """Body of the delay thread: hand on each delayed copy when it is due, in (due, seq)
        order, so equal due times keep send order."""
        cv = self._delay_cv
        heap = self._heap
        plan = self.faults
        while True:
            with cv:
                while True:
                    if self._delay_stop:
                        return
                    if heap:
                        wait = heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        cv.wait(wait)
                    else:
                        cv.wait()
                now = time.monotonic()
                ready: list[tuple[str, Message]] = []
                while heap and heap[0][0] <= now:
                    _, _, src, msg = heapq.heappop(heap)
                    ready.append((src, msg))
            # Deliver outside the heap lock, in due order, then release the links: a sender that
            # sees the link still pending queues behind these instead of overtaking them.
            for src, msg in ready:
                if plan.link_up(src, msg.dst):
                    target = self._endpoints.get(msg.dst)
                    if target is not None:
                        target._deliver((msg,))
            with cv:
                for src, msg in ready:
                    self._order.released((src, msg.dst))
                if not heap:
                    self._idle_cv.notify_all()

    def pending_delayed(self) -> int:
        """Delayed copies not yet handed on (for tests and diagnostics)."""
        with self._delay_cv:
            return len(self._heap)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no delayed copy is in flight; False if ``timeout`` expired first.

        Copies sent while waiting count too, so under a steady stream of delayed traffic this
        may not return before the timeout.
        """
        with self._delay_cv:
            return self._idle_cv.wait_for(
                lambda: not self._heap and not self._order.has_pending(), timeout)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close every endpoint, drop delayed copies and join the delay thread.  Idempotent."""
        with self._lock:
            self._closed = True
            endpoints = list(self._endpoints.values())
        for transport in endpoints:
            transport.close()
        with self._delay_cv:
            self._delay_stop = True
            thread = self._delay_thread
            self._heap.clear()
            self._order = LinkOrder()
            self._delay_cv.notify_all()
            self._idle_cv.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
