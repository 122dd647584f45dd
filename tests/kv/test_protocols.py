"""The KV service as clients meet it: redis-py 8 with its defaults (RESP3), protocol=2 and
protocol=3, ``redis-cli -3``, AUTH, deterministic expiry driven by an injected clock, and SCAN.

Time is never waited for: each server's clock is a :class:`Clock` the test moves forward, and
the machine decides expiry from the times those clocks stamp into commands and reads.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
import redis

from engine import LocalCluster
from engine.kv import KVMachine
from engine.kv.resp import Error, SimpleString, Verbatim

from .test_server import KV
from .util import LIVENESS, wait_until

PASSWORD = b"open sesame"
T0 = 1_700_000_000_000  # ms: the injected clocks start here


class Clock:
    """A settable millisecond clock for a server (read on the server's loop)."""

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class Service(KV):
    """:class:`KV` whose servers each have a :class:`Clock` (and the given options)."""

    def __init__(self, cluster: LocalCluster, **server_options: object) -> None:
        self.clocks = [Clock() for _ in cluster.nodes]
        super().__init__(cluster, **server_options)

    def clock_of(self, i: int) -> Callable[[], int] | None:
        return self.clocks[i]

    def port(self, i: int) -> int:
        address = self.servers[i].address
        assert address is not None
        return address[1]

    def connect(self, i: int, protocol: int | None, **kwargs: object) -> redis.Redis:
        """A redis-py client of server ``i``; ``protocol`` None: redis-py's default."""
        options: dict[str, object] = {"socket_timeout": LIVENESS, **kwargs}
        if protocol is not None:
            options["protocol"] = protocol
        client = redis.Redis(host="127.0.0.1", port=self.port(i), **options)
        self._clients.append(client)
        return client


@pytest.fixture
def make_service(make_cluster: Callable[..., LocalCluster]) -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def make(**kwargs: object) -> Service:
        service = Service(make_cluster(3, state_machine=KVMachine), **kwargs)
        services.append(service)
        return service

    yield make
    for service in services:
        service.stop()


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    return make_service()


PROTOCOLS = [pytest.param(None, id="default"), pytest.param(2, id="resp2"),
             pytest.param(3, id="resp3")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_command_set(service: Service, protocol: int | None) -> None:
    i = service.leader_index()
    r = service.connect(i, protocol, client_name="tester")
    clock = service.clocks[i]
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    # SET and its options
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.get("missing") is None
    assert r.set("k", "w", nx=True) is None
    assert r.set("new", "1", nx=True) is True
    assert r.set("absent", "1", xx=True) is None
    assert r.set("k", "w", xx=True) is True
    assert r.set("k", "x", get=True) == b"w"
    assert r.set("k", "y", ex=10) is True
    assert r.ttl("k") == 10
    assert r.pttl("k") == 10_000
    assert r.set("k", "z", keepttl=True) is True
    assert r.pttl("k") == 10_000
    assert r.persist("k") is True
    assert r.ttl("k") == -1
    assert r.ttl("missing") == -2
    assert r.expire("k", 5) is True
    assert r.pexpire("nope", 5) is False
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        r.set("k", "v", ex=0)
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "k", "v", "NX", "XX")
    # expiry, decided by the time the leader's clock stamps
    assert r.set("short", "lived", px=100) is True
    assert r.pttl("short") == 100
    clock.ms += 99
    assert r.get("short") == b"lived"
    assert r.pttl("short") == 1
    clock.ms += 1
    assert r.get("short") is None
    assert r.exists("short") == 0
    assert r.ttl("short") == -2
    assert r.incr("short") == 1  # a write on an expired key starts from nothing
    assert r.ttl("short") == -1
    # the other string commands
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "zz", "b") == [b"1", None, b"2"]
    assert r.incrby("a", 4) == 5
    assert r.decr("a") == 4
    assert r.append("b", "x") == 2
    assert r.type("a") in (b"string", "string")
    assert r.type("zz") in (b"none", "none")
    assert r.delete("a", "zz") == 1
    assert r.dbsize() == 4
    assert sorted(r.keys("*")) == [b"b", b"k", b"new", b"short"]
    assert sorted(r.keys("[kn]*")) == [b"k", b"new"]
    assert sorted(r.scan_iter(match="*", count=2)) == sorted(r.keys("*"))
    # connection and server commands
    assert r.client_getname() in (b"tester", "tester")
    assert r.client_setname("other") is True
    assert r.client_getname() in (b"other", "other")
    assert isinstance(r.client_id(), int)
    info = r.client_info()
    assert info["name"] == "other"
    assert info["resp"] == ("2" if protocol == 2 else "3")
    assert info["lib-name"].startswith("redis-py")
    server_info = r.info()
    assert server_info["role"] == "master"
    assert server_info["raft_role"] == "leader"
    assert server_info["raft_node_id"] == service.cluster.nodes[i].id
    assert server_info["raft_commit_index"] >= 1
    assert server_info["connected_clients"] >= 1
    assert set(r.info("raft")) == {"raft_node_id", "raft_role", "raft_term", "raft_leader",
                                   "raft_commit_index", "raft_applied_index",
                                   "raft_last_log_index", "raft_snapshot_index",
                                   "raft_recovering"}
    assert r.config_get("save") == {}
    assert r.command_count() == len(r.command()) > 20
    assert r.execute_command("SELECT", "0") in (True, b"OK", "OK")


