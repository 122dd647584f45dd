"""Progress: what the leader knows about one follower's log, and its transitions."""

from __future__ import annotations

from engine.core.tracker.inflights import Inflights
from engine.core.tracker.state import ProgressState
from engine.types import Index


class Progress:
    """The leader's view of one peer (the leader has one for itself too).

    Invariant: ``match < next``.  ``match`` only grows while one leader term lasts, except when
    the peer shows that its log shrank (:meth:`reset_match`).
    """

    __slots__ = ("inflights", "match", "next", "pending_snapshot", "probe_sent", "recent_active",
                 "state")

    def __init__(self, next_index: Index, max_inflight: int, match: Index = 0, *,
                 max_inflight_bytes: int = 0) -> None:
        self.match: Index = match  #: highest index known to be replicated on the peer
        self.next: Index = next_index  #: next index to send
        self.state = ProgressState.PROBE
        self.probe_sent = False  #: PROBE only: an append is out and unanswered
        self.recent_active = False  #: heard from within the current CheckQuorum period
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.pending_snapshot: Index = 0  #: SNAPSHOT only: index of the snapshot being sent

    def __repr__(self) -> str:
        return (f"Progress(state={self.state.value}, match={self.match}, next={self.next}, "
                f"inflight={len(self.inflights)})")

    # -- transitions ---------------------------------------------------------------------------

    def become_probe(self) -> None:
        """Fall back to probing one message at a time from just past the known match."""
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def reset_match(self, match: Index) -> None:
        """The peer's log shrank to ``match`` (it lost entries it had acknowledged): forget the
        higher match and probe from just past it.  The one place ``match`` goes down."""
        self.match = match
        self.become_probe()

    def become_replicate(self) -> None:
        """Start streaming: the log is known to match up to ``match``."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: Index) -> None:
        """Stop appending: the peer needs the snapshot ending at ``snapshot_index``."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.probe_sent = False
        self.inflights.reset()

    # -- events --------------------------------------------------------------------------------

    def is_paused(self) -> bool:
        """True when the leader must not send another append now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_append(self, entry_count: int, last_index: Index, size: int = 0) -> None:
        """Account for an append carrying ``entry_count`` entries ending at ``last_index``, with
        ``size`` payload bytes (what the inflight byte budget counts)."""
        if self.state is ProgressState.REPLICATE:
            if entry_count:
                self.next = last_index + 1
                self.inflights.add(last_index, size)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: Index) -> bool:
        """An ack says the peer matches up to ``index``.  Returns True if ``match`` grew."""
        if index > self.match:
            self.match = index
            self.probe_sent = False
            if self.next <= index:
                self.next = index + 1
            self.inflights.free_le(index)
            return True
        if self.next <= index:
            self.next = index + 1
        return False

    def maybe_decrease_to(self, rejected: Index, next_hint: Index) -> bool:
        """A rejection of the append whose previous index was ``rejected``.

        ``next_hint`` is where the leader should try next.  Returns False (and changes nothing)
        for a stale rejection: one about an append older than the current probe, or in
        REPLICATE for an index the peer already matched.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = max(self.match + 1, min(rejected, next_hint))
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(self.match + 1, min(rejected, next_hint))
        self.probe_sent = False
        return True
