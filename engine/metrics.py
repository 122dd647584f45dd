"""Prometheus metrics for raft-engine nodes (``pip install prometheus-client``).

Two ways to get them:

* the CLI: ``raft-engine node ... --metrics 127.0.0.1:9100`` serves ``/metrics``;
* an embedding program::

      from prometheus_client import CollectorRegistry, generate_latest
      import engine.metrics

      registry = CollectorRegistry()
      engine.metrics.register(node, registry)        # or [node1, node2], or a callable
      text = generate_latest(registry)                # or mount it in your own exporter
      server = engine.metrics.serve("127.0.0.1:9100", node)   # or a /metrics of our own
      ...
      server.close()

  :class:`RaftCollector` is a plain prometheus_client custom collector: register it in the
  default ``REGISTRY`` to have it next to the program's own metrics.

Cost design: nothing here runs on a node's hot path.  The nodes keep plain ``int``/``float``
counters and fixed-bucket histograms (:mod:`engine.runtime.telemetry`, written by one thread
each, no locks, no prometheus calls) and the collector turns them into samples when scraped,
on the scraping thread (``raft-metrics`` for :func:`serve`).  Gauges come from
``RaftNode.status()`` (an immutable snapshot the loop publishes) and the leader's per-peer
progress in it (refreshed once per tick); the transport's counters are read from the
transport.  See the thread-safety rule in :mod:`engine.runtime.telemetry`.

Every sample is labelled ``node`` (the node id); per-peer ones also ``peer``.  The metric names
are listed in README.md ("Metrics"); the Grafana dashboard and alert rules in ``deploy/`` use
them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.core import MessageKind
from engine.runtime.telemetry import STAGES, Histogram

try:  # an optional dependency for the core engine; required by this module
    from prometheus_client.core import (
        REGISTRY,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover
    raise ImportError("engine.metrics needs prometheus-client: pip install prometheus-client"
                      ) from exc

NodesArg = Any  # a RaftNode, an iterable of them, or a callable returning either
_ROLES = ("leader", "follower", "candidate")
_KIND_NAMES = {kind.value: kind.name.lower() for kind in MessageKind}


def _nodes(source: NodesArg) -> list[Any]:
    value = source() if callable(source) and not hasattr(source, "status") else source
    if hasattr(value, "status"):
        return [value]
    return list(value)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    counts, total, _ = hist.snapshot()
    cumulative = 0
    buckets = []
    for bound, count in zip(hist.bounds, counts, strict=False):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    cumulative += counts[-1]
    buckets.append(("+Inf", cumulative))
    family.add_metric(labels, buckets, total)


class RaftCollector(Collector):
    """A prometheus_client custom collector for one or more nodes.

    ``nodes``: a RaftNode, an iterable of them, or a callable returning either (evaluated at
    every scrape: pass ``lambda: cluster.nodes`` for a LocalCluster whose nodes are replaced
    by ``restart``).  Thread-safe: scrapes may run concurrently (``self._lock`` guards the
    busy-ratio bookkeeping).
    """

    def __init__(self, nodes: NodesArg) -> None:
        self._source = nodes
        self._lock = threading.Lock()
        self._busy_seen: dict[str, tuple[float, float]] = {}  # node -> (monotonic, busy)

    def describe(self) -> list[Any]:
        return []  # no collect() at registration time

    def collect(self) -> Iterator[Any]:
        nodes = _nodes(self._source)
        g = GaugeMetricFamily
        c = CounterMetricFamily
        h = HistogramMetricFamily
        fams: dict[str, Any] = {}

        def fam(kind: Callable[..., Any], name: str, doc: str,
                labels: tuple[str, ...] = ("node",)) -> Any:
            family = fams.get(name)
            if family is None:
                family = fams[name] = kind(name, doc, labels=list(labels))
            return family

        for node in nodes:
            nid = node.id
            t = node.telemetry
            status = node.status()
            n = [nid]
            fam(g, "raft_running", "1 while the node runs").add_metric(n, status.running)
            fam(g, "raft_term", "Current term").add_metric(n, status.term)
            role = fam(g, "raft_role", "1 for the node's current role", ("node", "role"))
            for name in _ROLES:
                role.add_metric([nid, name], 1 if status.role == name else 0)
            fam(g, "raft_is_leader", "1 on the leader").add_metric(
                n, 1 if status.role == "leader" and status.running else 0)
            fam(g, "raft_leader_known", "1 when this node knows a leader").add_metric(
                n, 1 if status.leader_id is not None else 0)
            fam(g, "raft_commit_index", "Highest index known committed").add_metric(
                n, status.commit_index)
            fam(g, "raft_applied_index", "Highest index applied").add_metric(
                n, status.last_applied)
            fam(g, "raft_last_log_index", "Last index in the log").add_metric(
                n, status.last_log_index)
            fam(g, "raft_snapshot_index", "Index of the newest snapshot").add_metric(
                n, status.snapshot_index)
            fam(g, "raft_log_entries", "Entries held after the compaction point").add_metric(
                n, status.log_entries)
            fam(g, "raft_recovering", "1 while recovering lost entries (Status.recovering)"
                ).add_metric(n, 1 if status.recovering else 0)
            fam(g, "raft_recovering_index", "Highest lost index being recovered (0: none)"
                ).add_metric(n, status.recovering)
            fam(g, "raft_disk_stalled", "1 while a durable write is stalled").add_metric(
                n, 1 if status.disk_stalled else 0)
            peer_labels = ("node", "peer")
            last_index = status.last_log_index
            for peer, pr in sorted(status.progress.items()):
                if peer == nid:
                    continue
                p = [nid, peer]
                fam(g, "raft_peer_match_index", "Leader: highest index known replicated",
                    peer_labels).add_metric(p, pr.match)
                fam(g, "raft_peer_lag_entries", "Leader: last_log_index - match",
                    peer_labels).add_metric(p, max(0, last_index - pr.match))
                fam(g, "raft_peer_inflight_messages", "Leader: appends in flight",
                    peer_labels).add_metric(p, pr.inflight)
                fam(g, "raft_peer_inflight_bytes", "Leader: payload bytes in flight",
                    peer_labels).add_metric(p, pr.inflight_bytes)
                fam(g, "raft_peer_recent_active", "Leader: heard from within an election "
                    "timeout", peer_labels).add_metric(p, 1 if pr.recent_active else 0)
                fam(g, "raft_peer_recovering", "Leader: the peer says it is recovering",
                    peer_labels).add_metric(p, 1 if pr.recovering else 0)
            if hasattr(node, "last_contact"):
                for peer, seconds in sorted(node.last_contact().items()):
                    fam(g, "raft_peer_last_contact_seconds", "Seconds since a message from "
                        "the peer was last stepped", peer_labels).add_metric([nid, peer], seconds)
            for peer in sorted(t.unreachable):
                fam(g, "raft_peer_unreachable", "Leader: 1 for peers reported unreachable",
                    peer_labels).add_metric([nid, peer], 1)

            fam(c, "raft_leader_changes", "Times this node saw a new leader").add_metric(
                n, t.leader_changes)
            fam(c, "raft_elections_started", "Elections this node started (real votes)"
                ).add_metric(n, t.elections_started)
            fam(c, "raft_elections_won", "Elections this node won").add_metric(
                n, t.elections_won)
            fam(c, "raft_pre_votes_started", "Pre-vote rounds this node started").add_metric(
                n, t.pre_votes_started)
            registry = node._registry
            proposals = fam(c, "raft_proposals", "Proposals by outcome", ("node", "outcome"))
            proposals.add_metric([nid, "committed"], registry.committed)
            proposals.add_metric([nid, "dropped"], t.proposals_dropped + registry.replaced)
            proposals.add_metric([nid, "overloaded"], t.proposals_overloaded)
            proposals.add_metric([nid, "not_leader"], t.proposals_not_leader)

            received = dict(t.received)
            recv = fam(c, "raft_messages_received", "Messages stepped, by kind",
                       ("node", "kind"))
            for value, count in sorted(received.items()):
                recv.add_metric([nid, _KIND_NAMES.get(int(value), str(value))], count)
            transport = node.transport
            if transport is not None:
                self._transport(fam, nid, transport)

            snaps = fam(c, "raft_snapshots", "Snapshots by operation", ("node", "op"))
            snaps.add_metric([nid, "taken"], t.snapshots_taken)
            snaps.add_metric([nid, "sent"], t.snapshots_sent)
            snaps.add_metric([nid, "send_failed"], t.snapshots_send_failed)
            snaps.add_metric([nid, "received"], t.snapshots_received)
            snaps.add_metric([nid, "installed"], t.snapshots_installed)
            sd = fam(h, "raft_snapshot_duration_seconds", "Snapshot save (taken -> durable), "
                     "send and receive durations", ("node", "op"))
            _add_histogram(sd, [nid, "save"], t.snapshot_save)
            _add_histogram(sd, [nid, "send"], t.snapshot_send)
            _add_histogram(sd, [nid, "receive"], t.snapshot_receive)

            fam(c, "raft_log_appended_entries", "Entries written to the log").add_metric(
                n, t.entries_appended)
            fam(c, "raft_log_appended_bytes", "Payload bytes written to the log").add_metric(
                n, t.bytes_appended)
            _add_histogram(fam(h, "raft_log_append_seconds", "LogStore.append per batch"),
                           n, t.log_append)
            _add_histogram(fam(h, "raft_fdatasync_seconds", "Log fdatasync (background: "
                               "begin -> end seen by the loop)"), n, t.fdatasync)
            fam(c, "raft_disk_stalls", "Disk stalls detected").add_metric(n, t.disk_stalls)
            fam(c, "raft_recovering_episodes", "Times the node started recovering lost "
                "entries").add_metric(n, t.recovering_episodes)

            fam(c, "raft_loop_busy_seconds", "Seconds the loop spent in rounds, ticks and "
                "apply slices (0 with latency_sample_every=0)").add_metric(
                n, t.loop_busy_seconds)
            fam(c, "raft_loop_rounds", "Loop wake-ups (rounds)").add_metric(n, t.loop_rounds)
            fam(g, "raft_loop_busy_ratio", "Busy fraction of the loop since the previous "
                "scrape").add_metric(n, self._busy_ratio(nid, t.loop_busy_seconds))

            stage = fam(h, "raft_commit_stage_seconds", "Sampled leader commit latency per "
                        "stage (see engine.runtime.telemetry.STAGE_HELP)", ("node", "stage"))
            for name in STAGES:
                _add_histogram(stage, [nid, name], t.stages[name])
            _add_histogram(fam(h, "raft_commit_latency_seconds", "Sampled propose -> future "
                               "resolved on the leader"), n, t.commit_total)
            fam(c, "raft_latency_samples", "Sampled proposal batches completed").add_metric(
                n, t.samples_done)
            fam(c, "raft_events_dropped", "Events not delivered (subscriber queue full)"
                ).add_metric(n, t.events.dropped)
        yield from fams.values()

    @staticmethod
    def _transport(fam: Callable[..., Any], nid: str, transport: Any) -> None:
        c = CounterMetricFamily
        counts = getattr(transport, "message_counts", None)
        if counts is not None:
            sent = fam(c, "raft_messages_sent", "Messages handed to the transport, by kind",
                       ("node", "kind"))
            for kind, count in sorted(counts().items()):
                sent.add_metric([nid, kind.lower()], count)
        for attr, name, doc in (
                ("bytes_written", "raft_transport_sent_bytes", "Bytes written to peers"),
                ("bytes_received", "raft_transport_received_bytes", "Bytes read from peers")):
            if hasattr(transport, attr):
                fam(c, name, doc).add_metric([nid], getattr(transport, attr))
        dropped = fam(c, "raft_frames_dropped", "Frames/messages dropped by the transport: "
                      "malformed (connection closed), unauthenticated (HMAC failed), refused "
                      "(other handshake refusals), send_queue (queue full, unknown or "
                      "unreachable peer)", ("node", "reason"))
        auth = getattr(transport, "auth_failures", 0)
        dropped.add_metric([nid, "malformed"], getattr(transport, "frames_malformed", 0))
        dropped.add_metric([nid, "unauthenticated"], auth)
        dropped.add_metric([nid, "refused"],
                           max(0, getattr(transport, "connections_refused", 0) - auth))
        dropped_count = getattr(transport, "dropped_count", None)
        dropped.add_metric([nid, "send_queue"], dropped_count() if dropped_count else 0)

    def _busy_ratio(self, nid: str, busy: float) -> float:
        now = time.monotonic()
        with self._lock:
            before = self._busy_seen.get(nid)
            self._busy_seen[nid] = (now, busy)
        if before is None or now <= before[0]:
            return 0.0
        return max(0.0, min(1.0, (busy - before[1]) / (now - before[0])))


def register(nodes: NodesArg, registry: CollectorRegistry | None = None) -> RaftCollector:
    """Register a :class:`RaftCollector` for ``nodes`` in ``registry`` (default: the
    prometheus_client default ``REGISTRY``) and return it (``registry.unregister(it)``
    removes it)."""
    collector = RaftCollector(nodes)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


class MetricsServer:
    """``/metrics`` over HTTP on one thread, ``raft-metrics`` (scrapes are served one at a
    time; each runs the collectors on that thread).  ``close()`` stops and joins it."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        from prometheus_client import make_wsgi_app

        class _Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.registry = registry
        self._server = make_server(host, port, make_wsgi_app(registry), WSGIServer,
                                   handler_class=_Quiet)
        self.port = self._server.server_port
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="raft-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port).

    Raises:
        ValueError: not HOST:PORT with a port in 0..65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {address!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(address: str, nodes: NodesArg,
          registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve ``/metrics`` for ``nodes`` on ``address`` ("HOST:PORT"; port 0 picks one: see
    ``.port``).  ``registry`` None: a new registry holding only the nodes' collector.

    Raises:
        ValueError: a bad address.  OSError: the port cannot be bound.
    """
    host, port = parse_address(address)
    if registry is None:
        registry = CollectorRegistry()
        register(nodes, registry)
    return MetricsServer(host, port, registry)
