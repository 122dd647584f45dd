"""Writing the results: pyperf JSON per family, results.json, REPORT.md and PNG plots.

* ``<out>/<family>.json``: a pyperf BenchmarkSuite (``python -m pyperf show``/``compare_to``);
  one benchmark per case (or per case and arm), values in seconds, lower is better.
* ``<out>/results.json``: every summary number of the run, with the environment.
* ``<out>/REPORT.md``: one Markdown table per figure, the targets, the environment.
* ``<out>/*.png``: latency and throughput vs cluster size and vs drop rate (matplotlib is an
  optional extra; without it the report says the plots were skipped).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bench import figure16
from bench.scenarios import native_store_impl

if TYPE_CHECKING:
    from bench.suite import SuiteResult

NOISE_NOTE = (
    "Absolute numbers are noisy: the whole cluster (every node's loop, apply and transport "
    "threads) and the load generator share one Python process, one GIL and, on the reference "
    "machine, 2 shared virtual cores. Compare runs on the same machine with "
    "`python -m pyperf compare_to old/<family>.json new/<family>.json`, and read ablations as "
    "the same-run ratios they are.")


# -- small formatting helpers -------------------------------------------------------------------

def _num(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def _ratio(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.2f}x"


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 100:.1f}%"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


P50_BOUND = 2.0
P99_BOUND = 4.0
"""Targets: sequential p50 <= 2 x and p99 <= 4 x (loopback RTT + one fdatasync)."""


def baseline_check(p50_us: float | None, baseline: dict[str, Any],
                   p99_us: float | None = None) -> dict[str, Any]:
    """The targets "p50 <= 2 x (loopback RTT + one fdatasync)" (``met``) and, given ``p99_us``,
    "p99 <= 4 x (RTT + fdatasync)" (``p99_met``)."""
    unit = baseline["rtt_p50_us"] + baseline["fdatasync_p50_us"]
    ratio = p50_us / unit if p50_us is not None and unit > 0 else math.nan
    p99_ratio = p99_us / unit if p99_us is not None and unit > 0 else math.nan
    return {"p50_us": p50_us, "unit_us": unit, "bound_us": P50_BOUND * unit, "ratio": ratio,
            "met": None if math.isnan(ratio) else ratio <= P50_BOUND,
            "p99_us": p99_us, "p99_ratio": p99_ratio,
            "p99_met": None if math.isnan(p99_ratio) else p99_ratio <= P99_BOUND}


def _baseline_text(p50_us: float | None, baseline: dict[str, Any]) -> str:
    c = baseline_check(p50_us, baseline)
    return (f"p50 {_num(p50_us)} us vs 2 x (RTT {_num(baseline['rtt_p50_us'])} us + fdatasync "
            f"{_num(baseline['fdatasync_p50_us'])} us) = {_num(c['bound_us'])} us: "
            f"{_ratio(c['ratio'])} of RTT + fdatasync")


def one_line(r: dict[str, Any]) -> str:
    """A short summary of one case result for the progress output."""
    if r["status"] == "skipped":
        return f"skipped: {r['skipped']}"
    if r["status"] == "error":
        return f"error: {r['error']}"
    m = r["metrics"]
    fam = r["family"]
    if fam == "commit_latency":
        return (f"p50={_num(m.get('p50_us'))}us p99={_num(m.get('p99_us'))}us "
                f"max={_num(m.get('max_us'))}us ops={m.get('ops')}")
    if fam == "throughput":
        return f"{_num(m['commits_per_s'])} commits/s (errors {m['errors']})"
    if fam in ("durability", "faults"):
        lat = m["latency"]
        line = (f"{_num(m['throughput']['commits_per_s'])} commits/s, "
                f"p50={_num(lat.get('p50_us'))}us p99={_num(lat.get('p99_us'))}us")
        if m.get("baseline"):
            line += "; " + _baseline_text(lat.get("p50_us"), m["baseline"])
        return line
    if fam == "processes":
        lat, tput = m["latency"], m["throughput"]
        line = (f"sequential SET p50={_num(lat.get('p50_us'))}us p99={_num(lat.get('p99_us'))}us"
                f"; {_num(tput['commits_per_s'])} commits/s with {m['connections']} x "
                f"{m['depth']} pipelined (errors {tput['errors']})")
        if m.get("first_error") or lat.get("first_error"):
            line += f" (first error: {lat.get('first_error') or m.get('first_error')})"
        if r["params"].get("fsync") and m.get("baseline"):
            c = baseline_check(lat.get("p50_us"), m["baseline"], lat.get("p99_us"))
            line += (f"; RTT {_num(m['baseline']['rtt_p50_us'])} us + fdatasync "
                     f"{_num(m['baseline']['fdatasync_p50_us'])} us: p50 {_ratio(c['ratio'])}, "
                     f"p99 {_ratio(c['p99_ratio'])}")
        for name, rb in (m.get("redis_benchmark") or {}).items():
            line += (f"; redis-benchmark {name}: " + (rb.get("skipped") or rb.get("error")
                     or f"{_num(rb.get('rps'))} req/s p50 {_num(rb.get('p50_ms'), 3)} ms"))
        return line
    if fam == "churn":
        return (f"crashes={m['crashes']} acked={m['acked']} lost={m['lost']} "
                f"to_leader_p50={_num(m['time_to_leader_ms']['p50'])}ms "
                f"p99={_num(m['latency'].get('p99_us'))}us "
                f"availability={_pct(m['leader_availability'])}")
    if fam == "ablation_fast_backup":
        arms = m["arms"]
        return "; ".join(f"{k}: {v['seconds']:.3f}s {_num(v['messages'])} msgs"
                         for k, v in arms.items()) + f"; time ratio {_ratio(m['time_ratio'])}"
    if fam == "ablation_prevote":
        return "; ".join(
            f"{sit}: " + ", ".join(f"{k.rsplit('=', 1)[1]} {v['elections_per_min']:.1f}/min"
                                   for k, v in sm["arms"].items())
            for sit, sm in m["situations"].items()) + " (spurious elections, off vs on)"
    if fam.startswith("ablation_"):
        return " | ".join(
            f"{pair['situation']}: "
            + "; ".join(f"{k}: {_num(v['commits_per_s'])}/s"
                        + (f" p50={_num(v['latency'].get('p50_us'))}us" if "latency" in v else "")
                        for k, v in pair["arms"].items())
            + f"; ratio {_ratio(pair['ratio'])}" for pair in m["pairs"])
    if fam == "snapshots":
        c = m["catchup"]
        return (f"throughput ratio {_ratio(m['throughput']['ratio'])}; catch-up "
                + ", ".join(f"{k}: {v['seconds']:.2f}s" for k, v in c.items())
                + f"; transfer p50={_num(m['transfer_ms']['p50'], 1)}ms")
    if fam == "membership":
        return "; ".join(f"join via {k}: {v['seconds_to_catch_up']:.2f}s, "
                         f"{_num(v['bytes_received'])} B" for k, v in m["join"].items())
    if fam == "timeout_tuning":
        return (f"recover p50={_num(m['recover_to_commit_ms']['p50'], 1)}ms, "
                f"{m['under_drop']['elections_per_min']:.1f} elections/min under drop")
    if fam == "figure16":
        return figure16.one_line(m)
    return json.dumps(m)[:120]


# -- environment ------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               check=False).stdout.strip()
        return (head + (" (with uncommitted changes)" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _availability(suite: SuiteResult, key: str, value: str) -> str:
    hits = [r for r in suite.results if r.case.params.get(key) == value]
    if not hits:
        return "not run"
    if any(not r.error and not r.outcome.skipped for r in hits):
        return "measured"
    skipped = [r.outcome.skipped for r in hits if r.outcome.skipped]
    if skipped:
        return f"skipped: {skipped[0]}"
    return f"error: {hits[0].error}"


def _loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "-"


def environment(suite: SuiteResult) -> dict[str, Any]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    try:
        import matplotlib
        plots = f"matplotlib {matplotlib.__version__}"
    except ImportError:
        plots = "matplotlib not installed (plots skipped)"
    import pyperf

    import engine
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": suite.command,
        "mode": suite.mode,
        "seed": suite.seed,
        "wall_s": round(suite.wall_s, 1),
        "cpu": _cpu_model(),
        "cpus": f"{os.cpu_count()} logical, {affinity} usable",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "engine": f"{engine.__version__}, git {_git_commit()}",
        "pyperf": pyperf.__version__,
        "plots": plots,
        "gil_switch_interval_s": sys.getswitchinterval(),
        "load average (1 min) before / after": suite.load_before + " / " + _loadavg(),
        "transport memory": _availability(suite, "transport", "memory"),
        "transport tcp": _availability(suite, "transport", "tcp"),
        "store native": _availability(suite, "store", "native"),
        "native store implementation": native_store_impl(),
    }


# -- pyperf -----------------------------------------------------------------------------------

def write_pyperf(suite: SuiteResult, out_dir: str) -> list[str]:
    """One pyperf BenchmarkSuite file per family; returns the paths written."""
    import pyperf
    base = pyperf.Run([1.0], collect_metadata=True).get_metadata()
    base.pop("mem_max_rss", None)
    by_family: dict[str, list[Any]] = {}
    for r in suite.results:
        for s in r.outcome.series:
            runs = []
            for loops, values in s.runs:
                values = [v for v in values if v > 0]
                if not values:
                    continue
                meta = dict(base, name=s.name, unit="second", loops=int(max(1, loops)))
                if s.description:
                    meta["description"] = s.description
                meta["bench_seed"] = suite.seed
                meta["bench_mode"] = suite.mode
                runs.append(pyperf.Run(values, metadata=meta, collect_metadata=False))
            if runs:
                by_family.setdefault(r.case.family, []).append(pyperf.Benchmark(runs))
    paths = []
    for family, benchmarks in by_family.items():
        path = os.path.join(out_dir, f"{family}.json")
        pyperf.BenchmarkSuite(benchmarks).dump(path, replace=True)
        paths.append(path)
    return paths


# -- targets ----------------------------------------------------------------------------------

def _ok(results: dict[str, dict[str, Any]], label: str) -> dict[str, Any] | None:
    r = results.get(label)
    return r["metrics"] if r and r["status"] == "ok" else None


BASELINE_CASE = "durability n=3 tcp native fsync=on 16B"
PROCESSES_CASE = "processes n=3 tcp native fsync=on 16B"
PYSYNCOBJ_CASE = "processes n=3 pysyncobj 16B"
PEER_TARGET = 5.0
"""Engine (3 nodes, TCP, native store, fsync) throughput / PySyncObj's, same run."""


