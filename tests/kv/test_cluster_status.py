"""``raft-engine status`` (the cluster view), ``transfer`` and ``snapshot``, and the RAFT.TRANSFER
and RAFT.SNAPSHOT commands behind them.

The view's merge, table and ``--watch`` loop are tested as pure functions (an injected fetch,
clock, sleep and iteration count); the commands run against an in-process LocalCluster with one
KVServer per node, and once against three real node processes.  Waiting polls a condition with
a deadline (``wait_until``), never a fixed sleep.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine import LocalCluster, RaftNode
from engine.cli import fetch_status, main
from engine.kv import KVMachine, KVServer
from engine.kv.admin_client import not_leader_redirect, request, run_snapshot
from engine.kv.cluster_view import (
    CLEAR,
    collect,
    format_cluster,
    format_contact,
    merge,
    render,
    run_cluster_status,
    watch,
)
from engine.kv.resp import Error

from .test_cli import env
from .test_e2e import NodeProcesses
from .util import LIVENESS, free_ports, wait_until

# -- the view as pure functions ----------------------------------------------------------------


def node_status(node_id: str, role: str = "follower", *, term: int = 3, commit: int = 9,
                leader: str | None = "n1", **extra: Any) -> dict[str, Any]:
    """A RAFT.STATUS as a member of the three-voter cluster n1..n3 would answer it."""
    return {"id": node_id, "role": role, "term": term, "leader_id": leader,
            "commit_index": commit, "last_applied": commit, "last_log_index": commit,
            "snapshot_index": 0, "running": True, "recovering": 0, "disk_stalled": False,
            "voters": ["n1", "n2", "n3"], "outgoing": [], "learners": [],
            "clients": {f"n{k}": f"127.0.0.1:640{k}" for k in (1, 2, 3)}, "peers": {},
            **extra}


A = {k: f"10.0.0.{k}:6401" for k in range(1, 5)}
"""Client addresses of n1..n4 in the tests of the view (nothing listens there: fetch is faked)."""

LEADER_PEERS = {
    "n2": {"match": 9, "lag": 0, "state": "replicate", "active": True, "recovering": False,
           "last_contact": 0.012},
    "n3": {"match": 4, "lag": 5, "state": "probe", "active": False, "recovering": True,
           "last_contact": 4.25},
}


def test_merge_takes_lag_and_contact_from_the_leader() -> None:
    statuses = {"n2": node_status("n2"),
                "n1": node_status("n1", "leader", peers=LEADER_PEERS),
                "n3": "[Errno 111] Connection refused"}
    view = merge("127.0.0.1:6402", "n2", statuses, {"n1": A[1], "n2": A[2], "n3": A[3]})
    assert (view["leader_id"], view["term"], view["asked_id"]) == ("n1", 3, "n2")
    rows = {m["id"]: m for m in view["members"]}
    assert [m["id"] for m in view["members"]] == ["n1", "n2", "n3"]
    assert (rows["n1"]["lag"], rows["n1"]["last_contact"], rows["n1"]["role"]) == (0, None,
                                                                                     "leader")
    assert (rows["n2"]["lag"], rows["n2"]["last_contact"], rows["n2"]["reachable"]) == (
        0, 0.012, True)
    # Unreachable: its own fields unknown, the leader's view of it kept.
    n3 = rows["n3"]
    assert (n3["reachable"], n3["error"], n3["role"], n3["disk_stalled"]) == (
        False, "[Errno 111] Connection refused", None, None)
    assert (n3["lag"], n3["last_contact"], n3["active"], n3["recovering"]) == (5, 4.25, False,
                                                                               True)


def test_merge_without_an_answering_leader_uses_the_asked_members_configuration() -> None:
    statuses = {"n2": node_status("n2", learners=["n4"]), "n1": "timed out",
                "n3": node_status("n3", recovering=7, disk_stalled=True), "n4": "timed out"}
    view = merge("127.0.0.1:6402", "n2", statuses, {})
    assert (view["leader_id"], view["learners"]) == ("n1", ["n4"])
    rows = {m["id"]: m for m in view["members"]}
    assert set(rows) == {"n1", "n2", "n3", "n4"}
    assert rows["n4"]["kind"] == "learner"
    assert all(m["lag"] is None and m["last_contact"] is None for m in view["members"])
    assert (rows["n3"]["recovering"], rows["n3"]["recovering_up_to"],
            rows["n3"]["disk_stalled"]) == (True, 7, True)


def test_format_cluster_table() -> None:
    statuses = {"n2": node_status("n2", learners=["n4"]),
                "n1": node_status("n1", "leader", learners=["n4"],
                                  peers={**LEADER_PEERS, "n4": {"match": 0, "lag": 9,
                                                                "active": False,
                                                                "last_contact": None}}),
                "n3": node_status("n3", recovering=9, disk_stalled=True),
                "n4": "[Errno 111] Connection refused"}
    addresses = {f"n{k}": f"127.0.0.1:640{k}" for k in (1, 2, 3, 4)}
    text = format_cluster(merge("127.0.0.1:6402", "n2", statuses, addresses))
    assert text.splitlines() == [
        "leader n1, term 3; voters n1, n2, n3; learners n4 (asked n2 at 127.0.0.1:6402)",
        "ID  CLIENT          ROLE      TERM  COMMIT  APPLIED  LAG  CONTACT  REACHABLE  "
        "RECOVERING  DISK",
        "n1  127.0.0.1:6401  leader    3     9       9        0    -        yes        no"
        "          ok",
        "n2  127.0.0.1:6402  follower  3     9       9        0    12ms     yes        no"
        "          ok",
        "n3  127.0.0.1:6403  follower  3     9       9        5    4.2s     yes        "
        "yes (to 9)  stalled",
        "n4  127.0.0.1:6404  -         -     -       -        9    never    no         -"
        "           -",
        "n4: unreachable: [Errno 111] Connection refused",
    ]


def test_format_cluster_header_without_a_leader() -> None:
    alone = {"n2": node_status("n2", leader=None), "n1": "timed out", "n3": "timed out"}
    text = format_cluster(merge(A[2], "n2", alone, {}))
    assert text.startswith("no leader known; voters n1, n2, n3 (asked n2 at 10.0.0.2:6401)")
    assert "n1: unreachable: timed out" in text.splitlines()
    silent = format_cluster(merge(A[2], "n2", {**alone, "n2": node_status("n2")}, {}))
    assert silent.startswith("leader n1 (not answering; term 3 as seen by n2)")
    joint = format_cluster(merge(A[1], "n1", {"n1": node_status(
        "n1", "leader", voters=["n1", "n2", "n4"], outgoing=["n1", "n2", "n3"])}, {}))
    assert "voters n1, n2, n4 (joint: outgoing n1, n2, n3)" in joint.splitlines()[0]
    # Both configurations' members have a row (those not asked say so below the table).
    assert [line.split()[0] for line in joint.splitlines()[2:6]] == ["n1", "n2", "n3", "n4"]
    assert "n4: unreachable: not asked" in joint.splitlines()


@pytest.mark.parametrize("seconds, active, text", [
    (0.0123, True, "12ms"), (4.25, False, "4.2s"), (125.0, True, "2m05s"),
    (None, False, "never"), (None, True, "active"), (None, None, "?")])
def test_format_contact(seconds: float | None, active: bool | None, text: str) -> None:
    assert format_contact(seconds, active) == text


class FakeCluster:
    """What ``collect`` asks: client address -> a status, or an exception to raise."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = dict(answers)
        self.asked: list[str] = []

    def fetch(self, address: str, timeout: float) -> Mapping[str, Any]:
        self.asked.append(address)
        answer = self.answers[address]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_collect_asks_every_member_and_reports_why_one_did_not_answer() -> None:
    clients = {"n1": A[1], "n2": A[2], "n3": A[3]}  # n4's address is known to the leader only
    fake = FakeCluster({
        A[2]: node_status("n2", clients=clients),
        A[1]: node_status("n1", "leader", learners=["n4"], peers=LEADER_PEERS,
                          clients={**clients, "n4": A[4]}),
        A[3]: node_status("n2"),  # another node holds n3's address
        A[4]: ConnectionRefusedError(111, "Connection refused"),
    })
    view = collect(A[2], 1.0, fetch=fake.fetch)
    assert sorted(fake.asked) == [A[1], A[2], A[3], A[4]]
    rows = {m["id"]: m for m in view["members"]}
    assert [m["id"] for m in view["members"]] == ["n1", "n2", "n3", "n4"]
    assert rows["n3"]["error"] == "10.0.0.3:6401 answers as 'n2', not 'n3'"
    assert rows["n4"]["error"] == "[Errno 111] Connection refused"
    assert rows["n4"]["kind"] == "learner"
    no_address = collect(A[2], 1.0, fetch=FakeCluster(
        {A[2]: node_status("n2", clients={"n2": A[2]}), A[1]: node_status("n1")}).fetch)
    assert {m["id"]: m["error"] for m in no_address["members"]}["n1"].startswith(
        "no client address known")


