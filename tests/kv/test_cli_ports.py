"""``raft-engine cluster`` when its ports are taken: it fails at once, naming the busy port,
and never reports as its leader a node that is not one of its own processes.

Loopback ports only.  Every process started here is stopped at the end (SIGTERM, then SIGKILL
after the liveness bound), and every wait has a deadline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from engine import LocalCluster
from engine.cli import _wait_for_leader, owns_listener
from engine.kv import KVMachine, KVServer

from . import test_cli
from .util import LIVENESS, consecutive_free_ports

# The helpers of the CLI suite: ``env()`` for child processes, and the ``processes`` fixture.
env = test_cli.env
processes = test_cli.processes


def listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` (the other program holding it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def run_cluster(processes: list[subprocess.Popen[bytes]], base: int, client_base: int,
                stderr: int | IO[bytes] = subprocess.PIPE) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "cluster", "--nodes", "3", "--no-fsync",
         "--base-port", str(base), "--client-base-port", str(client_base)],
        stdout=subprocess.PIPE, stderr=stderr, env=env())
    processes.append(proc)
    return proc


@pytest.mark.parametrize("busy, what", [(("raft", 1), "raft port of n2"),
                                        (("client", 0), "client port of n1")])
def test_cluster_with_a_busy_port_fails_at_once_naming_it(
        processes: list[subprocess.Popen[bytes]], busy: tuple[str, int], what: str) -> None:
    """Exit status 2, the busy port and its role on stderr, nothing started or announced."""
    base, client_base = consecutive_free_ports(3), consecutive_free_ports(3)
    port = (base if busy[0] == "raft" else client_base) + busy[1]
    with listen(port):
        proc = run_cluster(processes, base, client_base)
        out, err = proc.communicate(timeout=LIVENESS)
    assert proc.returncode == 2, (out, err)
    assert f"port {port} on 127.0.0.1 ({what}) is not free".encode() in err, err
    assert out == b""  # no node line, no leader line: nothing was started


def test_overlapping_port_ranges_are_refused(processes: list[subprocess.Popen[bytes]]) -> None:
    base = consecutive_free_ports(4)
    proc = run_cluster(processes, base, base + 1)
    out, err = proc.communicate(timeout=LIVENESS)
    assert proc.returncode == 2 and b"overlap" in err and out == b""


@pytest.mark.slow
def test_second_cluster_on_the_same_ports_does_not_claim_the_first_ones_leader(
        processes: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """The reported bug: a second ``raft-engine cluster`` on the ports of a running one printed
    the first cluster's leader as its own, then its nodes died of "address already in use"."""
    base, client_base = consecutive_free_ports(3), consecutive_free_ports(3)
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log:
        first = run_cluster(processes, base, client_base, stderr=log)
    assert first.stdout is not None
    lines: list[bytes] = []
    leader_line = threading.Event()

    def read_stdout() -> None:
        assert first.stdout is not None
        for raw in first.stdout:
            lines.append(raw)
            if raw.startswith(b"leader:"):
                leader_line.set()

    reader = threading.Thread(target=read_stdout, name="test-first-cluster", daemon=True)
    reader.start()
    assert leader_line.wait(LIVENESS), (
        f"the first cluster announced no leader: {lines}; stderr: {log_path.read_text()}")
    second = run_cluster(processes, base, client_base)
    out, err = second.communicate(timeout=LIVENESS)
    assert second.returncode == 2, (out, err)
    assert f"port {base} on 127.0.0.1 (raft port of n1) is not free".encode() in err, err
    assert b"leader:" not in out
    assert first.poll() is None  # the first cluster is untouched
    first.terminate()
    assert first.wait(timeout=LIVENESS) == 0
    reader.join(LIVENESS)


def test_a_leader_answering_on_a_port_our_node_does_not_hold_is_not_reported(
        make_cluster: Callable[..., LocalCluster],
        processes: list[subprocess.Popen[bytes]]) -> None:
    """The check behind the announcement, for a port taken between the free-port check and the
    node's own bind: a leader answers RAFT.STATUS there as n1, but the process we started as n1
    does not hold that socket, so it is not our leader."""
    cluster = make_cluster(1, state_machine=KVMachine)
    leader = cluster.wait_for_leader(timeout=LIVENESS)
    ours = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE, env=env())
    processes.append(ours)
    with KVServer(leader, "127.0.0.1:0") as server:
        host, port = server.address or ("", 0)
        if owns_listener(os.getpid(), port) is None:
            pytest.skip("no /proc to tell which process holds a socket")
        assert owns_listener(os.getpid(), port) is True
        assert owns_listener(ours.pid, port) is False
        stop = threading.Event()
        assert _wait_for_leader({"n1": f"{host}:{port}"}, {"n1": ours}, stop, timeout=1.0) is None
        # The same reply with the holder named as n1 is accepted (the positive control).
        me = _Self()
        assert _wait_for_leader({"n1": f"{host}:{port}"}, {"n1": me}, stop,  # type: ignore[dict-item]
                                timeout=LIVENESS) == "n1"
    assert ours.stdin is not None
    ours.stdin.close()
    assert ours.wait(timeout=LIVENESS) == 0


class _Self:
    """Stands for a running node process that is this test process."""

    pid = os.getpid()

    @staticmethod
    def poll() -> int | None:
        return None
