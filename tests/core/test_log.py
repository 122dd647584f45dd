"""RaftLog: the follower's append check, its cursors and term lookups."""

from __future__ import annotations

import random

import pytest

from engine.core.log import RaftLog
from engine.errors import InvariantError
from engine.types import Entry, EntryKind


def ents(first: int, terms: list[int], tag: str = "") -> list[Entry]:
    """Entries from index ``first`` with the given terms; ``tag`` makes payloads distinct."""
    return [Entry(first + k, t, EntryKind.NORMAL, f"{tag}{first + k}/{t}".encode())
            for k, t in enumerate(terms)]


def terms_of(log: RaftLog) -> list[int]:
    return [e.term for e in log.slice(log.first_index(), log.last_index() + 1)]


def make(terms: list[int], committed: int = 0) -> RaftLog:
    return RaftLog(ents(1, terms), committed=committed)


# -- construction ---------------------------------------------------------------------------


def test_empty_log() -> None:
    """An empty log ends at index 0, term 0; index 0 has term 0 (the match point for the first
    append)."""
    log = RaftLog()
    assert log.first_index() == 1 and log.last_index() == 0 and log.last_term() == 0
    assert log.term(0) == 0 and log.term(1) is None
    assert log.stable == log.handed == log.committed == log.applying == 0


def test_restored_log_is_stable_and_clamps_commit() -> None:
    """Entries given at construction are durable; a commit beyond the log is clamped."""
    log = RaftLog(ents(1, [1, 1, 2]), committed=9)
    assert log.stable == log.handed == 3
    assert log.committed == 3


def test_non_contiguous_entries_raise() -> None:
    """A restored log with a gap is corrupt state: InvariantError."""
    with pytest.raises(InvariantError):
        RaftLog([Entry(1, 1, 0, b""), Entry(3, 1, 0, b"")])
    with pytest.raises(InvariantError):
        RaftLog([Entry(2, 1, 0, b"")])


def test_applied_beyond_commit_raises() -> None:
    """The state machine can never be ahead of the commit index."""
    with pytest.raises(InvariantError):
        RaftLog(ents(1, [1, 1]), committed=1, applied=2)


# -- maybe_append ----------------------------------------------------------------------------


def test_maybe_append_rejects_mismatched_prev() -> None:
    """Figure 2 step 2: reply false if the log has no entry at prev_index with prev_term."""
    log = make([1, 1, 2])
    assert log.maybe_append(3, 1, 0, ents(4, [3])) is None  # wrong term at 3
    assert log.maybe_append(5, 2, 0, ents(6, [3])) is None  # beyond the end
    assert terms_of(log) == [1, 1, 2]


def test_maybe_append_appends_new_entries() -> None:
    """A matching append extends the log and reports the last index it covers."""
    log = make([1, 1])
    assert log.maybe_append(2, 1, 0, ents(3, [2, 2])) == 4
    assert terms_of(log) == [1, 1, 2, 2]
    assert log.maybe_append(0, 0, 0, []) == 0  # an empty probe at the start matches


def test_maybe_append_truncates_only_conflicting_suffix() -> None:
    """Figure 2 step 3: a conflicting entry and all that follow it are deleted, and only those."""
    log = make([1, 1, 2, 2, 2])
    original = log.slice(1, 6)
    assert log.maybe_append(2, 1, 0, ents(3, [2, 3], tag="new")) == 4
    assert terms_of(log) == [1, 1, 2, 3]
    assert log.entry(3) == original[2], "the matching entry at 3 was kept, not rewritten"
    assert log.entry(4).data == b"new4/3"


def test_maybe_append_never_truncates_on_matching_prefix() -> None:
    """A duplicate or older append whose entries all match must not remove later entries."""
    log = make([1, 1, 2, 2, 2])
    before = log.slice(1, 6)
    # An old message carrying only entries 2..3 arrives after 4..5 were appended.
    assert log.maybe_append(1, 1, 0, ents(2, [1, 2])) == 3
    assert log.slice(1, 6) == before
    assert log.maybe_append(0, 0, 0, []) == 0
    assert log.slice(1, 6) == before