def test_watch_clears_and_redraws_until_ctrl_c() -> None:
    out = io.StringIO()
    frames = iter(["one", "two"])
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    assert watch(lambda: next(frames), 1.5, out=out, sleep=sleep) == 0
    assert out.getvalue() == f"{CLEAR}one\n{CLEAR}two\n\n"
    assert naps == [1.5, 1.5]


def test_watch_json_frames_and_clock_line() -> None:
    frame = render(None, f"cannot get the status of {A[2]}: timed out", as_json=True, interval=2,
                   now=1000.0)
    assert orjson.loads(frame) == {"time": 1000.0,
                                   "error": f"cannot get the status of {A[2]}: timed out"}
    text = render(None, f"cannot get the status of {A[2]}: timed out", as_json=False, interval=2,
                  now=0.0)
    first, second = text.splitlines()
    assert first.startswith("every 2s, ") and first.endswith(" (Ctrl-C exits)")
    assert second == f"cannot get the status of {A[2]}: timed out"


def test_one_refresh_of_the_watch_loop() -> None:
    """Two frames: the first sees the cluster, the second that n2 stopped answering; the
    clock and the pause between frames are injected."""
    fake = FakeCluster({A[2]: node_status("n2", clients={"n1": A[1], "n2": A[2], "n3": A[3]}),
                        A[1]: node_status("n1", "leader", peers=LEADER_PEERS),
                        A[3]: node_status("n3")})
    out, err = io.StringIO(), io.StringIO()
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        fake.answers[A[2]] = TimeoutError("timed out")

    code = run_cluster_status(A[2], watch_interval=0.5, fetch=fake.fetch, out=out, err=err,
                              now=lambda: 0.0, sleep=sleep, iterations=2)
    assert (code, naps, err.getvalue()) == (0, [0.5], "")
    first, second = out.getvalue().split(CLEAR)[1:]
    assert "leader n1, term 3" in first and "n3  10.0.0.3:6401" in first
    assert second.splitlines()[1] == f"cannot get the status of {A[2]}: timed out"
    assert second.splitlines()[0].startswith("every 0.5s, ")


