"""Heartbeat round trips seen by a leader, and the warning when they threaten the leader.

With CheckQuorum a leader steps down when it has not heard from a quorum within an election
timeout, and a follower campaigns when it has not heard a heartbeat within its own.  Neither
can be checked when the Config is built (the network is not known then), so the leader's loop
measures what it sees: the time from a heartbeat broadcast to each peer's response (network
both ways plus the follower's loop and, when the response waits for one, its durable write).
When the smallest of a peer's last ``WINDOW`` round trips reaches ``WARN_FRACTION`` of
``election_timeout_min`` (so a single late answer, after a partition heals say, does not count)
it logs a warning (at most once per ``WARN_INTERVAL`` seconds) naming the numbers and the fix:
such a cluster elects
a leader and loses it again (the Figure 16 benchmark at 12-24 ms with a 15 ms round trip saw
613 leader changes in 60 s).  ``raft-engine tune`` measures and recommends ahead of time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable

logger = logging.getLogger(__name__)

WARN_FRACTION = 0.5
"""A round trip above this fraction of election_timeout_min is warned about."""
WARN_INTERVAL = 60.0
"""Seconds between two warnings of one node."""
WINDOW = 5
"""Round trips per peer whose minimum is compared with the threshold."""


class RttMonitor:
    """Loop thread only.  Fed by the loop: :meth:`broadcast` when the leader's tick sent
    heartbeats, :meth:`response` for every heartbeat response."""

    __slots__ = (
        "_pending",
        "_warned_at",
        "check_quorum",
        "election_timeout_max",
        "election_timeout_min",
        "last",
        "node_id",
        "samples",
        "worst",
    )

    def __init__(self, node_id: str, *, election_timeout_min: float,
                 election_timeout_max: float, check_quorum: bool) -> None:
        self.node_id = node_id
        self.election_timeout_min = election_timeout_min
        self.election_timeout_max = election_timeout_max
        self.check_quorum = check_quorum
        self._pending: dict[str, float] = {}  # peer -> when its oldest unanswered heartbeat left
        self.last: dict[str, deque[float]] = {}  # peer -> latest WINDOW round trips, seconds
        self.worst = 0.0  # largest sample since the last warning
        self.samples = 0
        self._warned_at = float("-inf")

    def broadcast(self, peers: Iterable[str], now: float) -> None:
        """Heartbeats left for ``peers`` at ``now``.  A heartbeat still unanswered after two
        maximal election timeouts (a dead or cut-off peer) stops counting."""
        pending = self._pending
        stale = now - 2 * self.election_timeout_max
        for peer in peers:
            sent = pending.get(peer)
            if sent is None or sent < stale:
                pending[peer] = now

    def response(self, peer: str, now: float) -> float | None:
        """A heartbeat response from ``peer`` arrived at ``now``; returns the round trip (None
        when no heartbeat to it was pending)."""
        sent = self._pending.pop(peer, None)
        if sent is None:
            return None
        rtt = now - sent
        recent = self.last.get(peer)
        if recent is None:
            recent = self.last[peer] = deque(maxlen=WINDOW)
        recent.append(rtt)
        self.samples += 1
        if rtt > self.worst:
            self.worst = rtt
        if (self.check_quorum and rtt >= WARN_FRACTION * self.election_timeout_min
                and len(recent) == WINDOW and now - self._warned_at >= WARN_INTERVAL
                and min(recent) >= WARN_FRACTION * self.election_timeout_min):
            rtt = min(recent)
            self._warned_at = now
            logger.warning(
                "%s: heartbeat round trips to %s took at least %.1f ms (%.0f%% of "
                "election_timeout_min=%.1f ms): with check_quorum the leader may step down "
                "and followers time out on a healthy leader; raise election_timeout_min "
                "(and heartbeat_interval) to about 10x the round trip (`raft-engine tune` "
                "recommends values)",
                self.node_id, peer, rtt * 1e3, 100 * rtt / self.election_timeout_min,
                self.election_timeout_min * 1e3)
            self.worst = 0.0
        return now - sent

    def reset(self) -> None:
        """No longer leading: forget pending heartbeats."""
        self._pending.clear()
