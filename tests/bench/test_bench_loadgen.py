"""Tests of the processes family's separate programs: the load generator (bench/loadgen.py),
the PySyncObj node (bench/pysyncobj_node.py), redis-benchmark's output, the RESP codec and the
A/B driver (bench/ab.py).

Nothing here judges how fast anything was: the checks are on counts, shapes, exit statuses and
clean-up.  The load generator is driven against a small RESP stub server in this process, so
these tests do not depend on the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from bench import loadgen
from bench import processes as pr
from bench.resp import Error, Simple, encode_command, encode_reply, parse, parse_command


class StubServer:
    """Answers ``SET`` with +OK (or ``-TRYAGAIN stub`` for keys ending in ``:7``), ``GET``
    with the stored value, anything else with -ERR; one thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.data: dict[bytes, bytes] = {}
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = b""
        with conn:
            while not self.stopping.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                out, pos = [], 0
                while (parsed := parse_command(buf, pos)) is not None:
                    args, pos = parsed
                    if args[0].upper() == b"SET":
                        self.data[args[1]] = args[2]
                        out.append(encode_reply(Error("TRYAGAIN stub")
                                                if args[1].endswith(b":7") else Simple("OK")))
                    elif args[0].upper() == b"GET":
                        out.append(encode_reply(self.data.get(args[1])))
                    else:
                        out.append(encode_reply(Error("ERR unknown command")))
                buf = buf[pos:]
                with contextlib.suppress(OSError):
                    conn.sendall(b"".join(out))

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer()
    try:
        yield server
    finally:
        server.close()


def test_resp_codec_round_trips() -> None:
    assert parse(b"+OK\r\n") == ("OK", 5)
    assert parse(b"$3\r\nab") is None
    value, end = parse(b"*2\r\n$1\r\na\r\n:5\r\n-ERR x\r\n")
    assert value == [b"a", 5] and end == 15
    (err, _) = parse(b"-ERR x\r\n")
    assert isinstance(err, Error) and err == "ERR x"
    command = encode_command([b"SET", b"k", b"v"])
    assert parse_command(command) == ([b"SET", b"k", b"v"], len(command))
    assert parse_command(b"PING\r\n") == ([b"PING"], 6)
    assert encode_reply([Simple("OK"), None, 3, b"x"]) == b"*4\r\n+OK\r\n$-1\r\n:3\r\n$1\r\nx\r\n"


def test_sequential_counts_latencies_and_errors(stub: StubServer) -> None:
    r = loadgen.sequential("127.0.0.1", stub.port, b"v" * 16, seconds=30.0, ops=30,
                           warmup_ops=3, timeout=5.0)
    # Keys seq:0 ... seq:32 (3 warm-up SETs, then 30 to measure); seq:7 is answered with an
    # error: counted, not measured.
    assert r["errors"] == 1 and r["first_error"] == "-TRYAGAIN stub"
    assert r["ops"] == len(r["latencies_s"]) == 29
    assert all(v > 0 for v in r["latencies_s"])
    assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    assert stub.data[b"seq:0"] == b"v" * 16
    assert len(loadgen.payload_of(1024)) == 1024 and len(loadgen.payload_of(1)) == 8


def test_saturate_keeps_connections_pipelined_and_drains(stub: StubServer) -> None:
    r = loadgen.saturate("127.0.0.1", stub.port, b"v" * 16, connections=3, depth=8,
                         warmup=0.05, seconds=0.2, window=0.1, timeout=5.0,
                         watch_pids=[os.getpid()])
    assert len(r["windows"]) == 2 and all(s > 0 for s, _ in r["windows"])
    assert r["commits"] == sum(c for _, c in r["windows"]) and r["commits"] > 0
    assert r["commits_per_s_mean"] > 0 and r["commits_per_s"] > 0
    assert r["errors"] > 0 and r["first_error"] == "-TRYAGAIN stub"   # keys k<c>:7
    assert r["drained"] is True and r["ok"] >= r["commits"]
    assert set(r["watched_cpu_cores"]) == {str(os.getpid())}
    assert {b"k0:0", b"k1:0", b"k2:0"} <= set(stub.data)