def test_the_same_values_in_both_protocols(service: Service) -> None:
    i = service.leader_index()
    two, three = service.connect(i, 2), service.connect(i, 3)
    two.mset({"x": "1", "y": "2"})
    for call in (lambda r: r.mget("x", "nope", "y"), lambda r: r.get("nope"),
                 lambda r: r.info("replication"), lambda r: r.dbsize(),
                 lambda r: sorted(r.keys("*")), lambda r: r.config_get("*")):
        assert call(two) == call(three)


def test_follower_reports_slave_role(service: Service) -> None:
    i = service.leader_index()
    follower = service.connect((i + 1) % 3, 3)
    info = follower.info()
    assert info["role"] == "slave"
    assert info["raft_role"] == "follower"
    assert info["raft_leader"] == service.cluster.nodes[i].id
    assert info["master_port"] == service.port(i)
    with pytest.raises(redis.ResponseError, match="NOTLEADER"):
        follower.get("k")


def test_raw_resp3_replies(service: Service) -> None:
    """What a RESP3 connection receives, byte-level types included; RESP2 before HELLO 3 and
    after HELLO 2, even within one pipeline."""
    raw = service.raw(service.leader_index())
    raw.send(b"GET nope\r\nHELLO 3\r\nGET nope\r\nHELLO\r\nHELLO 2\r\nGET nope\r\n")
    assert raw.reply_bytes() == (None, b"$-1\r\n")
    hello, data = raw.reply_bytes()
    assert data.startswith(b"%7\r\n")  # HELLO 3 answers with a RESP3 map
    assert isinstance(hello, dict) and hello[b"proto"] == 3 and hello[b"server"] == b"raft-engine"
    assert raw.reply_bytes() == (None, b"_\r\n")
    assert raw.reply()[b"proto"] == 3  # type: ignore[index]  # HELLO without a version
    hello, data = raw.reply_bytes()
    assert data.startswith(b"*14\r\n") and hello[5] == 2  # type: ignore[index]  # HELLO 2
    assert raw.reply_bytes() == (None, b"$-1\r\n")
    raw.command("HELLO", "3")
    raw.reply()
    raw.command("INFO", "raft")
    info, data = raw.reply_bytes()
    assert isinstance(info, Verbatim) and data.startswith(b"=")
    assert "raft_role:leader" in info
    raw.command("CONFIG", "GET", "save")
    assert raw.reply() == {}
    raw.command("COMMAND", "DOCS", "get")
    docs = raw.reply()
    assert isinstance(docs, dict) and b"summary" in docs[b"get"]
    # the arguments redis-cli turns into its hints ("GET key")
    assert docs[b"get"][b"arguments"][0][b"name"] == b"key"
    raw.command("HELLO", "4")
    assert raw.reply() == Error("NOPROTO unsupported protocol version")
    raw.command("MGET", "nope")
    assert raw.reply() == [None]
    raw.close()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_resp3(service: Service) -> None:
    port = str(service.port(service.leader_index()))

    def cli(*args: str) -> str:
        done = subprocess.run(["redis-cli", "-3", "--no-raw", "-p", port, *args],
                              capture_output=True, text=True, timeout=LIVENESS, check=True)
        return done.stdout.strip()

    assert cli("SET", "a", "1") == "OK"
    assert cli("GET", "a") == '"1"'
    assert cli("GET", "nope") == "(nil)"  # RESP3 null
    assert cli("MGET", "a", "nope") == '1) "1"\n2) (nil)'
    assert '3# "proto" => (integer) 3' in cli("HELLO", "3")  # a RESP3 map
    assert cli("CONFIG", "GET", "save") == "(empty hash)"
    assert "raft_role:leader" in cli("INFO", "raft")
    assert "resp=3" in cli("CLIENT", "INFO")
    assert cli("DBSIZE") == "(integer) 1"
    assert cli("SET", "b", "2", "PX", "100") == "OK"
    service.clocks[service.leader_index()].ms += 100
    assert cli("GET", "b") == "(nil)"


# -- AUTH ------------------------------------------------------------------------------------


