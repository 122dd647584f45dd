"""Status: what ``RaftNode.status()`` reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.raw_node import PeerProgress
from engine.membership import Membership


@dataclass(frozen=True, slots=True)
class Status:
    """A consistent snapshot of one node, taken by its loop thread.

    ``role`` is 'leader', 'follower' or 'candidate' (a pre-candidate, which has not started a new
    term, reports 'follower'); a stopped node reports 'follower' with ``running=False``.
    ``leader_id`` is None when unknown.  ``progress`` is the leader's view of each peer (match and
    next index, replication state, appends in flight, recently active), refreshed once per tick
    (empty on followers); ``RaftNode.peer_progress()`` returns an exact copy on demand.
    """

    id: str
    role: str
    term: int
    leader_id: str | None
    commit_index: int
    last_applied: int
    last_log_index: int
    running: bool = True
    snapshot_index: int = 0
    """Last index covered by this node's newest snapshot (0: none)."""
    log_entries: int = 0
    """Entries held in the log after the compaction point."""
    progress: dict[str, PeerProgress] = field(default_factory=dict)
    membership: Membership | None = None
    """The configuration in force on this node (None while stopped)."""
    membership_committed: bool = False
    """True when this node knows that configuration's entry to be committed."""
    recovering: int = 0
    """Nonzero while the node is recovering entries it lost but may have acknowledged: the
    highest such index.  It neither votes nor counts towards any quorum meanwhile (see
    ``HardState.recovering``); 0 once a leader has given them back."""
    disk_stalled: bool = False
    """True while a durable write has run past ``Config.disk_stall_timeout``: the node does not
    lead or campaign until it completes."""

    @property
    def voters(self) -> tuple[str, ...]:
        """The voters of :attr:`membership` (the incoming ones while joint); () when stopped."""
        return self.membership.voters if self.membership is not None else ()

    @property
    def learners(self) -> tuple[str, ...]:
        """The learners of :attr:`membership`; () when stopped."""
        return self.membership.learners if self.membership is not None else ()
