"""``python -m bench.ab``: another revision of the engine vs this tree, same harness, same run.

::

    python -m bench.ab                                   # baseline 333e8d3, the processes family
    python -m bench.ab --baseline REV --scenario "processes n=3 tcp native fsync=on 16B" \\
        --rounds 3 --out bench-results/ab

What it does:

1. ``git worktree add --detach <tmp>/tree REV`` (a temporary directory; removed at exit, also
   on Ctrl-C or SIGTERM);
2. builds the baseline's native log store in place there (``python
   engine/storage/_native_build.py``, as its docstring says, with this interpreter; no second
   venv: the baseline's engine runs on this venv's packages with its tree first on
   PYTHONPATH and as the working directory, so ``-m engine.cli`` resolves to it);
3. runs the engine cases of the ``processes`` family (bench/processes.py: node processes on
   loopback, ``python -m bench.loadgen`` in a process of its own) for the baseline and for this
   tree alternately, case by case: A, B, A, B (``--rounds`` rounds, at least 2 by default), each
   time on fresh node processes, the harness and load generator being this tree's for both;
4. prints, and writes to ``--out`` (``AB.md``, ``ab.json``), per case: saturated commits/s,
   sequential p50 and p99 of each arm over all its rounds (throughput = commits / measured
   seconds of all rounds; latencies pooled), and the ratios new / old (throughput: > 1 is
   better; latency: < 1 is better), with each round's numbers to show the spread.

PySyncObj and redis-benchmark are left out (they do not depend on the engine's revision).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any, TextIO

from bench import workloads as wl
from bench.processes import BENCH_ROOT, python_env, store_impl_of
from bench.report import _clean, _num, _ratio, _table
from bench.scenarios import Case, build_cases, select
from bench.suite import CaseResult, run_cases

DEFAULT_BASELINE = "333e8d3"
"""The commit before the runtime rewrite (one asyncio event loop per node)."""


def _git(*args: str, cwd: str = BENCH_ROOT, timeout: float = 120.0) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


@contextlib.contextmanager
def baseline_tree(rev: str, out: TextIO, *, keep: bool = False) -> Iterator[tuple[str, str]]:
    """A worktree of ``rev`` with its native store built in place: yields (path, full sha).
    The worktree and its temporary directory are removed on exit (unless ``keep``)."""
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tmp = tempfile.mkdtemp(prefix="raft-bench-ab-")
    tree = os.path.join(tmp, "tree")
    added = False
    try:
        print(f"[ab] git worktree add --detach {tree} {sha[:10]}", file=out, flush=True)
        _git("worktree", "add", "--detach", tree, sha)
        added = True
        build = os.path.join("engine", "storage", "_native_build.py")
        if os.path.exists(os.path.join(tree, build)):
            print(f"[ab] building the baseline's native store: python {build}", file=out,
                  flush=True)
            proc = subprocess.run([sys.executable, build], cwd=tree, env=python_env(tree),
                                  capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode != 0:
                print("[ab] native build failed (the baseline falls back to its pure-Python "
                      f"store): {(proc.stderr.strip().splitlines() or ['?'])[-1]}", file=out,
                      flush=True)
        else:
            print(f"[ab] {build} not in {sha[:10]}: its native store is not built", file=out,
                  flush=True)
        check = subprocess.run([sys.executable, "-c", "import engine.cli"], cwd=tree,
                               env=python_env(tree), capture_output=True, text=True,
                               timeout=120, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"the baseline's engine does not import: "
                               f"{(check.stderr.strip().splitlines() or ['?'])[-1]}")
        yield tree, sha
    finally:
        if keep:
            print(f"[ab] kept the worktree {tree}", file=out, flush=True)
        else:
            if added:
                with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                    _git("worktree", "remove", "--force", tree)
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                _git("worktree", "prune")


def ab_cases(mode: str, names: list[str]) -> list[Case]:
    """The engine cases of the processes family in ``mode`` matching ``names`` (family or
    labels), without redis-benchmark."""
    cases = [c for c in select(build_cases(mode, explicit=True), names or ["processes"])
             if c.family == "processes" and c.params.get("system", "engine") == "engine"]
    if not cases:
        raise KeyError(f"no engine case of the processes family among {names}")
    return [dataclasses.replace(c, params={k: v for k, v in c.params.items()
                                           if k != "redis_benchmark"}) for c in cases]


def _latencies(result: CaseResult) -> list[float]:
    for s in result.outcome.series:
        if s.name.endswith(" latency"):
            return [v for _, values in s.runs for v in values]
    return []


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    """One arm of one case over its rounds."""
    ok = [r for r in results if not r.error and not r.outcome.skipped]
    problems = [r.error or f"skipped: {r.outcome.skipped}" for r in results if r not in ok]
    values = [v for r in ok for v in _latencies(r)]
    commits = sum(r.outcome.metrics["throughput"]["commits"] for r in ok)
    seconds = sum(r.outcome.metrics["throughput"]["measured_s"] for r in ok)
    lat = wl.latency_summary(values)
    return {
        "rounds_ok": len(ok), "problems": problems,
        "commits_per_s": commits / seconds if seconds else math.nan,
        "p50_us": lat.get("p50_us", math.nan), "p99_us": lat.get("p99_us", math.nan),
        "ops": lat.get("ops", 0),
        "per_round": [{"commits_per_s": r.outcome.metrics["throughput"]["commits_per_s"],
                       "p50_us": r.outcome.metrics["latency"].get("p50_us"),
                       "p99_us": r.outcome.metrics["latency"].get("p99_us")} for r in ok],
    }


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    return {"throughput": _div(new["commits_per_s"], old["commits_per_s"]),
            "p50": _div(new["p50_us"], old["p50_us"]),
            "p99": _div(new["p99_us"], old["p99_us"])}


def render(data: dict[str, Any]) -> list[str]:
    """AB.md's lines (also printed)."""
    lines = [f"# A/B: {data['new']['name']} vs {data['old']['name']}", "",
             f"Command: `{data['command']}`; {data['rounds']} rounds, arms alternating per case "
             f"(old, new, old, new, ...); mode {data['mode']}; {data['date']}; wall time "
             f"{data['wall_s']:.0f} s. Same harness and load generator (this tree's bench/) "
             "for both; only the engine the node processes run differs.", "",
             f"- old: `{data['old']['root']}` ({data['old']['store']})",
             f"- new: `{data['new']['root']}` ({data['new']['store']})", ""]
    rows = []
    for c in data["cases"]:
        o, n, r = c["old"], c["new"], c["ratio"]

        def rounds(arm: dict[str, Any], key: str) -> str:
            return ", ".join(_num(x[key]) for x in arm["per_round"]) or "-"

        for metric, key, ratio in (("saturated commits/s", "commits_per_s", "throughput"),
                                   ("sequential p50 us", "p50_us", "p50"),
                                   ("sequential p99 us", "p99_us", "p99")):
            rows.append([c["label"] if key == "commits_per_s" else "", metric, _num(o[key]),
                         _num(n[key]), _ratio(r[ratio]), rounds(o, key), rounds(n, key)])
        for arm, s in (("old", o), ("new", n)):
            if s["problems"]:
                rows.append(["", f"{arm}: problems", "; ".join(s["problems"])[:300], "", "",
                             "", ""])
    lines += _table(["case", "metric", "old", "new", "new / old", "old per round",
                     "new per round"], rows)
    lines += ["", "new / old: throughput above 1 and latency below 1 mean the new tree is "
              "ahead. Noise on a shared machine is easily 10-20% per round; read ratios against "
              "the per-round spread."]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="REV",
                   help=f"git revision to compare with (default {DEFAULT_BASELINE})")
    p.add_argument("--scenario", action="append", default=[], metavar="NAME",
                   help="processes (default) or exact processes case labels (repeatable)")
    p.add_argument("--rounds", type=int, default=2, help="A,B repetitions (default 2)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    mode.add_argument("--tiny", dest="mode", action="store_const", const="tiny",
                      help=argparse.SUPPRESS)
    p.set_defaults(mode="quick")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=os.path.join("bench-results", "ab"), metavar="DIR")
    p.add_argument("--keep-worktree", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = sys.stdout
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    try:
        cases = ab_cases(args.mode, args.scenario)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)   # unwinds through the clean-up below

    previous = signal.signal(signal.SIGTERM, terminate)
    start = time.perf_counter()
    head = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    try:
        with baseline_tree(args.baseline, out, keep=args.keep_worktree) as (tree, sha):
            arms = [("old", tree), ("new", BENCH_ROOT)]
            results: dict[tuple[str, str], list[CaseResult]] = {}
            for k in range(args.rounds):
                for case in cases:
                    for arm, root in arms:
                        (r,) = run_cases([case], mode=args.mode, seed=args.seed, stream=out,
                                         engine_root=root, prefix=f"[ab {arm} round {k + 1}] ")
                        results.setdefault((case.label, arm), []).append(r)
            data: dict[str, Any] = {
                "command": " ".join(["python -m bench.ab", *(argv if argv is not None
                                                             else sys.argv[1:])]),
                "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "mode": args.mode, "rounds": args.rounds, "seed": args.seed,
                "old": {"name": f"{args.baseline} ({sha[:10]})", "root": tree,
                        "store": store_impl_of(tree)},
                "new": {"name": f"this tree (HEAD {head}"
                                + (" + uncommitted changes)" if dirty else ")"),
                        "root": BENCH_ROOT, "store": store_impl_of(BENCH_ROOT)},
                "cases": []}
            for case in cases:
                old = summarize(results[(case.label, "old")])
                new = summarize(results[(case.label, "new")])
                data["cases"].append({"label": case.label, "params": case.params, "old": old,
                                      "new": new, "ratio": compare(old, new)})
    finally:
        signal.signal(signal.SIGTERM, previous)
    data["wall_s"] = time.perf_counter() - start
    lines = render(data)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "AB.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "ab.json"), "w") as f:
        json.dump(_clean(data), f, indent=2, allow_nan=False)
        f.write("\n")
    print("", *lines, "", f"wrote {args.out}/AB.md and ab.json", sep="\n", file=out, flush=True)
    failed = any(c[arm]["rounds_ok"] == 0 for c in data["cases"] for arm in ("old", "new"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
