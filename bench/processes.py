"""Separate processes on loopback and the hardware baseline: the ``processes`` family's parts.

``processes`` measures the real shape of a deployment, with nothing sharing a GIL:

* **the cluster**: ``n`` node processes on 127.0.0.1 (:class:`NodeProcesses`), either the
  engine's ``python -m engine.cli node`` (each a Raft member with its RESP2 KV server, data in a
  fresh temporary directory, native store when built, fsync on or off), or PySyncObj's
  ``python -m bench.pysyncobj_node`` (a ``SyncObj`` in its default configuration with a tiny
  RESP2 front-end in the same process).  The leader is found with ``RAFT.STATUS``, which both
  answer.  The engine can be run from another source tree (``engine_root``; bench/ab.py uses
  that to measure an older revision with the same harness);
* **the load generator**: ``python -m bench.loadgen`` (:func:`run_loadgen`), a process of its
  own started with subprocess for each measurement and bounded by a deadline; it prints one
  JSON line.  ``sequential``: one SET at a time (latency p50/p99 as a client sees it);
  ``saturate``: several connections each with many SETs pipelined (commits/s per window after a
  warm-up), with the node processes' CPU over the same windows;
* **redis-benchmark** (:func:`redis_benchmark`) when the binary is on PATH;
* **the baseline** (:func:`probe_baseline`), measured after the nodes have stopped: the round
  trip of a 16-byte ping to an echo server thread over TCP on 127.0.0.1 (TCP_NODELAY on both
  sides), and one append of a 64-byte record plus ``os.fdatasync`` in a file on the data
  directory's filesystem; p50s of many samples.  Targets: sequential p50 within 2x and p99
  within 4x of (RTT + fdatasync).

Every child (nodes, load generator, redis-benchmark) is started through :func:`spawn`: on
Linux it gets SIGKILL if the thread that started it dies (``PR_SET_PDEATHSIG``), so an
interrupted benchmark leaves nothing behind; nodes are stopped with SIGTERM, then SIGKILL after
a few seconds, whatever happened.  Every wait has a deadline.  Only loopback addresses are
used.  Nothing here imports the engine (the RESP codec is bench/resp.py), so the same harness
drives any revision of it, and PySyncObj.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from bench.loadgen import percentile
from bench.resp import Error, encode_command, parse

OK_REPLY = b"+OK\r\n"
START_TIMEOUT = 20.0     # seconds for the processes to elect a leader that commits a write
STOP_GRACE = 3.0         # seconds between SIGTERM and SIGKILL when stopping the nodes
IO_TIMEOUT = 10.0        # seconds without any reply before the client gives up
LOADGEN_SLACK = 15.0     # seconds a load generator may run past its own time budget
BENCH_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The source tree bench/ belongs to: the default engine under test, and where the load
generator and the PySyncObj node run from."""
SYSTEMS = ("engine", "pysyncobj")


class RespError(RuntimeError):
    """A node answered an error, or something that is not what was asked."""


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


# -- child processes ---------------------------------------------------------------------------


_DEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
"""Runs before each child on Linux: ask for SIGKILL when the thread that started it ends
(PR_SET_PDEATHSIG = 1; it survives the exec), give up if that already happened, then exec the
real program.  Start children from a thread that outlives them (the suite runs cases on its
main thread)."""


