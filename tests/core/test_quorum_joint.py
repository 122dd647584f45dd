"""Joint quorums (C_old,new): table cases and a brute-force oracle, as test_quorum.py does for a
single majority.

While joint, an index commits only when a majority of the incoming voters *and* a majority of
the outgoing voters acknowledged it, an election is won only with both majorities, and CheckQuorum
needs both to be active.  With no outgoing voters each rule is exactly the single-majority one.
"""

from __future__ import annotations

import itertools
import random

import pytest

from engine.core.quorum import (
    VoteResult,
    committed_index,
    joint_committed_index,
    joint_quorum_active,
    joint_vote_result,
    vote_result,
)

WON, LOST, PENDING = VoteResult.WON, VoteResult.LOST, VoteResult.PENDING


# -- oracles (written from the definition, sharing nothing with the code under test) ---------


def _majority(voters: list[str], holds: set[str]) -> bool:
    return 2 * sum(1 for v in voters if v in holds) > len(voters)


def _joint_majority(incoming: list[str], outgoing: list[str], holds: set[str]) -> bool:
    """Both halves have a majority in ``holds`` (an empty outgoing half imposes nothing)."""
    return _majority(incoming, holds) and (not outgoing or _majority(outgoing, holds))


def oracle_joint_committed_index(incoming: list[str], outgoing: list[str],
                                 acked: dict[str, int]) -> int:
    """The largest candidate index whose acknowledgers form a majority of both halves."""
    if not incoming:
        return 0
    best = 0
    for candidate in {0, *acked.values()}:
        holders = {v for v in set(incoming) | set(outgoing) if acked.get(v, 0) >= candidate}
        if _joint_majority(incoming, outgoing, holders):
            best = max(best, candidate)
    return best


def oracle_joint_vote_result(incoming: list[str], outgoing: list[str],
                             votes: dict[str, bool]) -> VoteResult:
    """Enumerate every completion of the missing votes (of either half): WON if all completions
    win both majorities, LOST if none does, else PENDING."""
    everyone = sorted(set(incoming) | set(outgoing))
    missing = [v for v in everyone if v not in votes]
    outcomes = set()
    for fill in itertools.product([True, False], repeat=len(missing)):
        full = {v: votes[v] for v in everyone if v in votes} | dict(zip(missing, fill,
                                                                          strict=True))
        granted = {v for v, g in full.items() if g}
        outcomes.add(_joint_majority(incoming, outgoing, granted))
    if outcomes == {True}:
        return WON
    if outcomes == {False}:
        return LOST
    return PENDING


# -- tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("incoming", "outgoing", "acked", "expected"),
    [
        # Old {1,2,3} -> new {1,4,5}: index 7 held by 1,4,5 (new majority, old minority).
        ("145", "123", {"1": 7, "4": 7, "5": 7}, 0),
        # ... and by 1,2,3 (old majority, new minority).
        ("145", "123", {"1": 7, "2": 7, "3": 7}, 0),
        # Both majorities: 1,2 of old and 1,4 of new.
        ("145", "123", {"1": 7, "2": 7, "4": 7}, 7),
        # The smaller of the two per-half commit points.
        ("145", "123", {"1": 9, "2": 8, "3": 8, "4": 5, "5": 2}, 5),
        ("145", "123", {"1": 2, "2": 8, "3": 8, "4": 9, "5": 9}, 8),
        # Growing 3 -> 5 (all old voters stay): 3 of 5 needed, 2 of them among the old.
        ("12345", "123", {"1": 4, "4": 4, "5": 4}, 0),
        ("12345", "123", {"1": 4, "2": 4, "4": 4}, 4),
        # Shrinking 5 -> 3: a majority of the old five too.
        ("123", "12345", {"1": 6, "2": 6}, 0),
        ("123", "12345", {"1": 6, "2": 6, "4": 6}, 6),
        # Disjoint halves, single voters: both must ack.
        ("2", "1", {"1": 3}, 0),
        ("2", "1", {"1": 3, "2": 1}, 1),
        # Empty outgoing: plain majority.
        ("123", "", {"1": 5, "2": 4}, 4),
        ("1", "", {"1": 5}, 5),
    ],
)
def test_joint_committed_index_table(incoming: str, outgoing: str, acked: dict[str, int],
                                     expected: int) -> None:
    """An index is committed in C_old,new only when a majority of each half holds it."""
    assert joint_committed_index(list(incoming), list(outgoing), acked) == expected


