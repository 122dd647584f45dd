"""Running a list of cases: progress lines, error isolation, then the report.

``run_suite`` is the module's API (the CLI and the smoke test both call it)::

    from bench.suite import run_suite
    results = run_suite(["commit_latency n=1 memory 16B"], mode="tiny", out_dir="/tmp/b")
"""

from __future__ import annotations

import gc
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from bench import report
from bench.scenarios import TIMINGS, Case, Context, Outcome, build_cases, select


@dataclass
class CaseResult:
    case: Case
    outcome: Outcome
    seconds: float
    error: str | None = None
    cpu_s: float = 0.0           # process CPU time (all threads) while the case ran
    load_before: str = "-"       # 1-minute load average when the case started

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.case.family,
            "label": self.case.label,
            "params": self.case.params,
            "status": "error" if self.error else "skipped" if self.outcome.skipped else "ok",
            "skipped": self.outcome.skipped,
            "error": self.error,
            "wall_s": round(self.seconds, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_cores_used": round(self.cpu_s / self.seconds, 2) if self.seconds else None,
            "loadavg_1m_before": self.load_before,
            "metrics": self.outcome.metrics,
            "notes": self.outcome.notes,
        }


@dataclass
class SuiteResult:
    mode: str
    seed: int
    command: str
    results: list[CaseResult] = field(default_factory=list)
    wall_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    peer: dict[str, Any] | None = None
    load_before: str = "-"


def run_cases(cases: Sequence[Case], *, mode: str, seed: int,
              stream: TextIO | None = None, engine_root: str | None = None,
              prefix: str = "") -> list[CaseResult]:
    """Run ``cases`` one after another, printing a progress line per case.  An exception in a
    case is recorded as that case's error; the others still run.  ``engine_root``: the source
    tree the processes family runs its engine nodes from (default: this one)."""
    out = stream or sys.stdout
    ctx = Context(timing=TIMINGS[mode], seed=seed, engine_root=engine_root,
                  say=lambda msg: print(f"      {msg}", file=out, flush=True))
    results = []
    start = time.perf_counter()
    for k, case in enumerate(cases, 1):
        print(f"{prefix}[{k}/{len(cases)}] {case.label} ... "
              f"(elapsed {time.perf_counter() - start:.1f}s)", file=out, flush=True)
        gc.collect()
        load = report._loadavg()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        error = None
        try:
            outcome = case.run(case, ctx)
        except Exception as exc:
            outcome = Outcome()
            error = f"{type(exc).__name__}: {exc}"
            logging.getLogger("bench").debug("case failed", exc_info=True)
            print(f"      ERROR {error}", file=out, flush=True)
            traceback.print_exc(file=out)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        result = CaseResult(case, outcome, seconds, error, cpu_s=cpu, load_before=load)
        results.append(result)
        if not error:
            print(f"      {report.one_line(result.to_json())}  [{seconds:.1f}s, "
                  f"{cpu / seconds if seconds else 0:.2f} cores, load {load}]", file=out,
                  flush=True)
    return results


def run_suite(names: Sequence[str] | None = None, *, mode: str = "quick", seed: int = 1,
              out_dir: str = "bench-results", command: str | None = None,
              peer: str | None = None, stream: TextIO | None = None,
              engine_root: str | None = None) -> SuiteResult:
    """Run the selected cases (all of ``mode`` when ``names`` is empty), the optional peer
    comparison, and write every output file to ``out_dir``.  The processes family's ratios
    (throughput vs PySyncObj, latency vs RTT + fdatasync) are printed once the cases ran.

    Raises:
        KeyError: a name in ``names`` matches no family or case label.
    """
    out = stream or sys.stdout
    cases = select(build_cases(mode, explicit=bool(names)), list(names or []))
    suite = SuiteResult(mode=mode, seed=seed,
                        command=command or " ".join(["python -m bench", *sys.argv[1:]]))
    suite.load_before = report._loadavg()
    start = time.perf_counter()
    suite.results = run_cases(cases, mode=mode, seed=seed, stream=out, engine_root=engine_root)
    ratios = report.processes_ratios({r.case.label: r.to_json() for r in suite.results})
    if ratios:
        print("[processes] ratios (same run):", file=out, flush=True)
        for line in report.ratio_lines(ratios):
            print(f"      {line}", file=out, flush=True)
    if peer:
        from bench import peer as peer_mod
        suite.peer = peer_mod.compare(peer, suite, stream=out)
    suite.wall_s = time.perf_counter() - start
    suite.environment = report.environment(suite)
    written = report.write_all(suite, out_dir)
    print(f"wrote {len(written)} files to {out_dir}/ in {suite.wall_s:.1f}s "
          f"(see {out_dir}/REPORT.md)", file=out, flush=True)
    return suite
