"""Quorum arithmetic: single majorities and joint (two-majority) configurations."""

from engine.core.quorum.joint import (
    joint_committed_index,
    joint_quorum_active,
    joint_vote_result,
)
from engine.core.quorum.majority import VoteResult, committed_index, quorum_size, vote_result

__all__ = ["VoteResult", "committed_index", "joint_committed_index", "joint_quorum_active",
           "joint_vote_result", "quorum_size", "vote_result"]