def python_env(root: str) -> dict[str, str]:
    """This environment with ``root`` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def spawn(argv: Sequence[str], *, cwd: str, env: dict[str, str] | None = None,
          stdout: int | IO[Any] | None = subprocess.DEVNULL,
          stderr: int | IO[Any] | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start ``argv`` (``argv[0]`` an absolute path) as a child that dies with this thread."""
    args = list(argv)
    if sys.platform == "linux":
        args = [sys.executable, "-c", _DEATHSIG, str(os.getpid()), *args]
    return subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr)


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@functools.lru_cache(maxsize=8)
def store_impl_of(root: str) -> str:
    """Which log store the engine in ``root`` opens for a data directory: the C store when its
    compiled module imports there (asked in a subprocess), else the pure-Python file store."""
    if os.environ.get("RAFT_ENGINE_NO_NATIVE", "") not in ("", "0"):
        return "FileLogStore (pure Python; RAFT_ENGINE_NO_NATIVE is set)"
    try:
        proc = subprocess.run([sys.executable, "-c", "import engine.storage.native"], cwd=root,
                              env=python_env(root), capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    if proc.returncode == 0:
        return "NativeLogStore (C via cffi)"
    last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
    return f"FileLogStore (pure Python; C module unavailable: {last[:160]})"


_PYSYNCOBJ: list[str | None] = []


def pysyncobj_unavailable(out: IO[str] | None = None) -> str | None:
    """None when PySyncObj imports in this interpreter (which runs the PySyncObj nodes), else
    why not.  ``pip install pysyncobj`` is tried once per process (bench/peer.py)."""
    if not _PYSYNCOBJ:
        from bench.peer import _import_pysyncobj, _version
        module, reason = _import_pysyncobj(out or sys.stdout)
        _PYSYNCOBJ.append(reason)
        _PYSYNCOBJ.append(None if module is None else _version(module))
    return _PYSYNCOBJ[0]


def pysyncobj_version() -> str | None:
    return _PYSYNCOBJ[1] if len(_PYSYNCOBJ) > 1 else None


@dataclass
class NodeProcesses:
    """``n`` node processes of ``system`` on loopback; data in ``root/<id>``, each node's stderr
    in ``root/<id>.log``.  The engine runs from ``engine_root`` (its working directory and
    first PYTHONPATH entry, so ``-m engine.cli`` resolves there)."""

    n: int
    root: str
    fsync: bool = True
    system: str = "engine"
    engine_root: str = BENCH_ROOT
    ids: list[str] = field(default_factory=list)
    peers: dict[str, str] = field(default_factory=dict)
    clients: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    leader: str | None = None        # the leader's client address once known
    # Engine nodes serve /metrics (raft-engine node --metrics) when the tree has engine.metrics
    # (an older --engine-root may not): the commit-stage breakdown is scraped from the leader.
    engine_metrics: bool = True
    metrics: dict[str, str] = field(default_factory=dict)

    def stage_breakdown(self) -> dict[str, float] | None:
        """Mean microseconds per commit stage on the leader (its sampled
        raft_commit_stage_seconds histograms); None when it does not serve metrics."""
        leader = self.leader_id
        if leader is None or leader not in self.metrics:
            return None
        from bench.metrics_overhead import _scrape, _stage_means, _stages_of
        try:
            sums, counts = _stages_of(_scrape(self.metrics[leader]), leader)
        except (OSError, ValueError):
            return None
        return _stage_means(sums, counts) if any(counts.values()) else None

    def _argv(self, i: str) -> tuple[list[str], str]:
        if self.system == "pysyncobj":
            others = [a for j, a in self.peers.items() if j != i]
            mapping = ",".join(f"{self.peers[j]}={self.clients[j]}" for j in self.ids)
            return ([sys.executable, "-m", "bench.pysyncobj_node", "--self", self.peers[i],
                     "--partners", ",".join(others), "--client", self.clients[i],
                     "--clients", mapping], BENCH_ROOT)
        argv = [sys.executable, "-m", "engine.cli", "node", "--id", i,
                "--client", self.clients[i], "--data-dir", os.path.join(self.root, i),
                "--peers", ",".join(f"{j}={a}" for j, a in self.peers.items()),
                "--clients", ",".join(f"{j}={a}" for j, a in self.clients.items()),
                "--log-level", "WARNING"]
        if not self.fsync:
            argv.append("--no-fsync")
        if i in self.metrics:
            argv += ["--metrics", self.metrics[i]]
        return argv, self.engine_root

    def start(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}")
        self.ids = [f"n{k}" for k in range(1, self.n + 1)]
        ports = free_loopback_ports(3 * self.n)
        self.peers = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports[:self.n], strict=True)}
        self.clients = {i: f"127.0.0.1:{p}"
                        for i, p in zip(self.ids, ports[self.n:2 * self.n], strict=True)}
        if (self.system == "engine" and self.engine_metrics
                and os.path.exists(os.path.join(self.engine_root, "engine", "metrics.py"))):
            self.metrics = {i: f"127.0.0.1:{p}"
                            for i, p in zip(self.ids, ports[2 * self.n:], strict=True)}
        for i in self.ids:
            argv, cwd = self._argv(i)
            with open(os.path.join(self.root, f"{i}.log"), "wb") as log:
                self.procs[i] = spawn(argv, cwd=cwd, env=python_env(cwd), stderr=log)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

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
                with contextlib.suppress(OSError, RespError, ValueError):
                    if fetch_status(address, timeout=0.5).get("role") == "leader":
                        self.leader = address
                        return address
            time.sleep(0.05)   # polling interval of another process's state
        raise TimeoutError(f"no leader among the {self.system} processes within {timeout}s; "
                           f"logs: {self.logs()}")

    @property
    def leader_id(self) -> str | None:
        return next((i for i, a in self.clients.items() if a == self.leader), None)

    @property
    def leader_pid(self) -> int | None:
        i = self.leader_id
        return self.procs[i].pid if i in self.procs else None

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
def node_processes(n: int, *, fsync: bool = True, system: str = "engine",
                   engine_root: str | None = None) -> Iterator[NodeProcesses]:
    """Start ``n`` node processes in a fresh temporary directory and wait for a leader that
    commits a write; stop them and remove the directory on exit, whatever happened."""
    root = tempfile.mkdtemp(prefix="raft-bench-procs-")
    cluster = NodeProcesses(n, root, fsync, system, engine_root or BENCH_ROOT)
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


