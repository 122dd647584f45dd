"""The Raft paper's Figure 16: time without a leader after the leader crashes.

The experiment (Ongaro and Ousterhout, "In Search of an Understandable Consensus Algorithm",
section 9.3): a 5-node cluster; the leader crashes at a random point of its heartbeat interval
(half the minimum election timeout); the time until a new leader is elected is measured, many
times, for each election timeout range.  Top panel: the randomness varies at a 150 ms minimum
(150-151, 150-155, 150-175, 150-200, 150-300 ms); bottom panel: the minimum varies with a range
as wide as the minimum (12-24, 25-50, 50-100, 100-200 ms).  The paper's network had a
broadcast time of about 15 ms; here the in-memory transport's delay fault gives every message a
one-way delay (``--delay-ms``, 7.5 ms by default: a 15 ms round trip).

How it is run here: an in-process :class:`~engine.LocalCluster` on the memory transport with
in-memory stores (no fsync), PreVote off (the paper's Raft) and on; CheckQuorum off unless
``--check-quorum`` (the paper had none; with it a 12-24 ms range cannot hold a leader over a
15 ms round trip).  The tick is ``min(10 ms, heartbeat / 5)`` unless ``--tick``: the 150 ms
ranges run at the default 10 ms tick, so 150-151 exercises the sub-tick election timer.

Measurement: "crash" is cutting the leader off the network (``isolate``, instantaneous; the
node is then crashed and restarted for the next trial); "elected" is the moment a node's core
logs ``became leader`` (``logging`` record time), so the polling of the harness adds nothing.
Between trials the cluster must be stable: every node following one leader in one term.

Usage::

    python -m bench.figure16                 # quick: 3 ranges x PreVote off/on x 10 trials
    python -m bench.figure16 --full          # the paper's 9 ranges x 2 arms x 100 trials
    python -m bench.figure16 --ranges 150-155,150-300 --trials 30 --delay-ms 0
    python -m bench.figure16 --check-quorum  # CheckQuorum on in both arms

Writes ``figure16.json``, ``figure16.md`` (median/p90/max table) and ``figure16.png`` (the CDFs
in the paper's two-panel layout) to ``--out`` (default bench-results/).  The quick version is
also the ``figure16`` family of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import Config, CounterStateMachine, LocalCluster

TOP = ("150-151", "150-155", "150-175", "150-200", "150-300")
BOTTOM = ("12-24", "25-50", "50-100", "100-200")
FULL_RANGES = TOP + BOTTOM
QUICK_RANGES = ("150-155", "150-300", "25-50")
FULL_TRIALS = 100
QUICK_TRIALS = 10
DEFAULT_DELAY_MS = 7.5
_BECAME_LEADER = "%s became leader at term %d"


def parse_range(text: str) -> tuple[float, float]:
    """``"150-155"`` -> (0.150, 0.155) seconds."""
    lo, hi = text.split("-")
    return float(lo) / 1e3, float(hi) / 1e3


def config_for(lo: float, hi: float, *, pre_vote: bool, check_quorum: bool = False,
               tick: float | None = None, heartbeat: float | None = None) -> Config:
    """The configuration of one curve: heartbeat half the minimum (as in the paper) unless
    ``heartbeat`` is given."""
    hb = heartbeat if heartbeat is not None else lo / 2
    return Config(heartbeat_interval=hb, election_timeout_min=lo, election_timeout_max=hi,
                  tick_interval=tick if tick is not None else min(0.01, hb / 5),
                  pre_vote=pre_vote, check_quorum=check_quorum, fsync=False)


class _LeaderLog(logging.Handler):
    """Collects (wall time, node id, term) of every ``became leader`` record of the core."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[tuple[float, str, int]] = []
        self.cv = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _BECAME_LEADER:
            with self.cv:
                node, term = record.args  # type: ignore[misc]
                self.events.append((record.created, str(node), int(term)))
                self.cv.notify_all()

    def wait_new(self, old: str, term: int, timeout: float) -> tuple[float, str, int] | None:
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for ev in self.events:
                    if ev[2] > term and ev[1] != old:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)


