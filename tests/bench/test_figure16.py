"""The Figure 16 benchmark (bench/figure16.py) produces well-formed outputs; no timing
assertions beyond "a new leader came after the election timeout"."""

from __future__ import annotations

import json

from bench import figure16
from bench.scenarios import build_cases


def test_a_short_run_writes_table_json_and_plot(tmp_path) -> None:
    curves = figure16.run(["150-155"], trials=2, delay=0.001, arms=(False, True))
    assert [c.pre_vote for c in curves] == [False, True]
    for c in curves:
        assert len(c.downtimes) + c.failed == 2
        assert all(0.05 < d < 30 for d in c.downtimes)  # >= min - heartbeat (75 ms)
    paths = figure16.write(curves, str(tmp_path), command="test", delay=0.001,
                           check_quorum=False)
    data = json.loads((tmp_path / "figure16.json").read_text())
    assert [c["range"] for c in data["curves"]] == ["150-155", "150-155"]
    table = (tmp_path / "figure16.md").read_text()
    assert "| 150-155 | 10 |" in table
    assert any(p.endswith("figure16.png") for p in paths)


def test_registered_in_the_suite() -> None:
    assert [c.label for c in build_cases("quick") if c.family == "figure16"] == ["figure16 n=5"]
    assert figure16.SUITE["quick"][0] == figure16.QUICK_RANGES
    assert set(figure16.FULL_RANGES) == {"150-151", "150-155", "150-175", "150-200", "150-300",
                                         "12-24", "25-50", "50-100", "100-200"}
    lo, hi = figure16.parse_range("12-24")
    config = figure16.config_for(lo, hi, pre_vote=True)
    assert config.heartbeat_interval == lo / 2 and config.tick_interval <= 0.01
