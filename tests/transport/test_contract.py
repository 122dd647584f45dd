"""The Transport contract, one suite run over every implementation: memory, TCP on its own
threads, and TCP on a caller's event loop ("tcp-loop": all nodes share one loop that runs forever
in a thread of the test's, as a node's runtime will run its loop)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator

import pytest

from engine.core.messages import Message, MessageKind
from engine.errors import ConfigError, RaftError
from engine.transport import FaultPlan, MemoryNetwork, MessageHandler, TcpTransport, Transport

from .util import Collector, LoopThread, free_port, msg, raft_threads

IDS = ("a", "b", "c")
LOOP_KIND = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


class Harness:
    """Builds started transports for nodes a, b, c sharing one FaultPlan."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.created: list[Transport] = []
        self.collectors: dict[str, Collector] = {}
        self.loop_thread = LoopThread(LOOP_KIND) if kind == "tcp-loop" else None
        if kind == "memory":
            self.network: MemoryNetwork | None = MemoryNetwork(seed=11)
            self.faults = self.network.faults
            self.peers = {node: f"memory:{node}" for node in IDS}  # addresses are not used
        else:
            self.network = None
            self.faults = FaultPlan(seed=11)
            self.peers = {node: f"127.0.0.1:{free_port()}" for node in IDS}

    def new(self, node: str) -> Transport:
        if self.network is not None:
            transport: Transport = self.network.endpoint(node)
        else:
            transport = TcpTransport(node, self.peers, faults=self.faults, seed=1,
                                     secret=b"s3cret", backoff_min=0.005, backoff_max=0.05)
        self.created.append(transport)
        return transport

    def start(self, *nodes: str) -> dict[str, Transport]:
        out = {}
        for node in nodes or IDS:
            self.collectors[node] = Collector()
            out[node] = self.new(node)
            self.start_one(out[node], self.collectors[node])
        return out

    def start_one(self, transport: Transport, handler: MessageHandler) -> None:
        if self.loop_thread is None:
            transport.start(handler)
        else:
            transport.start(handler, loop=self.loop_thread.loop)

    def close(self) -> None:
        try:
            for transport in self.created:
                transport.close()
            if self.network is not None:
                self.network.close()
            if self.loop_thread is not None:
                assert self.loop_thread.is_serving()  # close() left the caller's loop running
        finally:
            if self.loop_thread is not None:
                self.loop_thread.close()


