"""``python -m bench.loadgen``: the processes family's load generator, in a process of its own.

::

    python -m bench.loadgen --host 127.0.0.1 --port 6401 --mode sequential --payload 16 \\
        --seconds 1.5 --ops 2000 --warmup-ops 200
    python -m bench.loadgen --host 127.0.0.1 --port 6401 --mode saturate --payload 16 \\
        --seconds 2 --warmup 0.5 --window 0.25 --connections 4 --depth 128

It speaks RESP2 to any server that answers ``SET key value`` with ``+OK`` (a KV node of the
engine, the PySyncObj node of bench/pysyncobj_node.py, Redis) and prints **one JSON line**:

* ``sequential``: one SET at a time on one connection; the latency of each is the time from
  sending it to reading its reply (``--warmup-ops`` unmeasured first; then up to ``--ops``
  measured, stopping after ``--seconds`` once at least 20 are measured; the warm-up also ends
  after ``--warmup-seconds``, for slow systems).  Keys ``seq:0`` ...
  ``seq:1023``.  JSON: ``ops``, ``p50_us`` ... ``max_us``, ``latencies_s`` (every measured
  value), ``errors``, ``first_error``.
* ``saturate``: ``--connections`` connections, each keeping ``--depth`` SETs in flight
  (pipelining: a reply is answered at once by a new SET on that connection), one thread, an
  epoll loop.  Replies are counted per ``--window`` after ``--warmup``, for ``--seconds``;
  sending then stops and what is in flight is drained.  Keys ``k<c>:0`` ... ``k<c>:4095`` per
  connection.  JSON: ``windows`` ([seconds, +OK replies] each), ``commits_per_s`` (median
  window; a +OK to a SET means committed and applied), ``commits_per_s_mean``, ``errors``,
  ``loadgen_cpu_cores`` (this process's CPU over the measured windows: near 1.0 means the load
  generator, not the server, was the bottleneck) and, with ``--watch-pids``, the CPU cores
  those processes used over the same windows (Linux /proc).

Exit status 0 when measured, 1 with ``{"error": ...}`` when not (connection refused, no reply
for ``--timeout`` seconds, ...), 2 for bad arguments.  Standard library only, and no import
of the engine: the same code drives every system the suite compares.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import selectors
import socket
import statistics
import sys
import time
from typing import Any

from bench.resp import encode_command

OK = b"+OK\r\n"
MIN_SAMPLES = 20


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (the suite's definition); nan when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def payload_of(size: int) -> bytes:
    """``size`` bytes (at least 8) of value, as the suite's in-process workloads use."""
    return (bytes(8) + b"x" * max(0, size - 8))[:max(size, 8)]


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; nan elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return math.nan


def sequential(host: str, port: int, payload: bytes, *, seconds: float, ops: int,
               warmup_ops: int, warmup_s: float = 1.0, timeout: float = 10.0
               ) -> dict[str, Any]:
    """One SET at a time; see the module docstring."""
    perf = time.perf_counter
    commands = [encode_command([b"SET", b"seq:%d" % k, payload]) for k in range(1024)]
    values: list[float] = []
    errors = 0
    first_error: str | None = None
    hard_deadline = perf() + 4 * seconds + 3 * timeout
    cpu0 = time.process_time()
    with _connect(host, port, timeout) as sock:
        buf = b""
        deadline = math.inf
        warm_end = perf() + warmup_s
        measured_from = warmup_ops
        for k in range(warmup_ops + ops):
            t0 = perf()
            if k < measured_from and t0 > warm_end:
                measured_from = k            # a slow system: warm-up ends on time, not count
            if k == measured_from:
                deadline = t0 + seconds
            sock.sendall(commands[k & 1023])
            while (end := buf.find(b"\r\n")) < 0:   # a reply to SET is one line
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{host}:{port} closed the connection")
                buf += chunk
            t1 = perf()
            line, buf = buf[:end], buf[end + 2:]
            if line != b"+OK":
                errors += 1
                if first_error is None:
                    first_error = line[:200].decode(errors="replace")
            elif k >= measured_from:
                values.append(t1 - t0)
            if (t1 > deadline and len(values) >= MIN_SAMPLES) or t1 > hard_deadline \
                    or len(values) >= ops:
                break
    ordered = sorted(values)
    return {"mode": "sequential", "payload": len(payload), "ops": len(values),
            "errors": errors, "first_error": first_error,
            "p50_us": percentile(ordered, 50) * 1e6, "p90_us": percentile(ordered, 90) * 1e6,
            "p99_us": percentile(ordered, 99) * 1e6,
            "max_us": ordered[-1] * 1e6 if ordered else math.nan,
            "mean_us": sum(ordered) / len(ordered) * 1e6 if ordered else math.nan,
            "loadgen_cpu_s": time.process_time() - cpu0, "latencies_s": values}


