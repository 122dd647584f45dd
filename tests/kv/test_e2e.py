"""End to end: three `python -m engine.cli node` processes with on-disk logs, a redis-py client
that follows -NOTLEADER redirects, and the leader killed with SIGKILL and restarted, three times.

Every write the client saw acknowledged must be readable afterwards, also after the whole cluster
is killed and restarted from its data directories.  Only the processes started here are
signalled; waiting polls RAFT.STATUS (every 50 ms) or a condition, always with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from engine.cli import fetch_status, main
from engine.errors import RaftError

from .util import LIVENESS, RedirectingClient, free_ports, wait_until

ROUNDS = 3
NODE_FLAGS = ["--heartbeat-interval", "0.05", "--election-timeout-min", "0.3",
              "--election-timeout-max", "0.6", "--log-level", "INFO"]


class NodeProcesses:
    """KV node processes on loopback, each with its own data directory and log file: three
    founders (n1..n3, the bootstrap configuration) and ``joiners`` more to be added later."""

    def __init__(self, root: Path, joiners: int = 0) -> None:
        self.root = root
        self.ids = [f"n{k}" for k in range(1, 4 + joiners)]
        self.founders = self.ids[:3]
        n = len(self.ids)
        ports = free_ports(2 * n)
        self.peers = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports[:n], strict=True)}
        self.clients = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports[n:], strict=True)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (root / "secret").write_text("e2e-secret\n")

    def start(self, node_id: str) -> None:
        """Start a node; a joiner with ``--join`` and peers = the founders and itself."""
        join = node_id not in self.founders
        peers = {i: a for i, a in self.peers.items() if i in self.founders or i == node_id}
        log = open(self.root / f"{node_id}.log", "ab")  # noqa: SIM115 - the child owns it
        argv = [sys.executable, "-m", "engine.cli", "node", "--id", node_id,
                "--peers", ",".join(f"{i}={a}" for i, a in peers.items()),
                "--clients", ",".join(f"{i}={a}" for i, a in self.clients.items()),
                "--client", self.clients[node_id], "--data-dir", str(self.root / node_id),
                "--secret-file", str(self.root / "secret"), *NODE_FLAGS,
                *(["--join"] if join else [])]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with log:
            self.procs[node_id] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                   env=env)

    def kill(self, node_id: str) -> None:
        proc = self.procs.pop(node_id)
        proc.kill()  # SIGKILL: no goodbye, no flush
        proc.wait(timeout=LIVENESS)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every node still running; their exit statuses (SIGKILL after the bound)."""
        codes = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node_id, proc in self.procs.items():
            try:
                codes[node_id] = proc.wait(timeout=LIVENESS)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[node_id] = proc.wait()
        self.procs.clear()
        return codes

    def status(self, node_id: str) -> dict | None:
        try:
            return fetch_status(self.clients[node_id], timeout=1.0)
        except (OSError, ValueError, RaftError):
            return None

    def leader(self, newer_than: int = 0) -> tuple[str, int]:
        """(id, term) of a running leader in a term > ``newer_than``, waiting for one."""
        def find() -> tuple[str, int] | None:
            for node_id in self.procs:
                status = self.status(node_id)
                if status and status["role"] == "leader" and status["term"] > newer_than:
                    return node_id, status["term"]
            return None
        try:
            return wait_until(find, what="a leader")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tails()}") from None

    def converged(self) -> bool:
        """Every founder runs and has applied everything the leader committed."""
        statuses = [self.status(i) for i in self.founders]
        if not all(statuses):
            return False
        leaders = [s for s in statuses if s and s["role"] == "leader"]
        return len(leaders) == 1 and all(
            s and s["last_applied"] >= leaders[0]["commit_index"] for s in statuses)

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for node_id in self.ids:
            path = self.root / f"{node_id}.log"
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"--- {node_id}.log\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


class Writer(threading.Thread):
    """Sets key-000000, key-000001, ... one at a time, retrying each until acknowledged."""

    def __init__(self, client: RedirectingClient) -> None:
        super().__init__(name="test-kv-writer", daemon=True)
        self.client = client
        self.acked: dict[str, str] = {}  # guarded by self.cond
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            while not self.stopping.is_set():
                key, value = f"key-{i:06d}", os.urandom(8).hex()  # 16-byte values
                self.client.call("SET", key, value, deadline=time.monotonic() + LIVENESS)
                with self.cond:
                    self.acked[key] = value
                    self.cond.notify_all()
                i += 1
        except BaseException as exc:
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait_for_more(self, count: int) -> None:
        with self.cond:
            target = len(self.acked) + count
            done = self.cond.wait_for(
                lambda: len(self.acked) >= target or self.error is not None, LIVENESS)
        assert self.error is None, f"writer failed: {self.error!r}"
        assert done, f"writer stuck at {len(self.acked)} acknowledged writes"


