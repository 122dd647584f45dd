"""TcpTransport over 127.0.0.1: delivery, reconnects, authentication, bad input, cleanup.

Synchronisation is by events: a Collector's condition, a LogWatcher's event, or a raw socket's
blocking recv (EOF tells us the transport closed the connection).  Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from engine.core.messages import Message, MessageKind
from engine.errors import ConfigError
from engine.transport import tcp
from engine.transport.faults import FaultPlan
from engine.transport.framing import decode_message, encode_message
from engine.transport.tcp import TcpTransport
from engine.types import Entry
from tests.fds import leaked_fds, open_fds

from .util import WAIT, Collector, LogWatcher, free_port, msg, raft_threads

SECRET = b"correct horse battery staple"
TCP_LOGGER = "engine.transport.tcp"

Factory = Callable[..., tuple[dict[str, TcpTransport], dict[str, Collector]]]
T = TypeVar("T")


@pytest.fixture(autouse=True, params=["uvloop", "asyncio"])
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on uvloop and on the default asyncio loop (the fallback)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    else:
        monkeypatch.setattr(tcp, "new_event_loop", asyncio.new_event_loop)
    return str(request.param)


@pytest.fixture
def peers() -> dict[str, str]:
    return {node: f"127.0.0.1:{free_port()}" for node in ("a", "b", "c")}


@pytest.fixture
def make(peers: dict[str, str]) -> Iterator[Factory]:
    """Start transports for the given ids (default all), each with the address book ``book``
    (default ``peers``); closes everything at the end."""
    created: list[TcpTransport] = []

    def factory(*ids: str, book: dict[str, str] | None = None,
                **kwargs: object) -> tuple[dict[str, TcpTransport], dict[str, Collector]]:
        kwargs.setdefault("secret", SECRET)
        kwargs.setdefault("backoff_min", 0.005)
        kwargs.setdefault("backoff_max", 0.05)
        transports, collectors = {}, {}
        for node in ids or tuple(peers):
            collectors[node] = Collector()
            transports[node] = TcpTransport(node, peers if book is None else book, seed=1,
                                            **kwargs)  # type: ignore[arg-type]
            created.append(transports[node])
            transports[node].start(collectors[node])
        return transports, collectors

    yield factory
    for transport in created:
        transport.close()
    assert raft_threads() == []


def send_until(sender: TcpTransport, message: Message, collector: Collector,
               predicate: Callable[[list[Message]], bool], attempts: int = 200) -> bool:
    """Resend until ``predicate`` holds, for links that may be down: each attempt waits on the
    collector's condition (not a sleep) for a short while, since sends during a reconnect
    backoff are dropped by design."""
    for _ in range(attempts):
        sender.send([message])
        if collector.wait_for(predicate, timeout=0.05):
            return True
    return False


def on_loop(transport: TcpTransport, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the transport's loop thread (which owns links and protocols) and return its
    result.  Callbacks run in FIFO order, so ``fn`` sees every callback scheduled before it."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    assert transport._loop is not None
    transport._loop.call_soon_threadsafe(call)
    return future.result(WAIT)


def outbound_to(transport: TcpTransport, peer: str) -> list[tcp._OutboundProtocol]:
    """The transport's open outbound connections to ``peer`` (call on its loop thread)."""
    return [p for p in transport._protocols
            if isinstance(p, tcp._OutboundProtocol) and p.link.peer_id == peer]


def _hello(src: str, dst: str, auth: bool) -> tuple[bytes, bytes]:
    nonce = b"n" * 16
    hello = tcp._HELLO.pack(tcp._HELLO_MAGIC, tcp._HS_VERSION, tcp._FLAG_AUTH if auth else 0,
                            len(src), len(dst), nonce) + src.encode() + dst.encode()
    return hello, nonce


def _raw_connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=WAIT)
    return sock


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} of {count} bytes")
        data += chunk
    return data


