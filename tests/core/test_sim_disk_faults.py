"""Disk faults in the simulator (engine/sim): seeded schedules where a node's disk loses its
newest durable entries and the node boots recovering (protocol-aware recovery, issue 12), and
the checkers that account for it.  Replay one seed: ``python -m engine.sim --seed 1234``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from engine.core import Message, MessageKind
from engine.membership import Membership
from engine.sim.checkers import SafetyChecker, SafetyViolation
from engine.sim.disk import DurableState
from engine.sim.simulator import STEPS, Params, Sim, run_schedule
from engine.types import Entry, HardState

#: The first seeds whose schedules include disk faults (fixed, so the test replays exactly).
DISK_SEEDS = [s for s in range(100) if Params.from_rng(s, random.Random(s)).disk_faults][:24]


def test_disk_fault_rate_is_drawn_apart() -> None:
    """About half the seeds have disk faults; the rate comes from its own rng, so the other
    seeds draw exactly the parameters (and schedules) they had before."""
    params = [Params.from_rng(s, random.Random(s)) for s in range(60)]
    assert 20 <= sum(1 for p in params if not p.disk_faults) <= 40
    assert len(DISK_SEEDS) == 24


def test_disk_fault_schedules_do_real_work() -> None:
    """Guard against a vacuous fault: across fixed disk-fault seeds, disks lose entries
    (committed ones too), the nodes boot recovering, every one ends recovering (checked to
    hold the entries it lost again), and the one-fault-at-a-time rule defers some."""
    stats: Counter[str] = Counter()
    for seed in DISK_SEEDS:
        sim = run_schedule(seed, STEPS)
        stats += sim.stats
        stuck = [i for i in sim.recovering() if i in sim.members()]
        assert not stuck, f"seed {seed}: {stuck} still recovering"
    assert stats["disk faults"] >= 10, dict(stats)
    assert stats["disk faults losing committed entries"] >= 2, dict(stats)
    assert stats["boots recovering"] >= stats["disk faults"]
    assert stats["recoveries"] >= stats["disk faults"]
    assert stats["disk faults deferred: a node is recovering"] >= 1


def _entry(index: int, data: bytes = b"x", term: int = 1) -> Entry:
    return Entry(index, term, 0, data)


def test_recovering_node_must_not_grant_votes_or_hide_its_state() -> None:
    checker = SafetyChecker(["1", "2", "3"])
    grant = Message(kind=MessageKind.VOTE_RESPONSE, src="2", dst="1", term=3, recovering=True)
    with pytest.raises(SafetyViolation, match="grants a vote"):
        checker.on_send("2", 5, [grant])
    plain = Message(kind=MessageKind.APPEND_RESPONSE, src="2", dst="1", term=3, index=4)
    with pytest.raises(SafetyViolation, match="without the recovering flag"):
        checker.on_send("2", 5, [plain])
    refusal = Message(kind=MessageKind.PRE_VOTE_RESPONSE, src="2", dst="1", term=3,
                      reject=True, recovering=True)
    checker.on_send("2", 5, [refusal])
    checker.on_send("2", 0, [grant, plain])  # not recovering: anything goes


def test_one_disk_fault_at_a_time() -> None:
    checker = SafetyChecker(["1", "2", "3"])
    checker.on_disk_fault("2", [_entry(1)])
    with pytest.raises(SafetyViolation, match="fault model"):
        checker.on_disk_fault("3", [_entry(1)])


def test_durability_excuses_only_the_entry_the_fault_took() -> None:
    """The newest committed entry must be durable on a quorum; the node a disk fault took
    that very entry from is excused while it recovers, nobody else and nothing else."""
    entry = _entry(1)
    checker = SafetyChecker(["1", "2", "3"], Membership(["1", "2", "3"]))
    checker.committed = [entry]
    checker.commit_term = [1]
    disks = {"1": DurableState(HardState(1, None, 1), [entry]),
             "2": DurableState(HardState(1, None, 0, 1), []), "3": DurableState()}
    with pytest.raises(SafetyViolation, match="durability"):
        checker._check_durability(disks)
    checker.lost["2"] = {1: _entry(1, b"other")}  # it lost a different entry there
    with pytest.raises(SafetyViolation, match="durability"):
        checker._check_durability(disks)
    checker.lost["2"] = {1: entry}
    checker._check_durability(disks)
    disks["2"].hard_state = HardState(1, None, 1)  # durable commit past its log, not recovering
    with pytest.raises(SafetyViolation, match="past durable log end"):
        checker._check_durability(disks)


def _take(sim: Sim, pred: Callable[[Message], bool]) -> list[Message]:
    taken = [m for m, _ in sim.queue if pred(m)]
    sim.queue = [(m, t) for m, t in sim.queue if not pred(m)]
    return taken


def _flush(sim: Sim, node_id: str) -> None:
    while sim.take_ready(node_id) or sim.pending[node_id]:
        while sim.persist_one(node_id):
            pass
    sim.check()


def test_stale_append_does_not_end_recovery() -> None:
    """A scripted schedule of the simulator: leader 1 sends 2 entry a (the message is
    duplicated), then entry b; 2 acknowledges both and b commits on {1, 2} (3 is cut off),
    before 2 learns that commit.  2's disk loses b; it boots recovering.  The stale duplicate
    of a's APPEND (leader_last = a's index) arrives: recovery must not end, since 2 still lacks
    b, which it acknowledged and the cluster committed counting it."""
    sim = Sim(0)  # 3 nodes
    sim.nodes["1"].campaign()
    sim.drain()
    assert sim.nodes["1"].raft.role.value == "leader"
    sim.cut = {("1", "3"), ("3", "1"), ("2", "3"), ("3", "2")}
    append = MessageKind.APPEND
    sim.nodes["1"].propose([b"a"])
    _flush(sim, "1")
    [stale] = _take(sim, lambda m: m.kind is append and m.dst == "2")
    sim.deliver(stale, None)
    _flush(sim, "2")
    acks = _take(sim, lambda m: m.src == "2")
    sim.nodes["1"].propose([b"b"])
    _flush(sim, "1")
    [second] = _take(sim, lambda m: m.kind is append and m.dst == "2")
    sim.deliver(second, None)
    _flush(sim, "2")
    for m in acks + _take(sim, lambda m: m.src == "2"):
        sim.deliver(m, None)
    _flush(sim, "1")
    _take(sim, lambda m: m.dst == "2")  # 2 never hears that b committed
    b = sim.checker.committed[-1]
    assert b.data == b"b" and sim.disks["2"].entries[-1] == b
    lost = sim.disks["2"].lose_tail(1)
    sim.checker.on_disk_fault("2", lost)
    sim._boot("2")
    sim.check()
    assert sim.nodes["2"].raft.recovering == b.index
    sim.deliver(stale, None)
    _flush(sim, "2")  # the checker raised here before the fix
    assert sim.nodes["2"].raft.recovering == b.index
    sim.settle()
    assert sim.nodes["2"].raft.recovering == 0
