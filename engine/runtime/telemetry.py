"""Telemetry: the counters, cheap histograms and latency samples of one node.

Cost rule: the hot path only does plain ``int``/``float`` arithmetic on attributes of one
:class:`Telemetry` object (no locks, no prometheus calls, no allocation per entry).  Everything
is turned into Prometheus samples at scrape time by :mod:`engine.metrics` (a custom collector).

Thread-safety rule (read this before adding a field):

* each counter or histogram has exactly ONE writing thread, named on its declaration (almost
  always ``raft-<id>-loop``; the storage thread writes the log-append / fdatasync histograms
  in ``Config.storage_thread`` mode, the apply thread the apply/resolve stages with
  ``Config.apply_thread``);
* other threads (the collector on prometheus' HTTP thread) only READ them: reading an int or a
  float attribute is atomic under the GIL, and a histogram is read through
  :meth:`Histogram.snapshot`, which copies the bucket list first (``list(...)`` of ints is
  atomic) and derives the count from that copy, so a scrape never sees a count that disagrees
  with its buckets (``sum`` may lag by the observation in progress);
* dicts written by the loop (``received``; ``NodeLoop.last_heard``) are read by copying them
  (``dict(...)``, atomic under the GIL for str/int keys) — never iterated in place.

Per-stage commit latency is *sampled* (see :class:`StageSample`): at most one proposal batch is
followed at a time, and only every ``Config.latency_sample_every``-th batch, so its cost is a
few ``perf_counter()`` calls per sampled batch and one ``is not None`` test per stage check
point otherwise.  ``latency_sample_every=0`` switches the sampling and the log-append /
fdatasync / loop-busy timing off (the counters stay: they cost one integer add each).
"""

from __future__ import annotations

import time
from bisect import bisect_left

from engine.events import EventBus

clock = time.perf_counter

# Buckets (seconds) from 25 us doubling to ~13 s: 20 upper bounds, then +Inf.
BUCKETS: tuple[float, ...] = tuple(25e-6 * 2 ** i for i in range(20))

# The stages a sampled commit goes through on the leader, in order.  The time of stage i is
# the interval from stage i-1 (or from ``propose`` for the first), made monotonic: when the
# quorum acknowledged before the leader's own write was durable, ``quorum`` is 0 and
# ``durable`` covers the wait.  Their sum is propose -> future resolved.
STAGES: tuple[str, ...] = ("append", "durable", "quorum", "commit", "apply", "resolve")
STAGE_HELP = {
    "append": "loop took the proposal -> written to the leader's log (page cache)",
    "durable": "-> the leader's own fdatasync of it ended",
    "quorum": "-> the leader's commit index covers it (a quorum acknowledged)",
    "commit": "-> handed to the applier in a Ready",
    "apply": "-> the state machine applied it",
    "resolve": "-> its future was resolved",
}


class Histogram:
    """Fixed-bucket histogram with one writer thread (see the module docstring)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[int], float, int]:
        """(per-bucket counts, sum, count) for a reader on another thread."""
        counts = list(self.counts)
        return counts, self.sum, sum(counts)


class StageSample:
    """Stage times (``perf_counter``) of one sampled proposal batch, keyed by its first index.

    Written by the thread that reaches each stage (the loop; the storage thread for
    ``append``/``durable`` in threaded mode; the apply thread for ``apply``/``resolve``), each
    slot once; read by the thread that finishes it (the one stamping ``resolve``).
    """

    __slots__ = ("index", "times")

    def __init__(self, index: int, start: float) -> None:
        self.index = index
        self.times = [start, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


class Telemetry:
    """Counters of one node (one per RaftNode, kept across its lifetime).

    Written by ``raft-<id>-loop`` unless a field's comment says otherwise.
    """

    def __init__(self, node_id: str, sample_every: int = 32) -> None:
        self.node_id = node_id
        self.events = EventBus(node_id)
        self.sample_every = sample_every  # 0: no stage sampling and no timing
        self.timing = sample_every > 0
        # -- elections and leadership (loop)
        self.leader_changes = 0
        self.elections_started = 0
        self.elections_won = 0
        self.pre_votes_started = 0
        # -- proposals
        self.proposals_committed = 0  # futures resolved with a result (whoever applies)
        self.proposals_dropped = 0  # ProposalDropped: leadership lost, or entry replaced (loop)
        self.proposals_overloaded = 0  # Overloaded at submit (any client thread: approximate)
        self.proposals_not_leader = 0  # NotLeaderError at submit or in the core (approximate)
        # -- messages received, by MessageKind value (loop); sent: the transport's own counts
        self.received: dict[int, int] = {}
        self.unreachable: set[str] = set()  # leader: peers reported unreachable (loop)
        # -- log (the thread that owns the log store)
        self.entries_appended = 0
        self.bytes_appended = 0
        self.log_append = Histogram()  # seconds per LogStore.append call
        self.fdatasync = Histogram()  # seconds per sync (background: begin -> end seen)
        # -- snapshots
        self.snapshots_taken = 0  # durable local snapshots (loop)
        self.snapshot_save = Histogram()  # taken -> durable (loop)
        self.snapshots_sent = 0  # transfers that ended ok (loop)
        self.snapshots_send_failed = 0
        self.snapshot_send = Histogram()  # transfer start -> last chunk acknowledged (loop)
        self.snapshots_received = 0  # (loop)
        self.snapshot_receive = Histogram()  # first chunk -> last chunk (loop)
        self.snapshots_installed = 0  # (the thread owning the stores)
        # -- disk stalls and recovery (loop)
        self.disk_stalls = 0
        self.recovering_episodes = 0
        # -- the loop itself (loop)
        self.loop_busy_seconds = 0.0  # time inside the loop's rounds, ticks and apply slices
        self.loop_rounds = 0
        # -- per-stage commit latency (see StageSample)
        self.stages = {name: Histogram() for name in STAGES}
        self.commit_total = Histogram()  # propose -> resolved, sampled
        self.samples_started = 0
        self.samples_done = 0
        self._batches = 0
        self.sample: StageSample | None = None  # the batch followed now (loop sets it)

    # -- stage sampling ----------------------------------------------------------------------

    def maybe_sample(self, first_index: int) -> None:
        """Loop thread, once per proposed batch: follow this one?"""
        if self.sample is not None or not self.sample_every:
            return
        self._batches += 1
        if self._batches >= self.sample_every:
            self._batches = 0
            self.samples_started += 1
            self.sample = StageSample(first_index, clock())

    def stamp(self, stage: int, last_index: int) -> None:
        """Stage ``stage`` (1..6) reached for entries up to ``last_index`` (call only when
        ``self.sample`` is not None: the caller tests that, the cheap part)."""
        sample = self.sample
        if sample is None or last_index < sample.index or sample.times[stage]:
            return
        sample.times[stage] = clock()
        if stage == 6:
            self._finish(sample)

    def abandon_sample(self) -> None:
        """Leadership lost (the sampled entries may never commit here)."""
        self.sample = None

    def _finish(self, sample: StageSample) -> None:
        times = sample.times
        previous = times[0]
        for name, t in zip(STAGES, times[1:], strict=True):
            t = max(t, previous)  # a stage reached early (or missed: 0) counts as 0
            self.stages[name].observe(t - previous)
            previous = t
        self.commit_total.observe(previous - times[0])
        self.samples_done += 1
        self.sample = None