def test_maybe_append_commits_up_to_last_new_entry() -> None:
    """Figure 2 step 5: commit = min(leaderCommit, index of last new entry) and never lowers."""
    log = make([1, 1, 1, 1])
    assert log.maybe_append(1, 1, 3, ents(2, [1])) == 2
    assert log.committed == 2, "commit is capped by what this message proved to match"
    log.maybe_append(4, 1, 4, [])
    assert log.committed == 4
    log.maybe_append(1, 1, 1, [])
    assert log.committed == 4


def test_overwriting_committed_entries_raises() -> None:
    """A conflict at or below the commit index means safety is already broken: raise."""
    log = make([1, 1, 2], committed=3)
    with pytest.raises(InvariantError):
        log.maybe_append(1, 1, 0, ents(2, [3, 3]))
    with pytest.raises(InvariantError):
        log.append(ents(3, [4]))
    assert terms_of(log) == [1, 1, 2]


def test_append_with_gap_raises() -> None:
    """Entries must continue the log: appending after a gap raises."""
    log = make([1])
    with pytest.raises(InvariantError):
        log.append(ents(3, [1]))


def test_commit_beyond_last_index_raises() -> None:
    """The commit index never points past the log."""
    log = make([1, 1])
    with pytest.raises(InvariantError):
        log.commit_to(3)


def _random_pair(rng: random.Random) -> tuple[list[Entry], list[Entry]]:
    """A follower log and a leader log that obey Log Matching: a shared prefix, then suffixes
    whose terms come from disjoint ranges (as two leaders of different terms would write)."""
    prefix_terms = sorted(rng.randint(1, 3) for _ in range(rng.randint(0, 5)))
    top = prefix_terms[-1] if prefix_terms else 1
    low, high = (top, top + 3), (top + 4, top + 7)
    if rng.random() < 0.5:
        low, high = high, low
    follower_terms = prefix_terms + sorted(
        rng.randint(*low) for _ in range(rng.randint(0, 5)))
    leader_terms = prefix_terms + sorted(rng.randint(*high) for _ in range(rng.randint(0, 5)))
    follower = ents(1, follower_terms)
    leader = ents(1, prefix_terms) + ents(len(prefix_terms) + 1,
                                          leader_terms[len(prefix_terms):], tag="L")
    return follower, leader


def test_maybe_append_random_against_model() -> None:
    """Over seeded random follower/leader log pairs and AppendEntries slices of the leader's
    log, maybe_append equals the Figure 2 model: reject unless the log matches at prev; keep
    the matching prefix; replace from the first conflict; never shorten on a full match."""
    rng = random.Random(7)
    for case in range(3_000):
        follower, leader = _random_pair(rng)
        log = RaftLog(follower)
        prev = rng.randint(0, len(leader))
        prev_term = leader[prev - 1].term if prev else 0
        new = leader[prev:prev + rng.randint(0, 4)]
        model = list(follower)
        matches = prev == 0 or (prev <= len(model) and model[prev - 1].term == prev_term)
        if matches:
            for e in new:
                if e.index <= len(model) and model[e.index - 1].term == e.term:
                    continue
                model = [*model[:e.index - 1], e]
        got = log.maybe_append(prev, prev_term, 0, new)
        assert (got is not None) == matches, f"case {case}: {follower} {leader} {prev}"
        if matches:
            assert got == prev + len(new)
        assert log.slice(1, log.last_index() + 1) == model, f"case {case}: {prev} {new}"


# -- cursors ---------------------------------------------------------------------------------


def test_cursors_handed_stable_applying() -> None:
    """Entries flow: appended -> handed out for persistence -> stable -> applied; only entries
    that are both committed and stable are handed out for application."""
    log = RaftLog()
    log.append(ents(1, [1, 1, 1]))
    assert log.handed == 0 and log.stable == 0
    handed = log.take_unpersisted()
    assert [e.index for e in handed] == [1, 2, 3] and log.handed == 3
    assert log.take_unpersisted() == []
    log.commit_to(3)
    assert not log.has_committed_to_apply(), "committed but not durable here: not applied yet"
    assert log.take_committed(100) == []
    log.stable_to(2, 1)
    assert log.stable == 2 and log.has_committed_to_apply()
    assert [e.index for e in log.take_committed(100)] == [1, 2]
    log.stable_to(3, 1)
    assert [e.index for e in log.take_committed(100)] == [3]
    assert log.applying == 3


