"""FaultPlan: determinism, rates, link cuts and validation; LinkOrder: FIFO under delays."""

from __future__ import annotations

import math
import threading

import pytest

from engine.errors import ConfigError
from engine.transport.faults import DEFAULT_REORDER_WINDOW, FaultPlan, LinkOrder

NODES = ["a", "b", "c", "d", "e"]


def _run(plan: FaultPlan, calls: int = 2000) -> list[tuple[float, ...]]:
    return [plan.decide(NODES[i % 5], NODES[(i * 7 + 1) % 5]) for i in range(calls)]


def _configured(seed: int) -> FaultPlan:
    plan = FaultPlan(seed)
    plan.set_faults(drop=0.2, duplicate=0.3, delay=(0.001, 0.01), reorder=True)
    return plan


def test_same_seed_same_decisions() -> None:
    assert _run(_configured(42)) == _run(_configured(42))


def test_different_seed_different_decisions() -> None:
    assert _run(_configured(1)) != _run(_configured(2))


def test_decisions_depend_only_on_the_call_sequence_not_on_threads() -> None:
    """The same calls made from another thread give the same answers (one lock, one rng)."""
    expected = _run(_configured(7))
    plan = _configured(7)
    result: list[tuple[float, ...]] = []
    worker = threading.Thread(target=lambda: result.extend(_run(plan)), name="test-worker")
    worker.start()
    worker.join()
    assert result == expected


def test_no_faults_delivers_once_immediately() -> None:
    plan = FaultPlan(0)
    assert not plan.active
    assert all(d == (0.0,) for d in _run(plan, 100))
    assert plan.link_up("a", "b")


def test_drop_one_drops_everything() -> None:
    plan = FaultPlan(3)
    plan.set_faults(drop=1.0)
    assert all(d == () for d in _run(plan, 500))


def test_drop_rate_is_roughly_respected() -> None:
    plan = FaultPlan(3)
    plan.set_faults(drop=0.5)
    dropped = sum(1 for d in _run(plan, 4000) if d == ())
    assert 1600 < dropped < 2400  # seeded, so this is a fixed number; the bound documents intent


def test_duplicate_one_delivers_twice() -> None:
    plan = FaultPlan(3)
    plan.set_faults(duplicate=1.0)
    assert all(d == (0.0, 0.0) for d in _run(plan, 500))


def test_delays_fall_in_range() -> None:
    plan = FaultPlan(5)
    plan.set_faults(delay=(0.01, 0.02), duplicate=0.5)
    decisions = _run(plan, 1000)
    assert {len(d) for d in decisions} == {1, 2}
    assert all(0.01 <= x <= 0.02 for d in decisions for x in d)


def test_reorder_without_delay_uses_the_reorder_window() -> None:
    plan = FaultPlan(5)
    plan.set_faults(reorder=True)
    decisions = _run(plan, 500)
    assert all(len(d) == 1 and 0.0 <= d[0] <= DEFAULT_REORDER_WINDOW for d in decisions)
    assert len({d[0] for d in decisions}) > 100  # genuinely random, so messages can overtake
    assert plan.decide_ordered("a", "b")[1] is True


def test_reset_faults_switches_everything_off() -> None:
    plan = FaultPlan(5)
    plan.set_faults(drop=0.5, duplicate=0.5, delay=(0, 1), reorder=True)
    plan.set_faults()
    assert not plan.active
    assert plan.decide("a", "b") == (0.0,)


def test_isolate_and_rejoin() -> None:
    plan = FaultPlan(0)
    plan.isolate("b")
    assert plan.decide("a", "b") == ()
    assert plan.decide("b", "c") == ()
    assert plan.decide("a", "c") == (0.0,)
    assert plan.link_up("b", "b")  # a node always reaches itself
    plan.rejoin("b")
    assert plan.decide("a", "b") == (0.0,)
    assert not plan.active


def test_partition_groups_and_unlisted_nodes() -> None:
    plan = FaultPlan(0)
    plan.partition(["a", "b"], ["c", "d"])
    assert plan.link_up("a", "b") and plan.link_up("d", "c")
    assert not plan.link_up("a", "c") and not plan.link_up("d", "b")
    # "e" is named in no group: cut from everyone.
    assert not plan.link_up("e", "a") and not plan.link_up("c", "e")
    assert plan.decide("b", "c") == ()


