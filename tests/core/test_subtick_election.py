"""The election timeout at sub-tick resolution (RaftOptions.subticks_per_tick): drawn from the
seeded rng with an inclusive upper bound, fired by the driver inside a tick, restarted at the
phase a message arrived at; the classic whole-tick behaviour when subticks_per_tick is 1."""

from __future__ import annotations

import random

from engine.config import Config
from engine.core import MessageKind, RaftOptions
from engine.core.raft import Role
from tests.core.harness import CoreNetwork

SUB = dict(heartbeat_ticks=5, election_ticks_min=15, election_ticks_max=16,
           subticks_per_tick=10_000, election_subticks_min=150_000,
           election_subticks_max=155_000)


def _draws(net: CoreNetwork, node: str, rounds: int) -> list[int]:
    r = net.nodes[node].raft
    out = []
    for _ in range(rounds):
        out.append(r._election_draw)
        r.become_follower(r.term + 1, None)
    return out


def test_one_subtick_per_tick_is_the_classic_draw() -> None:
    """Same rng calls as before sub-ticks existed: randrange(min, max), upper bound excluded."""
    opts = RaftOptions(election_ticks_min=10, election_ticks_max=20)
    assert (opts.election_subticks_min, opts.election_subticks_max) == (10, 19)
    net = CoreNetwork(3, seed=5, options=opts)
    r = net.nodes["2"].raft
    assert r.randomized_election_timeout == r._election_draw
    assert all(10 <= d < 20 for d in _draws(net, "2", 50))


def test_narrow_range_keeps_its_randomness() -> None:
    """150-155 ms with a 10 ms tick: 15 or 16 ticks, but 5,001 distinct subtick values."""
    net = CoreNetwork(5, seed=3, **SUB)
    draws = [d for n in net.ids for d in _draws(net, n, 40)]
    assert all(150_000 <= d <= 155_000 for d in draws)
    assert len(set(draws)) > 150
    assert {net.nodes[n].raft.randomized_election_timeout for n in net.ids} <= {15, 16}


def test_same_seed_same_draws() -> None:
    assert _draws(CoreNetwork(3, seed=9, **SUB), "1", 20) == \
        _draws(CoreNetwork(3, seed=9, **SUB), "1", 20)
    assert _draws(CoreNetwork(3, seed=9, **SUB), "1", 20) != \
        _draws(CoreNetwork(3, seed=10, **SUB), "1", 20)


def test_config_options_draw_inclusive_bounds() -> None:
    options = RaftOptions.from_config(Config(election_timeout_min=0.150,
                                             election_timeout_max=0.155))
    assert options.subticks_per_tick == 10_000
    assert (options.election_subticks_min, options.election_subticks_max) == (150_000, 155_000)
    rng = random.Random(1)
    assert max(rng.randrange(options.election_subticks_min, options.election_subticks_max + 1)
               for _ in range(100_000)) == 155_000


def _advance_to_due(raw) -> int:
    for _ in range(100):
        due = raw.election_due()
        if due is not None:
            return due
        raw.tick()
    raise AssertionError("the election timer never came due")


def test_driver_fires_the_timer_inside_the_tick() -> None:
    net = CoreNetwork(3, seed=11, pre_vote=False, check_quorum=False, **SUB)
    raw = net.nodes["1"]
    r = raw.raft
    due = _advance_to_due(raw)
    assert r.election_elapsed == r.randomized_election_timeout - 1
    assert due == r._election_deadline - r.election_elapsed * SUB["subticks_per_tick"]
    assert 0 < due < SUB["subticks_per_tick"]
    raw.expire_election(due - 1)  # early: nothing happens
    assert r.role is Role.FOLLOWER
    raw.expire_election(due)
    assert r.role is Role.CANDIDATE
    assert raw.election_due() is None


def test_a_heartbeat_in_between_cancels_the_sub_tick_timer() -> None:
    net = CoreNetwork(3, seed=11, **SUB)
    net.elect("2")
    raw = net.nodes["1"]
    r = raw.raft
    r.election_elapsed = r.randomized_election_timeout - 1
    due = raw.election_due()
    assert due is not None
    leader = net.nodes["2"]
    while not net.queue:
        leader.tick()
        net.process_ready("2")
    raw.set_clock_phase(1234)
    beats = net.take(lambda m: m.kind is MessageKind.HEARTBEAT and m.dst == "1")
    assert beats
    for m in beats:
        net.deliver(m)
    assert r.election_elapsed == 0
    assert r._election_deadline == r._election_draw + 1234  # timed from the heartbeat
    raw.expire_election(SUB["subticks_per_tick"] - 1)
    assert r.role is Role.FOLLOWER


def test_lease_counts_subticks() -> None:
    """CheckQuorum's lease ends election_subticks_min after the last heartbeat, to the
    subtick, not at a tick boundary."""
    net = CoreNetwork(3, seed=4, **SUB)
    net.elect("2")
    r = net.nodes["1"].raft
    r.clock_phase = 0
    r._election_phase = 3000
    r.election_elapsed = 15
    r.clock_phase = 2999
    assert r._in_leader_lease()  # 150,000 - 3000 + 2999 subticks < 150,000
    r.clock_phase = 3000
    assert not r._in_leader_lease()


def test_same_seed_same_trace_with_subticks() -> None:
    def trace(seed: int) -> list[str]:
        net = CoreNetwork(5, seed=seed, **SUB)
        for step in range(120):
            for node in net.ids:
                raw = net.nodes[node]
                raw.tick()
                due = raw.election_due()
                if due is not None and step % 2:
                    raw.expire_election(due)
            net.stabilize()
        return [repr(m) for m in net.sent]

    assert trace(21) == trace(21)


def test_random_sub_tick_schedules_keep_one_leader_per_term() -> None:
    """Timers fired at random points of the tick, messages stepped at random phases, some
    dropped: never two leaders in one term, and a leader is elected."""
    rng = random.Random(8)
    net = CoreNetwork(5, seed=8, **SUB)
    leaders: dict[int, str] = {}
    for _ in range(400):
        for node in net.ids:
            raw = net.nodes[node]
            raw.tick()
            due = raw.election_due()
            if due is not None and rng.random() < 0.7:
                raw.expire_election(due + rng.randrange(0, SUB["subticks_per_tick"] - due))
        for node in net.ids:
            net.process_ready(node)
        batch, net.queue = net.queue, []
        for m in batch:
            if rng.random() < 0.1:
                continue
            net.nodes[m.dst].set_clock_phase(rng.randrange(SUB["subticks_per_tick"]))
            net.deliver(m)
        for node in net.ids:
            r = net.nodes[node].raft
            if r.role is Role.LEADER:
                assert leaders.setdefault(r.term, node) == node, (r.term, leaders)
    assert leaders