def _wait_eof(sock: socket.socket) -> bool:
    """Block (with the socket's timeout) until the peer closes; True on EOF or reset."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    return True


# ---------------------------------------------------------------- delivery

def test_three_nodes_deliver_both_ways(make: Factory, peers: dict[str, str]) -> None:
    transports, got = make()
    for node, transport in transports.items():
        assert transport.bound_address == ("127.0.0.1", int(peers[node].rsplit(":", 1)[1]))
    entries = (Entry(1, 1, 0, b"x" * 100), Entry(2, 1, 0, b""))
    for src, transport in transports.items():
        transport.send([msg(src, dst, kind=MessageKind.APPEND, entries=entries, index=0)
                        for dst in peers if dst != src])
    for node in peers:
        assert got[node].wait_count(2)
        senders = sorted(m.src for m in got[node].messages)
        assert senders == sorted(p for p in peers if p != node)
        assert all(tuple(m.entries) == entries for m in got[node].messages)


def test_runs_on_the_selected_loop(make: Factory, loop_kind: str) -> None:
    transports, _ = make("a")
    module = type(transports["a"]._loop).__module__
    assert module.startswith("uvloop") == (loop_kind == "uvloop"), module


def test_many_messages_arrive_in_order(make: Factory) -> None:
    # The queue holds them all even if the loop does not run until the last send.
    transports, got = make("a", "b", max_queue=4096)
    for start in range(0, 2000, 100):
        transports["a"].send([msg("a", "b", term) for term in range(start, start + 100)])
    assert got["b"].wait_count(2000), transports["a"].dropped_count()
    assert [m.term for m in got["b"].messages] == list(range(2000))
    assert transports["a"].message_count() == 2000
    assert transports["a"].dropped_count() == 0


def test_self_addressed_messages_loop_back(make: Factory) -> None:
    transports, got = make("a")
    transports["a"].send([msg("a", "a", 4)])
    assert got["a"].wait_count(1)
    assert got["a"].messages[0].term == 4


def test_counting_includes_dropped(make: Factory) -> None:
    transports, got = make("a", "b")
    a = transports["a"]
    a.send([msg("a", "b"), msg("a", "zz", kind=MessageKind.VOTE)])  # zz: unknown peer
    assert got["b"].wait_count(1)
    assert a.message_count() == 2
    assert a.message_counts()["VOTE"] == 1 and a.message_counts()["HEARTBEAT"] == 1
    assert a.dropped_count() == 1
    a.reset_counts()
    assert a.message_count() == 0 and a.dropped_count() == 0


def test_reconnect_after_peer_restart(make: Factory, peers: dict[str, str]) -> None:
    transports, got = make()
    transports["a"].send([msg("a", "b", 1)])
    assert got["b"].wait_count(1)
    transports["b"].close()
    # While b is down a's sends fail or are dropped; none of that may disturb a or c.
    transports["a"].send([msg("a", "b", 2), msg("a", "c", 2)])
    assert got["c"].wait_count(1)
    reborn = TcpTransport("b", peers, secret=SECRET, seed=2)
    collector = Collector()
    reborn.start(collector)
    try:
        assert send_until(transports["a"], msg("a", "b", 3), collector,
                          lambda ms: any(m.term == 3 for m in ms))
        # And b can talk to a again over its own new outbound connection.
        reborn.send([msg("b", "a", 4)])
        assert got["a"].wait_for(lambda ms: any(m.term == 4 for m in ms))
    finally:
        reborn.close()


def test_sends_to_a_peer_that_never_started_are_dropped_not_piled_up(make: Factory) -> None:
    with LogWatcher(TCP_LOGGER, "cannot reach c") as watcher:
        transports, got = make("a", "b")
        transports["a"].send([msg("a", "c")] * 10)
        assert watcher.seen.wait(WAIT)
    # The queue for the unreachable peer was dropped, and b is unaffected.
    transports["a"].send([msg("a", "b")])
    assert got["b"].wait_count(1)
    assert transports["a"].dropped_count() >= 10


# ---------------------------------------------------------------- faults

def test_fault_plan_isolation_and_duplicates(make: Factory) -> None:
    plan = FaultPlan(seed=3)
    transports, got = make(faults=plan)
    plan.isolate("c")
    transports["a"].send([msg("a", "c", 1), msg("a", "b", 1)])
    assert got["b"].wait_count(1)
    plan.rejoin("c")
    plan.set_faults(duplicate=1.0)
    transports["a"].send([msg("a", "c", 2)])
    assert got["c"].wait_count(2)
    plan.set_faults()
    transports["a"].send([msg("a", "c", 3)])
    assert got["c"].wait_count(3)
    # Same link, FIFO: had term 1 been sent it would have arrived before term 2.
    assert [m.term for m in got["c"].messages] == [2, 2, 3]
    assert transports["a"].message_count() == 4


def test_fault_plan_delay_keeps_fifo_and_drop_all(make: Factory) -> None:
    plan = FaultPlan(seed=4)
    transports, got = make("a", "b", faults=plan)
    plan.set_faults(delay=(0.0, 0.02))
    transports["a"].send([msg("a", "b", term) for term in range(50)])
    plan.set_faults()
    transports["a"].send([msg("a", "b", 50)])  # must queue behind the delayed ones
    assert got["b"].wait_count(51)
    assert [m.term for m in got["b"].messages] == list(range(51))
    plan.set_faults(drop=1.0)
    transports["a"].send([msg("a", "b", 99)] * 20)
    plan.set_faults()
    transports["a"].send([msg("a", "b", 100)])
    assert got["b"].wait_count(52)
    assert got["b"].messages[-1].term == 100 and len(got["b"].messages) == 52


def test_receiver_side_cut_drops_frames_in_flight(peers: dict[str, str]) -> None:
    """The receiver checks link_up too: here only b has the plan, so a sends and b drops."""
    plan = FaultPlan(seed=5)
    a = TcpTransport("a", peers, seed=1)
    b = TcpTransport("b", peers, seed=1, faults=plan)
    got = Collector()
    a.start(Collector())
    b.start(got)
    try:
        a.send([msg("a", "b", 1)])
        assert got.wait_count(1)
        with LogWatcher(TCP_LOGGER, "b: dropped HEARTBEAT from a: link cut") as watcher:
            plan.partition(["a"], ["b"])
            a.send([msg("a", "b", 2)])
            assert watcher.seen.wait(WAIT)  # b received term 2 and dropped it
        plan.heal()
        a.send([msg("a", "b", 3)])
        assert got.wait_count(2)
        assert [m.term for m in got.messages] == [1, 3]
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- authentication

def test_wrong_secret_refused_and_nothing_delivered(make: Factory,
                                                    peers: dict[str, str]) -> None:
    transports, got = make("a", "b")
    with LogWatcher(TCP_LOGGER, "failed HMAC authentication") as watcher:
        intruder = TcpTransport("c", peers, secret=b"wrong secret", seed=3, backoff_min=0.005,
                                backoff_max=0.05)
        intruder.start(Collector())
        try:
            intruder.send([msg("c", "a", 666)])
            assert watcher.seen.wait(WAIT)
        finally:
            intruder.close()
    transports["b"].send([msg("b", "a", 1)])
    assert got["a"].wait_count(1)
    assert all(m.src != "c" for m in got["a"].messages)


def test_server_verifies_the_client_proof(make: Factory, peers: dict[str, str]) -> None:
    transports, got = make("a", "b")
    with LogWatcher(TCP_LOGGER, "HMAC authentication failed") as watcher:
        sock = _raw_connect(peers["a"])
        with sock:
            hello, _ = _hello("c", "a", auth=True)
            sock.sendall(hello)
            magic, _, _ = tcp._CHALLENGE.unpack(
                _recv_exact(sock, tcp._CHALLENGE.size))
            assert magic == tcp._CHALLENGE_MAGIC
            # A client that does not know the secret cannot forge the answer; it also sends a
            # frame right behind it, which must never be decoded.
            forged = hmac.digest(b"guess", b"anything", "sha256")
            sock.sendall(tcp._AUTH.pack(tcp._AUTH_MAGIC, forged)
                         + encode_message(msg("c", "a", 666)))
            assert _wait_eof(sock)
        assert watcher.seen.wait(WAIT)
    transports["b"].send([msg("b", "a", 1)])
    assert got["a"].wait_count(1)
    assert [m.src for m in got["a"].messages] == ["b"]


def test_correct_raw_handshake_then_frames(make: Factory, peers: dict[str, str]) -> None:
    """The documented handshake, done by hand, is accepted (pins the wire protocol)."""
    _, got = make("a")
    with _raw_connect(peers["a"]) as sock:
        hello, nonce = _hello("c", "a", auth=True)
        sock.sendall(hello)
        _, server_nonce, proof = tcp._CHALLENGE.unpack(_recv_exact(sock, tcp._CHALLENGE.size))
        assert hmac.compare_digest(
            proof, tcp._proof(SECRET, b"raft-srv", nonce, server_nonce, b"c", b"a"))
        answer = tcp._proof(SECRET, b"raft-cli", nonce, server_nonce, b"c", b"a")
        sock.sendall(tcp._AUTH.pack(tcp._AUTH_MAGIC, answer))
        assert _recv_exact(sock, 4) == tcp._ACCEPT
        sock.sendall(encode_message(msg("c", "a", 7)))
        assert got["a"].wait_count(1)
    assert got["a"].messages[0].term == 7


def test_unauthenticated_hello_refused_by_a_secret_node(make: Factory,
                                                        peers: dict[str, str]) -> None:
    _, got = make("a", "b")
    with LogWatcher(TCP_LOGGER, "authentication mismatch") as watcher:
        with _raw_connect(peers["a"]) as sock:
            sock.sendall(_hello("c", "a", auth=False)[0] + encode_message(msg("c", "a", 666)))
            assert _wait_eof(sock)
        assert watcher.seen.wait(WAIT)
    assert got["a"].messages == []


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n\r\n" * 4, bytes(range(256)) * 4])
def test_garbage_before_handshake_closes_connection(make: Factory, peers: dict[str, str],
                                                    garbage: bytes) -> None:
    transports, got = make("a", "b")
    with LogWatcher(TCP_LOGGER, "refused inbound connection") as watcher:
        with _raw_connect(peers["a"]) as sock:
            sock.sendall(garbage)
            assert _wait_eof(sock)
        assert watcher.seen.wait(WAIT)
    transports["b"].send([msg("b", "a", 1)])
    assert got["a"].wait_count(1)


def test_bad_frame_after_handshake_closes_only_that_connection(peers: dict[str, str],
                                                               make: Factory) -> None:
    transports, got = make("a", "b", secret=None)
    with LogWatcher(TCP_LOGGER, "bad frame") as watcher:
        with _raw_connect(peers["a"]) as sock:
            sock.sendall(_hello("c", "a", auth=False)[0])
            assert _recv_exact(sock, 4) == tcp._ACCEPT
            good = encode_message(msg("c", "a", 5))
            sock.sendall(good + b"\x55" * 200)
            assert _wait_eof(sock)
        assert watcher.seen.wait(WAIT)
    assert [m.term for m in got["a"].messages] == [5]  # the good frame before it got through
    transports["b"].send([msg("b", "a", 6)])
    assert got["a"].wait_count(2)


def test_frame_with_forged_src_closes_connection(peers: dict[str, str], make: Factory) -> None:
    _, got = make("a", "b", secret=None)
    with LogWatcher(TCP_LOGGER, "authenticated as 'c'") as watcher:
        with _raw_connect(peers["a"]) as sock:
            sock.sendall(_hello("c", "a", auth=False)[0])
            assert _recv_exact(sock, 4) == tcp._ACCEPT
            sock.sendall(encode_message(msg("b", "a", 666)))  # c pretending to be b
            assert _wait_eof(sock)
        assert watcher.seen.wait(WAIT)
    assert got["a"].messages == []


def test_full_queue_drops_oldest_and_writes_coalesce(peers: dict[str, str]) -> None:
    """A peer that accepts the TCP connection but stalls the handshake keeps the sender in
    CONNECTING, so messages pile up in the bounded queue; the oldest are dropped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        fake_b = f"127.0.0.1:{listener.getsockname()[1]}"
        a = TcpTransport("a", {"a": peers["a"], "b": fake_b}, secret=None, max_queue=8,
                         handshake_timeout=WAIT)
        a.start(Collector())
        try:
            a.send([msg("a", "b", 0)])
            listener.settimeout(WAIT)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                # a is now waiting for our ACCEPT: everything it is handed queues.
                a.send([msg("a", "b", term) for term in range(1, 20)])
                assert a.dropped_count() == 20 - 8
                hello_size = tcp._HELLO.size + 2
                _recv_exact(conn, hello_size)
                conn.sendall(tcp._ACCEPT)
                frames = b""
                terms: list[int] = []
                while len(terms) < 8:
                    frames += conn.recv(65536)
                    while len(frames) >= 4:
                        length = int.from_bytes(frames[:4], "little") + 4
                        if len(frames) < length:
                            break
                        terms.append(decode_message(frames[:length]).term)
                        frames = frames[length:]
                assert terms == list(range(12, 20))
        finally:
            a.close()


