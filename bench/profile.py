"""``python -m bench profile SCENARIO [--n 3] [--payload 16] [--transport memory] [--drop 0.05]``

Runs one case of the suite under cProfile and writes, in ``--out`` (default bench-results/):

* ``profile-<name>.prof``: pstats data (``python -m pstats``, snakeviz, ...);
* ``profile-<name>.txt``: CPU time per thread, then the top 30 functions by cumulative time and
  the top 30 by total (own) time.

cProfile only sees the thread that enabled it, and the engine works on its own threads (each
node's loop, apply and transport threads), so a profiler is started in every thread created while
the case runs (``threading.setprofile`` bootstraps one per thread) and the per-thread profiles
are merged.  Each profiler uses its own thread's CPU clock (``time.thread_time``), so times are
CPU seconds: waiting on a queue or a lock costs nothing, which is what you want when the
question is what holds the GIL.  Profiling slows Python code several times over: read the output
for where time goes, not for how fast it is.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import sys
import threading
import time
from typing import Any

from bench.scenarios import TIMINGS, Context, build_cases, select


class ThreadProfiler:
    """A cProfile.Profile for the calling thread and one for every thread started inside."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profiles: list[tuple[str, cProfile.Profile]] = []
        self.main = cProfile.Profile(time.thread_time)

    def _bootstrap(self, frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append((threading.current_thread().name, profile))
        profile.enable()

    def __enter__(self) -> ThreadProfiler:
        threading.setprofile(self._bootstrap)
        self.main.enable()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]

    def merged(self) -> tuple[pstats.Stats, list[tuple[str, float]]]:
        """All profiles merged, and CPU seconds per thread group (node ids folded together)."""
        stats = pstats.Stats(self.main)
        per_thread: dict[str, float] = {"MainThread (load generator)": stats.total_tt}
        with self._lock:
            profiles = list(self.profiles)
        for name, profile in profiles:
            try:
                one = pstats.Stats(profile)
            except TypeError:   # a thread that recorded nothing
                continue
            stats.add(one)
            group = re.sub(r"\bn\d+\b", "n*", re.sub(r"-\d+$", "", name))
            per_thread[group] = per_thread.get(group, 0.0) + one.total_tt
        return stats, sorted(per_thread.items(), key=lambda kv: -kv[1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench profile",
                                description="Run one scenario under cProfile.")
    p.add_argument("scenario", help="family (first case of it) or exact case label; "
                                    "see python -m bench --list")
    p.add_argument("--n", type=int, help="cluster size")
    p.add_argument("--payload", type=int, help="payload bytes")
    p.add_argument("--transport", choices=["memory", "tcp"])
    p.add_argument("--drop", type=float, help="drop rate, with matching delay and reordering")
    p.add_argument("--full", action="store_true", help="use the full suite's durations")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke test
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="bench-results", metavar="DIR")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    mode = "full" if args.full else "tiny" if args.tiny else "quick"
    try:
        case = select(build_cases(mode), [args.scenario])[0]
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    overrides = {"n": args.n, "payload": args.payload, "transport": args.transport,
                 "drop": args.drop}
    case = case.with_params(**{k: v for k, v in overrides.items()
                               if v is not None and (k in case.params or k == "drop")})
    ctx = Context(timing=TIMINGS[mode], seed=args.seed, say=lambda m: print(f"      {m}"))
    print(f"profiling: {case.label}")
    profiler = ThreadProfiler()
    t0 = time.perf_counter()
    with profiler:
        outcome = case.run(case, ctx)
    wall = time.perf_counter() - t0
    stats, per_thread = profiler.merged()

    from bench.report import one_line
    summary = one_line({"family": case.family, "status": "skipped" if outcome.skipped else "ok",
                        "skipped": outcome.skipped, "error": None, "metrics": outcome.metrics})
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "profile-" + re.sub(r"[^A-Za-z0-9_.=-]+", "_",
                                                      case.label.replace("%", "pct")))
    stats.dump_stats(stem + ".prof")
    text = io.StringIO()
    text.write(f"# python -m bench profile {' '.join(argv)}\n# case: {case.label}\n"
               f"# result under the profiler: {summary}\n# wall {wall:.1f}s\n\n"
               "CPU seconds by thread (thread_time; node ids folded):\n")
    for name, seconds in per_thread:
        text.write(f"  {seconds:8.2f}  {name}\n")
    for key, title in (("cumulative", "cumulative time"), ("tottime", "total (own) time")):
        text.write(f"\n===== top 30 by {title} =====\n")
        stats.stream = text
        stats.sort_stats(key).print_stats(30)
    with open(stem + ".txt", "w") as f:
        f.write(text.getvalue())
    print(f"result under the profiler: {summary}")
    print(f"wrote {stem}.prof and {stem}.txt")
    return 0
