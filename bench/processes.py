"""Separate node processes and the hardware baseline: the ``processes`` family and its probes.

``processes``: three ``python -m engine.cli node`` processes (each a Raft member with its RESP2
KV server) talk TCP on loopback, with their data directories (native store when built) in a
fresh temporary directory, fsync on or off.  The load generator is this process, speaking RESP
over a raw socket to the leader's client port (found with ``RAFT.STATUS``):

* sequential latency: one SET at a time, seconds from sending it to reading ``+OK``
  (what a client sees: loopback round trip + RESP + replication + commit + apply);
* throughput: ``pipeline_depth`` SETs kept in flight on one connection (pipelining), replies
  counted per window after a warm-up, as the in-process throughput driver does.

Unlike every other family, the cluster does not share the load generator's GIL: each node has
a process of its own (and, on a 2-core machine, shares the cores with the other two).

Baseline probes (:func:`loopback_rtt`, :func:`fdatasync_latency`), for the target "p50 latency
within 2x of (loopback round trip + one fdatasync)": the round trip of a 16-byte ping to an
echo server thread over TCP on 127.0.0.1 (TCP_NODELAY on both sides), and the time of one
append of a 64-byte record plus ``os.fdatasync`` in a file on the data directory's filesystem.
Both are p50s of many samples, taken while no cluster runs.

The node processes are always stopped (SIGTERM, then SIGKILL after a few seconds) when the case
ends, normally or by an exception; on Linux they also get SIGKILL if this process dies first
(``PR_SET_PDEATHSIG``), so an interrupted benchmark leaves no node behind.  Every wait has a
deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import engine
from engine.cli import fetch_status
from engine.errors import RaftError
from engine.kv.resp import Error, encode, parse_reply
from engine.transport.tcp import free_loopback_ports

OK_REPLY = b"+OK\r\n"
START_TIMEOUT = 20.0     # seconds for the processes to elect a leader that commits a write
STOP_GRACE = 3.0         # seconds between SIGTERM and SIGKILL when stopping the nodes
IO_TIMEOUT = 10.0        # seconds without any reply before the client gives up


# -- baseline probes ---------------------------------------------------------------------------


def loopback_rtt(samples: int = 2000, size: int = 16, warmup: int = 100) -> list[float]:
    """Round trips (seconds) of a ``size``-byte ping to an echo server thread over TCP on
    127.0.0.1, TCP_NODELAY on both ends, one ping at a time."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(IO_TIMEOUT)

    def echo() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(IO_TIMEOUT)
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=echo, name="bench-echo", daemon=True)
    thread.start()
    message = b"p" * size
    values: list[float] = []
    perf = time.perf_counter
    try:
        with socket.create_connection(listener.getsockname(), timeout=IO_TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for k in range(warmup + samples):
                t0 = perf()
                sock.sendall(message)
                got = 0
                while got < size:
                    chunk = sock.recv(size - got)
                    if not chunk:
                        raise ConnectionError("echo server closed the connection")
                    got += len(chunk)
                if k >= warmup:
                    values.append(perf() - t0)
    finally:
        listener.close()
        thread.join(IO_TIMEOUT)
    return values


def fdatasync_latency(directory: str, samples: int = 200, record: int = 64, warmup: int = 5,
                      budget_s: float = 5.0) -> list[float]:
    """Seconds of one append of a ``record``-byte record plus ``os.fdatasync`` in a fresh file
    in ``directory`` (removed afterwards); stops after ``budget_s`` with at least 20 samples."""
    fd, path = tempfile.mkstemp(prefix="fdatasync-probe-", dir=directory)
    data = b"r" * record
    values: list[float] = []
    perf = time.perf_counter
    try:
        deadline = perf() + budget_s
        for k in range(warmup + samples):
            t0 = perf()
            os.write(fd, data)
            os.fdatasync(fd)
            t1 = perf()
            if k >= warmup:
                values.append(t1 - t0)
                if t1 > deadline and len(values) >= 20:
                    break
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
    return values


# -- the node processes ------------------------------------------------------------------------


_DEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
"""Runs before each node on Linux: ask for SIGKILL when the thread that started it ends
(PR_SET_PDEATHSIG = 1; it survives the exec), give up if that already happened, then exec
``python -m engine.cli node ...``.  Start the nodes from a thread that outlives them (the suite
runs cases on its main thread)."""


@dataclass
class NodeProcesses:
    """``n`` KV node processes on loopback, data in ``root/<id>``, logs in ``root/<id>.log``."""

    n: int
    root: str
    fsync: bool
    ids: list[str] = field(default_factory=list)
    peers: dict[str, str] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    leader: str | None = None        # the leader's client address once known

    def start(self) -> None:
        self.ids = [f"n{k}" for k in range(1, self.n + 1)]
        ports = free_loopback_ports(2 * self.n)
        self.peers = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports[:self.n], strict=True)}
        self.clients = {i: f"127.0.0.1:{p}"
                        for i, p in zip(self.ids, ports[self.n:], strict=True)}
        common = ["--peers", ",".join(f"{i}={a}" for i, a in self.peers.items()),
                  "--clients", ",".join(f"{i}={a}" for i, a in self.clients.items()),
                  "--log-level", "WARNING"]
        if not self.fsync:
            common.append("--no-fsync")
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
        for i in self.ids:
            argv = ["-m", "engine.cli", "node", "--id", i, "--client", self.clients[i],
                    "--data-dir", os.path.join(self.root, i), *common]
            if sys.platform == "linux":
                argv = ["-c", _DEATHSIG, str(os.getpid()), *argv]
            with open(os.path.join(self.root, f"{i}.log"), "wb") as log:
                self.procs[i] = subprocess.Popen([sys.executable, *argv], env=env,
                                                 stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=log)

    def logs(self, lines: int = 5) -> str:
        """The last ``lines`` lines of each node's stderr (for error messages)."""
        out = []
        for i in self.ids:
            with contextlib.suppress(OSError), open(os.path.join(self.root, f"{i}.log")) as f:
                tail = f.read().strip().splitlines()[-lines:]
                if tail:
                    out.append(f"{i}: " + " / ".join(tail))
        return "; ".join(out) or "(no output)"

    def check_alive(self) -> None:
        dead = {i: p.returncode for i, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"node process exited: {dead}; logs: {self.logs()}")

    def find_leader(self, timeout: float = START_TIMEOUT) -> str:
        """The client address of a node that reports itself leader (polled via RAFT.STATUS)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            for address in self.clients.values():
                with contextlib.suppress(OSError, RaftError, ValueError):
                    if fetch_status(address, timeout=0.5).get("role") == "leader":
                        self.leader = address
                        return address
            time.sleep(0.05)   # polling interval of another process's state
        raise TimeoutError(f"no leader among the node processes within {timeout}s; "
                           f"logs: {self.logs()}")

    @property
    def leader_id(self) -> str | None:
        return next((i for i, a in self.clients.items() if a == self.leader), None)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds used so far by each node process (Linux; else nan)."""
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        used = {}
        for i, p in self.procs.items():
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                used[i] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                used[i] = float("nan")
        return used

    def stop(self) -> None:
        """SIGTERM every node, SIGKILL those still running after :data:`STOP_GRACE` s."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=STOP_GRACE)


@contextlib.contextmanager
def node_processes(n: int, *, fsync: bool) -> Iterator[NodeProcesses]:
    """Start ``n`` node processes in a fresh temporary directory and wait for a leader that
    commits a write; stop them and remove the directory on exit, whatever happened."""
    root = tempfile.mkdtemp(prefix="raft-bench-procs-")
    cluster = NodeProcesses(n, root, fsync)
    try:
        cluster.start()
        address = cluster.find_leader()
        with RespClient(address) as client:
            client.set_until_ok(b"warm", b"up", cluster, deadline=time.monotonic() + 15.0)
            cluster.leader = client.address   # where the write succeeded (after redirects)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- the client --------------------------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class RespClient:
    """A minimal RESP2 client on a raw socket: send encoded commands, read replies in order."""

    def __init__(self, address: str | tuple[str, int], timeout: float = IO_TIMEOUT) -> None:
        self.address = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self.sock = socket.create_connection(_address(self.address), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> RespClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def reconnect(self, address: str) -> None:
        """Close this connection and open one to ``address`` (a -NOTLEADER redirect)."""
        self.close()
        self.address = address
        self.sock = socket.create_connection(_address(address), timeout=self.sock.gettimeout())
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError(f"{self.address} closed the connection")
        self.buf += chunk

    def reply(self) -> object:
        """The next reply (blocking)."""
        if self.buf.startswith(OK_REPLY):
            self.buf = self.buf[5:]
            return "OK"
        while (parsed := parse_reply(self.buf)) is None:
            self._fill()
        value, end = parsed
        self.buf = self.buf[end:]
        return value

    def call(self, *args: bytes) -> object:
        self.sock.sendall(encode(list(args)))
        return self.reply()

    def replies_available(self) -> tuple[int, list[object]]:
        """Wait for at least one reply; returns (number of +OK, the other replies)."""
        ok, others = 0, []
        while not ok and not others:
            self._fill()
            buf, pos = self.buf, 0
            while True:
                if buf.startswith(OK_REPLY, pos):   # the common case, without parse_reply
                    pos += 5
                    ok += 1
                    continue
                parsed = parse_reply(buf, pos)
                if parsed is None:
                    break
                others.append(parsed[0])
                pos = parsed[1]
            self.buf = buf[pos:]
        return ok, others

    def set_until_ok(self, key: bytes, value: bytes, cluster: NodeProcesses | None,
                     deadline: float) -> int:
        """SET until +OK; follows -NOTLEADER and retries -TRYAGAIN.  Returns the retries."""
        retries = 0
        while True:
            reply = self.call(b"SET", key, value)
            if reply == "OK":
                return retries
            parts = reply.split() if isinstance(reply, Error) else []
            if parts[:1] not in (["NOTLEADER"], ["TRYAGAIN"]) or time.monotonic() > deadline:
                raise RaftError(f"SET on {self.address} answered {reply!r}")
            retries += 1
            time.sleep(0.01)   # back-off before retrying, not synchronisation
            target = None
            if parts[0] == "NOTLEADER":
                target = parts[2] if len(parts) == 3 else (
                    cluster.find_leader() if cluster else None)
            if target and target != self.address:
                self.reconnect(target)


def sequential_sets(client: RespClient, payload: bytes, *, ops: int, warmup_ops: int,
                    budget_s: float, cluster: NodeProcesses | None = None
                    ) -> tuple[list[float], int]:
    """One SET at a time: seconds from sending it to its reply.  ``warmup_ops`` unmeasured
    SETs, then up to ``ops`` measured ones or until ``budget_s`` (at least 20 measured).  A SET
    answered -NOTLEADER/-TRYAGAIN is retried and its latency includes the retries.
    Returns (latencies, retries)."""
    perf = time.perf_counter
    commands = [encode([b"SET", b"seq:%d" % k, payload]) for k in range(1024)]
    values: list[float] = []
    retries = 0
    deadline = float("inf")
    for k in range(warmup_ops + ops):
        if k == warmup_ops:
            deadline = perf() + budget_s
        start = perf()
        client.sock.sendall(commands[k & 1023])
        reply = client.reply()
        if reply != "OK":
            retries += 1 + client.set_until_ok(b"seq:%d" % (k & 1023), payload, cluster,
                                               time.monotonic() + 30.0)
        end = perf()
        if k >= warmup_ops:
            values.append(end - start)
            if end > deadline and len(values) >= 20:
                break
    return values, retries


@dataclass
class PipelineResult:
    windows: list[tuple[float, int]]     # (seconds, +OK replies) per measured window
    errors: int
    depth: int
    first_error: str | None = None


def pipelined_sets(client: RespClient, payload: bytes, *, depth: int, warmup_s: float,
                   windows: int, window_s: float) -> PipelineResult:
    """Keep ``depth`` SETs in flight on one connection; count +OK replies per window after
    ``warmup_s``.  Error replies are counted, not retried (no leader change is expected)."""
    perf = time.perf_counter
    commands = [encode([b"SET", b"key:%d" % k, payload]) for k in range(4096)]
    sent = 0

    def send(count: int) -> None:
        nonlocal sent
        if count:
            client.sock.sendall(b"".join(commands[(sent + j) & 4095] for j in range(count)))
            sent += count

    boundaries = [warmup_s + k * window_s for k in range(windows + 1)]
    marks: list[tuple[float, int]] = []
    ok = errors = 0
    first_error: str | None = None
    inflight = depth
    send(depth)
    start = perf()
    next_mark = 0
    while next_mark <= windows:
        got_ok, others = client.replies_available()
        ok += got_ok
        errors += len(others)
        if others and first_error is None:
            first_error = repr(others[0])[:200]
        inflight -= got_ok + len(others)
        now = perf()
        while next_mark <= windows and now - start >= boundaries[next_mark]:
            marks.append((now, ok))
            next_mark += 1
        send(depth - inflight)
        inflight = depth
    # Drain what is still in flight (bounded by the socket timeout) so the server is idle.
    with contextlib.suppress(OSError):
        while inflight > 0:
            got_ok, others = client.replies_available()
            inflight -= got_ok + len(others)
    result = PipelineResult([], errors, depth, first_error)
    for (t0, c0), (t1, c1) in itertools.pairwise(marks):
        result.windows.append((t1 - t0, c1 - c0))
    return result


def probe_baseline(directory: str, *, rtt_samples: int, fsync_samples: int) -> dict[str, Any]:
    """Loopback RTT and fdatasync p50s (microseconds) measured now, with the filesystem."""
    from bench import workloads as wl
    from bench.scenarios import filesystem_of
    rtt = sorted(loopback_rtt(rtt_samples))
    sync = sorted(fdatasync_latency(directory, fsync_samples))
    return {
        "rtt_p50_us": wl.percentile(rtt, 50) * 1e6,
        "rtt_p99_us": wl.percentile(rtt, 99) * 1e6,
        "rtt_samples": len(rtt),
        "fdatasync_p50_us": wl.percentile(sync, 50) * 1e6,
        "fdatasync_p99_us": wl.percentile(sync, 99) * 1e6,
        "fdatasync_samples": len(sync),
        "filesystem": filesystem_of(directory),
    }