def test_take_committed_respects_limit() -> None:
    """At most ``max_entries`` committed entries per call, in order."""
    log = make([1] * 10, committed=10)
    assert [e.index for e in log.take_committed(4)] == [1, 2, 3, 4]
    assert [e.index for e in log.take_committed(4)] == [5, 6, 7, 8]
    assert [e.index for e in log.take_committed(4)] == [9, 10]


def test_stable_to_ignores_replaced_entries() -> None:
    """A durability report for entries that were since replaced (different term) or never
    handed out is ignored, and truncation pulls stable and handed back."""
    log = make([1, 1])
    log.append(ents(3, [1, 1]))
    log.take_unpersisted()
    log.append(ents(3, [2]))  # a new leader replaced 3..4 before the write finished
    assert log.handed == 2 and log.stable == 2
    log.stable_to(4, 1)
    assert log.stable == 2
    log.stable_to(3, 1)
    assert log.stable == 2, "entry 3 of term 1 is gone"
    log.stable_to(3, 2)
    assert log.stable == 2, "entry 3 of term 2 was not handed out yet"
    log.take_unpersisted()
    log.stable_to(3, 2)
    assert log.stable == 3


def test_truncation_below_stable_pulls_stable_back() -> None:
    """Replacing durable (but uncommitted) entries makes them non-durable again."""
    log = make([1, 1, 1, 1], committed=1)
    assert log.stable == 4
    log.maybe_append(1, 1, 0, ents(2, [2]))
    assert log.stable == 1 and log.handed == 1
    assert [e.index for e in log.take_unpersisted()] == [2]


# -- term lookups ----------------------------------------------------------------------------


def test_term_lookup() -> None:
    """term(i) for every held index, 0 at index 0, None beyond the end."""
    log = make([1, 1, 3, 3, 3, 4])
    assert [log.term(i) for i in range(0, 8)] == [0, 1, 1, 3, 3, 3, 4, None]
    assert log.match_term(3, 3) and not log.match_term(3, 1) and log.match_term(0, 0)
    assert log.last_term() == 4


def test_term_lookup_after_snapshot_point() -> None:
    """After a snapshot point, compacted indexes have no term except the snapshot index."""
    log = RaftLog(ents(6, [3, 3, 4]), snapshot_index=5, snapshot_term=2)
    assert log.first_index() == 6 and log.last_index() == 8
    assert log.term(5) == 2 and log.term(4) is None and log.term(6) == 3
    assert log.last_index_of_term(2, 8) == 5
    with pytest.raises(IndexError):
        log.entry(4)


@pytest.mark.parametrize(
    ("index", "expected"),
    [(1, 1), (2, 1), (3, 3), (5, 3), (6, 6), (7, 7), (9, 7)],
)
def test_first_index_of_term_at(index: int, expected: int) -> None:
    """The first index of the run of entries with the term found at ``index``."""
    log = make([1, 1, 3, 3, 3, 4, 5, 5, 5])
    assert log.first_index_of_term_at(index) == expected


@pytest.mark.parametrize(
    ("term", "upto", "expected"),
    [
        (3, 9, 5),  # last entry of term 3
        (3, 4, 4),  # bounded by upto
        (3, 2, None),  # nothing of term 3 at or below 2
        (2, 9, None),  # the log skips term 2
        (1, 9, 2),
        (5, 9, 9),
        (5, 100, 9),  # upto beyond the end is clipped
        (6, 9, None),  # a term newer than anything held
        (0, 9, 0),  # index 0 has term 0
    ],
)
def test_last_index_of_term(term: int, upto: int, expected: int | None) -> None:
    """The leader's fast-backup lookup: last index <= upto whose entry has ``term``."""
    log = make([1, 1, 3, 3, 3, 4, 5, 5, 5])
    assert log.last_index_of_term(term, upto) == expected


def test_is_up_to_date() -> None:
    """Section 5.4.1: a later last term wins; with equal terms the longer log wins."""
    log = make([1, 2, 2])
    assert log.is_up_to_date(1, 3)  # shorter but newer
    assert log.is_up_to_date(3, 2)  # equal
    assert log.is_up_to_date(4, 2)  # longer
    assert not log.is_up_to_date(2, 2)  # shorter, same term
    assert not log.is_up_to_date(9, 1)  # longer but older
