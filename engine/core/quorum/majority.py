"""Quorum arithmetic for one majority configuration, as pure functions.

Kept apart from the Raft state machine (as in etcd's ``quorum`` package) so it can be tested
against a brute-force oracle and later combined into joint configurations.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum

from engine.types import Index, NodeId


class VoteResult(Enum):
    """Outcome of an election round so far."""

    PENDING = "pending"  #: neither a majority of grants nor of rejections yet
    WON = "won"  #: a majority granted
    LOST = "lost"  #: a majority rejected; no outcome of the missing votes can win


def quorum_size(voters: Collection[NodeId]) -> int:
    """Smallest number of voters that forms a majority."""
    return len(voters) // 2 + 1


def committed_index(voters: Collection[NodeId], acked: Mapping[NodeId, Index]) -> Index:
    """The largest index acknowledged by a majority of ``voters``.

    ``acked`` maps voters to their highest acknowledged (match) index; voters missing from it
    count as 0.  An empty voter set commits nothing and returns 0.
    """
    if not voters:
        return 0
    matched = sorted((acked.get(v, 0) for v in voters), reverse=True)
    return matched[quorum_size(voters) - 1]


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Tally ``votes`` (voter -> granted) for a majority of ``voters``.

    Votes from non-voters are ignored.
    """
    granted = rejected = 0
    for v in voters:
        vote = votes.get(v)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    need = quorum_size(voters)
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
