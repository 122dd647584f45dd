"""KVServer over an in-process 3-node cluster (memory transport), with redis-py as the client,
plus a fake node that shows how pipelines are proposed and ordered."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import orjson
import pytest
import redis

from engine import LocalCluster, RaftNode, Status
from engine.errors import ProposalDropped
from engine.kv import KVMachine, KVServer
from engine.kv.resp import OK, Error, SimpleString, encode
from tests.conftest import FAST

from .util import LIVENESS, RawClient, free_ports, wait_until


def kv_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kv-") and t.is_alive()]


class KV:
    """A started cluster with one KVServer per node; ``client(i)`` is a redis-py client."""

    def __init__(self, cluster: LocalCluster, **server_options: Any) -> None:
        """``server_options``: more KVServer arguments, the same for every server."""
        self.cluster = cluster
        ports = free_ports(len(cluster.nodes))
        self.addresses = {node.id: f"127.0.0.1:{port}"
                          for node, port in zip(cluster.nodes, ports, strict=True)}
        self.servers = [KVServer(node, self.addresses[node.id], client_addresses=self.addresses,
                                 clock=self.clock_of(i), **server_options)
                        for i, node in enumerate(cluster.nodes)]
        self._clients: list[redis.Redis] = []
        for server in self.servers:
            server.start()

    def leader_index(self) -> int:
        leader = self.cluster.wait_for_leader(timeout=LIVENESS)
        everyone_knows = self.cluster.wait_for(
            lambda: all(n.status().leader_id == leader.id for n in self.cluster.nodes), LIVENESS)
        assert everyone_knows, "followers did not learn the leader"
        return self.cluster.nodes.index(leader)

    def clock_of(self, i: int) -> Callable[[], int] | None:
        """The clock of server ``i`` (None: the wall clock)."""
        return None

    def client(self, i: int) -> redis.Redis:
        host, port = self.servers[i].address or ("", 0)
        client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=LIVENESS)
        self._clients.append(client)
        return client

    def raw(self, i: int) -> RawClient:
        address = self.servers[i].address
        assert address is not None
        return RawClient(address)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        for server in self.servers:
            server.stop()


@pytest.fixture
def kv(make_cluster: Callable[..., LocalCluster]) -> Iterator[KV]:
    service = KV(make_cluster(3, state_machine=KVMachine))
    yield service
    service.stop()
    assert not kv_threads(), f"server threads left running: {kv_threads()}"


@pytest.fixture
def leader(kv: KV) -> redis.Redis:
    return kv.client(kv.leader_index())


def test_string_commands(leader: redis.Redis) -> None:
    assert leader.set("k", "v") is True
    assert leader.get("k") == b"v"
    assert leader.get("missing") is None
    assert leader.append("k", "w") == 2
    assert leader.incr("n") == 1
    assert leader.incr("n") == 2
    assert leader.incrby("n", 5) == 7
    assert leader.decr("n") == 6
    assert leader.decrby("n", 2) == 4
    assert leader.mset({"a": "1", "b": "2"}) is True
    assert leader.mget("a", "zz", "b", "n") == [b"1", None, b"2", b"4"]
    assert leader.exists("a", "b", "zz", "a") == 3
    assert leader.delete("a", "zz") == 1
    assert leader.exists("a") == 0
    with pytest.raises(redis.ResponseError, match="not an integer"):
        leader.incr("k")
    assert leader.set("k", "v", nx=True) is None  # k exists: NX sets nothing
    with pytest.raises(redis.ResponseError, match="syntax error"):
        leader.execute_command("SET", "k", "v", "NOPE")
    assert leader.get("k") == b"vw"


def test_binary_values(leader: redis.Redis) -> None:
    value = bytes(range(256)) + b"\r\n$3\r\n"
    leader.set(b"\x00key\r\n", value)
    assert leader.get(b"\x00key\r\n") == value


def test_writes_reach_every_replica(kv: KV, leader: redis.Redis) -> None:
    leader.set("k", "v")
    commit = max(n.status().commit_index for n in kv.cluster.nodes)
    assert kv.cluster.wait_applied(commit, timeout=LIVENESS)
    # Every replica applied the entry and nothing else is writing: reading the dicts is safe.
    assert [n.state_machine.data.get(b"k") for n in kv.cluster.nodes] == [b"v"] * 3


def test_pipeline_answers_in_order(leader: redis.Redis) -> None:
    pipe = leader.pipeline(transaction=False)
    for i in range(50):
        pipe.incr("counter")
        pipe.set(f"key{i}", i)
        pipe.get(f"key{i}")
        pipe.ping()
    results = pipe.execute()
    assert results[0::4] == list(range(1, 51))
    assert results[1::4] == [True] * 50
    assert results[2::4] == [str(i).encode() for i in range(50)]
    assert results[3::4] == [True] * 50


def test_follower_answers_notleader(kv: KV) -> None:
    leader_i = kv.leader_index()
    follower = kv.client((leader_i + 1) % 3)
    leader_id = kv.cluster.nodes[leader_i].id
    expected = f"NOTLEADER {leader_id} {kv.addresses[leader_id]}"
    for call in (lambda: follower.set("k", "v"), lambda: follower.get("k"),
                 lambda: follower.mget("k"), lambda: follower.incr("k")):
        with pytest.raises(redis.ResponseError) as info:
            call()
        assert str(info.value) == expected
    assert follower.ping() is True  # connection-level commands still work


def test_unknown_command_and_wrong_arity(leader: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="unknown command 'FLUSHALL'"):
        leader.execute_command("FLUSHALL")
    with pytest.raises(redis.ResponseError,
                       match="wrong number of arguments for 'get' command"):
        leader.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'echo'"):
        leader.execute_command("ECHO")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset'"):
        leader.execute_command("MSET", "a", "1", "b")
    assert leader.ping() is True  # the connection survived


def test_connection_commands(kv: KV, leader: redis.Redis) -> None:
    assert leader.echo("hi") == b"hi"
    assert leader.execute_command("SELECT", "0") in (True, b"OK")
    with pytest.raises(redis.ResponseError, match="out of range"):
        leader.execute_command("SELECT", "1")
    assert leader.config_get("save") == {}  # redis-py turns the pairs into a dict
    assert leader.command_count() == len(leader.command())
    assert leader.client_setname("me") is True
    status = orjson.loads(leader.execute_command("RAFT.STATUS"))
    assert status["role"] == "leader"
    assert status["leader_address"] == kv.addresses[status["id"]]
    assert {"term", "leader_id", "commit_index", "last_applied", "last_log_index"} <= set(status)
    assert status["recovering"] == 0 and status["disk_stalled"] is False
    # The leader's view of its followers, with their lag in entries.
    assert set(status["peers"]) == set(kv.addresses) - {status["id"]}
    for peer in status["peers"].values():
        assert {"match", "next", "state", "lag", "inflight", "active", "recovering"} <= set(peer)
        assert peer["lag"] == max(0, status["last_log_index"] - peer["match"])


def test_unknown_protocol_version_is_refused_clearly(kv: KV) -> None:
    raw = kv.raw(0)
    raw.command("HELLO", "4")
    assert raw.reply() == Error("NOPROTO unsupported protocol version")
    raw.command("PING")
    assert raw.reply() == "PONG"  # still RESP2
    raw.close()


def test_garbage_closes_only_that_connection(kv: KV, leader: redis.Redis) -> None:
    leader.set("k", "v")
    raw = kv.raw(kv.leader_index())
    try:
        raw.send(b"PING\r\n*1\r\n$abc\r\n")
        assert raw.reply() == SimpleString("PONG")  # what came before the error is answered
        error = raw.reply()
        assert isinstance(error, Error) and error.startswith("ERR Protocol error")
        assert raw.closed_by_server()
    finally:
        raw.close()
    assert leader.get("k") == b"v"


def test_inline_commands_quit_and_half_close(kv: KV) -> None:
    raw = kv.raw(kv.leader_index())
    try:
        raw.send(b"SET a 1\r\nGET a\r\nPING hello\r\nQUIT\r\nPING\r\n")
        assert [raw.reply() for _ in range(4)] == [OK, b"1", b"hello", OK]
        assert raw.closed_by_server()  # nothing after QUIT is answered
    finally:
        raw.close()
    raw = kv.raw(kv.leader_index())
    try:
        raw.send(encode([b"GET", b"a"]))
        raw.sock.shutdown(1)  # SHUT_WR: the reply still comes, then the server closes
        assert raw.reply() == b"1"
        assert raw.closed_by_server()
    finally:
        raw.close()


def test_stop_closes_connections_and_joins(kv: KV, leader: redis.Redis) -> None:
    assert leader.ping()
    kv.stop()
    assert not kv_threads()
    with pytest.raises(redis.ConnectionError):
        leader.ping()


def test_address_in_use_raises_and_leaves_no_thread(kv: KV, leader: redis.Redis) -> None:
    """A second server on a taken address raises OSError; the servers run on their nodes'
    loops (no kv-* thread at all) and the first one keeps serving."""
    host, port = kv.servers[0].address or ("", 0)
    second = KVServer(kv.cluster.nodes[0], f"{host}:{port}")
    with pytest.raises(OSError):
        second.start()
    second.stop()
    assert not kv_threads()
    assert leader.ping()


# -- membership: RAFT.MEMBER and the configuration in RAFT.STATUS ------------------------------

STATUS_FIELDS = {"id", "role", "term", "leader_id", "leader_address", "commit_index",
                 "last_applied", "last_log_index", "running", "recovering", "disk_stalled", "peers",
                 "voters", "outgoing", "learners", "snapshot_index", "clients"}
N4_RAFT = "127.0.0.1:7004"  # the memory network routes by id; the address must be host:port


def member(client: redis.Redis, *args: str) -> dict:
    return orjson.loads(client.execute_command("RAFT.MEMBER", *args))


def raft_status(client: redis.Redis) -> dict:
    return orjson.loads(client.execute_command("RAFT.STATUS"))


class Joiner:
    """Node n4 on the cluster's memory network, started with join=True, with its KVServer."""

    def __init__(self, kv: KV) -> None:
        network = kv.cluster.network
        assert network is not None
        self.node = RaftNode("n4", {**kv.cluster.addresses, "n4": "memory:n4"}, KVMachine(),
                             config=FAST, transport=network.endpoint("n4"), join=True)
        self.node.start()
        self.server = KVServer(self.node, "127.0.0.1:0", client_addresses=kv.addresses)
        self.server.start()
        host, port = self.server.address or ("", 0)
        self.client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=LIVENESS)

    def stop(self) -> None:
        self.client.close()
        self.server.stop()
        self.node.stop()


