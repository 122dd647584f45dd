"""The Prometheus collector (engine.metrics) over an in-process cluster: the families exist,
labelled by node, counters follow what happened, histograms are consistent, sampling can be
switched off, and serve() answers /metrics on a thread that close() joins."""

from __future__ import annotations

import dataclasses
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import engine.metrics
from engine import LocalCluster, LogStateMachine
from engine.runtime.telemetry import BUCKETS, STAGES, Histogram
from tests.conftest import FAST, LIVENESS, raft_threads


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_histogram_buckets_start_at_25us_and_snapshot_is_consistent() -> None:
    assert BUCKETS[0] == pytest.approx(25e-6)
    h = Histogram()
    for value in (1e-6, 30e-6, 0.5, 100.0):
        h.observe(value)
    counts, total, count = h.snapshot()
    assert count == 4 == sum(counts)
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1
    assert total == pytest.approx(100.500031)


def test_collector_reports_counters_gauges_and_stage_histograms() -> None:
    config = dataclasses.replace(FAST, latency_sample_every=1)
    with LocalCluster(3, state_machine=LogStateMachine, config=config, seed=2) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        for k in range(50):  # one at a time: 50 batches, each sampled
            leader.propose(b"x%d" % k).result(LIVENESS)
        follower = next(n for n in cluster.nodes if n is not leader)
        assert follower.propose(b"refused").exception(LIVENESS) is not None
        registry = CollectorRegistry()
        engine.metrics.register(lambda: cluster.nodes, registry)
        s = _samples(generate_latest(registry).decode())
        lid = leader.id
        assert _get(s, "raft_is_leader", node=lid) == 1
        assert _get(s, "raft_role", node=lid, role="leader") == 1
        assert _get(s, "raft_proposals_total", node=lid, outcome="committed") == 50
        assert _get(s, "raft_proposals_total", node=follower.id, outcome="not_leader") == 1
        assert _get(s, "raft_elections_won_total", node=lid) >= 1
        assert _get(s, "raft_commit_index", node=lid) >= 51
        assert _get(s, "raft_log_appended_entries_total", node=lid) >= 51
        assert _get(s, "raft_log_appended_bytes_total", node=lid) >= 50 * 2
        assert _get(s, "raft_messages_received_total", node=lid, kind="append_response") > 0
        assert _get(s, "raft_peer_match_index", node=lid, peer=follower.id) >= 0
        assert ("raft_peer_lag_entries", (("node", lid), ("peer", follower.id))) in s
        assert _get(s, "raft_loop_busy_seconds_total", node=lid) > 0
        samples = _get(s, "raft_latency_samples_total", node=lid)
        assert samples >= 40  # at most one batch followed at a time
        for stage in STAGES:
            count = _get(s, "raft_commit_stage_seconds_count", node=lid, stage=stage)
            assert count == samples
            assert _get(s, "raft_commit_stage_seconds_bucket", node=lid, stage=stage,
                        le="+Inf") == count
        total = _get(s, "raft_commit_latency_seconds_sum", node=lid)
        parts = sum(_get(s, "raft_commit_stage_seconds_sum", node=lid, stage=stage)
                    for stage in STAGES)
        assert parts == pytest.approx(total, rel=1e-6)
        assert _get(s, "raft_recovering", node=lid) == 0
        assert _get(s, "raft_disk_stalled", node=lid) == 0


def test_sampling_off_records_no_stage_samples_and_no_timing() -> None:
    config = dataclasses.replace(FAST, latency_sample_every=0)
    with LocalCluster(3, state_machine=LogStateMachine, config=config, seed=4) as cluster:
        leader = cluster.wait_for_leader(LIVENESS)
        for k in range(20):
            leader.propose(b"y%d" % k).result(LIVENESS)
        t = leader.telemetry
        assert t.samples_started == 0 and t.commit_total.snapshot()[2] == 0
        assert t.log_append.snapshot()[2] == 0 and t.loop_busy_seconds == 0
        assert leader._registry.committed == 20  # the counters stay on


def test_serve_answers_metrics_and_close_joins_its_thread() -> None:
    with LocalCluster(1, state_machine=LogStateMachine, config=FAST, seed=1) as cluster:
        node = cluster.wait_for_leader(LIVENESS)
        server = engine.metrics.serve("127.0.0.1:0", node)
        try:
            with urllib.request.urlopen(server.url, timeout=LIVENESS) as response:
                s = _samples(response.read().decode())
            assert _get(s, "raft_is_leader", node=node.id) == 1
        finally:
            server.close()
    assert "raft-metrics" not in raft_threads()


def test_bad_metrics_address() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        engine.metrics.parse_address("nope")
