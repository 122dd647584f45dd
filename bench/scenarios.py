"""The scenarios of the suite: what each measures, in which configurations, for how long.

A *family* (``commit_latency``, ``throughput``, ``churn``, ...) is one figure of the report and one
pyperf file, ``bench-results/<family>.json``.  A *case* is one configuration of a family, e.g.
``commit_latency n=3 memory 16B``; it is one progress line and one or more pyperf benchmarks
(named after the case) in its family's file.

Measurement approach: clusters run in this process, so each case measures in-process with
``time.perf_counter`` and the results are turned into ``pyperf.Run``/``pyperf.Benchmark`` objects
by bench/report.py (pyperf's Runner, which spawns worker processes and owns argv, does not fit a
cluster with a dozen threads, crash/restart and fault plans).  The exception is the ``processes``
family (bench/processes.py): node processes (the engine's, or PySyncObj's), measured by a load
generator in a process of its own (bench/loadgen.py) over RESP, with the same conversion to
pyperf objects.  Values are always seconds, lower is
better, so ``python -m pyperf compare_to old.json new.json`` reads the right way round:

* latency benchmarks: one value per proposal (``loops=1``);
* throughput benchmarks: one run per measurement window, value = window seconds / commits in the
  window, ``loops`` = commits (pyperf's "time per loop"): commits/s is 1 / value.

Hygiene: every case starts a fresh cluster, waits for a leader whose no-op is committed, warms up
(unmeasured proposals or seconds), then measures.  Seeds are fixed: each case's cluster seed is
derived from ``--seed`` and the case label.  Ablations run both arms in the same process,
alternating A, B, A, B, so drift hits both and the ratio is a same-run ratio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import math
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench import workloads as wl
from engine import Config, CounterStateMachine, LocalCluster, LogStateMachine

# -- timing profiles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How long each kind of measurement runs.  ``quick`` must keep the suite near 3.5 minutes on
    2 cores; ``full`` is for numbers worth quoting; ``tiny`` is for the smoke test."""

    name: str
    latency_ops: int
    latency_warmup: int
    latency_budget_s: float
    tput_warmup_s: float
    tput_windows: int
    tput_window_s: float
    ab_rounds: int            # A,B repetitions per ablation
    ab_windows: int
    ab_window_s: float
    churn_s: float
    elections_s: float        # per arm of the pre-vote ablation
    tuning_crashes: int
    tuning_observe_s: float
    diverge_entries: int
    diverge_terms: int
    diverge_rounds: int
    outstanding: int = 1000
    catchup_entries: int = 20_000   # entries a cut-off follower misses (snapshot scenario)
    join_entries: int = 100_000     # entries the cluster holds when a new node joins
    transfers: int = 5              # leadership transfers timed
    probe_rtt: int = 2000           # loopback pings of the baseline probe
    probe_fsync: int = 200          # append+fdatasync samples of the baseline probe
    pipeline_depth: int = 256       # SETs in flight per load-generator connection (processes)
    loadgen_connections: int = 4    # pipelined connections of the saturating load generator
    redis_requests: tuple[int, int] = (20_000, 100_000)   # redis-benchmark -n for -P 1 / -P 16


TIMINGS = {
    "quick": Timing("quick", latency_ops=2000, latency_warmup=200, latency_budget_s=1.5,
                    tput_warmup_s=0.5, tput_windows=8, tput_window_s=0.25,
                    ab_rounds=2, ab_windows=3, ab_window_s=0.35,
                    churn_s=12.0, elections_s=12.0, tuning_crashes=3, tuning_observe_s=5.0,
                    diverge_entries=2000, diverge_terms=4, diverge_rounds=1,
                    catchup_entries=20_000, transfers=5, join_entries=100_000),
    "full": Timing("full", latency_ops=10000, latency_warmup=500, latency_budget_s=8.0,
                   tput_warmup_s=1.0, tput_windows=10, tput_window_s=1.0,
                   ab_rounds=3, ab_windows=4, ab_window_s=0.75,
                   churn_s=60.0, elections_s=60.0, tuning_crashes=8, tuning_observe_s=30.0,
                   diverge_entries=10000, diverge_terms=10, diverge_rounds=2,
                   catchup_entries=200_000, transfers=20, join_entries=1_000_000,
                   redis_requests=(100_000, 500_000)),
    "tiny": Timing("tiny", latency_ops=40, latency_warmup=10, latency_budget_s=0.3,
                   tput_warmup_s=0.1, tput_windows=2, tput_window_s=0.15,
                   ab_rounds=1, ab_windows=2, ab_window_s=0.15,
                   churn_s=3.0, elections_s=1.0, tuning_crashes=1, tuning_observe_s=1.0,
                   diverge_entries=100, diverge_terms=2, diverge_rounds=1, outstanding=200,
                   catchup_entries=600, transfers=2, probe_rtt=200, probe_fsync=20,
                   join_entries=2000,
                   pipeline_depth=32, loadgen_connections=2, redis_requests=(2000, 10_000)),
}


# -- results ------------------------------------------------------------------------------------


@dataclass
class Series:
    """One pyperf benchmark: ``runs`` is a list of (loops, values-in-seconds)."""

    name: str
    runs: list[tuple[int, list[float]]]
    description: str = ""


@dataclass
class Outcome:
    metrics: dict[str, Any] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    timing: Timing
    seed: int
    say: Callable[[str], None] = lambda _msg: None
    engine_root: str | None = None    # source tree the processes family runs the engine from
    _probes: dict[str, str | None] = field(default_factory=dict)

    def rng(self, label: str) -> random.Random:
        return random.Random(derive_seed(self.seed, label))

    def unavailable(self, what: str) -> str | None:
        """None when ``what`` ('tcp' or 'native') works here, else the reason it does not."""
        if what not in self._probes:
            self._probes[what] = _probe(what, self.seed)
        return self._probes[what]


@dataclass(frozen=True)
class Case:
    family: str
    label: str
    params: dict[str, Any]
    run: Callable[[Case, Context], Outcome]

    def with_params(self, **overrides: Any) -> Case:
        params = {**self.params, **{k: v for k, v in overrides.items() if v is not None}}
        return dataclasses.replace(self, params=params, label=_label(self.family, params))


