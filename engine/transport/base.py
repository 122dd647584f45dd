"""The Transport interface: how a node's runtime hands Raft messages to the network.

A transport moves :class:`~engine.core.messages.Message` records between nodes and nothing else.
It is deliberately lossy (like the network Raft is designed for): ``send`` never blocks on IO
and may drop, and Raft's own retries recover.  Two implementations pass the same contract suite
(``tests/transport/test_contract.py``):

* :class:`~engine.transport.memory.MemoryTransport`, an in-process network for tests and
  benchmarks, with fault injection;
* :class:`~engine.transport.tcp.TcpTransport`, loopback or LAN TCP on an asyncio (uvloop) loop.

Both consult a :class:`~engine.transport.faults.FaultPlan` so that ``LocalCluster.isolate``,
``partition`` and ``set_faults`` behave the same over either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from engine.core.messages import Message

MessageHandler = Callable[[Message], None]
"""Called by the transport with each inbound message addressed to its node.

Called from the transport's own thread(s), possibly from several at once (the in-memory
transport delivers from the sender's thread), so it must be thread-safe, cheap and must not call
back into any transport (it enqueues the message for the node's loop thread and returns).
Exceptions it raises are logged by the transport and otherwise ignored.
"""


@runtime_checkable
class Transport(Protocol):
    """Best-effort delivery of Raft messages from one node to its peers.

    Lifecycle: construct, ``start(handler)`` once, ``send`` any number of times from any thread,
    ``close()``.  A transport is not restartable; build a new one (for the same node id) instead.
    """

    def start(self, handler: MessageHandler) -> None:
        """Begin delivering inbound messages addressed to this node by calling ``handler(msg)``.

        The handler is called from the transport's own thread(s).  Messages that arrive before
        ``start`` are dropped.

        Raises:
            OSError: the TCP transport could not listen on its address.
            RaftError: the transport was already started or closed.
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
        """Stop the transport's threads (joining them) and close every socket it opened.

        Idempotent.  Once it returns, the handler is not called again.  Must not be called from
        inside the handler.
        """
        ...
