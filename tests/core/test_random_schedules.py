"""Seeded random schedules of the simulator (engine/sim) in CI: safety after every action,
liveness after healing.  Replay one seed: ``python -m engine.sim --seed 1234`` or
``RAFT_SEED=1234 pytest tests/core/test_random_schedules.py``.  More seeds: ``RAFT_SEEDS=2000``
(count) and ``RAFT_SEED_START``; longer runs: ``RAFT_STEPS``.
"""

from __future__ import annotations

import itertools
import os
import random
from collections import Counter

import pytest

from engine.sim.simulator import Params, run_schedule

_SEED = os.environ.get("RAFT_SEED")
SEEDS = ([int(_SEED)] if _SEED else
         list(range(int(os.environ.get("RAFT_SEED_START", "0")),
                    int(os.environ.get("RAFT_SEED_START", "0"))
                    + int(os.environ.get("RAFT_SEEDS", "200")))))
STEPS = int(os.environ.get("RAFT_STEPS", "1000"))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_schedule(seed: int) -> None:
    """Safety after every step and liveness after healing, for one seeded schedule (3 nodes for
    even seeds, 5 for odd)."""
    run_schedule(seed, STEPS)


def test_schedules_do_real_work() -> None:
    """Guard against a vacuous simulator: across a few seeds, leaders are elected in several
    terms, hundreds of entries commit, and faults (drops, restarts, partitions) happen."""
    terms, committed, restarts, partitions = 0, 0, 0, 0
    for seed in range(8):
        sim = run_schedule(seed, STEPS)
        terms += len(sim.checker.leader_of_term)
        committed += len(sim.checker.committed)
        restarts += sum(1 for t in sim.trace if t.startswith("restart"))
        partitions += sum(1 for t in sim.trace if t.startswith("partition"))
    assert terms >= 8 and committed >= 100 and restarts + partitions >= 1


def test_snapshot_schedules_do_real_work() -> None:
    """Guard against vacuous snapshot coverage: both kinds of seeds exist, and across the
    first snapshotting seeds nodes take snapshots, leaders send them, transfers succeed and
    fail, followers install them, and nodes restart from them."""
    rates = [Params.from_rng(seed, random.Random(seed)).snapshot for seed in range(60)]
    assert 10 <= rates.count(0.0) <= 30
    stats: Counter[str] = Counter()
    for seed in [s for s, rate in enumerate(rates) if rate][:12]:
        stats += run_schedule(seed, STEPS).stats
    for what in ("snapshots", "snapshot messages", "installs", "snapshot transfers ok",
                 "snapshot transfers failed", "restarts from snapshot"):
        assert stats[what] >= 1, f"no {what} in {dict(stats)}"
    assert stats["installs"] >= 5 and stats["snapshots"] >= 50


def test_command_line_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m engine.sim --seed N`` prints the seed's parameters and replays it; the same
    seed twice gives the same output."""
    from engine.sim.__main__ import main

    assert main(["--seed", "6", "--steps", "200"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("SEED=6 nodes=3 ")
    assert main(["--seed", "6", "--steps", "200"]) == 0
    assert capsys.readouterr().out == first


def test_membership_schedules_do_real_work() -> None:
    """Guard against vacuous membership coverage: both kinds of seeds exist, and across the
    first membership seeds changes of every broad kind are proposed, others are refused while
    one is in progress, leaders remove themselves, joint configurations and their C_new commit,
    learner-only changes commit, and joiners install snapshots."""
    rates = [Params.from_rng(seed, random.Random(seed)).membership for seed in range(60)]
    assert 15 <= rates.count(0.0) <= 45
    stats: Counter[str] = Counter()
    committed = []
    learner_only = 0
    for seed in [s for s, rate in enumerate(rates) if rate][:12]:
        sim = run_schedule(seed, STEPS)
        stats += sim.stats
        configs = [m for _, m in sim.checker.configs]
        committed += configs[1:]
        learner_only += sum(1 for a, b in itertools.pairwise(configs)
                            if not a.is_joint and not b.is_joint and a.voters == b.voters)
    for what in ("membership refused", "membership leader leaves", "membership replace",
                 "membership remove voter", "membership demote", "configurations put in force",
                 "installs by joiners"):
        assert stats[what] >= 1, f"no {what} in {dict(stats)}"
    assert stats["membership add learner"] + stats["membership add voter"] >= 2
    joint = [m for m in committed if m.is_joint]
    assert len(joint) >= 5 and len(committed) >= 2 * len(joint) and learner_only >= 1