# ---------------------------------------------------------------- membership (update_peers)

def test_update_peers_adds_a_member(make: Factory, peers: dict[str, str]) -> None:
    old_book = {node: peers[node] for node in ("a", "b")}
    transports, got = make("a", "b", book=old_book)
    newcomer, got_c = make("c")  # c starts with the new book: a, b, c
    a, c = transports["a"], newcomer["c"]
    # a accepts the authenticated newcomer before it has heard of it.
    c.send([msg("c", "a", 1)])
    assert got["a"].wait_count(1)
    assert got["a"].messages[0].src == "c"
    a.send([msg("a", "c", 2)])  # c is not in a's book yet: dropped and counted
    assert a.dropped_count() == 1
    a.update_peers(peers)
    a.send([msg("a", "c", 3), msg("a", "b", 3)])
    assert got_c["c"].wait_count(1) and got["b"].wait_count(1)
    assert [m.term for m in got_c["c"].messages] == [3]
    assert a.dropped_count() == 1


def test_update_peers_removes_a_member(peers: dict[str, str]) -> None:
    """b is a raw socket that accepts a's connection but stalls the handshake, so a's messages
    for b sit in the queue; removing b closes the connection and drops (and counts) them."""
    warm = TcpTransport("a", {"a": peers["a"]})  # uvloop opens a process-wide pipe once
    warm.start(Collector())
    warm.close()
    before = open_fds()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(WAIT)
        book = {"a": peers["a"], "b": f"127.0.0.1:{listener.getsockname()[1]}"}
        a = TcpTransport("a", book, secret=None, max_queue=64, handshake_timeout=WAIT)
        a.start(Collector())
        try:
            a.send([msg("a", "b", 0)])
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                _recv_exact(conn, tcp._HELLO.size + 2)  # a now waits for our ACCEPT
                a.send([msg("a", "b", term) for term in range(1, 6)])
                assert a.dropped_count() == 0
                a.update_peers({"a": peers["a"]})
                assert _wait_eof(conn)  # a closed its connection to b
            assert a.dropped_count() == 6  # what was queued for b
            a.send([msg("a", "b", 7)] * 3)  # later sends: like an unknown peer
            assert a.message_count() == 9 and a.dropped_count() == 9
            assert on_loop(a, lambda: (sorted(a._links), outbound_to(a, "b"))) == ([], [])
            assert "b" not in a._outq
        finally:
            a.close()
    assert raft_threads() == []
    assert leaked_fds(before) == set()


