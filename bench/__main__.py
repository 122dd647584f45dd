"""``python -m bench``: the benchmark suite.

Usage::

    python -m bench                      # quick suite (same as --quick), about 3 minutes
    python -m bench --full               # every configuration, longer windows
    python -m bench --scenario churn --scenario throughput     # families or exact case labels
    python -m bench --scenario processes # node processes + separate load generator, PySyncObj
    python -m bench --engine-root DIR    # run the processes family's nodes from another tree
    python -m bench.ab --baseline REV    # A/B: another revision vs this tree, same harness
    python -m bench --list               # what the suite would run
    python -m bench --out DIR --seed 7   # output directory (default bench-results/), seed
    python -m bench --peer pysyncobj     # also run the workload on PySyncObj and print ratios
    python -m bench profile SCENARIO [--n 3] [--payload 16] [--transport memory] [--drop 0.05]

Outputs (in --out): <family>.json (pyperf), results.json, REPORT.md, *.png.  Measurement is
in-process, except the ``processes`` family: node processes, and a load generator in a process
of its own (see bench/scenarios.py for why and how the pyperf files are built).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from bench.scenarios import EXPLICIT_ONLY, FAMILIES, build_cases


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                epilog="Subcommand: python -m bench profile SCENARIO --help")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="the quick suite (default): n=1,3,5, 16 B, short windows")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the full suite: n=1,3,5,7, 16 B and 1 KiB, long windows")
    mode.add_argument("--tiny", dest="mode", action="store_const", const="tiny",
                      help=argparse.SUPPRESS)   # seconds-long windows, for the smoke test
    p.set_defaults(mode="quick")
    p.add_argument("--scenario", action="append", default=[], metavar="NAME",
                   help="run only this family or case label (repeatable)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--out", default="bench-results", metavar="DIR",
                   help="output directory (default: bench-results)")
    p.add_argument("--seed", type=int, default=1, help="seed of every cluster (default: 1)")
    p.add_argument("--peer", choices=["pysyncobj"],
                   help="also run the in-process latency/throughput workload on this peer")
    p.add_argument("--engine-root", metavar="DIR",
                   help="source tree the processes family runs its engine nodes from "
                        "(default: this one; its native store built in place)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "profile":
        from bench import profile
        return profile.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.list:
        cases = build_cases(args.mode)
        for name, family in FAMILIES.items():
            members = [c for c in cases if c.family == name]
            print(f"{name}: {family.title}")
            for c in members:
                print(f"    {c.label}")
            if not members and name in EXPLICIT_ONLY:
                print(f"    (not in --{args.mode}; run with --scenario {name})")
        print(f"{len(cases)} cases in --{args.mode} mode")
        return 0
    from bench.suite import run_suite

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)   # so node processes and temporary directories go too

    signal.signal(signal.SIGTERM, terminate)
    command = " ".join(["python -m bench", *argv])
    try:
        suite = run_suite(args.scenario, mode=args.mode, seed=args.seed, out_dir=args.out,
                          command=command, peer=args.peer,
                          engine_root=os.path.abspath(args.engine_root)
                          if args.engine_root else None)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    failed = [r for r in suite.results if r.error]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
