"""A Redis-protocol (RESP2 and RESP3) front end for one RaftNode running a :class:`KVMachine`.

This is the embedding example: the whole integration with the engine is ``node.propose(bytes)``
for writes, ``node.read(fn)`` for linearizable reads, ``node.status()`` and the errors
(``NotLeaderError.leader_id`` becomes a ``-NOTLEADER`` redirect).

Per connection, replies go out in request order.  Commands that arrived together (a pipeline)
are grouped into runs of the same kind: consecutive writes are all proposed before any is
awaited, so they share one Raft batch, and consecutive reads are served by one ``node.read``
(one ReadIndex round).  A read
after a write (or a write after a read) of the same connection waits for the run before it to
finish, so each client sees its own writes in order, as with Redis.

Errors a client can see, besides Redis's own (``-ERR unknown command``, ``-ERR wrong number of
arguments``, ``-ERR syntax error``):

``-NOTLEADER <leader id> <leader client address>``
    this node does not lead; the address comes from ``client_addresses`` and is left out when
    unknown, and both are left out when no leader is known.  Nothing was done: retry there.
``-TRYAGAIN ...``
    leadership changed before a write committed (it may or may not take effect) or a read could
    not confirm leadership in time.
``-ERR Protocol error: ...``
    malformed input; the server closes that connection (only that one).

Administration: ``RAFT.STATUS`` (JSON, with the configuration and the client addresses of
the members known from ``client_addresses``), ``RAFT.SNAPSHOT`` and ``RAFT.TRANSFER <id>`` (see
:mod:`engine.kv.admin`), and on the leader
``RAFT.MEMBER ADD <id> <raft host:port>`` (a learner; start that node with ``--join``),
``RAFT.MEMBER PROMOTE <id>`` (voter once caught up) and ``RAFT.MEMBER REMOVE <id>``, each
answering the new configuration as JSON once it is committed.

Clients speak RESP2, or RESP3 after ``HELLO 3`` (redis-py 6+ with its defaults, ``redis-cli
-3``); connection commands (HELLO, AUTH, CLIENT, INFO, COMMAND) are in :mod:`engine.kv.session`,
with the ``password`` rule (``-NOAUTH`` before AUTH).  Time for expiry: the server stamps
``clock()`` (wall-clock milliseconds unless a clock is injected) into the writes it proposes and
the reads it issues, and the machine decides from those times alone (see
:mod:`engine.kv.machine`); while keys have an expiry, the leader's server proposes a PURGE of
the expired ones every ``purge_interval`` seconds.

Threads: the server runs on the node's own event loop (``RaftNode.loop``, the thread
``raft-<id>-loop``) when the node is running at ``start()``, so that a client's commands cost no
thread hand-off: the writes of one read from a socket become one ``propose_many`` batch, their
futures are settled on that same thread, and their replies go out in one write.  A node that is
not running yet gets a loop of the server's own in the thread ``kv-<node id>-resp`` (the old
shape).  Either way that loop owns every connection object; the server never touches the state
machine (reads run where the node applies).  ``start()``/``stop()`` may be called from any
thread but the loop's.

A connection has no task: its protocol callbacks do the work, since each task wake-up, Event
or asyncio future would cost several microseconds per request.  ``data_received`` parses the
requests and starts a run; a run whose futures are not all done leaves one done callback,
which answers it and starts the next run: at once when the future is settled on the loop's
thread (the node's loop, the normal case), through ``call_soon_threadsafe`` when settled on
another (an apply thread, or the node's loop when the server has a loop of its own).
Back-pressure: a connection stops reading while ``_MAX_QUEUED`` parsed commands wait, and
starts no run while its socket's write buffer is full (``pause_writing``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, cast

import orjson

from engine.errors import (
    ConfigError,
    NodeStopped,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    ReadTimeout,
)
from engine.eventloop import new_event_loop
from engine.kv import admin as kv_admin
from engine.kv.machine import (
    COMMANDS,
    PURGE,
    KVMachine,
    Op,
    arity_ok,
    check_args,
    encode_command,
    encode_set,
)
from engine.kv.resp import (
    DEFAULT_MAX_ARRAY,
    DEFAULT_MAX_BULK,
    OK,
    PONG,
    Error,
    ProtocolError,
    RespParser,
    encode_many,
)
from engine.kv.session import (
    BEFORE_AUTH,
    NOAUTH,
    SESSION_COMMANDS,
    InfoFacts,
    Session,
    command_reply,
    command_table,
    info_reply,
    password_digest,
    session_command,
)
from engine.membership import Membership
from engine.runtime.node import RaftNode
from engine.transport.tcp import parse_address

logger = logging.getLogger(__name__)

_MAX_QUEUED = 1024  # parsed commands per connection before it stops reading from the socket
_EOF = object()  # queued after the client's last command when it half-closes
_QUIT = object()  # reply placeholder: send what came before, then +OK, then close

# Connection-level commands (name -> Redis arity); data commands are in machine.COMMANDS.
_LOCAL_ARITY = {b"ping": -1, b"echo": 2, b"command": -1, b"config": -2, b"select": 2,
                b"quit": -1, b"hello": -1, b"client": -2, b"auth": -2, b"info": -1,
                b"raft.status": 1,
                b"raft.member": -3, **kv_admin.ARITY}


def _text(data: bytes, limit: int = 128) -> str:
    """Client bytes made safe for an error line (no CR/LF), as Redis shortens them."""
    return data[:limit].decode(errors="replace").replace("\r", " ").replace("\n", " ")


_SET = Op.SET
_MSET = Op.MSET


def _wall_ms() -> int:
    """Wall-clock milliseconds: the default time the server stamps into commands."""
    return time.time_ns() // 1_000_000


def _run_reads(reads: list[tuple[Op, list[bytes]]], now: int,
               machine: KVMachine) -> list[object]:
    return [machine.execute(op, args, now) for op, args in reads]


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _WriteSlot:
    """Where the reply of the ``i``-th write of a run goes."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class _ReadSlot:
    """Placeholder for the reply to the i-th read of a run (all served by one node.read)."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class KVServer:
    """Serves RESP2 clients on ``address`` for ``node`` (whose state machine is a KVMachine).

    Usage::

        node = RaftNode("n1", peers, KVMachine(), data_dir=...)
        node.start()
        with KVServer(node, "127.0.0.1:6401", client_addresses={"n1": ..., "n2": ...}):
            ...
    """

    def __init__(self, node: RaftNode, address: str, *,
                 client_addresses: Mapping[str, str] | None = None,
                 max_bulk: int = DEFAULT_MAX_BULK, max_array: int = DEFAULT_MAX_ARRAY,
                 password: bytes | None = None, clock: Callable[[], int] | None = None,
                 purge_interval: float = 1.0) -> None:
        """Args:
            node: the (started or soon started) node to serve.
            address: ``"host:port"`` to listen on; port 0 picks a free port (see ``address``).
            client_addresses: node id -> client address, for ``-NOTLEADER`` redirects.
            max_bulk / max_array: request limits (see :class:`~engine.kv.resp.RespParser`).
            password: clients must AUTH with it first (None: no authentication).
            clock: milliseconds stamped into writes and reads for expiry (default: wall
                clock); called on the server's loop.
            purge_interval: seconds between PURGE proposals while keys have an expiry.

        Raises:
            ConfigError: ``address`` is not ``host:port``.
        """
        self._node = node
        self._host, self._port = parse_address(node.id, address)
        self._client_addresses = dict(client_addresses or {})
        self._parser_limits = {"max_bulk": max_bulk, "max_array": max_array}
        RespParser(**self._parser_limits)  # validate the limits now
        self._ids = itertools.count(1)
        self.password_digest = None if password is None else password_digest(password)
        self._clock = clock or _wall_ms
        self._purge_interval = purge_interval
        self._purge_handle: asyncio.TimerHandle | None = None  # owned by the server loop
        self._started = time.monotonic()
        self._run_id = secrets.token_hex(20)
        self._command_table = command_table(_LOCAL_ARITY)
        self._lock = threading.Lock()  # guards the lifecycle fields below
        self._thread: threading.Thread | None = None
        # The server's task when it runs on the node's loop.
        self._main_future: concurrent.futures.Future[None] | None = None
        self._stopped = False
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._bound: tuple[str, int] | None = None
        # Owned by the server thread:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_future: asyncio.Future[None] | None = None
        self._connections: set[_Connection] = set()  # from connection_made to connection_lost
        self._drained: asyncio.Future[None] | None = None  # at stop: done once they are gone

    @property
    def node(self) -> RaftNode:
        """The node this server fronts."""
        return self._node

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` the server listens on once started."""
        return self._bound

    def __enter__(self) -> KVServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once listening (on the node's loop when it runs, else on the
        ``kv-<id>-resp`` thread).

        Raises:
            RaftError: started twice, or not listening within ``timeout``.
            OSError: the address could not be bound.
        """
        node_loop = self._node.loop
        with self._lock:
            if self._thread is not None or self._main_future is not None or self._stopped:
                raise RaftError("KVServer.start() may be called once")
            if node_loop is not None:
                self._main_future = asyncio.run_coroutine_threadsafe(self._main(node_loop),
                                                                     node_loop)
                self._main_future.add_done_callback(self._main_ended)
            else:
                self._thread = threading.Thread(target=self._run,
                                                name=f"kv-{self._node.id}-resp", daemon=True)
                self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RaftError(f"KV server of {self._node.id} did not start within {timeout}s")
        if self._start_error is not None:
            if self._thread is not None:
                self._thread.join()
            raise self._start_error

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection, and join the thread (or wait for
        the server's task on the node's loop).  Idempotent.

        Writes already proposed still commit (or not) in the node; their clients get no reply.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
            main_future = self._main_future
        loop, stop_future = self._loop, self._stop_future
        if loop is not None and stop_future is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(_finish, stop_future)
        if main_future is not None:
            try:
                main_future.result(timeout)
            except concurrent.futures.TimeoutError:
                logger.error("KV server of %s did not stop within %.1fs", self._node.id,
                             timeout)
            except BaseException:  # cancelled with the node's loop, or failed: logged there
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.error("thread %s did not stop within %.1fs", thread.name, timeout)

    # -- the server's loop ---------------------------------------------------------------------

    def _main_ended(self, future: concurrent.futures.Future) -> None:
        """The server's task on the node's loop ended: report a start-up failure."""
        if future.cancelled():
            exc: BaseException | None = RaftError(f"node {self._node.id} stopped")
        else:
            exc = future.exception()
        if exc is not None and not self._ready.is_set():
            self._start_error = exc
            self._ready.set()
        elif exc is not None and not future.cancelled():
            logger.error("KV server of %s failed: %r", self._node.id, exc)

    def _run(self) -> None:
        loop = new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        except BaseException as exc:
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                logger.exception("KV server of %s failed", self._node.id)
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stop_future = loop.create_future()
        server = await loop.create_server(lambda: _Connection(self), self._host, self._port)
        self._bound = server.sockets[0].getsockname()[:2]
        logger.info("%s: serving RESP clients on %s:%d", self._node.id, *self._bound)
        self._ready.set()
        if self._stopped:  # stop() ran before the loop existed
            self._stop_future.set_result(None)
        self._purge_handle = loop.call_later(self._purge_interval, self._purge_tick, loop)
        try:
            await self._stop_future
        finally:
            if self._purge_handle is not None:
                self._purge_handle.cancel()
            server.close()
            # Connections have no task to wait for: abort each one and wait until every
            # connection_lost() has run (its socket is closed then and nothing of it is left on
            # the loop).  Futures settled later find their connection closed: no-ops.
            self._drained = loop.create_future()
            for connection in list(self._connections):
                connection.close(abort=True)
            if self._connections:
                await self._drained
            await server.wait_closed()
            logger.info("%s: RESP server stopped", self._node.id)

    def _purge_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every ``purge_interval`` (server loop): on the leader, while some key has expired
        at ``clock()``, propose a PURGE (the machine decides what expired from its time)."""
        try:
            machine = getattr(self._node, "state_machine", None)  # a KVMachine, normally
            expires = getattr(machine, "expires", None)
            if expires:
                now = self._clock()
                # A copy taken in one step: the node may apply on another thread.
                if min(list(expires.values()), default=now + 1) <= now and self.is_leader():
                    self._node.propose(encode_command(PURGE, [], now))
        except RaftError as exc:  # stopped, or lost leadership meanwhile: try again later
            logger.debug("%s: PURGE not proposed: %s", self._node.id, exc)
        finally:
            if not self._stopped:
                self._purge_handle = loop.call_later(self._purge_interval, self._purge_tick,
                                                     loop)

    def is_leader(self) -> bool:
        """Whether the node leads now (its own view)."""
        return self._node.status().role == "leader"

    def sessions(self) -> list[Session]:
        """The sessions of the open connections (server loop)."""
        return [c.session for c in self._connections]

    def info(self, args: list[bytes]) -> object:
        """INFO [section ...]."""
        status = self._node.status()
        leader = status.leader_id
        return info_reply(InfoFacts(
            node_id=status.id, port=self._bound[1] if self._bound else self._port,
            started=self._started, run_id=self._run_id, connections=len(self._connections),
            role=status.role, term=status.term, leader_id=leader,
            leader_address=self._client_addresses.get(leader) if leader else None,
            commit_index=status.commit_index, last_applied=status.last_applied,
            last_log_index=status.last_log_index, snapshot_index=status.snapshot_index,
            recovering=status.recovering, voters=len(status.voters)), args)

    def _connection_lost(self, connection: _Connection) -> None:
        """``connection`` is gone (server thread); at stop, the last one to go wakes _main."""
        self._connections.discard(connection)
        if not self._connections and self._drained is not None:
            _finish(self._drained)

    # -- command execution (server thread) -----------------------------------------------------

    def propose(self, op: Op, args: list[bytes]) -> Future:
        """Propose a write; the future resolves to its reply."""
        return self.propose_many([(op, args)])[0]

    def propose_many(self, writes: list[tuple[Op, list[bytes]]]) -> list[Future]:
        """Propose writes as one batch; one future per write, resolving to its reply.  Every
        write but a plain SET (and MSET) carries ``clock()`` (see :mod:`engine.kv.machine`)."""
        commands: list[bytes | None] = [
            encode_set(args[0], args[1]) if op is _SET and len(args) == 2
            else encode_command(op, args) if op is _MSET else None
            for op, args in writes]
        if None in commands:  # writes that carry the time
            now = self._clock()
            commands = [command if command is not None else encode_command(op, args, now)
                        for command, (op, args) in zip(commands, writes, strict=True)]
        return self._node.propose_many(cast(list[bytes], commands))

    def read(self, reads: list[tuple[Op, list[bytes]]]) -> Future:
        """Run reads at one linearizable point, at the time ``clock()`` gives now; the future
        resolves to their replies."""
        return self._node.read(functools.partial(_run_reads, reads, self._clock()))

    def error_reply(self, exc: BaseException) -> Error:
        """The RESP error for an exception raised by propose/read."""
        if isinstance(exc, NotLeaderError):
            return self.not_leader(exc.leader_id)
        if isinstance(exc, ProposalDropped):
            return Error("TRYAGAIN leadership changed before the write committed; "
                         "it may or may not take effect")
        if isinstance(exc, ReadTimeout):
            return Error("TRYAGAIN could not confirm leadership in time")
        if isinstance(exc, NodeStopped):
            return Error("ERR node stopped")
        if isinstance(exc, RaftError):
            return Error(f"ERR {_text(str(exc).encode(), 200)}")
        logger.error("%s: unexpected error serving a command", self._node.id, exc_info=exc)
        return Error("ERR internal error")

    def not_leader(self, leader_id: str | None) -> Error:
        """``-NOTLEADER [<leader id> [<client address>]]``."""
        if leader_id is None:
            return Error("NOTLEADER")
        address = self._client_addresses.get(leader_id)
        return Error(f"NOTLEADER {leader_id} {address}" if address else f"NOTLEADER {leader_id}")

    def status_json(self) -> bytes:
        """RAFT.STATUS: the node's status as JSON."""
        status = self._node.status()
        contact = ({peer: round(seconds, 3) for peer, seconds in
                    self._node.last_contact().items()} if status.progress else {})
        return orjson.dumps({
            "id": status.id,
            "role": status.role,
            "term": status.term,
            "leader_id": status.leader_id,
            "leader_address": self._client_addresses.get(status.leader_id or ""),
            "commit_index": status.commit_index,
            "last_applied": status.last_applied,
            "last_log_index": status.last_log_index,
            "running": status.running,
            "recovering": status.recovering,
            "disk_stalled": status.disk_stalled,
            "snapshot_index": status.snapshot_index,
            # Every member's client address known here (--clients): what a cluster view asks.
            "clients": self._client_addresses,
            # The leader's view of each peer; lag = entries the peer is known to lack;
            # last_contact = seconds since the leader last heard from it (null: never).
            "peers": {peer: {"match": pr.match, "next": pr.next, "state": pr.state,
                             "lag": max(0, status.last_log_index - pr.match),
                             "inflight": pr.inflight, "active": pr.recent_active,
                             "recovering": pr.recovering,
                             "last_contact": contact.get(peer)}
                      for peer, pr in status.progress.items() if peer != status.id},
            **_membership_fields(status.membership),
        })

    def member_command(self, args: list[bytes]) -> object:
        """RAFT.MEMBER ADD|PROMOTE|REMOVE: a Future of the new configuration as JSON, or an
        error reply for bad arguments."""
        sub, rest = args[0].lower(), [a.decode("utf-8", "replace") for a in args[1:]]
        if sub == b"add" and len(rest) == 2:
            if not rest[0]:
                return Error("ERR the node id must not be empty")
            # The address travels in the configuration to every member's transport, which
            # would fail on a malformed one: refuse it here, before anything is proposed.
            try:
                parse_address(rest[0], rest[1])
            except ConfigError:
                return Error(f"ERR invalid raft address '{_text(args[2])}' (want host:port)")
            future = self._node.add_learner(rest[0], rest[1])
        elif sub in (b"promote", b"remove") and len(rest) == 1:
            future = (self._node.promote(rest[0]) if sub == b"promote"
                      else self._node.remove_member(rest[0]))
        else:
            return Error("ERR syntax: RAFT.MEMBER ADD <id> <host:port> | PROMOTE <id> | "
                         "REMOVE <id>")
        reply: Future = Future()

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                reply.set_exception(exc)
            else:
                reply.set_result(orjson.dumps(_membership_fields(f.result())))
        future.add_done_callback(done)
        return reply

    def local_command(self, name: bytes, args: list[bytes], connection_id: int) -> object:
        """Run a connection-level command (arity already checked); returns its reply."""
        if name == b"ping":
            return PONG if not args else args[0]
        if name == b"echo":
            return args[0]
        if name == b"raft.status":
            return self.status_json()
        if name == b"raft.member":
            return self.member_command(args)
        if name in kv_admin.ARITY:
            return kv_admin.command(self._node, name, args, self._client_addresses)
        if name == b"command":
            return command_reply(self._command_table, args)
        if name == b"info":
            return self.info(args)
        if name == b"config":
            if args[0].lower() == b"get":
                return {}  # redis-benchmark asks for "save" and "appendonly"
            return Error(f"ERR CONFIG {_text(args[0])} is not supported")
        if name == b"select":
            return OK if args[0] == b"0" else Error("ERR DB index is out of range")
        raise RaftError(f"not a local command: {name!r}")  # _LOCAL_ARITY and this agree


