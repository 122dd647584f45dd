"""The Transport interface: how a node's runtime hands Raft messages to the network.

A transport moves :class:`~engine.core.messages.Message` records between nodes and nothing else.
It is deliberately lossy (like the network Raft is designed for): ``send`` never blocks on IO
and may drop, and Raft's own retries recover.  Two implementations pass the same contract suite
(``tests/transport/test_contract.py``):

* :class:`~engine.transport.memory.MemoryTransport`, an in-process network for tests and
  benchmarks, with fault injection;
* :class:`~engine.transport.tcp.TcpTransport`, loopback or LAN TCP on an asyncio (uvloop) loop:
  a thread of its own, or the node's event loop when ``start`` is given one.

Both consult a :class:`~engine.transport.faults.FaultPlan` so that ``LocalCluster.isolate``,
``partition`` and ``set_faults`` behave the same over either.

Membership: the runtime calls ``update_peers`` with the full address book (node id ->
``"host:port"``) whenever the node's effective configuration changes.  The transport only learns
where to reach nodes; *whom* to talk to is decided by Raft, which never addresses a node outside
its configuration (and ignores messages it should not act on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from engine.core.messages import Message
from engine.errors import ConfigError

MessageHandler = Callable[[Message], None]
"""Called by the transport with each inbound message addressed to its node.

Which thread calls it depends on the transport and on ``Transport.start``:

* a transport that does network IO and was started with ``loop=`` (TCP) calls it on that loop's
  thread only, one message at a time, so the node's runtime may step its Raft core right there.
  It may call that transport's ``send`` and ``update_peers`` (a ``send`` on the loop thread
  writes at once and never calls the handler from inside itself: messages to the node itself
  come from a later loop callback), but not its ``close``;
* otherwise it is called from the transport's own thread(s), possibly from several at once (the
  in-memory transport, with or without ``loop=``, delivers from the sender's thread or its delay
  thread), so it must be thread-safe, cheap and must not call back into any transport (it
  enqueues the message for the node's loop thread and returns).

Exceptions it raises are logged by the transport and otherwise ignored.
"""


def check_peer_book(peers: object) -> dict[str, str]:
    """A plain-dict copy of ``peers`` after checking that it maps non-empty ``str`` node ids to
    ``str`` addresses (the address format itself is the transport's business).

    Raises:
        ConfigError: ``peers`` is not a mapping, or a key or value is not a string.
    """
    if not isinstance(peers, Mapping):
        raise ConfigError("peers must be a mapping of node id -> 'host:port', not "
                          f"{type(peers).__name__}")
    book: dict[str, str] = {}
    for node, address in peers.items():
        if not isinstance(node, str) or not node:
            raise ConfigError(f"peers: node id {node!r} must be a non-empty str")
        if not isinstance(address, str):
            raise ConfigError(f"peers[{node!r}]={address!r} must be a str 'host:port'")
        book[node] = address
    return book


@runtime_checkable
class Transport(Protocol):
    """Best-effort delivery of Raft messages from one node to its peers.

    Lifecycle: construct, ``start(handler)`` (or ``start(handler, loop=node_loop)``) once,
    ``send`` (and ``update_peers``) any number of times from any thread, ``close()``.  A
    transport is not restartable; build a new one (for the same node id) instead.
    """

    def start(self, handler: MessageHandler, *,
              loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Begin delivering inbound messages addressed to this node by calling ``handler(msg)``.

        The handler is called from the transport's own thread(s), or on ``loop``'s thread (see
        :data:`MessageHandler`).  Messages that arrive before ``start`` are dropped.

        Args:
            handler: see :data:`MessageHandler`.
            loop: the node's event loop, already running (forever) in the node's loop thread,
                which is not the thread calling ``start``; it may also start running there a
                moment later, as long as it runs before ``start`` gives up waiting for it.  A
                transport that does network IO then runs on that loop instead of a thread of
                its own, calls the handler on that loop's thread, and never stops or closes the
                loop; ``close`` must then be called from another thread than the loop's.  The
                in-memory transport accepts and ignores it.

        Raises:
            OSError: the TCP transport could not listen on its address.
            RaftError: the transport was already started or closed; the TCP transport did not
                start in time, or ``loop`` is closed or is the loop running in the caller's
                thread.
        """
        ...

    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery, each to its ``.dst``.

        Thread-safe and never blocks on the network.  Best effort: a message may be dropped
        (unreachable peer, full queue, injected fault, transport closed).  Every message handed
        here is counted, including those then dropped.  Never raises for delivery problems.
        """
        ...

    def close(self) -> None:
        """Stop the transport's threads (joining them), or its work on the caller's loop (which
        keeps running), and close every socket it opened.

        Idempotent.  Once it returns, the handler is not called again.  Must not be called from
        inside the handler, nor on the loop given to ``start``.
        """
        ...

    def check_peers(self, peers: Mapping[str, str]) -> object:
        """Check that ``peers`` is an address book this transport could use, changing nothing
        (a node checks the addresses of a membership change before proposing it, since every
        member will hand them to its transport).

        Raises:
            ConfigError: ``peers`` is not a mapping of str -> str or an address is malformed.
        """
        ...

    def update_peers(self, peers: Mapping[str, str]) -> None:
        """Replace the address book with ``peers`` (node id -> ``"host:port"``), the full book of
        the node's new effective configuration.

        Thread-safe (callable from any thread, while sends are in flight, the node's loop thread
        included when the transport runs on that loop) and never blocks on the network:
        connection changes happen asynchronously.  The
        node's own entry, if present, is ignored (its listen address cannot change).  Compared
        with the previous book:

        * added ids: later sends to them are delivered (connections open on demand);
        * removed ids: their outbound connection is closed, messages still queued for them are
          dropped, and later sends to them are dropped and counted like sends to an unknown id;
        * changed addresses: the outbound connection is closed and the next message reconnects
          to the new address.

        Inbound connections are accepted from any (authenticated) id, listed or not, so a new
        member can reach this node before it learns of that member.  Also allowed before
        ``start`` and after ``close`` (then it only records the book).

        Raises:
            ConfigError: ``peers`` is not a mapping of str -> str or an address is malformed;
                nothing was changed.
        """
        ...