def derive_seed(seed: int, label: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(label.encode())) % (2**32)


# -- helpers ------------------------------------------------------------------------------------

BASE_CONFIG = Config()

AGGRESSIVE = {"heartbeat_interval": 0.02, "election_timeout_min": 0.05,
              "election_timeout_max": 0.10}
"""Tight timeouts (2.5 heartbeats per minimum election timeout) that make drops matter."""


def fault_profile(drop: float) -> dict[str, Any]:
    """The faults of one 'drop rate' level: the drop rate with a matching random delay (up to
    50 ms per unit of drop rate: 5% -> 0-2.5 ms) and reordering."""
    if drop <= 0:
        return {"drop": 0.0, "delay": (0.0, 0.0), "reorder": False}
    return {"drop": drop, "delay": (0.0, round(drop * 0.05, 6)), "reorder": True}


def _size(payload: int) -> str:
    return f"{payload // 1024}KiB" if payload >= 1024 and payload % 1024 == 0 else f"{payload}B"


def _label(family: str, p: dict[str, Any]) -> str:
    parts = [family]
    if "n" in p:
        parts.append(f"n={p['n']}")
    if "system" in p:
        parts.append(p["system"])
    if "transport" in p:
        parts.append(p["transport"])
    if "store" in p:
        parts.append(p["store"] + (f" fsync={'on' if p['fsync'] else 'off'}"
                                   if p["store"] != "memory" else ""))
    if "payload" in p:
        parts.append(_size(p["payload"]))
    if p.get("drop"):
        parts.append(f"drop={p['drop']:.0%}")
    elif family == "faults":
        parts.append("drop=0%")
    if "timing" in p:
        parts.append(p["timing"])
    if "point" in p:
        hb, lo, hi = p["point"]
        parts.append(f"hb={hb * 1e3:g}ms election={lo * 1e3:g}-{hi * 1e3:g}ms")
    return " ".join(parts)


def _probe(what: str, seed: int) -> str | None:
    if what == "tcp":
        try:
            with LocalCluster(3, transport="tcp", seed=seed,
                              state_machine=CounterStateMachine) as c:
                wl.ready_leader(c, timeout=10.0)
            return None
        except Exception as exc:
            return f"tcp transport not usable: {type(exc).__name__}: {exc}"
    if what == "native":
        if importlib.util.find_spec("engine.storage.open") is None:
            return "native store not available (engine/storage/open.py missing)"
        if not native_store_impl().startswith("NativeLogStore"):
            return f"native store not built: {native_store_impl()}"
        tmp = tempfile.mkdtemp(prefix="raft-bench-probe-")
        try:
            with LocalCluster(1, data_dir=tmp, seed=seed, config=Config(fsync=False),
                              state_machine=CounterStateMachine) as c:
                wl.ready_leader(c, timeout=10.0)
            return None
        except Exception as exc:
            return f"native store not usable: {type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise ValueError(what)


def native_store_impl() -> str:
    """Which log store ``LocalCluster(data_dir=...)`` opens here (engine/storage/open.py picks
    the C store when its compiled module imports, else a pure-Python file store)."""
    if os.environ.get("RAFT_ENGINE_NO_NATIVE", "") not in ("", "0"):
        return "FileLogStore (pure Python; RAFT_ENGINE_NO_NATIVE is set)"
    try:
        importlib.import_module("engine.storage.native")
    except ImportError as exc:
        return f"FileLogStore (pure Python; C module unavailable: {exc})"
    return "NativeLogStore (C via cffi)"


def filesystem_of(path: str) -> str:
    """'ext4 on /' style description of the filesystem holding ``path`` (from /proc/mounts)."""
    path = os.path.realpath(path)
    best = ("", "unknown")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(
                        parts[1].rstrip("/") + "/")) and len(parts[1]) >= len(best[0]):
                    best = (parts[1], parts[2])
    except OSError:
        pass
    return f"{best[1]} on {best[0] or '?'}"


@contextlib.contextmanager
def running_cluster(ctx: Context, label: str, n: int, *, config: Config = BASE_CONFIG,
                    transport: str = "memory", store: str = "memory",
                    state_machine: Callable[[], Any] = CounterStateMachine
                    ) -> Iterator[LocalCluster]:
    tmp = tempfile.mkdtemp(prefix="raft-bench-") if store == "native" else None
    cluster = LocalCluster(n, state_machine=state_machine, config=config, transport=transport,
                           data_dir=tmp, seed=derive_seed(ctx.seed, label))
    try:
        cluster.start()
        wl.ready_leader(cluster, timeout=15.0)
        yield cluster
    finally:
        cluster.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _apply_drop(cluster: LocalCluster, params: dict[str, Any]) -> None:
    drop = params.get("drop", 0.0)
    if drop:
        cluster.set_faults(**fault_profile(drop))


def _latency(ctx: Context, cluster: LocalCluster, payload: int) -> tuple[list[float], int]:
    t = ctx.timing
    return wl.measure_latency(cluster, wl.payload_of(payload), ops=t.latency_ops,
                              warmup_ops=t.latency_warmup, budget_s=t.latency_budget_s)


def _throughput(ctx: Context, cluster: LocalCluster, payload: int, *,
                windows: int | None = None, window_s: float | None = None,
                warmup_s: float | None = None) -> wl.ThroughputResult:
    t = ctx.timing
    return wl.measure_throughput(
        cluster, wl.payload_of(payload), outstanding=t.outstanding,
        warmup_s=t.tput_warmup_s if warmup_s is None else warmup_s,
        windows=t.tput_windows if windows is None else windows,
        window_s=t.tput_window_s if window_s is None else window_s)


def _latency_series(name: str, values: list[float]) -> Series:
    return Series(name, [(1, [v for v in values if v > 0])],
                  "seconds from propose() to the future resolving, one client")