def test_partition_replaces_the_previous_one_and_heal_clears_all() -> None:
    plan = FaultPlan(0)
    plan.partition(["a"], ["b", "c"])
    plan.partition(["a", "b"], ["c"])
    assert plan.link_up("a", "b") and not plan.link_up("b", "c")
    plan.isolate("a")
    assert not plan.link_up("a", "b")
    plan.rejoin("a")  # rejoin does not undo the partition
    assert plan.link_up("a", "b") and not plan.link_up("a", "c")
    plan.isolate("b")
    plan.heal()
    assert all(plan.link_up(x, y) for x in NODES for y in NODES)
    assert not plan.active


def test_partition_rejects_a_node_in_two_groups() -> None:
    plan = FaultPlan(0)
    with pytest.raises(ConfigError, match=r"'b'.*one group"):
        plan.partition(["a", "b"], ["b", "c"])
    with pytest.raises(ConfigError, match=r"group 'n1' must be an iterable of node ids"):
        plan.partition("n1", ["n2"])
    assert not plan.active  # nothing applied


def test_link_cuts_do_not_consume_randomness() -> None:
    """Isolation checks are not random, so cutting a link does not shift later decisions."""
    reference = _configured(9)
    plan = _configured(9)
    plan.isolate("z")
    for _ in range(10):
        assert plan.decide("a", "z") == ()
    assert _run(plan) == _run(reference)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"drop": -0.1}, r"drop=-0.1 must be in \[0, 1\]"),
        ({"drop": 1.5}, r"drop=1.5 must be in \[0, 1\]"),
        ({"drop": math.nan}, r"drop=nan must be in \[0, 1\]"),
        ({"drop": "x"}, r"drop='x' must be a number"),
        ({"duplicate": 2}, r"duplicate=2.0 must be in \[0, 1\]"),
        ({"delay": (-1, 0)}, r"delay=\(-1, 0\): lo=-1 must be >= 0"),
        ({"delay": (0.2, 0.1)}, r"lo=0.2 must be <= hi=0.1"),
        ({"delay": (0, math.inf)}, r"hi must be finite"),
        ({"delay": 0.1}, r"delay=0.1 must be a pair"),
        ({"reorder": 1}, r"reorder=1 must be a bool"),
    ],
)
def test_set_faults_validation(kwargs: dict[str, object], pattern: str) -> None:
    plan = FaultPlan(0)
    plan.set_faults(drop=0.25)
    with pytest.raises(ConfigError, match=pattern):
        plan.set_faults(**kwargs)  # type: ignore[arg-type]
    # Nothing changed: the earlier drop rate is still in force.
    assert plan.active


def test_reorder_window_validation() -> None:
    with pytest.raises(ConfigError, match="reorder_window"):
        FaultPlan(0, reorder_window=-1)


def test_link_order_keeps_a_link_fifo() -> None:
    order = LinkOrder()
    assert order.schedule("l", now=10.0, delay=0.0, reorder=False) is None
    assert order.schedule("l", now=10.0, delay=0.5, reorder=False) == 10.5
    # A shorter delay (or none) later on the same link waits for the earlier copy.
    assert order.schedule("l", now=10.1, delay=0.1, reorder=False) == 10.5
    assert order.schedule("l", now=10.2, delay=0.0, reorder=False) == 10.5
    # Other links are independent.
    assert order.schedule("m", now=10.2, delay=0.0, reorder=False) is None
    assert order.has_pending()
    for _ in range(3):
        order.released("l")
    assert not order.has_pending()
    assert order.schedule("l", now=11.0, delay=0.0, reorder=False) is None


def test_link_order_lets_reordered_copies_overtake() -> None:
    order = LinkOrder()
    assert order.schedule("l", now=0.0, delay=0.5, reorder=True) == 0.5
    assert order.schedule("l", now=0.0, delay=0.1, reorder=True) == 0.1
    assert order.schedule("l", now=0.0, delay=0.0, reorder=True) is None
    # Switching reorder off mid-flight still queues behind the latest pending copy.
    assert order.schedule("l", now=0.0, delay=0.0, reorder=False) == 0.5
