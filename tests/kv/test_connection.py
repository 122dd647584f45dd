"""The KV server's connection protocol (``_Connection``) driven by hand: a fake transport that
records every call, a fake node whose futures the test settles (on the loop thread, or from
another thread), and ``pause_writing``/``resume_writing``/``connection_lost`` called directly.
Deterministic: everything but the foreign-thread test runs on one thread, inside a loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from engine.errors import NotLeaderError
from engine.kv import KVServer
from engine.kv.resp import OK, PONG, Error, encode, parse_reply
from engine.kv.server import _MAX_QUEUED, _Connection

from .test_server import FakeNode
from .util import LIVENESS


class FakeTransport:
    """Records what the connection does to its socket; ``pause_at`` makes ``write()`` call
    ``pause_writing()`` once that many writes were made (as a transport does when its buffer
    passes the high-water mark)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.protocol: _Connection | None = None
        self.pause_at: int | None = None
        self.reading = True
        self.read_pauses = 0
        self.closed: str | None = None  # "close" or "abort"

    def write(self, data: bytes) -> None:
        assert self.closed is None, "written after close"
        self.writes.append(data)
        if self.pause_at is not None and len(self.writes) >= self.pause_at:
            assert self.protocol is not None
            self.pause_at = None
            self.protocol.pause_writing()

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False
        self.read_pauses += 1

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def close(self) -> None:
        self.closed = self.closed or "close"

    def abort(self) -> None:
        self.closed = "abort"

    def replies(self, i: int | None = None) -> list[object]:
        """The replies of write ``i`` (of every write when None), decoded."""
        data = b"".join(self.writes) if i is None else self.writes[i]
        values, pos = [], 0
        while pos < len(data):
            parsed = parse_reply(data, pos)
            assert parsed is not None, "a write ends in the middle of a reply"
            value, pos = parsed
            values.append(value)
        return values


class Harness:
    """One _Connection of a KVServer (never started) over a FakeNode and a FakeTransport."""

    def __init__(self, node: FakeNode | None = None) -> None:
        self.node = node or FakeNode()
        self.server = KVServer(self.node, "127.0.0.1:0")  # type: ignore[arg-type]
        self.connection = _Connection(self.server)
        self.transport = FakeTransport()
        self.transport.protocol = self.connection
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]

    def send(self, *commands: list[bytes]) -> None:
        self.connection.data_received(b"".join(encode(c) for c in commands))


async def in_another_thread(fn: Callable[[], object]) -> None:
    """Run ``fn`` in a thread of its own, then let the loop run what that thread handed it
    with call_soon_threadsafe (a callback queued now runs after those: the loop keeps FIFO
    order)."""
    thread = threading.Thread(target=fn)
    thread.start()
    thread.join(LIVENESS)
    assert not thread.is_alive()
    marker = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(marker.set_result, None)
    await marker