def test_status_json_of_a_fake_cluster_has_one_entry_per_member() -> None:
    fake = FakeCluster({A[1]: node_status("n1", "leader", clients={"n1": A[1], "n2": A[2],
                                                                    "n3": A[3]}),
                        A[2]: node_status("n2"), A[3]: OSError("unreachable")})
    out = io.StringIO()
    assert run_cluster_status(A[1], as_json=True, fetch=fake.fetch, out=out) == 0
    view = orjson.loads(out.getvalue())
    assert [m["id"] for m in view["members"]] == ["n1", "n2", "n3"]
    assert [m["reachable"] for m in view["members"]] == [True, True, False]


@pytest.mark.parametrize("argv, message", [
    (["status", "127.0.0.1:6401", "--node", "--watch"], "leave out --node"),
    (["status", "127.0.0.1:6401", "--watch", "0"], "--watch 0 must be > 0"),
    (["status", "127.0.0.1:6401", "--watch", "soon"], "invalid float value"),
    (["transfer", "127.0.0.1:6401"], "the following arguments are required: TARGET_ID"),
    (["transfer", "127.0.0.1:6401", ""], "TARGET_ID must not be empty"),
    (["transfer", "localhost", "n2"], "host:port"),
    (["snapshot"], "the following arguments are required: HOST:PORT"),
    (["snapshot", "localhost"], "host:port"),
    (["snapshot", "127.0.0.1:6401", "n1"], "unrecognized arguments"),
])
def test_bad_usage_exits_2(argv: list[str], message: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["status"], ["transfer", "n2"], ["snapshot"]])
def test_unreachable_exits_1(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    assert main([command[0], f"127.0.0.1:{port}", *command[1:], "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"raft-engine {command[0]}: ") and "refused" in err


def test_not_leader_redirect() -> None:
    assert not_leader_redirect(Error("NOTLEADER n1 127.0.0.1:6401")) == ("n1", "127.0.0.1:6401")
    assert not_leader_redirect(Error("NOTLEADER n1")) == ("n1", None)
    assert not_leader_redirect(Error("NOTLEADER")) == (None, None)
    assert not_leader_redirect(Error("ERR nope")) is None
    assert not_leader_redirect(b"NOTLEADER") is None


# -- in process: a LocalCluster with one KVServer per node --------------------------------------


class KVCluster:
    """Three nodes of a LocalCluster, each served by a KVServer that knows every member's
    client address (as ``--clients`` gives them)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        ports = free_ports(len(cluster.nodes))
        self.clients = {n.id: f"127.0.0.1:{p}" for n, p in zip(cluster.nodes, ports,
                                                                strict=True)}
        self.servers = {n.id: KVServer(n, self.clients[n.id], client_addresses=self.clients)
                        for n in cluster.nodes}
        for server in self.servers.values():
            server.start()

    def node(self, node_id: str) -> RaftNode:
        return self.servers[node_id].node

    def leader(self) -> RaftNode:
        return self.cluster.wait_for_leader(timeout=LIVENESS)

    def followers(self) -> list[RaftNode]:
        leader = self.leader()
        return [n for n in self.cluster.nodes if n is not leader]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def kv(make_cluster: Callable[..., LocalCluster]) -> Iterator[KVCluster]:
    cluster = make_cluster(3, state_machine=KVMachine)
    cluster.wait_for_leader(timeout=LIVENESS)
    kv = KVCluster(cluster)
    yield kv
    kv.stop()


def converged_view(address: str) -> dict[str, Any] | None:
    """The view from ``address`` once every member answers, one leads and none lags it."""
    view = collect(address, 2.0)
    members = view["members"]
    done = (all(m["reachable"] and m["lag"] == 0 for m in members)
            and len({m["commit_index"] for m in members}) == 1
            and sum(m["role"] == "leader" for m in members) == 1)
    return view if done else None


def test_cluster_view_from_a_follower(kv: KVCluster, capsys: pytest.CaptureFixture[str]) -> None:
    leader = kv.leader()
    follower = kv.followers()[0]
    address = kv.clients[follower.id]
    view = wait_until(lambda: converged_view(address), what="the view converges")
    assert view["leader_id"] == leader.id and view["asked_id"] == follower.id
    assert main(["status", address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"leader {leader.id}, term ")
    assert lines[1].split() == ["ID", "CLIENT", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG",
                                "CONTACT", "REACHABLE", "RECOVERING", "DISK"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["n1", "n2", "n3"]
    assert rows[leader.id][1:3] == [kv.clients[leader.id], "leader"]
    for node_id, cells in rows.items():
        assert cells[8] == "yes" and cells[9] == "no" and cells[10] == "ok", cells
        if node_id != leader.id:
            assert cells[2] == "follower" and cells[7].endswith("s"), cells  # ms or s ago

    assert main(["status", address, "--json"]) == 0
    parsed = orjson.loads(capsys.readouterr().out)
    assert [m["id"] for m in parsed["members"]] == ["n1", "n2", "n3"]
    assert parsed["leader_id"] == leader.id
    assert all(m["last_contact"] is not None for m in parsed["members"] if m["id"] != leader.id)

    assert main(["status", address, "--node"]) == 0  # the single-node view, as before
    out = capsys.readouterr().out
    assert f"node            {follower.id}" in out.splitlines()
    assert "role            follower" in out.splitlines()


def test_last_contact_on_the_leader_and_a_follower(kv: KVCluster) -> None:
    leader = kv.leader()
    followers = kv.followers()
    contact = wait_until(lambda: (c := leader.last_contact()) and len(c) == 2 and c,
                         what="the leader hears from both followers")
    assert set(contact) == {f.id for f in followers}
    assert all(0 <= seconds < LIVENESS for seconds in contact.values())
    assert leader.id in followers[0].last_contact()  # it hears the leader's heartbeats


def test_a_stopped_member_shows_unreachable(kv: KVCluster,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    leader = kv.leader()
    asked, stopped = kv.followers()
    kv.servers[stopped.id].stop()
    kv.cluster.crash(kv.cluster.nodes.index(stopped))
    assert main(["status", kv.clients[asked.id], "--json"]) == 0
    view = orjson.loads(capsys.readouterr().out)
    rows = {m["id"]: m for m in view["members"]}
    assert len(rows) == 3 and view["leader_id"] == leader.id
    assert rows[stopped.id]["reachable"] is False and rows[stopped.id]["role"] is None
    assert "refused" in rows[stopped.id]["error"]
    assert rows[asked.id]["reachable"] and rows[leader.id]["reachable"]
    assert main(["status", kv.clients[asked.id]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{stopped.id}: unreachable: " in out[-1]
    row = next(line.split() for line in out if line.startswith(f"{stopped.id} "))
    assert row[2:6] == ["-"] * 4 and row[8] == "no"


def test_transfer_moves_leadership(kv: KVCluster, capsys: pytest.CaptureFixture[str]) -> None:
    leader = kv.leader()
    asked, target = kv.followers()
    # Asked at a follower: -NOTLEADER names the leader's address, which is asked next.
    assert main(["transfer", kv.clients[asked.id], target.id,
                 "--timeout", str(LIVENESS)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == (f"{target.id} leads now "
                                       f"(clients at {kv.clients[target.id]})\n")
    assert fetch_status(kv.clients[target.id])["role"] == "leader"
    # The leader asked to hand over to itself: done at once.
    assert main(["transfer", kv.clients[target.id], target.id]) == 0
    assert capsys.readouterr().out.startswith(f"{target.id} leads now")
    # Not a voter: a clear error, exit 1.
    assert main(["transfer", kv.clients[target.id], "n9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("raft-engine transfer: transfer to n9 failed: ") and \
        "not another voter" in err
    assert leader.status().role == "follower"


def test_raft_transfer_on_a_follower_answers_notleader(kv: KVCluster) -> None:
    leader = kv.leader()
    follower, other = kv.followers()
    reply = request(kv.clients[follower.id], [b"RAFT.TRANSFER", other.id.encode()], LIVENESS)
    assert reply == Error(f"NOTLEADER {leader.id} {kv.clients[leader.id]}")
    reply = request(kv.clients[follower.id], [b"RAFT.TRANSFER"], LIVENESS)
    assert reply == Error("ERR wrong number of arguments for 'raft.transfer' command")
    reply = request(kv.clients[follower.id], [b"RAFT.SNAPSHOT", b"now"], LIVENESS)
    assert reply == Error("ERR wrong number of arguments for 'raft.snapshot' command")


def test_snapshot_returns_its_index(kv: KVCluster, capsys: pytest.CaptureFixture[str]) -> None:
    leader = kv.leader()
    for k in range(5):
        reply = request(kv.clients[leader.id], [b"SET", b"k%d" % k, b"v"], LIVENESS)
        assert reply == "OK"
    follower = kv.followers()[0]
    commit = leader.status().commit_index
    assert follower.wait_applied(commit, timeout=LIVENESS)
    before = fetch_status(kv.clients[follower.id])["snapshot_index"]
    assert main(["snapshot", kv.clients[follower.id], "--timeout", str(LIVENESS)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("snapshot at index ")
    index = int(out.split()[-1])
    assert index >= commit > 0 and index > before
    assert fetch_status(kv.clients[follower.id])["snapshot_index"] >= index
    assert request(kv.clients[follower.id], [b"RAFT.SNAPSHOT"], LIVENESS) >= index


def test_status_watch_against_a_running_cluster(kv: KVCluster) -> None:
    follower = kv.followers()[0]
    out = io.StringIO()
    naps: list[float] = []
    assert run_cluster_status(kv.clients[follower.id], watch_interval=1.0, out=out,
                              now=lambda: 0.0, sleep=naps.append, iterations=2) == 0
    frames = out.getvalue().split(CLEAR)[1:]
    assert len(frames) == 2 and naps == [1.0]
    for frame in frames:
        assert {line.split()[0] for line in frame.splitlines()[3:]} == {"n1", "n2", "n3"}


def test_admin_requests_authenticate_when_given_a_password(
        make_cluster: Callable[..., LocalCluster]) -> None:
    leader = make_cluster(1, state_machine=KVMachine).wait_for_leader(timeout=LIVENESS)
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    with KVServer(leader, address, client_addresses={leader.id: address}, password=b"pw"):
        assert request(address, [b"RAFT.SNAPSHOT"], LIVENESS) == Error(
            "NOAUTH Authentication required.")
        out, err = io.StringIO(), io.StringIO()
        assert run_snapshot(address, password=b"pw", out=out, err=err) == 0, err.getvalue()
        assert out.getvalue().startswith("snapshot at index ")
        assert run_cluster_status(address, password=b"pw", as_json=True, out=out) == 0
        view = orjson.loads(out.getvalue().splitlines()[-1])
        assert [(m["id"], m["role"]) for m in view["members"]] == [(leader.id, "leader")]
        assert run_snapshot(address, password=b"wrong", out=out, err=err) == 1
        assert "refused AUTH: -WRONGPASS" in err.getvalue()


# -- real node processes ---------------------------------------------------------------------


@pytest.mark.slow
def test_status_transfer_and_snapshot_against_node_processes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = NodeProcesses(tmp_path)
    try:
        for node_id in nodes.founders:
            nodes.start(node_id)
        leader, _ = nodes.leader()
        asked, target = [i for i in nodes.founders if i != leader]
        view = wait_until(lambda: converged_view(nodes.clients[asked]),
                          what="the view converges")
        assert view["leader_id"] == leader
        # The real entry point, as a script would run it.
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "status",
                               nodes.clients[asked], "--json"], capture_output=True,
                              timeout=LIVENESS, env=env(), check=False)
        assert proc.returncode == 0, proc.stderr
        parsed = orjson.loads(proc.stdout)
        assert [m["id"] for m in parsed["members"]] == nodes.founders
        assert parsed["leader_id"] == leader

        assert main(["transfer", nodes.clients[leader], target,
                     "--timeout", str(LIVENESS)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert (nodes.status(target) or {}).get("role") == "leader"

        assert main(["snapshot", nodes.clients[asked], "--timeout", str(LIVENESS)]) == 0
        index = int(capsys.readouterr().out.split()[-1])
        assert index > 0 and (nodes.status(asked) or {})["snapshot_index"] >= index

        nodes.kill(leader)  # the old leader, a follower now
        assert main(["status", nodes.clients[asked], "--json"]) == 0
        rows = {m["id"]: m for m in orjson.loads(capsys.readouterr().out)["members"]}
        assert rows[leader]["reachable"] is False
        assert rows[target]["role"] == "leader" and rows[asked]["reachable"]
    finally:
        codes = nodes.stop_all()
    assert all(code == 0 for code in codes.values()), f"{codes}\n{nodes.log_tails()}"

