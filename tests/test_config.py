"""Config validation: every bad value raises ConfigError (a ValueError) naming field and rule."""

from __future__ import annotations

import dataclasses

import pytest

from engine import Config, ConfigError
from engine.core import RaftOptions


def test_defaults_are_valid_and_convert_to_ticks() -> None:
    config = Config()
    assert config.heartbeat_ticks < config.election_ticks_min < config.election_ticks_max
    options = RaftOptions.from_config(config)
    assert options.election_ticks_min == config.election_ticks_min
    assert options.pre_vote and options.check_quorum and options.fast_backup


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"election_timeout_max": 0.1}, "election_timeout_max=0.1 must be > election_timeout_min"),
        ({"heartbeat_interval": 0.2}, "heartbeat_interval=0.2 must be < election_timeout_min"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval=0.0 must be > 0"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval=-1.0 must be > 0"),
        ({"heartbeat_interval": float("nan")}, "must be finite"),
        ({"tick_interval": 0.06}, "tick_interval=0.06 must be <= heartbeat_interval"),
        ({"tick_interval": 0.05, "heartbeat_interval": 0.05, "election_timeout_min": 0.06,
          "election_timeout_max": 0.07}, "too coarse"),
        ({"max_inflight": 0}, "max_inflight=0 must be > 0"),
        ({"max_inflight_bytes": 0}, "max_inflight_bytes=0 must be > 0"),
        ({"max_inflight_bytes": 1.5}, "max_inflight_bytes=1.5 must be an integer"),
        ({"entry_cache_bytes": -1}, "entry_cache_bytes=-1 must be > 0"),
        ({"entry_cache_bytes": 2.0}, "entry_cache_bytes=2.0 must be an integer"),
        ({"max_batch_entries": 1.5}, "max_batch_entries=1.5 must be an integer"),
        ({"max_batch_bytes": "big"}, "max_batch_bytes='big' must be a number"),
        ({"pre_vote": 1}, "pre_vote=1 must be a bool"),
        ({"fsync": "yes"}, "fsync='yes' must be a bool"),
        ({"read_timeout": True}, "read_timeout=True must be a number"),
    ],
)
def test_invalid_config_names_field_and_rule(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_replace_revalidates() -> None:
    with pytest.raises(ConfigError, match="election_timeout_min"):
        dataclasses.replace(Config(), election_timeout_min=0.4)


def test_core_options_validate_ticks() -> None:
    with pytest.raises(ConfigError, match="election_ticks_max"):
        RaftOptions(election_ticks_min=10, election_ticks_max=10)
