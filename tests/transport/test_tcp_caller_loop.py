"""TcpTransport on event loops the caller runs (``start(handler, loop=...)``), as a node's runtime
will run one loop per node: no thread of the transport's own, the handler on the loop thread,
sends on the loop thread written before they return, faults, and a shutdown that leaves the
loop running and releases every socket.

Each loop runs forever in a thread the test starts and joins (``LoopThread``).  Synchronisation
is by events, futures and conditions; nothing sleeps.  Every test runs on uvloop and on the
default asyncio loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from engine.core.messages import Message, MessageKind
from engine.errors import ConfigError, RaftError
from engine.transport.faults import FaultPlan
from engine.transport.tcp import TcpTransport
from engine.types import Entry
from tests.fds import leaked_fds, open_fds

from .util import (
    WAIT,
    Collector,
    LoopThread,
    free_port,
    msg,
    new_loop,
    port_is_free,
    raft_threads,
)

SECRET = b"correct horse battery staple"


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


@pytest.fixture
def peers() -> dict[str, str]:
    return {node: f"127.0.0.1:{free_port()}" for node in ("a", "b", "c")}


class Cluster:
    """Loop threads and the transports started on them; ``close`` closes the transports first,
    checks that every loop still running was left running and saw no exception, then closes
    the loops."""

    def __init__(self, kind: str, peers: dict[str, str]) -> None:
        self.kind = kind
        self.peers = peers
        self.loops: list[LoopThread] = []
        self.transports: list[TcpTransport] = []
        self.collectors: dict[str, Collector] = {}
        self.loop_errors: list[dict[str, object]] = []  # from the loops' exception handlers

    def loop(self, name: str = "test-loop") -> LoopThread:
        thread = LoopThread(self.kind, name=name)
        thread.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))
        self.loops.append(thread)
        return thread

    def adopt(self, thread: LoopThread) -> LoopThread:
        self.loops.append(thread)
        return thread

    def new(self, node: str, book: dict[str, str] | None = None,
            **kwargs: object) -> TcpTransport:
        kwargs.setdefault("secret", SECRET)
        kwargs.setdefault("backoff_min", 0.005)
        kwargs.setdefault("backoff_max", 0.05)
        transport = TcpTransport(node, self.peers if book is None else book, seed=1,
                                 **kwargs)  # type: ignore[arg-type]
        self.transports.append(transport)
        return transport

    def start(self, node: str, on: LoopThread, book: dict[str, str] | None = None,
              **kwargs: object) -> TcpTransport:
        transport = self.new(node, book, **kwargs)
        self.collectors[node] = Collector()
        transport.start(self.collectors[node], loop=on.loop)
        return transport

    def close(self) -> None:
        try:
            for transport in self.transports:
                transport.close()
            for thread in self.loops:
                if thread.thread.is_alive():
                    assert thread.is_serving()
            assert self.loop_errors == []
        finally:
            for thread in self.loops:
                thread.close()


@pytest.fixture
def cluster(loop_kind: str, peers: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(loop_kind, peers)
    yield c
    c.close()
    assert raft_threads() == []


def _connect(sender: TcpTransport, src: str, dst: str, collector: Collector) -> None:
    """Open sender's link to dst by delivering one message (term 0) over it."""
    before = len(collector.snapshot())
    sender.send([msg(src, dst, 0)])
    assert collector.wait_count(before + 1)


# ---------------------------------------------------------------- delivery and threads

def test_three_nodes_on_one_shared_loop(cluster: Cluster, peers: dict[str, str]) -> None:
    shared = cluster.loop()
    t = {node: cluster.start(node, shared) for node in peers}
    assert raft_threads() == []  # no raft-<id>-net thread: the caller's loop does the work
    for node, transport in t.items():
        assert transport.bound_address == ("127.0.0.1", int(peers[node].rsplit(":", 1)[1]))
    entries = (Entry(1, 1, 0, b"x" * 100), Entry(2, 1, 0, b""))
    for src, transport in t.items():
        transport.send([msg(src, dst, kind=MessageKind.APPEND, entries=entries, index=0)
                        for dst in peers if dst != src])
    for node, got in cluster.collectors.items():
        assert got.wait_count(2)
        assert sorted(m.src for m in got.messages) == sorted(p for p in peers if p != node)
        assert all(tuple(m.entries) == entries for m in got.messages)
        assert got.thread_ids == {shared.ident}  # the handler runs on the loop thread


