"""Membership changes in the core: the Membership value, learners, joint consensus (C_old,new
then C_new), configurations in force on append and reverting on truncation, snapshots carrying a
configuration, restarts, removed nodes and CheckQuorum while joint.

Deterministic: every test drives the cores through ``CoreNetwork`` message by message, and time
is ticks only.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from engine.core import Message, MessageKind, RawNode
from engine.core.membership_log import MembershipLog, decode_config_entry
from engine.errors import (
    InvariantError,
    MembershipChangeInProgress,
    MembershipError,
    NotLeaderError,
)
from engine.membership import Membership
from engine.types import Entry, EntryKind
from tests.core.harness import CoreNetwork

APPEND = MessageKind.APPEND
APPEND_RESPONSE = MessageKind.APPEND_RESPONSE
VOTE = MessageKind.VOTE
PRE_VOTE = MessageKind.PRE_VOTE
TIMEOUT_NOW = MessageKind.TIMEOUT_NOW
SNAPSHOT = MessageKind.SNAPSHOT


def M(voters: str, outgoing: str = "", learners: str = "") -> Membership:
    """Shorthand: one-character ids, ``M("123", learners="4")``."""
    return Membership(tuple(voters), tuple(outgoing), tuple(learners))


def role(net: CoreNetwork, node_id: str) -> str:
    return net.nodes[node_id].status().role


def commit(net: CoreNetwork, node_id: str) -> int:
    return net.nodes[node_id].status().commit_index


def last(net: CoreNetwork, node_id: str) -> int:
    return net.nodes[node_id].status().last_log_index


def cluster(n: int = 3, **options: object) -> CoreNetwork:
    """n original voters with 1 elected and its no-op committed everywhere."""
    net = CoreNetwork(n, **options)
    net.elect("1")
    net.tick_all(2)
    return net


def propose(net: CoreNetwork, leader: str, *commands: bytes) -> int:
    index, _ = net.nodes[leader].propose(list(commands))
    net.stabilize()
    return index + len(commands) - 1


def campaigns_by(net: CoreNetwork, node_id: str, since: int = 0) -> list[MessageKind]:
    """Kinds of the (pre-)vote requests ``node_id`` sent after ``net.sent[since]``."""
    return [m.kind for m in net.sent[since:] if m.src == node_id and m.kind in (VOTE, PRE_VOTE)]


def complete(net: CoreNetwork, node_id: str) -> bool:
    """The node's configuration in force is not joint and committed (the change is done)."""
    raft = net.nodes[node_id].raft
    return not raft.membership.is_joint and raft.log.committed >= raft.memberships.current_index


def step_until(net: CoreNetwork, done: Callable[[], bool], limit: int = 10_000) -> None:
    """Deliver queued messages one at a time, handling every Ready in between, until
    ``done()`` (checked after each delivery) or until nothing is left to do."""
    for _ in range(limit):
        if done():
            return
        progressed = any([net.process_ready(i) for i in list(net.ids)])
        if net.queue:
            net.deliver(net.queue.pop(0))
            progressed = True
        if not progressed:
            break
    assert done(), "condition never reached"


def with_learners(net: CoreNetwork, *learners: str) -> None:
    """Start joiners ``learners`` and add them to the (3-voter) cluster as learners."""
    for node_id in learners:
        net.add_node(node_id)
    net.change(list(net.nodes[net.leader() or "1"].membership.voters), list(learners))