@pytest.fixture
def joiner(kv: KV) -> Iterator[Joiner]:
    n4 = Joiner(kv)
    yield n4
    n4.stop()  # before the kv and make_cluster fixtures check for leftover threads


def test_status_reports_the_configuration(kv: KV, joiner: Joiner) -> None:
    leader_i = kv.leader_index()
    for i in range(3):
        status = raft_status(kv.client(i))
        assert set(status) == STATUS_FIELDS
        assert status["role"] == ("leader" if i == leader_i else "follower")
        assert (status["voters"], status["outgoing"], status["learners"]) == (
            ["n1", "n2", "n3"], [], [])
        assert status["running"] is True
    status = raft_status(joiner.client)  # no configuration until the leader adds it
    assert (status["id"], status["role"], status["leader_id"]) == ("n4", "follower", None)
    assert (status["voters"], status["outgoing"], status["learners"]) == ([], [], [])


def test_member_add_promote_remove(kv: KV, joiner: Joiner) -> None:
    leader_i = kv.leader_index()
    leader = kv.client(leader_i)
    leader_id = kv.cluster.nodes[leader_i].id
    assert leader.set("k", "v") is True

    assert member(leader, "ADD", "n4", N4_RAFT) == {
        "voters": ["n1", "n2", "n3"], "outgoing": [], "learners": ["n4"]}
    assert raft_status(leader)["learners"] == ["n4"]
    assert member(leader, "promote", "n4") == {  # subcommands are case-insensitive
        "voters": ["n1", "n2", "n3", "n4"], "outgoing": [], "learners": []}
    assert raft_status(leader)["voters"] == ["n1", "n2", "n3", "n4"]

    # n4 copied the log: it holds the write made before it joined and follows the leader.
    wait_until(lambda: raft_status(joiner.client)["voters"] == ["n1", "n2", "n3", "n4"],
               what="n4 learns that it votes")
    commit = kv.cluster.nodes[leader_i].status().commit_index
    assert joiner.node.wait_applied(commit, timeout=LIVENESS)
    assert joiner.node.state_machine.data.get(b"k") == b"v"  # applied: nothing writes now
    status = raft_status(joiner.client)
    assert (status["role"], status["leader_id"]) == ("follower", leader_id)
    with pytest.raises(redis.ResponseError) as info:
        joiner.client.get("k")
    assert str(info.value) == f"NOTLEADER {leader_id} {kv.addresses[leader_id]}"

    assert member(leader, "REMOVE", "n4") == {
        "voters": ["n1", "n2", "n3"], "outgoing": [], "learners": []}
    assert leader.set("k2", "v2") is True  # three voters commit without n4
    assert raft_status(leader)["voters"] == ["n1", "n2", "n3"]


