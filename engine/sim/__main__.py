"""``python -m engine.sim --seed N [--steps S] [--count C]``: run seeded schedules.

Prints ``SEED=... params=...`` before each run and exits 1 on the first violation with the
replay command; runs are exactly reproducible from the seed.
"""

from __future__ import annotations

import argparse
import random
import sys

from engine.sim.simulator import STEPS, Params, run_schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--count", type=int, default=1, help="how many seeds from --seed")
    parser.add_argument("--steps", type=int, default=STEPS, help="random actions per seed")
    args = parser.parse_args(argv)
    if args.count < 1 or args.steps < 1:
        parser.error("--count and --steps must be >= 1")
    for seed in range(args.seed, args.seed + args.count):
        params = Params.from_rng(seed, random.Random(seed))
        print(f"SEED={seed} nodes={params.n} drop={params.drop} duplicate={params.duplicate} "
              f"faults={params.faults} snapshot={params.snapshot} "
              f"membership={params.membership} spares={params.spares} "
              f"disk_faults={params.disk_faults} options={params.options}",
              flush=True)
        try:
            sim = run_schedule(seed, args.steps)
        except AssertionError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        print(f"  ok: {len(sim.checker.committed)} entries committed, "
              f"{len(sim.checker.leader_of_term)} terms with a leader, "
              f"{len(sim.checker.configs) - 1} configuration changes committed, "
              f"{sim.stats['disk faults']} disk faults, {sim.checker.recoveries} recoveries",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