# -- the Membership value ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"voters": "123"}, "not a single string"),
        ({"voters": ["1", ""]}, "non-empty strings"),
        ({"voters": ["1", 2]}, "non-empty strings"),
        ({"voters": ["1"], "learners": ["1"]}, "both voter and learner"),
        ({"outgoing": ["1"]}, "needs incoming voters"),
        ({"voters": ["1"], "addresses": {"1": 7}}, "want id -> 'host:port'"),
        ({"voters": ["1"], "addresses": [("1", "a:1"), ("1", "b:2")]}, "repeats an id"),
    ],
)
def test_membership_validation(kwargs: dict, message: str) -> None:
    """Invalid configurations are refused with a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        Membership(**kwargs)


def test_membership_normalizes_and_answers_queries() -> None:
    """Collections become sorted tuples without repeats; members, can_vote, is_joint and
    is_empty follow the definitions (a demoted voter is in outgoing and learners at once)."""
    m = Membership(["3", "1", "3"], ["1", "2"], ["9"], {"1": "h:1"})
    assert m.voters == ("1", "3") and m.outgoing == ("1", "2") and m.learners == ("9",)
    assert m.members() == ("1", "2", "3", "9")
    assert [m.can_vote(i) for i in "1239"] == [True, True, True, False]
    assert m.is_joint and not m.is_empty and Membership().is_empty
    assert M("1").can_vote("1") and not M("1", learners="2").can_vote("2")
    assert Membership(["2"], ["1", "2"], ["1"]).members() == ("1", "2")
    assert m.describe() == "voters=['1', '3'] outgoing=['1', '2'] learners=['9']"


def test_change_to_and_leave_joint() -> None:
    """A voter change gives C_old,new (outgoing = the old voters) and leave_joint gives C_new;
    a learner-only change needs no joint phase; addresses of departed members are dropped."""
    old = Membership(["1", "2", "3"], (), (), {"1": "a:1", "2": "a:2", "3": "a:3"})
    joint = old.change_to(["1", "2", "4"], addresses={"4": "a:4"})
    assert joint.voters == ("1", "2", "4") and joint.outgoing == ("1", "2", "3")
    assert dict(joint.addresses) == {"1": "a:1", "2": "a:2", "3": "a:3", "4": "a:4"}
    new = joint.leave_joint()
    assert new == Membership(["1", "2", "4"], (), (),
                             {"1": "a:1", "2": "a:2", "4": "a:4"})
    learner = old.change_to(["1", "2", "3"], ["5"], {"5": "a:5"})
    assert not learner.is_joint and learner.learners == ("5",)
    dropped = learner.change_to(["1", "2", "3"])
    assert "5" not in dict(dropped.addresses)
    # Demoting voter 3 to a learner: 3 stays in outgoing (and votes) until C_new.
    demote = old.change_to(["1", "2"], ["3"])
    assert demote.outgoing == ("1", "2", "3") and demote.learners == ("3",)
    assert demote.can_vote("3") and not demote.leave_joint().can_vote("3")
    assert demote.leave_joint().learners == ("3",)


@pytest.mark.parametrize(
    ("voters", "learners", "message"),
    [
        ([], [], "at least one voter"),
        (["1", "2", "3"], [], "is the current configuration"),
        (["1", "2"], ["2"], "both voter and learner"),
    ],
)
def test_change_to_refuses_invalid_targets(voters: list[str], learners: list[str],
                                           message: str) -> None:
    """No voters, no change at all, or a node both voter and learner: ValueError."""
    with pytest.raises(ValueError, match=message):
        M("123").change_to(voters, learners)


def test_change_to_refuses_while_joint_and_leave_joint_needs_joint() -> None:
    """Only one change at a time: a joint configuration cannot start another, and a
    non-joint one has nothing to leave."""
    with pytest.raises(ValueError, match="in progress"):
        M("124", "123").change_to(["1"])
    with pytest.raises(ValueError, match="not a joint"):
        M("123").leave_joint()


def test_encode_decode_round_trip() -> None:
    """encode is canonical (equal configurations, equal bytes, whatever the input order) and
    decode inverts it, for empty, plain, learner, joint and address-carrying configurations."""
    cases = [Membership(), M("1"), M("123", learners="45"), M("145", "123"),
             Membership(["b", "a"], ["a", "c"], ["c"], {"a": "h:1", "c": "h:3"})]
    for m in cases:
        assert Membership.decode(m.encode()) == m
        assert Membership.decode(bytearray(m.encode())) == m
        assert Membership.decode(memoryview(m.encode())) == m
    assert Membership(["2", "1"]).encode() == Membership(["1", "2"]).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'"voters"',
        b'{"voters": "1"}',
        b'{"voters": ["1"], "extra": 1}',
        b'{"voters": [1]}',
        b'{"voters": [""]}',
        b'{"voters": ["1"], "learners": ["1"]}',
        b'{"outgoing": ["1"]}',
        b'{"voters": ["1"], "addresses": []}',
        b'{"voters": ["1"], "addresses": {"1": 5}}',
        b'{"voters": ["1"], "learners": {"2": 1}}',
    ],
)
def test_decode_rejects_malformed_input(data: bytes) -> None:
    """Anything but a valid encoded configuration raises ValueError (never another error)."""
    with pytest.raises(ValueError):
        Membership.decode(data)


def test_malformed_config_entry_is_an_invariant_error() -> None:
    """A CONFIG entry that does not decode is an engine bug: InvariantError."""
    with pytest.raises(InvariantError, match="CONFIG entry 1/5"):
        decode_config_entry(Entry(5, 1, EntryKind.CONFIG, b"{"))


def test_membership_log_tracks_append_truncation_compaction_restore() -> None:
    """MembershipLog unit: the configuration in force follows appended CONFIG entries, falls
    back when one is replaced, folds into the base on compaction, and resets on restore."""
    terms: dict[int, int] = {}
    mlog = MembershipLog(M("123"))

    def append(*entries: Entry) -> bool:
        for e in entries:
            for i in [i for i in terms if i >= e.index]:
                del terms[i]
        terms.update({e.index: e.term for e in entries})
        return mlog.observe(entries, terms.get)

    def config(index: int, term: int, m: Membership) -> Entry:
        return Entry(index, term, EntryKind.CONFIG, m.encode())

    assert not append(Entry(1, 1, EntryKind.NOOP, b""), Entry(2, 1, EntryKind.NORMAL, b"x"))
    assert append(config(3, 1, M("123", learners="4")))
    assert append(config(4, 1, M("1234", "123")))
    assert mlog.current == M("1234", "123") and mlog.current_index == 4
    assert mlog.at(2) == M("123") and mlog.at(3) == M("123", learners="4")
    # Entry 4 replaced by a leader of term 2: back to the configuration of entry 3.
    assert append(Entry(4, 2, EntryKind.NOOP, b""))
    assert mlog.current == M("123", learners="4") and mlog.current_index == 3
    mlog.compact(3)
    assert mlog.current == M("123", learners="4") and mlog.current_index == 3
    assert mlog.at(3) == M("123", learners="4")
    assert mlog.restore(M("12"), 10, terms.get)
    assert mlog.current == M("12") and mlog.current_index == 10


# -- learners ---------------------------------------------------------------------------------


def test_add_learner_replicates_the_log_to_it() -> None:
    """A joiner added as a learner receives the whole log (from index 1), learns the
    configuration from it and applies everything the voters applied."""
    net = cluster()
    propose(net, "1", b"a", b"b")
    net.add_node("4")
    assert net.nodes["4"].membership.is_empty
    index = net.change(["1", "2", "3"], ["4"])
    propose(net, "1", b"c")
    net.tick_all(2)
    assert net.nodes["1"].membership == M("123", learners="4")
    assert net.nodes["4"].membership == M("123", learners="4")
    assert net.log("4") == net.log("1")
    assert net.user_data("4") == [b"a", b"b", b"c"] == net.user_data("2")
    assert commit(net, "4") == last(net, "1") > index
    assert net.configs("2") == [M("123", learners="4")]


def test_learner_never_campaigns() -> None:
    """A learner never starts an election, not even after many election timeouts without a
    leader, and ignores TIMEOUT_NOW; the leader refuses to hand leadership to it."""
    net = cluster()
    with_learners(net, "4")
    with pytest.raises(ValueError, match="not another voter"):
        net.nodes["1"].raft.transfer_leadership("4")
    before = len(net.sent)
    net.stop_node("1")
    net.tick_all(10 * net.options.election_ticks_max)
    assert campaigns_by(net, "4", before) == []
    assert role(net, "4") == "follower"
    assert net.leader() in ("2", "3")  # the remaining voters still elect one of them
    assert not net.nodes["4"].raft.promotable()
    term = net.nodes["4"].status().term
    net.nodes["4"].step(Message(kind=TIMEOUT_NOW, src=net.leader(), dst="4", term=term))
    net.stabilize()
    assert role(net, "4") == "follower" and campaigns_by(net, "4", before) == []


def test_learner_does_not_count_for_commit() -> None:
    """With two of three voters cut off, an entry the learner acknowledges does not commit: the
    learner holds it, the leader knows it (match), but a learner is no majority."""
    net = cluster()
    with_learners(net, "4")
    committed = commit(net, "1")
    net.partition(["1", "4"], ["2", "3"])
    index = propose(net, "1", b"lonely")
    assert net.nodes["1"].raft.progress["4"].match == index == last(net, "4")
    assert commit(net, "1") == committed < index
    net.heal()
    net.tick_all(2)
    assert commit(net, "1") >= index and net.user_data("4")[-1] == b"lonely"


# -- joint consensus: promote, grow, shrink, replace ------------------------------------------


def test_promote_learner_goes_through_joint_then_c_new() -> None:
    """Promoting a learner appends C_old,new; once it commits the leader appends C_new by
    itself; both entries are in every log, the change completes, and the next change is
    accepted."""
    net = cluster()
    with_learners(net, "4")
    joint_index = net.change(["1", "2", "3", "4"])
    expected = [M("123", learners="4"), M("1234", "123"), M("1234")]
    for node_id in "1234":
        assert net.configs(node_id) == expected, node_id
        assert net.nodes[node_id].membership == M("1234")
        assert complete(net, node_id)
    log = net.log("1")
    assert log[joint_index - 1].kind == EntryKind.CONFIG
    assert log[joint_index].kind == EntryKind.CONFIG and log[joint_index].term == log[-1].term
    assert net.nodes["1"].raft.memberships.at(joint_index) == M("1234", "123")
    index = propose(net, "1", b"after")
    assert commit(net, "1") == index
    net.change(["1", "2", "3", "4"], ["5"])  # a next change is accepted


def test_grow_three_to_five_then_shrink_back() -> None:
    """Two joiners become voters in one change (3 -> 5), entries commit with them; then they
    are removed again (5 -> 3), and entries commit with the three alone even with the removed
    nodes stopped."""
    net = cluster()
    net.add_node("4")
    net.add_node("5")
    net.change(["1", "2", "3", "4", "5"])
    for node_id in "12345":
        assert net.nodes[node_id].membership == M("12345") and complete(net, node_id)
    assert net.configs("5") == [M("12345", "123"), M("12345")]
    # Now 1 and 2 alone are no majority of five.
    net.partition(["1", "2"], ["3", "4", "5"])
    before = commit(net, "1")
    index = propose(net, "1", b"needs-five")
    assert commit(net, "1") == before < index
    net.heal()
    net.tick_all(2)
    assert commit(net, "1") >= index
    net.change(["1", "2", "3"])
    for node_id in "12345":
        assert net.nodes[node_id].membership == M("123"), node_id
    assert complete(net, "1")
    net.stop_node("4")
    net.stop_node("5")
    index = propose(net, "1", b"three-again")
    net.tick_all(2)
    assert [commit(net, i) for i in "123"] == [index] * 3


def test_replace_a_node() -> None:
    """{1,2,3} -> {1,2,4}: 4 joins as a voter, 3 leaves; 3 receives C_new (so it knows it is
    out), and the new three commit entries without 3."""
    net = cluster()
    net.add_node("4")
    net.change(["1", "2", "4"])
    assert net.configs("4") == [M("124", "123"), M("124")]
    for node_id in "1234":
        assert net.nodes[node_id].membership == M("124"), node_id
    assert "3" not in net.nodes["1"].raft.progress
    net.stop_node("3")
    index = propose(net, "1", b"without-3")
    net.tick_all(2)
    assert commit(net, "4") == index and net.user_data("4")[-1] == b"without-3"


def test_remove_the_leader_hands_over() -> None:
    """The leader removes itself: it stays leader through the joint phase, appends C_new, and
    once C_new commits it sends TIMEOUT_NOW to the caught-up voter and steps down; that voter
    wins at once and commits; the old leader never campaigns again."""
    net = cluster()
    propose(net, "1", b"x")
    net.change(["2", "3"])
    leader = net.leader()
    assert leader in ("2", "3")
    assert role(net, "1") == "follower"
    assert net.count(TIMEOUT_NOW, src="1") == 1
    handed_to = next(m.dst for m in net.sent if m.kind is TIMEOUT_NOW)
    assert handed_to == leader
    assert net.nodes[leader].status().term == net.nodes["1"].status().term
    for node_id in "123":
        assert net.nodes[node_id].membership == M("23"), node_id
    index = propose(net, leader, b"new-leader")
    net.tick_all(2)
    assert commit(net, "2") == commit(net, "3") == index
    before = len(net.sent)
    net.tick_all(5 * net.options.election_ticks_max)
    assert campaigns_by(net, "1", before) == [] and role(net, "1") == "follower"


def test_remove_the_leader_without_a_caught_up_successor() -> None:
    """When no remaining voter is fully caught up as C_new commits (the leader appended an
    entry after C_new), the leader steps down without TIMEOUT_NOW, and the remaining voters
    elect a leader by timeout, which commits that entry too."""
    net = cluster()
    net.nodes["1"].propose_membership(["2", "3"])
    step_until(net, lambda: net.nodes["1"].membership == M("23"))
    net.nodes["1"].propose([b"tail"])  # right after C_new, before anyone has it
    step_until(net, lambda: role(net, "1") == "follower")  # acks C_new before the tail
    assert net.count(TIMEOUT_NOW) == 0
    before = len(net.sent)
    net.tick_all(5 * net.options.election_ticks_max)
    leader = net.leader()
    assert leader in ("2", "3") and campaigns_by(net, leader, before)
    assert b"tail" in net.user_data("2") and b"tail" in net.user_data("3")


# -- one change at a time ---------------------------------------------------------------------


def test_second_change_refused_while_one_is_in_progress() -> None:
    """While a CONFIG entry is uncommitted, or the configuration is joint (C_new not yet
    appended or not committed), propose_membership raises MembershipError; so it does for
    invalid targets; followers raise NotLeaderError."""
    net = cluster()
    net.add_node("4")
    net.nodes["1"].propose_membership(["1", "2", "3"], ["4"])  # learner-only, uncommitted
    with pytest.raises(MembershipChangeInProgress, match="in progress"):
        net.nodes["1"].propose_membership(["1", "2", "3", "4"])
    net.stabilize()
    net.tick_all(2)
    # Joint entry appended, but acks withheld: the leader is joint and uncommitted.
    net.nodes["1"].propose_membership(["1", "2", "3", "4"])
    net.stabilize(keep=lambda m: m.kind is not APPEND_RESPONSE)
    assert net.nodes["1"].membership.is_joint
    with pytest.raises(MembershipChangeInProgress, match="in progress"):
        net.nodes["1"].propose_membership(["1", "2"])
    with pytest.raises(NotLeaderError):
        net.nodes["2"].propose_membership(["1", "2"])
    net.tick_all(3)
    assert complete(net, "1") and net.nodes["1"].membership == M("1234")
    with pytest.raises(MembershipError, match="current configuration"):
        net.nodes["1"].propose_membership(["1", "2", "3", "4"])
    with pytest.raises(MembershipError, match="both voter and learner"):
        net.nodes["1"].propose_membership(["1", "2"], ["2"])
    with pytest.raises(MembershipError, match="at least one voter"):
        net.nodes["1"].propose_membership([])
    assert net.nodes["1"].membership == M("1234")


def test_new_leader_refuses_changes_until_its_term_commits() -> None:
    """A leader elected with an uncommitted CONFIG entry in its log refuses a change until the
    no-op of its term commits (which commits that entry too)."""
    net = cluster(check_quorum=False)
    net.add_node("4")
    # 1 appends the learner change and reaches 2 only; nobody acks.
    net.isolate("3")
    net.nodes["1"].propose_membership(["1", "2", "3"], ["4"])
    net.stabilize(keep=lambda m: m.kind is APPEND and m.dst == "2")
    assert net.nodes["2"].membership == M("123", learners="4")
    assert commit(net, "2") < last(net, "2")
    # 1 dies; 2 wins with 3's vote, but nothing it sent is delivered yet.
    net.stop_node("1")
    net.heal()
    net.nodes["2"].campaign()
    for _ in range(20):
        net.stabilize(keep=lambda m: m.kind not in (APPEND, APPEND_RESPONSE))
        if role(net, "2") == "leader":
            break
    assert role(net, "2") == "leader"
    raft = net.nodes["2"].raft
    assert raft.log.committed < raft.memberships.current_index
    with pytest.raises(MembershipChangeInProgress, match="in progress"):
        net.nodes["2"].propose_membership(["2", "3", "4"])
    net.tick_all(3)
    assert complete(net, "2")
    net.nodes["2"].propose_membership(["2", "3", "4"])  # accepted now


def test_new_leader_finishes_a_joint_change() -> None:
    """A leader elected while the log holds an uncommitted C_old,new commits it with its
    no-op and appends C_new itself; meanwhile a new change is refused."""
    net = cluster(check_quorum=False)
    with_learners(net, "4")
    net.nodes["1"].propose_membership(["1", "2", "3", "4"])
    net.stabilize(keep=lambda m: m.kind is not APPEND_RESPONSE)  # everyone has C_old,new
    assert all(net.nodes[i].membership == M("1234", "123") for i in "1234")
    net.stop_node("1")
    net.nodes["2"].campaign()
    net.stabilize(keep=lambda m: m.kind not in (APPEND, APPEND_RESPONSE))
    assert role(net, "2") == "leader"
    with pytest.raises(MembershipError, match="in progress"):
        net.nodes["2"].propose_membership(["2", "3", "4"])
    net.stabilize()
    net.tick_all(3)
    assert net.configs("2")[-2:] == [M("1234", "123"), M("1234")]
    assert net.log("2")[-1].term == net.nodes["2"].status().term
    assert all(complete(net, i) for i in "234")


# -- joint rules: commitment, elections, CheckQuorum ------------------------------------------


def _joint_145_of_123(**options: object) -> CoreNetwork:
    """{1,2,3} with learners 4,5, leader 1; ready to move to voters {1,4,5}."""
    net = cluster(**options)
    with_learners(net, "4", "5")
    return net


@pytest.mark.parametrize("reached", [["4", "5"], ["2", "3"]])
def test_joint_entry_needs_both_majorities_to_commit(reached: list[str]) -> None:
    """In C_old,new = ({1,4,5}, {1,2,3}) an entry held by 1 plus {4,5} (a majority of new
    only), or by 1 plus {2,3} (a majority of old only), does not commit, neither the joint
    entry nor entries after it; it commits once both halves have it."""
    net = _joint_145_of_123()
    committed = commit(net, "1")
    others = [i for i in "2345" if i not in reached]
    net.partition(["1", *reached], others)
    joint_index = net.nodes["1"].propose_membership(["1", "4", "5"])
    net.stabilize()
    index = propose(net, "1", b"in-joint")
    net.tick_all(2)
    raft = net.nodes["1"].raft
    assert raft.membership == M("145", "123")
    assert all(raft.progress[i].match == index for i in reached)
    assert commit(net, "1") == committed < joint_index
    net.heal()
    net.tick_all(3)
    assert commit(net, "1") > index and complete(net, "1")
    assert net.nodes["1"].membership == M("145")


def test_joint_commit_counts_the_leader_only_where_it_votes() -> None:
    """Leader 1 moving {1,2,3} -> {2,3,4}: in C_old,new it counts towards the old majority
    (with only 2 and 4 reachable, {1,2} and {2,4} commit the joint entry); in C_new it counts
    for nothing, so once 2 and 3 are cut off C_new does not commit although 1 and 4 hold it,
    and 1 stays leader until it does."""
    net = cluster(check_quorum=False)
    net.add_node("4")
    net.isolate("3")
    joint_index = net.nodes["1"].propose_membership(["2", "3", "4"])
    step_until(net, lambda: net.nodes["1"].membership == M("234"))
    raft = net.nodes["1"].raft
    assert raft.log.committed >= joint_index  # {1,2} of old, {2,4} of new
    net.partition(["1", "4"], ["2", "3"])
    net.stabilize()
    net.tick_all(3)
    new_index = raft.memberships.current_index
    assert raft.progress["4"].match == new_index == raft.log.last_index()
    assert raft.log.committed < new_index and role(net, "1") == "leader"
    net.heal()
    net.tick_all(3)
    assert role(net, "1") == "follower" and net.leader() in ("2", "3", "4")


@pytest.mark.parametrize("pre_vote", [False, True])
def test_election_in_joint_needs_both_majorities(pre_vote: bool) -> None:
    """Everyone holds C_old,new = ({1,4,5}, {1,2,3}) uncommitted and 1 is gone: 4 cannot win
    with the votes of the new half only ({4,5}) or of the old half only ({2,3}); it wins with
    a majority of each."""
    net = _joint_145_of_123(check_quorum=False, pre_vote=pre_vote)
    net.nodes["1"].propose_membership(["1", "4", "5"])
    net.stabilize(keep=lambda m: m.kind is not APPEND_RESPONSE)
    assert all(net.nodes[i].membership == M("145", "123") for i in "12345")
    net.stop_node("1")
    for group, loser in ((["4", "5"], ["2", "3"]), (["2", "3", "4"], ["5"])):
        net.partition(group, loser)
        net.nodes["4"].campaign()
        net.stabilize()
        assert role(net, "4") != "leader", group
        net.heal()
    # 5 grants too: {4,5} is a majority of new, {2,3} of old.
    net.nodes["4"].campaign()
    net.stabilize()
    assert role(net, "4") == "leader"
    net.tick_all(3)
    assert all(net.nodes[i].membership == M("145") for i in "2345")


@pytest.mark.parametrize("answering", [["4", "5"], ["2", "3"]])
def test_check_quorum_in_joint_needs_both_majorities(answering: list[str]) -> None:
    """A joint leader ({1,4,5} and {1,2,3}) stays while everyone answers, but steps down after
    an election timeout when only one half does: hearing from 4 and 5 (a majority of new) but
    not 2 and 3 is not enough, nor the other way round."""
    net = _joint_145_of_123(check_quorum=True)
    net.nodes["1"].propose_membership(["1", "4", "5"])
    keep_joint = lambda m: m.kind is not APPEND_RESPONSE  # noqa: E731 - stays uncommitted
    net.stabilize(keep=keep_joint)
    assert net.nodes["1"].membership == M("145", "123")
    for _ in range(3 * net.options.election_ticks_min):  # only the leader's clock runs
        net.nodes["1"].tick()
        net.stabilize(keep=keep_joint)
    assert role(net, "1") == "leader"
    net.partition(["1", *answering], [i for i in "2345" if i not in answering])
    for _ in range(2 * net.options.election_ticks_min + 1):
        net.nodes["1"].tick()
        net.stabilize(keep=keep_joint)
    assert role(net, "1") == "follower"


# -- configurations in force on append, and truncation ----------------------------------------


def test_config_in_force_on_append_and_reverts_on_truncation() -> None:
    """A follower puts a CONFIG entry in force as soon as it appends it (uncommitted), and Ready
    says so; when a new leader overwrites that entry the follower falls back to the previous
    configuration (and Ready says so again)."""
    net = cluster(5, check_quorum=False)
    # 1 sends a change (remove 5) to 2 only and is deposed before anyone acks.
    net.isolate("1")
    net.cut.discard(("1", "2"))
    index = net.nodes["1"].propose_membership(["1", "2", "3", "4"])
    rd = net.take_ready("1")  # its messages leave: only those to 2 get through
    assert rd is not None and rd.membership == M("1234", "12345")
    net.persist_ready("1", rd)
    for m in net.take(lambda m: m.dst == "2"):
        net.deliver(m)
    raft2 = net.nodes["2"].raft
    assert raft2.membership == M("1234", "12345") and raft2.log.committed < index
    assert raft2.promotable()
    net.process_ready("2")  # its ack to 1 is cut
    assert net.reported["2"] == [M("1234", "12345")]
    # 3 is elected by 3, 4, 5 and writes its no-op at the same index.
    net.isolate("2")
    net.elect("3")
    assert net.log("3")[index - 1].kind == EntryKind.NOOP
    # 2 is reachable again: its entry at `index` is replaced and its configuration reverts.
    net.heal()
    net.isolate("1")
    net.tick_all(2)
    assert net.nodes["2"].membership == M("12345")
    assert net.configs("2") == [] and net.log("2") == net.log("3")
    assert net.nodes["2"].raft.memberships.current_index == 0
    assert net.reported["2"] == [M("1234", "12345"), M("12345")]  # Ready reported the revert


def test_ready_reports_the_membership_once() -> None:
    """Ready.membership carries the configuration in force when it changed, and only then."""
    net = cluster()
    net.add_node("4")
    net.nodes["1"].propose_membership(["1", "2", "3"], ["4"])
    rd = net.take_ready("1")
    assert rd is not None and rd.membership == M("123", learners="4")
    net.persist_ready("1", rd)
    net.stabilize()
    net.tick_all(2)
    assert net.reported["1"] == [M("123", learners="4")]
    assert net.reported["2"] == net.reported["4"] == [M("123", learners="4")]


# -- snapshots --------------------------------------------------------------------------------


def test_joiner_learns_the_configuration_from_a_snapshot() -> None:
    """The leader's log is compacted past the CONFIG entry that added 5 as a learner (5 was not
    running then); once 5 starts, the leader sends it the snapshot, 5 installs it, learns the
    configuration from it, catches up, and can then be promoted."""
    net = cluster()
    propose(net, "1", b"a")
    net.change(["1", "2", "3"], ["5"])  # 5 does not exist yet: messages to it are lost
    propose(net, "1", b"b")
    net.tick_all(2)
    meta = net.take_snapshot("1")
    assert meta.membership == M("123", learners="5")
    assert net.nodes["1"].raft.log.first_index() > 3
    propose(net, "1", b"c")
    net.add_node("5")
    net.tick_all(3)
    assert net.count(SNAPSHOT, dst="5") >= 1
    raft5 = net.nodes["5"].raft
    assert raft5.snapshot is not None and raft5.snapshot.membership == M("123", learners="5")
    assert raft5.membership == M("123", learners="5")
    assert net.configs("5") == []  # it came from the snapshot, not from the log
    assert net.user_data("5") == [b"a", b"b", b"c"]
    net.change(["1", "2", "3", "5"])
    assert all(net.nodes[i].membership == M("1235") for i in "1235")
    # and 5 survives a restart with the configuration (snapshot + log).
    net.restart("5")
    assert net.nodes["5"].membership == M("1235")


def test_snapshot_records_the_configuration_at_its_index() -> None:
    """take_snapshot records memberships.at(index), not the configuration in force later."""
    net = cluster()
    net.add_node("4")
    net.nodes["1"].propose_membership(["1", "2", "3"], ["4"])  # appended, not applied yet
    raft = net.nodes["1"].raft
    assert raft.memberships.at(raft.log.last_index() - 1) == M("123")
    net.stabilize()
    net.tick_all(2)
    meta = net.take_snapshot("1")
    assert meta.membership == M("123", learners="4") and meta.voters == ("1", "2", "3")


# -- restarts and removed nodes ---------------------------------------------------------------


def test_restart_recovers_the_configuration_from_the_log() -> None:
    """An original member (booted with the initial voter list) and a joiner (booted with the
    empty configuration) restart with the configuration their durable logs hold."""
    net = cluster()
    net.add_node("4")
    net.change(["1", "2", "4"])
    for node_id in "1234":
        net.restart(node_id)
        assert net.nodes[node_id].membership == M("124"), node_id
    net.tick_all(5 * net.options.election_ticks_max)
    leader = net.leader()
    assert leader in ("1", "2", "4")
    index = propose(net, leader, b"after-restarts")
    net.tick_all(2)
    assert all(commit(net, i) == index for i in "124")


def test_restart_in_joint_recovers_joint() -> None:
    """A node restarted while its log ends with an uncommitted C_old,new is joint again."""
    net = _joint_145_of_123(check_quorum=False)
    net.nodes["1"].propose_membership(["1", "4", "5"])
    net.stabilize(keep=lambda m: m.kind is not APPEND_RESPONSE)
    net.restart("2")
    assert net.nodes["2"].membership == M("145", "123")
    assert net.nodes["2"].raft.promotable()


def test_removed_node_never_campaigns() -> None:
    """A removed voter receives C_new (the leader keeps replicating to it until C_new commits),
    so it knows it is out: it never campaigns, also after a restart, and with neither PreVote
    nor CheckQuorum to protect the cluster it does not disturb the new configuration."""
    net = cluster(pre_vote=False, check_quorum=False)
    net.change(["1", "2"])
    assert net.nodes["3"].membership == M("12")
    assert not net.nodes["3"].raft.promotable()
    before = len(net.sent)
    term = net.nodes["1"].status().term
    net.tick_all(10 * net.options.election_ticks_max)
    net.restart("3")
    net.tick_all(10 * net.options.election_ticks_max)
    assert campaigns_by(net, "3", before) == []
    assert role(net, "1") == "leader" and net.nodes["1"].status().term == term
    assert net.nodes["3"].membership == M("12") and role(net, "3") == "follower"


def test_node_removed_while_partitioned_is_stuck_joint() -> None:
    """A voter removed while cut off never receives C_new: it stays in C_old,new, where it
    still votes, and campaigns.  PreVote keeps it from disturbing the cluster: its log is
    behind, so nobody grants, and the leader's term does not move."""
    net = cluster(pre_vote=True, check_quorum=False)
    net.isolate("3")
    net.change(["1", "2"])
    assert net.nodes["1"].membership == M("12")
    assert net.nodes["3"].membership == M("123")
    term = net.nodes["1"].status().term
    net.heal()
    net.tick_all(5 * net.options.election_ticks_max)
    assert role(net, "1") == "leader" and net.nodes["1"].status().term == term


