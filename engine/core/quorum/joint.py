"""Quorum arithmetic for a joint configuration (C_old,new): two majorities at once.

While a cluster moves from ``outgoing`` voters to ``incoming`` voters, an entry commits only when
a majority of *each* set holds it, and an election is won only with a majority of each (Raft
thesis section 4.3).  When ``outgoing`` is empty this is exactly the single-majority rule of
:mod:`engine.core.quorum.majority`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from engine.core.quorum.majority import VoteResult, committed_index, quorum_size, vote_result
from engine.types import Index, NodeId


def joint_committed_index(incoming: Collection[NodeId], outgoing: Collection[NodeId],
                          acked: Mapping[NodeId, Index]) -> Index:
    """The largest index acknowledged by a majority of ``incoming`` and of ``outgoing``."""
    index = committed_index(incoming, acked)
    if outgoing:
        index = min(index, committed_index(outgoing, acked))
    return index


def joint_vote_result(incoming: Collection[NodeId], outgoing: Collection[NodeId],
                      votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON when both majorities granted, LOST when either rejected, else PENDING."""
    result = vote_result(incoming, votes)
    if not outgoing:
        return result
    other = vote_result(outgoing, votes)
    if result is VoteResult.LOST or other is VoteResult.LOST:
        return VoteResult.LOST
    if result is VoteResult.WON and other is VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def joint_quorum_active(incoming: Collection[NodeId], outgoing: Collection[NodeId],
                        active: Collection[NodeId]) -> bool:
    """True when the ``active`` nodes include a majority of each voter set (CheckQuorum)."""
    return all(sum(1 for v in voters if v in active) >= quorum_size(voters)
               for voters in (incoming, outgoing) if voters)