def _tput_series(name: str, result: wl.ThroughputResult) -> Series:
    return Series(name, [(c, [s / c]) for s, c in result.windows if c > 0],
                  "seconds per commit (1/throughput) per window, "
                  f"{result.outstanding} proposals outstanding")


def _needs(ctx: Context, params: dict[str, Any]) -> str | None:
    if params.get("transport") == "tcp":
        reason = ctx.unavailable("tcp")
        if reason:
            return reason
    if params.get("store") == "native":
        reason = ctx.unavailable("native")
        if reason:
            return reason
    return None


# -- scenario functions -------------------------------------------------------------------------


def run_commit_latency(case: Case, ctx: Context) -> Outcome:
    p = case.params
    if reason := _needs(ctx, p):
        return Outcome(skipped=reason)
    with running_cluster(ctx, case.label, p["n"], transport=p["transport"]) as c:
        _apply_drop(c, p)
        values, retries = _latency(ctx, c, p["payload"])
        stages = _stage_breakdown(c)
    metrics = wl.latency_summary(values) | {"retries": retries, "stages_us": stages}
    return Outcome(metrics, [_latency_series(case.label, values)])


def _stage_breakdown(cluster: LocalCluster) -> dict[str, float] | None:
    """Mean microseconds per commit stage on the current leader, from its sampled
    ``raft_commit_stage_seconds`` histograms (engine.runtime.telemetry); None without samples."""
    from engine.runtime.telemetry import STAGES
    leaders = [n for n in cluster.nodes if n.status().role == "leader"]
    if not leaders:
        return None
    stages = leaders[0].telemetry.stages
    snaps = {name: stages[name].snapshot() for name in STAGES}
    if not snaps[STAGES[-1]][2]:
        return None
    return {name: snap[1] / snap[2] * 1e6 if snap[2] else 0.0 for name, snap in snaps.items()}


def run_throughput(case: Case, ctx: Context) -> Outcome:
    p = case.params
    if reason := _needs(ctx, p):
        return Outcome(skipped=reason)
    with running_cluster(ctx, case.label, p["n"], transport=p["transport"]) as c:
        _apply_drop(c, p)
        result = _throughput(ctx, c, p["payload"])
        stages = _stage_breakdown(c)
    return Outcome(result.summary() | {"stages_us": stages}, [_tput_series(case.label, result)])


def run_durability(case: Case, ctx: Context) -> Outcome:
    """Memory store vs the native store (LocalCluster(data_dir=...)) with fsync off and on.  The
    data directory is a fresh temporary directory: set TMPDIR to put it on the disk to test.

    The TCP case (``transport='tcp'``) also probes the machine's baseline once the cluster has
    stopped: loopback TCP round trip and append+fdatasync on the data directory's filesystem
    (bench/processes.py), for the target "p50 <= 2 x (RTT + fdatasync)"."""
    from bench.processes import probe_baseline
    p = case.params
    if reason := _needs(ctx, p):
        return Outcome(skipped=reason)
    config = dataclasses.replace(BASE_CONFIG, fsync=p["fsync"])
    with running_cluster(ctx, case.label, p["n"], config=config, store=p["store"],
                         transport=p.get("transport", "memory")) as c:
        _apply_drop(c, p)
        values, retries = _latency(ctx, c, p["payload"])
        result = _throughput(ctx, c, p["payload"])
    metrics = {"latency": wl.latency_summary(values) | {"retries": retries},
               "throughput": result.summary(),
               "store_impl": native_store_impl() if p["store"] == "native" else "MemoryLogStore"}
    if p["store"] == "native":
        metrics["store_impl"] += f", data_dir on {filesystem_of(tempfile.gettempdir())}"
    if p.get("transport") == "tcp":
        metrics["baseline"] = probe_baseline(tempfile.gettempdir(),
                                             rtt_samples=ctx.timing.probe_rtt,
                                             fsync_samples=ctx.timing.probe_fsync)
    return Outcome(metrics, [_latency_series(case.label + " latency", values),
                             _tput_series(case.label + " throughput", result)])


