"""Metrics scraped from ``/metrics`` of real ``raft-engine node`` processes on loopback.

Values that must move do move: the leader-change counter after the leader is SIGKILLed, and a
SIGSTOPped follower's lag on the leader while writes go on (then back to 0 after SIGCONT).
Only the processes started here are signalled; every wait polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.cli import fetch_status
from engine.errors import RaftError

from .util import LIVENESS, RedirectingClient, free_ports, wait_until

FLAGS = ["--heartbeat-interval", "0.05", "--election-timeout-min", "0.3",
         "--election-timeout-max", "0.6", "--log-level", "INFO", "--no-fsync",
         "--latency-sample-every", "1"]
IDS = ("n1", "n2", "n3")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(9)
        self.peers = {i: f"127.0.0.1:{p}" for i, p in zip(IDS, ports[0:3], strict=True)}
        self.clients = {i: f"127.0.0.1:{p}" for i, p in zip(IDS, ports[3:6], strict=True)}
        self.metrics = {i: f"127.0.0.1:{p}" for i, p in zip(IDS, ports[6:9], strict=True)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node_id: str) -> None:
        argv = [sys.executable, "-m", "engine.cli", "node", "--id", node_id,
                "--peers", ",".join(f"{i}={a}" for i, a in self.peers.items()),
                "--clients", ",".join(f"{i}={a}" for i, a in self.clients.items()),
                "--client", self.clients[node_id], "--data-dir", str(self.root / node_id),
                "--metrics", self.metrics[node_id], *FLAGS]
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.root / f"{node_id}.log", "ab") as log:
            self.procs[node_id] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                   env=env)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=LIVENESS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def scrape(self, node_id: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """{(sample name, sorted labels): value}; {} when the node does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.metrics[node_id]}/metrics",
                                        timeout=2.0) as response:
                text = response.read().decode()
        except OSError:
            return {}
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def value(self, node_id: str, name: str, **labels: str) -> float | None:
        key = (name, tuple(sorted({"node": node_id, **labels}.items())))
        return self.scrape(node_id).get(key)

    def leader(self, exclude: str | None = None) -> str:
        def find() -> str | None:
            for node_id in self.procs:
                if node_id == exclude:
                    continue
                try:
                    status = fetch_status(self.clients[node_id], timeout=1.0)
                except (OSError, ValueError, RaftError):
                    continue
                if status["role"] == "leader":
                    return node_id
            return None
        return wait_until(find, what="a leader")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    for node_id in IDS:
        c.start(node_id)
    try:
        yield c
    finally:
        c.stop_all()


def _write(client: RedirectingClient, prefix: str, count: int) -> None:
    for k in range(count):
        client.call("SET", f"{prefix}-{k}", "v", deadline=time.monotonic() + LIVENESS)


def test_leader_kill_moves_the_leader_change_counter(cluster: Cluster) -> None:
    old = cluster.leader()
    client = RedirectingClient(list(cluster.clients.values()))
    try:
        _write(client, "a", 20)
        assert wait_until(lambda: cluster.value(old, "raft_is_leader") == 1)
        assert wait_until(lambda: (cluster.value(old, "raft_proposals_total",
                                                 outcome="committed") or 0) >= 20)
        assert wait_until(lambda: (cluster.value(old, "raft_commit_stage_seconds_count",
                                                 stage="apply") or 0) >= 1)
        survivors = [i for i in IDS if i != old]
        before = {i: cluster.value(i, "raft_leader_changes_total") for i in survivors}
        assert all(v is not None and v >= 1 for v in before.values()), before
        proc = cluster.procs.pop(old)
        proc.kill()
        proc.wait(timeout=LIVENESS)
        new = cluster.leader(exclude=old)
        assert wait_until(lambda: all(
            (cluster.value(i, "raft_leader_changes_total") or 0) > before[i]
            for i in survivors)), (before, {i: cluster.value(i, "raft_leader_changes_total")
                                            for i in survivors})
        assert wait_until(lambda: (cluster.value(new, "raft_elections_won_total") or 0) >= 1)
        assert cluster.value(new, "raft_role", role="leader") == 1
    finally:
        client.close()


def test_stopped_follower_lag_grows_on_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()
    client = RedirectingClient([cluster.clients[leader]])
    follower = next(i for i in IDS if i != leader)
    proc = cluster.procs[follower]
    try:
        _write(client, "a", 10)
        assert wait_until(lambda: cluster.value(leader, "raft_peer_lag_entries",
                                                peer=follower) == 0)
        proc.send_signal(signal.SIGSTOP)
        _write(client, "b", 30)
        first = wait_until(lambda: cluster.value(leader, "raft_peer_lag_entries",
                                                 peer=follower), what="a lag")
        assert first >= 1
        _write(client, "c", 30)
        assert wait_until(lambda: (cluster.value(leader, "raft_peer_lag_entries",
                                                 peer=follower) or 0) >= first + 30)
        contact = cluster.value(leader, "raft_peer_last_contact_seconds", peer=follower)
        assert wait_until(lambda: (cluster.value(leader, "raft_peer_last_contact_seconds",
                                                 peer=follower) or 0) > (contact or 0))
        proc.send_signal(signal.SIGCONT)
        assert wait_until(lambda: cluster.value(leader, "raft_peer_lag_entries",
                                                peer=follower) == 0)
    finally:
        proc.send_signal(signal.SIGCONT)
        client.close()