@pytest.fixture(params=["memory", "tcp", "tcp-loop"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param)
    yield h
    h.close()
    assert raft_threads() == []


def _count(transport: Transport) -> int:
    return transport.message_count()  # type: ignore[attr-defined]


def test_is_a_transport(harness: Harness) -> None:
    assert isinstance(harness.new("a"), Transport)


def test_delivers_to_each_destination(harness: Harness) -> None:
    t = harness.start()
    t["a"].send([msg("a", "b", 1), msg("a", "c", 2), msg("a", "b", 3)])
    t["c"].send([msg("c", "a", 4, kind=MessageKind.VOTE_RESPONSE, reject=True)])
    got = harness.collectors
    assert got["b"].wait_count(2) and got["c"].wait_count(1) and got["a"].wait_count(1)
    assert [m.term for m in got["b"].messages] == [1, 3]
    assert got["a"].messages[0] == msg("c", "a", 4, kind=MessageKind.VOTE_RESPONSE, reject=True)


def test_counts_every_message_including_dropped(harness: Harness) -> None:
    t = harness.start("a", "b")
    harness.faults.set_faults(drop=1.0)
    t["a"].send([msg("a", "b")] * 7)
    t["a"].send([msg("a", "nobody")])
    harness.faults.set_faults()
    t["a"].send([msg("a", "b", 2)])
    assert harness.collectors["b"].wait_count(1)
    assert [m.term for m in harness.collectors["b"].messages] == [2]
    assert _count(t["a"]) == 9


def test_duplicate_fault_delivers_twice(harness: Harness) -> None:
    t = harness.start("a", "b")
    harness.faults.set_faults(duplicate=1.0)
    t["a"].send([msg("a", "b", 1)])
    assert harness.collectors["b"].wait_count(2)
    assert [m.term for m in harness.collectors["b"].messages] == [1, 1]


def test_isolated_node_neither_sends_nor_receives(harness: Harness) -> None:
    t = harness.start()
    harness.faults.isolate("c")
    t["a"].send([msg("a", "c", 1)])
    t["c"].send([msg("c", "b", 1)])
    harness.faults.rejoin("c")
    t["a"].send([msg("a", "c", 2)])
    t["c"].send([msg("c", "b", 2)])
    got = harness.collectors
    assert got["c"].wait_count(1) and got["b"].wait_count(1)
    # FIFO links: had term 1 been sent, it would have arrived before term 2.
    assert [m.term for m in got["c"].messages] == [2]
    assert [m.term for m in got["b"].messages] == [2]


def test_update_peers_accepts_the_current_book(harness: Harness) -> None:
    t = harness.start("a", "b")
    t["a"].update_peers(harness.peers)
    t["a"].update_peers(dict(harness.peers))
    t["a"].send([msg("a", "b", 1)])
    assert harness.collectors["b"].wait_count(1)
    with pytest.raises(ConfigError):
        t["a"].update_peers(["a", "b"])  # type: ignore[arg-type]


def test_start_twice_raises(harness: Harness) -> None:
    t = harness.start("a")
    with pytest.raises(RaftError, match="start"):
        t["a"].start(Collector())


def test_close_is_idempotent_and_later_sends_do_not_raise(harness: Harness) -> None:
    t = harness.start("a", "b")
    t["a"].close()
    t["a"].close()
    t["a"].send([msg("a", "b")])
    t["b"].send([msg("b", "a")])  # to a closed node: dropped quietly
    assert _count(t["a"]) == 1


def test_no_handler_call_after_close_returns(harness: Harness) -> None:
    t = harness.start("a")
    closed = threading.Event()
    first = threading.Event()
    late: list[Message] = []

    def handler(message: Message) -> None:
        if closed.is_set():
            late.append(message)
        first.set()

    target = harness.new("b")
    harness.start_one(target, handler)
    stop = threading.Event()

    def blast() -> None:
        while not stop.is_set():
            t["a"].send([msg("a", "b")] * 5)

    sender = threading.Thread(target=blast, name="test-blaster")
    sender.start()
    try:
        assert first.wait(10)
        target.close()
        closed.set()
    finally:
        stop.set()
        sender.join()
    assert late == []


def test_restart_same_node_id(harness: Harness) -> None:
    t = harness.start("a", "b")
    t["b"].close()
    reborn = harness.new("b")
    got = Collector()
    harness.start_one(reborn, got)
    for _ in range(200):  # the TCP sender may be backing off after b went away
        t["a"].send([msg("a", "b", 5)])
        if got.wait_count(1, timeout=0.05):
            break
    assert got.messages and got.messages[0].term == 5


def test_start_accepts_a_loop(harness: Harness) -> None:
    """Every transport takes ``loop=`` (the in-memory one ignores it); the handler then still
    receives, and with a TCP transport on a caller's loop it runs on that loop's thread."""
    own = harness.loop_thread or LoopThread(LOOP_KIND, name="test-own-loop")
    collectors = {node: Collector() for node in ("a", "b")}
    t: dict[str, Transport] = {}
    try:
        for node in collectors:
            t[node] = harness.new(node)
        for node, transport in t.items():
            transport.start(collectors[node], loop=own.loop)
        t["a"].send([msg("a", "b", 1)])
        t["b"].send([msg("b", "a", 2)])
        assert collectors["b"].wait_count(1) and collectors["a"].wait_count(1)
        if harness.kind == "tcp-loop":
            assert collectors["a"].thread_ids == collectors["b"].thread_ids == {own.ident}
            assert raft_threads() == []
    finally:
        for transport in t.values():
            transport.close()
        if own is not harness.loop_thread:
            own.close()