def test_loadgen_cli_prints_one_json_line(stub: StubServer) -> None:
    seq = pr.run_loadgen(stub.address, "sequential", 32, seconds=0.05, ops=25, warmup_ops=2)
    assert seq["mode"] == "sequential" and seq["payload"] == 32 and seq["ops"] >= 20
    sat = pr.run_loadgen(stub.address, "saturate", 16, seconds=0.2, warmup=0.05, window=0.1,
                         connections=2, depth=4)
    assert sat["mode"] == "saturate" and sat["connections"] == 2 and sat["depth"] == 4
    assert len(sat["windows"]) == 2 and sat["commits"] > 0


def test_loadgen_cli_failures_exit_nonzero() -> None:
    (port,) = pr.free_loopback_ports(1)   # nothing listens there
    cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--mode", "sequential",
           "--timeout", "2"]
    proc = subprocess.run(cmd, cwd=pr.BENCH_ROOT, env=pr.python_env(pr.BENCH_ROOT),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "error" in json.loads(proc.stdout.strip().splitlines()[-1])
    with pytest.raises(pr.LoadgenError, match="exited 1"):
        pr.run_loadgen(f"127.0.0.1:{port}", "saturate", 16, seconds=0.1, timeout=2)
    bad = subprocess.run([*cmd, "--depth", "0"], cwd=pr.BENCH_ROOT,
                         env=pr.python_env(pr.BENCH_ROOT), capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 2


def test_redis_benchmark_output_is_parsed() -> None:
    csv = ('"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
           '"p99_latency_ms","max_latency_ms"\n'
           '"SET","8814.46","5.539","1.576","4.695","11.375","19.343","52.767"\n')
    assert pr.parse_redis_benchmark(csv) == {"rps": 8814.46, "avg_ms": 5.539, "p50_ms": 4.695,
                                             "p99_ms": 19.343}
    quiet = "SET: 26420.08 requests per second, p50=24.287 msec\n"
    assert pr.parse_redis_benchmark(quiet) == {"rps": 26420.08, "p50_ms": 24.287}
    with pytest.raises(ValueError):
        pr.parse_redis_benchmark("WARNING: Could not fetch server CONFIG\n")


def test_redis_benchmark_missing_binary_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pr.shutil, "which", lambda _name: None)
    assert pr.redis_benchmark("127.0.0.1:1", pipeline=1, requests=10) == {
        "skipped": "redis-benchmark not installed (apt-get install redis-tools)"}


def test_pysyncobj_nodes_serve_resp_and_leave_no_process() -> None:
    pytest.importorskip("pysyncobj", reason="pysyncobj is not installed (pip install pysyncobj)")
    with pr.node_processes(3, system="pysyncobj") as cluster:
        assert cluster.leader is not None
        status = pr.fetch_status(cluster.leader)
        assert status["role"] == "leader" and status["system"] == "pysyncobj"
        assert status["leader_address"] == cluster.leader
        with pr.RespClient(cluster.leader) as client:
            assert client.call(b"SET", b"a", b"1") == "OK"
            assert client.call(b"GET", b"a") == b"1"
            assert client.call(b"PING") == "PONG"
            assert isinstance(client.call(b"NOSUCH"), Error)
        follower = next(a for a in cluster.clients.values() if a != cluster.leader)
        with pr.RespClient(follower) as client:   # forwarded to the leader by PySyncObj
            assert client.call(b"SET", b"b", b"2") == "OK"
        r = pr.run_loadgen(cluster.leader, "sequential", 16, seconds=0.05, ops=20,
                           warmup_ops=1, warmup_seconds=0.1)
        assert r["ops"] == 20 and r["errors"] == 0
        procs = list(cluster.procs.values())
        root = cluster.root
    assert all(p.poll() is not None for p in procs)
    assert not os.path.exists(root)
