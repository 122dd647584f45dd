"""The raft-engine command line: flag and TOML handling, exit codes, node and cluster processes.

Processes started here are stopped at the end of each test (SIGTERM, then SIGKILL if a process
does not exit within the liveness bound); only those processes are ever signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from engine import LocalCluster, RaftError
from engine.cli import build_config, build_parser, fetch_status, format_status, main, node_settings
from engine.kv import KVMachine, KVServer

from .util import LIVENESS, consecutive_free_ports, free_ports, wait_until

PEERS = "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003"
BASE = ["node", "--id", "n1", "--peers", PEERS, "--client", "127.0.0.1:6401"]


@pytest.mark.parametrize("argv, message", [
    (["node"], "--id is required"),
    (["node", "--id", "n1", "--client", "127.0.0.1:1"], "--peers is required"),
    (["node", "--id", "n9", "--peers", PEERS, "--client", "127.0.0.1:1"], "not one of --peers"),
    (["node", "--id", "n1", "--peers", "n1=nowhere", "--client", "127.0.0.1:1"], "host:port"),
    (["node", "--id", "n1", "--peers", "n1", "--client", "127.0.0.1:1"], "ID=HOST:PORT"),
    ([*BASE[:-1], "127.0.0.1:http"], "not an integer"),
    ([*BASE, "--clients", "n1=127.0.0.1:99999"], "0..65535"),
    ([*BASE, "--election-timeout-min", "0.5", "--election-timeout-max", "0.2"],
     "election_timeout_max=0.2 must be > election_timeout_min=0.5"),
    ([*BASE, "--max-inflight", "0"], "max_inflight=0 must be > 0"),
    ([*BASE, "--heartbeat-interval", "soon"], "invalid float value"),
    ([*BASE, "--log-level", "LOUD"], "--log-level"),
    ([*BASE, "--gc-threshold", "-1"], "--gc-threshold -1 must be >= 0"),
    ([*BASE, "--secret-file", "/nonexistent/secret"], "--secret-file"),
    ([*BASE, "--config", "/nonexistent/node.toml"], "--config"),
    (["node", "--frobnicate"], "unrecognized arguments"),
    (["launch"], "invalid choice"),
    (["status", "localhost"], "host:port"),
    (["cluster", "--nodes", "0"], "--nodes 0"),
    ([*BASE, "--join", "yes"], "unrecognized arguments"),
    (["member", "127.0.0.1:6401"], "the following arguments are required: action, ID"),
    (["member", "127.0.0.1:6401", "add", "n4"], "member add needs the new node's raft address"),
    (["member", "127.0.0.1:6401", "add", "n4", "nowhere"], "RAFT_HOST:PORT"),
    (["member", "127.0.0.1:6401", "promote", "n4", "127.0.0.1:7004"],
     "member promote takes only the node id"),
    (["member", "127.0.0.1:6401", "remove", "n4", "127.0.0.1:7004"],
     "member remove takes only the node id"),
    (["member", "127.0.0.1:6401", "promote", "n4", "a", "b"], "unrecognized arguments"),
    (["member", "127.0.0.1:6401", "demote", "n4"], "invalid choice"),
    (["member", "localhost", "remove", "n4"], "host:port"),
    (["member", "127.0.0.1:6401", "remove", "n4", "--timeout", "soon"], "invalid float value"),
])
def test_bad_flags_exit_2_with_a_message(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "--help"]) == 0
    assert "--election-timeout-min" in capsys.readouterr().out


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_storage_fault_flags_reach_the_config() -> None:
    args = build_parser().parse_args([
        "node", "--id", "n1", "--peers", "n1=127.0.0.1:7001", "--client", "127.0.0.1:6401",
        "--recover-corrupt-log", "--disk-stall-timeout", "0.5"])
    config = build_config(node_settings(args))
    assert config.recover_corrupt_log is True
    assert config.disk_stall_timeout == 0.5
    default = build_config(node_settings(build_parser().parse_args([
        "node", "--id", "n1", "--peers", "n1=127.0.0.1:7001", "--client", "127.0.0.1:6401"])))
    assert default.recover_corrupt_log is False


def test_toml_settings_with_flags_overriding(tmp_path: Path) -> None:
    config = write(tmp_path / "node.toml", """
        id = "n2"
        client = "127.0.0.1:6402"
        data-dir = "/var/lib/kv/n2"
        heartbeat_interval = 0.02
        election_timeout_min = 0.3
        election_timeout_max = 0.6
        max_inflight = 8
        fsync = false
        tick_interval = 0.005      # any Config field, not only those with a flag
        read_timeout = 2
        [peers]
        n1 = "127.0.0.1:7001"
        n2 = "127.0.0.1:7002"
    """)
    args = build_parser().parse_args(["node", "--config", config, "--max-inflight", "16",
                                      "--log-level", "debug"])
    settings = node_settings(args)
    assert settings["id"] == "n2"
    assert settings["peers"] == {"n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002"}
    assert settings["data_dir"] == "/var/lib/kv/n2"
    assert settings["max_inflight"] == 16  # the flag wins
    assert settings["heartbeat_interval"] == 0.02
    assert settings["fsync"] is False
    assert settings["log_level"] == "DEBUG"
    config = build_config(settings)
    assert (config.tick_interval, config.read_timeout, config.max_inflight) == (0.005, 2.0, 16)


def test_join_reaches_the_node_settings(tmp_path: Path) -> None:
    parser = build_parser()
    assert "join" not in node_settings(parser.parse_args(BASE))
    assert node_settings(parser.parse_args([*BASE, "--join"]))["join"] is True
    config = write(tmp_path / "node.toml", "join = true\n")
    assert node_settings(parser.parse_args([*BASE, "--config", config]))["join"] is True
    config = write(tmp_path / "node.toml", "join = false\n")
    assert node_settings(parser.parse_args([*BASE, "--config", config]))["join"] is False
    assert node_settings(parser.parse_args([*BASE, "--config", config, "--join"]))["join"] is True


@pytest.mark.parametrize("text, message", [
    ("colour = 'blue'", "unknown key 'colour'"),
    ("max_inflight = 'many'", "must be an integer"),
    ("fsync = 1", "must be true or false"),
    ("peers = 7", "must be ID=HOST:PORT"),
    ("id = ", "invalid TOML"),
    ("join = 'yes'", "join='yes' must be true or false"),
])
def test_bad_toml_exits_2(tmp_path: Path, text: str, message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "node.toml", text)
    assert main([*BASE, "--config", config]) == 2
    assert message in capsys.readouterr().err


def test_status_unreachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    assert main(["status", f"127.0.0.1:{port}", "--timeout", "2"]) == 1
    assert "cannot get the status" in capsys.readouterr().err


def test_status_of_a_running_node(make_cluster: Callable[..., LocalCluster],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cluster = make_cluster(1, state_machine=KVMachine)
    leader = cluster.wait_for_leader(timeout=LIVENESS)
    with KVServer(leader, "127.0.0.1:0", client_addresses={"n1": "127.0.0.1:6401"}) as server:
        host, port = server.address or ("", 0)
        assert main(["status", f"{host}:{port}", "--node"]) == 0
        out = capsys.readouterr().out
        assert main(["status", f"{host}:{port}", "--node", "--json"]) == 0
        raw = capsys.readouterr().out
        assert main(["status", f"{host}:{port}"]) == 0  # the cluster view: one member
        table = capsys.readouterr().out.splitlines()
    assert "role            leader" in out
    assert "leader          n1 (clients at 127.0.0.1:6401)" in out
    assert '"role":"leader"' in raw
    assert table[0] == f"leader n1, term {orjson.loads(raw)['term']}; voters n1 (asked n1 at " \
                       f"{host}:{port})"
    assert table[2].split()[:3] == ["n1", f"{host}:{port}", "leader"]


def test_format_status_of_an_unknown_leader() -> None:
    text = format_status({"id": "n2", "role": "follower", "term": 3, "leader_id": None,
                          "commit_index": 5, "last_applied": 4, "last_log_index": 6})
    assert "leader          unknown" in text
    assert "applied index   4" in text


def test_format_status_shows_recovery_stalls_and_follower_lag() -> None:
    text = format_status({"id": "n1", "role": "leader", "term": 2, "leader_id": "n1",
                          "commit_index": 9, "last_applied": 9, "last_log_index": 9,
                          "peers": {"n2": {"match": 9, "lag": 0, "state": "replicate",
                                           "active": True, "recovering": False},
                                    "n3": {"match": 4, "lag": 5, "state": "probe",
                                           "active": True, "recovering": True}}})
    lines = text.splitlines()
    assert "peer n2         match 9  lag 0  replicate, active" in lines
    assert "peer n3         match 4  lag 5  probe, active, recovering" in lines
    follower = format_status({"id": "n3", "role": "follower", "term": 2, "leader_id": "n1",
                              "commit_index": 4, "last_applied": 4, "last_log_index": 4,
                              "recovering": 9, "disk_stalled": True})
    assert any(line.startswith("recovering      lost entries up to 9")
               for line in follower.splitlines())
    assert any(line.startswith("disk            stalled") for line in follower.splitlines())
    assert "recovering" not in format_status({"id": "n2", "role": "follower", "term": 1})


def test_format_status_shows_the_configuration() -> None:
    base = {"id": "n1", "role": "leader", "term": 2, "leader_id": "n1", "commit_index": 9,
            "last_applied": 9, "last_log_index": 9}
    text = format_status({**base, "voters": ["n1", "n2", "n3"], "outgoing": [],
                          "learners": ["n4"]})
    assert "voters          n1, n2, n3" in text.splitlines()
    assert "learners        n4" in text.splitlines()
    assert "outgoing" not in text  # only while joint
    joint = format_status({**base, "voters": ["n1", "n2", "n3", "n4"],
                           "outgoing": ["n1", "n2", "n3"], "learners": []})
    assert "voters          n1, n2, n3, n4" in joint.splitlines()
    assert "outgoing        n1, n2, n3" in joint.splitlines()
    assert "learners" not in joint
    assert "voters" not in format_status(base)  # a status without a configuration


def test_member_command_against_a_running_node(make_cluster: Callable[..., LocalCluster],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cluster = make_cluster(1, state_machine=KVMachine)
    leader = cluster.wait_for_leader(timeout=LIVENESS)
    with KVServer(leader, "127.0.0.1:0") as server:
        host, port = server.address or ("", 0)
        address = f"{host}:{port}"
        # n2 need not run: a learner does not count towards any majority.
        assert main(["member", address, "add", "n2", "127.0.0.1:7002"]) == 0
        assert orjson.loads(capsys.readouterr().out) == {
            "voters": ["n1"], "outgoing": [], "learners": ["n2"]}
        assert main(["status", address, "--node"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "voters          n1" in out and "learners        n2" in out

        assert main(["member", address, "promote", "n1"]) == 1
        err = capsys.readouterr().err
        assert "member: promote n1 failed" in err and "n1 is not a learner" in err

        assert main(["member", address, "remove", "n2"]) == 0
        assert orjson.loads(capsys.readouterr().out) == {
            "voters": ["n1"], "outgoing": [], "learners": []}
        assert main(["status", address, "--node"]) == 0
        assert "learners" not in capsys.readouterr().out


def test_member_unreachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    assert main(["member", f"127.0.0.1:{port}", "remove", "n2", "--timeout", "2"]) == 1
    assert "member: remove n2 failed" in capsys.readouterr().err


# -- processes ---------------------------------------------------------------------------------


def env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at the end are terminated, then killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=LIVENESS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def try_status(address: str) -> dict | None:
    try:
        return fetch_status(address, timeout=1.0)
    except (OSError, ValueError, RaftError):
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_node_process_serves_and_stops_gracefully(
        tmp_path: Path, processes: list[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    raft_port, client_port = free_ports(2)
    client = f"127.0.0.1:{client_port}"
    secret = write(tmp_path / "secret", "s3cret\n")
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "node", "--id", "n1", "--peers",
         f"n1=127.0.0.1:{raft_port}", "--client", client, "--data-dir", str(tmp_path / "n1"),
         "--secret-file", secret], stdout=log, stderr=subprocess.STDOUT, env=env())
    processes.append(proc)
    wait_until(lambda: (try_status(client) or {}).get("role") == "leader",
               what="the single node leads")
    r = redis.Redis(port=client_port, protocol=2, socket_timeout=LIVENESS)
    try:
        assert r.set("k", "v") is True
        assert r.get("k") == b"v"
    finally:
        r.close()
    proc.send_signal(sig)
    assert proc.wait(timeout=LIVENESS) == 0
    log.close()
    assert b"stopping" in (tmp_path / "node.log").read_bytes()


@pytest.mark.slow
def test_cluster_command_starts_and_stops_all_nodes(
        processes: list[subprocess.Popen[bytes]]) -> None:
    base = consecutive_free_ports(3)
    client_base = consecutive_free_ports(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "cluster", "--nodes", "3", "--no-fsync",
         "--base-port", str(base), "--client-base-port", str(client_base)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env())
    processes.append(proc)
    assert proc.stdout is not None
    lines: list[str] = []
    leader_line = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode())
            if raw.startswith(b"leader:"):
                leader_line.set()

    reader = threading.Thread(target=read_stdout, name="test-cluster-stdout", daemon=True)
    reader.start()
    assert leader_line.wait(LIVENESS), f"no leader line in {lines}"
    clients = [f"127.0.0.1:{client_base + k}" for k in range(3)]
    assert [line.split()[2] for line in lines[:3]] == clients
    wait_until(lambda: all(try_status(c) for c in clients), what="all three nodes answer")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=LIVENESS) == 0
    reader.join(LIVENESS)
    assert [try_status(c) for c in clients] == [None] * 3  # every node process is gone


def test_tune_gc_freezes_and_sets_the_young_threshold() -> None:
    """tune_gc(N) sets the young-generation threshold to N (keeping the older ones) and moves
    existing objects to the permanent generation; 0 leaves the settings alone."""
    import gc

    from engine.cli import tune_gc
    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        tune_gc(12345)
        assert gc.get_threshold() == (12345, before[1], before[2])
        assert gc.get_freeze_count() > 0
        with pytest.raises(ValueError):
            tune_gc(-5)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