def on_loop(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the test body on a fresh event loop (connection_made needs a running loop)."""
    asyncio.run(asyncio.wait_for(body(), LIVENESS))


def test_pipeline_of_writes_reads_ping_and_quit_is_answered_in_order() -> None:
    async def body() -> None:
        h = Harness()
        node, transport = h.node, h.transport
        h.send([b"SET", b"a", b"1"], [b"INCR", b"n"],          # one run of writes
               [b"GET", b"a"], [b"PING"],                      # a read, PING rides along
               [b"SET", b"b", b"2"],                           # a write again
               [b"MGET", b"a", b"b"], [b"QUIT"], [b"PING"])    # after QUIT: nothing
        assert node.counts() == (2, 0)  # both writes in one propose_many, nothing else yet
        node.commit(1)
        assert transport.writes == []  # the run waits for all of its writes
        node.commit(0)  # settled on the loop thread: answered at once, no hop
        assert transport.replies(0) == [OK, 1]
        assert node.counts() == (2, 1)
        node.serve_read(0)
        assert transport.replies(1) == [b"1", PONG]
        assert node.counts() == (3, 1)
        node.commit(2)
        assert transport.replies(2) == [OK]
        assert node.counts() == (3, 2)
        assert transport.closed is None
        node.serve_read(1)
        assert transport.replies(3) == [[b"1", b"2"], OK]  # QUIT's +OK in the same write
        assert transport.closed == "close"
        assert len(transport.writes) == 4 and node.counts() == (3, 2)
    on_loop(body)


def test_futures_done_at_once_are_answered_inside_data_received() -> None:
    class NotLeaderNode(FakeNode):
        def propose_many(self, commands: list[bytes]) -> list:
            futures = super().propose_many(commands)
            for _, future in self.proposals:
                if not future.done():
                    future.set_exception(NotLeaderError("n2"))
            return futures

    async def body() -> None:
        h = Harness(NotLeaderNode())
        h.send([b"SET", b"a", b"1"], [b"SET", b"b", b"2"], [b"PING"], [b"GET", b"a"])
        assert h.transport.replies(0) == [Error("NOTLEADER n2")] * 2 + [PONG]
        assert h.node.counts() == (2, 1)  # the read started once the writes were answered
        h.node.serve_read(0)
        assert h.transport.replies(1) == [None]
    on_loop(body)


def test_futures_settled_from_another_thread_hop_to_the_loop_in_order() -> None:
    async def body() -> None:
        h = Harness()
        node, transport = h.node, h.transport
        h.send([b"SET", b"a", b"1"], [b"SET", b"b", b"2"], [b"GET", b"b"], [b"PING"])
        assert node.counts() == (2, 0)
        loop_thread = threading.get_ident()
        calls: list[int] = []
        resume = h.connection._resume

        def spy(future: Any) -> None:
            calls.append(threading.get_ident())
            resume(future)
        h.connection._resume = spy  # type: ignore[method-assign]

        written_there: list[int] = []

        def commit_all() -> None:
            node.commit(1)
            node.commit(0)
            written_there.append(len(transport.writes))
        await in_another_thread(commit_all)
        assert written_there == [0]  # nothing was written from the foreign thread
        assert transport.replies(0) == [OK, OK]
        assert calls and set(calls) == {loop_thread}
        await in_another_thread(lambda: node.serve_read(0))
        assert transport.replies(1) == [b"2", PONG]
    on_loop(body)


def test_pause_writing_holds_back_the_next_run() -> None:
    async def body() -> None:
        h = Harness()
        node, transport, connection = h.node, h.transport, h.connection
        h.send([b"SET", b"a", b"1"], [b"GET", b"a"], [b"SET", b"a", b"2"], [b"PING"])
        transport.pause_at = 1  # the first write fills the buffer
        node.commit(0)
        assert transport.replies(0) == [OK]  # the finished run is still written
        assert node.counts() == (1, 0)  # but the read does not start
        connection.pause_writing()  # a second pause changes nothing
        connection.resume_writing()
        assert node.counts() == (1, 1)
        connection.pause_writing()  # paused while a run is in flight:
        node.serve_read(0)
        assert transport.replies(1) == [b"1"]  # its replies go out,
        assert node.counts() == (1, 1)  # the next run waits
        connection.resume_writing()
        assert node.counts() == (2, 1)
        node.commit(1)
        assert transport.replies(2) == [OK, PONG]
        assert transport.reading and transport.read_pauses == 0
    on_loop(body)


def test_reading_pauses_while_max_queued_commands_wait() -> None:
    async def body() -> None:
        h = Harness()
        node, transport = h.node, h.transport
        h.send([b"SET", b"a", b"1"])  # in flight: what follows waits
        h.send(*([[b"GET", b"a"]] * _MAX_QUEUED))
        assert not transport.reading and transport.read_pauses == 1
        node.commit(0)  # the reads all start as one run: the queue drains, but the
        assert node.counts() == (1, 1)  # connection is busy until they are answered
        assert not transport.reading
        node.serve_read(0)
        assert transport.replies(1) == [b"1"] * _MAX_QUEUED  # one write
        assert transport.reading
    on_loop(body)


def test_eof_and_protocol_error_wait_for_the_run_before_them() -> None:
    async def body() -> None:
        h = Harness()
        h.send([b"SET", b"a", b"1"])
        h.connection.data_received(b"PING\r\n*1\r\n$abc\r\n")
        assert not h.transport.reading  # nothing more is read after the error
        h.node.commit(0)
        ok, pong, error = h.transport.replies()
        assert (ok, pong) == (OK, PONG)
        assert isinstance(error, Error) and error.startswith("ERR Protocol error: ")
        assert h.transport.closed == "close"

        h = Harness()
        h.send([b"SET", b"a", b"1"], [b"GET", b"a"])
        assert h.connection.eof_received() is True  # half-closed: the replies still go out
        h.node.commit(0)
        h.node.serve_read(0)
        assert h.transport.replies() == [OK, b"1"]
        assert h.transport.closed == "close"
    on_loop(body)


def test_connection_lost_while_a_run_is_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        h = Harness()
        h.send([b"SET", b"a", b"1"], [b"GET", b"a"])
        h.connection.connection_lost(None)
        assert h.connection not in h.server._connections
        h.node.commit(0)  # on the loop thread: the callback is a no-op
        h.send([b"PING"])  # late data: ignored
        h.connection.resume_writing()
        assert h.node.counts() == (1, 0) and h.transport.writes == []

        h = Harness()
        h.send([b"SET", b"a", b"1"])
        h.connection.connection_lost(ConnectionResetError())
        await in_another_thread(lambda: h.node.commit(0))  # the hop finds nothing to do
        assert h.transport.writes == []
    with caplog.at_level(logging.WARNING):
        on_loop(body)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unexpected_error_closes_only_that_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    class BrokenNode(FakeNode):
        def read(self, fn: Callable[[Any], Any]) -> Any:
            raise RuntimeError("boom")

    async def body() -> None:
        broken = Harness(BrokenNode())
        healthy = Harness()
        broken.send([b"PING"], [b"GET", b"a"])
        assert broken.transport.closed == "abort" and broken.transport.writes == []
        healthy.send([b"PING"])
        assert healthy.transport.replies() == [PONG]
    with caplog.at_level(logging.ERROR):
        on_loop(body)
    assert any("client connection" in r.getMessage() and r.exc_info for r in caplog.records)