def test_update_peers_moves_a_member(make: Factory, peers: dict[str, str]) -> None:
    transports, got = make("a", "b")
    a = transports["a"]
    a.send([msg("a", "b", 1)])
    assert got["b"].wait_count(1)
    moved_book = dict(peers, b=f"127.0.0.1:{free_port()}")
    moved, got_moved = make("b", book=moved_book)  # b again, listening elsewhere
    a.update_peers(moved_book)
    a.send([msg("a", "b", 2)])
    assert got_moved["b"].wait_count(1)
    assert [m.term for m in got_moved["b"].messages] == [2]
    assert [m.term for m in got["b"].messages] == [1]  # nothing more went to the old address

    def link_state() -> tuple[tuple[str, int], int]:
        link = a._links["b"]
        return (link.host, link.port), len(outbound_to(a, "b"))

    assert on_loop(a, link_state) == (moved["b"].bound_address, 1)  # old connection closed


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ({"c": "nohost"}, r"peers\['c'\]='nohost' must be 'host:port'"),
        ({"c": "127.0.0.1:99999"}, r"port 99999 must be in 0..65535"),
        ({"b": "127.0.0.1:x"}, r"port 'x' is not an integer"),
        ({"c": 5}, r"peers\['c'\]=5 must be a str"),
        ({"": "127.0.0.1:1"}, r"node id '' must be a non-empty str"),
    ],
)
def test_update_peers_rejects_a_malformed_book_and_changes_nothing(
        make: Factory, peers: dict[str, str], bad: dict[str, object], pattern: str) -> None:
    book = {node: peers[node] for node in ("a", "b")}
    transports, got = make("a", "b", book=book)
    a = transports["a"]
    addresses, outq = a._addresses, a._outq
    with pytest.raises(ConfigError, match=pattern):
        a.update_peers({**book, **bad})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="must be a mapping"):
        a.update_peers(["a", "b"])  # type: ignore[arg-type]
    assert a._addresses is addresses and a._outq is outq and a._book_version == 0
    a.send([msg("a", "b", 1)])
    assert got["b"].wait_count(1)


