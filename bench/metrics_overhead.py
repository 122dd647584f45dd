"""``python -m bench.metrics_overhead``: what metrics cost, and where a commit's time goes.

Two shapes, each run with metrics ON and OFF alternately in the same run (A, B, A, B, ...):

* ``inprocess``: LocalCluster(3) over the memory transport, 1,000 proposals outstanding for
  ``--seconds``; ON = ``Config.latency_sample_every=32`` (stage sampling, log-append/fdatasync
  and loop-busy timing) plus a collector scrape of every node each second; OFF =
  ``latency_sample_every=0`` and no scrapes (the plain counters, one integer add each, cannot be
  switched off and are in both arms);
* ``processes``: three ``raft-engine node`` processes on loopback (native store, fsync on),
  bench.loadgen in its own process (saturating, then sequential); ON = ``--metrics`` on every
  node scraped over HTTP each second + ``--latency-sample-every 32``; OFF =
  ``--latency-sample-every 0`` and no metrics server.

It prints and writes (``--out``, default bench-results/metrics): ``metrics_overhead.json``,
``METRICS.md`` (throughput ON/OFF ratio per shape, the per-stage breakdown) and
``commit_stages.png`` (a stacked bar per scenario of the mean time per commit stage, from the
leader's ``raft_commit_stage_seconds`` sums and counts).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.request
from typing import Any

from bench import processes as pr
from engine.runtime.telemetry import STAGES


def _stage_means(sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
    return {s: (sums[s] / counts[s] * 1e6 if counts.get(s) else 0.0) for s in STAGES}


# -- in-process -----------------------------------------------------------------------------


def run_inprocess(seconds: float, metrics_on: bool, outstanding: int = 1000) -> dict[str, Any]:
    import dataclasses

    from prometheus_client import CollectorRegistry, generate_latest

    import engine.metrics
    from engine import Config, LocalCluster

    config = dataclasses.replace(Config(), latency_sample_every=32 if metrics_on else 0)
    with LocalCluster(3, config=config, seed=1) as cluster:
        leader = cluster.wait_for_leader(10.0)
        stop = threading.Event()
        scrapes = [0]
        if metrics_on:
            registry = CollectorRegistry()
            engine.metrics.register(lambda: cluster.nodes, registry)

            def scrape() -> None:
                while not stop.wait(1.0):
                    generate_latest(registry)
                    scrapes[0] += 1
            threading.Thread(target=scrape, name="bench-scraper", daemon=True).start()
        done = [0]
        sem = threading.Semaphore(outstanding)

        def finished(_f: Any) -> None:
            done[0] += 1
            sem.release()
        deadline = time.perf_counter() + 0.5  # warm-up
        while time.perf_counter() < deadline:
            sem.acquire()
            leader.propose(b"k=vvvvvvvvvvvvvv").add_done_callback(finished)
        start_done, t0, cpu0 = done[0], time.perf_counter(), time.process_time()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            sem.acquire()
            leader.propose(b"k=vvvvvvvvvvvvvv").add_done_callback(finished)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        commits = done[0] - start_done
        stop.set()
        t = leader.telemetry
        sums = {s: t.stages[s].snapshot()[1] for s in STAGES}
        counts = {s: t.stages[s].snapshot()[2] for s in STAGES}
        for _ in range(outstanding):
            sem.acquire()
    return {"commits_per_s": commits / elapsed, "scrapes": scrapes[0],
            "cpu_us_per_commit": cpu / commits * 1e6,
            "stage_sums": sums, "stage_counts": counts}


# -- node processes -----------------------------------------------------------------------------


class _MetricsProcesses(pr.NodeProcesses):
    """Engine nodes with metrics ON (``--metrics``, served by the base class when
    ``engine_metrics``, and ``--latency-sample-every 32``) or OFF (no server, 0)."""

    def _argv(self, i: str) -> tuple[list[str], str]:
        argv, cwd = super()._argv(i)
        argv += ["--latency-sample-every", "32" if self.engine_metrics else "0"]
        return argv, cwd


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=2.0) as response:
        return response.read().decode()


def _stages_of(text: str, node: str) -> tuple[dict[str, float], dict[str, float]]:
    from prometheus_client.parser import text_string_to_metric_families
    sums: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    counts: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for family in text_string_to_metric_families(text):
        if family.name != "raft_commit_stage_seconds":
            continue
        for s in family.samples:
            if s.labels.get("node") != node:
                continue
            if s.name.endswith("_sum"):
                sums[s.labels["stage"]] = s.value
            elif s.name.endswith("_count"):
                counts[s.labels["stage"]] = s.value
    return sums, counts


def run_processes(seconds: float, metrics_on: bool, fsync: bool = True) -> dict[str, Any]:
    import shutil
    import tempfile
    root = tempfile.mkdtemp(prefix="raft-bench-metrics-")
    cluster = _MetricsProcesses(3, root, fsync, "engine", pr.BENCH_ROOT,
                                engine_metrics=metrics_on)
    stop = threading.Event()
    try:
        cluster.start()
        address = cluster.find_leader()
        with pr.RespClient(address) as client:
            client.set_until_ok(b"warm", b"up", cluster, deadline=time.monotonic() + 15.0)
            cluster.leader = client.address
        leader_id = cluster.leader_id
        scrapes = [0]
        if metrics_on:
            def scrape() -> None:
                while not stop.wait(1.0):
                    for a in cluster.metrics.values():
                        try:
                            _scrape(a)
                            scrapes[0] += 1
                        except OSError:
                            pass
            threading.Thread(target=scrape, name="bench-scraper", daemon=True).start()
        sat = pr.run_loadgen(cluster.leader, "saturate", 16, seconds=seconds, warmup=0.5,
                             window=0.25, connections=4, depth=128, watch_pids=cluster.pids)
        result: dict[str, Any] = {"commits_per_s": sat["commits_per_s_mean"]}
        cores = [v for v in (sat.get("watched_cpu_cores") or {}).values() if v is not None]
        if cores and result["commits_per_s"]:
            # CPU of the three node processes per commit: far less sensitive than commits/s
            # to other load on the machine.
            result["cpu_us_per_commit"] = sum(cores) / result["commits_per_s"] * 1e6
        before = (_stages_of(_scrape(cluster.metrics[leader_id]), leader_id)
                  if metrics_on else None)
        seq = pr.run_loadgen(cluster.leader, "sequential", 16, seconds=seconds, ops=2000,
                             warmup_ops=100, warmup_seconds=0.5)
        values = sorted(v for v in seq["latencies_s"] if v > 0)
        result["seq_p50_us"] = values[len(values) // 2] * 1e6 if values else None
        if metrics_on and before is not None:
            after = _stages_of(_scrape(cluster.metrics[leader_id]), leader_id)
            result["stage_sums"] = {s: after[0][s] - before[0][s] for s in STAGES}
            result["stage_counts"] = {s: after[1][s] - before[1][s] for s in STAGES}
            result["saturated_stage_sums"], result["saturated_stage_counts"] = before
        result["scrapes"] = scrapes[0]
        return result
    finally:
        stop.set()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------


def breakdowns(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Scenario label -> mean microseconds per stage (pooled over the ON rounds)."""
    out: dict[str, dict[str, float]] = {}
    for shape, label, sums_key, counts_key in (
            ("inprocess", "in-process n=3 memory, saturated", "stage_sums", "stage_counts"),
            ("processes", "processes n=3 tcp fsync=on, saturated", "saturated_stage_sums",
             "saturated_stage_counts"),
            ("processes", "processes n=3 tcp fsync=on, sequential", "stage_sums",
             "stage_counts")):
        rounds = [r for r in data.get(shape, {}).get("on", []) if sums_key in r]
        if not rounds:
            continue
        sums = {s: sum(r[sums_key][s] for r in rounds) for s in STAGES}
        counts = {s: sum(r[counts_key][s] for r in rounds) for s in STAGES}
        out[label] = _stage_means(sums, counts)
    return out