@pytest.mark.parametrize(
    ("incoming", "outgoing", "votes", "expected"),
    [
        ("145", "123", {"1": True, "4": True, "5": True}, PENDING),  # new only: 2,3 open
        ("145", "123", {"1": True, "4": True, "5": True, "2": False, "3": False}, LOST),
        ("145", "123", {"1": True, "2": True, "3": True}, PENDING),  # old only: 4,5 open
        ("145", "123", {"1": True, "2": True, "3": True, "4": False, "5": False}, LOST),
        ("145", "123", {"1": True, "2": True, "4": True}, WON),
        ("145", "123", {"1": False, "2": False}, LOST),  # old majority rejected
        ("145", "123", {"4": False, "5": False}, LOST),  # new majority rejected
        ("12345", "123", {"1": True, "4": True, "5": True}, PENDING),
        ("12345", "123", {"1": True, "2": True, "4": True}, WON),
        ("2", "1", {"2": True}, PENDING),
        ("2", "1", {"2": True, "1": True}, WON),
        ("2", "1", {"2": True, "1": False}, LOST),
        ("123", "", {"1": True, "2": True}, WON),  # empty outgoing: plain majority
        ("123", "", {"1": False, "2": False}, LOST),
        ("145", "123", {"x": True, "y": True, "1": True, "2": True}, PENDING),  # outsiders
    ],
)
def test_joint_vote_result_table(incoming: str, outgoing: str, votes: dict[str, bool],
                                 expected: VoteResult) -> None:
    """An election in C_old,new is won with both majorities and lost once either half
    rejected by a majority."""
    assert joint_vote_result(list(incoming), list(outgoing), votes) is expected


@pytest.mark.parametrize(
    ("incoming", "outgoing", "active", "expected"),
    [
        ("145", "123", "145", False),
        ("145", "123", "123", False),
        ("145", "123", "124", True),
        ("12345", "123", "145", False),
        ("12345", "123", "124", True),
        ("123", "", "12", True),
        ("123", "", "1", False),
        ("123", "", "1xy", False),  # outsiders do not count
    ],
)
def test_joint_quorum_active_table(incoming: str, outgoing: str, active: str,
                                   expected: bool) -> None:
    """CheckQuorum in C_old,new: the leader stays only while a majority of each half is
    active."""
    assert joint_quorum_active(list(incoming), list(outgoing), set(active)) is expected


# -- oracle comparisons ----------------------------------------------------------------------


def _random_halves(rng: random.Random) -> tuple[list[str], list[str]]:
    """Two voter sets drawn from a small pool, so they overlap in every possible way (equal,
    nested, disjoint, partial); outgoing empty in about one case in five."""
    pool = [f"n{i}" for i in range(1, 8)]
    incoming = sorted(rng.sample(pool, rng.randint(1, 5)))
    outgoing = [] if rng.random() < 0.2 else sorted(rng.sample(pool, rng.randint(1, 5)))
    return incoming, outgoing


def test_joint_committed_index_matches_oracle() -> None:
    """joint_committed_index agrees with the brute-force definition on 10,000 seeded inputs."""
    rng = random.Random(0x101)
    for case in range(10_000):
        incoming, outgoing = _random_halves(rng)
        everyone = set(incoming) | set(outgoing)
        acked = {v: rng.choice([0, rng.randint(0, 6), rng.randint(0, 1000)])
                 for v in everyone if rng.random() < 0.9}
        if rng.random() < 0.2:
            acked["outsider"] = rng.randint(0, 1000)
        expected = oracle_joint_committed_index(incoming, outgoing, acked)
        got = joint_committed_index(incoming, outgoing, acked)
        assert got == expected, f"case {case}: in={incoming} out={outgoing} acked={acked}"


def test_joint_vote_result_matches_oracle() -> None:
    """joint_vote_result agrees with the brute-force definition (every completion of the
    missing votes of both halves) on 5,000 seeded inputs."""
    rng = random.Random(0x202)
    for case in range(5_000):
        incoming, outgoing = _random_halves(rng)
        everyone = sorted(set(incoming) | set(outgoing))
        votes = {v: rng.random() < 0.5 for v in everyone if rng.random() < 0.6}
        if rng.random() < 0.1:
            votes["outsider"] = rng.random() < 0.5
        expected = oracle_joint_vote_result(
            incoming, outgoing, {k: v for k, v in votes.items() if k in everyone})
        got = joint_vote_result(incoming, outgoing, votes)
        assert got is expected, f"case {case}: in={incoming} out={outgoing} votes={votes}"


def test_joint_quorum_active_matches_oracle() -> None:
    """joint_quorum_active agrees with the definition on 10,000 seeded inputs."""
    rng = random.Random(0x303)
    pool = [f"n{i}" for i in range(1, 8)] + ["outsider"]
    for case in range(10_000):
        incoming, outgoing = _random_halves(rng)
        active = {v for v in pool if rng.random() < 0.5}
        expected = _joint_majority(incoming, outgoing, active)
        got = joint_quorum_active(incoming, outgoing, active)
        assert got is expected, f"case {case}: in={incoming} out={outgoing} active={active}"


def test_empty_outgoing_is_a_plain_majority() -> None:
    """With no outgoing voters each joint rule returns exactly the single-majority result, on
    5,000 seeded inputs."""
    rng = random.Random(0x404)
    for _ in range(5_000):
        voters = [f"n{i}" for i in range(1, rng.randint(1, 9) + 1)]
        acked = {v: rng.randint(0, 20) for v in voters if rng.random() < 0.9}
        votes = {v: rng.random() < 0.5 for v in voters if rng.random() < 0.6}
        assert joint_committed_index(voters, [], acked) == committed_index(voters, acked)
        assert joint_committed_index(voters, (), acked) == committed_index(voters, acked)
        assert joint_vote_result(voters, [], votes) is vote_result(voters, votes)
        active = {v for v, granted in votes.items() if granted}
        assert joint_quorum_active(voters, [], active) is _majority(voters, active)