def test_separate_loops_deliver_both_ways_from_any_thread(cluster: Cluster) -> None:
    loops = {node: cluster.loop(f"test-loop-{node}") for node in ("a", "b")}
    t = {node: cluster.start(node, loops[node]) for node in loops}
    got = cluster.collectors
    t["a"].send([msg("a", "b", 1)])  # from the test's thread
    loops["b"].call(lambda: t["b"].send([msg("b", "a", 2)]))  # from b's own loop thread
    loops["a"].call(lambda: t["b"].send([msg("b", "a", 3)]))  # from another node's loop thread
    other = threading.Thread(target=lambda: t["a"].send([msg("a", "b", 4)]), name="test-sender")
    other.start()
    other.join(WAIT)
    assert got["a"].wait_count(2) and got["b"].wait_count(2)
    assert sorted(m.term for m in got["a"].messages) == [2, 3]
    assert sorted(m.term for m in got["b"].messages) == [1, 4]
    assert got["a"].thread_ids == {loops["a"].ident}
    assert got["b"].thread_ids == {loops["b"].ident}
    assert raft_threads() == []


def test_send_on_the_loop_thread_is_written_before_it_returns(cluster: Cluster) -> None:
    """The runtime fdatasyncs on the loop thread right after send(): the follower must get the
    append meanwhile.  Here a's loop thread blocks after send() (as in an fsync) until b has
    received the message, which can only happen if send() itself wrote it."""
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a, _ = cluster.start("a", la), cluster.start("b", lb)
    got_b = cluster.collectors["b"]
    _connect(a, "a", "b", got_b)
    append = msg("a", "b", 2, kind=MessageKind.APPEND, index=1,
                 entries=(Entry(2, 2, 0, b"y" * 4000),))

    def send_then_block() -> tuple[int, bool]:
        before = a.frames_written()
        a.send([append])
        written = a.frames_written() - before
        return written, got_b.wait_count(2)  # a's loop thread is blocked while waiting

    assert la.call(send_then_block, timeout=2 * WAIT) == (1, True)
    assert got_b.messages[-1] == append


def test_send_from_another_thread_is_written_by_the_loop(cluster: Cluster) -> None:
    """The contrast: a send from a foreign thread only queues and wakes the loop, so while the
    loop thread is busy nothing is written."""
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a, _ = cluster.start("a", la), cluster.start("b", lb)
    got_b = cluster.collectors["b"]
    _connect(a, "a", "b", got_b)
    busy, release = threading.Event(), threading.Event()

    def occupy() -> None:
        busy.set()
        release.wait(WAIT)

    la.loop.call_soon_threadsafe(occupy)
    assert busy.wait(WAIT)
    before = a.frames_written()
    try:
        a.send([msg("a", "b", 2)])
        assert a.frames_written() == before  # only a's loop thread writes, and it is busy
    finally:
        release.set()
    assert got_b.wait_count(2)
    assert la.call(a.frames_written) == before + 1


def test_send_on_the_loop_thread_to_an_unconnected_peer_connects(cluster: Cluster) -> None:
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a, _ = cluster.start("a", la), cluster.start("b", lb)

    def first_send() -> tuple[int, str]:
        before = a.frames_written()
        a.send([msg("a", "b", 1), msg("a", "b", 2)])
        return a.frames_written() - before, a._links["b"].state

    assert la.call(first_send) == (0, "connecting")  # queued behind the connect task
    assert cluster.collectors["b"].wait_count(2)
    assert [m.term for m in cluster.collectors["b"].messages] == [1, 2]


def test_many_sends_on_the_loop_thread_keep_order_under_flow_control(cluster: Cluster) -> None:
    """32 MB sent in one loop callback while b's loop is busy and reads nothing: the socket
    pauses writing, the rest waits in the bounded queue and resume_writing drains it once b
    reads again; nothing is lost or reordered."""
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a = cluster.start("a", la, max_queue=4096)
    cluster.start("b", lb, max_queue=4096)
    got_b = cluster.collectors["b"]
    _connect(a, "a", "b", got_b)
    payload = (Entry(1, 1, 0, b"z" * 16384),)
    busy, release = threading.Event(), threading.Event()

    def occupy() -> None:
        busy.set()
        release.wait(WAIT)

    def blast() -> bool:
        for start in range(0, 2000, 100):
            a.send([msg("a", "b", term, kind=MessageKind.APPEND, index=0, entries=payload)
                    for term in range(start, start + 100)])
        return a._links["b"].paused

    lb.loop.call_soon_threadsafe(occupy)
    assert busy.wait(WAIT)
    try:
        assert la.call(blast)  # the kernel buffers are full: a's socket asked it to wait
    finally:
        release.set()
    assert got_b.wait_count(2001)
    assert [m.term for m in got_b.messages[1:]] == list(range(2000))
    assert a.dropped_count() == 0