def run_processes(case: Case, ctx: Context) -> Outcome:
    """``n`` node processes on loopback (bench/processes.py): the engine's ``python -m
    engine.cli node`` (native store, fsync on or off) or, with ``system='pysyncobj'``,
    PySyncObj's nodes of bench/pysyncobj_node.py.  The load generator runs in a process of its
    own (``python -m bench.loadgen``) against the leader's client port: one sequential client
    (latency), then ``loadgen_connections`` x ``pipeline_depth`` pipelined SETs (commits/s over
    the measured windows after a warm-up).  With ``redis_benchmark`` in the params,
    redis-benchmark -P 1 and -P 16 run against the same leader.  The baseline probes (loopback
    RTT, fdatasync) run once the processes have stopped."""
    from bench import processes as pr
    t = ctx.timing
    p = case.params
    system = p.get("system", "engine")
    if system == "pysyncobj" and (reason := pr.pysyncobj_unavailable()):
        return Outcome(skipped=reason)
    root = ctx.engine_root or pr.BENCH_ROOT
    depth = p.get("depth", t.pipeline_depth)
    connections = p.get("connections", t.loadgen_connections)
    fsync = bool(p.get("fsync", False))
    measured_s = t.tput_windows * t.tput_window_s
    t0 = time.perf_counter()
    with pr.node_processes(p["n"], fsync=fsync, system=system, engine_root=root) as cluster:
        startup_s = time.perf_counter() - t0
        assert cluster.leader is not None
        ctx.say(f"{system}: leader {cluster.leader_id} after {startup_s:.1f}s; sequential SETs")
        seq = pr.run_loadgen(cluster.leader, "sequential", p["payload"],
                             seconds=t.latency_budget_s, ops=t.latency_ops,
                             warmup_ops=t.latency_warmup,
                             warmup_seconds=min(1.0, 2 * t.latency_budget_s))
        stages = cluster.stage_breakdown() if system == "engine" else None
        ctx.say(f"{system}: {connections} x {depth} pipelined SETs")
        sat = pr.run_loadgen(cluster.leader, "saturate", p["payload"], seconds=measured_s,
                             warmup=t.tput_warmup_s, window=t.tput_window_s,
                             connections=connections, depth=depth, watch_pids=cluster.pids)
        redis: dict[str, Any] | None = None
        if p.get("redis_benchmark"):
            redis = {}
            for pipeline, requests in zip((1, 16), t.redis_requests, strict=True):
                ctx.say(f"redis-benchmark -P {pipeline} -c 50 -n {requests}")
                redis[f"P{pipeline}"] = pr.redis_benchmark(cluster.leader, pipeline=pipeline,
                                                           requests=requests)
        cluster.check_alive()
        leader_id, leader_pid = cluster.leader_id, cluster.leader_pid
    values = [v for v in seq["latencies_s"] if v > 0]
    watched = {int(k): v for k, v in (sat.get("watched_cpu_cores") or {}).items()
               if v is not None}
    windows = [(s, int(c)) for s, c in sat["windows"]]
    result = wl.ThroughputResult(windows, sat["errors"], connections * depth)
    throughput = result.summary() | {
        "commits_per_s_median_window": result.summary()["commits_per_s"],
        # One figure over the whole measured span after the warm-up (PySyncObj commits in
        # ~100 ms rounds, so a short window's count says little on its own).
        "commits_per_s": sat["commits_per_s_mean"],
        "measured_s": sum(s for s, _ in windows)}
    metrics: dict[str, Any] = {
        "system": system,
        "latency": wl.latency_summary(values) | {"errors": seq["errors"],
                                                 "first_error": seq["first_error"]},
        "throughput": throughput,
        "connections": connections,
        "depth": depth,
        "first_error": sat["first_error"],
        "startup_s": startup_s,
        "node_cpu_cores": sum(watched.values()) if watched else math.nan,
        "leader_cpu_cores": watched.get(leader_pid or -1, math.nan),
        "loadgen_cpu_cores": sat.get("loadgen_cpu_cores"),
        "leader": leader_id,
        "baseline": pr.probe_baseline(tempfile.gettempdir(), rtt_samples=t.probe_rtt,
                                      fsync_samples=t.probe_fsync),
    }
    if system == "engine":
        metrics["store_impl"] = (f"{pr.store_impl_of(root)}, data_dir on "
                                 f"{filesystem_of(tempfile.gettempdir())}")
        if root != pr.BENCH_ROOT:
            metrics["engine_root"] = root
    else:
        metrics["store_impl"] = (f"PySyncObj {pr.pysyncobj_version() or '?'}, default "
                                 "SyncObjConf (log in memory, no fsync)")
    if redis is not None:
        metrics["redis_benchmark"] = redis
    if stages:
        metrics["stages_us"] = stages  # the sequential phase, on the leader (sampled)
    lat = Series(case.label + " latency", [(1, values)],
                 "seconds from sending SET to reading its reply, one sequential RESP client "
                 "(bench.loadgen) on the leader process's client port")
    tput = Series(case.label + " throughput",
                  [(c, [s / c]) for s, c in windows if c > 0],
                  f"seconds per SET (1/throughput) per window, {connections} connections x "
                  f"{depth} SETs pipelined to the leader process (bench.loadgen)")
    return Outcome(metrics, [lat, tput] if values else [tput])


def run_faults(case: Case, ctx: Context) -> Outcome:
    p = case.params
    with running_cluster(ctx, case.label, p["n"]) as c:
        _apply_drop(c, p)
        term0 = wl.max_term(c)
        values, retries = _latency(ctx, c, p["payload"])
        result = _throughput(ctx, c, p["payload"])
        term_increases = wl.max_term(c) - term0
    metrics = {"faults": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in fault_profile(p.get("drop", 0.0)).items()},
               "latency": wl.latency_summary(values) | {"retries": retries},
               "throughput": result.summary(), "term_increases": term_increases}
    return Outcome(metrics, [_latency_series(case.label + " latency", values),
                             _tput_series(case.label + " throughput", result)])


def run_churn(case: Case, ctx: Context) -> Outcome:
    p = case.params
    with running_cluster(ctx, case.label, p["n"], state_machine=LogStateMachine) as c:
        _apply_drop(c, p)
        r = wl.run_churn(c, seconds=ctx.timing.churn_s, rng=ctx.rng(case.label),
                         payload_size=p["payload"])
    to_leader = sorted(r.to_leader_s)
    metrics = {
        "seconds": r.seconds, "crashes": r.crashes, "election_timeouts": r.timeouts,
        "time_to_leader_ms": {"p50": wl.percentile(to_leader, 50) * 1e3,
                              "max": to_leader[-1] * 1e3 if to_leader else math.nan,
                              "values": [round(v * 1e3, 2) for v in r.to_leader_s]},
        "acked": r.acked, "lost": r.lost, "lost_examples": r.lost_examples,
        "latency": wl.latency_summary(r.latencies), "retries": r.retries,
        "leader_availability": r.leader_availability,
        "commit_availability": r.commit_availability,
    }
    series = [_latency_series(case.label + " latency", r.latencies)]
    if r.to_leader_s:
        series.append(Series(case.label + " time_to_leader", [(1, r.to_leader_s)],
                             "seconds from crashing the leader to a new leader"))
    return Outcome(metrics, series)