def test_snapshot_without_a_configuration_keeps_the_bootstrap_one() -> None:
    """A joiner that got the log from index 1 knows no configuration before the first CONFIG
    entry, so a snapshot it takes there records the empty configuration.  When it later leads
    and sends that snapshot, an original member installing it keeps its bootstrap
    configuration (the one in force there), as it would booting from it, instead of putting
    the empty configuration in force."""
    net = cluster()
    net.isolate("3")
    propose(net, "1", b"a", b"b")
    net.add_node("4")
    net.isolate("3")
    # 4 gets the whole log, the CONFIG entry that adds it included, but not its commit.
    config_index = net.nodes["1"].propose_membership(["1", "2", "3"], ["4"])
    net.stabilize(keep=lambda m: not (m.kind is APPEND_RESPONSE and m.src == "2"))
    assert commit(net, "4") == config_index - 1 and last(net, "4") == config_index
    meta = net.take_snapshot("4")
    assert meta.index == config_index - 1 and meta.membership.is_empty
    net.tick_all(2)
    net.change(["1", "2", "3", "4"])
    net.nodes["1"].raft.transfer_leadership("4")
    net.stabilize()
    assert net.leader() == "4"
    # 3 is far behind 4's compaction point: 4 sends it the configuration-less snapshot.
    net.heal()
    snapshots: list[Message] = []

    def hold(m: Message) -> bool:
        if m.kind is SNAPSHOT:
            snapshots.append(m)
            return False
        return True

    for _ in range(3 * net.options.heartbeat_ticks):
        for node_id in net.ids:
            net.nodes[node_id].tick()
        net.stabilize(keep=hold)
    assert snapshots and snapshots[0].dst == "3" and snapshots[0].index == meta.index
    assert Membership.decode(snapshots[0].data).is_empty
    net.deliver(snapshots[0])
    raft3 = net.nodes["3"].raft
    assert raft3.log.snapshot_index == meta.index
    assert raft3.membership == M("123") and raft3.snapshot.membership == M("123")
    net.tick_all(3)
    assert raft3.membership == M("1234") and net.user_data("3") == net.user_data("4")


def test_empty_snapshot_configuration_on_a_joiner_stays_unknown() -> None:
    """A joiner installing a snapshot without a configuration still knows none (its base is
    empty) and learns it from the entries that follow."""
    joiner = RawNode("9", Membership(), rng=random.Random(1))
    joiner.step(Message(kind=SNAPSHOT, src="1", dst="9", term=2, index=7, log_term=1,
                        data=Membership().encode()))
    assert joiner.membership.is_empty and joiner.raft.log.snapshot_index == 7
    rd = joiner.ready()
    assert rd.snapshot is not None and rd.snapshot.membership.is_empty
    config = Entry(8, 2, EntryKind.CONFIG, M("12", learners="9").encode())
    joiner.step(Message(kind=APPEND, src="1", dst="9", term=2, index=7, log_term=1,
                        entries=[config], commit=8))
    assert joiner.membership == M("12", learners="9")
