"""Tests of ``python -m bench.ab``'s pieces: the baseline worktree (made, built, removed), the
choice of cases, and the summary and rendering of the two arms.  No timing is judged."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

pytest.importorskip("pyperf")

from bench import ab
from bench.processes import BENCH_ROOT, python_env
from bench.scenarios import Case, Outcome, Series, build_cases
from bench.suite import CaseResult
from tests.bench.test_bench_smoke import _check_tables


def _worktrees() -> str:
    return subprocess.run(["git", "worktree", "list"], cwd=BENCH_ROOT, capture_output=True,
                          text=True, timeout=60, check=True).stdout


@pytest.mark.skipif(not os.path.exists(os.path.join(BENCH_ROOT, ".git")),
                    reason="not a git checkout")
def test_baseline_tree_is_built_and_removed() -> None:
    out = io.StringIO()
    with ab.baseline_tree("HEAD", out) as (tree, sha):
        assert len(sha) == 40 and tree in _worktrees()
        proc = subprocess.run([sys.executable, "-c", "import engine; print(engine.__file__)"],
                              cwd=tree, env=python_env(tree), capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.stdout.strip().startswith(tree), proc.stderr
    assert tree not in _worktrees()
    assert not os.path.exists(os.path.dirname(tree))
    assert "git worktree add" in out.getvalue()
    with pytest.raises(RuntimeError, match="rev-parse"), \
            ab.baseline_tree("no-such-revision-xyz", out):
        pass


def test_ab_cases_are_the_engine_processes_cases_without_redis_benchmark() -> None:
    cases = ab.ab_cases("quick", [])
    expected = [c for c in build_cases("quick") if c.family == "processes"
                and c.params.get("system", "engine") == "engine"]
    assert [c.label for c in cases] == [c.label for c in expected]
    assert not any("redis_benchmark" in c.params for c in cases)
    assert [c.label for c in ab.ab_cases("quick", ["processes n=5 tcp native fsync=on 16B"])] \
        == ["processes n=5 tcp native fsync=on 16B"]
    with pytest.raises(KeyError):
        ab.ab_cases("quick", ["processes n=3 pysyncobj 16B"])


def _result(case: Case, commits: int, seconds: float, latencies: list[float]) -> CaseResult:
    metrics = {"throughput": {"commits": commits, "measured_s": seconds,
                              "commits_per_s": commits / seconds},
               "latency": {"p50_us": sorted(latencies)[len(latencies) // 2] * 1e6,
                           "p99_us": max(latencies) * 1e6}}
    series = [Series(case.label + " latency", [(1, latencies)])]
    return CaseResult(case, Outcome(metrics, series), 1.0)


def test_summary_ratios_and_rendering() -> None:
    (case,) = ab.ab_cases("quick", ["processes n=3 tcp native fsync=on 16B"])
    old = ab.summarize([_result(case, 1000, 1.0, [0.002] * 10),
                        _result(case, 3000, 1.0, [0.002] * 10),
                        CaseResult(case, Outcome(), 0.1, error="RuntimeError: boom")])
    new = ab.summarize([_result(case, 4000, 1.0, [0.001] * 10),
                        _result(case, 4000, 1.0, [0.001] * 10)])
    assert old["commits_per_s"] == 2000 and old["rounds_ok"] == 2
    assert old["problems"] == ["RuntimeError: boom"] and old["ops"] == 20
    ratio = ab.compare(old, new)
    assert ratio == {"throughput": 2.0, "p50": 0.5, "p99": 0.5}
    data = {"old": {"name": "333e8d3", "root": "/tmp/x", "store": "native"},
            "new": {"name": "this tree", "root": BENCH_ROOT, "store": "native"},
            "command": "python -m bench.ab", "rounds": 2, "mode": "quick", "date": "today",
            "wall_s": 1.0,
            "cases": [{"label": case.label, "old": old, "new": new, "ratio": ratio}]}
    md = "\n".join(ab.render(data))
    assert "2.00x" in md and "0.50x" in md and "RuntimeError: boom" in md
    assert "1,000, 3,000" in md    # per-round numbers
    _check_tables(md)