MEMBER_ERRORS = [
    ((), "wrong number of arguments for 'raft.member' command"),
    (("ADD",), "wrong number of arguments for 'raft.member' command"),
    (("ADD", "n4"), "syntax: RAFT.MEMBER ADD <id> <host:port> | PROMOTE <id> | REMOVE <id>"),
    (("ADD", "n4", N4_RAFT, "extra"), "syntax: RAFT.MEMBER"),
    (("PROMOTE", "n4", "extra"), "syntax: RAFT.MEMBER"),
    (("DEMOTE", "n1"), "syntax: RAFT.MEMBER"),
    (("ADD", "n4", "nowhere"), "invalid raft address 'nowhere' (want host:port)"),
    (("ADD", "n4", "127.0.0.1:99999"), "invalid raft address '127.0.0.1:99999'"),
    (("ADD", "", N4_RAFT), "the node id must not be empty"),
    (("PROMOTE", "n9"), "n9 is not a learner"),
    (("PROMOTE", "n1"), "n1 is not a learner"),  # a voter already
    (("REMOVE", "n9"), "n9 is not a member"),
    (("ADD", "n1", N4_RAFT), "n1 is already a member"),
]


def test_member_errors_on_the_leader(kv: KV) -> None:
    leader_i = kv.leader_index()
    raw = kv.raw(leader_i)  # to see the exact error lines (redis-py strips "ERR ")
    try:
        for args, message in MEMBER_ERRORS:
            raw.command("RAFT.MEMBER", *args)
            reply = raw.reply()
            assert isinstance(reply, Error) and reply.startswith("ERR "), (args, reply)
            assert message in reply, (args, reply)
        raw.command("PING")
        assert raw.reply() == SimpleString("PONG")  # the connection survived every error
    finally:
        raw.close()
    assert all(n.status().running for n in kv.cluster.nodes)
    assert raft_status(kv.client(leader_i))["voters"] == ["n1", "n2", "n3"]  # nothing changed


