"""MemoryNetwork: delivery, counting, fault injection, delayed ordering, lifecycle."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import MappingProxyType

import pytest

from engine.core.messages import MessageKind
from engine.errors import ConfigError, RaftError
from engine.transport.memory import DELAY_THREAD_NAME, MemoryNetwork, MemoryTransport

from .util import Collector, msg, raft_threads


@pytest.fixture
def net() -> Iterator[MemoryNetwork]:
    network = MemoryNetwork(seed=1234)
    yield network
    network.close()
    assert DELAY_THREAD_NAME not in raft_threads()


def _endpoints(net: MemoryNetwork, *ids: str) -> tuple[dict[str, MemoryTransport],
                                                        dict[str, Collector]]:
    endpoints, collectors = {}, {}
    for node in ids:
        collectors[node] = Collector()
        endpoints[node] = net.endpoint(node)
        endpoints[node].start(collectors[node])
    return endpoints, collectors


def test_immediate_delivery_from_the_senders_thread(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b", "c")
    eps["a"].send([msg("a", "b", 1), msg("a", "c", 2), msg("a", "b", 3)])
    # No delay configured: delivered synchronously, in order, before send() returns.
    assert [m.term for m in got["b"].messages] == [1, 3]
    assert [m.term for m in got["c"].messages] == [2]
    assert got["a"].messages == []
    assert DELAY_THREAD_NAME not in raft_threads()  # no delay, no thread


def test_counts_include_dropped_messages(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b")
    eps["a"].send([msg("a", "b"), msg("a", "b", kind=MessageKind.APPEND)])
    eps["b"].send([msg("b", "nobody", kind=MessageKind.VOTE)])  # unknown node: dropped
    net.faults.set_faults(drop=1.0)
    eps["a"].send([msg("a", "b")] * 5)
    assert len(got["b"].messages) == 2
    assert net.message_count() == 8
    counts = net.message_counts()
    assert counts["HEARTBEAT"] == 6 and counts["APPEND"] == 1 and counts["VOTE"] == 1
    assert set(counts) == {k.name for k in MessageKind}
    assert eps["a"].message_count() == 7 and eps["b"].message_count() == 1
    net.reset_counts()
    assert net.message_count() == 0 and sum(net.message_counts().values()) == 0


def test_messages_to_unstarted_or_closed_endpoints_are_dropped(net: MemoryNetwork) -> None:
    eps, _ = _endpoints(net, "a")
    late = net.endpoint("b")
    eps["a"].send([msg("a", "b", 1)])  # b not started yet
    collector = Collector()
    late.start(collector)
    eps["a"].send([msg("a", "b", 2)])
    late.close()
    eps["a"].send([msg("a", "b", 3)])
    assert [m.term for m in collector.messages] == [2]
    assert net.message_count() == 3


def test_endpoint_recreated_after_close(net: MemoryNetwork) -> None:
    eps, _ = _endpoints(net, "a", "b")
    with pytest.raises(ConfigError, match="already has an open endpoint"):
        net.endpoint("b")
    eps["b"].close()
    eps["b"].close()  # idempotent
    reborn = net.endpoint("b")
    collector = Collector()
    reborn.start(collector)
    eps["a"].send([msg("a", "b", 9)])
    assert [m.term for m in collector.messages] == [9]


def test_start_twice_raises(net: MemoryNetwork) -> None:
    eps, _ = _endpoints(net, "a")
    with pytest.raises(RaftError, match="start"):
        eps["a"].start(Collector())


def test_duplicate_one_delivers_twice(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b")
    net.faults.set_faults(duplicate=1.0)
    eps["a"].send([msg("a", "b", 1), msg("a", "b", 2)])
    assert [m.term for m in got["b"].messages] == [1, 1, 2, 2]
    assert net.message_count() == 2  # counted once each: duplicates are the network's doing


def test_isolation_and_partition(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b", "c")
    net.faults.isolate("c")
    eps["a"].send([msg("a", "b", 1), msg("a", "c", 1)])
    eps["c"].send([msg("c", "a", 1)])
    assert len(got["b"].messages) == 1 and not got["c"].messages and not got["a"].messages
    net.faults.heal()
    net.faults.partition(["a"], ["b", "c"])
    eps["a"].send([msg("a", "b", 2)])
    eps["b"].send([msg("b", "c", 2)])
    assert len(got["b"].messages) == 1 and [m.term for m in got["c"].messages] == [2]
    net.faults.heal()
    eps["a"].send([msg("a", "c", 3)])
    assert [m.term for m in got["c"].messages] == [2, 3]


def test_delayed_delivery_keeps_links_fifo_without_reorder(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b", "c")
    net.faults.set_faults(delay=(0.0, 0.02))
    for term in range(1, 51):
        eps["a"].send([msg("a", "b", term), msg("a", "c", term)])
    assert DELAY_THREAD_NAME in raft_threads()
    assert got["b"].wait_count(50) and got["c"].wait_count(50)
    assert [m.term for m in got["b"].messages] == list(range(1, 51))
    assert [m.term for m in got["c"].messages] == list(range(1, 51))
    # Switch delays off while nothing is pending: back to synchronous delivery.
    net.faults.set_faults()
    assert net.wait_idle(timeout=10)
    eps["a"].send([msg("a", "b", 51)])
    assert got["b"].messages[-1].term == 51


def test_zero_delay_message_does_not_overtake_a_delayed_one(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b")
    net.faults.set_faults(delay=(0.05, 0.05))
    eps["a"].send([msg("a", "b", 1)])
    net.faults.set_faults()  # no delay any more, but term 1 is still in flight
    eps["a"].send([msg("a", "b", 2)])
    assert got["b"].wait_count(2)
    assert [m.term for m in got["b"].messages] == [1, 2]


def test_reorder_lets_later_messages_overtake(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b")
    net.faults.set_faults(delay=(0.0, 0.05), reorder=True)
    eps["a"].send([msg("a", "b", term) for term in range(1, 101)])
    assert got["b"].wait_count(100)
    terms = [m.term for m in got["b"].messages]
    assert sorted(terms) == list(range(1, 101))
    assert terms != list(range(1, 101))


def test_delayed_copy_dropped_if_link_cut_in_flight(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b")
    # The delay only needs to outlast the next two lines; it is generous to stay robust on a
    # loaded machine (this test then takes that long).
    net.faults.set_faults(delay=(0.5, 0.5))
    eps["a"].send([msg("a", "b", 1)])
    net.faults.isolate("b")
    net.faults.set_faults()
    assert net.wait_idle(timeout=10)  # the delayed copy came due while b was cut off
    net.faults.heal()
    eps["a"].send([msg("a", "b", 2)])
    assert got["b"].wait_count(1)
    assert [m.term for m in got["b"].messages] == [2]


def test_no_handler_call_after_close_returns(net: MemoryNetwork) -> None:
    eps, _ = _endpoints(net, "a")
    closed = threading.Event()
    violations: list[int] = []
    calls = threading.Semaphore(0)

    def handler(message: object) -> None:
        if closed.is_set():
            violations.append(1)
        calls.release()

    target = net.endpoint("b")
    target.start(handler)
    stop = threading.Event()

    def blast() -> None:
        while not stop.is_set():
            eps["a"].send([msg("a", "b")] * 10)

    senders = [threading.Thread(target=blast, name=f"test-sender-{i}") for i in range(3)]
    for sender in senders:
        sender.start()
    assert calls.acquire(timeout=10)  # deliveries are under way
    target.close()
    closed.set()
    stop.set()
    for sender in senders:
        sender.join()
    assert violations == []


def test_network_close_joins_delay_thread_and_drops_pending() -> None:
    network = MemoryNetwork(seed=5)
    a, b = network.endpoint("a"), network.endpoint("b")
    got = Collector()
    a.start(Collector())
    b.start(got)
    network.faults.set_faults(delay=(10.0, 10.0))
    a.send([msg("a", "b")])
    assert network.pending_delayed() == 1
    assert DELAY_THREAD_NAME in raft_threads()
    network.close()
    assert DELAY_THREAD_NAME not in raft_threads()
    assert b.closed and got.messages == []
    a.send([msg("a", "b")])  # after close: counted, dropped, no error
    assert network.message_count() == 2
    network.close()  # idempotent
    with pytest.raises(RaftError, match="closed"):
        network.endpoint("c")


def test_handler_exception_is_logged_not_raised(net: MemoryNetwork,
                                                caplog: pytest.LogCaptureFixture) -> None:
    eps, _ = _endpoints(net, "a")

    def broken(message: object) -> None:
        raise RuntimeError("boom")

    b = net.endpoint("b")
    b.start(broken)
    eps["a"].send([msg("a", "b")])
    assert "handler of b raised" in caplog.text


def test_update_peers_validates_and_changes_nothing(net: MemoryNetwork) -> None:
    eps, got = _endpoints(net, "a", "b")
    a = eps["a"]
    a.update_peers({"a": "memory:a", "b": "memory:b"})
    a.update_peers(MappingProxyType({"a": "127.0.0.1:1"}))  # any Mapping; b left out
    for bad, pattern in [
        (["a", "b"], r"peers must be a mapping of node id -> 'host:port', not list"),
        (None, r"not NoneType"),
        ({"b": 7}, r"peers\['b'\]=7 must be a str"),
        ({1: "memory:1"}, r"node id 1 must be a non-empty str"),
        ({"": "memory:"}, r"node id '' must be a non-empty str"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            a.update_peers(bad)  # type: ignore[arg-type]
    # Routing is by id and ignores the book: b, no longer listed, still gets a's messages.
    a.send([msg("a", "b", 1)])
    assert [m.term for m in got["b"].messages] == [1]
    a.close()
    a.update_peers({"a": "memory:a"})  # allowed in any state
