"""Config: every tunable of the engine, validated in one place.

Times are in seconds.  The Raft core counts time in ticks; ``tick_interval`` sets how long one
tick is and the ``*_ticks`` properties convert.  An invalid combination raises
:class:`~engine.errors.ConfigError` naming the field, its value and the rule it broke.

Tuning in one paragraph: the election timeout must be well above the network round trip plus a
disk sync (a follower must hear a heartbeat before it gives up on the leader) and the heartbeat
interval a fraction of the minimum election timeout, so a few lost heartbeats do not start an
election.  The defaults (50 ms heartbeat, 150-300 ms election) suit a LAN or loopback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from engine.errors import ConfigError

SUBTICK = 1e-6
"""Seconds per subtick: the resolution at which the election timeout is drawn and fired."""
MIN_ELECTION_RANGE = 1e-4
"""Smallest accepted election_timeout_max - election_timeout_min, in seconds (100 subticks)."""

_BOOL_FIELDS = ("pre_vote", "check_quorum", "fast_backup", "fsync", "recover_corrupt_log",
                "storage_thread", "apply_thread")
_MAY_BE_ZERO = ("snapshot_threshold", "snapshot_trailing_entries", "disk_stall_timeout",
                "latency_sample_every")
_INT_FIELDS = ("max_batch_entries", "max_batch_bytes", "max_inflight", "max_inflight_bytes",
               "entry_cache_bytes", "max_pending_proposals",
               "snapshot_threshold", "snapshot_trailing_entries", "snapshot_chunk_bytes",
               "latency_sample_every")


@dataclass(frozen=True, slots=True)
class Config:
    """Engine configuration.  Immutable; build a new one with ``dataclasses.replace``."""

    heartbeat_interval: float = 0.05
    """Seconds between leader heartbeats.  Must be < election_timeout_min."""

    election_timeout_min: float = 0.15
    """Lower bound of the randomized election timeout, in seconds."""

    election_timeout_max: float = 0.30
    """Upper bound (inclusive) of the randomized election timeout.  Must exceed the minimum by
    at least MIN_ELECTION_RANGE (100 us).  The timeout is drawn uniformly at 1 us resolution
    whatever the tick, and the runtime fires it at that point of the tick (see
    ``RaftOptions``), so a 150-151 ms range works with the default 10 ms tick.  With
    check_quorum, keep election_timeout_min well above the round trip: the runtime warns when
    the heartbeat round trip it measures exceeds half of it (``engine.runtime.rtt``)."""

    tick_interval: float = 0.01
    """Seconds per logical clock tick of the core.  The heartbeat interval and the CheckQuorum
    period are rounded to ticks; the randomized election timeout is not (it keeps 1 us
    resolution)."""

    max_batch_entries: int = 1024
    """Most entries one AppendEntries message carries (and one durable write takes)."""

    max_batch_bytes: int = 1 << 20
    """Most payload bytes one AppendEntries message carries (at least one entry is always sent)."""

    max_inflight: int = 64
    """AppendEntries messages in flight per follower before the leader waits for an ack.
    1 disables pipelining."""

    max_inflight_bytes: int = 32 << 20
    """Payload bytes in flight per follower before the leader waits for an ack (with
    ``max_inflight``, whichever is reached first).  An append is still sent when nothing is in
    flight, even if it alone is larger (as etcd-io/raft's ``MaxInflightBytes``), so one entry
    bigger than this still goes out.  Bounds what a slow or paused follower costs the leader."""

    entry_cache_bytes: int = 64 << 20
    """Budget of the core's in-memory log, in bytes (payload plus about 150 bytes of bookkeeping
    per entry).  Beyond it the oldest entries that are durable on this node and already handed
    to the state machine are dropped from memory; a follower that needs them again is sent them
    read back from the log store.  Entries not yet durable or applied are never dropped, so the
    cache may exceed it while the disk or the state machine lags."""

    pre_vote: bool = True
    """Run a pre-vote round before bumping the term (thesis section 9.6)."""

    check_quorum: bool = True
    """A leader that has not heard from a quorum for an election timeout steps down, and a node
    that heard from a leader within the minimum election timeout ignores vote requests."""

    fast_backup: bool = True
    """Rejections carry the conflicting term and its first index so the leader skips a whole term
    per round trip; False gives the classic one-entry-per-round-trip decrement."""

    fsync: bool = True
    """fdatasync durable writes.  False is for benchmarks and tests that do not need durability."""

    recover_corrupt_log: bool = False
    """At start-up, discard a damaged log suffix even when it reaches into the committed prefix
    (a bad record followed by good ones, a segment missing between others) and fetch it back
    from the peers: the node then starts *recovering* (it neither votes nor counts towards any
    quorum until a leader has given it back every entry).  False (the default) stops the node
    with CorruptLogError instead, for an operator to look at.  A lost *tail* (the newest records
    gone or corrupt) is always recovered from the peers this way, whatever this says."""

    disk_stall_timeout: float = 2.0
    """Seconds a durable write (append + fdatasync, or a hard-state save) may take before the
    node treats its disk as stalled: a leader steps down, and the node does not campaign or
    take over a transfer until the write completes (a gray failure: a leader with a sick disk
    would otherwise keep its followers' heartbeats happy while nothing it appends becomes
    durable).  Detected on the loop thread, so it works with the background syncer or the
    storage thread; a write done inline on the loop thread blocks the loop itself, and the
    followers' election timeouts do the same job.  0 turns the check off."""

    storage_thread: bool = False
    """Write on-disk stores from a ``raft-<id>-storage`` thread (group commit across Readys)
    instead of on the loop thread.  Inline writes (the default, as etcd's and hashicorp's loops
    do) save two thread hand-offs per commit: about 20% lower commit latency with a fast disk
    (``python -m bench --scenario ablation_storage_thread``).  Turn it on when an fsync can take
    a sizeable part of the heartbeat interval (slow disks, network storage): the loop then keeps
    ticking, answering heartbeats and serving reads while the disk works."""

    apply_thread: bool = False
    """Run the state machine's ``apply()`` (and reads, snapshots) on a ``raft-<id>-apply`` thread
    instead of on the node's loop thread.  By default the loop applies committed entries itself
    in bounded slices (``apply_slice``), which saves two thread hand-offs per commit; turn this
    on for a state machine whose ``apply()`` blocks (IO, locks) or runs long per entry, so the
    loop keeps sending heartbeats while it works."""

    apply_slice: float = 0.005
    """Seconds of apply work the loop does per iteration before it handles network IO and
    timers again (inline apply only).  A burst of slow applies is spread over many iterations,
    so it never starves heartbeats; one apply() call is never interrupted."""

    latency_sample_every: int = 32
    """Follow one proposal batch out of this many through the commit stages (propose ->
    appended -> durable -> quorum -> committed -> applied -> resolved) for the
    ``raft_commit_stage_seconds`` histograms, at most one at a time; it also switches the
    log-append, fdatasync and loop-busy timing.  0 turns sampling and timing off (the plain
    counters stay).  See :mod:`engine.runtime.telemetry`."""

    max_pending_proposals: int = 100_000
    """Proposals accepted by the leader and not yet committed and applied; beyond it propose()
    fails at once with Overloaded (back-pressure: nothing is proposed)."""

    read_timeout: float = 5.0
    """Seconds a linearizable read may wait for leadership confirmation before ReadTimeout."""

    snapshot_threshold: int = 50_000
    """Take a snapshot (and compact the log) once this many entries were applied since the last
    one; 0 turns automatic snapshots off (``RaftNode.snapshot()`` still works)."""

    snapshot_trailing_entries: int = 5_000
    """Entries kept in the log behind a snapshot, so a follower that lags by less than this
    catches up from the log instead of receiving the whole snapshot.  0 keeps none."""

    snapshot_chunk_bytes: int = 1 << 20
    """Largest piece of a snapshot in one InstallSnapshot message."""

    catchup_timeout: float = 60.0
    """Seconds a membership change waits for new nodes, added first as learners, to catch up
    with the leader's log before they are made voters; past it the change fails with
    MembershipError and they stay learners."""

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every field and every rule between fields.

        Raises:
            ConfigError: naming the field, its value and the rule.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name}={value!r} must be a bool")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{f.name}={value!r} must be a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}={value!r} must be finite")
            if f.name in _MAY_BE_ZERO:
                if value < 0:
                    raise ConfigError(f"{f.name}={value!r} must be >= 0")
            elif value <= 0:
                raise ConfigError(f"{f.name}={value!r} must be > 0")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int):
                raise ConfigError(f"{name}={value!r} must be an integer")
        if self.election_timeout_max <= self.election_timeout_min:
            raise ConfigError(
                f"election_timeout_max={self.election_timeout_max} must be > "
                f"election_timeout_min={self.election_timeout_min}")
        if self.heartbeat_interval >= self.election_timeout_min:
            raise ConfigError(
                f"heartbeat_interval={self.heartbeat_interval} must be < "
                f"election_timeout_min={self.election_timeout_min}")
        if self.tick_interval > self.heartbeat_interval:
            raise ConfigError(
                f"tick_interval={self.tick_interval} must be <= "
                f"heartbeat_interval={self.heartbeat_interval}")
        if self.election_timeout_max - self.election_timeout_min < MIN_ELECTION_RANGE:
            raise ConfigError(
                f"election_timeout_max={self.election_timeout_max} must be >= "
                f"election_timeout_min={self.election_timeout_min} + {MIN_ELECTION_RANGE}: "
                f"the randomized range needs at least {round(MIN_ELECTION_RANGE / SUBTICK)} "
                "distinct 1 us values to break split votes (a few ms is typical)")
        if self.tick_interval < SUBTICK:
            raise ConfigError(f"tick_interval={self.tick_interval} must be >= {SUBTICK} "
                              "(the resolution of the election timer)")
        if self.election_ticks_min <= self.heartbeat_ticks:
            raise ConfigError(
                f"tick_interval={self.tick_interval} is too coarse: heartbeat_interval="
                f"{self.heartbeat_interval} and election_timeout_min={self.election_timeout_min}"
                " round to the same number of ticks")

    # -- conversions to core ticks -------------------------------------------------------------

    def _ticks(self, seconds: float) -> int:
        return max(1, round(seconds / self.tick_interval))

    @property
    def heartbeat_ticks(self) -> int:
        """Heartbeat interval in ticks (>= 1)."""
        return self._ticks(self.heartbeat_interval)

    @property
    def election_ticks_min(self) -> int:
        """Minimum election timeout in ticks."""
        return self._ticks(self.election_timeout_min)

    @property
    def election_ticks_max(self) -> int:
        """Maximum election timeout in whole ticks, rounded up and always above the minimum
        (the core draws in subticks; see :attr:`election_subticks_max`)."""
        return max(self.election_ticks_min + 1,
                   math.ceil(self.election_timeout_max / self.tick_interval - 1e-9))

    @property
    def subticks_per_tick(self) -> int:
        """Subticks (SUBTICK = 1 us each) per tick: the election timer's resolution."""
        return max(1, round(self.tick_interval / SUBTICK))

    @property
    def election_subticks_min(self) -> int:
        """Minimum election timeout in subticks (the CheckQuorum lease too)."""
        return round(self.election_timeout_min * self.subticks_per_tick / self.tick_interval)

    @property
    def election_subticks_max(self) -> int:
        """Maximum election timeout in subticks, inclusive."""
        return round(self.election_timeout_max * self.subticks_per_tick / self.tick_interval)
