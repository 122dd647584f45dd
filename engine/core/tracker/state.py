"""The replication states a leader tracks for each follower."""

from __future__ import annotations

from enum import Enum


class ProgressState(Enum):
    """How the leader currently sends entries to one follower.

    PROBE
        The leader does not know where the follower's log matches its own.  It sends at most one
        AppendEntries per heartbeat interval (or per response) and waits for the answer, moving
        ``next`` back on each rejection (by a whole term with fast backup).  A follower starts here
        when a leader is elected and returns here after any rejection.

    REPLICATE
        The follower's log is known to match up to ``match``.  The leader streams entries: it
        advances ``next`` optimistically as it sends and keeps up to ``max_inflight`` messages
        in flight, freeing window slots as acknowledgements arrive.  This is the fast path.

    SNAPSHOT
        The follower needs entries the leader has compacted away and is being sent a snapshot;
        no appends are sent until it is installed.  (Reserved for snapshots.)
    """

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"
