"""One-shot RESP requests to a KV node's client address, and the ``raft-engine transfer`` and
``raft-engine snapshot`` commands built on them (see :mod:`engine.kv.admin` for the server side).

Each request opens a connection, sends one command, reads one reply and closes: tools ask
rarely, and a fresh connection per ask never mixes one reply up with another's.

Exit statuses of the ``run_*`` functions: 0 done, 1 failed (the reason on stderr), 2 bad usage
(an address that is not ``host:port``, an empty id).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from engine.errors import ConfigError, RaftError
from engine.kv.resp import Error, encode, parse_reply
from engine.transport.tcp import parse_address


def request(address: str, command: Sequence[bytes], timeout: float, *,
            password: bytes | None = None) -> object:
    """Send ``command`` to the node serving clients at ``address`` (after ``AUTH password``
    when given, in the same write); its reply as :func:`~engine.kv.resp.parse_reply` returns
    it (an error reply is an ``Error`` value).

    Raises:
        ConfigError: ``address`` is not ``host:port``.
        OSError: unreachable, timed out (``timeout`` bounds the whole exchange) or closed
            before answering.
        ProtocolError: the answer is not RESP.
        RaftError: the node refused the password.
    """
    host, port = parse_address("address", address)
    deadline = time.monotonic() + timeout
    commands = [list(command)] if password is None else [[b"AUTH", password], list(command)]
    replies: list[object] = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"".join(encode(c) for c in commands))
        buf, pos = b"", 0
        while len(replies) < len(commands):
            parsed = parse_reply(buf, pos)
            if parsed is not None:
                replies.append(parsed[0])
                pos = parsed[1]
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply from {address} within {timeout:g}s")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the reply")
            buf += chunk
    if password is not None and isinstance(replies[0], Error):
        raise RaftError(f"{address} refused AUTH: -{replies[0]}")
    return replies[-1]


def json_request(address: str, command: Sequence[bytes], timeout: float,
                 what: str, *, password: bytes | None = None) -> dict[str, Any]:
    """:func:`request` whose reply must be a JSON object (``what`` names it in errors).

    Raises:
        ConfigError, OSError: as :func:`request`.
        RaftError: the node answered with an error or something that is not ``what``.
    """
    reply = request(address, command, timeout, password=password)
    if isinstance(reply, Error):
        raise RaftError(f"{address} answered -{reply}")
    result = _json_object(reply)
    if result is None:
        raise RaftError(f"{address} answered {reply!r}, not {what}")
    return result


def _json_object(reply: object) -> dict[str, Any] | None:
    """``reply`` decoded when it is a bulk string holding a JSON object, else None."""
    if not isinstance(reply, bytes):
        return None
    try:
        result = orjson.loads(reply)
    except orjson.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


def fetch_status(address: str, timeout: float = 2.0, *,
                 password: bytes | None = None) -> dict[str, Any]:
    """RAFT.STATUS of the node serving clients at ``address`` (raises as :func:`json_request`)."""
    return json_request(address, [b"RAFT.STATUS"], timeout, "a status", password=password)


def not_leader_redirect(reply: object) -> tuple[str | None, str | None] | None:
    """``(leader id, its client address)`` of a ``-NOTLEADER`` reply (each None when not
    given); None for any other reply."""
    if not isinstance(reply, Error) or not reply.startswith("NOTLEADER"):
        return None
    words = reply.split()
    return (words[1] if len(words) > 1 else None), (words[2] if len(words) > 2 else None)


def _usage(prog: str, message: str, err: TextIO) -> int:
    print(f"{prog}: error: {message}", file=err)
    return 2


def run_transfer(address: str, target: str, *, timeout: float = 10.0,
                 password: bytes | None = None, prog: str = "raft-engine transfer",
                 out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``raft-engine transfer HOST:PORT TARGET_ID``: RAFT.TRANSFER on the node at ``address``;
    when it answers -NOTLEADER with the leader's client address, asks the leader once.  Prints
    ``<target> leads now ...`` once the target leads."""
    out, err = out or sys.stdout, err or sys.stderr
    if not target:
        return _usage(prog, "TARGET_ID must not be empty", err)
    command = [b"RAFT.TRANSFER", target.encode()]
    try:
        reply = request(address, command, timeout, password=password)
        redirect = not_leader_redirect(reply)
        if redirect is not None and redirect[1] and redirect[1] != address:
            address = redirect[1]
            reply = request(address, command, timeout, password=password)
            redirect = not_leader_redirect(reply)
    except ConfigError as exc:
        return _usage(prog, str(exc), err)
    except (OSError, RaftError) as exc:
        print(f"{prog}: transfer to {target} failed: no answer from {address}: {exc}", file=err)
        return 1
    if redirect is not None:
        leader = (f"the leader is {redirect[0]} (its client address is unknown here)"
                  if redirect[0] else "no leader is known; try again once one is elected")
        print(f"{prog}: transfer to {target} failed: {address} does not lead; {leader}",
              file=err)
        return 1
    if isinstance(reply, Error):
        print(f"{prog}: transfer to {target} failed: {address} answered -{reply}", file=err)
        return 1
    result = _json_object(reply)
    if result is None or result.get("leader_id") != target:
        print(f"{prog}: transfer to {target}: unexpected answer {reply!r}", file=err)
        return 1
    where = f" (clients at {result['leader_address']})" if result.get("leader_address") else ""
    print(f"{target} leads now{where}", file=out)
    return 0


def run_snapshot(address: str, *, timeout: float = 60.0, password: bytes | None = None,
                 prog: str = "raft-engine snapshot", out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """``raft-engine snapshot HOST:PORT``: RAFT.SNAPSHOT on that node; prints
    ``snapshot at index N`` once it is durable."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        reply = request(address, [b"RAFT.SNAPSHOT"], timeout, password=password)
    except ConfigError as exc:
        return _usage(prog, str(exc), err)
    except (OSError, RaftError) as exc:
        print(f"{prog}: snapshot of {address} failed: no answer: {exc}", file=err)
        return 1
    if isinstance(reply, Error) or not isinstance(reply, int):
        answer = f"-{reply}" if isinstance(reply, Error) else repr(reply)
        print(f"{prog}: snapshot of {address} failed: it answered {answer}", file=err)
        return 1
    print(f"snapshot at index {reply}", file=out)
    return 0