def test_update_peers_ignores_own_entry_and_unchanged_books(make: Factory,
                                                            peers: dict[str, str]) -> None:
    transports, got = make("a", "b")
    a = transports["a"]
    a.update_peers(dict(peers, a="127.0.0.1:1"))  # cannot move its own listener
    a.update_peers({node: address for node, address in peers.items() if node != "a"})
    assert a._book_version == 0
    transports["b"].send([msg("b", "a", 1)])
    assert got["a"].wait_count(1)


def test_update_peers_while_sends_are_in_flight(make: Factory, peers: dict[str, str]) -> None:
    """c leaves and rejoins a's book repeatedly while another thread sends to b and c: no
    exception on a's loop, and both links work afterwards."""
    transports, got = make()
    a = transports["a"]
    errors: list[dict[str, object]] = []
    on_loop(a, lambda: a._loop.set_exception_handler(  # type: ignore[union-attr]
        lambda loop, context: errors.append(context)))
    without_c = {node: peers[node] for node in ("a", "b")}
    stop = threading.Event()

    def blast() -> None:
        while not stop.is_set():
            a.send([msg("a", "b"), msg("a", "c")])

    sender = threading.Thread(target=blast, name="test-blaster")
    sender.start()
    try:
        for _ in range(25):
            a.update_peers(without_c)
            a.update_peers(peers)
        assert got["b"].wait_count(1) and got["c"].wait_count(1)
    finally:
        stop.set()
        sender.join()
    assert send_until(a, msg("a", "c", 99), got["c"], lambda ms: ms[-1].term == 99)
    assert send_until(a, msg("a", "b", 99), got["b"], lambda ms: ms[-1].term == 99)
    assert on_loop(a, lambda: len(outbound_to(a, "c"))) == 1
    assert errors == []