@contextlib.contextmanager
def _switch_interval(seconds: float | None) -> Iterator[None]:
    old = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _ab_throughput(case: Case, ctx: Context, arms: list[tuple[str, dict[str, Any]]], *,
                   situation: str = "", faults: dict[str, Any] | None = None,
                   common: dict[str, Any] | None = None,
                   state_machine: Callable[[], Any] = CounterStateMachine) -> Outcome:
    """Same-run A/B: each arm (name, {config overrides, 'switch': interval}) is measured
    ``ab_rounds`` times, alternating arms, each time on a fresh cluster.  ``common`` config
    overrides and ``faults`` apply to both arms.  The metrics hold one entry in ``pairs``."""
    t = ctx.timing
    p = case.params
    windows: dict[str, list[tuple[float, int]]] = {name: [] for name, _ in arms}
    errors = dict.fromkeys(windows, 0)
    prefix = f"{case.label} {situation}".strip()
    for _round in range(t.ab_rounds):
        for name, spec in arms:
            spec = {**(common or {}), **spec}
            switch = spec.pop("switch", None)
            config = dataclasses.replace(BASE_CONFIG, **spec)
            with _switch_interval(switch), \
                    running_cluster(ctx, f"{prefix} {name} {_round}", p["n"],
                                    config=config, state_machine=state_machine) as c:
                _apply_drop(c, p)
                if faults:
                    c.set_faults(**faults)
                r = _throughput(ctx, c, p["payload"], windows=t.ab_windows,
                                window_s=t.ab_window_s, warmup_s=min(0.3, t.tput_warmup_s))
            windows[name] += r.windows
            errors[name] += r.errors
    pair: dict[str, Any] = {"situation": situation or "defaults", "arms": {}}
    series = []
    for name, _ in arms:
        r = wl.ThroughputResult(windows[name], errors[name], t.outstanding)
        pair["arms"][name] = r.summary()
        series.append(_tput_series(f"{prefix} {name}", r))
    (a, _), (b, _) = arms[0], arms[1]
    ra = pair["arms"][a]["commits_per_s"]
    rb = pair["arms"][b]["commits_per_s"]
    pair["ratio"] = rb / ra if ra else math.nan
    pair["ratio_of"] = f"{b} / {a}"
    return Outcome({"pairs": [pair]}, series)


def _combine(*outcomes: Outcome) -> Outcome:
    return Outcome({"pairs": [p for o in outcomes for p in o.metrics["pairs"]]},
                   [s for o in outcomes for s in o.series])


def run_ablation_batching(case: Case, ctx: Context) -> Outcome:
    return _ab_throughput(case, ctx, [
        ("batch=1", {"max_batch_entries": 1}),
        (f"batch={BASE_CONFIG.max_batch_entries}", {})])


LINK_DELAY = (0.001, 0.001)
"""One-way delay of every message in the pipelining ablation's second situation."""


def run_ablation_inflight(case: Case, ctx: Context) -> Outcome:
    """Pipelining off vs on, twice: with the defaults (big batches absorb most of a round trip),
    and with batching off and a 1 ms link delay, where only pipelining fills the pipe."""
    arms = [("inflight=1", {"max_inflight": 1}),
            (f"inflight={BASE_CONFIG.max_inflight}", {})]
    return _combine(
        _ab_throughput(case, ctx, arms),
        _ab_throughput(case, ctx, arms, situation="batch=1, 1 ms link delay",
                       common={"max_batch_entries": 1},
                       faults={"delay": LINK_DELAY}))


def run_ablation_switch_interval(case: Case, ctx: Context) -> Outcome:
    default = sys.getswitchinterval()
    return _ab_throughput(case, ctx, [
        (f"switch={default * 1e3:g}ms", {"switch": default}),
        ("switch=0.5ms", {"switch": 0.0005})])


def run_ablation_storage_thread(case: Case, ctx: Context) -> Outcome:
    """Durable writes on a ``raft-<id>-storage`` thread (group commit) vs inline on the loop
    thread (``Config.storage_thread``), over TCP with the native store and fsync: sequential
    commit latency and throughput, the arms alternating on fresh clusters in one run."""
    t = ctx.timing
    p = case.params
    if reason := _needs(ctx, {"transport": "tcp", "store": "native"}):
        return Outcome(skipped=reason)
    arms = [("storage thread", True), ("inline", False)]
    latencies: dict[str, list[float]] = {name: [] for name, _ in arms}
    windows: dict[str, list[tuple[float, int]]] = {name: [] for name, _ in arms}
    errors = dict.fromkeys(windows, 0)
    for _round in range(t.ab_rounds):
        for name, on in arms:
            config = dataclasses.replace(BASE_CONFIG, storage_thread=on)
            with running_cluster(ctx, f"{case.label} {name} {_round}", p["n"], config=config,
                                 store="native", transport="tcp") as c:
                values, _ = _latency(ctx, c, p["payload"])
                r = _throughput(ctx, c, p["payload"], windows=t.ab_windows,
                                window_s=t.ab_window_s, warmup_s=min(0.3, t.tput_warmup_s))
            latencies[name] += values
            windows[name] += r.windows
            errors[name] += r.errors
    pair: dict[str, Any] = {"situation": "tcp + native store + fsync", "arms": {}}
    series = []
    for name, _ in arms:
        r = wl.ThroughputResult(windows[name], errors[name], t.outstanding)
        pair["arms"][name] = r.summary() | {"latency": wl.latency_summary(latencies[name])}
        series += [_tput_series(f"{case.label} {name} throughput", r),
                   _latency_series(f"{case.label} {name} latency", latencies[name])]
    a, b = (pair["arms"][name] for name, _ in arms)
    pair["ratio"] = b["commits_per_s"] / a["commits_per_s"] if a["commits_per_s"] else math.nan
    pair["ratio_of"] = "inline / storage thread"
    pair["p50_ratio"] = (a["latency"].get("p50_us", math.nan)
                         / b["latency"].get("p50_us", math.nan))
    return Outcome({"pairs": [pair]}, series)


def run_ablation_fast_backup(case: Case, ctx: Context) -> Outcome:
    t = ctx.timing
    p = case.params
    arms = [("fast_backup=off", False), ("fast_backup=on", True)]
    runs: dict[str, list[wl.Convergence]] = {name: [] for name, _ in arms}
    for _round in range(t.diverge_rounds):
        for name, on in arms:
            config = dataclasses.replace(BASE_CONFIG, fast_backup=on, check_quorum=False)
            with running_cluster(ctx, f"{case.label} {name} {_round}", p["n"],
                                 config=config) as c:
                ctx.say(f"{name}: building a divergent log of {t.diverge_entries} entries")
                conv = wl.diverge_and_converge(c, entries=t.diverge_entries,
                                               terms=t.diverge_terms, progress=ctx.say)
            runs[name].append(conv)
            ctx.say(f"{name}: converged={conv.converged} in {conv.seconds:.3f}s, "
                    f"{conv.messages} messages")
    metrics: dict[str, Any] = {"entries": t.diverge_entries, "arms": {}}
    series = []
    for name, _ in arms:
        convs = runs[name]
        metrics["arms"][name] = {
            "seconds": sum(c.seconds for c in convs) / len(convs),
            "messages": sum(c.messages for c in convs) / len(convs),
            "converged": all(c.converged for c in convs),
            "leader_terms": convs[0].leader_terms,
        }
        series.append(Series(f"{case.label} {name}", [(1, [c.seconds for c in convs])],
                             "seconds for a follower with a divergent log to converge"))
    off, on = metrics["arms"]["fast_backup=off"], metrics["arms"]["fast_backup=on"]
    metrics["time_ratio"] = off["seconds"] / on["seconds"] if on["seconds"] else math.nan
    metrics["message_ratio"] = off["messages"] / on["messages"] if on["messages"] else math.nan
    metrics["ratio_of"] = "off / on (seconds, messages)"
    return Outcome(metrics, series)