def plot_stages(stages: dict[str, dict[str, float]], path: str) -> str | None:
    """A stacked bar per scenario of the mean time per commit stage (us)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = list(stages)
    bottoms = [0.0] * len(labels)
    for stage in STAGES:
        values = [stages[label][stage] for label in labels]
        ax.bar(labels, values, bottom=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_ylabel("mean time per stage (us), sampled on the leader")
    ax.set_title("Where a commit's time goes (propose -> future resolved)")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelsize="small")
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render(data: dict[str, Any]) -> str:
    lines = ["# Metrics overhead and commit stages", "",
             "Same run, arms alternated; throughput = commits/s at saturation (mean of rounds).",
             "CPU/commit: CPU seconds of the node process(es) per commit (in-process: the whole",
             "process, load generation included), less sensitive to other load on the machine.",
             "", "| shape | OFF commits/s | ON commits/s | ON/OFF | OFF CPU us/commit | "
             "ON CPU us/commit | ON/OFF CPU | rounds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for shape in ("inprocess", "processes"):
        arms = data.get(shape)
        if not arms:
            continue
        off = [r["commits_per_s"] for r in arms["off"]]
        on = [r["commits_per_s"] for r in arms["on"]]
        mo, mn = sum(off) / len(off), sum(on) / len(on)
        coff = [r["cpu_us_per_commit"] for r in arms["off"] if "cpu_us_per_commit" in r]
        con = [r["cpu_us_per_commit"] for r in arms["on"] if "cpu_us_per_commit" in r]
        co = sum(coff) / len(coff) if coff else float("nan")
        cn = sum(con) / len(con) if con else float("nan")
        lines.append(f"| {shape} | {mo:,.0f} | {mn:,.0f} | {mn / mo:.3f} | {co:.1f} | "
                     f"{cn:.1f} | {cn / co:.3f} | {len(on)} |")
        data[shape]["ratio"] = mn / mo
        data[shape]["cpu_ratio"] = cn / co
    lines += ["", "Per-stage breakdown (mean us per sampled commit, leader):", "",
              "| scenario | " + " | ".join(STAGES) + " | total |",
              "|---|" + "---:|" * (len(STAGES) + 1)]
    for label, means in breakdowns(data).items():
        lines.append(f"| {label} | " + " | ".join(f"{means[s]:,.0f}" for s in STAGES)
                     + f" | {sum(means.values()):,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_overhead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--shape", choices=("inprocess", "processes"), action="append")
    parser.add_argument("--out", default="bench-results/metrics")
    args = parser.parse_args()
    shapes = args.shape or ["inprocess", "processes"]
    data: dict[str, Any] = {}
    for shape in shapes:
        run = run_inprocess if shape == "inprocess" else run_processes
        arms: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for k in range(args.rounds):
            for arm in (("off", "on") if k % 2 == 0 else ("on", "off")):
                result = run(args.seconds, arm == "on")
                arms[arm].append(result)
                print(f"{shape} round {k + 1} {arm}: {result['commits_per_s']:,.0f} commits/s",
                      flush=True)
        data[shape] = arms
    os.makedirs(args.out, exist_ok=True)
    text = render(data)
    stages = breakdowns(data)
    data["breakdown_us"] = stages
    plot = plot_stages(stages, os.path.join(args.out, "commit_stages.png")) if stages else None
    if plot:
        text += f"\n![commit stages]({os.path.basename(plot)})\n"
    with open(os.path.join(args.out, "METRICS.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "metrics_overhead.json"), "w") as f:
        json.dump(data, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