def test_self_addressed_sends_on_the_loop_thread_never_reenter_the_handler(
        cluster: Cluster) -> None:
    la = cluster.loop()
    a = cluster.new("a")
    depth = 0
    deepest = 0
    terms: list[int] = []
    done = threading.Event()

    def handler(message: Message) -> None:  # loop thread only: no lock needed
        nonlocal depth, deepest
        depth += 1
        deepest = max(deepest, depth)
        terms.append(message.term)
        if message.term < 5:
            a.send([msg("a", "a", message.term + 1)])  # the runtime stepping and sending
        else:
            done.set()
        depth -= 1

    a.start(handler, loop=la.loop)

    def kick() -> list[int]:
        a.send([msg("a", "a", 1)])
        return list(terms)  # nothing delivered from inside send()

    assert la.call(kick) == []
    assert done.wait(WAIT)
    assert terms == [1, 2, 3, 4, 5] and deepest == 1


def test_handler_replies_from_the_loop_thread(cluster: Cluster) -> None:
    """The runtime's pattern: the handler steps the core and sends the responses at once."""
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a = cluster.start("a", la)
    b = cluster.new("b")
    b.start(lambda m: b.send([msg("b", "a", m.term, kind=MessageKind.APPEND_RESPONSE)]),
            loop=lb.loop)
    a.send([msg("a", "b", term) for term in range(10)])
    got_a = cluster.collectors["a"]
    assert got_a.wait_count(10)
    assert [m.term for m in got_a.messages] == list(range(10))
    assert {m.kind for m in got_a.messages} == {MessageKind.APPEND_RESPONSE}


def test_update_peers_on_the_loop_thread(cluster: Cluster, peers: dict[str, str]) -> None:
    la, lc = cluster.loop("test-loop-a"), cluster.loop("test-loop-c")
    a = cluster.start("a", la, book={node: peers[node] for node in ("a", "b")})
    cluster.start("c", lc)

    def add_c_and_send() -> int:
        a.update_peers(peers)
        a.send([msg("a", "c", 1)])
        return a.dropped_count()

    assert la.call(add_c_and_send) == 0
    assert cluster.collectors["c"].wait_count(1)


# ---------------------------------------------------------------- faults

def test_fault_plan_on_caller_loops(cluster: Cluster) -> None:
    plan = FaultPlan(seed=3)
    lab, lc = cluster.loop("test-loop-ab"), cluster.loop("test-loop-c")
    t = {"a": cluster.start("a", lab, faults=plan), "b": cluster.start("b", lab, faults=plan),
         "c": cluster.start("c", lc, faults=plan)}
    got = cluster.collectors
    a = t["a"]

    # Partition: nothing crosses, from either kind of thread.
    plan.partition(["a", "b"], ["c"])
    a.send([msg("a", "c", 1), msg("a", "b", 1)])
    lab.call(lambda: a.send([msg("a", "c", 2)]))
    t["c"].send([msg("c", "b", 1)])
    assert got["b"].wait_count(1)
    plan.heal()
    a.send([msg("a", "c", 3)])
    assert got["c"].wait_count(1)
    assert [m.term for m in got["c"].messages] == [3]  # FIFO: 1 and 2 would have come first

    # Drop everything, then nothing.
    plan.set_faults(drop=1.0)
    a.send([msg("a", "b", 9)] * 5)
    lab.call(lambda: a.send([msg("a", "b", 9)] * 5))
    plan.set_faults()
    a.send([msg("a", "b", 10)])
    assert got["b"].wait_count(2)
    assert [m.src for m in got["b"].messages] == ["a", "a"]
    assert [m.term for m in got["b"].messages] == [1, 10]

    # Delays: the delay timers run on the caller's loop, and a link stays FIFO.
    plan.set_faults(delay=(0.0, 0.02))
    a.send([msg("a", "b", term) for term in range(20, 40)])
    lab.call(lambda: a.send([msg("a", "b", term) for term in range(40, 50)]))
    plan.set_faults()
    a.send([msg("a", "b", 50)])  # queues behind the delayed ones
    assert got["b"].wait_count(2 + 31)
    assert [m.term for m in got["b"].messages[2:]] == list(range(20, 51))

    # Duplicates, sent on the loop thread.
    plan.set_faults(duplicate=1.0)
    lab.call(lambda: a.send([msg("a", "c", 60)]))
    assert got["c"].wait_count(3)
    plan.set_faults()
    assert [m.term for m in got["c"].messages] == [3, 60, 60]
    assert a.message_count() == 1 + 1 + 1 + 1 + 5 + 5 + 1 + 20 + 10 + 1 + 1