# ---------------------------------------------------------------- lifecycle

def _round_trip_cluster(peers: dict[str, str]) -> None:
    transports = {n: TcpTransport(n, peers, secret=SECRET, seed=9) for n in peers}
    got = {n: Collector() for n in peers}
    try:
        for node, transport in transports.items():
            transport.start(got[node])
        for src, transport in transports.items():
            transport.send([msg(src, dst) for dst in peers if dst != src])
        for node in peers:
            assert got[node].wait_count(2)
    finally:
        for transport in transports.values():
            transport.close()


def test_close_leaves_no_thread_and_no_fd(peers: dict[str, str]) -> None:
    # Warm up: uvloop/libuv open a process-wide pipe the first time a loop is created.
    _round_trip_cluster({n: f"127.0.0.1:{free_port()}" for n in peers})
    before = open_fds()
    _round_trip_cluster(peers)
    assert raft_threads() == []
    assert leaked_fds(before) == set()


def test_close_is_idempotent_and_send_after_close_is_dropped(make: Factory) -> None:
    transports, _ = make("a")
    a = transports["a"]
    a.close()
    a.close()
    a.send([msg("a", "b")])
    assert a.message_count() == 1 and a.dropped_count() == 1
    assert "raft-a-net" not in raft_threads()


def test_close_before_start_and_start_after_close(peers: dict[str, str]) -> None:
    transport = TcpTransport("a", peers)
    transport.close()
    with pytest.raises(Exception, match="start"):
        transport.start(Collector())