class _Conn:
    """One pipelined connection of :func:`saturate`."""

    def __init__(self, sock: socket.socket, commands: list[bytes]) -> None:
        self.sock = sock
        self.commands = commands
        self.out = bytearray()
        self.sent = 0
        self.inflight = 0
        self.tail = b""
        self.writing = False

    def queue(self, count: int) -> None:
        cmds, sent = self.commands, self.sent
        self.out += b"".join([cmds[(sent + j) & 4095] for j in range(count)])
        self.sent += count
        self.inflight += count

    def flush(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            del self.out[:n]


def saturate(host: str, port: int, payload: bytes, *, connections: int, depth: int,
             warmup: float, seconds: float, window: float, timeout: float = 10.0,
             watch_pids: list[int] | None = None) -> dict[str, Any]:
    """``connections`` x ``depth`` SETs in flight; see the module docstring."""
    perf = time.perf_counter
    windows = max(1, round(seconds / window))
    watch = watch_pids or []
    conns: list[_Conn] = []
    sel = selectors.DefaultSelector()
    try:
        for c in range(connections):
            sock = _connect(host, port, timeout)
            sock.setblocking(False)
            conns.append(_Conn(sock, [encode_command([b"SET", b"k%d:%d" % (c, j), payload])
                                      for j in range(4096)]))
        boundaries = [warmup + k * window for k in range(windows + 1)]
        marks: list[tuple[float, int, float, list[float]]] = []
        ok = errors = 0
        first_error: str | None = None
        start = perf()
        for conn in conns:
            conn.queue(depth)
            conn.flush()
            conn.writing = bool(conn.out)
            sel.register(conn.sock, selectors.EVENT_READ
                         | (selectors.EVENT_WRITE if conn.writing else 0), conn)
        last_progress = start
        drain_deadline = math.inf
        sending = True
        while True:
            now = perf()
            while len(marks) <= windows and now - start >= boundaries[len(marks)]:
                marks.append((now, ok, time.process_time(),
                              [process_cpu_seconds(p) for p in watch]))
            if sending and len(marks) > windows:
                sending = False
                drain_deadline = now + timeout
            if not sending and (all(c.inflight == 0 for c in conns) or now > drain_deadline):
                break
            wait = (start + boundaries[len(marks)] - now) if sending else drain_deadline - now
            events = sel.select(max(0.0, min(wait, timeout)))
            if not events:
                if perf() - last_progress > timeout:
                    raise TimeoutError(f"no reply from {host}:{port} for {timeout:g} s "
                                       f"({ok} +OK, {errors} errors so far)")
                continue
            last_progress = perf()
            for key, mask in events:
                conn = key.data
                if mask & selectors.EVENT_READ:
                    try:
                        data = conn.sock.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    if data is not None:
                        if not data:
                            raise ConnectionError(f"{host}:{port} closed a connection")
                        buf = conn.tail + data if conn.tail else data
                        last = buf.rfind(b"\r\n")
                        if last >= 0:
                            end = last + 2
                            n = buf.count(b"\r\n", 0, end)
                            got = buf.count(OK, 0, end)
                            if n != got and first_error is None:
                                first_error = next(
                                    line for line in buf[:last].split(b"\r\n")
                                    if line != b"+OK")[:200].decode(errors="replace")
                            conn.tail = buf[end:]
                            ok += got
                            errors += n - got
                            conn.inflight -= n
                            if sending:
                                conn.queue(n)
                        else:
                            conn.tail = buf
                conn.flush()
                if bool(conn.out) != conn.writing:
                    conn.writing = bool(conn.out)
                    sel.modify(conn.sock, selectors.EVENT_READ
                               | (selectors.EVENT_WRITE if conn.writing else 0), conn)
    finally:
        sel.close()
        for conn in conns:
            conn.sock.close()
    spans = [(t1 - t0, c1 - c0) for (t0, c0, _, _), (t1, c1, _, _) in itertools.pairwise(marks)]
    rates = sorted(c / s for s, c in spans if s > 0)
    total_s = marks[-1][0] - marks[0][0]
    total_c = marks[-1][1] - marks[0][1]
    watched = {str(pid): (b - a) / total_s if total_s > 0 else math.nan
               for pid, a, b in zip(watch, marks[0][3], marks[-1][3], strict=True)}
    return {"mode": "saturate", "payload": len(payload), "connections": connections,
            "depth": depth, "windows": [[s, c] for s, c in spans],
            "commits_per_s": statistics.median(rates) if rates else 0.0,
            "commits_per_s_mean": total_c / total_s if total_s > 0 else 0.0,
            "commits_per_s_min": rates[0] if rates else 0.0,
            "commits_per_s_max": rates[-1] if rates else 0.0,
            "commits": total_c, "ok": ok, "errors": errors, "first_error": first_error,
            "drained": all(c.inflight == 0 for c in conns),
            "loadgen_cpu_cores": ((marks[-1][2] - marks[0][2]) / total_s
                                  if total_s > 0 else math.nan),
            "watched_cpu_cores": watched}


def _finite(obj: Any) -> Any:
    """NaN and infinities as null, so the line is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen",
                                description="RESP SET load generator; prints one JSON line.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("sequential", "saturate"), required=True)
    p.add_argument("--payload", type=int, default=16, metavar="BYTES", help="value size")
    p.add_argument("--seconds", type=float, default=2.0,
                   help="measured time (sequential: budget once 20 SETs are measured)")
    p.add_argument("--ops", type=int, default=2000, help="sequential: most measured SETs")
    p.add_argument("--warmup-ops", type=int, default=200, help="sequential: unmeasured SETs")
    p.add_argument("--warmup-seconds", type=float, default=1.0,
                   help="sequential: the warm-up ends after this long even if SETs remain")
    p.add_argument("--warmup", type=float, default=0.5, help="saturate: unmeasured seconds")
    p.add_argument("--window", type=float, default=0.25, help="saturate: window seconds")
    p.add_argument("--connections", type=int, default=4, help="saturate: connections")
    p.add_argument("--depth", type=int, default=128, help="saturate: SETs in flight on each")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds without any reply before giving up")
    p.add_argument("--watch-pids", default="", metavar="PID,...",
                   help="saturate: report these processes' CPU over the measured windows")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.payload < 1 or args.connections < 1 or args.depth < 1 or args.seconds <= 0 \
            or args.window <= 0 or args.ops < 1:
        print("python -m bench.loadgen: error: sizes, counts and times must be positive",
              file=sys.stderr)
        return 2
    payload = payload_of(args.payload)
    try:
        if args.mode == "sequential":
            result = sequential(args.host, args.port, payload, seconds=args.seconds,
                                ops=args.ops, warmup_ops=args.warmup_ops,
                                warmup_s=args.warmup_seconds, timeout=args.timeout)
        else:
            pids = [int(p) for p in args.watch_pids.split(",") if p.strip()]
            result = saturate(args.host, args.port, payload, connections=args.connections,
                              depth=args.depth, warmup=args.warmup, seconds=args.seconds,
                              window=args.window, timeout=args.timeout, watch_pids=pids)
    except (OSError, ValueError) as exc:   # TimeoutError and ConnectionError are OSErrors
        print(json.dumps({"mode": args.mode, "error": f"{type(exc).__name__}: {exc}"}),
              flush=True)
        return 1
    print(json.dumps(_finite(result), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