def test_auth_on_the_client_port(make_service: Callable[..., Service]) -> None:
    service = make_service(password=PASSWORD)
    i = service.leader_index()
    raw = service.raw(i)
    raw.command("GET", "k")
    assert raw.reply() == Error("NOAUTH Authentication required.")
    raw.command("PING")
    assert raw.reply() == Error("NOAUTH Authentication required.")
    raw.command("HELLO", "3")
    assert str(raw.reply()).startswith("NOAUTH HELLO must be called")
    raw.command("AUTH", "wrong")
    assert raw.reply() == Error("WRONGPASS invalid username-password pair or user is "
                                "disabled.")
    raw.command("AUTH", "someone", PASSWORD)
    assert str(raw.reply()).startswith("WRONGPASS")
    raw.command("SET", "k", "v")
    assert raw.reply() == Error("NOAUTH Authentication required.")
    raw.command("AUTH", PASSWORD)
    assert raw.reply() == SimpleString("OK")
    raw.command("SET", "k", "v")
    assert raw.reply() == SimpleString("OK")
    raw.close()
    # HELLO ... AUTH, wrong then right
    raw = service.raw(i)
    raw.command("HELLO", "3", "AUTH", "default", "nope")
    assert str(raw.reply()).startswith("WRONGPASS")
    raw.command("GET", "k")
    assert raw.reply() == Error("NOAUTH Authentication required.")
    raw.command("HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "me")
    assert raw.reply()[b"proto"] == 3  # type: ignore[index]
    raw.command("GET", "k")
    assert raw.reply() == b"v"
    raw.command("CLIENT", "GETNAME")
    assert raw.reply() == b"me"
    raw.close()
    # QUIT needs no password
    raw = service.raw(i)
    raw.command("QUIT")
    assert raw.reply() == SimpleString("OK")
    assert raw.closed_by_server()
    raw.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_authenticates(make_service: Callable[..., Service],
                                protocol: int | None) -> None:
    service = make_service(password=PASSWORD)
    i = service.leader_index()
    good = service.connect(i, protocol, password=PASSWORD.decode())
    assert good.set("k", "v") is True
    assert good.get("k") == b"v"
    with pytest.raises(redis.AuthenticationError):
        service.connect(i, protocol, password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        service.connect(i, protocol).ping()


def test_auth_without_a_password_configured(service: Service) -> None:
    raw = service.raw(0)
    raw.command("AUTH", "x")
    assert str(raw.reply()).startswith("ERR AUTH <password> called without any password")
    raw.command("AUTH", "default", "x")
    assert raw.reply() == SimpleString("OK")
    raw.close()


# -- deterministic expiry --------------------------------------------------------------------


def test_replicas_agree_on_expiry_by_the_leaders_time(
        make_service: Callable[..., Service]) -> None:
    """Followers' clocks are far ahead and play no part: what expired is decided by the times
    the leader stamps, and every replica applies the same decisions."""
    service = make_service(purge_interval=0.02)
    i = service.leader_index()
    for k, clock in enumerate(service.clocks):
        if k != i:
            clock.ms = T0 + 10**9  # followers' servers think it is much later
    r = service.connect(i, 3)
    leader_clock = service.clocks[i]
    r.set("soon", "1", px=100)
    r.set("later", "2", px=5000)
    r.set("never", "3")
    nodes = service.cluster.nodes
    commit = nodes[i].status().commit_index
    assert service.cluster.wait_applied(commit, timeout=LIVENESS)
    # Every replica holds all three keys: nobody decided "expired" from its own clock.
    assert all(set(n.state_machine.data) == {b"soon", b"later", b"never"} for n in nodes)
    leader_clock.ms += 100
    assert r.get("soon") is None and r.get("later") == b"2"
    # The leader's PURGE, carrying its time, removes "soon" everywhere, and only "soon".
    wait_until(lambda: all(b"soon" not in n.state_machine.data for n in nodes),
               what="the PURGE applied everywhere")
    commit = nodes[i].status().commit_index
    assert service.cluster.wait_applied(commit, timeout=LIVENESS)
    snapshots = {n.state_machine.snapshot() for n in nodes}
    assert len(snapshots) == 1
    assert all(set(n.state_machine.data) == {b"later", b"never"} for n in nodes)
    assert all(n.state_machine.clock == T0 + 100 for n in nodes)


def test_time_never_goes_back_for_the_machine(service: Service) -> None:
    """A leader clock that goes backwards (a new leader whose clock is behind) cannot bring an
    expired key back: the machine's time is the largest time it applied."""
    i = service.leader_index()
    r = service.connect(i, 2)
    clock = service.clocks[i]
    r.set("k", "v", px=50)
    clock.ms += 60
    r.incr("counter")  # a timed write: the machine's clock is now T0 + 60
    clock.ms = T0  # the clock jumps back
    assert r.get("k") is None
    assert r.pttl("counter") == -1
    assert r.set("k", "w", nx=True) is True  # k had expired: NX sets it


# -- SCAN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scan_returns_every_key_exactly_once(service: Service, protocol: int | None) -> None:
    r = service.connect(service.leader_index(), protocol)
    keys = {f"key:{k}".encode() for k in range(300)}
    r.mset({k: b"v" for k in keys})
    for count in (1, 7, 1000):
        seen: list[bytes] = []
        cursor = 0
        while True:
            cursor, batch = r.scan(cursor, count=count)
            seen += batch
            if cursor == 0:
                break
        assert len(seen) == len(keys) and set(seen) == keys
    assert set(r.scan_iter(match="key:1?", count=5)) == {b"key:1%d" % d for d in range(10)}
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        r.execute_command("SCAN", "x")