# ---------------------------------------------------------------- close

def _round_trip(cluster: Cluster, book: dict[str, str], la: LoopThread,
                lb: LoopThread) -> dict[str, TcpTransport]:
    """a on la, b on lb: a message each way (so both have an outbound and an inbound
    connection), then close both; returns the closed transports."""
    t = {"a": cluster.new("a", book), "b": cluster.new("b", book)}
    got = {node: Collector() for node in t}
    t["a"].start(got["a"], loop=la.loop)
    t["b"].start(got["b"], loop=lb.loop)
    try:
        t["a"].send([msg("a", "b")])
        lb.call(lambda: t["b"].send([msg("b", "a")]))
        assert got["a"].wait_count(1) and got["b"].wait_count(1)
    finally:
        t["a"].close()
        t["b"].close()
    return t


def test_close_leaves_the_loops_running_and_releases_every_socket(
        cluster: Cluster, peers: dict[str, str]) -> None:
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    # Warm up: the loops (and uvloop, once per process) open some descriptors on first use.
    _round_trip(cluster, {node: f"127.0.0.1:{free_port()}" for node in ("a", "b")}, la, lb)
    before = open_fds()
    t = _round_trip(cluster, {node: peers[node] for node in ("a", "b")}, la, lb)
    assert leaked_fds(before) == set()
    assert port_is_free(peers["a"]) and port_is_free(peers["b"])
    assert la.is_serving() and lb.is_serving()
    assert la.call(lambda: (t["a"]._protocols, t["a"]._connect_tasks)) == (set(), set())
    assert lb.call(lambda: (t["b"]._protocols, t["b"]._connect_tasks)) == (set(), set())
    assert raft_threads() == []


def test_no_handler_call_after_close_while_the_loop_thread_keeps_sending(
        cluster: Cluster) -> None:
    """a's loop thread sends to b in every iteration while the test's thread closes b."""
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a = cluster.start("a", la)
    b = cluster.new("b")
    closed, first, stop = threading.Event(), threading.Event(), threading.Event()
    late: list[Message] = []

    def handler(message: Message) -> None:
        if closed.is_set():
            late.append(message)
        first.set()

    b.start(handler, loop=lb.loop)

    def pump() -> None:
        if not stop.is_set():
            a.send([msg("a", "b")] * 5)
            la.loop.call_soon(pump)

    la.loop.call_soon_threadsafe(pump)
    try:
        assert first.wait(WAIT)
        b.close()
        closed.set()
        assert lb.is_serving()
    finally:
        stop.set()
    la.call(lambda: None)  # the pump has stopped
    assert late == []


def test_close_on_the_loop_thread_raises(cluster: Cluster) -> None:
    la = cluster.loop()
    a = cluster.start("a", la)

    def attempt() -> str:
        with pytest.raises(RaftError, match="loop thread") as info:
            a.close()
        return str(info.value)

    assert "loop thread" in la.call(attempt)
    a.send([msg("a", "a", 1)])  # still running
    assert cluster.collectors["a"].wait_count(1)
    a.close()  # from another thread it works


