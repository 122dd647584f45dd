"""Smoke tests of the benchmark suite: tiny cases produce well-formed outputs.

Nothing here looks at how fast anything was; timings are the suite's business, not the tests'.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

pyperf = pytest.importorskip("pyperf")

from bench import report  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.scenarios import Outcome, build_cases  # noqa: E402
from bench.suite import CaseResult, SuiteResult, run_suite  # noqa: E402

CASE = "commit_latency n=1 memory 16B"


def _check_tables(markdown: str) -> int:
    """Every Markdown table has a separator line and rows as wide as its header."""
    tables = 0
    lines = markdown.splitlines()
    for k, line in enumerate(lines):
        if line.startswith("|---"):
            tables += 1
            width = lines[k - 1].count("|")
            assert lines[k - 1].startswith("| "), lines[k - 1]
            assert line.count("|") == width, (lines[k - 1], line)
            j = k + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == width, (lines[k - 1], lines[j])
                j += 1
    return tables


def test_tiny_case_writes_pyperf_json_results_and_report(tmp_path: Path) -> None:
    out = io.StringIO()
    suite = run_suite([CASE], mode="tiny", seed=3, out_dir=str(tmp_path), stream=out,
                      command="pytest smoke")
    assert [r.case.label for r in suite.results] == [CASE]
    assert suite.results[0].error is None
    assert f"[1/1] {CASE} ..." in out.getvalue()

    # pyperf JSON: loadable, one benchmark named after the case, values in seconds.
    path = tmp_path / "commit_latency.json"
    loaded = pyperf.BenchmarkSuite.load(str(path))
    names = loaded.get_benchmark_names()
    assert names == [CASE]
    bench = loaded.get_benchmark(CASE)
    assert bench.get_unit() == "second"
    assert bench.get_nvalue() >= 20
    assert all(v > 0 for v in bench.get_values())
    shown = subprocess.run([sys.executable, "-m", "pyperf", "show", str(path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert CASE in shown.stdout or "Mean" in shown.stdout

    # results.json: strict JSON with the summary numbers.
    data = json.loads((tmp_path / "results.json").read_text())
    (case,) = data["cases"]
    assert case["label"] == CASE and case["status"] == "ok"
    for key in ("p50_us", "p90_us", "p99_us", "max_us"):
        assert case["metrics"][key] > 0
    assert data["environment"]["seed"] == 3
    assert {t["status"] for t in data["targets"]} <= {"met", "MISSED", "not measured"}

    # REPORT.md: the sections and well-formed tables.
    md = (tmp_path / "REPORT.md").read_text()
    assert md.startswith("# Benchmark report (tiny)")
    for heading in ("## Environment", "## Targets", "## Figure 1: Commit latency"):
        assert heading in md
    assert "pytest smoke" in md
    assert _check_tables(md) >= 3


def test_report_renders_skipped_and_failed_cases(tmp_path: Path) -> None:
    cases = {c.label: c for c in build_cases("quick")}
    suite = SuiteResult(mode="quick", seed=1, command="pytest")
    suite.results = [
        CaseResult(cases["throughput n=3 tcp 16B"], Outcome(skipped="no tcp here"), 0.0),
        CaseResult(cases["churn n=3 16B"], Outcome(), 0.1, error="RuntimeError: boom"),
    ]
    suite.environment = report.environment(suite)
    written = report.write_all(suite, str(tmp_path))
    assert str(tmp_path / "REPORT.md") in written
    md = (tmp_path / "REPORT.md").read_text()
    assert "skipped: no tcp here" in md
    assert "RuntimeError: boom" in md
    _check_tables(md)
    assert json.loads((tmp_path / "results.json").read_text())["cases"][0]["status"] == "skipped"


def test_cli_lists_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert CASE in listed and "cases in --quick mode" in listed
    assert bench_main(["--list", "--full"]) == 0
    assert "commit_latency n=7 memory 1KiB" in capsys.readouterr().out


def test_unknown_scenario_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--scenario", "nope", "--out", str(tmp_path)]) == 2
    assert "no scenario 'nope'" in capsys.readouterr().err


def test_profile_writes_prof_and_text(tmp_path: Path) -> None:
    from bench import profile
    assert profile.main(["commit_latency", "--n", "1", "--tiny", "--out", str(tmp_path)]) == 0
    (prof,) = tmp_path.glob("profile-*.prof")
    (text,) = tmp_path.glob("profile-*.txt")
    import pstats
    assert pstats.Stats(str(prof)).total_calls > 0
    body = text.read_text()
    assert "top 30 by cumulative time" in body and "top 30 by total (own) time" in body
    assert "raft-n*-loop" in body   # engine threads were profiled, not only the client
