"""``python -m bench.pysyncobj_node``: one PySyncObj member with a tiny RESP2 front-end.

::

    python -m bench.pysyncobj_node --self 127.0.0.1:7001 \\
        --partners 127.0.0.1:7002,127.0.0.1:7003 --client 127.0.0.1:6401 \\
        --clients 127.0.0.1:7001=127.0.0.1:6401,127.0.0.1:7002=127.0.0.1:6402,...

The processes family runs three of these so that the load generator that drives the engine's KV
nodes (bench/loadgen.py) drives PySyncObj the same way, over the same protocol.  Each process
is a ``SyncObj`` in PySyncObj's **default configuration** (``SyncObjConf()``: its own tick
thread every 50 ms, batched AppendEntries, the log in memory, no journal file and so no fsync)
holding a replicated dict, plus an asyncio RESP2 server (uvloop when installed, as the engine's
KV server) on ``--client`` in the same process:

* ``SET key value``: the ``@replicated`` method ``set`` with a callback; the reply (``+OK``, or
  ``-TRYAGAIN pysyncobj <reason>``) is sent once PySyncObj calls it back, i.e. once the command
  is committed and applied on this node; replies on one connection keep the order of the
  commands.  On a follower PySyncObj forwards the command to its leader.
* ``GET key``: this node's copy (a local read).
* ``RAFT.STATUS``: a JSON object with ``role`` ("leader" once this node leads and PySyncObj
  says it is ready), ``leader_id``, ``leader_address`` (the leader's client address, from
  ``--clients``), ``term``, ``commit_index``, ``last_applied``, so the harness finds the
  leader as it does for the engine.
* ``PING``, ``ECHO``, ``COMMAND``, ``CONFIG GET``, ``SELECT 0``, ``CLIENT ...``, ``QUIT``:
  enough for redis-cli and redis-benchmark.

SIGTERM or SIGINT stop it (exit 0).  Loopback or any address; no authentication.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
import threading
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, replicated

from bench.resp import Error, ProtocolError, Simple, encode_reply, parse_command

OK = b"+OK\r\n"
_REASONS = {v: k.lower() for k, v in vars(FAIL_REASON).items() if k.isupper()}


class ReplicatedDict(SyncObj):  # type: ignore[misc]
    """A dict whose ``set`` goes through the PySyncObj log."""

    def __init__(self, self_address: str, partners: list[str]) -> None:
        super().__init__(self_address, partners)   # conf=None: SyncObjConf() defaults
        self.data: dict[bytes, bytes] = {}

    @replicated
    def set(self, key: bytes, value: bytes) -> bool:
        self.data[key] = value
        return True


class _Connection(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self.front = front
        self.buf = b""
        self.pending: collections.deque[list[bytes | None]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport   # type: ignore[assignment]  (uvloop's is no subclass)
        with contextlib.suppress(OSError, AttributeError):
            import socket
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        try:
            while pos < len(buf) and (parsed := parse_command(buf, pos)) is not None:
                args, pos = parsed
                if args:
                    self.handle(args)
        except ProtocolError as exc:
            self.pending.append([encode_reply(Error(f"ERR Protocol error: {exc}"))])
            self.closing = True
            buf, pos = b"", 0
        self.buf = buf[pos:]
        self.flush()

    def handle(self, args: list[bytes]) -> None:
        name = args[0].lower()
        if name == b"set" and len(args) == 3:
            slot: list[bytes | None] = [None]
            self.pending.append(slot)
            self.front.obj.set(args[1], args[2],
                               callback=lambda result, error: self.front.done(self, slot, error))
            return
        if name == b"quit":
            self.pending.append([OK])
            self.closing = True
            return
        try:
            reply = self.front.local(name, args[1:])
        except Exception as exc:   # a bug here must not kill the connection's order
            reply = Error(f"ERR {type(exc).__name__}: {exc}")
        self.pending.append([encode_reply(reply)])

    def flush(self) -> None:
        out = []
        pending = self.pending
        while pending and pending[0][0] is not None:
            out.append(pending.popleft()[0])
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))   # type: ignore[arg-type]
        if self.closing and not pending and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Front:
    """The RESP server of one node: commands in, PySyncObj callbacks back on the loop."""

    def __init__(self, obj: ReplicatedDict, self_address: str, clients: dict[str, str]) -> None:
        self.obj = obj
        self.self_address = self_address
        self.clients = clients
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.dirty: set[_Connection] = set()
        self.scheduled = False

    def done(self, conn: _Connection, slot: list[bytes | None], error: int) -> None:
        """PySyncObj's callback (its tick thread): fill the reply, wake the loop once."""
        slot[0] = OK if error == FAIL_REASON.SUCCESS else encode_reply(
            Error(f"TRYAGAIN pysyncobj {_REASONS.get(error, error)}"))
        with self.lock:
            self.dirty.add(conn)
            wake = not self.scheduled
            self.scheduled = True
        if wake and self.loop is not None:
            with contextlib.suppress(RuntimeError):   # the loop closed at shutdown
                self.loop.call_soon_threadsafe(self._flush_dirty)

    def _flush_dirty(self) -> None:
        with self.lock:
            dirty, self.dirty = self.dirty, set()
            self.scheduled = False
        for conn in dirty:
            conn.flush()

    def status(self) -> dict[str, Any]:
        obj = self.obj
        leader = obj._getLeader()
        leader_id = getattr(leader, "address", None) if leader is not None else None
        leading = obj._isLeader()
        role = ("leader" if leading and obj.isReady() else "candidate" if leading
                else "follower")
        return {"id": self.self_address, "system": "pysyncobj", "role": role,
                "leader_id": leader_id, "leader_address": self.clients.get(leader_id or ""),
                "term": obj.raftCurrentTerm, "commit_index": obj.raftCommitIndex,
                "last_applied": obj.raftLastApplied, "ready": obj.isReady()}

    def local(self, name: bytes, args: list[bytes]) -> object:
        if name == b"get" and len(args) == 1:
            return self.obj.data.get(args[0])
        if name == b"ping":
            return Simple("PONG") if not args else args[0]
        if name == b"echo" and len(args) == 1:
            return args[0]
        if name == b"raft.status":
            return json.dumps(self.status()).encode()
        if name == b"command":
            return []
        if name == b"config" and args and args[0].lower() == b"get":
            return []
        if name == b"select" and len(args) == 1:
            return Simple("OK") if args[0] == b"0" else Error("ERR DB index is out of range")
        if name == b"client":
            return Simple("OK") if args and args[0].lower() in (b"setname", b"setinfo") else None
        return Error(f"ERR unknown command '{name[:64].decode(errors='replace')}'")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _serve(front: Front, client: str, stop: asyncio.Event) -> None:
    front.loop = asyncio.get_running_loop()
    host, port = _address(client)
    server = await front.loop.create_server(lambda: _Connection(front), host, port,
                                            reuse_address=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pysyncobj_node",
                                description="One PySyncObj member with a RESP2 front-end.")
    p.add_argument("--self", dest="self_address", required=True, metavar="HOST:PORT",
                   help="this node's PySyncObj address")
    p.add_argument("--partners", required=True, metavar="HOST:PORT,...",
                   help="the other members' PySyncObj addresses")
    p.add_argument("--client", required=True, metavar="HOST:PORT", help="RESP address")
    p.add_argument("--clients", default="", metavar="RAFT=CLIENT,...",
                   help="every member's PySyncObj address = its RESP address (for the status)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    partners = [a for a in args.partners.split(",") if a]
    clients = dict(item.split("=", 1) for item in args.clients.split(",") if "=" in item)
    clients.setdefault(args.self_address, args.client)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    obj = ReplicatedDict(args.self_address, partners)
    front = Front(obj, args.self_address, clients)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(_serve(front, args.client, stop))
    except OSError as exc:
        print(f"pysyncobj_node: cannot serve clients on {args.client}: {exc}", file=sys.stderr)
        return 1
    finally:
        front.loop = None
        obj.destroy()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
