"""Quorum arithmetic: table cases and a brute-force oracle (after etcd's quorum/quick_test.go).

``committed_index`` and ``vote_result`` are pure functions; these tests prove they agree with the
definition of a majority on hand-picked edge cases and on 10,000 seeded random inputs each.
"""

from __future__ import annotations

import itertools
import random

import pytest

from engine.core.quorum import VoteResult, committed_index, quorum_size, vote_result

WON, LOST, PENDING = VoteResult.WON, VoteResult.LOST, VoteResult.PENDING


def _ids(n: int) -> list[str]:
    return [f"n{i}" for i in range(1, n + 1)]


# -- oracles ---------------------------------------------------------------------------------


def oracle_committed_index(voters: list[str], acked: dict[str, int]) -> int:
    """The largest index i such that more than half of the voters acked >= i (brute force over
    every candidate index)."""
    if not voters:
        return 0
    best = 0
    for candidate in {0, *acked.values()}:
        count = sum(1 for v in voters if acked.get(v, 0) >= candidate)
        if 2 * count > len(voters):
            best = max(best, candidate)
    return best


def oracle_vote_result(voters: list[str], votes: dict[str, bool]) -> VoteResult:
    """WON if some completion of the missing votes is unnecessary (a majority already granted);
    LOST if no completion can win; PENDING otherwise.  Brute force over every completion."""
    missing = [v for v in voters if v not in votes]
    outcomes = set()
    for fill in itertools.product([True, False], repeat=len(missing)):
        full = {v: votes[v] for v in voters if v in votes} | dict(zip(missing, fill, strict=True))
        outcomes.add(2 * sum(full.values()) > len(voters))
    if outcomes == {True}:
        return WON
    if outcomes == {False}:
        return LOST
    return PENDING


# -- tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_quorum_size(n: int, size: int) -> None:
    """A majority of n voters is floor(n/2)+1."""
    assert quorum_size(_ids(n)) == size


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        ([], 0),  # no voters commit nothing
        ([0], 0),
        ([5], 5),  # a single voter commits what it acked
        ([5, 0], 0),  # two voters need both
        ([5, 3], 3),
        ([5, 3, 0], 3),  # three voters need two
        ([5, 5, 0], 5),
        ([1, 2, 3], 2),
        ([3, 2, 1], 2),
        ([2, 2, 2, 9], 2),  # four voters need three
        ([9, 9, 2, 2], 2),
        ([9, 9, 9, 2], 9),
        ([1, 2, 3, 4, 5], 3),
        ([0, 0, 0, 7, 7], 0),
        ([7, 7, 7, 0, 0], 7),
    ],
)
def test_committed_index_table(matches: list[int], expected: int) -> None:
    """The committed index is the highest index a majority acknowledged."""
    voters = _ids(len(matches))
    assert committed_index(voters, dict(zip(voters, matches, strict=True))) == expected


def test_committed_index_missing_voters_count_as_zero() -> None:
    """A voter with no entry in ``acked`` counts as having acknowledged nothing, and acks from
    non-voters are ignored."""
    voters = _ids(3)
    assert committed_index(voters, {"n1": 4}) == 0
    assert committed_index(voters, {"n1": 4, "n2": 6}) == 4
    assert committed_index(voters, {"n1": 4, "stranger": 9, "other": 9}) == 0


@pytest.mark.parametrize(
    ("n", "votes", "expected"),
    [
        (1, {}, PENDING),
        (1, {"n1": True}, WON),
        (1, {"n1": False}, LOST),
        (3, {}, PENDING),
        (3, {"n1": True}, PENDING),
        (3, {"n1": True, "n2": True}, WON),
        (3, {"n1": True, "n2": False}, PENDING),
        (3, {"n1": False, "n2": False}, LOST),
        (3, {"n1": True, "n2": False, "n3": False}, LOST),
        (4, {"n1": True, "n2": True}, PENDING),  # 2 of 4 is not a majority
        (4, {"n1": False, "n2": False}, LOST),  # 2 rejections of 4: at most 2 grants left
        (4, {"n1": True, "n2": True, "n3": True}, WON),
        (5, {"n1": True, "n2": True, "n3": False, "n4": False}, PENDING),
        (5, {"n1": True, "n2": True, "n3": True}, WON),
        (5, {"n1": False, "n2": False, "n3": False}, LOST),
        (3, {"n1": True, "x": True, "y": True}, PENDING),  # non-voters do not count
    ],
)
def test_vote_result_table(n: int, votes: dict[str, bool], expected: VoteResult) -> None:
    """Elections are won by a majority of grants and lost once a majority rejected."""
    assert vote_result(_ids(n), votes) is expected


# -- oracle comparisons ----------------------------------------------------------------------


def test_committed_index_matches_oracle() -> None:
    """committed_index agrees with the brute-force definition on 10,000 seeded random inputs
    (1-9 voters, some missing from ``acked``, duplicates and zeros frequent)."""
    rng = random.Random(0xC0FFEE)
    for case in range(10_000):
        voters = _ids(rng.randint(1, 9))
        acked = {v: rng.choice([0, rng.randint(0, 10), rng.randint(0, 1000)])
                 for v in voters if rng.random() < 0.9}
        if rng.random() < 0.2:
            acked["outsider"] = rng.randint(0, 1000)
        expected = oracle_committed_index(voters, acked)
        got = committed_index(voters, acked)
        assert got == expected, f"case {case}: voters={voters} acked={acked}"


def test_vote_result_matches_oracle() -> None:
    """vote_result agrees with the brute-force definition (enumerating every completion of
    the missing votes) on 10,000 seeded random inputs."""
    rng = random.Random(0xBEEF)
    for case in range(10_000):
        voters = _ids(rng.randint(1, 7))
        votes = {v: rng.random() < 0.5 for v in voters if rng.random() < 0.6}
        if rng.random() < 0.1:
            votes["outsider"] = rng.random() < 0.5
        expected = oracle_vote_result(voters, {k: v for k, v in votes.items() if k in voters})
        got = vote_result(voters, votes)
        assert got is expected, f"case {case}: voters={voters} votes={votes}"