def _membership_fields(membership: Membership | None) -> dict[str, Any]:
    if membership is None:
        return {}
    return {"voters": list(membership.voters), "outgoing": list(membership.outgoing),
            "learners": list(membership.learners)}


class _Run:
    """The commands of one run being answered and the futures their replies come from."""

    __slots__ = ("read_future", "slots", "waiting", "write_futures")

    def __init__(self, slots: list[object], write_futures: list[Future],
                 read_future: Future | None, waiting: list[Future]) -> None:
        self.slots = slots  # reply values, or _WriteSlots / _ReadSlots / Futures to fill in
        self.write_futures = write_futures
        self.read_future = read_future
        # The futures not yet seen done, in order; the run is answered once this is empty.
        self.waiting = waiting


class _Connection(asyncio.Protocol):
    """One client connection, driven by its protocol callbacks alone (no task, no Event).

    ``data_received`` parses the requests into the queue and calls :meth:`_advance`, which
    answers runs one after the other until one must wait (for a future, or for the client to
    read its replies); a done callback on the future it waits for (:meth:`_completed`) or
    ``resume_writing`` calls :meth:`_advance` again.  Everything here is owned by the loop
    thread, except :meth:`_completed`, which runs on whichever thread settles a future.
    """

    def __init__(self, server: KVServer) -> None:
        self._server = server
        self._id = next(server._ids)
        self.session = Session(self._id, "?", server.password_digest is None)
        self._proto = 2  # the protocol of the replies of the run being answered
        self._parser = RespParser(**server._parser_limits)
        # Owned by the loop thread:
        # Commands parsed and not yet in a run, then possibly a ProtocolError or _EOF marker.
        self._queue: deque[Any] = deque()
        self._run: _Run | None = None  # the run started and not yet answered
        self._waiting: Future | None = None  # the future of _run that has our done callback
        self._writable = True  # False from pause_writing() to resume_writing()
        self._reading_paused = False
        self._closed = False  # nothing more is written: closed by us, or connection_lost()
        self._lost = False  # connection_lost() ran: the transport is gone
        self._advancing = False  # _advance() is on the stack (a done callback may run inside)
        self._transport: asyncio.Transport | None = None
        # Set once by connection_made(), before any future exists; read by any thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner = 0  # the loop thread's ident
        self._done_callback = self._completed  # one bound method for every future

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.session.address = f"{peer[0]}:{peer[1]}"
        self._loop = asyncio.get_running_loop()
        self._owner = threading.get_ident()
        self._server._connections.add(self)
        if self._server._drained is not None:  # accepted while the server stops
            self.close(abort=True)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        parser, queue = self._parser, self._queue
        parser.feed(data)
        try:
            while (command := parser.get_command()) is not None:
                queue.append(command)
        except ProtocolError as exc:
            queue.append(exc)
            self._pause_reading()
        self._advance()
        if len(queue) >= _MAX_QUEUED:
            self._pause_reading()  # resumed once the queue drains (in _step)

    def eof_received(self) -> bool:
        self._queue.append(_EOF)  # answer what came before, then close
        self._advance()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._lost = True
        self._run = self._waiting = None  # the futures' callbacks find nothing to do
        self._queue.clear()
        self._server._connection_lost(self)

    def pause_writing(self) -> None:
        self._writable = False  # the client is not reading: start no run until it does

    def resume_writing(self) -> None:
        self._writable = True
        self._advance()

    # -- helpers -------------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._closed and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def close(self, *, abort: bool = False) -> None:
        """Write nothing more and close the socket: after flushing what was written, or, with
        ``abort``, at once (also cutting short a flushing close, so that stop() never waits for
        a client that does not read)."""
        transport = self._transport
        if transport is None or self._lost:
            return
        if abort:
            transport.abort()
        elif not self._closed:
            transport.close()
        self._closed = True

    def _completed(self, future: Future) -> None:
        """Done callback of the future the connection waits for; runs on whichever thread
        settled it.  On the loop's thread it goes on at once (no ``call_soon``, no self-pipe
        write: what ``asyncio.wrap_future`` would cost); from another thread it hops to the
        loop."""
        if threading.get_ident() == self._owner:
            self._resume(future)
        else:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                self._loop.call_soon_threadsafe(self._resume, future)

    def _resume(self, future: Future) -> None:
        """``future`` is done (loop thread): go on unless the connection stopped waiting for it
        (answered by then, or closed)."""
        if future is self._waiting:
            self._waiting = None
            self._advance()

    # -- answering -------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Answer and start runs while nothing holds them back (loop thread).

        Called by every event that may let the connection go on; calls that find it waiting,
        or that come while it runs (a done callback fired inside it), do nothing.  An
        unexpected exception closes this connection only."""
        if self._advancing or self._closed:
            return
        self._advancing = True
        try:
            self._step()
        except Exception:
            logger.exception("%s: client connection %d failed", self._server.node.id, self._id)
            self.close(abort=True)
        finally:
            self._advancing = False

    def _step(self) -> None:
        queue = self._queue
        while not self._closed:
            run = self._run
            if run is not None:
                waiting = run.waiting
                while waiting and waiting[-1].done():
                    waiting.pop()
                if waiting:
                    # Entries commit in order, so once the last future is done the others
                    # (nearly always) are too: one callback per run, not one per command.
                    future = waiting[-1]
                    if future is not self._waiting:
                        self._waiting = future
                        future.add_done_callback(self._done_callback)  # may run it at once
                    if not future.done():
                        return
                    continue
                self._run = self._waiting = None
                self._answer(run)
                continue
            if not self._writable:
                return  # resume_writing() goes on
            if not queue:
                if self._reading_paused:
                    self._reading_paused = False
                    assert self._transport is not None
                    self._transport.resume_reading()
                return  # data_received() goes on
            head = queue[0]
            if head is _EOF or isinstance(head, ProtocolError):
                self._end(head)
                return
            self._run = self._start_run()

    def _start_run(self) -> _Run:
        """Take the commands at the head of the queue up to the first one that must wait for
        them (a data command of the other kind), a QUIT, or an end marker, and start them: the
        writes as one propose_many, the reads as one read."""
        server, queue = self._server, self._queue
        slots: list[object] = []  # reply values, or _WriteSlots / _ReadSlots to fill in
        writes: list[tuple[Op, list[bytes]]] = []
        reads: list[tuple[Op, list[bytes]]] = []
        admin: list[Future] = []  # the replies of administrative commands (RAFT.MEMBER)
        kind: bool | None = None  # True: a run of writes; False: of reads
        session = self.session
        self._proto = session.proto
        while queue:
            command = queue[0]
            if command is _EOF or isinstance(command, ProtocolError):
                break
            name = command[0].lower()
            spec = COMMANDS.get(name)
            if not session.authenticated and name not in BEFORE_AUTH:
                slots.append(NOAUTH)
            elif spec is not None:
                args = command[1:]
                error = check_args(spec.op, args)
                if error is not None:
                    slots.append(error)
                elif kind is None or kind == spec.write:
                    kind = spec.write
                    if spec.write:
                        slots.append(_WriteSlot(len(writes)))
                        writes.append((spec.op, args))
                    else:
                        slots.append(_ReadSlot(len(reads)))
                        reads.append((spec.op, args))
                else:
                    break  # the other kind: it waits until this run is answered
            elif name in _LOCAL_ARITY:
                if not arity_ok(_LOCAL_ARITY[name], len(command)):
                    slots.append(Error(f"ERR wrong number of arguments for '{_text(name)}' "
                                       "command"))
                elif name == b"quit":
                    queue.popleft()
                    slots.append(_QUIT)
                    break
                elif name in SESSION_COMMANDS:
                    if name == b"hello" and slots:
                        break  # HELLO may change the protocol: it starts a run of its own
                    slots.append(session_command(server, session, name, command[1:]))
                    self._proto = session.proto
                else:
                    reply = server.local_command(name, command[1:], self._id)
                    slots.append(reply)
                    if isinstance(reply, Future):
                        admin.append(reply)
            else:
                given = " ".join(f"'{_text(a)}'" for a in command[1:4])
                slots.append(Error(f"ERR unknown command '{_text(command[0])}', "
                                   f"with args beginning with: {given}"))
            queue.popleft()
        write_futures = server.propose_many(writes) if writes else []
        read_future = server.read(reads) if reads else None
        waiting = [*write_futures, *admin] if admin else list(write_futures)
        if read_future is not None:
            waiting.append(read_future)
        return _Run(slots, write_futures, read_future, waiting)

    def _answer(self, run: _Run) -> None:
        """Write the replies of a run whose futures are all done, in one write; after a QUIT,
        close.  The one place replies of a run are built, whether its futures were done when
        it started or settled later, on this thread or another."""
        server = self._server
        replies: list[object] = []
        for slot in run.slots:
            if isinstance(slot, _WriteSlot):
                future = run.write_futures[slot.i]
                exc = future.exception()
                replies.append(server.error_reply(exc) if exc is not None else future.result())
            elif isinstance(slot, Future):  # an administrative command (RAFT.MEMBER)
                exc = slot.exception()
                replies.append(server.error_reply(exc) if exc is not None else slot.result())
            elif isinstance(slot, _ReadSlot):
                read_future = run.read_future
                assert read_future is not None
                exc = read_future.exception()
                replies.append(server.error_reply(exc) if exc is not None
                               else read_future.result()[slot.i])
            else:
                replies.append(slot)
        quit_ = replies[-1] is _QUIT
        if quit_:
            replies[-1] = OK
        assert self._transport is not None
        self._transport.write(encode_many(replies, self._proto))
        if quit_:
            self.close()

    def _end(self, head: object) -> None:
        """Everything before the end marker ``head`` is answered: send the protocol error it
        may be, then close."""
        if isinstance(head, ProtocolError):
            logger.info("%s: closing client connection %d: %s", self._server.node.id, self._id,
                        head)
            assert self._transport is not None
            reason = _text(str(head).encode())
            self._transport.write(encode_many([Error(f"ERR Protocol error: {reason}")]))
        self.close()
