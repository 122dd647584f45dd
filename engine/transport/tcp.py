"""TCP transport on an asyncio (uvloop when installed) event loop: a loop thread of its own per
node, or the node's own event loop when the caller provides one.

Topology: every node listens on its own address from ``peers`` and keeps one persistent
*outbound* connection to each peer it has something to send to, opened on demand.  Messages flow
only from the connecting side to the accepting side, so between two nodes there are two
connections, one per direction (as with etcd's per-direction streams).  Responses travel on the
responder's own outbound connection.

Two ways to run (see "Threads and ownership"):

* ``start(handler)``: the transport starts a ``raft-<id>-net`` thread running a loop of its own;
  ``close()`` stops that loop and joins the thread.
* ``start(handler, loop=node_loop)``: the transport lives on the caller's loop, which already runs
  (forever) in the node's loop thread, and has no thread of its own.  Its set-up and shutdown are
  scheduled there with ``run_coroutine_threadsafe``; ``close()`` never stops or closes that loop.
  This saves the two thread hand-offs per message between the node's loop and the network loop.

Sending (any thread): ``send`` counts the messages, asks the :class:`FaultPlan` (when given) what
happens to each, appends the survivors to the destination's bounded queue and wakes the loop with
one ``call_soon_threadsafe`` per burst (a flag suppresses redundant wake-ups).  The loop drains each
queue into a single ``write`` of concatenated frames (coalescing), respecting the socket's flow
control: while the kernel buffer is full (``pause_writing``) messages wait in the bounded queue,
where the oldest are dropped first (and counted) when it overflows: beyond ``max_queue`` messages or
beyond ``max_queue_bytes`` bytes (frame payload estimated from the entries' data; the newest message
is always kept, however large).  Dropping the oldest is the right end for Raft: newer heartbeats and
appends carry newer state, and the leader resends anything lost.  A ``send`` made on the loop thread
itself does not wake the loop: it drains the queues at once, so its frames are in the sockets'
transports (normally already in the kernel) when it returns.  The node's runtime fdatasyncs right
after sending, and the followers should receive the appends while the leader's disk works, not
after.

Unreachable peers: a failed connect or handshake is retried with exponential backoff and jitter
(from a ``random.Random(seed)`` used only by the loop thread).  While backing off, messages for
that peer are dropped (counted) rather than piled up, so a returning peer is not flooded with
stale traffic; Raft retransmits.

Membership changes (``update_peers``, any thread): the new address book is validated, then
installed copy-on-write (see "Threads and ownership") and the loop is asked to reconcile its
links with it.  An added peer gets a queue at once (so sends to it are kept from then on) and a
link on the loop.  A removed peer's queue is detached, so later sends to it are dropped and
counted exactly like sends to an id that was never a peer; the loop then closes its outbound
connection (or cancels the connect attempt / backoff timer) and drops, counting them, the
messages that were still queued.  A peer whose address changed keeps its queue, but its outbound
connection is closed and the next message reconnects to the new address.  Inbound connections
are not touched: they belong to the other node, which stops using them when it drops us.

Faults: with a ``faults`` plan, drop/duplicate/delay decisions are taken on the sending side;
isolation, partitions and one-way cuts are also checked on the receiving side (``link_up`` for
the message's direction, no randomness), so a cut takes effect for messages already in flight.
Share one plan between the transports of a cluster.

Authentication (``secret``): mutual HMAC-SHA256 challenge-response when each connection opens::

    C -> S  HELLO      magic "RFT1", version, flags(auth), src id, dst id, client nonce (16 B)
    S -> C  CHALLENGE  "RFTC", server nonce (16 B), HMAC(secret, "raft-srv" | ctx)   [auth only]
    C -> S  AUTH       "RFTA", HMAC(secret, "raft-cli" | ctx)                          [auth only]
    S -> C  ACCEPT     "RFTK"
    then C -> S frames only.   ctx = client nonce | server nonce | src id | dst id

Both sides verify: the accepting side will not decode a frame from an unauthenticated client, and
the connecting side will not send Raft traffic to a server that cannot prove it knows the secret.
A failed handshake closes the connection and logs a warning; nothing from it reaches the handler.
The accepting side also checks that every frame's ``src`` is the authenticated id.  It accepts any
id except its own, whether or not the id is in its current address book: during a membership
change a new member may connect before this node has learned of it, and Raft (not the transport)
decides what to do with a message from a non-member.  So membership is not an access control:
with a ``secret``, every holder of the secret may connect under any id; without one, anybody may.
The secret only authenticates; use ``ssl_context_server``/``ssl_context_client`` for
confidentiality.

Bad input: a malformed frame closes that connection with a warning; the node keeps running.

Threads and ownership:

* The *loop thread* is the thread that runs the transport's event loop: ``raft-<id>-net`` with a
  loop of its own, or, with ``start(handler, loop=...)``, the caller's thread that runs that loop
  (the transport then has no thread).  Either way it owns every ``_PeerLink``, protocol object,
  socket, connect task, the delay heap and the backoff rng, and is the only thread that calls the
  handler.  The set-up records its ``threading.get_ident()`` in ``self._loop_ident`` (a plain
  store before the transport listens; the own thread clears it when it ends, as idents are
  reused), which ``send`` and ``close`` compare with their own to tell whether they run there.
* ``send`` on the loop thread flushes synchronously (``_flush_now``, the wake-up callback's work
  without the wake-up) and leaves ``self._wake_pending`` alone: a wake-up already scheduled by
  another thread still runs and finds less to do.  Messages a node sends to itself are the
  exception: they are delivered by a ``call_soon`` callback (``self._local_scheduled``, loop
  thread only, prevents piling them up), never from inside ``send``, so a handler or runtime
  step that sends is not re-entered.  A ``send`` from any other thread queues and wakes the loop.
* ``self._outq`` maps each peer (and this node) to a deque (a :class:`_PeerQueue`, which also
  counts its bytes) shared by senders, who append, and the loop, which pops; both hold
  ``self._queue_lock`` while they change a deque and its byte count (a sender that overflows a
  bound drops the oldest under it).  The dict itself is copy-on-write:
  it is never mutated in place, only replaced as a whole by ``update_peers`` (holding
  ``self._book_lock``) with a new dict that reuses the deques of the peers it keeps, so a
  sender or the loop may read and iterate whichever dict it loaded without a lock.  Only the loop
  and overflowing senders remove items from a deque, under ``self._queue_lock`` (a deque detached
  from the dict is emptied by the loop, not by ``update_peers``).  A send that
  loaded the old dict just before a peer was removed may append to its detached deque; such
  messages are dropped (counted as dropped if the loop has not yet emptied that deque, otherwise
  counted only as sent).  ``self._wake_pending`` is a bool both sides write without a lock: the
  loop clears it *before* draining, so a message is never left behind (at worst a spare wake-up).
* ``self._book_lock`` guards the address book (``self._addresses``, also replaced as a whole),
  the swap of ``self._outq``, ``self._book_version`` and the detached deques not yet emptied.  The
  loop's ``self._links`` follow the book: the loop compares ``self._book_version`` with the
  version its links were built from and reconciles them before using them.
* ``self._order_lock`` guards ``self._order`` (per-link FIFO under delays) and
  ``self._delay_inbox``; ``self._count_lock`` guards the counters; ``self._life_lock`` guards the
  lifecycle state, and ``start``/``close`` schedule the set-up and the shutdown on a caller's loop
  while holding it, so that the shutdown is always queued behind the set-up.
* Shutdown on a caller's loop (``close`` from any thread but the loop thread): the transport asks
  the loop to run ``_shutdown`` and waits for it, bounded; the loop keeps running.  When that
  loop is not running (stopped) ``close`` does not wait: the shutdown stays queued and runs if
  the loop runs again.  When it is closed, ``close`` releases what it can from its own thread
  (see :meth:`TcpTransport.close`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import hmac
import logging
import math
import os
import random
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from operator import itemgetter

from engine.core.messages import Message, MessageKind
from engine.errors import ConfigError, FrameError, RaftError
from engine.eventloop import close_event_loop, new_event_loop
from engine.transport.base import MessageHandler, check_peer_book
from engine.transport.faults import FaultPlan, LinkOrder
from engine.transport.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_ID_BYTES,
    FrameDecoder,
    encode_message,
)

logger = logging.getLogger(__name__)

_KINDS = tuple(MessageKind)
_KIND_SLOTS = max(int(k) for k in _KINDS) + 1

_HELLO = struct.Struct("<4sBBHH16s")
_HELLO_MAGIC = b"RFT1"
_HS_VERSION = 1
_FLAG_AUTH = 0x01
_CHALLENGE = struct.Struct("<4s16s32s")
_CHALLENGE_MAGIC = b"RFTC"
_AUTH = struct.Struct("<4s32s")
_AUTH_MAGIC = b"RFTA"
_ACCEPT = b"RFTK"
_NONCE = 16

_WRITE_CHUNK = 1 << 20  # bytes of frames joined into one write
_MESSAGE_WIRE_OVERHEAD = 96  # estimated frame bytes of a message besides entries and data
_ENTRY_WIRE_OVERHEAD = 16  # estimated frame bytes of one entry besides its data
_data_of = itemgetter(3)  # Entry.data
_KEEPALIVE_IDLE = 5  # seconds idle before the first keepalive probe
_KEEPALIVE_INTERVAL = 2  # seconds between probes
_KEEPALIVE_COUNT = 3  # unanswered probes before the kernel drops the connection
_CLOSE_TIMEOUT = 10.0  # seconds close() waits for the shutdown on a caller's loop
_CLOSE_POLL = 0.05  # while waiting, how often close() checks that the caller's loop still runs

# _PeerLink states
_IDLE = "idle"  # no connection; the next queued message opens one
_CONNECTING = "connecting"  # connect + handshake in progress; messages queue
_CONNECTED = "connected"  # handshake done; queued messages are written
_BACKOFF = "backoff"  # last attempt failed; messages are dropped until the timer fires



def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago (each bound to
    port 0 by the kernel, then released).  For tests, benchmarks and LocalCluster."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()

class HandshakeError(FrameError):
    """A connection's opening handshake failed (bad magic, wrong node, bad HMAC, timeout)."""