def _stable_leader(cluster: LocalCluster, timeout: float) -> Any:
    """The leader once every node runs and follows it in its term (None after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [n.status() for n in cluster.nodes]
        leaders = [s for s in statuses if s.role == "leader"]
        if (len(leaders) == 1 and all(s.running for s in statuses)
                and all(s.term == leaders[0].term and s.leader_id == leaders[0].id
                        for s in statuses)):
            return cluster.nodes[[n.id for n in cluster.nodes].index(leaders[0].id)]
        time.sleep(0.002)
    return None


@dataclass
class Curve:
    """One line of the figure: a range and an arm, with its downtimes in seconds."""

    range: str
    pre_vote: bool
    downtimes: list[float] = field(default_factory=list)
    failed: int = 0  # trials with no stable cluster or no new leader in time
    tick: float = 0.0

    def stats(self) -> dict[str, Any]:
        d = sorted(self.downtimes)
        return {"range": self.range, "pre_vote": self.pre_vote, "trials": len(d),
                "failed": self.failed, "tick_ms": self.tick * 1e3,
                "median_ms": _pct(d, 50) * 1e3, "p90_ms": _pct(d, 90) * 1e3,
                "max_ms": d[-1] * 1e3 if d else math.nan}


def _pct(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    k = (len(values) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_curve(range_text: str, *, pre_vote: bool, trials: int, delay: float, seed: int,
              check_quorum: bool = False, tick: float | None = None,
              heartbeat: float | None = None, n: int = 5,
              say: Callable[[str], None] = lambda _m: None) -> Curve:
    """``trials`` leader crashes of one ``n``-node cluster with one range and arm."""
    lo, hi = parse_range(range_text)
    config = config_for(lo, hi, pre_vote=pre_vote, check_quorum=check_quorum, tick=tick,
                        heartbeat=heartbeat)
    curve = Curve(range_text, pre_vote, tick=config.tick_interval)
    rng = random.Random(f"{seed}:{range_text}:{pre_vote}")
    handler = _LeaderLog()
    core_log = logging.getLogger("engine.core.raft")
    old_level = core_log.level
    core_log.addHandler(handler)
    if not core_log.isEnabledFor(logging.INFO):
        core_log.setLevel(logging.INFO)
    settle = max(20 * hi, 2.0)   # for the cluster to be stable again between trials
    patience = max(100 * hi, 15.0)  # for a new leader (narrow ranges have long tails)
    try:
        with LocalCluster(n, state_machine=CounterStateMachine, config=config,
                          seed=rng.randrange(1 << 30)) as cluster:
            if delay:
                cluster.set_faults(delay=(delay, delay))
            for k in range(trials):
                leader = _stable_leader(cluster, settle)
                if leader is None:
                    curve.failed += 1
                    say(f"{range_text} pre_vote={pre_vote}: no stable leader in {settle:.1f}s")
                    continue
                time.sleep(rng.uniform(0, config.heartbeat_interval))
                index = cluster.nodes.index(leader)
                term = leader.status().term
                t0 = time.time()
                cluster.isolate(index)
                elected = handler.wait_new(leader.id, term, patience)
                cluster.crash(index)
                cluster.rejoin(index)
                cluster.restart(index)
                if elected is None:
                    curve.failed += 1
                    continue
                curve.downtimes.append(elected[0] - t0)
                if (k + 1) % 25 == 0:
                    say(f"{range_text} pre_vote={pre_vote}: {k + 1}/{trials}")
    finally:
        core_log.removeHandler(handler)
        core_log.setLevel(old_level)
    return curve


def run(ranges: Sequence[str], *, trials: int, delay: float, seed: int = 1,
        check_quorum: bool = False, tick: float | None = None,
        arms: Sequence[bool] = (False, True),
        say: Callable[[str], None] = lambda _m: None) -> list[Curve]:
    """Every curve: each range with PreVote off and on (``arms``)."""
    curves = []
    for r in ranges:
        for pre_vote in arms:
            t0 = time.perf_counter()
            curve = run_curve(r, pre_vote=pre_vote, trials=trials, delay=delay, seed=seed,
                              check_quorum=check_quorum, tick=tick, say=say)
            s = curve.stats()
            say(f"{r} ms pre_vote={'on' if pre_vote else 'off'}: median {s['median_ms']:.0f} "
                f"p90 {s['p90_ms']:.0f} max {s['max_ms']:.0f} ms ({s['trials']} trials, "
                f"{s['failed']} failed, {time.perf_counter() - t0:.1f}s)")
            curves.append(curve)
    return curves


def table(curves: Sequence[Curve]) -> list[str]:
    """Markdown: one row per range, median/p90/max for PreVote off and on."""
    by = {(c.range, c.pre_vote): c.stats() for c in curves}
    ranges = list(dict.fromkeys(c.range for c in curves))
    lines = ["| range (ms) | tick (ms) | PreVote off: median / p90 / max (ms) | "
             "PreVote on: median / p90 / max (ms) | trials (failed) off / on |",
             "|---|---|---|---|---|"]

    def cell(s: dict[str, Any] | None) -> str:
        if s is None or not s["trials"]:
            return "-"
        return f"{s['median_ms']:.0f} / {s['p90_ms']:.0f} / {s['max_ms']:.0f}"

    for r in ranges:
        off, on = by.get((r, False)), by.get((r, True))
        tick = (off or on or {}).get("tick_ms", math.nan)
        counts = " / ".join(f"{s['trials']} ({s['failed']})" if s else "-" for s in (off, on))
        lines.append(f"| {r} | {tick:g} | {cell(off)} | {cell(on)} | {counts} |")
    return lines


def plot(curves: Sequence[Curve], path: str, *, title: str = "") -> str | None:
    """The paper's layout: top panel the 150 ms ranges, bottom the others; cumulative percent
    of trials vs milliseconds without a leader; solid PreVote off, dashed on.  Returns the path,
    or None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a bench dependency
        return None
    fig, axes = plt.subplots(2, 1, figsize=(7, 7.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, group in zip(axes, (TOP, BOTTOM), strict=True):
        shown = [c for c in curves if c.range in group or (group is TOP and c.range.startswith(
            "150-") and c.range not in BOTTOM)]
        for c in shown:
            if not c.downtimes:
                continue
            d = sorted(x * 1e3 for x in c.downtimes)
            ys = [0.0] + [100 * (i + 1) / len(d) for i in range(len(d))]
            d = [d[0], *d]
            color = colors[sorted({x.range for x in shown}).index(c.range) % len(colors)]
            ax.step(d, ys, where="post", color=color, linestyle="--" if c.pre_vote else "-",
                    label=f"{c.range} ms{' PreVote' if c.pre_vote else ''}")
        ax.set_ylabel("cumulative percent")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="lower right")
    axes[1].set_xlabel("time without leader (ms)")
    top_max = max((max(c.downtimes) for c in curves if c.downtimes and c.range in TOP),
                  default=0.5) * 1e3
    axes[0].set_xscale("log")   # as the paper's top panel: narrow ranges have long tails
    axes[0].set_xlim(100, max(1000, top_max * 1.2))
    axes[1].set_xlim(0, None)
    fig.suptitle(title or "Figure 16: time to elect a new leader after the leader crashes",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(curves: Sequence[Curve], out_dir: str, *, command: str, delay: float,
          check_quorum: bool) -> list[str]:
    """figure16.json, figure16.md and figure16.png in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    data = {"command": command, "delay_ms": delay * 1e3, "check_quorum": check_quorum,
            "transport": "memory (in process), LocalCluster, 5 nodes, no fsync",
            "curves": [{**c.stats(), "downtimes_ms": [round(x * 1e3, 3) for x in c.downtimes]}
                       for c in curves]}
    paths = [os.path.join(out_dir, "figure16.json"), os.path.join(out_dir, "figure16.md")]
    with open(paths[0], "w") as f:
        json.dump(data, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(f"# Figure 16\n\n`{command}`: 5 nodes in process (memory transport, one-way "
                f"delay {delay * 1e3:g} ms), CheckQuorum {'on' if check_quorum else 'off'}, "
                "heartbeat half the minimum.\n\n" + "\n".join(table(curves)) + "\n")
    png = plot(curves, os.path.join(out_dir, "figure16.png"),
               title=f"Figure 16 (5 nodes, one-way delay {delay * 1e3:g} ms)")
    if png:
        paths.append(png)
    return paths


# -- the ``figure16`` family of ``python -m bench`` ----------------------------------------------

SUITE = {"quick": (QUICK_RANGES, QUICK_TRIALS), "full": (FULL_RANGES, 30),
         "tiny": (("150-155",), 2)}
"""Ranges and trials per arm of the suite's figure16 case in each mode."""


def suite_metrics(curves: Sequence[Curve], delay: float) -> dict[str, Any]:
    """The suite case's metrics: the table's numbers plus every downtime (for the plot)."""
    return {"delay_ms": delay * 1e3, "check_quorum": False,
            "curves": [{**c.stats(), "downtimes_ms": [round(x * 1e3, 3) for x in c.downtimes]}
                       for c in curves]}


def _curves_of(metrics: dict[str, Any]) -> list[Curve]:
    return [Curve(c["range"], c["pre_vote"], [x / 1e3 for x in c["downtimes_ms"]], c["failed"],
                  c["tick_ms"] / 1e3) for c in metrics.get("curves", [])]


def one_line(metrics: dict[str, Any]) -> str:
    """Progress line of the suite case: median per range and arm."""
    return "; ".join(f"{c['range']} {'on' if c['pre_vote'] else 'off'} p50="
                     f"{c['median_ms']:.0f}ms" for c in metrics.get("curves", []))


def section(rs: list[dict[str, Any]]) -> list[str]:
    """REPORT.md section of the suite's figure16 case(s)."""
    lines: list[str] = []
    for r in rs:
        if r["status"] != "ok":
            continue
        m = r["metrics"]
        lines += [f"5 nodes in process (LocalCluster, memory transport, one-way delay "
                  f"{m['delay_ms']:g} ms), heartbeat half the minimum, CheckQuorum off; the "
                  "leader is cut off at a random point of its heartbeat interval. Full run: "
                  "`python -m bench.figure16 --full`.", "", *table(_curves_of(m))]
    return lines


def suite_plots(cases: list[dict[str, Any]], out_dir: str) -> list[str]:
    """figure16.png for the suite's report (first ok figure16 case)."""
    for r in cases:
        if r["family"] == "figure16" and r["status"] == "ok":
            path = plot(_curves_of(r["metrics"]), os.path.join(out_dir, "figure16.png"),
                        title=f"Figure 16 (5 nodes, one-way delay {r['metrics']['delay_ms']:g}"
                              " ms, quick)")
            return [path] if path else []
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.figure16",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true",
                   help=f"the paper's {len(FULL_RANGES)} ranges, {FULL_TRIALS} trials each")
    p.add_argument("--ranges", help="comma-separated ranges in ms, e.g. 150-155,150-300")
    p.add_argument("--trials", type=int, help="trials per range and arm")
    p.add_argument("--delay-ms", type=float, default=DEFAULT_DELAY_MS,
                   help=f"one-way message delay (default {DEFAULT_DELAY_MS}: a 15 ms round trip)")
    p.add_argument("--tick", type=float, help="tick_interval in seconds (default min(10 ms, "
                   "heartbeat/5))")
    p.add_argument("--check-quorum", action="store_true", help="CheckQuorum on in both arms")
    p.add_argument("--arms", default="off,on", help="PreVote arms to run (default off,on)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench-results")
    args = p.parse_args(argv)
    ranges = (args.ranges.split(",") if args.ranges
              else FULL_RANGES if args.full else QUICK_RANGES)
    trials = args.trials or (FULL_TRIALS if args.full else QUICK_TRIALS)
    arms = [a.strip() == "on" for a in args.arms.split(",")]
    delay = args.delay_ms / 1e3
    t0 = time.perf_counter()
    curves = run(ranges, trials=trials, delay=delay, seed=args.seed,
                 check_quorum=args.check_quorum, tick=args.tick, arms=arms,
                 say=lambda m: print(m, flush=True))
    command = " ".join(["python -m bench.figure16", *argv])
    paths = write(curves, args.out, command=command, delay=delay,
                  check_quorum=args.check_quorum)
    print("\n".join(table(curves)))
    print(f"wrote {', '.join(paths)} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