# -- the harness's own small client ------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class RespClient:
    """A minimal blocking RESP2 client (warm-up writes, status); measurements are made by the
    load generator's process, not with this."""

    def __init__(self, address: str, timeout: float = IO_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self.sock = self._connect(address)
        self.buf = b""

    def _connect(self, address: str) -> socket.socket:
        sock = socket.create_connection(_address(address), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

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
        self.sock = self._connect(address)
        self.buf = b""

    def reply(self) -> object:
        """The next reply (blocking, each read bounded by the socket timeout)."""
        while (parsed := parse(self.buf)) is None:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError(f"{self.address} closed the connection")
            self.buf += chunk
        value, end = parsed
        self.buf = self.buf[end:]
        return value

    def call(self, *args: bytes) -> object:
        self.sock.sendall(encode_command(list(args)))
        return self.reply()

    def set_until_ok(self, key: bytes, value: bytes, cluster: NodeProcesses | None,
                     deadline: float) -> int:
        """SET until +OK; follows -NOTLEADER and retries -TRYAGAIN.  Returns the retries."""
        retries = 0
        while True:
            reply = self.call(b"SET", key, value)
            if reply == "OK" and not isinstance(reply, Error):
                return retries
            parts = reply.split() if isinstance(reply, Error) else []
            if parts[:1] not in (["NOTLEADER"], ["TRYAGAIN"]) or time.monotonic() > deadline:
                raise RespError(f"SET on {self.address} answered {reply!r}")
            retries += 1
            time.sleep(0.01)   # back-off before retrying, not synchronisation
            target = None
            if parts[0] == "NOTLEADER":
                target = parts[2] if len(parts) == 3 else (
                    cluster.find_leader() if cluster else None)
            if target and target != self.address:
                self.reconnect(target)


def fetch_status(address: str, timeout: float = 2.0) -> dict[str, Any]:
    """``RAFT.STATUS`` of the node serving clients at ``address`` (a JSON object).

    Raises:
        OSError: unreachable, timed out or closed before answering.
        RespError: an error reply, or not a JSON object.
    """
    with RespClient(address, timeout=timeout) as client:
        reply = client.call(b"RAFT.STATUS")
    if isinstance(reply, Error) or not isinstance(reply, bytes):
        raise RespError(f"{address} answered {reply!r} to RAFT.STATUS")
    status = json.loads(reply)
    if not isinstance(status, dict):
        raise RespError(f"{address} answered {reply!r} to RAFT.STATUS")
    return status


# -- the load generator and redis-benchmark, each in a process of its own ------------------------


class LoadgenError(RuntimeError):
    """The load generator failed, or ran over its deadline."""


def _run_child(argv: list[str], *, cwd: str, env: dict[str, str] | None, deadline_s: float,
               what: str) -> tuple[int, str, str]:
    """Run a child to completion within ``deadline_s`` (killed past it); returns
    (exit status, stdout, stderr).  Output goes through temporary files, so a large result
    never blocks the child on a full pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = spawn(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        try:
            code = proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            raise LoadgenError(f"{what} ran over its {deadline_s:.0f} s deadline") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=STOP_GRACE)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def run_loadgen(address: str, mode: str, payload: int, *, seconds: float, ops: int = 2000,
                warmup_ops: int = 200, warmup_seconds: float = 1.0, warmup: float = 0.5,
                window: float = 0.25,
                connections: int = 4, depth: int = 128, watch_pids: Sequence[int] = (),
                timeout: float = IO_TIMEOUT) -> dict[str, Any]:
    """``python -m bench.loadgen`` against ``address`` (see bench/loadgen.py): its JSON result.

    Raises:
        LoadgenError: it failed, printed no result, or ran over its deadline.
    """
    host, port = _address(address)
    argv = [sys.executable, "-m", "bench.loadgen", "--host", host, "--port", str(port),
            "--mode", mode, "--payload", str(payload), "--seconds", f"{seconds:g}",
            "--timeout", f"{timeout:g}"]
    if mode == "sequential":
        argv += ["--ops", str(ops), "--warmup-ops", str(warmup_ops), "--warmup-seconds",
                 f"{warmup_seconds:g}"]
        budget = 4 * seconds + warmup_seconds + 3 * timeout
    else:
        argv += ["--warmup", f"{warmup:g}", "--window", f"{window:g}", "--connections",
                 str(connections), "--depth", str(depth)]
        if watch_pids:
            argv += ["--watch-pids", ",".join(str(p) for p in watch_pids)]
        budget = warmup + seconds + 2 * timeout
    code, out, err = _run_child(argv, cwd=BENCH_ROOT, env=python_env(BENCH_ROOT),
                                deadline_s=budget + LOADGEN_SLACK, what="the load generator")
    lines = out.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if code != 0 or not result or "error" in result:
        detail = result.get("error") or (err.strip().splitlines() or ["no output"])[-1]
        raise LoadgenError(f"load generator ({mode}) exited {code}: {detail}")
    return result


REDIS_BENCHMARK_MISSING = "redis-benchmark not installed (apt-get install redis-tools)"


def parse_redis_benchmark(text: str) -> dict[str, float]:
    """requests/s and p50 (ms) of the SET test from redis-benchmark's ``--csv`` output, or from
    its ``-q`` line (``SET: 12345.67 requests per second, p50=1.234 msec``)."""
    for line in text.splitlines():
        cells = [c.strip().strip('"') for c in line.split(",")]
        if cells and cells[0].upper().startswith("SET") and len(cells) >= 5:
            with contextlib.suppress(ValueError):
                return {"rps": float(cells[1]), "avg_ms": float(cells[2]),
                        "p50_ms": float(cells[4]),
                        **({"p99_ms": float(cells[6])} if len(cells) >= 7 else {})}
    match = re.search(r"SET:\s*([\d.]+)\s+requests per second(?:,\s*p50=([\d.]+)\s*msec)?",
                      text)
    if match:
        return {"rps": float(match.group(1)),
                **({"p50_ms": float(match.group(2))} if match.group(2) else {})}
    raise ValueError(f"no SET result in redis-benchmark's output: {text.strip()[:200]!r}")


def redis_benchmark(address: str, *, pipeline: int, requests: int, clients: int = 50,
                    timeout_s: float = 120.0) -> dict[str, Any]:
    """``redis-benchmark -p PORT -t set -P <pipeline> -c <clients> -n <requests> -q --csv``
    against ``address``: {"command", "rps", "p50_ms", ...}, or {"skipped": why} when the
    binary is not on PATH, or {"error": ...}."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return {"skipped": REDIS_BENCHMARK_MISSING}
    host, port = _address(address)
    argv = [exe, "-h", host, "-p", str(port), "-t", "set", "-P", str(pipeline), "-c",
            str(clients), "-n", str(requests), "-q", "--csv"]
    command = " ".join(["redis-benchmark", *argv[1:]])
    try:
        code, out, err = _run_child(argv, cwd=BENCH_ROOT, env=None, deadline_s=timeout_s,
                                    what="redis-benchmark")
        if code != 0:
            raise LoadgenError(f"exited {code}: {(err.strip() or out.strip())[-200:]}")
        return {"command": command, "pipeline": pipeline, "clients": clients,
                "requests": requests, **parse_redis_benchmark(out)}
    except (LoadgenError, ValueError, OSError) as exc:
        return {"command": command, "pipeline": pipeline, "error": str(exc)}


def probe_baseline(directory: str, *, rtt_samples: int, fsync_samples: int) -> dict[str, Any]:
    """Loopback RTT and fdatasync p50s (microseconds) measured now, with the filesystem."""
    from bench.scenarios import filesystem_of
    rtt = sorted(loopback_rtt(rtt_samples))
    sync = sorted(fdatasync_latency(directory, fsync_samples))
    return {
        "rtt_p50_us": percentile(rtt, 50) * 1e6,
        "rtt_p99_us": percentile(rtt, 99) * 1e6,
        "rtt_samples": len(rtt),
        "fdatasync_p50_us": percentile(sync, 50) * 1e6,
        "fdatasync_p99_us": percentile(sync, 99) * 1e6,
        "fdatasync_samples": len(sync),
        "filesystem": filesystem_of(directory),
    }