def _status(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "MISSED"


def _why_not(r: dict[str, Any] | None, label: str) -> str:
    if r is None:
        return f"`{label}` not run"
    return f"`{label}` {r['status']}: {r.get('skipped') or r.get('error') or '?'}"


def processes_ratios(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The processes family's ratios, each with its target and whether it is met:
    throughput ours (3 nodes, fsync on) / PySyncObj (3 nodes, default), >= 5x, per payload;
    sequential p50 / (RTT + fdatasync) <= 2x and p99 / (RTT + fdatasync) <= 4x for every
    fsync-on engine case (the first rows are the 3-node 16 B ones).  Empty when the family did
    not run."""
    procs = {k: r for k, r in results.items() if r["family"] == "processes"}
    if not procs:
        return []
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float, target: str, met: bool | None, detail: str,
            case: str) -> None:
        rows.append({"ratio": name, "value": value, "target": target, "met": met,
                     "status": _status(met), "detail": detail, "case": case})

    for size, text in (("16B", "16 B"), ("1KiB", "1 KiB")):
        ours_label = f"processes n=3 tcp native fsync=on {size}"
        peer_label = f"processes n=3 pysyncobj {size}"
        if ours_label not in procs and peer_label not in procs:
            continue
        ours, peer = _ok(procs, ours_label), _ok(procs, peer_label)
        name = f"throughput ours / PySyncObj (3 nodes, {text}; ours with fsync)"
        if ours and peer and peer["throughput"]["commits_per_s"]:
            a, b = ours["throughput"]["commits_per_s"], peer["throughput"]["commits_per_s"]
            add(name, a / b, f">= {PEER_TARGET:g}x", a / b >= PEER_TARGET,
                f"{_num(a)} vs {_num(b)} commits/s", ours_label)
        else:
            missing = [_why_not(procs.get(lbl), lbl) for lbl, m in
                       ((ours_label, ours), (peer_label, peer)) if not m]
            add(name, math.nan, f">= {PEER_TARGET:g}x", None,
                "; ".join(missing) or "PySyncObj committed nothing", ours_label)
    engine_fsync = sorted(
        (r for r in procs.values()
         if r["params"].get("system", "engine") == "engine" and r["params"].get("fsync")),
        key=lambda r: (r["label"] != PROCESSES_CASE, r["params"]["n"], r["params"]["payload"]))
    for r in engine_fsync:
        p = r["params"]
        where = f"{p['n']} nodes, fsync on, {_size(p['payload'])}"
        m = r["metrics"] if r["status"] == "ok" else None
        if m and m.get("baseline"):
            lat = m["latency"]
            c = baseline_check(lat.get("p50_us"), m["baseline"], lat.get("p99_us"))
            unit = (f"RTT {_num(m['baseline']['rtt_p50_us'])} us + fdatasync "
                    f"{_num(m['baseline']['fdatasync_p50_us'])} us = {_num(c['unit_us'])} us")
            add(f"sequential p50 / (RTT + fdatasync) ({where})", c["ratio"],
                f"<= {P50_BOUND:g}x", c["met"], f"p50 {_num(lat.get('p50_us'))} us; {unit}",
                r["label"])
            add(f"sequential p99 / (RTT + fdatasync) ({where})", c["p99_ratio"],
                f"<= {P99_BOUND:g}x", c["p99_met"],
                f"p99 {_num(lat.get('p99_us'))} us; {unit}", r["label"])
        else:
            for what, bound in (("p50", P50_BOUND), ("p99", P99_BOUND)):
                add(f"sequential {what} / (RTT + fdatasync) ({where})", math.nan,
                    f"<= {bound:g}x", None, _why_not(r, r["label"]), r["label"])
    return rows


def ratio_lines(ratios: list[dict[str, Any]]) -> list[str]:
    """The ratios as console lines."""
    return [f"{r['ratio']}: {_ratio(r['value'])} (target {r['target']}: {r['status']}; "
            f"{r['detail']})" for r in ratios]


def targets(results: dict[str, dict[str, Any]],
            peer: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The issue's performance targets, evaluated (reported, never asserted)."""
    rows: list[dict[str, Any]] = []

    def row(name: str, measured: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": measured,
                     "status": "not measured" if met is None else "met" if met else "MISSED"})

    t3 = _ok(results, "throughput n=3 memory 16B")
    row("3 nodes, memory, 16 B: >= 50,000 commits/s",
        f"{_num(t3['commits_per_s'])} commits/s" if t3 else "-",
        t3["commits_per_s"] >= 50_000 if t3 else None)
    l3 = _ok(results, "commit_latency n=3 memory 16B")
    row("3 nodes, memory, 16 B: p50 commit latency < 1 ms",
        f"{_num(l3['p50_us'])} us" if l3 else "-", l3["p50_us"] < 1000 if l3 else None)
    for n, share in ((5, 0.70), (7, 0.50)):
        tn = _ok(results, f"throughput n={n} memory 16B")
        if t3 and tn and t3["commits_per_s"]:
            ratio = tn["commits_per_s"] / t3["commits_per_s"]
            row(f"{n} nodes keep >= {share:.0%} of 3-node throughput", f"{ratio:.0%}",
                ratio >= share)
        else:
            row(f"{n} nodes keep >= {share:.0%} of 3-node throughput", "-", None)
    f0 = _ok(results, "faults n=3 16B drop=0%")
    f5 = _ok(results, "faults n=3 16B drop=5%")
    if f0 and f5 and f0["throughput"]["commits_per_s"]:
        ratio = f5["throughput"]["commits_per_s"] / f0["throughput"]["commits_per_s"]
        row("5% drop keeps >= 50% of no-fault throughput", f"{ratio:.0%}", ratio >= 0.5)
    else:
        row("5% drop keeps >= 50% of no-fault throughput", "-", None)
    churn = [r for r in results.values() if r["family"] == "churn" and r["status"] == "ok"]
    if churn:
        lost = sum(r["metrics"]["lost"] for r in churn)
        acked = sum(r["metrics"]["acked"] for r in churn)
        row("churn loses 0 acknowledged commits", f"{lost} lost of {_num(acked)} acked",
            lost == 0)
    else:
        row("churn loses 0 acknowledged commits", "-", None)
    name = "3 nodes TCP, native store, fsync: p50 <= 2 x (RTT + fdatasync)"
    base = _ok(results, BASELINE_CASE)
    if base and base.get("baseline"):
        p50 = base["latency"].get("p50_us")
        row(name + " (in-process cluster, commit latency)",
            _baseline_text(p50, base["baseline"]), baseline_check(p50, base["baseline"])["met"])
    else:
        row(name + " (in-process cluster, commit latency)", "-", None)
    primary = [r for r in processes_ratios(results) if r["case"] == PROCESSES_CASE]
    for r in primary[:3]:
        rows.append({"target": f"node processes: {r['ratio']} {r['target']}",
                     "measured": f"{_ratio(r['value'])} ({r['detail']})",
                     "status": r["status"]})
    name = (f"3 nodes TCP, native store, fsync: throughput >= {PEER_TARGET:g}x PySyncObj's "
            "(same run)")
    t = (peer or {}).get("target")
    if t and t.get("ratio") is not None and not math.isnan(t["ratio"]):
        row(name, f"{_ratio(t['ratio'])} ({_num(t['engine_commits_per_s'])} vs "
            f"{_num(t['peer_commits_per_s'])} commits/s, {t['peer_system']})",
            t["ratio"] >= PEER_TARGET)
    else:
        row(name, "run with --peer pysyncobj" if peer is None
            else (peer.get("skipped") or (t or {}).get("error") or "-"), None)
    return rows


# -- REPORT.md --------------------------------------------------------------------------------

def _section_latency(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        if r["status"] != "ok":
            rows.append([p["n"], p["transport"], _size(p["payload"]), r["status"] + ": "
                         + (r["skipped"] or r["error"] or ""), "", "", "", "", ""])
            continue
        rows.append([p["n"], p["transport"], _size(p["payload"]), _num(m["ops"]),
                     _num(m["p50_us"]), _num(m["p90_us"]), _num(m["p99_us"]), _num(m["max_us"]),
                     _num(m["mean_us"])])
    return _table(["n", "transport", "payload", "ops", "p50 us", "p90 us", "p99 us", "max us",
                   "mean us"], rows)


def _size(payload: int) -> str:
    return f"{payload // 1024} KiB" if payload >= 1024 and payload % 1024 == 0 else f"{payload} B"


def _section_throughput(rs: list[dict[str, Any]]) -> list[str]:
    base = {(r["params"]["transport"], r["params"]["payload"]): r["metrics"]["commits_per_s"]
            for r in rs if r["status"] == "ok" and r["params"]["n"] == 3}
    rows = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        if r["status"] != "ok":
            rows.append([p["n"], p["transport"], _size(p["payload"]),
                         r["status"] + ": " + (r["skipped"] or r["error"] or ""), "", "", "",
                         ""])
            continue
        b = base.get((p["transport"], p["payload"]))
        rows.append([p["n"], p["transport"], _size(p["payload"]), _num(m["commits_per_s"]),
                     f"{_num(m['commits_per_s_min'])} - {_num(m['commits_per_s_max'])}",
                     _num(m["commits"]), m["errors"],
                     _ratio(m["commits_per_s"] / b) if b else "-"])
    return _table(["n", "transport", "payload", "commits/s (median window)", "window range",
                   "commits", "errors", "vs n=3"], rows)


def _baseline_lines(label: str, p50_us: float | None, b: dict[str, Any]) -> list[str]:
    return ["", f"Baseline measured after `{label}` (same run, no cluster running): loopback "
            f"TCP round trip p50 {_num(b['rtt_p50_us'], 1)} us (p99 {_num(b['rtt_p99_us'], 1)} "
            f"us, {b['rtt_samples']} pings to an echo thread); append + fdatasync p50 "
            f"{_num(b['fdatasync_p50_us'], 1)} us (p99 {_num(b['fdatasync_p99_us'], 1)} us, "
            f"{b['fdatasync_samples']} samples, {b['filesystem']}). Target p50 <= 2 x (RTT + "
            f"fdatasync): {_baseline_text(p50_us, b)}."]


def _section_durability(rs: list[dict[str, Any]]) -> list[str]:
    mem = next((r["metrics"]["throughput"]["commits_per_s"] for r in rs
                if r["status"] == "ok" and r["params"]["store"] == "memory"), None)
    rows = []
    notes: list[str] = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        fsync = "-" if p["store"] == "memory" else ("on" if p["fsync"] else "off")
        transport = p.get("transport", "memory")
        if r["status"] != "ok":
            rows.append([transport, p["store"], fsync, r["status"] + ": "
                         + (r["skipped"] or r["error"] or ""), "", "", "", ""])
            continue
        tput = m["throughput"]["commits_per_s"]
        rows.append([transport, p["store"], fsync, _num(tput),
                     _ratio(tput / mem) if mem else "-",
                     _num(m["latency"]["p50_us"]), _num(m["latency"]["p99_us"]),
                     m.get("store_impl", "-")])
        if m.get("baseline"):
            notes += _baseline_lines(r["label"], m["latency"].get("p50_us"), m["baseline"])
    return _table(["transport", "store", "fsync", "commits/s", "vs memory", "p50 us", "p99 us",
                   "implementation"], rows) + notes


def _first_error(m: dict[str, Any]) -> str:
    text = m["latency"].get("first_error") or m.get("first_error") or ""
    return text[:80].replace("|", "/")


def _section_processes(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        system = p.get("system", "engine")
        fsync = ("no (in memory)" if system == "pysyncobj"
                 else "on" if p.get("fsync") else "off")
        head = [system, p["n"], fsync, _size(p["payload"])]
        if r["status"] != "ok":
            rows.append([*head, r["status"] + ": " + (r["skipped"] or r["error"] or "")]
                        + [""] * 8)
            continue
        lat, tput, b = m["latency"], m["throughput"], m["baseline"]
        c = baseline_check(lat.get("p50_us"), b, lat.get("p99_us"))
        with_sync = system == "engine" and p.get("fsync")
        rows.append([*head, _num(lat["ops"]), _num(lat.get("p50_us")), _num(lat.get("p99_us")),
                     f"{_num(b['rtt_p50_us'])} + {_num(b['fdatasync_p50_us'])}",
                     f"{_ratio(c['ratio'])} / {_ratio(c['p99_ratio'])}" if with_sync else "-",
                     f"{_num(tput['commits_per_s'])} ({_num(tput['commits_per_s_min'])} - "
                     f"{_num(tput['commits_per_s_max'])})",
                     f"{m['connections']} x {m['depth']}",
                     f"{lat.get('errors', 0)} / {tput['errors']}"
                     + (f" (first: {_first_error(m)})" if _first_error(m) else ""),
                     f"{_num(m['node_cpu_cores'], 2)} / {_num(m['leader_cpu_cores'], 2)} / "
                     f"{_num(m.get('loadgen_cpu_cores'), 2)}"])
    impls = sorted({r["metrics"]["store_impl"] for r in rs if r["status"] == "ok"})
    lines = ["Node processes on 127.0.0.1: the engine's `python -m engine.cli node` (Raft over "
             "TCP, RESP2 KV server, data in a temporary directory) and PySyncObj's "
             "`python -m bench.pysyncobj_node` (default SyncObjConf, replicated dict, RESP2 "
             "front-end in the same process). The load generator is `python -m bench.loadgen`, "
             "a process of its own, on the leader's client port: one sequential client (SET "
             "latency = send to reply, what a client sees), then several connections with SETs "
             "pipelined (commits/s over the measured span after a warm-up; window range in "
             "brackets). RTT and fdatasync p50s are measured in the same case once the nodes "
             "have stopped. Stores: " + "; ".join(impls) + ".", ""]
    lines += _table(["system", "n", "fsync", "payload", "sequential SETs", "p50 us", "p99 us",
                     "RTT + fdatasync p50 us", "p50 / p99 vs (RTT + fdatasync)",
                     "saturated commits/s (window range)", "connections x depth",
                     "errors seq / sat",
                     "CPU cores while saturated: all nodes / leader / load generator"], rows)
    results = {r["label"]: r for r in rs}
    ratios = processes_ratios(results)
    if ratios:
        lines += ["", "Ratios (same run):", ""]
        lines += _table(["ratio", "value", "target", "status", "detail"],
                        [[x["ratio"], _ratio(x["value"]), x["target"],
                          f"**{x['status']}**", x["detail"]] for x in ratios])
    redis = [(r["label"], name, rb) for r in rs if r["status"] == "ok"
             for name, rb in (r["metrics"].get("redis_benchmark") or {}).items()]
    if redis:
        lines += ["", "redis-benchmark against the leader of `" + redis[0][0] + "` (its own "
                  "process; requests/s and latency as it reports them):", ""]
        table = []
        for _label, _name, rb in redis:
            if rb.get("skipped") or rb.get("error"):
                table.append([f"`{rb.get('command', 'redis-benchmark')}`",
                              rb.get("skipped") or "error: " + rb["error"], "", "", ""])
            else:
                table.append([f"`{rb['command']}`", _num(rb.get("rps")),
                              _num(rb.get("avg_ms"), 3), _num(rb.get("p50_ms"), 3),
                              _num(rb.get("p99_ms"), 3)])
        lines += _table(["command", "requests/s", "avg ms", "p50 ms", "p99 ms"], table)
    return lines


def _section_faults(rs: list[dict[str, Any]]) -> list[str]:
    base = next((r["metrics"]["throughput"]["commits_per_s"] for r in rs
                 if r["status"] == "ok" and not r["params"].get("drop")), None)
    rows = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        if r["status"] != "ok":
            rows.append([_pct(p.get("drop", 0)), r["status"] + ": " + (r["error"] or ""),
                         "", "", "", "", "", ""])
            continue
        f = m["faults"]
        delay = f"{f['delay'][0] * 1e3:g}-{f['delay'][1] * 1e3:g} ms" if f["drop"] else "-"
        tput = m["throughput"]["commits_per_s"]
        rows.append([_pct(f["drop"]), delay, "yes" if f["reorder"] else "no", _num(tput),
                     _ratio(tput / base) if base else "-", _num(m["latency"]["p50_us"]),
                     _num(m["latency"]["p99_us"]),
                     f"{m['term_increases']} / {m['throughput']['errors']}"])
    return _table(["drop", "delay", "reorder", "commits/s", "vs 0%", "p50 us", "p99 us",
                   "term increases / failed proposals"], rows)


def _section_churn(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        if r["status"] != "ok":
            rows.append([p["n"], r["status"] + ": " + (r["error"] or "")] + [""] * 8)
            continue
        rows.append([p["n"], f"{m['seconds']:.1f}", m["crashes"],
                     f"{_num(m['time_to_leader_ms']['p50'])} / "
                     f"{_num(m['time_to_leader_ms']['max'])}",
                     _num(m["acked"]), f"**{m['lost']}**", _num(m["latency"].get("p50_us")),
                     _num(m["latency"].get("p99_us")), _pct(m["leader_availability"]),
                     _pct(m["commit_availability"])])
    return _table(["n", "seconds", "crashes", "time to new leader p50 / max ms", "acked commits",
                   "lost", "p50 us", "p99 us", "leader availability",
                   "commit availability (100 ms slots)"], rows)


def _section_ablations(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        m = r["metrics"]
        name = r["family"].removeprefix("ablation_")
        if r["status"] != "ok":
            rows.append([name, r["status"] + ": " + (r["error"] or r["skipped"] or ""),
                         "", "", ""])
            continue
        if r["family"] == "ablation_fast_backup":
            (a, ma), (b, mb) = list(m["arms"].items())[:2]
        if r["family"] == "ablation_fast_backup":
            rows.append([f"fast_backup ({m['entries']:,} divergent entries, "
                         f"{ma['leader_terms']} leader terms)", "convergence seconds",
                         f"{a}: {ma['seconds']:.3f}", f"{b}: {mb['seconds']:.3f}",
                         _ratio(m["time_ratio"]) + " (off/on)"])
            rows.append(["", "messages during convergence", f"{a}: {_num(ma['messages'])}",
                         f"{b}: {_num(mb['messages'])}",
                         _ratio(m["message_ratio"]) + " (off/on)"])
        elif r["family"] == "ablation_prevote":
            timing = m["timing"] if isinstance(m["timing"], str) else (
                f"hb {m['timing']['heartbeat_interval'] * 1e3:g} ms, election "
                f"{m['timing']['election_timeout_min'] * 1e3:g}-"
                f"{m['timing']['election_timeout_max'] * 1e3:g} ms")
            for situation, sm in m["situations"].items():
                (a, ma), (b, mb) = list(sm["arms"].items())
                what = (f"pre_vote+check_quorum, {_pct(m['drop'])} drop"
                        + (f", follower isolated {m['flaky'][1]:g} s every {m['flaky'][0]:g} s"
                           if "flaky" in situation else "") + f", {timing} timeouts")
                rows.append([what, "spurious elections / min (term increases)",
                             f"off: {ma['elections_per_min']:.1f}",
                             f"on: {mb['elections_per_min']:.1f}",
                             _ratio(sm["ratio"]) + " (off/on)"])
                rows.append(["", "leader changes / min; leaderless share",
                             f"off: {ma['leader_changes_per_min']:.1f}; "
                             f"{_pct(ma['leaderless_share'])}",
                             f"on: {mb['leader_changes_per_min']:.1f}; "
                             f"{_pct(mb['leaderless_share'])}", ""])
                rows.append(["", "light client p99 us; failed proposals",
                             f"off: {_num(ma['latency'].get('p99_us'))}; {ma['failed_ops']}",
                             f"on: {_num(mb['latency'].get('p99_us'))}; {mb['failed_ops']}", ""])
        else:
            for pair in m["pairs"]:
                (a, ma), (b, mb) = list(pair["arms"].items())[:2]
                rows.append([f"{name} ({pair['situation']})", "commits/s (median window)",
                             f"{a}: {_num(ma['commits_per_s'])}",
                             f"{b}: {_num(mb['commits_per_s'])}",
                             _ratio(pair["ratio"]) + f" ({b}/{a})"])
                if "p50_ratio" in pair:
                    rows.append(["", "sequential commit latency p50 / p99 us",
                                 f"{a}: {_num(ma['latency'].get('p50_us'))} / "
                                 f"{_num(ma['latency'].get('p99_us'))}",
                                 f"{b}: {_num(mb['latency'].get('p50_us'))} / "
                                 f"{_num(mb['latency'].get('p99_us'))}",
                                 _ratio(pair["p50_ratio"]) + f" (p50 {a}/{b})"])
    return _table(["ablation", "metric", "A", "B", "ratio"], rows)


def _section_tuning(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        p, m = r["params"], r["metrics"]
        hb, lo, hi = p["point"]
        if r["status"] != "ok":
            rows.append([f"{hb * 1e3:g}", f"{lo * 1e3:g}-{hi * 1e3:g}",
                         r["status"] + ": " + (r["error"] or "")] + [""] * 5)
            continue
        d = m["under_drop"]
        rows.append([f"{hb * 1e3:g}", f"{lo * 1e3:g}-{hi * 1e3:g}", m["crashes"],
                     f"{_num(m['recover_to_leader_ms']['p50'], 1)} / "
                     f"{_num(m['recover_to_leader_ms']['max'], 1)}",
                     f"{_num(m['recover_to_commit_ms']['p50'], 1)} / "
                     f"{_num(m['recover_to_commit_ms']['max'], 1)}",
                     f"{d['elections_per_min']:.1f}", f"{d['leader_changes_per_min']:.1f}",
                     _pct(d["leaderless_share"])])
    return _table(["heartbeat ms", "election timeout ms", "crashes",
                   "crash -> new leader p50 / max ms", "crash -> first commit p50 / max ms",
                   "elections/min under drop+delay", "leader changes/min",
                   "leaderless share"],
                  rows)


def _section_snapshots(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        if r["status"] != "ok":
            rows.append([r["status"] + ": " + (r["error"] or r["skipped"] or ""), "", "", ""])
            continue
        m = r["metrics"]
        pair = m["throughput"]
        (a, ma), (b, mb) = list(pair["arms"].items())[:2]
        rows.append(["commit throughput, 10,000-key state machine",
                     f"{a}: {_num(ma['commits_per_s'])}/s",
                     f"{b}: {_num(mb['commits_per_s'])}/s",
                     _ratio(pair["ratio"]) + f" ({b} / {a})"])
        log, snap = m["catchup"]["log"], m["catchup"]["snapshot"]
        rows.append([f"follower {m['catchup_entries']:,} entries behind catches up",
                     f"from the log: {log['seconds']:.2f} s, {_num(log['messages'])} msgs",
                     f"by snapshot: {snap['seconds']:.2f} s, {_num(snap['messages'])} msgs, "
                     f"{_num(snap['snapshot_bytes'])} B state"
                     + ("" if snap["via_snapshot"] else " (no snapshot was needed)"),
                     _ratio(log["seconds"] / snap["seconds"] if snap["seconds"] else math.nan)
                     + " (log / snapshot time)"])
        tr = m["transfer_ms"]
        rows.append(["leadership transfer", f"p50 {_num(tr['p50'], 1)} ms",
                     f"max {_num(tr['max'], 1)} ms ({tr['count']} transfers)", ""])
    return _table(["measure", "A", "B", "ratio"], rows)


def _section_membership(rs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in rs:
        if r["status"] != "ok":
            rows.append([r["status"] + ": " + (r["error"] or r["skipped"] or ""), "", "", "", "",
                         ""])
            continue
        m = r["metrics"]
        for name, j in m["join"].items():
            rows.append([f"{m['entries']:,} entries, via {name}"
                         + ("" if j["via_snapshot"] == (name == "snapshot")
                            else " (unexpected path)"),
                         f"{j['seconds_to_catch_up']:.2f}", f"{j['seconds_to_voter']:.2f}",
                         _num(j["bytes_received"]), _num(j["messages_received"]),
                         "yes" if j["caught_up"] else "NO"])
    return _table(["new empty node joins a 3-node cluster", "s to catch up (learner)",
                   "s to voter", "bytes received", "messages received", "caught up"], rows)


SECTIONS = [
    ("commit_latency", "Commit latency vs cluster size (one sequential client)",
     _section_latency),
    ("throughput", "Throughput at saturation vs cluster size", _section_throughput),
    ("durability", "Durability: memory store vs native store (n=3, 16 B; in-process cluster)",
     _section_durability),
    ("processes", "Separate node processes on loopback, load generator in its own process "
     "(engine vs PySyncObj, RTT/fdatasync baseline, redis-benchmark)", _section_processes),
    ("faults", "Faults: drop rate with matching delay and reordering (n=3, 16 B)",
     _section_faults),
    ("churn", "Leader churn (crash the leader every 1-2 s, restart it)", _section_churn),
    ("ablation", "Ablations (same-run ratios)", _section_ablations),
    ("timeout_tuning", "Timeout tuning (n=3, defaults otherwise; recovery after a leader crash, "
     "spurious elections under 5% drop with 0-20 ms delay and reordering)", _section_tuning),
    ("figure16", "Raft paper Figure 16: time to elect a new leader after the leader crashes "
     "(figure16.png)", figure16.section),
    ("snapshots", "Snapshots and leadership transfer (n=3)", _section_snapshots),
    ("membership", "Membership: a new node joins (learner -> caught up -> voter)",
     _section_membership),
]


def _section_peer(peer: dict[str, Any]) -> list[str]:
    if peer.get("skipped"):
        return [f"Skipped: {peer['skipped']}"]
    rows = []
    for row in peer["rows"]:
        if row.get("error"):
            rows.append([row["n"], row["system"], row["transport"], row.get("log", "-"),
                         "error: " + row["error"], "", "", "", ""])
            continue
        rows.append([row["n"], row["system"], row["transport"], row.get("log", "-"),
                     _num(row.get("p50_us")), _num(row.get("p99_us")),
                     _num(row.get("commits_per_s")), _ratio(row.get("throughput_ratio")),
                     _ratio(row.get("p50_ratio"))])
    lines = _table(["n", "system", "transport", "log", "p50 us", "p99 us", "commits/s",
                    "throughput ratio (engine / peer)", "p50 ratio (peer / engine)"], rows)
    t = peer.get("target")
    if t:
        ratio = t.get("ratio")
        if ratio is None or math.isnan(ratio):
            verdict = f"not measured ({t.get('error') or 'no ratio'})"
        else:
            verdict = (f"{_ratio(ratio)} = {_num(t['engine_commits_per_s'])} / "
                       f"{_num(t['peer_commits_per_s'])} commits/s ({t['peer_system']}): "
                       + ("met" if ratio >= PEER_TARGET else "MISSED"))
        lines += ["", f"Target: 3 nodes over TCP, native store with fsync, throughput >= "
                  f"{PEER_TARGET:g}x PySyncObj's on the same workload in the same run: "
                  f"**{verdict}**."]
    return [*lines, "", peer.get("note", "")]


def render_markdown(suite: SuiteResult, data: dict[str, Any], plots: list[str],
                    plot_note: str | None) -> str:
    env = data["environment"]
    lines = [f"# Benchmark report ({suite.mode})", "",
             f"Command: `{env['command']}` (wall time {env['wall_s']:.1f} s, seed {suite.seed})",
             "", NOISE_NOTE, "", "## Environment", ""]
    lines += _table(["item", "value"], [[k, str(v).replace("|", "/")] for k, v in env.items()])
    lines += ["", "## Targets (reported, not asserted)", ""]
    lines += _table(["target", "measured", "status"],
                    [[t["target"], t["measured"], t["status"]] for t in data["targets"]])
    for number, (key, title, render) in enumerate(SECTIONS, 1):
        rs = [r for r in data["cases"]
              if r["family"] == key or (key == "ablation" and r["family"].startswith(key))]
        if not rs:
            continue
        lines += ["", f"## Figure {number}: {title}", ""]
        lines += render(rs)
    if suite.peer is not None:
        lines += ["", "## Peer comparison: PySyncObj", "", *_section_peer(suite.peer)]
    lines += ["", "## Plots", ""]
    if plots:
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    elif not plot_note:
        lines.append("No plottable figure in this run (plots cover cluster size and drop rate).")
    if plot_note:
        lines.append(plot_note)
    problems = [r for r in data["cases"] if r["status"] != "ok"]
    if problems:
        lines += ["", "## Skipped and failed cases", ""]
        lines += [f"- `{r['label']}`: {r['status']}: {r['skipped'] or r['error']}"
                  for r in problems]
    lines += ["", "## Per-case wall time and CPU", "",
              "CPU is this process's CPU time (all threads) over the case's wall time; a "
              "GIL-bound cluster uses a little over 1 core. Much less, with a high load "
              "average, means other processes took the cores and the numbers are low.", ""]
    lines += _table(["case", "status", "wall s", "CPU cores used", "load avg before"],
                    [[r["label"], r["status"], f"{r['wall_s']:.1f}",
                      _num(r.get("cpu_cores_used"), 2), r.get("loadavg_1m_before", "-")]
                     for r in data["cases"]])
    lines += ["", "## How to read and reproduce", "",
              "- Latency: seconds from `propose()` to its future resolving on the leader, one "
              "client, after warm-up proposals; a retried proposal counts from its first try.",
              "- Throughput: 1,000 proposals kept outstanding on the leader; commits counted "
              "per window after a warm-up; the median window is reported.",
              "- Processes: the same two measurements made from outside the cluster by "
              "`python -m bench.loadgen` in a process of its own, with RESP SETs over TCP to "
              "node processes (the engine's and PySyncObj's); throughput is the commits/s over "
              "the measured span after a warm-up; the RTT and fdatasync baseline is measured in "
              "the same case once the nodes have stopped. `python -m bench.ab` measures another "
              "revision of the engine against this one with the same harness.",
              "- pyperf files hold seconds (per proposal, or per commit for throughput), lower "
              "is better: `python -m pyperf show bench-results/throughput.json`.",
              f"- Re-run: `{env['command']}`; one scenario: `python -m bench --scenario "
              "churn`; profile: `python -m bench profile throughput --n 3`."]
    return "\n".join(lines) + "\n"


# -- plots ------------------------------------------------------------------------------------

def write_plots(data: dict[str, Any], out_dir: str) -> tuple[list[str], str | None]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ("Plots skipped: matplotlib is not installed "
                    "(`pip install -e '.[bench]'` installs it).")
    ok = [r for r in data["cases"] if r["status"] == "ok"]
    paths = []

    def save(fig: Any, name: str) -> None:
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    lat = [r for r in ok if r["family"] == "commit_latency"]
    if lat:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in sorted({(r["params"]["transport"], r["params"]["payload"]) for r in lat}):
            rs = sorted((r for r in lat
                         if (r["params"]["transport"], r["params"]["payload"]) == key),
                        key=lambda r: r["params"]["n"])
            ns = [r["params"]["n"] for r in rs]
            label = f"{key[0]} {_size(key[1])}"
            ax.plot(ns, [r["metrics"]["p50_us"] for r in rs], "o-", label=f"p50 {label}")
            ax.plot(ns, [r["metrics"]["p99_us"] for r in rs], "s--", label=f"p99 {label}")
        ax.set_xlabel("cluster size")
        ax.set_xticks(sorted({r["params"]["n"] for r in lat}))
        ax.set_ylim(bottom=0)
        ax.set_ylabel("commit latency (us)")
        ax.set_title("Commit latency vs cluster size")
        ax.legend(fontsize="small")
        save(fig, "latency_vs_cluster_size.png")
    tput = [r for r in ok if r["family"] == "throughput"]
    if tput:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in sorted({(r["params"]["transport"], r["params"]["payload"]) for r in tput}):
            rs = sorted((r for r in tput
                         if (r["params"]["transport"], r["params"]["payload"]) == key),
                        key=lambda r: r["params"]["n"])
            ax.plot([r["params"]["n"] for r in rs],
                    [r["metrics"]["commits_per_s"] for r in rs], "o-",
                    label=f"{key[0]} {_size(key[1])}")
        ax.axhline(50_000, color="grey", linestyle=":", label="target (n=3)")
        ax.set_xlabel("cluster size")
        ax.set_xticks(sorted({r["params"]["n"] for r in tput}))
        ax.set_ylim(bottom=0)
        ax.set_ylabel("commits/s")
        ax.set_title("Throughput at saturation vs cluster size")
        ax.legend(fontsize="small")
        save(fig, "throughput_vs_cluster_size.png")
    faults = sorted((r for r in ok if r["family"] == "faults"),
                    key=lambda r: r["params"].get("drop", 0))
    if faults:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
        drops = [r["params"].get("drop", 0) * 100 for r in faults]
        ax.plot(drops, [r["metrics"]["throughput"]["commits_per_s"] for r in faults], "o-")
        ax.set_xlabel("drop rate (%)")
        ax.set_ylabel("commits/s")
        ax.set_ylim(bottom=0)
        ax.set_xticks(drops)
        ax.set_title("Throughput vs drop rate (n=3)")
        ax2.plot(drops, [r["metrics"]["latency"]["p50_us"] for r in faults], "o-", label="p50")
        ax2.plot(drops, [r["metrics"]["latency"]["p99_us"] for r in faults], "s--", label="p99")
        ax2.set_yscale("log")
        ax2.set_xlabel("drop rate (%), with matching delay and reordering")
        ax2.set_ylabel("commit latency (us, log scale)")
        ax2.set_xticks(drops)
        ax2.set_title("Latency vs drop rate (n=3)")
        ax2.legend(fontsize="small")
        save(fig, "vs_drop_rate.png")
    stages = {r["label"]: r["metrics"]["stages_us"] for r in ok
              if isinstance(r.get("metrics"), dict) and r["metrics"].get("stages_us")
              and (r["family"] == "processes"
                   or (r["params"].get("n") == 3 and r["params"].get("transport") == "memory"))}
    if stages:
        from bench.metrics_overhead import plot_stages
        path = plot_stages(stages, os.path.join(out_dir, "commit_stages.png"))
        if path:
            paths.append(path)
    paths += figure16.suite_plots(ok, out_dir)
    return paths, None


# -- everything -------------------------------------------------------------------------------

def write_all(suite: SuiteResult, out_dir: str) -> list[str]:
    """Write the pyperf files, results.json, plots and REPORT.md; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    cases = [r.to_json() for r in suite.results]
    by_label = {c["label"]: c for c in cases}
    data = {"environment": suite.environment, "cases": cases,
            "targets": targets(by_label, suite.peer),
            "processes_ratios": processes_ratios(by_label),
            "peer": suite.peer}
    written = write_pyperf(suite, out_dir)
    try:
        plots, note = write_plots(data, out_dir)
    except Exception as exc:   # a plotting problem must not cost the tables
        plots, note = [], f"Plots failed: {type(exc).__name__}: {exc}"
    written += plots
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(_clean(data), f, indent=2, default=str, allow_nan=False)
        f.write("\n")
    written.append(path)
    path = os.path.join(out_dir, "REPORT.md")
    with open(path, "w") as f:
        f.write(render_markdown(suite, data, plots, note))
    written.append(path)
    return written


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_clean(v) for v in obj]
    return obj