def _proof(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes, src: bytes,
           dst: bytes) -> bytes:
    ctx = b"".join((label, client_nonce, server_nonce, len(src).to_bytes(2, "little"), src,
                    len(dst).to_bytes(2, "little"), dst))
    return hmac.digest(secret, ctx, "sha256")


def parse_address(node_id: str, address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (``"[v6]:port"`` for IPv6) into ``(host, port)``.

    Raises:
        ConfigError: not of that form, or the port is not in 0..65535.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"peers[{node_id!r}]={address!r} must be 'host:port'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"peers[{node_id!r}]={address!r}: port {port_text!r} is not an integer"
                          ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"peers[{node_id!r}]={address!r}: port {port} must be in 0..65535")
    return host, port


def _running_loop_is(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the loop running in the calling thread (inside a callback or task)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs in this thread
        return False


def _tune_socket(transport: asyncio.BaseTransport) -> None:
    """No Nagle delay (Raft messages are latency-bound and we coalesce writes ourselves), and
    TCP keepalive so that a connection to a vanished host is eventually noticed and reopened."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, _KEEPALIVE_IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, _KEEPALIVE_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_COUNT)
    except OSError as exc:  # not fatal: the defaults still work
        logger.debug("cannot tune socket options: %s", exc)


class _PeerLink:
    """The outbound side towards one peer.  Owned by the loop thread."""

    __slots__ = ("epoch", "failures", "host", "paused", "peer_id", "port", "protocol", "state",
                 "task", "timer")

    def __init__(self, peer_id: str, host: str, port: int) -> None:
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.state = _IDLE
        self.protocol: _OutboundProtocol | None = None
        self.failures = 0  # consecutive failed attempts; reset by a completed handshake
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False  # the socket asked us to stop writing (flow control)
        self.epoch = 0  # bumped by _reset_link: a connect attempt from an older epoch is stale


class _BaseProtocol(asyncio.Protocol):
    """Tracks the connection in the owner's set so shutdown can close it.  Loop thread only."""

    def __init__(self, owner: TcpTransport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.peername: object = None
        self.buf = bytearray()  # handshake bytes received so far

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        self.owner._protocols.add(self)
        _tune_socket(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        protocols = self.owner._protocols
        protocols.discard(self)
        if not protocols and self.owner._all_closed is not None:
            self.owner._all_closed.set()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _InboundProtocol(_BaseProtocol):
    """The accepting side: handshake, then frames -> handler.  Loop thread only."""

    def __init__(self, owner: TcpTransport) -> None:
        super().__init__(owner)
        self.state = "hello"  # -> "auth" -> "frames"
        self.peer_id = ""
        self.client_nonce = b""
        self.server_nonce = b""
        self.decoder = FrameDecoder(owner._max_frame_size)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = self.owner._loop
        if loop is not None:
            self.timer = loop.call_later(self.owner._handshake_timeout, self._handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.state in ("hello", "auth"):
            logger.debug("%s: inbound connection from %s (claims %r) closed during handshake",
                         self.owner.node_id, self.peername, self.peer_id or None)
        super().connection_lost(exc)

    def _handshake_timeout(self) -> None:
        self.timer = None
        if self.state != "frames":
            self._refuse("handshake not completed within "
                         f"{self.owner._handshake_timeout}s")

    def _refuse(self, reason: str) -> None:
        logger.warning("%s: refused inbound connection from %s (claims %r): %s",
                       self.owner.node_id, self.peername, self.peer_id or None, reason)
        self.owner.connections_refused += 1
        self.state = "refused"
        self.abort()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def data_received(self, data: bytes) -> None:
        self.owner.bytes_received += len(data)
        if self.state == "frames":
            self._frames(data)
            return
        if self.state == "refused":
            return
        self.buf += data
        if self.state == "hello":
            self._hello()
        if self.state == "auth":
            self._auth()
        if self.state == "frames" and self.buf:
            rest = bytes(self.buf)
            self.buf.clear()
            self._frames(rest)

    def _hello(self) -> None:
        owner = self.owner
        if len(self.buf) < _HELLO.size:
            return
        magic, version, flags, src_len, dst_len, nonce = _HELLO.unpack_from(self.buf)
        if magic != _HELLO_MAGIC:
            self._refuse(f"bad hello magic {magic!r}: not a raft transport peer")
            return
        if version != _HS_VERSION:
            self._refuse(f"handshake version {version}, this node speaks {_HS_VERSION}")
            return
        if not 0 < src_len <= MAX_ID_BYTES or not 0 < dst_len <= MAX_ID_BYTES:
            self._refuse(f"hello id lengths {src_len}/{dst_len} out of range")
            return
        end = _HELLO.size + src_len + dst_len
        if len(self.buf) < end:
            return
        try:
            src = self.buf[_HELLO.size:_HELLO.size + src_len].decode()
            dst = self.buf[_HELLO.size + src_len:end].decode()
        except UnicodeDecodeError:
            self._refuse("hello ids are not utf-8")
            return
        self.peer_id = src
        del self.buf[:end]
        if dst != owner.node_id:
            self._refuse(f"connection meant for node {dst!r} reached {owner.node_id!r}")
            return
        # Any other id is accepted, listed in our book or not (see the module docstring).
        if src == owner.node_id:
            self._refuse(f"a connection claiming to come from {src!r} reached {src!r} itself")
            return
        wants_auth = bool(flags & _FLAG_AUTH)
        if wants_auth != (owner._secret is not None):
            self._refuse("authentication mismatch: peer "
                         f"{'uses' if wants_auth else 'does not use'} a secret, this node "
                         f"{'does' if owner._secret is not None else 'does not'}")
            return
        if owner._secret is None:
            self._accept()
            return
        self.client_nonce = nonce
        self.server_nonce = os.urandom(_NONCE)
        proof = _proof(owner._secret, b"raft-srv", nonce, self.server_nonce, src.encode(),
                       dst.encode())
        self.state = "auth"
        assert self.transport is not None
        self.transport.write(_CHALLENGE.pack(_CHALLENGE_MAGIC, self.server_nonce, proof))

    def _auth(self) -> None:
        owner = self.owner
        if len(self.buf) < _AUTH.size:
            return
        magic, proof = _AUTH.unpack_from(self.buf)
        del self.buf[:_AUTH.size]
        if magic != _AUTH_MAGIC:
            self._refuse(f"bad auth magic {magic!r}")
            return
        assert owner._secret is not None
        expected = _proof(owner._secret, b"raft-cli", self.client_nonce, self.server_nonce,
                          self.peer_id.encode(), owner.node_id.encode())
        if not hmac.compare_digest(proof, expected):
            owner.auth_failures += 1
            self._refuse("HMAC authentication failed (wrong secret?)")
            return
        self._accept()

    def _accept(self) -> None:
        self.state = "frames"
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        assert self.transport is not None
        self.transport.write(_ACCEPT)
        logger.debug("%s: accepted connection from %s at %s", self.owner.node_id, self.peer_id,
                     self.peername)

    def _frames(self, data: bytes | bytearray) -> None:
        owner = self.owner
        handler = owner._handler
        faults = owner._faults
        me = owner.node_id
        peer = self.peer_id
        try:
            for msg in self.decoder.feed(data):
                if msg.src != peer:
                    raise FrameError(f"{msg.kind.name} frame claims src {msg.src!r} on a "
                                     f"connection authenticated as {peer!r}")
                if msg.dst != me:
                    raise FrameError(f"{msg.kind.name} frame for {msg.dst!r} reached {me!r}")
                if faults is not None and not faults.link_up(peer, me):
                    logger.debug("%s: dropped %s from %s: link cut", me, msg.kind.name, peer)
                    continue
                if handler is not None:
                    try:
                        handler(msg)
                    except Exception:
                        logger.exception("%s: handler raised on %s from %s; message dropped",
                                         me, msg.kind.name, peer)
        except FrameError as exc:
            owner.frames_malformed += 1
            logger.warning("%s: closing connection from %s (%s): bad frame: %s", me, peer,
                           self.peername, exc)
            self.state = "refused"
            self.abort()


class _OutboundProtocol(_BaseProtocol):
    """The connecting side: handshake, then the loop writes frames.  Loop thread only."""

    def __init__(self, owner: TcpTransport, link: _PeerLink) -> None:
        super().__init__(owner)
        self.link = link
        assert owner._loop is not None
        self.ready: asyncio.Future[None] = owner._loop.create_future()
        # Retrieve the exception even if nobody awaits (cancelled connect), to keep logs clean.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.nonce = os.urandom(_NONCE)
        self.state = "challenge" if owner._secret is not None else "accept"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        owner = self.owner
        src = owner.node_id.encode()
        dst = self.link.peer_id.encode()
        flags = _FLAG_AUTH if owner._secret is not None else 0
        hello = _HELLO.pack(_HELLO_MAGIC, _HS_VERSION, flags, len(src), len(dst), self.nonce)
        self.transport.write(hello + src + dst)  # type: ignore[union-attr]

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(reason))
        self.state = "failed"
        self.abort()

    def data_received(self, data: bytes) -> None:
        if self.state in ("ready", "failed"):
            if self.state == "ready":
                logger.warning("%s: peer %s sent %d unexpected bytes; closing",
                               self.owner.node_id, self.link.peer_id, len(data))
                self.state = "failed"
                self.abort()
            return
        self.buf += data
        owner = self.owner
        if self.state == "challenge":
            if len(self.buf) < _CHALLENGE.size:
                return
            magic, server_nonce, proof = _CHALLENGE.unpack_from(self.buf)
            del self.buf[:_CHALLENGE.size]
            if magic != _CHALLENGE_MAGIC:
                self._fail(f"bad challenge magic {magic!r}")
                return
            assert owner._secret is not None
            src, dst = owner.node_id.encode(), self.link.peer_id.encode()
            expected = _proof(owner._secret, b"raft-srv", self.nonce, server_nonce, src, dst)
            if not hmac.compare_digest(proof, expected):
                self._fail("server failed HMAC authentication (wrong secret?)")
                return
            answer = _proof(owner._secret, b"raft-cli", self.nonce, server_nonce, src, dst)
            self.transport.write(_AUTH.pack(_AUTH_MAGIC, answer))  # type: ignore[union-attr]
            self.state = "accept"
        if self.state == "accept":
            if len(self.buf) < len(_ACCEPT):
                return
            if bytes(self.buf[:len(_ACCEPT)]) != _ACCEPT or len(self.buf) > len(_ACCEPT):
                self._fail(f"bad accept {bytes(self.buf[:8])!r}")
                return
            self.buf.clear()
            self.state = "ready"
            if not self.ready.done():
                self.ready.set_result(None)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ready.done():
            self.ready.set_exception(HandshakeError(f"connection closed during handshake: {exc}"))
        self.owner._outbound_lost(self, exc)

    def pause_writing(self) -> None:
        if self.link.protocol is self:
            self.link.paused = True

    def resume_writing(self) -> None:
        self.link.paused = False
        if self.link.protocol is self:
            self.owner._flush(self.link)


def _wire_size(msg: Message) -> int:
    """The frame bytes ``msg`` will take, estimated without encoding it (what the queue byte
    bound counts): the payloads of its entries and its data plus fixed overheads."""
    entries = msg.entries
    if entries:
        return (_MESSAGE_WIRE_OVERHEAD + len(msg.data) + _ENTRY_WIRE_OVERHEAD * len(entries)
                + sum(map(len, map(_data_of, entries))))
    return _MESSAGE_WIRE_OVERHEAD + len(msg.data)


class _PeerQueue(deque):  # type: ignore[type-arg]
    """The messages waiting for one peer, oldest first, and their :func:`_wire_size` total.
    Changed only under ``TcpTransport._queue_lock``."""

    nbytes: int = 0


class TcpTransport:
    """A :class:`~engine.transport.base.Transport` over TCP (optionally TLS).

    Args:
        node_id: this node's id; ``peers[node_id]`` is the address it listens on (port 0 picks a
            free port, see :attr:`bound_address`).
        peers: every member's id -> ``"host:port"``, this node included.  Replaced later with
            :meth:`update_peers` (this node's own address cannot change).
        faults: a FaultPlan to apply (share one per cluster); None for a perfect network.
        secret: shared key for the HMAC-SHA256 handshake; None disables authentication (then
            every peer must also have None).
        ssl_context_server: TLS context for the listening socket, or None.
        ssl_context_client: TLS context for outbound connections, or None.
        max_queue: messages queued per peer before the oldest are dropped.
        max_queue_bytes: bytes (estimated frame size) queued per peer before the oldest are
            dropped; the newest message is kept even when it alone is larger.
        max_frame_size: largest frame sent or accepted, in bytes.
        seed: seed for the reconnect-jitter rng (None: from the OS).
        backoff_min: first reconnect delay in seconds (doubled per failure, with jitter).
        backoff_max: cap of the reconnect delay in seconds.
        connect_timeout: seconds allowed for one TCP (and TLS) connect.
        handshake_timeout: seconds allowed for the authentication handshake.

    Inbound connections are accepted from any authenticated id other than ``node_id``, listed
    in ``peers`` or not (see the module docstring).

    It runs on a ``raft-<id>-net`` thread of its own (``start(handler)``) or on the node's event
    loop (``start(handler, loop=node_loop)``); see :meth:`start`.

    Raises:
        ConfigError: ``node_id`` not in ``peers``, an address not ``host:port``, an empty secret
            or a non-positive limit.
    """

    def __init__(self, node_id: str, peers: Mapping[str, str], *, faults: FaultPlan | None = None,
                 secret: bytes | None = None,
                 ssl_context_server: ssl.SSLContext | None = None,
                 ssl_context_client: ssl.SSLContext | None = None,
                 max_queue: int = 1024, max_queue_bytes: int = 64 << 20,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 seed: int | None = None, backoff_min: float = 0.02, backoff_max: float = 1.0,
                 connect_timeout: float = 2.0, handshake_timeout: float = 2.0) -> None:
        peers = check_peer_book(peers)
        if node_id not in peers:
            raise ConfigError(f"node_id={node_id!r} must be a key of peers ({sorted(peers)})")
        addresses = {peer: parse_address(peer, addr) for peer, addr in sorted(peers.items())}
        if secret is not None and (not isinstance(secret, bytes | bytearray) or not secret):
            raise ConfigError("secret must be non-empty bytes or None")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"max_queue={max_queue!r} must be an int >= 1")
        if isinstance(max_queue_bytes, bool) or not isinstance(max_queue_bytes, int) \
                or max_queue_bytes < 1:
            raise ConfigError(f"max_queue_bytes={max_queue_bytes!r} must be an int >= 1")
        if max_frame_size < 1024:
            raise ConfigError(f"max_frame_size={max_frame_size} must be >= 1024")
        for name, value in (("backoff_min", backoff_min), ("backoff_max", backoff_max),
                            ("connect_timeout", connect_timeout),
                            ("handshake_timeout", handshake_timeout)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}={value!r} must be a finite number > 0")
        if backoff_min > backoff_max:
            raise ConfigError(f"backoff_min={backoff_min} must be <= backoff_max={backoff_max}")

        self.node_id = node_id
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        # Guards the contents of every _PeerQueue and its byte count (see the module docstring).
        self._queue_lock = threading.Lock()
        # Guarded by self._book_lock; _addresses and _outq are replaced, never mutated.
        self._book_lock = threading.Lock()
        self._addresses: dict[str, tuple[str, int]] = addresses
        self._book_version = 0  # bumped by every update_peers that changes the book
        self._detached: list[_PeerQueue] = []  # queues of removed peers, emptied by the loop
        self._faults = faults
        self._secret = bytes(secret) if secret is not None else None
        self._ssl_server = ssl_context_server
        self._ssl_client = ssl_context_client
        self._max_frame_size = max_frame_size
        self._backoff_min = float(backoff_min)
        self._backoff_max = float(backoff_max)
        self._connect_timeout = float(connect_timeout)
        self._handshake_timeout = float(handshake_timeout)

        # Shared, see the module docstring: senders append, the loop pops; copy-on-write.
        self._outq: dict[str, _PeerQueue] = {
            peer: _PeerQueue((), max_queue) for peer in addresses}
        self._wake_pending = False
        # Guarded by self._order_lock.
        self._order_lock = threading.Lock()
        self._order = LinkOrder()
        self._delay_inbox: deque[tuple[float, str, Message]] = deque()
        # Guarded by self._count_lock.
        self._count_lock = threading.Lock()
        self._sent = 0
        self._per_kind = [0] * _KIND_SLOTS
        self._dropped = 0
        # Guarded by self._life_lock ("new" -> "started" -> "closing" -> "closed").  send()
        # reads _state without the lock: a send racing close() may queue messages that are
        # then never written (they are counted as sent, not as dropped).
        self._life_lock = threading.Lock()
        self._state = "new"
        self._thread: threading.Thread | None = None  # raft-<id>-net; None on a caller's loop
        self._handler: MessageHandler | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._bound: tuple[str, int] | None = None
        self._own_loop = True  # False once start(loop=...) put the transport on a caller's loop
        # The shutdown scheduled by close() on a caller's loop (None: not yet, or that loop was
        # already closed).
        self._close_future: concurrent.futures.Future[None] | None = None
        # The loop the transport runs on: set by the raft-<id>-net thread before it starts the
        # loop, or by start(loop=...) before it schedules the set-up; never changed afterwards.
        self._loop: asyncio.AbstractEventLoop | None = None
        # threading.get_ident() of the loop thread: stored by the set-up before it listens,
        # cleared when the raft-<id>-net thread ends; read by send() and close() on any thread.
        self._loop_ident: int | None = None
        # Owned by the loop thread.
        self._stop: asyncio.Future[None] | None = None  # own loop: resolved by close()
        self._stop_requested = False  # also written by close() (a plain store)
        self._setup_task: asyncio.Task[None] | None = None  # caller's loop: the set-up
        self._running = False  # listening and not shutting down
        self._links: dict[str, _PeerLink] = {
            peer: _PeerLink(peer, host, port) for peer, (host, port) in addresses.items()
            if peer != node_id}
        self._links_version = 0  # the _book_version that _links reflect
        self._protocols: set[_BaseProtocol] = set()
        self._all_closed: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connect_tasks: set[asyncio.Task[None]] = set()  # pending, stale ones included
        self._local_scheduled = False  # a call_soon(_on_local) is pending (send on the loop)
        self._frames_written = 0  # frames handed to sockets (read racily by frames_written())
        # Metrics counters, written by the loop thread only, read racily (ints, under the GIL)
        # by engine.metrics at scrape time.
        self.bytes_written = 0  # frame bytes handed to the sockets
        self.bytes_received = 0  # bytes read from inbound connections (handshakes included)
        self.frames_malformed = 0  # inbound connections closed on a bad frame
        self.connections_refused = 0  # inbound connections refused at the handshake
        self.auth_failures = 0  # ... of which failed the HMAC authentication
        self._rng = random.Random(seed)
        self._delay_heap: list[tuple[float, int, str, Message]] = []
        self._delay_seq = 0
        self._delay_timer: asyncio.TimerHandle | None = None
        self._delay_timer_when = math.inf

    def __repr__(self) -> str:
        return f"TcpTransport({self.node_id!r}, {self._state}, bound={self._bound})"

    # ------------------------------------------------------------------ public API

    @property
    def bound_address(self) -> tuple[str, int] | None:
        """``(host, port)`` the listener is bound to once started (useful with port 0)."""
        return self._bound

    def start(self, handler: MessageHandler, timeout: float = 10.0, *,
              loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Listen and begin calling ``handler`` with inbound messages; returns once listening.

        Without ``loop``: starts the ``raft-<id>-net`` thread, which runs a loop of its own and
        calls the handler.

        With ``loop`` (the node's event loop, running forever in another thread, or starting to
        run there within ``timeout``): no thread is started.  The set-up is scheduled on that
        loop with ``run_coroutine_threadsafe`` and this call waits for it.  From then on the
        transport's connections, timers and tasks live on that loop, the handler is called on
        its thread, and ``send`` on that thread writes before returning (see the module
        docstring).  The loop stays the caller's: the transport never stops or closes it.

        Raises:
            RaftError: already started or closed; start-up took longer than ``timeout`` (the
                transport is then closed); ``loop`` is closed, or it is the loop running in the
                calling thread (its set-up could not run while this call waits).
            ConfigError: ``loop`` is not an asyncio event loop.
            OSError: the listening address could not be bound (the own thread is joined
                first; a caller's loop keeps running).  The transport is then closed.
        """
        if loop is not None:
            if not isinstance(loop, asyncio.AbstractEventLoop):
                raise ConfigError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
            if _running_loop_is(loop):
                raise RaftError(f"tcp transport {self.node_id!r}: start(loop=...) must be called "
                                "from another thread than the loop's own")
        with self._life_lock:
            if self._state != "new":
                raise RaftError(f"tcp transport {self.node_id!r} is {self._state}; "
                                "start() may be called once")
            self._handler = handler
            thread: threading.Thread | None = None
            if loop is None:
                self._state = "started"
                self._thread = thread = threading.Thread(
                    target=self._run, name=f"raft-{self.node_id}-net", daemon=True)
                thread.start()
            else:
                self._own_loop = False
                self._loop = loop
                self._state = "started"
                # Scheduled under the lock, so that a close() racing this start() queues its
                # shutdown behind the set-up (see the module docstring).
                coro = self._start_on_caller_loop()
                try:
                    setup = asyncio.run_coroutine_threadsafe(coro, loop)
                except RuntimeError as exc:  # the loop is closed
                    coro.close()
                    self._handler = None
                    self._state = "closed"
                    raise RaftError(f"tcp transport {self.node_id!r}: cannot start on a closed "
                                    "event loop") from exc
        if thread is None:
            self._wait_set_up(setup, timeout)
            return
        if not self._started.wait(timeout):
            self.close()
            raise RaftError(f"tcp transport {self.node_id!r} did not start within {timeout}s")
        if self._start_error is not None:
            thread.join()
            with self._life_lock:
                self._state = "closed"
            raise self._start_error

    def _wait_set_up(self, setup: concurrent.futures.Future[None], timeout: float) -> None:
        """``start(loop=...)``: wait for the set-up on the caller's loop and report its outcome
        as ``start`` documents it."""
        done, _ = concurrent.futures.wait((setup,), timeout)
        if not done:
            self.close()
            raise RaftError(f"tcp transport {self.node_id!r} did not start within {timeout}s "
                            "(is its event loop running?)")
        exc = None if setup.cancelled() else setup.exception()
        if exc is None and not setup.cancelled():
            return
        if isinstance(exc, OSError):  # cannot listen: nothing was opened
            with self._life_lock:
                self._handler = None
                self._state = "closed"
            raise exc
        self.close()
        raise RaftError(f"tcp transport {self.node_id!r}: set-up on the event loop failed: "
                        f"{'cancelled' if exc is None else repr(exc)}") from exc

    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for their peers; see :meth:`Transport.send`.  Never raises.

        Any thread.  On the loop thread, what is queued for connected peers is written to their
        sockets before this returns (the frames are then in the kernel, or in the socket's write
        buffer when the kernel's is full); a peer not connected yet starts connecting and its
        messages wait in its queue; messages to this node itself are delivered by a later loop
        callback, never from inside this call.  On any other thread, the loop is woken to write.
        """
        count = len(messages)
        if not count:
            return
        dropped = 0
        with self._count_lock:
            self._sent += count
            per_kind = self._per_kind
            for msg in messages:
                per_kind[msg.kind] += 1
        if self._state != "started":
            with self._count_lock:
                self._dropped += count
            return
        outq = self._outq
        plan = self._faults
        enqueue = self._enqueue
        if plan is None or (not plan.active and not self._order.has_pending()):
            with self._queue_lock:
                for msg in messages:
                    queue = outq.get(msg.dst)
                    if queue is None:
                        dropped += 1
                        continue
                    dropped += enqueue(queue, msg)
        else:
            src = self.node_id
            decide = plan.decide_ordered
            with self._order_lock:
                order = self._order
                now = time.monotonic()
                for msg in messages:
                    queue = outq.get(msg.dst)
                    if queue is None:
                        dropped += 1
                        continue
                    delays, reorder = decide(src, msg.dst)
                    for delay in delays:
                        due = order.schedule(msg.dst, now, delay, reorder)
                        if due is None:
                            with self._queue_lock:
                                dropped += enqueue(queue, msg)
                        else:
                            self._delay_inbox.append((due, msg.dst, msg))
        if dropped:
            with self._count_lock:
                self._dropped += dropped
        if threading.get_ident() == self._loop_ident:
            self._flush_now()  # on the loop thread: write before returning
        else:
            self._wake()

    def _enqueue(self, queue: _PeerQueue, msg: Message) -> int:
        """Append ``msg`` (``self._queue_lock`` held), dropping the oldest messages while a
        bound is exceeded (never ``msg`` itself).  Returns how many were dropped."""
        dropped = 0
        if len(queue) == queue.maxlen:
            queue.nbytes -= _wire_size(queue.popleft())
            dropped = 1
        queue.append(msg)
        queue.nbytes += _wire_size(msg)
        limit = self._max_queue_bytes
        while queue.nbytes > limit and len(queue) > 1:
            queue.nbytes -= _wire_size(queue.popleft())
            dropped += 1
        return dropped

    def queued_bytes(self, peer: str) -> int:
        """Estimated frame bytes waiting in ``peer``'s queue (0 for an unknown peer)."""
        queue = self._outq.get(peer)
        return queue.nbytes if queue is not None else 0

    def check_peers(self, peers: Mapping[str, str]) -> dict[str, tuple[str, int]]:
        """Check an address book without using it; returns the parsed addresses of the other
        nodes.  See :meth:`Transport.check_peers`.

        Raises:
            ConfigError: not a mapping of str -> str, or an address is not ``host:port``.
        """
        book = check_peer_book(peers)
        return {peer: parse_address(peer, address) for peer, address in sorted(book.items())
                if peer != self.node_id}

    def update_peers(self, peers: Mapping[str, str]) -> None:
        """Replace the address book; see :meth:`Transport.update_peers`.  Any thread, the loop
        thread included; never blocks on IO (the loop closes and opens connections later).

        ``peers`` is the full new book; this node's own entry, if present, is ignored.  Added
        peers can be sent to as soon as this returns.  Removed peers: later sends to them are
        dropped and counted in :meth:`dropped_count` (as for an id that never was a peer), as
        are the messages still queued for them; their outbound connection is closed.  Changed
        addresses: queued messages are kept, the outbound connection is closed and the next
        message connects to the new address.  Allowed in every state (before ``start`` the book
        is used when the loop starts; after ``close`` it is only recorded).

        Raises:
            ConfigError: not a mapping of str -> str, or an address is not ``host:port``;
                nothing was changed.
        """
        parsed = self.check_peers(peers)
        with self._book_lock:
            old = self._addresses
            parsed[self.node_id] = old[self.node_id]
            if parsed == old:
                return
            old_outq = self._outq
            outq: dict[str, _PeerQueue] = {}
            for peer in parsed:
                queue = old_outq.get(peer)
                outq[peer] = queue if queue is not None else _PeerQueue((), self._max_queue)
            self._detached.extend(queue for peer, queue in old_outq.items() if peer not in outq)
            self._addresses = parsed
            self._outq = outq  # one atomic store: senders see the old or the new dict
            self._book_version += 1
        added = sorted(set(parsed) - set(old))
        removed = sorted(set(old) - set(parsed))
        moved = sorted(p for p in parsed if p in old and parsed[p] != old[p])
        logger.info("%s: peers updated: added %s, removed %s, address changed %s", self.node_id,
                    added, removed, moved)
        loop = self._loop
        if loop is not None:
            # Otherwise the loop has not started yet and syncs its links when it does.
            with contextlib.suppress(RuntimeError):  # loop closed: the transport is closed
                loop.call_soon_threadsafe(self._sync_links)

    def close(self) -> None:
        """Stop listening and close every connection; idempotent.  Once it returns the handler
        is not called again (but see the timeout below).

        Own loop: stops that loop and joins ``raft-<id>-net``.

        Caller's loop: asks that loop to shut the transport down (close the listener, cancel
        connect attempts and timers, abort every connection and wait, at most 5 s, until they
        are closed) and waits for that, at most 10 s.  The loop keeps running; it is never
        stopped or closed here.  If the loop is stuck for those 10 s, close() logs an error and
        returns anyway: a handler call already under way may still finish after that, and the
        shutdown completes whenever the loop gets to it.  If the loop is not running (stopped),
        close() returns at once: the shutdown stays queued on it and releases the sockets if the
        loop runs again (with uvloop, ``loop.close()`` releases them too).  If the loop is
        closed, nothing can run on it any more, so close() releases what it can from the calling
        thread: it closes the listener (asyncio frees its socket at once; uvloop freed every
        socket in ``loop.close()`` already) and aborts the connections (asyncio's loop leaves
        their sockets to the garbage collector).

        Raises:
            RaftError: called on the loop thread (from the handler, or from any callback or
                task on a caller's loop): the shutdown needs that loop to run while close()
                waits.
        """
        with self._life_lock:
            if self._state == "new":
                self._state = "closed"
                return
            if self._state == "closed":
                return
            if self._on_loop_thread():
                raise RaftError("TcpTransport.close() must not be called on its loop thread")
            first = self._state == "started"
            self._state = "closing"
            self._stop_requested = True
            thread = self._thread
            loop = self._loop
            if not self._own_loop and first and loop is not None:
                coro = self._shutdown_on_caller_loop()
                try:
                    self._close_future = asyncio.run_coroutine_threadsafe(coro, loop)
                except RuntimeError:  # the loop is closed: nothing can run on it any more
                    coro.close()
                    self._release_on_closed_loop()
            future = self._close_future
        if thread is not None:
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(self._request_stop)
            thread.join()
        elif future is not None and loop is not None:
            self._wait_shut_down(future, loop)
            self._handler = None  # in case the wait gave up (a plain store the loop reads)
        with self._life_lock:
            self._state = "closed"

    def _on_loop_thread(self) -> bool:
        """Whether the calling thread is the loop thread (also before the set-up has run)."""
        if threading.get_ident() == self._loop_ident:
            return True
        loop = self._loop
        return loop is not None and _running_loop_is(loop)

    def _wait_shut_down(self, future: concurrent.futures.Future[None],
                        loop: asyncio.AbstractEventLoop) -> None:
        """``close()`` on a caller's loop: wait for the shutdown, at most ``_CLOSE_TIMEOUT``
        seconds, and not at all once the loop is seen not running (it may never run again)."""
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        while True:
            try:
                future.result(_CLOSE_POLL)
                return
            except concurrent.futures.CancelledError:
                logger.warning("%s: shutdown on the event loop was cancelled", self.node_id)
                return
            except TimeoutError:
                if future.done():  # the shutdown itself raised it
                    logger.exception("%s: shutdown on the event loop failed", self.node_id)
                    return
                if not loop.is_running():
                    logger.warning("%s: the event loop is not running; the transport's shutdown "
                                   "stays queued on it", self.node_id)
                    return
                if time.monotonic() >= deadline:
                    logger.error("%s: the shutdown on the event loop did not finish within %ss",
                                 self.node_id, _CLOSE_TIMEOUT)
                    return
            except Exception:
                logger.exception("%s: shutdown on the event loop failed", self.node_id)
                return

    def _release_on_closed_loop(self) -> None:
        """``close()`` when the caller's loop is already closed: no thread can run that loop any
        more, so the calling thread may touch its objects.  Best effort (see ``close``)."""
        logger.warning("%s: the event loop was closed before the transport; releasing its "
                       "sockets from %s", self.node_id, threading.current_thread().name)
        self._running = False
        self._handler = None
        server = self._server
        if server is not None:
            with contextlib.suppress(Exception):
                server.close()
        for protocol in list(self._protocols):
            with contextlib.suppress(Exception):  # asyncio: "Event loop is closed"
                protocol.abort()
        self._protocols.clear()  # let the garbage collector close what abort() could not
        self._connect_tasks.clear()

    def message_count(self) -> int:
        """Messages handed to ``send`` since creation or ``reset_counts()`` (dropped included)."""
        with self._count_lock:
            return self._sent

    def message_counts(self) -> dict[str, int]:
        """``message_count()`` split by :class:`MessageKind` name (every kind present)."""
        with self._count_lock:
            return {kind.name: self._per_kind[kind] for kind in _KINDS}

    def dropped_count(self) -> int:
        """Messages this transport dropped itself: full queue (oldest first), unknown peer (never
        in the book, or removed by :meth:`update_peers`, including what was still queued for
        it), peer unreachable (backing off), not started or closed, unencodable.  Fault-plan
        drops and messages lost with a broken connection are not included.  Approximate under
        concurrent senders (a full-queue drop may be miscounted by one; a send racing the
        removal of its destination may not be counted)."""
        with self._count_lock:
            return self._dropped

    def frames_written(self) -> int:
        """Frames handed to the sockets' ``write`` so far (never reset).  Incremented by the
        loop thread only; read from another thread it may lag by the write in progress.  For
        tests and diagnostics (e.g. that ``send`` on the loop thread wrote before returning)."""
        return self._frames_written

    def reset_counts(self) -> None:
        """Zero the counters (not :meth:`frames_written`)."""
        with self._count_lock:
            self._sent = 0
            self._per_kind = [0] * _KIND_SLOTS
            self._dropped = 0

    # ------------------------------------------------------------------ any thread -> loop

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        loop = self._loop
        if loop is None:
            return
        try:  # noqa: SIM105 (hot path: cheaper than contextlib.suppress)
            loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:  # loop closed under us: the transport is closing, drop.
            pass

    def _request_stop(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    # ------------------------------------------------------------------ loop thread

    def _run(self) -> None:
        """Body of the ``raft-<id>-net`` thread (own loop only)."""
        try:
            loop = new_event_loop()
        except BaseException as exc:
            logger.exception("%s: cannot create an event loop", self.node_id)
            self._start_error = exc
            self._started.set()
            return
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # never let the thread die silently
            logger.exception("%s: network loop failed", self.node_id)
            if not self._started.is_set():
                self._start_error = exc
        finally:
            try:
                close_event_loop(loop)
            finally:
                self._loop_ident = None  # this thread is gone; its ident may be reused
                self._started.set()

    async def _main(self) -> None:
        """The own loop's one task: set up, serve until ``close`` resolves ``self._stop``, then
        shut down (``_run`` then closes the loop)."""
        assert self._loop is not None
        self._stop = self._loop.create_future()
        try:
            await self._setup()
        except OSError as exc:
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        if self._stop_requested:
            self._request_stop()
        await self._stop
        await self._shutdown()

    async def _start_on_caller_loop(self) -> None:
        """``start(loop=...)``: the set-up, as a task on the caller's loop.  Serving needs no
        task of its own there; ``close`` schedules ``_shutdown_on_caller_loop``."""
        self._setup_task = asyncio.current_task()
        if self._stop_requested:  # start() timed out and close() came before the loop did
            return
        await self._setup()

    async def _shutdown_on_caller_loop(self) -> None:
        """``close()`` on a caller's loop.  Waits for a set-up still in progress first (it was
        scheduled earlier, so ``self._setup_task`` is already set), so that a listener it is
        still opening is closed too."""
        setup = self._setup_task
        if setup is not None and not setup.done():
            await asyncio.wait((setup,))
        await self._shutdown()

    async def _setup(self) -> None:
        """Listen, then adopt address-book changes and flush what was sent before start-up.
        Loop thread (either kind of loop).

        Raises:
            OSError: cannot listen on this node's address (logged).
        """
        loop = self._loop
        assert loop is not None
        self._loop_ident = threading.get_ident()
        self._all_closed = asyncio.Event()
        host, port = self._addresses[self.node_id]
        try:
            server = await loop.create_server(lambda: _InboundProtocol(self), host, port,
                                              ssl=self._ssl_server, reuse_address=True)
        except OSError as exc:
            logger.error("%s: cannot listen on %s:%s: %s", self.node_id, host, port, exc)
            raise
        self._server = server
        sockname = server.sockets[0].getsockname()
        self._bound = (sockname[0], sockname[1])
        self._running = True
        logger.info("%s: listening on %s:%s", self.node_id, *self._bound)
        self._sync_links()  # update_peers calls made before the loop existed
        self._on_wake()  # messages sent between start() and now

    async def _shutdown(self) -> None:
        """Stop listening, cancel connect attempts and timers, abort every connection and wait
        (bounded) until they are closed.  Loop thread; leaves the loop itself running."""
        self._running = False
        self._handler = None  # from here on nothing reaches the handler
        server = self._server
        if server is not None:
            server.close()
        for link in self._links.values():
            if link.timer is not None:
                link.timer.cancel()
                link.timer = None
            link.task = None
        tasks = list(self._connect_tasks)  # stale attempts of removed or moved links included
        for task in tasks:
            task.cancel()
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for protocol in list(self._protocols):
            protocol.abort()
        if self._protocols and self._all_closed is not None:
            self._all_closed.clear()
            if self._protocols:
                try:
                    await asyncio.wait_for(self._all_closed.wait(), 5.0)
                except TimeoutError:
                    logger.error("%s: %d connections did not close", self.node_id,
                                 len(self._protocols))
        if server is not None:
            await server.wait_closed()
        logger.info("%s: transport closed", self.node_id)

    def _on_wake(self) -> None:
        """The wake-up callback (``_wake``): drain the delay inbox into the heap and flush every
        non-empty queue, this node's own included."""
        self._wake_pending = False  # before draining: see the module docstring
        self._drain(local_now=True)

    def _flush_now(self) -> None:
        """``send`` on the loop thread: the wake-up's work at once, so the frames are written
        before ``send`` returns, except that this node's own messages are left to a ``call_soon``
        callback (the caller of ``send`` may be the handler or a step of the runtime, which must
        not be re-entered).  ``self._wake_pending`` is left alone (module docstring)."""
        self._drain(local_now=False)

    def _drain(self, local_now: bool) -> None:
        """Move the delay inbox into the heap and flush every non-empty peer queue; deliver
        this node's own messages now (``local_now``) or from a ``call_soon`` callback."""
        if not self._running:
            return
        if self._links_version != self._book_version:
            self._sync_links()
        inbox = self._delay_inbox
        if inbox:
            heap = self._delay_heap
            while inbox:
                due, dst, msg = inbox.popleft()
                self._delay_seq += 1
                heapq.heappush(heap, (due, self._delay_seq, dst, msg))
            self._arm_delay_timer()
        links = self._links
        for peer, queue in self._outq.items():
            if queue:
                if peer != self.node_id:
                    link = links.get(peer)
                    if link is not None:  # else: added since the sync above; it flushes
                        self._flush(link)
                elif local_now:
                    self._deliver_local(queue)
                elif not self._local_scheduled:
                    self._local_scheduled = True
                    assert self._loop is not None
                    self._loop.call_soon(self._on_local)

    def _on_local(self) -> None:
        """Deliver this node's own messages queued by ``send`` on the loop thread."""
        self._local_scheduled = False  # before delivering: a handler that sends reschedules
        queue = self._outq.get(self.node_id)
        if queue:
            self._deliver_local(queue)

    def _deliver_local(self, queue: _PeerQueue) -> None:
        """Messages a node sends to itself skip the network.  Delivers those queued on entry
        only: any the handler adds meanwhile come with a callback of their own (``_on_local`` or
        a wake-up), so one callback never runs on indefinitely."""
        handler = self._handler
        with self._queue_lock:
            batch = [queue.popleft() for _ in range(len(queue))]
            queue.nbytes = 0
        for msg in batch:
            if handler is not None:
                try:
                    handler(msg)
                except Exception:
                    logger.exception("%s: handler raised on local %s", self.node_id,
                                     msg.kind.name)

    def _arm_delay_timer(self) -> None:
        heap = self._delay_heap
        if not heap:
            return
        when = heap[0][0]
        if self._delay_timer is not None and self._delay_timer_when <= when:
            return
        if self._delay_timer is not None:
            self._delay_timer.cancel()
        assert self._loop is not None
        self._delay_timer_when = when
        self._delay_timer = self._loop.call_later(max(0.0, when - time.monotonic()),
                                                  self._on_delay_timer)

    def _on_delay_timer(self) -> None:
        """Move the copies that are due into their queues, in (due, seq) order."""
        self._delay_timer = None
        self._delay_timer_when = math.inf
        if self._links_version != self._book_version:
            self._sync_links()
        heap = self._delay_heap
        now = time.monotonic()
        released: list[str] = []
        queued: set[str] = set()
        dropped = 0
        outq = self._outq
        while heap and heap[0][0] <= now:
            _, _, dst, msg = heapq.heappop(heap)
            released.append(dst)
            queue = outq.get(dst)
            if queue is None:  # the peer was removed while the copy was delayed
                dropped += 1
                continue
            with self._queue_lock:
                dropped += self._enqueue(queue, msg)
            queued.add(dst)
        with self._order_lock:
            for dst in released:
                self._order.released(dst)
        if dropped:
            with self._count_lock:
                self._dropped += dropped
        self._arm_delay_timer()
        for dst in queued:
            if dst == self.node_id:
                self._deliver_local(outq[dst])
            else:
                link = self._links.get(dst)
                if link is not None:
                    self._flush(link)

    def _flush(self, link: _PeerLink) -> None:
        """Write what is queued for ``link`` (or connect, or drop while backing off)."""
        queue = self._outq.get(link.peer_id)
        if not queue or not self._running:  # None: removed from the book, a sync is pending
            return
        state = link.state
        if state == _CONNECTED:
            protocol = link.protocol
            if protocol is None or protocol.transport is None:
                return
            write = protocol.transport.write
            max_frame = self._max_frame_size
            dropped = 0
            lock = self._queue_lock
            while queue and not link.paused and link.state == _CONNECTED:
                frames: list[bytes] = []
                batch: list[Message] = []
                size = 0
                with lock:
                    while queue and size < _WRITE_CHUNK:
                        msg = queue.popleft()
                        msg_size = _wire_size(msg)
                        queue.nbytes -= msg_size
                        size += msg_size
                        batch.append(msg)
                for msg in batch:
                    try:
                        frame = encode_message(msg, max_frame)
                    except FrameError as exc:
                        logger.error("%s: dropping unsendable %s to %s: %s", self.node_id,
                                     msg.kind.name, link.peer_id, exc)
                        dropped += 1
                        continue
                    frames.append(frame)
                if frames:
                    data = frames[0] if len(frames) == 1 else b"".join(frames)
                    write(data)
                    self._frames_written += len(frames)
                    self.bytes_written += len(data)
            if dropped:
                with self._count_lock:
                    self._dropped += dropped
        elif state == _IDLE:
            link.state = _CONNECTING
            assert self._loop is not None
            task = self._loop.create_task(self._connect(link, link.epoch),
                                          name=f"raft-{self.node_id}-connect-{link.peer_id}")
            link.task = task
            self._connect_tasks.add(task)
            task.add_done_callback(self._connect_tasks.discard)
        elif state == _BACKOFF:
            with self._queue_lock:
                count = len(queue)
                queue.clear()
                queue.nbytes = 0
            with self._count_lock:
                self._dropped += count
        # _CONNECTING: keep queueing; the connect task flushes when the handshake completes.

    async def _connect(self, link: _PeerLink, epoch: int) -> None:
        """Open the connection to ``link`` and authenticate; back off on failure.

        ``epoch`` is ``link.epoch`` when the attempt started: if ``_reset_link`` ran meanwhile
        (peer removed or moved) the attempt is stale and leaves the link alone.  The reset also
        cancels this task, but on Python 3.11 ``wait_for`` swallows a cancellation that arrives
        when the awaited operation has just completed, hence the checks after each await.
        """
        assert self._loop is not None
        tls = self._ssl_client
        transport: asyncio.Transport | None = None
        try:
            transport, protocol = await asyncio.wait_for(
                self._loop.create_connection(lambda: _OutboundProtocol(self, link), link.host,
                                             link.port, ssl=tls,
                                             server_hostname=link.host if tls else None),
                self._connect_timeout)
            if link.epoch == epoch:  # else stale (a swallowed cancel): abort below
                await asyncio.wait_for(asyncio.shield(protocol.ready), self._handshake_timeout)
        except (OSError, TimeoutError, HandshakeError) as exc:
            if transport is not None:
                transport.abort()
            if link.epoch == epoch:
                link.task = None
                self._connect_failed(link, exc)
            return
        except asyncio.CancelledError:
            if transport is not None:
                transport.abort()
            raise
        assert transport is not None
        if link.epoch != epoch:
            transport.abort()
            return
        link.task = None
        if link.failures:
            logger.info("%s: connected to %s after %d failed attempts", self.node_id,
                        link.peer_id, link.failures)
        else:
            logger.debug("%s: connected to %s", self.node_id, link.peer_id)
        link.failures = 0
        link.state = _CONNECTED
        link.protocol = protocol
        link.paused = False
        self._flush(link)

    def _connect_failed(self, link: _PeerLink, exc: BaseException) -> None:
        link.failures += 1
        base = min(self._backoff_max, self._backoff_min * 2 ** min(link.failures - 1, 30))
        delay = base / 2 + self._rng.uniform(0, base / 2)
        log = logger.warning if isinstance(exc, HandshakeError) else (
            logger.info if link.failures == 1 else logger.debug)
        log("%s: cannot reach %s at %s:%s (attempt %d): %s; retrying in %.3fs", self.node_id,
            link.peer_id, link.host, link.port, link.failures, exc or type(exc).__name__, delay)
        link.state = _BACKOFF
        self._flush(link)  # drop what was queued for the unreachable peer
        assert self._loop is not None
        link.timer = self._loop.call_later(delay, self._backoff_over, link)

    def _backoff_over(self, link: _PeerLink) -> None:
        link.timer = None
        if link.state == _BACKOFF:
            link.state = _IDLE
            self._flush(link)

    def _sync_links(self) -> None:
        """Make ``self._links`` follow the address book (after ``update_peers``) and empty the
        queues of removed peers.  Loop thread; idempotent."""
        with self._book_lock:
            version = self._book_version
            addresses = self._addresses
            detached, self._detached = self._detached, []
        dropped = 0
        for queue in detached:
            with self._queue_lock:
                dropped += len(queue)
                queue.clear()
                queue.nbytes = 0
        if dropped:
            with self._count_lock:
                self._dropped += dropped
        if not self._running or version == self._links_version:
            return  # not running: _main syncs on start-up, _shutdown closes every link
        self._links_version = version
        links = self._links
        for peer in [peer for peer in links if peer not in addresses]:
            self._reset_link(links.pop(peer))
            logger.info("%s: %s removed from the peers; its link is closed", self.node_id, peer)
        touched: list[_PeerLink] = []
        for peer, (host, port) in addresses.items():
            if peer == self.node_id:
                continue
            link = links.get(peer)
            if link is None:
                link = links[peer] = _PeerLink(peer, host, port)
                touched.append(link)
            elif (link.host, link.port) != (host, port):
                self._reset_link(link)
                logger.info("%s: %s moved from %s:%s to %s:%s; reconnecting", self.node_id,
                            peer, link.host, link.port, host, port)
                link.host, link.port = host, port
                touched.append(link)
        for link in touched:
            self._flush(link)  # messages queued before the link existed or before the move

    def _reset_link(self, link: _PeerLink) -> None:
        """Close ``link``'s connection (or abandon its connect attempt or backoff) and make it
        idle, as if it had never connected.  Loop thread."""
        link.epoch += 1
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        task, link.task = link.task, None
        if task is not None:
            task.cancel()  # _connect aborts the half-open connection
        protocol, link.protocol = link.protocol, None
        link.state = _IDLE
        link.paused = False
        link.failures = 0
        if protocol is not None:
            protocol.abort()  # _outbound_lost ignores it: link.protocol is no longer it

    def _outbound_lost(self, protocol: _OutboundProtocol, exc: Exception | None) -> None:
        link = protocol.link
        if link.protocol is not protocol:
            return  # lost during the handshake: _connect handles it
        link.protocol = None
        link.paused = False
        link.state = _IDLE
        if self._running:
            logger.info("%s: connection to %s lost: %s", self.node_id, link.peer_id,
                        exc or "closed by peer")
            self._flush(link)