def _observe(case: Case, ctx: Context, label: str, config: Config, faults: dict[str, Any],
             seconds: float, flaky: tuple[float, float] | None = None
             ) -> wl.ElectionObservation:
    with running_cluster(ctx, label, case.params["n"], config=config) as c:
        c.set_faults(**faults)
        return wl.observe_elections(c, seconds, flaky=flaky, rng=ctx.rng(label))


def _observation_metrics(o: wl.ElectionObservation) -> dict[str, Any]:
    return {"seconds": o.seconds, "term_increases": o.term_increases,
            "elections_per_min": o.per_minute(o.term_increases),
            "leader_changes": o.leader_changes,
            "leader_changes_per_min": o.per_minute(o.leader_changes),
            "leaderless_share": o.leaderless_share, "failed_ops": o.failed_ops,
            "latency": wl.latency_summary(o.latencies)}


def _merge(parts: list[wl.ElectionObservation]) -> wl.ElectionObservation:
    seconds = sum(o.seconds for o in parts)
    return wl.ElectionObservation(
        seconds=seconds, term_increases=sum(o.term_increases for o in parts),
        leader_changes=sum(o.leader_changes for o in parts),
        leaderless_share=sum(o.leaderless_share * o.seconds for o in parts) / max(1e-9, seconds),
        latencies=[v for o in parts for v in o.latencies],
        failed_ops=sum(o.failed_ops for o in parts))


FLAKY = (1.5, 0.5)
"""A follower is isolated for 0.5 s every 1.5 s (a different one each time, seeded)."""


def run_ablation_prevote(case: Case, ctx: Context) -> Outcome:
    """Two situations, each with both arms alternating (off, on, off, on): 5% drop (with 0-2.5 ms
    delay and reordering) alone, and the same drop plus a flaky follower (:data:`FLAKY`).  A
    light client proposes throughout.  Spurious elections = term increases."""
    p = case.params
    timing = AGGRESSIVE if p["timing"] == "aggressive" else {}
    faults = fault_profile(p.get("drop", 0.05))
    arms = [("pre_vote+check_quorum=off", False), ("pre_vote+check_quorum=on", True)]
    situations = [("drop", None, 0.3), ("drop+flaky follower", FLAKY, 0.7)]
    metrics: dict[str, Any] = {"drop": faults["drop"], "delay": list(faults["delay"]),
                               "timing": timing or "default", "flaky": list(FLAKY),
                               "situations": {}}
    series = []
    for situation, flaky, share in situations:
        obs: dict[str, list[wl.ElectionObservation]] = {name: [] for name, _ in arms}
        for half in range(2):
            for name, on in arms:
                config = dataclasses.replace(BASE_CONFIG, pre_vote=on, check_quorum=on,
                                             **timing)
                obs[name].append(_observe(case, ctx, f"{case.label} {situation} {name} {half}",
                                          config, faults, ctx.timing.elections_s * share / 2,
                                          flaky))
        arm_metrics = {name: _observation_metrics(_merge(obs[name])) for name, _ in arms}
        off = arm_metrics[arms[0][0]]["elections_per_min"]
        on = arm_metrics[arms[1][0]]["elections_per_min"]
        metrics["situations"][situation] = {
            "arms": arm_metrics,
            "ratio": off / on if on else (math.inf if off else math.nan),
        }
        for name, _ in arms:
            merged = _merge(obs[name])
            if merged.latencies:
                series.append(_latency_series(f"{case.label} {situation} {name} latency",
                                              merged.latencies))
    metrics["ratio_of"] = "off / on (spurious elections per minute)"
    return Outcome(metrics, series)


def run_timeout_tuning(case: Case, ctx: Context) -> Outcome:
    p = case.params
    hb, lo, hi = p["point"]
    config = dataclasses.replace(BASE_CONFIG, heartbeat_interval=hb, election_timeout_min=lo,
                                 election_timeout_max=hi)
    recoveries: list[wl.Recovery] = []
    with running_cluster(ctx, case.label + " crash", p["n"], config=config) as c:
        rng = ctx.rng(case.label)
        for _ in range(ctx.timing.tuning_crashes):
            recoveries.append(wl.crash_and_recover(c))
            # let the restarted node settle into its follower role
            c.wait_for(lambda: False, rng.uniform(0.05, 0.15))
    faults = {**fault_profile(p.get("drop", 0.05)), "delay": TUNING_DELAY}
    obs = _observe(case, ctx, case.label + " drop", config, faults, ctx.timing.tuning_observe_s)
    to_leader = sorted(r.to_leader_s for r in recoveries)
    to_commit = sorted(r.to_commit_s for r in recoveries if not math.isnan(r.to_commit_s))
    metrics = {
        "heartbeat_ms": hb * 1e3, "election_ms": [lo * 1e3, hi * 1e3],
        "drop": faults["drop"], "delay_ms": [d * 1e3 for d in faults["delay"]],
        "recover_to_leader_ms": {"p50": wl.percentile(to_leader, 50) * 1e3,
                                 "max": to_leader[-1] * 1e3 if to_leader else math.nan},
        "recover_to_commit_ms": {"p50": wl.percentile(to_commit, 50) * 1e3,
                                 "max": to_commit[-1] * 1e3 if to_commit else math.nan},
        "crashes": len(recoveries),
        "under_drop": _observation_metrics(obs),
    }
    series = [Series(case.label + " recovery", [(1, to_commit)] if to_commit else [],
                     "seconds from crashing the leader to the first commit by the next one")]
    return Outcome(metrics, [s for s in series if s.runs])


