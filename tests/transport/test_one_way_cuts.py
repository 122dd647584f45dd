"""One-way cuts (gray failures) in the FaultPlan, and both transports honouring them.

A cut link drops messages in one direction only; the reverse direction keeps working.  The
transport suite runs over the same harness as the Transport contract (memory, TCP on its own
threads, TCP on a caller's loop).
"""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.transport.faults import FaultPlan

from . import test_contract
from .test_contract import Harness
from .util import msg

IDS = ("a", "b", "c")


def _links(plan: FaultPlan) -> set[tuple[str, str]]:
    """The directed links between distinct nodes of IDS that are up."""
    return {(s, d) for s in IDS for d in IDS if s != d and plan.link_up(s, d)}


ALL_LINKS = {(s, d) for s in IDS for d in IDS if s != d}


def test_cut_is_one_way() -> None:
    plan = FaultPlan(0)
    plan.cut("a", "b")
    assert plan.active
    assert _links(plan) == ALL_LINKS - {("a", "b")}
    assert plan.decide("a", "b") == ()
    assert plan.decide("b", "a") == (0.0,)


def test_cut_outgoing_and_incoming() -> None:
    plan = FaultPlan(0)
    plan.cut_outgoing("a")
    assert _links(plan) == ALL_LINKS - {("a", "b"), ("a", "c")}
    plan.heal()
    plan.cut_incoming("a")
    assert _links(plan) == ALL_LINKS - {("b", "a"), ("c", "a")}
    assert plan.link_up("a", "a")  # a node always reaches itself


def test_heal_restores_every_cut_and_rejoin_only_undoes_isolate() -> None:
    plan = FaultPlan(0)
    plan.cut("a", "b")
    plan.cut_outgoing("b")
    plan.cut_incoming("c")
    plan.isolate("a")
    plan.rejoin("a")  # keeps the one-way cuts
    assert _links(plan) == ALL_LINKS - {("a", "b"), ("b", "a"), ("b", "c"), ("a", "c")}
    plan.heal()
    assert _links(plan) == ALL_LINKS
    assert not plan.active  # the fault-free fast path is back


def test_cut_combines_with_a_partition() -> None:
    plan = FaultPlan(0)
    plan.partition(["a", "b"], ["c"])
    plan.cut("b", "a")
    assert _links(plan) == {("a", "b")}


def test_cut_to_itself_is_refused() -> None:
    with pytest.raises(ConfigError, match="always reaches itself"):
        FaultPlan(0).cut("a", "a")


def test_link_state_draws_no_randomness() -> None:
    """Cuts do not consume the plan's rng: the rate decisions after them are unchanged."""
    plain, cut = FaultPlan(5), FaultPlan(5)
    for plan in (plain, cut):
        plan.set_faults(drop=0.3)
    cut.cut("a", "b")
    for _ in range(50):
        cut.decide("a", "b")  # dropped by the cut before any draw
    assert [plain.decide("b", "a") for _ in range(200)] == [
        cut.decide("b", "a") for _ in range(200)]


harness = test_contract.harness  # the contract suite's fixture: memory, tcp, tcp-loop


def test_transport_drops_one_direction_only(harness: Harness) -> None:
    """With a -> b cut, b still reaches a; after heal, a reaches b again (FIFO shows that
    nothing cut was delivered late)."""
    t = harness.start()
    got = harness.collectors
    harness.faults.cut("a", "b")
    t["a"].send([msg("a", "b", 1), msg("a", "c", 1)])
    t["b"].send([msg("b", "a", 1)])
    assert got["a"].wait_count(1) and got["c"].wait_count(1)
    harness.faults.heal()
    t["a"].send([msg("a", "b", 2)])
    assert got["b"].wait_count(1)
    assert [m.term for m in got["b"].messages] == [2]
    assert [m.term for m in got["a"].messages] == [1]


def test_transport_honours_cut_incoming_and_outgoing(harness: Harness) -> None:
    t = harness.start()
    got = harness.collectors
    harness.faults.cut_incoming("c")
    harness.faults.cut_outgoing("b")
    t["a"].send([msg("a", "c", 1), msg("a", "b", 1)])  # to c: cut; to b: delivered
    t["b"].send([msg("b", "a", 1), msg("b", "c", 1)])  # b sends nothing
    t["c"].send([msg("c", "a", 1), msg("c", "b", 1)])  # c sends fine
    assert got["b"].wait_count(2) and got["a"].wait_count(1)
    harness.faults.heal()
    t["a"].send([msg("a", "c", 2)])
    t["b"].send([msg("b", "a", 2)])
    assert got["c"].wait_count(1) and got["a"].wait_count(2)
    assert [(m.src, m.term) for m in got["c"].messages] == [("a", 2)]
    assert sorted((m.src, m.term) for m in got["a"].messages) == [("b", 2), ("c", 1)]
    assert sorted((m.src, m.term) for m in got["b"].messages) == [("a", 1), ("c", 1)]

