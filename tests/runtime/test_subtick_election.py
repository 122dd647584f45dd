"""The runtime fires the election timeout at its drawn resolution (engine/runtime/
election_timer.py) and warns when heartbeat round trips approach the election timeout
(engine/runtime/rtt.py).  No timing assertions: bounded waits only."""

from __future__ import annotations

import logging

import pytest

from engine import Config, CounterStateMachine, LocalCluster
from engine.runtime.rtt import WINDOW, RttMonitor


@pytest.mark.parametrize("pre_vote", [True, False])
def test_five_nodes_with_a_5ms_range_and_the_default_tick_elect(pre_vote: bool) -> None:
    """Before sub-tick timers every node drew the same 15-tick timeout and split votes never
    ended (55-62 terms in 10 s, no leader)."""
    config = Config(heartbeat_interval=0.075, election_timeout_min=0.150,
                    election_timeout_max=0.155, pre_vote=pre_vote, fsync=False)
    assert config.tick_interval == 0.01
    with LocalCluster(5, state_machine=CounterStateMachine, config=config, seed=3) as cluster:
        leader = cluster.wait_for_leader(timeout=20.0)
        assert leader.propose(b"1").result(timeout=10) == 1
        index = cluster.nodes.index(leader)
        cluster.crash(index)
        assert cluster.wait_for(lambda: cluster.leader() not in (None, leader), 20.0)


def test_rtt_monitor_warns_only_on_sustained_slow_round_trips(caplog) -> None:
    rtt = RttMonitor("n1", election_timeout_min=0.02, election_timeout_max=0.04,
                     check_quorum=True)
    now = 0.0
    with caplog.at_level(logging.WARNING, logger="engine.runtime.rtt"):
        rtt.broadcast(["n2"], now)
        assert rtt.response("n2", now + 0.05) == pytest.approx(0.05)  # one late answer
        for _ in range(WINDOW - 1):
            now += 0.01
            rtt.broadcast(["n2"], now)
            rtt.response("n2", now + 0.001)
        assert not caplog.records
        for _ in range(WINDOW):
            now += 0.02
            rtt.broadcast(["n2"], now)
            rtt.response("n2", now + 0.012)  # 60% of election_timeout_min
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "n2" in message and "election_timeout_min=20.0 ms" in message
    assert "raft-engine tune" in message
    assert rtt.response("n3", 1.0) is None


def test_rtt_monitor_is_quiet_without_check_quorum(caplog) -> None:
    rtt = RttMonitor("n1", election_timeout_min=0.02, election_timeout_max=0.04,
                     check_quorum=False)
    with caplog.at_level(logging.WARNING, logger="engine.runtime.rtt"):
        for k in range(2 * WINDOW):
            rtt.broadcast(["n2"], k * 0.1)
            rtt.response("n2", k * 0.1 + 0.015)
    assert not caplog.records


def test_a_leader_measures_heartbeat_round_trips() -> None:
    config = Config(heartbeat_interval=0.02, election_timeout_min=0.1,
                    election_timeout_max=0.2, fsync=False)
    with LocalCluster(3, state_machine=CounterStateMachine, config=config, seed=5) as cluster:
        leader = cluster.wait_for_leader(timeout=10.0)
        monitor = leader._running.rtt
        assert cluster.wait_for(lambda: monitor.samples >= 4, 10.0)
        assert all(x < 1.0 for q in monitor.last.values() for x in q)
