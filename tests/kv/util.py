"""Helpers of the KV tests: free ports, bounded polling, a raw RESP socket, a redirecting client.

Waiting is always on a condition with a deadline (``wait_until`` polls at most every 50 ms);
every timeout is a generous liveness bound, never a performance claim.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.kv.resp import encode, parse_reply
from engine.transport.tcp import free_loopback_ports

T = TypeVar("T")

LIVENESS = 20.0
"""Seconds: upper bound for anything that must eventually happen (slow shared machines)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound to port 0, then closed)."""
    return free_loopback_ports(count)


def consecutive_free_ports(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive free ports (found by binding them), below Linux's
    ephemeral range (32768-60999 by default), so an outgoing connection of another test cannot
    take one of them between this check and the node process binding it."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 32000 - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


def wait_until(predicate: Callable[[], T], timeout: float = LIVENESS, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)  # polling interval of a cross-thread/process condition


class RawClient:
    """A bare socket speaking RESP, for what redis-py will not send (garbage, inline, EOF)."""

    def __init__(self, address: tuple[str, int], timeout: float = LIVENESS) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, *args: bytes | str) -> None:
        self.send(encode([a.encode() if isinstance(a, str) else a for a in args]))

    def reply(self) -> object:
        """The next reply; ConnectionError when the server closed the connection first."""
        return self.reply_bytes()[0]

    def reply_bytes(self) -> tuple[object, bytes]:
        """The next reply and the bytes it came as (RESP2 or RESP3)."""
        while (parsed := parse_reply(self.buf)) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        value, end = parsed
        data, self.buf = self.buf[:end], self.buf[end:]
        return value, data

    def closed_by_server(self) -> bool:
        """True when the server closes the connection (after any unread replies)."""
        try:
            return self.sock.recv(65536) == b"" and not self.buf
        except ConnectionResetError:
            return True


class RedirectingClient:
    """redis-py client that follows ``-NOTLEADER <id> <address>`` and tries other nodes when a
    node is down or knows no leader.  ``call`` retries until ``deadline``."""

    def __init__(self, addresses: list[str], timeout: float = 2.0) -> None:
        self.addresses = addresses
        self.timeout = timeout
        self.current = addresses[0]
        self.redirects = 0
        self._clients: dict[str, redis.Redis] = {}

    def _client(self, address: str) -> redis.Redis:
        if address not in self._clients:
            host, port = address.rsplit(":", 1)
            self._clients[address] = redis.Redis(
                host=host, port=int(port), protocol=2, socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0))
        return self._clients[address]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def call(self, *args: object, deadline: float) -> object:
        """Run one command on the leader; raise TimeoutError past ``deadline``."""
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self._client(self.current).execute_command(*args)
            except redis.ResponseError as exc:
                last_error = exc
                parts = str(exc).split()
                if parts[:1] == ["NOTLEADER"] and len(parts) == 3 and parts[2] != self.current:
                    self.current = parts[2]
                    self.redirects += 1
                    continue
                if parts[:1] not in (["NOTLEADER"], ["TRYAGAIN"]):
                    raise
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                last_error = exc
            self._rotate()
            time.sleep(0.05)  # back-off before retrying another node, not synchronisation
        raise TimeoutError(f"{args[0]!r} did not succeed before the deadline: {last_error!r}")

    def _rotate(self) -> None:
        index = self.addresses.index(self.current) if self.current in self.addresses else -1
        self.current = self.addresses[(index + 1) % len(self.addresses)]
