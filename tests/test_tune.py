"""``raft-engine tune``: the recommendation is a pure, documented function of the measured
round trip and fdatasync time (engine/tune.py); the command prints it with its reasons."""

from __future__ import annotations

import math

import pytest

from engine import Config
from engine.cli import main as cli_main
from engine.tune import DEFAULT_FLOOR, first_round_win, measure, recommend


@pytest.mark.parametrize(("rtt", "fsync", "expected"), [
    # loopback-like: the 50 ms floor decides, range as wide as the minimum
    (0.0002, 0.001, (0.017, 0.05, 0.1, 0.004)),
    (0.0, 0.0, (0.017, 0.05, 0.1, 0.004)),
    # the paper's network (15 ms round trip): 10x broadcast, range widened for p >= 0.9
    (0.015, 0.002, (0.057, 0.17, 0.459, 0.01)),
    # across regions
    (0.05, 0.005, (0.184, 0.55, 1.512, 0.01)),
])
def test_recommendation_is_stable(rtt: float, fsync: float,
                                  expected: tuple[float, float, float, float]) -> None:
    rec = recommend(rtt, fsync)
    got = (rec.heartbeat_interval, rec.election_timeout_min, rec.election_timeout_max,
           rec.tick_interval)
    assert got == pytest.approx(expected)
    assert recommend(rtt, fsync) == rec
    Config(**rec.config_kwargs())  # always a valid Config
    assert rec.first_round_win >= 0.9 - 1e-9
    assert rec.expected_elections == pytest.approx(1 / rec.first_round_win)
    assert rec.pre_vote_cost == rtt
    assert len(rec.reasons) == 6


def test_rules() -> None:
    rec = recommend(0.02, 0.01, n=3, floor=0.01)
    assert rec.election_timeout_min == pytest.approx(0.3)  # 10 x (rtt + fsync)
    assert rec.heartbeat_interval == pytest.approx(0.1)    # a third of it
    assert rec.election_timeout_max - rec.election_timeout_min >= rec.election_timeout_min
    assert recommend(0.0, 0.0).election_timeout_min == DEFAULT_FLOOR
    with pytest.raises(ValueError):
        recommend(-1.0, 0.0)


def test_split_vote_model() -> None:
    assert first_round_win(0.005, 0.0075, 5) == 0.0        # 150-155 ms over a 15 ms RTT
    assert first_round_win(0.150, 0.0075, 5) == pytest.approx(0.95 ** 4)
    assert first_round_win(0.1, 0.01, 2) == 1.0            # one server left: no split
    assert math.isclose(first_round_win(1.0, 0.0, 5), 1.0)


def test_measure_loopback(tmp_path) -> None:
    m = measure((), str(tmp_path), rtt_samples=50, fsync_samples=5)
    assert 0 < m.rtt_p50 <= m.rtt_p99 and 0 < m.fsync_p50 <= m.fsync_p99
    assert m.rtt_target == "loopback" and not list(tmp_path.iterdir())


def test_command_prints_the_recommendation(capsys) -> None:
    assert cli_main(["tune", "--rtt-ms", "15", "--fsync-ms", "2"]) == 0
    out = capsys.readouterr().out
    assert "Config(heartbeat_interval=0.057, election_timeout_min=0.17, " \
           "election_timeout_max=0.459, tick_interval=0.01)" in out
    assert "split-vote model" in out and "PreVote adds one round trip" in out