def check_all_present(client: RedirectingClient, acked: dict[str, str]) -> None:
    keys = sorted(acked)
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        values = client.call("MGET", *chunk, deadline=time.monotonic() + LIVENESS)
        assert isinstance(values, list)
        missing = [k for k, v in zip(chunk, values, strict=True) if v != acked[k].encode()]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


@pytest.mark.slow
def test_acknowledged_writes_survive_leader_kills(tmp_path: Path) -> None:
    nodes = NodeProcesses(tmp_path)
    client = RedirectingClient(list(nodes.clients.values()))
    writer = Writer(client)
    try:
        for node_id in nodes.founders:
            nodes.start(node_id)
        nodes.leader()
        writer.start()
        for _ in range(ROUNDS):
            writer.wait_for_more(50)
            old_leader, term = nodes.leader()
            nodes.kill(old_leader)
            new_leader, _ = nodes.leader(newer_than=term)
            assert new_leader != old_leader
            writer.wait_for_more(50)  # the client found the new leader
            nodes.start(old_leader)
        writer.stopping.set()
        writer.join(LIVENESS)
        assert not writer.is_alive() and writer.error is None, repr(writer.error)
        with writer.cond:
            acked = dict(writer.acked)
        assert client.redirects > 0
        check_all_present(client, acked)
        wait_until(nodes.converged, what="all three nodes caught up")

        # Everyone dies at once; the data directories must hold every acknowledged write.
        for node_id in nodes.ids:
            nodes.kill(node_id)
        for node_id in nodes.ids:
            nodes.start(node_id)
        nodes.leader()
        check_all_present(client, acked)
        # Every node has its SIGTERM handler (it answers), so the graceful stop below is one.
        wait_until(nodes.converged, what="all three nodes back")
    finally:
        writer.stopping.set()
        codes = nodes.stop_all()
        client.close()
    assert codes == {i: 0 for i in nodes.ids}, f"{codes}\n{nodes.log_tails()}"


def member(capsys: pytest.CaptureFixture[str], leader_client: str, *args: str) -> dict:
    """``raft-engine member <leader> ...`` (in this process); the configuration it printed."""
    code = main(["member", leader_client, *args, "--timeout", str(LIVENESS)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return orjson.loads(out)


@pytest.mark.slow
def test_a_joining_node_is_added_promoted_and_removed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = NodeProcesses(tmp_path, joiners=1)
    client = RedirectingClient([nodes.clients[i] for i in nodes.founders])
    via_n4 = RedirectingClient([nodes.clients["n4"]])
    try:
        for node_id in nodes.ids:
            nodes.start(node_id)
        # Once a node answers, it also stops gracefully on SIGTERM (exit status 0).
        wait_until(lambda: all(nodes.status(i) for i in nodes.ids), what="all four answer")
        leader, _ = nodes.leader()
        assert leader != "n4"
        n4 = nodes.status("n4")
        assert n4 and (n4["voters"], n4["learners"]) == ([], [])  # --join: no configuration
        client.call("SET", "before", "1", deadline=time.monotonic() + LIVENESS)

        leader_client = nodes.clients[leader]
        assert member(capsys, leader_client, "add", "n4", nodes.peers["n4"]) == {
            "voters": nodes.founders, "outgoing": [], "learners": ["n4"]}
        assert member(capsys, leader_client, "promote", "n4") == {
            "voters": nodes.ids, "outgoing": [], "learners": []}
        client.call("SET", "after", "2", deadline=time.monotonic() + LIVENESS)
        commit = (nodes.status(leader) or {})["commit_index"]
        n4 = wait_until(lambda: (s := nodes.status("n4")) and s["last_applied"] >= commit and s,
                        what="n4 applies the write")
        assert (n4["role"], n4["leader_id"], n4["voters"]) == ("follower", leader, nodes.ids)
        # Reads go to the leader: n4 redirects there.
        deadline = time.monotonic() + LIVENESS
        assert via_n4.call("MGET", "before", "after", deadline=deadline) == [b"1", b"2"]
        assert via_n4.redirects == 1

        assert member(capsys, leader_client, "remove", "n4") == {
            "voters": nodes.founders, "outgoing": [], "learners": []}
        client.call("SET", "removed", "3", deadline=time.monotonic() + LIVENESS)
        assert (nodes.status(leader) or {})["voters"] == nodes.founders
    finally:
        codes = nodes.stop_all()
        client.close()
        via_n4.close()
    assert codes == {i: 0 for i in nodes.ids}, f"{codes}\n{nodes.log_tails()}"