def test_close_is_idempotent_and_concurrent_closes_all_return(cluster: Cluster) -> None:
    la = cluster.loop()
    a = cluster.start("a", la)
    closers = [threading.Thread(target=a.close, name=f"test-closer-{i}") for i in range(3)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(WAIT)
        assert not closer.is_alive()
    a.close()
    a.send([msg("a", "b")])
    assert a.message_count() == 1 and a.dropped_count() == 1
    assert la.is_serving()


def test_close_when_the_loop_has_stopped_returns_at_once(cluster: Cluster,
                                                         peers: dict[str, str]) -> None:
    """The shutdown stays queued on the stopped loop and releases the sockets when the loop
    runs again."""
    la, lb = cluster.loop("test-loop-a"), cluster.loop("test-loop-b")
    a, _ = cluster.start("a", la), cluster.start("b", lb)
    _connect(a, "a", "b", cluster.collectors["b"])
    la.stop()
    began = time.monotonic()
    a.close()
    assert time.monotonic() - began < WAIT / 2  # not the 10 s bound: it saw the loop stopped
    assert not port_is_free(peers["a"])  # nothing could release it yet
    again = cluster.adopt(LoopThread(cluster.kind, name="test-loop-a-again", loop=la.loop))
    assert a._close_future is not None
    a._close_future.result(WAIT)
    assert port_is_free(peers["a"])
    assert again.call(lambda: (a._protocols, a._connect_tasks)) == (set(), set())


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # uvloop warns of the server it closes
def test_close_when_the_loop_is_closed_still_releases_the_listener(
        cluster: Cluster, peers: dict[str, str]) -> None:
    la = cluster.loop()
    a = cluster.start("a", la)
    la.close()
    began = time.monotonic()
    a.close()
    assert time.monotonic() - began < WAIT / 2
    assert port_is_free(peers["a"])
    a.close()


# ---------------------------------------------------------------- start

def test_bind_failure_raises_oserror_and_leaves_the_loop_running(
        cluster: Cluster, peers: dict[str, str]) -> None:
    la = cluster.loop()
    _round_trip(cluster, {node: f"127.0.0.1:{free_port()}" for node in ("a", "b")}, la, la)
    with socket.socket() as squatter:
        host, port = peers["a"].rsplit(":", 1)
        squatter.bind((host, int(port)))
        squatter.listen(1)
        before = open_fds()
        transport = cluster.new("a")
        with pytest.raises(OSError):
            transport.start(Collector(), loop=la.loop)
        assert leaked_fds(before) == set()
        transport.close()
        transport.close()
        with pytest.raises(RaftError, match="start"):
            transport.start(Collector(), loop=la.loop)
    assert la.is_serving()
    assert raft_threads() == []


def test_start_twice_raises(cluster: Cluster) -> None:
    la = cluster.loop()
    a = cluster.start("a", la)
    with pytest.raises(RaftError, match="start"):
        a.start(Collector(), loop=la.loop)
    with pytest.raises(RaftError, match="start"):
        a.start(Collector())
    a.close()
    with pytest.raises(RaftError, match="start"):
        a.start(Collector(), loop=la.loop)


def test_start_on_the_loop_thread_raises(cluster: Cluster) -> None:
    la = cluster.loop()
    transport = cluster.new("a")

    def attempt() -> str:
        with pytest.raises(RaftError, match="another thread") as info:
            transport.start(Collector(), loop=la.loop)
        return str(info.value)

    assert "another thread" in la.call(attempt)
    transport.start(Collector(), loop=la.loop)  # nothing was changed: it can still start
    assert transport.bound_address is not None


def test_start_rejects_a_closed_loop_and_a_non_loop(cluster: Cluster) -> None:
    loop = new_loop(cluster.kind)
    loop.close()
    transport = cluster.new("a")
    with pytest.raises(RaftError, match="closed"):
        transport.start(Collector(), loop=loop)
    other = cluster.new("b")
    with pytest.raises(ConfigError, match="event loop"):
        other.start(Collector(), loop="not a loop")  # type: ignore[arg-type]


def test_start_times_out_on_a_loop_that_never_runs_and_never_listens(
        cluster: Cluster, peers: dict[str, str]) -> None:
    loop = new_loop(cluster.kind)  # nobody runs it (yet)
    transport = cluster.new("a")
    began = time.monotonic()
    with pytest.raises(RaftError, match="did not start"):
        transport.start(Collector(), timeout=0.2, loop=loop)
    assert time.monotonic() - began < WAIT / 2  # close() did not wait 10 s on the idle loop
    # When the loop finally runs, the queued set-up sees the close and does not listen.
    runner = cluster.adopt(LoopThread(cluster.kind, name="test-late-loop", loop=loop))
    assert transport._close_future is not None
    transport._close_future.result(WAIT)
    assert transport.bound_address is None and port_is_free(peers["a"])
    assert runner.is_serving()


def test_start_waits_for_a_loop_that_starts_running_meanwhile(cluster: Cluster) -> None:
    loop = new_loop(cluster.kind)
    transport = cluster.new("a")
    got = Collector()
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            transport.start(got, loop=loop)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    starter = threading.Thread(target=start, name="test-starter")
    starter.start()
    runner = cluster.adopt(LoopThread(cluster.kind, name="test-loop", loop=loop))
    starter.join(WAIT)
    assert outcome == [None]
    transport.send([msg("a", "a", 1)])
    assert got.wait_count(1) and got.thread_ids == {runner.ident}


def test_transport_on_a_loop_with_a_task_of_the_callers_own(cluster: Cluster) -> None:
    """The transport's shutdown cancels its own tasks only: a task of the caller's on the same
    loop keeps running."""
    la = cluster.loop()
    a = cluster.start("a", la)
    gate = asyncio.Event()

    async def callers_task() -> str:
        await gate.wait()
        return "still here"

    future = asyncio.run_coroutine_threadsafe(callers_task(), la.loop)
    a.close()
    la.loop.call_soon_threadsafe(gate.set)
    assert future.result(WAIT) == "still here"