def run_figure16(case: Case, ctx: Context) -> Outcome:
    """The Raft paper's Figure 16 (bench/figure16.py): time without a leader after the leader
    crashes, per election timeout range, PreVote off and on."""
    from bench import figure16
    ranges, trials = figure16.SUITE[ctx.timing.name]
    delay = figure16.DEFAULT_DELAY_MS / 1e3
    curves = figure16.run(ranges, trials=trials, delay=delay, seed=ctx.seed, say=ctx.say)
    series = [Series(f"{case.label} {c.range} pre_vote={'on' if c.pre_vote else 'off'}",
                     [(1, c.downtimes)], "seconds from the leader's crash to a new leader")
              for c in curves if c.downtimes]
    return Outcome(figure16.suite_metrics(curves, delay), series)


def _log_then_snapshot(ctx: Context, case: Case, what: str, every: int,
                       trailing: int) -> Iterator[tuple[str, LocalCluster]]:
    """Two running clusters of the 10,000-key table machine, one after the other: ``("log",
    cluster)`` with snapshots off, then ``("snapshot", cluster)`` with automatic snapshots every
    ``every`` entries (at least 100) keeping ``trailing`` entries behind each."""
    for name, spec in (("log", {"snapshot_threshold": 0}),
                       ("snapshot", {"snapshot_threshold": max(100, every),
                                     "snapshot_trailing_entries": trailing})):
        config = dataclasses.replace(BASE_CONFIG, **spec)
        with running_cluster(ctx, f"{case.label} {what} {name}", case.params["n"],
                             config=config, state_machine=wl.TableStateMachine) as c:
            yield name, c


