"""``python -m bench --peer pysyncobj``: the same workloads on PySyncObj, and ratios.

PySyncObj (bakwc/PySyncObj) is the Python Raft library to beat.  Its nodes run in this process,
talking TCP on loopback ports chosen free, for 3 and 5 nodes.  The workloads are the suite's:
one sequential client (commit latency) and 1,000 proposals outstanding (throughput), 16 B
payloads, on the leader.  PySyncObj is measured in two configurations, because its default
(``appendEntriesUseBatch=True``) sends new commands only on its 50 ms tick, which is good for
throughput and bad for latency, while ``appendEntriesUseBatch=False`` is the reverse; each ratio
uses the peer's better configuration for that workload.

The engine is measured twice for 3 nodes: with its memory store (no fsync, like PySyncObj), and
over TCP with the native store and ``fsync=True`` (a fresh temporary data directory), which is
the configuration of the target "3 nodes over TCP, native store with fsync: throughput at least
5x PySyncObj's on the same workload in the same run" (``result['target']``).  PySyncObj keeps
its log in memory (no journal file; its file journal is an mmap that is never synced per
write), so the fsync comparison gives PySyncObj the easier job.

If PySyncObj is not importable, ``pip install pysyncobj`` is tried once with this interpreter;
when that fails too, the comparison is skipped and the report says why.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from bench import workloads as wl
from bench.scenarios import (
    TIMINGS,
    Case,
    Context,
    run_commit_latency,
    run_durability,
    run_throughput,
)
from engine.transport.tcp import free_loopback_ports

PAYLOAD = 16


def _import_pysyncobj(out: TextIO) -> tuple[Any, str | None]:
    try:
        import pysyncobj
        return pysyncobj, None
    except ImportError:
        pass
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "pysyncobj"]
    print(f"      pysyncobj not installed; trying: {' '.join(cmd)}", file=out, flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"pysyncobj could not be installed: {exc}"
    if proc.returncode != 0:
        return None, ("pysyncobj could not be installed: "
                      + (proc.stderr.strip().splitlines() or ["pip failed"])[-1])
    try:
        import pysyncobj
        return pysyncobj, None
    except ImportError as exc:
        return None, f"pysyncobj installed but not importable: {exc}"


def _version(module: Any) -> str:
    try:
        from pysyncobj.version import VERSION
        return str(VERSION)
    except ImportError:
        return str(getattr(module, "__version__", "(unknown version)"))



class _WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = record.getMessage()[:160]


def _measure_peer(pysyncobj: Any, n: int, batch: bool, timing: Any) -> dict[str, Any]:
    SyncObj, SyncObjConf, replicated = (pysyncobj.SyncObj, pysyncobj.SyncObjConf,
                                        pysyncobj.replicated)

    class Counter(SyncObj):  # type: ignore[misc, valid-type]
        def __init__(self, addr: str, partners: list[str], conf: Any) -> None:
            super().__init__(addr, partners, conf)
            self._count = 0

        @replicated
        def incr(self, data: bytes) -> int:
            self._count += 1
            return self._count

    addrs = [f"127.0.0.1:{p}" for p in free_loopback_ports(n)]
    conf = SyncObjConf(appendEntriesUseBatch=batch, dynamicMembershipChange=False)
    objs = [Counter(a, [b for b in addrs if b != a], conf) for a in addrs]
    try:
        deadline = time.monotonic() + 20
        leader = None
        while time.monotonic() < deadline and leader is None:
            ready = [o for o in objs if o._isLeader() and o.isReady()]
            leader = ready[0] if ready else None
            time.sleep(0.01)
        if leader is None:
            raise TimeoutError("PySyncObj elected no leader in 20 s")
        payload = wl.payload_of(PAYLOAD)

        def sync_call() -> None:
            leader.incr(payload, sync=True, timeout=10)

        latencies = _sequential(sync_call, timing)
        rate = _saturate(lambda cb: leader.incr(payload, callback=cb), timing)
    finally:
        for o in objs:
            o.destroy()
    summary = wl.latency_summary(latencies)
    return {"p50_us": summary.get("p50_us"), "p99_us": summary.get("p99_us"),
            "ops": summary.get("ops"), "commits_per_s": rate}


def _sequential(call: Callable[[], None], timing: Any) -> list[float]:
    for _ in range(min(timing.latency_warmup, 20)):
        call()
    values: list[float] = []
    deadline = time.perf_counter() + timing.latency_budget_s * 2
    for _ in range(timing.latency_ops):
        t0 = time.perf_counter()
        call()
        values.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline and len(values) >= 10:
            break
    return values


def _saturate(submit: Callable[[Callable[[Any, Any], None]], None], timing: Any) -> float:
    outstanding = timing.outstanding
    slots = threading.Semaphore(outstanding)
    lock = threading.Lock()
    done = [0]

    def callback(_result: Any, _error: Any) -> None:
        with lock:
            done[0] += 1
        slots.release()

    warm_end = time.perf_counter() + timing.tput_warmup_s
    end = warm_end + timing.tput_windows * timing.tput_window_s
    start_count = None
    t_start = 0.0
    while True:
        now = time.perf_counter()
        if start_count is None and now >= warm_end:
            with lock:
                start_count = done[0]
            t_start = now
        if now >= end:
            break
        if not slots.acquire(timeout=10):
            raise TimeoutError("PySyncObj completed nothing for 10 s")
        submit(callback)
    with lock:
        measured = done[0] - (start_count or 0)
    elapsed = time.perf_counter() - t_start
    for _ in range(outstanding):
        if not slots.acquire(timeout=10):
            break
    return measured / elapsed if elapsed > 0 else math.nan


def compare(peer: str, suite: Any, *, stream: TextIO | None = None) -> dict[str, Any]:
    """Run the peer comparison; returns the dict the report renders."""
    out = stream or sys.stdout
    if peer != "pysyncobj":
        return {"skipped": f"unknown peer {peer!r}"}
    print("[peer] PySyncObj: same latency/throughput workload, 3 and 5 nodes", file=out,
          flush=True)
    pysyncobj, reason = _import_pysyncobj(out)
    if pysyncobj is None:
        print(f"      skipped: {reason}", file=out, flush=True)
        return {"skipped": reason}
    timing = TIMINGS[suite.mode]
    ctx = Context(timing=timing, seed=suite.seed)
    transport = "tcp" if ctx.unavailable("tcp") is None else "memory"
    warnings = _WarningCounter()
    peer_logger = logging.getLogger("pysyncobj")
    peer_logger.addHandler(warnings)
    peer_logger.propagate = False
    rows: list[dict[str, Any]] = []
    target: dict[str, Any] = {"error": "not measured"}
    try:
        for n in (3, 5):
            params = {"n": n, "transport": transport, "payload": PAYLOAD}
            engine_row: dict[str, Any] = {"n": n, "system": "engine", "transport": transport,
                                          "log": "memory store, no fsync"}
            lat = run_commit_latency(Case("commit_latency", f"peer engine latency n={n}",
                                          params, run_commit_latency), ctx)
            tput = run_throughput(Case("throughput", f"peer engine throughput n={n}", params,
                                       run_throughput), ctx)
            engine_row.update(p50_us=lat.metrics.get("p50_us"), p99_us=lat.metrics.get("p99_us"),
                              commits_per_s=tput.metrics.get("commits_per_s"))
            engine_rows = [engine_row]
            if n == 3:
                print(f"      engine n={n} {transport} native store fsync=on ...", file=out,
                      flush=True)
                engine_rows.append(_engine_fsync_row(n, transport, ctx))
            peer_rows = []
            for batch in (True, False):
                label = f"pysyncobj appendEntriesUseBatch={batch}"
                print(f"      {label} n={n} ...", file=out, flush=True)
                try:
                    m = _measure_peer(pysyncobj, n, batch, timing)
                except Exception as exc:
                    m = {"error": f"{type(exc).__name__}: {exc}"}
                peer_rows.append({"n": n, "system": label, "transport": "tcp",
                                  "log": "in memory, no fsync", **m})
            ok = [r for r in peer_rows if "error" not in r]
            best = max(ok, key=lambda r: r["commits_per_s"], default=None)
            best_tput = best["commits_per_s"] if best else math.nan
            best_p50 = min((r["p50_us"] for r in ok if r["p50_us"]), default=math.nan)
            for row in engine_rows:
                if row.get("commits_per_s"):
                    row["throughput_ratio"] = row["commits_per_s"] / best_tput
                if row.get("p50_us"):
                    row["p50_ratio"] = best_p50 / row["p50_us"]
                if row.get("error"):
                    print(f"      n={n}: engine ({row['log']}) error: {row['error']}", file=out,
                          flush=True)
                    continue
                print(f"      n={n}: engine ({row['log']}) "
                      f"{row.get('commits_per_s') or math.nan:,.0f} commits/s, p50 "
                      f"{row.get('p50_us') or math.nan:,.0f} us; best PySyncObj "
                      f"{best_tput:,.0f} commits/s, p50 {best_p50:,.0f} us; throughput ratio "
                      f"{row.get('throughput_ratio', math.nan):.2f}x, latency ratio "
                      f"{row.get('p50_ratio', math.nan):.2f}x", file=out, flush=True)
            if n == 3:
                fsync_row = engine_rows[-1]
                if fsync_row.get("error") or best is None or transport != "tcp":
                    target = {"error": fsync_row.get("error") or (
                        "no PySyncObj configuration completed" if best is None
                        else f"the engine's TCP transport was unavailable "
                             f"({ctx.unavailable('tcp')})")}
                else:
                    target = {"ratio": fsync_row.get("throughput_ratio", math.nan),
                              "engine_commits_per_s": fsync_row["commits_per_s"],
                              "peer_commits_per_s": best_tput, "peer_system": best["system"]}
            rows += [*engine_rows, *peer_rows]
    finally:
        peer_logger.removeHandler(warnings)
        peer_logger.propagate = True
    note = (f"Engine over {transport} transport; PySyncObj {_version(pysyncobj)} over TCP "
            "loopback, both in this process. The engine rows with the memory store do not "
            "fsync, like PySyncObj (its log is in memory); the n=3 engine row with the native "
            "store fdatasyncs its log before entries count as stored (one fdatasync per "
            "appended batch, on every node; data in a temporary directory), the "
            "configuration of the 5x target. Ratios use the better PySyncObj "
            "configuration per workload (throughput: engine / peer; latency: peer p50 / "
            "engine p50; > 1 means the engine is ahead).")
    if transport != "tcp":
        note += f" The engine's TCP transport was unavailable ({ctx.unavailable('tcp')})."
    if warnings.count:
        note += (f" PySyncObj logged {warnings.count} warnings during the runs (first: "
                 f"{warnings.first!r}).")
    return {"rows": rows, "target": target, "note": note}


def _engine_fsync_row(n: int, transport: str, ctx: Context) -> dict[str, Any]:
    """The engine over ``transport`` with the native store and fsync on: latency and
    throughput on the same workload (the durability family's measurement)."""
    row: dict[str, Any] = {"n": n, "system": "engine", "transport": transport,
                           "log": "native store, fsync=on"}
    params = {"n": n, "transport": transport, "store": "native", "fsync": True,
              "payload": PAYLOAD}
    try:
        outcome = run_durability(Case("durability", f"peer engine fsync n={n}", params,
                                      run_durability), ctx)
    except Exception as exc:
        return row | {"error": f"{type(exc).__name__}: {exc}"}
    if outcome.skipped:
        return row | {"error": f"skipped: {outcome.skipped}"}
    m = outcome.metrics
    return row | {"p50_us": m["latency"].get("p50_us"), "p99_us": m["latency"].get("p99_us"),
                  "commits_per_s": m["throughput"]["commits_per_s"]}
