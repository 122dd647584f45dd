"""Config rules for the election timeout range and the tick (issue 18): a range keeps its
randomness whatever the tick; what cannot work is rejected naming the field and the rule."""

from __future__ import annotations

import pytest

from engine import Config, ConfigError
from engine.config import MIN_ELECTION_RANGE, SUBTICK
from engine.core import RaftOptions


@pytest.mark.parametrize(("lo", "hi", "tick"), [
    (0.150, 0.155, 0.01),    # the case: one 15-tick value before sub-ticks
    (0.150, 0.151, 0.01),    # the paper's narrowest range, at the default tick
    (0.150, 0.1501, 0.01),   # exactly MIN_ELECTION_RANGE wide
    (0.012, 0.024, 0.001),
])
def test_narrow_ranges_are_accepted_and_keep_their_resolution(lo: float, hi: float,
                                                              tick: float) -> None:
    config = Config(heartbeat_interval=lo / 2, election_timeout_min=lo,
                    election_timeout_max=hi, tick_interval=tick)
    options = RaftOptions.from_config(config)
    assert options.subticks_per_tick * SUBTICK == pytest.approx(tick)
    assert options.election_subticks_min == round(lo / SUBTICK)
    assert options.election_subticks_max == round(hi / SUBTICK)  # inclusive
    assert options.election_subticks_max - options.election_subticks_min + 1 >= 100
    assert config.election_ticks_max > config.election_ticks_min


@pytest.mark.parametrize(("kwargs", "fragments"), [
    ({"election_timeout_min": 0.150, "election_timeout_max": 0.15005},
     ["election_timeout_max=0.15005", f"election_timeout_min=0.15 + {MIN_ELECTION_RANGE}",
      "100 distinct 1 us values"]),
    ({"election_timeout_max": 0.15}, ["election_timeout_max=0.15 must be >"]),
    ({"tick_interval": 5e-7, "heartbeat_interval": 0.05},
     ["tick_interval=5e-07 must be >= 1e-06"]),
    ({"tick_interval": 0.05, "heartbeat_interval": 0.05, "election_timeout_min": 0.06,
      "election_timeout_max": 0.07}, ["tick_interval=0.05 is too coarse", "heartbeat_interval"]),
    ({"tick_interval": 0.06}, ["tick_interval=0.06 must be <= heartbeat_interval"]),
])
def test_rejected_cases_name_field_and_rule(kwargs: dict[str, float],
                                            fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_core_options_check_subtick_bounds() -> None:
    with pytest.raises(ConfigError, match="election_subticks_max"):
        RaftOptions(subticks_per_tick=10, election_subticks_min=150, election_subticks_max=149)
    with pytest.raises(ConfigError, match="subticks_per_tick"):
        RaftOptions(subticks_per_tick=0)
    with pytest.raises(ConfigError, match="election_subticks_min"):
        RaftOptions(heartbeat_ticks=5, subticks_per_tick=10, election_subticks_min=50)