def test_member_on_a_follower_answers_notleader(kv: KV) -> None:
    leader_i = kv.leader_index()
    leader_id = kv.cluster.nodes[leader_i].id
    follower = kv.client((leader_i + 1) % 3)
    expected = f"NOTLEADER {leader_id} {kv.addresses[leader_id]}"
    for args in (("ADD", "n4", N4_RAFT), ("PROMOTE", "n4"), ("REMOVE", "n1")):
        with pytest.raises(redis.ResponseError) as info:
            follower.execute_command("RAFT.MEMBER", *args)
        assert str(info.value) == expected
    with pytest.raises(redis.ResponseError, match=r"^syntax: RAFT\.MEMBER"):
        follower.execute_command("RAFT.MEMBER", "ADD", "n4")  # checked before leadership


# -- with a fake node: how a pipeline is proposed --------------------------------------------


class FakeNode:
    """Records propose/read calls; the test decides when each completes."""

    id = "n1"
    loop = None  # not running on a node's loop: the server runs a loop thread of its own

    def __init__(self) -> None:
        self.machine = KVMachine()
        self.cond = threading.Condition()
        self.proposals: list[tuple[bytes, Future]] = []
        self.reads: list[tuple[Callable[[Any], Any], Future]] = []

    def propose(self, command: bytes) -> Future:
        future: Future = Future()
        with self.cond:
            self.proposals.append((command, future))
        return future

    def propose_many(self, commands: list[bytes]) -> list[Future]:
        return [self.propose(command) for command in commands]

    def read(self, fn: Callable[[Any], Any]) -> Future:
        future: Future = Future()
        with self.cond:
            self.reads.append((fn, future))
        return future

    def status(self) -> Status:
        return Status("n1", "leader", 1, "n1", 0, 0, 0)

    def counts(self) -> tuple[int, int]:
        with self.cond:
            return len(self.proposals), len(self.reads)

    def commit(self, i: int) -> None:
        command, future = self.proposals[i]
        future.set_result(self.machine.apply(i + 1, command))

    def serve_read(self, i: int) -> None:
        fn, future = self.reads[i]
        future.set_result(fn(self.machine))


