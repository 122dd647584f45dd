"""Measure the replicated KV service: 3 node processes on loopback, redis-benchmark and a
sequential Python client.

    python examples/kv_bench.py                 # fsync on
    python examples/kv_bench.py --no-fsync
    python examples/kv_bench.py --requests 5000 --skip-redis-benchmark

Starts three ``python -m engine.cli node`` processes (data in a temporary directory), waits for a
leader, then on the leader's client port runs::

    redis-benchmark -p PORT -t set,get -n 20000 -P 16 -q -d 16      (when installed)

and a redis-py client (RESP2) doing sequential SETs of 16-byte values, printing throughput and
p50/p99 latency.  Numbers from a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

from engine.cli import fetch_status


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_cluster(root: str, fsync: bool) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    ids = ["n1", "n2", "n3"]
    ports = free_ports(6)
    peers = {i: f"127.0.0.1:{p}" for i, p in zip(ids, ports[:3], strict=True)}
    clients = {i: f"127.0.0.1:{p}" for i, p in zip(ids, ports[3:], strict=True)}
    procs = []
    for i in ids:
        argv = [sys.executable, "-m", "engine.cli", "node", "--id", i,
                "--peers", ",".join(f"{k}={v}" for k, v in peers.items()),
                "--clients", ",".join(f"{k}={v}" for k, v in clients.items()),
                "--client", clients[i], "--data-dir", os.path.join(root, i),
                "--log-level", "WARNING"]
        if not fsync:
            argv.append("--no-fsync")
        procs.append(subprocess.Popen(argv))
    return procs, clients


def wait_leader(clients: dict[str, str], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for address in clients.values():
            try:
                status = fetch_status(address, timeout=0.5)
            except Exception:
                continue
            if status["role"] == "leader":
                return address
        time.sleep(0.05)
    raise TimeoutError("no leader")


def sequential_sets(address: str, count: int) -> None:
    """Sequential SETs; follows -NOTLEADER and retries -TRYAGAIN (counted, not hidden)."""
    clients: dict[str, redis.Redis] = {}

    def client_for(addr: str) -> redis.Redis:
        if addr not in clients:
            host, port = addr.rsplit(":", 1)
            clients[addr] = redis.Redis(host=host, port=int(port), protocol=2)
        return clients[addr]

    value = b"x" * 16
    retries = 0

    def set_key(key: str) -> None:
        nonlocal address, retries
        while True:
            try:
                client_for(address).set(key, value)
                return
            except redis.ResponseError as exc:
                parts = str(exc).split()
                retries += 1
                if parts[0] == "NOTLEADER" and len(parts) == 3:
                    address = parts[2]
                elif parts[0] != "NOTLEADER" and "leadership" not in str(exc):
                    raise
                time.sleep(0.01)

    for i in range(200):  # warm up
        set_key(f"warm{i}")
    latencies = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        set_key(f"key{i}")
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    for client in clients.values():
        client.close()
    q = statistics.quantiles(latencies, n=100)
    print(f"python sequential SET (redis-py, 16-byte values, {count} requests): "
          f"{count / elapsed:,.0f} ops/s, p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms"
          f"{f', {retries} retries after a leader change' if retries else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--skip-redis-benchmark", action="store_true")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="kv-bench-")
    procs, clients = start_cluster(root, fsync=not args.no_fsync)
    try:
        leader = wait_leader(clients)
        port = leader.rsplit(":", 1)[1]
        print(f"fsync {'off' if args.no_fsync else 'on'}; leader at {leader}", flush=True)
        if not args.skip_redis_benchmark:
            if shutil.which("redis-benchmark"):
                command = ["redis-benchmark", "-p", port, "-t", "set,get", "-n", "20000",
                           "-P", "16", "-q", "-d", "16"]
                print("$", " ".join(command), flush=True)
                result = subprocess.run(command, capture_output=True, text=True, timeout=300)
                for line in result.stdout.replace("\r", "\n").splitlines():
                    if "requests per second" in line:
                        print("  " + line.strip(), flush=True)
            else:
                print("redis-benchmark not installed (apt-get install redis-tools)")
        sequential_sets(leader, args.requests)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
