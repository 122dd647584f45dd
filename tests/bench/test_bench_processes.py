"""Tests of the ``processes`` family's pieces and of the baseline target rows.

As in the smoke test, nothing here judges how fast anything was: the checks are on counts,
signs, shapes, clean-up and the rendering of the report.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("pyperf")

from bench import processes as pr
from bench import report
from bench.__main__ import main as bench_main
from bench.scenarios import build_cases
from bench.suite import run_suite
from engine import LocalCluster
from engine.kv.machine import KVMachine
from engine.kv.resp import Error
from engine.kv.server import KVServer
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


def test_resp_client_sequential_and_pipelined_sets_on_an_in_process_server(
        make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(1, state_machine=KVMachine)
    leader = cluster.wait_for_leader(timeout=20.0)
    with KVServer(leader, "127.0.0.1:0") as server:
        assert server.address is not None
        with pr.RespClient(server.address) as client:
            values, retries = pr.sequential_sets(client, b"v" * 16, ops=30, warmup_ops=3,
                                                 budget_s=10.0)
            assert len(values) == 30 and retries == 0
            assert all(v > 0 for v in values)
            result = pr.pipelined_sets(client, b"v" * 16, depth=16, warmup_s=0.05, windows=2,
                                       window_s=0.1)
            assert len(result.windows) == 2 and result.errors == 0
            assert all(s > 0 and c > 0 for s, c in result.windows)
            # Everything in flight was drained: the connection is in step again.
            assert client.call(b"GET", b"key:0") == b"v" * 16
            error = client.call(b"NOSUCH")
            assert isinstance(error, Error) and error.startswith("ERR unknown command")


def test_processes_is_full_only_unless_named() -> None:
    assert not [c for c in build_cases("quick") if c.family == "processes"]
    assert len([c for c in build_cases("full") if c.family == "processes"]) == 2
    assert len([c for c in build_cases("quick", explicit=True)
                if c.family == "processes"]) == 2


def test_cli_lists_processes_as_explicit_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--list"]) == 0
    assert "run with --scenario processes" in capsys.readouterr().out


def test_tiny_processes_case_runs_reports_and_leaves_no_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    label = "processes n=3 tcp native fsync=off 16B"
    stopped: list[pr.NodeProcesses] = []
    stop = pr.NodeProcesses.stop

    def spy(self: pr.NodeProcesses) -> None:
        stopped.append(self)
        stop(self)

    monkeypatch.setattr(pr.NodeProcesses, "stop", spy)
    out = io.StringIO()
    suite = run_suite([label], mode="tiny", seed=5, out_dir=str(tmp_path), stream=out,
                      command="pytest processes")
    (result,) = suite.results
    assert result.error is None, out.getvalue()
    if result.outcome.skipped:
        pytest.skip(f"the processes case could not run here: {result.outcome.skipped}")
    m = result.outcome.metrics
    assert m["latency"]["ops"] >= 20 and m["latency"]["p50_us"] > 0
    assert m["throughput"]["commits"] > 0 and m["throughput"]["errors"] == 0
    assert m["baseline"]["rtt_p50_us"] > 0 and m["baseline"]["fdatasync_p50_us"] > 0
    # The node processes are gone and their temporary directory removed.
    (cluster,) = stopped
    assert len(cluster.procs) == 3
    assert all(p.poll() is not None for p in cluster.procs.values())
    assert not os.path.exists(cluster.root)
    md = (tmp_path / "REPORT.md").read_text()
    assert "Separate node processes over TCP" in md
    _check_tables(md)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["cases"][0]["metrics"]["depth"] > 0


def _ok_case(label: str, family: str, metrics: dict) -> dict:
    return {"label": label, "family": family, "status": "ok", "metrics": metrics}


def test_baseline_and_peer_target_rows() -> None:
    baseline = {"rtt_p50_us": 50.0, "fdatasync_p50_us": 450.0}
    results = {
        report.BASELINE_CASE: _ok_case(report.BASELINE_CASE, "durability",
                                       {"latency": {"p50_us": 900.0}, "baseline": baseline}),
        report.PROCESSES_CASE: _ok_case(report.PROCESSES_CASE, "processes",
                                        {"latency": {"p50_us": 1500.0}, "baseline": baseline}),
    }
    peer = {"rows": [], "target": {"ratio": 6.0, "engine_commits_per_s": 60_000.0,
                                   "peer_commits_per_s": 10_000.0, "peer_system": "pysyncobj"}}
    rows = {r["target"]: r for r in report.targets(results, peer)}
    (in_process,) = [r for n, r in rows.items() if "in-process" in n]
    (procs,) = [r for n, r in rows.items() if "3 node processes" in n]
    (vs_peer,) = [r for n, r in rows.items() if "PySyncObj" in n]
    assert in_process["status"] == "met" and "1,000 us" in in_process["measured"]
    assert procs["status"] == "MISSED" and "RTT 50 us" in procs["measured"]
    assert vs_peer["status"] == "met" and "6.00x" in vs_peer["measured"]
    missed = report.targets({}, {"rows": [], "target": {"error": "boom"}})
    assert [r["status"] for r in missed if "PySyncObj" in r["target"]] == ["not measured"]
    check = report.baseline_check(None, baseline)
    assert check["met"] is None and math.isnan(check["ratio"])
