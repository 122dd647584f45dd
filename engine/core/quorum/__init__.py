"""Quorum arithmetic (majority configurations)."""

from engine.core.quorum.majority import VoteResult, committed_index, quorum_size, vote_result

__all__ = ["VoteResult", "committed_index", "quorum_size", "vote_result"]