def run_snapshots(case: Case, ctx: Context) -> Outcome:
    """Snapshots: commit throughput with frequent snapshots of a 10,000-key state machine vs
    none (same-run ratio); a follower that missed ``catchup_entries`` entries catching up from
    the log vs by InstallSnapshot (time, messages, bytes); and leadership transfer time."""
    t = ctx.timing
    p = case.params
    ratio = _ab_throughput(case, ctx, [
        ("snapshots off", {"snapshot_threshold": 0}),
        ("snapshot every 5,000", {"snapshot_threshold": 5000,
                                  "snapshot_trailing_entries": 500})],
        state_machine=wl.TableStateMachine)
    catchup: dict[str, Any] = {}
    series = list(ratio.series)
    for name, c in _log_then_snapshot(ctx, case, "catch-up", t.catchup_entries // 4, 100):
        result = wl.follower_catch_up(c, t.catchup_entries, progress=ctx.say)
        catchup[name] = result
        series.append(Series(f"{case.label} catch-up via {name}", [(1, [result["seconds"]])],
                             f"seconds for a follower {t.catchup_entries} entries behind"))
    with running_cluster(ctx, f"{case.label} transfer", p["n"]) as c:
        times = wl.time_transfers(c, t.transfers)
    series.append(Series(f"{case.label} leadership transfer", [(1, times)],
                         "seconds from transfer_leadership() to the target leading"))
    pair = ratio.metrics["pairs"][0]
    metrics = {"throughput": pair, "catchup_entries": t.catchup_entries, "catchup": catchup,
               "transfer_ms": wl.percentiles_ms(times)}
    return Outcome(metrics, series)


def run_membership(case: Case, ctx: Context) -> Outcome:
    """A new, empty node joins a 3-node cluster holding ``join_entries`` entries (1,000,000 in
    --full): added as a learner, caught up, promoted to voter by joint consensus.  Once with
    the whole log to copy (snapshots off) and once with automatic snapshots every quarter of
    the preload (the log compacted behind the previous snapshot, as always).  Time and bytes
    received (in wire encoding) for each."""
    t = ctx.timing
    p = case.params
    results: dict[str, Any] = {}
    series: list[Series] = []
    for name, c in _log_then_snapshot(ctx, case, "join via", t.join_entries // 4, 1000):
        wl.preload(c, t.join_entries, wl.payload_of(p["payload"]), progress=ctx.say)
        ctx.say(f"joining a new node to {t.join_entries:,} entries via the {name}")
        result = wl.join_new_node(c, f"n{p['n'] + 1}", wl.TableStateMachine)
        results[name] = result
        series.append(Series(f"{case.label} join via {name}",
                             [(1, [result["seconds_to_catch_up"]])],
                             f"seconds for a new node to apply {t.join_entries} entries"))
    metrics = {"entries": t.join_entries, "join": results}
    return Outcome(metrics, series)


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    run: Callable[[Case, Context], Outcome]


FAMILIES = {f.name: f for f in [
    Family("commit_latency", "Commit latency, one sequential client", run_commit_latency),
    Family("throughput", "Throughput at saturation (1,000 proposals outstanding)",
           run_throughput),
    Family("durability", "Durability: memory store vs native store, fsync off/on "
           "(and TCP + native + fsync with the RTT/fdatasync baseline)", run_durability),
    Family("processes", "Node processes on loopback (engine: python -m engine.cli node; "
           "PySyncObj), load generator in its own process, RTT/fdatasync baseline",
           run_processes),
    Family("faults", "Throughput and latency under message drop, delay and reorder",
           run_faults),
    Family("churn", "Leader churn: crash the leader every 1-2 s", run_churn),
    Family("ablation_batching", "Ablation: batching off (max_batch_entries=1) vs on",
           run_ablation_batching),
    Family("ablation_inflight", "Ablation: pipelining off (max_inflight=1) vs on",
           run_ablation_inflight),
    Family("ablation_fast_backup", "Ablation: conflict-term fast backup off vs on",
           run_ablation_fast_backup),
    Family("ablation_prevote", "Ablation: pre-vote + check-quorum off vs on under 5% drop",
           run_ablation_prevote),
    Family("ablation_storage_thread", "Ablation: durable writes on a storage thread vs inline "
           "on the loop thread (TCP, native store, fsync)", run_ablation_storage_thread),
    Family("ablation_switch_interval",
           "Ablation: GIL switch interval (sys.setswitchinterval) default vs 0.5 ms",
           run_ablation_switch_interval),
    Family("timeout_tuning", "Timeout tuning: election timeout / heartbeat sweep",
           run_timeout_tuning),
    Family("figure16", "Raft paper Figure 16: time to elect a new leader after a crash "
           "(5 nodes, election timeout ranges, PreVote off/on)", run_figure16),
    Family("snapshots", "Snapshots: throughput cost, follower catch-up, leadership transfer",
           run_snapshots),
    Family("membership", "Membership: a new empty node joins a loaded 3-node cluster "
           "(learner, catch-up, promotion) from the log vs from a snapshot", run_membership),
]}

TUNING_POINTS = {
    "quick": [(0.05, 0.15, 0.30), (0.02, 0.05, 0.10)],
    "full": [(0.01, 0.03, 0.06), (0.02, 0.05, 0.10), (0.02, 0.10, 0.20), (0.05, 0.15, 0.30),
             (0.05, 0.30, 0.60), (0.10, 0.30, 0.60), (0.10, 0.50, 1.00)],
}
"""(heartbeat, election_timeout_min, election_timeout_max) in seconds."""

TUNING_DELAY = (0.0, 0.02)
"""The spurious-election part of the sweep runs under 5% drop with 0-20 ms delay (a jittery
link; at 0-2.5 ms no point of the sweep showed any spurious election)."""


EXPLICIT_ONLY: tuple[str, ...] = ()
"""Families of the full suite that quick runs include only when asked by name (none now; tiny
runs, for the tests, take only what they name)."""


def processes_specs() -> list[dict[str, Any]]:
    """The ``processes`` family's configurations, in run order (PySyncObj right after the
    engine configuration it is compared with): the engine with 3 and 5 nodes x fsync {on, off}
    x {16 B, 1 KiB}, and PySyncObj with 3 nodes x {16 B, 1 KiB}; the same matrix in quick and
    full (about a minute in quick; full has longer windows).  redis-benchmark runs in the
    3-node fsync-on 16 B case."""
    def engine(n: int, fsync: bool, payload: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"n": n, "transport": "tcp", "store": "native", "fsync": fsync,
                                "payload": payload}
        if n == 3 and fsync and payload == 16:
            spec["redis_benchmark"] = True
        return spec

    def pysyncobj(payload: int) -> dict[str, Any]:
        return {"n": 3, "system": "pysyncobj", "payload": payload}

    specs = []
    for payload in (16, 1024):
        specs += [engine(3, True, payload), pysyncobj(payload), engine(3, False, payload)]
    for payload in (16, 1024):
        specs += [engine(5, True, payload), engine(5, False, payload)]
    return specs


def build_cases(mode: str = "quick", *, explicit: bool = False) -> list[Case]:
    """Every case of the suite in ``mode`` ('quick', 'full' or 'tiny'), in run order.  With
    ``explicit``, also the :data:`EXPLICIT_ONLY` families (for ``--scenario processes``)."""
    full = mode == "full"
    sizes = [1, 3, 5, 7] if full else [1, 3, 5]
    payloads = [16, 1024] if full else [16]
    specs: list[tuple[str, dict[str, Any]]] = []
    for family in ("commit_latency", "throughput"):
        for payload in payloads:
            for n in sizes:
                specs.append((family, {"n": n, "transport": "memory", "payload": payload}))
            for n in ([3, 5] if full else [3]):
                specs.append((family, {"n": n, "transport": "tcp", "payload": payload}))
    for store, fsync in (("memory", False), ("native", False), ("native", True)):
        specs.append(("durability", {"n": 3, "store": store, "fsync": fsync, "payload": 16}))
    specs.append(("durability", {"n": 3, "transport": "tcp", "store": "native", "fsync": True,
                                 "payload": 16}))
    if mode != "tiny" or explicit:
        specs += [("processes", spec) for spec in processes_specs()]
    for drop in ([0.0, 0.01, 0.05, 0.10] if full else [0.0, 0.05]):
        specs.append(("faults", {"n": 3, "payload": 16, "drop": drop}))
    for n in ([3, 5] if full else [3]):
        specs.append(("churn", {"n": n, "payload": 16}))
    specs.append(("ablation_batching", {"n": 3, "payload": 16}))
    specs.append(("ablation_inflight", {"n": 3, "payload": 16}))
    specs.append(("ablation_fast_backup", {"n": 3}))
    for timing in (["default", "aggressive"] if full else ["default"]):
        specs.append(("ablation_prevote", {"n": 3, "drop": 0.05, "timing": timing}))
    specs.append(("ablation_storage_thread", {"n": 3, "payload": 16}))
    specs.append(("ablation_switch_interval", {"n": 3, "payload": 16}))
    for point in TUNING_POINTS["full" if full else "quick"]:
        specs.append(("timeout_tuning", {"n": 3, "point": point, "drop": 0.05}))
    specs.append(("figure16", {"n": 5}))
    specs.append(("snapshots", {"n": 3, "payload": 16}))
    specs.append(("membership", {"n": 3, "payload": 16}))
    return [Case(family, _label(family, params), params, FAMILIES[family].run)
            for family, params in specs]


def select(cases: list[Case], names: list[str] | None) -> list[Case]:
    """Cases whose family or exact label is in ``names`` (all when ``names`` is empty).

    Raises:
        KeyError: a name matches nothing (the message lists the families).
    """
    if not names:
        return cases
    chosen = []
    for name in names:
        matched = [c for c in cases if name in (c.family, c.label)]
        if not matched:
            raise KeyError(f"no scenario {name!r}; families: {', '.join(FAMILIES)}")
        chosen += [c for c in matched if c not in chosen]
    return [c for c in cases if c in chosen]