@pytest.fixture
def fake() -> Iterator[tuple[FakeNode, RawClient]]:
    node = FakeNode()
    server = KVServer(node, "127.0.0.1:0")  # type: ignore[arg-type]
    server.start()
    assert server.address is not None
    raw = RawClient(server.address)
    yield node, raw
    raw.close()
    server.stop()
    assert not kv_threads()


def test_pipelined_writes_are_proposed_together_and_reads_wait_for_them(
        fake: tuple[FakeNode, RawClient]) -> None:
    node, raw = fake
    raw.send(b"".join(encode(c) for c in (
        [b"SET", b"a", b"1"], [b"INCR", b"n"], [b"SET", b"b", b"2"],  # one run of writes
        [b"GET", b"a"], [b"MGET", b"a", b"b"],                       # then reads
        [b"SET", b"a", b"3"])))                                      # then a write again
    wait_until(lambda: node.counts() == (3, 0), what="three writes proposed at once")
    for i in range(3):
        node.commit(i)
    wait_until(lambda: node.counts() == (3, 1), what="one read for both, after the writes")
    node.serve_read(0)
    wait_until(lambda: node.counts() == (4, 1), what="the last write after the reads")
    node.commit(3)
    assert [raw.reply() for _ in range(6)] == [OK, 1, OK, b"1", [b"1", b"2"], OK]


def test_failed_proposals_become_errors_in_order(fake: tuple[FakeNode, RawClient]) -> None:
    node, raw = fake
    raw.send(encode([b"SET", b"a", b"1"]) + encode([b"SET", b"b", b"2"]))
    wait_until(lambda: node.counts() == (2, 0), what="both writes proposed")
    node.proposals[1][1].set_exception(ProposalDropped("lost leadership"))
    node.commit(0)
    assert raw.reply() == OK
    reply = raw.reply()
    assert isinstance(reply, Error) and reply.startswith("TRYAGAIN")


def test_pipeline_with_reads_ping_and_quit_settled_from_another_thread(
        fake: tuple[FakeNode, RawClient]) -> None:
    """The fake node settles every future from the test thread (not the server's loop): the
    replies still come in request order, each run's in one piece, and QUIT closes after them."""
    node, raw = fake
    raw.send(b"".join(encode(c) for c in (
        [b"SET", b"a", b"1"], [b"PING"], [b"SET", b"b", b"2"],    # writes (PING rides along)
        [b"GET", b"a"], [b"ECHO", b"e"], [b"MGET", b"a", b"b"],   # reads
        [b"INCR", b"n"], [b"QUIT"], [b"GET", b"a"])))             # a write, QUIT, ignored
    wait_until(lambda: node.counts() == (2, 0), what="the first two writes proposed together")
    node.commit(1)
    node.commit(0)
    assert [raw.reply() for _ in range(3)] == [OK, SimpleString("PONG"), OK]
    wait_until(lambda: node.counts() == (2, 1), what="one read for the run of reads")
    node.serve_read(0)
    assert [raw.reply() for _ in range(3)] == [b"1", b"e", [b"1", b"2"]]
    wait_until(lambda: node.counts() == (3, 1), what="the write after the reads")
    node.commit(2)
    assert [raw.reply() for _ in range(2)] == [1, OK]
    assert raw.closed_by_server()
    assert node.counts() == (3, 1)  # nothing after QUIT ran


def test_stop_with_a_run_in_flight() -> None:
    """stop() closes a connection whose write is still proposed and returns (no task to wait
    for); the future settled afterwards is a no-op."""
    node = FakeNode()
    server = KVServer(node, "127.0.0.1:0")  # type: ignore[arg-type]
    server.start()
    assert server.address is not None
    raw = RawClient(server.address)
    try:
        raw.command("SET", "a", "1")
        wait_until(lambda: node.counts() == (1, 0), what="the write proposed")
        server.stop()
        assert not kv_threads()
        assert raw.closed_by_server()
        node.commit(0)  # the connection and its loop are gone: nothing happens
    finally:
        raw.close()
        server.stop()