def test_bind_failure_raises_and_leaves_nothing(peers: dict[str, str]) -> None:
    with socket.socket() as squatter:
        host, port = peers["a"].rsplit(":", 1)
        squatter.bind((host, int(port)))
        squatter.listen(1)
        transport = TcpTransport("a", peers)
        with pytest.raises(OSError):
            transport.start(Collector())
        transport.close()
    assert raft_threads() == []


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"node_id": "z"}, r"node_id='z' must be a key of peers"),
        ({"peers": {"a": "nohost"}}, r"peers\['a'\]='nohost' must be 'host:port'"),
        ({"peers": {"a": "h:99999"}}, r"port 99999 must be in 0..65535"),
        ({"peers": {"a": "h:x"}}, r"port 'x' is not an integer"),
        ({"secret": b""}, r"secret must be non-empty bytes"),
        ({"max_queue": 0}, r"max_queue=0 must be an int >= 1"),
        ({"backoff_min": 2.0}, r"backoff_min=2.0 must be <= backoff_max=1.0"),
        ({"connect_timeout": 0}, r"connect_timeout=0 must be a finite number > 0"),
    ],
)
def test_config_errors(kwargs: dict[str, object], pattern: str) -> None:
    args: dict[str, object] = {"node_id": "a", "peers": {"a": "127.0.0.1:0"}}
    args.update(kwargs)
    node_id, peer_map = args.pop("node_id"), args.pop("peers")
    with pytest.raises(ConfigError, match=pattern):
        TcpTransport(node_id, peer_map, **args)  # type: ignore[arg-type]


def test_ipv6_address_parsing() -> None:
    assert tcp.parse_address("a", "[::1]:9000") == ("::1", 9000)


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext,
                                                                     ssl.SSLContext]:
    """A throwaway self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not available")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=raft",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    return server, client


def test_tls_with_hmac(make: Factory,
                       tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = tls_contexts
    transports, got = make("a", "b", ssl_context_server=server, ssl_context_client=client)
    transports["a"].send([msg("a", "b", 1, kind=MessageKind.APPEND,
                              entries=(Entry(1, 1, 0, b"secret payload"),))])
    transports["b"].send([msg("b", "a", 2)])
    assert got["b"].wait_count(1) and got["a"].wait_count(1)
    assert got["b"].messages[0].entries[0].data == b"secret payload"


def test_plaintext_client_cannot_talk_to_a_tls_node(
        make: Factory, peers: dict[str, str],
        tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = tls_contexts
    transports, got = make("a", "b", ssl_context_server=server, ssl_context_client=client)
    with LogWatcher(TCP_LOGGER, "cannot reach a") as watcher:
        plain = TcpTransport("c", peers, secret=SECRET, seed=3)
        plain.start(Collector())
        try:
            plain.send([msg("c", "a", 666)])
            assert watcher.seen.wait(WAIT)
        finally:
            plain.close()
    transports["b"].send([msg("b", "a", 1)])
    assert got["a"].wait_count(1)
    assert [m.src for m in got["a"].messages] == ["b"]
