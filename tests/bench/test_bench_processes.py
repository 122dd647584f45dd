"""Tests of the ``processes`` family: its cases, a tiny run of the engine's and PySyncObj's
node processes, the ratios and their report rows, and the baseline target rows.

As in the smoke test, nothing here judges how fast anything was: the checks are on counts,
signs, shapes, clean-up and the rendering of the report.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
from pathlib import Path

import pytest

pytest.importorskip("pyperf")

from bench import processes as pr
from bench import report
from bench.__main__ import main as bench_main
from bench.scenarios import build_cases
from bench.suite import run_suite
from tests.bench.test_bench_smoke import _check_tables


def test_loopback_rtt_probe_returns_one_positive_value_per_ping() -> None:
    values = pr.loopback_rtt(samples=50, warmup=5)
    assert len(values) == 50
    assert all(v > 0 for v in values)


def test_fdatasync_probe_samples_and_removes_its_file(tmp_path: Path) -> None:
    values = pr.fdatasync_latency(str(tmp_path), samples=10, warmup=1)
    assert len(values) == 10
    assert all(v > 0 for v in values)
    assert os.listdir(tmp_path) == []


def test_processes_family_is_in_quick_and_full_and_tiny_only_when_named() -> None:
    quick = [c for c in build_cases("quick") if c.family == "processes"]
    full = [c for c in build_cases("full") if c.family == "processes"]
    assert [c.label for c in quick] == [c.label for c in full]
    labels = {c.label for c in quick}
    for n in (3, 5):
        for fsync in ("on", "off"):
            for size in ("16B", "1KiB"):
                assert f"processes n={n} tcp native fsync={fsync} {size}" in labels
    assert {"processes n=3 pysyncobj 16B", "processes n=3 pysyncobj 1KiB"} <= labels
    assert len(quick) == 10
    assert [c.label for c in quick if c.params.get("redis_benchmark")] == [report.PROCESSES_CASE]
    assert not [c for c in build_cases("tiny") if c.family == "processes"]
    assert len([c for c in build_cases("tiny", explicit=True) if c.family == "processes"]) == 10


def test_cli_lists_the_processes_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "processes n=3 pysyncobj 16B" in listed and "processes n=5 tcp native" in listed


def test_tiny_processes_cases_run_report_ratios_and_leave_no_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's 3-node fsync-on case (with redis-benchmark when installed) and, when
    PySyncObj can be had, its 3-node case, in one tiny run: metrics, report rows, ratios."""
    labels = [report.PROCESSES_CASE, report.PYSYNCOBJ_CASE]
    stopped: list[pr.NodeProcesses] = []
    stop = pr.NodeProcesses.stop

    def spy(self: pr.NodeProcesses) -> None:
        stopped.append(self)
        stop(self)

    monkeypatch.setattr(pr.NodeProcesses, "stop", spy)
    if importlib.util.find_spec("pysyncobj") is None:   # no pip install from a test
        monkeypatch.setattr(pr, "_PYSYNCOBJ", ["pysyncobj is not installed (test)", None])
    out = io.StringIO()
    suite = run_suite(labels, mode="tiny", seed=5, out_dir=str(tmp_path), stream=out,
                      command="pytest processes")
    engine_result, peer_result = suite.results
    assert engine_result.error is None and peer_result.error is None, out.getvalue()
    m = engine_result.outcome.metrics
    assert m["system"] == "engine" and m["connections"] >= 1 and m["depth"] > 0
    assert m["latency"]["ops"] >= 20 and m["latency"]["p50_us"] > 0
    assert m["throughput"]["commits"] > 0 and m["throughput"]["errors"] == 0
    assert m["baseline"]["rtt_p50_us"] > 0 and m["baseline"]["fdatasync_p50_us"] > 0
    assert set(m["redis_benchmark"]) == {"P1", "P16"}
    for rb in m["redis_benchmark"].values():
        assert rb.get("skipped") == pr.REDIS_BENCHMARK_MISSING or rb.get("rps", 0) > 0, rb
    # Every node process is gone and its temporary directory removed.
    assert stopped and all(len(c.procs) == 3 for c in stopped)
    assert all(p.poll() is not None for c in stopped for p in c.procs.values())
    assert not any(os.path.exists(c.root) for c in stopped)
    md = (tmp_path / "REPORT.md").read_text()
    assert "Separate node processes on loopback" in md and "Ratios (same run)" in md
    assert "throughput ours / PySyncObj" in md and "sequential p99 / (RTT + fdatasync)" in md
    _check_tables(md)
    data = json.loads((tmp_path / "results.json").read_text())
    ratios = {r["ratio"]: r for r in data["processes_ratios"]}
    assert {r["status"] for r in ratios.values()} <= {"met", "MISSED", "not measured"}
    assert "[processes] ratios (same run):" in out.getvalue()
    tput = next(r for name, r in ratios.items() if "16 B" in name and "PySyncObj" in name)
    if peer_result.outcome.skipped:
        assert tput["status"] == "not measured" and "skipped" in tput["detail"]
        assert peer_result.outcome.skipped in md
    else:
        pm = peer_result.outcome.metrics
        assert pm["system"] == "pysyncobj" and pm["throughput"]["commits"] > 0
        assert tput["value"] > 0 and tput["status"] in ("met", "MISSED")
        assert len(stopped) == 2


def _ok_case(label: str, family: str, metrics: dict) -> dict:
    return {"label": label, "family": family, "status": "ok", "metrics": metrics}


def _procs_case(label: str, params: dict, metrics: dict | None, status: str = "ok",
                skipped: str | None = None) -> dict:
    return {"label": label, "family": "processes", "params": params, "status": status,
            "metrics": metrics or {}, "skipped": skipped, "error": None}


def _procs_metrics(system: str, p50: float, p99: float, tput: float) -> dict:
    return {"system": system, "latency": {"ops": 100, "p50_us": p50, "p99_us": p99,
                                          "errors": 0},
            "throughput": {"commits_per_s": tput, "commits_per_s_min": tput / 2,
                           "commits_per_s_max": tput * 2, "errors": 0, "commits": 10},
            "connections": 4, "depth": 256, "node_cpu_cores": 1.0, "leader_cpu_cores": 0.5,
            "loadgen_cpu_cores": 0.1, "store_impl": f"{system} store",
            "baseline": {"rtt_p50_us": 50.0, "fdatasync_p50_us": 450.0, "rtt_p99_us": 60.0,
                         "fdatasync_p99_us": 500.0, "rtt_samples": 10, "fdatasync_samples": 10,
                         "filesystem": "ext4 on /"}}


def test_processes_ratios_targets_and_report_rows() -> None:
    engine16 = {"n": 3, "transport": "tcp", "store": "native", "fsync": True, "payload": 16}
    engine1k = dict(engine16, payload=1024)
    results = {
        report.PROCESSES_CASE: _procs_case(report.PROCESSES_CASE, engine16,
                                           _procs_metrics("engine", 900.0, 2500.0, 60_000.0)),
        report.PYSYNCOBJ_CASE: _procs_case(report.PYSYNCOBJ_CASE,
                                           {"n": 3, "system": "pysyncobj", "payload": 16},
                                           _procs_metrics("pysyncobj", 1e5, 2e5, 10_000.0)),
        "processes n=3 tcp native fsync=on 1KiB": _procs_case(
            "processes n=3 tcp native fsync=on 1KiB", engine1k,
            _procs_metrics("engine", 1500.0, 1900.0, 20_000.0)),
        "processes n=3 pysyncobj 1KiB": _procs_case(
            "processes n=3 pysyncobj 1KiB", {"n": 3, "system": "pysyncobj", "payload": 1024},
            None, status="skipped", skipped="pysyncobj could not be installed: offline"),
    }
    results[report.PROCESSES_CASE]["metrics"]["redis_benchmark"] = {
        "P1": {"skipped": pr.REDIS_BENCHMARK_MISSING},
        "P16": {"command": "redis-benchmark -P 16", "rps": 1234.0, "p50_ms": 1.5}}
    ratios = report.processes_ratios(results)
    by_name = {r["ratio"]: r for r in ratios}
    t16 = by_name["throughput ours / PySyncObj (3 nodes, 16 B; ours with fsync)"]
    assert t16["value"] == 6.0 and t16["status"] == "met" and t16["target"] == ">= 5x"
    t1k = by_name["throughput ours / PySyncObj (3 nodes, 1 KiB; ours with fsync)"]
    assert t1k["status"] == "not measured" and "offline" in t1k["detail"]
    p50 = by_name["sequential p50 / (RTT + fdatasync) (3 nodes, fsync on, 16 B)"]
    p99 = by_name["sequential p99 / (RTT + fdatasync) (3 nodes, fsync on, 16 B)"]
    assert p50["value"] == 1.8 and p50["status"] == "met"       # 900 / 500
    assert p99["value"] == 5.0 and p99["status"] == "MISSED"    # 2500 / 500 > 4
    p50_1k = by_name["sequential p50 / (RTT + fdatasync) (3 nodes, fsync on, 1 KiB)"]
    assert p50_1k["status"] == "MISSED"
    assert ratios[2]["case"] == report.PROCESSES_CASE   # the 3-node 16 B rows come first
    rows = {r["target"]: r for r in report.targets(results, None)}
    procs = [r for name, r in rows.items() if name.startswith("node processes:")]
    assert [r["status"] for r in procs] == ["met", "met", "MISSED"]
    lines = report.ratio_lines(ratios)
    assert len(lines) == len(ratios) and "6.00x (target >= 5x: met" in lines[0]
    md = "\n".join(report._section_processes(list(results.values())))
    assert "pysyncobj could not be installed: offline" in md
    assert pr.REDIS_BENCHMARK_MISSING in md and "1,234" in md
    assert "1.80x / 5.00x" in md
    assert _check_tables(md) == 3
    assert report.processes_ratios({}) == []


def test_baseline_and_peer_target_rows() -> None:
    baseline = {"rtt_p50_us": 50.0, "fdatasync_p50_us": 450.0}
    results = {
        report.BASELINE_CASE: _ok_case(report.BASELINE_CASE, "durability",
                                       {"latency": {"p50_us": 900.0}, "baseline": baseline}),
    }
    peer = {"rows": [], "target": {"ratio": 6.0, "engine_commits_per_s": 60_000.0,
                                   "peer_commits_per_s": 10_000.0, "peer_system": "pysyncobj"}}
    rows = {r["target"]: r for r in report.targets(results, peer)}
    (in_process,) = [r for n, r in rows.items() if "in-process" in n]
    (vs_peer,) = [r for n, r in rows.items() if "PySyncObj" in n]
    assert in_process["status"] == "met" and "1,000 us" in in_process["measured"]
    assert vs_peer["status"] == "met" and "6.00x" in vs_peer["measured"]
    missed = report.targets({}, {"rows": [], "target": {"error": "boom"}})
    assert [r["status"] for r in missed if "PySyncObj" in r["target"]] == ["not measured"]
    check = report.baseline_check(None, baseline)
    assert check["met"] is None and math.isnan(check["ratio"])
    check = report.baseline_check(900.0, baseline, 2100.0)
    assert check["met"] is True and check["p99_met"] is False and check["p99_ratio"] == 4.2
