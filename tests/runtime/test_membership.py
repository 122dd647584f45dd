"""Membership changes through the runtime: growing and shrinking under load, replacing a node,
removing the leader, learners (they replicate but never vote or lead), promotion after
catch-up and its timeout, joining from a snapshot, a partition while joint, restarts after
changes, the errors, and the same over TCP.

Every cluster runs a LogStateMachine, so "no acknowledged commit lost" is checked exactly: the
:class:`~tests.runtime.scenario.Load` client never proposes a command twice, and at the end every
member applied the same sequence with each acknowledged command exactly once, at its index."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from engine import Config, LocalCluster, NotLeaderError, ProposalDropped, RaftNode
from engine.errors import ConfigError, MembershipChangeInProgress, MembershipError, RaftError
from engine.membership import Membership
from tests.conftest import FAST, LIVENESS, raft_threads
from tests.runtime.scenario import (
    RETRYABLE,
    LeaderWatch,
    Load,
    agreed_commands,
    assert_applied_exactly_once,
    assert_prefix_consistent,
    commands,
    committed_config,
    one,
    wait_all_applied,
)

NO_PRE_VOTE = dataclasses.replace(FAST, pre_vote=False)
"""Without PreVote every campaign bumps the candidate's term, so a node that campaigns when it
must not (a learner, a removed node) shows it in its term."""


def _voter_followers(cluster: LocalCluster, leader: RaftNode) -> list[int]:
    """Indexes of the voters other than ``leader``."""
    return [i for i, n in enumerate(cluster.nodes)
            if n is not leader and leader.membership.can_vote(n.id)]


def _settled_config(cluster: LocalCluster) -> Membership:
    """The leader's configuration once it is committed and not joint."""
    found: list[Membership] = []

    def settled() -> bool:
        leader = cluster.leader()
        if leader is None or not committed_config(leader):
            return False
        found[:] = [leader.membership]
        return True

    assert cluster.wait_for(settled, LIVENESS), (
        f"no committed configuration (seed {cluster.seed}): "
        f"{[n.status() for n in cluster.nodes]}")
    return found[0]


def _change(cluster: LocalCluster, voters: tuple[str, ...]) -> Membership:
    """change_membership(voters) through whichever node leads, retried through leader changes
    (and through a change still finishing) until the committed configuration has ``voters``."""
    deadline = time.monotonic() + LIVENESS
    while time.monotonic() < deadline:
        config = _settled_config(cluster)
        if config.voters == voters:
            return config
        leader = cluster.wait_for_leader(LIVENESS)
        try:
            leader.change_membership(voters).result(LIVENESS)
        except (*RETRYABLE, MembershipError):
            continue
    raise AssertionError(f"could not change the voters to {voters} (seed {cluster.seed})")


def _all_know(cluster: LocalCluster, nodes: list[RaftNode], membership: Membership) -> None:
    assert cluster.wait_for(lambda: all(n.membership == membership for n in nodes), LIVENESS), (
        f"configurations differ from {membership.describe()}: "
        f"{[(n.id, n.membership.describe()) for n in nodes]}")


class RoleLog:
    """Every (role, term) a node reported to its observer, in order."""

    def __init__(self, node: RaftNode) -> None:
        self._node = node
        self._lock = threading.Lock()
        self._seen: list[tuple[str, int]] = []
        node.add_observer(self._record)
        self._record()

    def _record(self) -> None:
        status = self._node.status()
        with self._lock:
            if not self._seen or self._seen[-1] != (status.role, status.term):
                self._seen.append((status.role, status.term))

    def roles(self) -> set[str]:
        with self._lock:
            return {role for role, _ in self._seen}


# -- growing, shrinking, replacing under load ---------------------------------------------------


def test_grow_three_to_five_under_load(make_cluster: Callable[..., LocalCluster]) -> None:
    """Two nodes added one after the other while a client commits continuously: both become
    voters, and every acknowledged command is applied exactly once on all five nodes."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    with Load(cluster) as load:
        load.wait_more(50)
        n4 = cluster.add_node()
        load.wait_more(50)
        n5 = cluster.add_node()
        load.wait_more(50)
        acked = load.stop()
    config = _settled_config(cluster)
    assert config.voters == ("n1", "n2", "n3", "n4", "n5") and not config.learners
    assert [n.id for n in cluster.nodes] == ["n1", "n2", "n3", "n4", "n5"]
    _all_know(cluster, cluster.nodes, config)
    wait_all_applied(cluster)
    assert_applied_exactly_once(cluster.nodes, acked)
    assert commands(n4) and commands(n5)


def test_shrink_five_to_three_under_load(make_cluster: Callable[..., LocalCluster]) -> None:
    """Removing the leader and then a follower while a client commits: the removed nodes are
    stopped, three voters remain, and no acknowledged command is lost or applied twice."""
    cluster = make_cluster(5)
    leader = cluster.wait_for_leader(LIVENESS)
    with Load(cluster) as load:
        load.wait_more(50)
        removed = [cluster.remove_node(cluster.nodes.index(leader))]
        load.wait_more(50)
        new_leader = cluster.wait_for_leader(LIVENESS)
        removed.append(cluster.remove_node(_voter_followers(cluster, new_leader)[0]))
        load.wait_more(50)
        acked = load.stop()
    assert len(cluster.nodes) == 3
    assert all(not n.status().running for n in removed)
    config = _settled_config(cluster)
    assert config.voters == tuple(sorted(n.id for n in cluster.nodes))
    assert not {n.id for n in removed} & set(config.members())
    _all_know(cluster, cluster.nodes, config)
    wait_all_applied(cluster)
    assert_applied_exactly_once(cluster.nodes, acked)
    assert_prefix_consistent([*cluster.nodes, *removed])


def test_replace_a_node(make_cluster: Callable[..., LocalCluster]) -> None:
    """Add n4, then remove n1: the cluster is n2, n3, n4 and n4 has the whole history."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    with Load(cluster) as load:
        load.wait_more(30)
        cluster.add_node()
        old = cluster.remove_node(0)
        load.wait_more(30)
        acked = load.stop()
    assert old.id == "n1" and not old.status().running
    assert [n.id for n in cluster.nodes] == ["n2", "n3", "n4"]
    config = _settled_config(cluster)
    assert config.voters == ("n2", "n3", "n4")
    assert config.address_book() == {i: cluster.addresses[i] for i in ("n2", "n3", "n4")}
    one(cluster, b"after-replace")
    wait_all_applied(cluster)
    assert_applied_exactly_once(cluster.nodes, acked)


# -- removing the leader --------------------------------------------------------------------------


def test_remove_the_leader(make_cluster: Callable[..., LocalCluster]) -> None:
    """The leader removes itself: it steps down once C_new commits, another voter leads and
    proposals continue; the removed node keeps running but never campaigns again (without
    PreVote a campaign would make it a candidate and push its term past the members')."""
    cluster = make_cluster(3, config=NO_PRE_VOTE)
    old = cluster.wait_for_leader(LIVENESS)
    with Load(cluster) as load:
        load.wait_more(30)
        config = old.remove_member(old.id).result(LIVENESS)
        assert old.id not in config.members() and len(config.voters) == 2
        assert cluster.wait_for(lambda: old.status().role != "leader", LIVENESS)
        new = cluster.wait_for_leader(LIVENESS)
        assert new is not old and new.id in config.voters
        log = RoleLog(old)
        load.wait_more(50)
        acked = load.stop()
    members = [n for n in cluster.nodes if n is not old]
    with pytest.raises(NotLeaderError):
        old.propose(b"to-the-removed").result(LIVENESS)
    # The new leader may still have sent the removed node the C_new entry (and so its term)
    # before it knew C_new committed; from then on nothing reaches it, and a campaign would
    # show as the candidate role and a term climbing past the members'.
    for k in range(20):
        one(cluster, f"later-{k}".encode(), expected=2)

    def campaigned() -> bool:
        return ("candidate" in log.roles()
                or old.status().term > max(n.status().term for n in members))

    # Several of the removed node's election timeouts pass.
    assert not cluster.wait_for(campaigned, 5 * FAST.election_timeout_max)
    assert old.status().running and old.status().role == "follower"
    assert log.roles() == {"follower"}, f"the removed node campaigned: {log.roles()}"
    assert not old.membership.can_vote(old.id)
    wait_all_applied(cluster, members)
    assert_applied_exactly_once(members, acked)
    assert_prefix_consistent(cluster.nodes)


# -- one change at a time -------------------------------------------------------------------------


def test_second_change_while_one_is_in_progress_fails(
        make_cluster: Callable[..., LocalCluster]) -> None:
    """While a promotion waits for its learner to catch up, other changes are refused with
    MembershipError; the first completes once the learner can catch up."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    cluster.faults.isolate("n4")  # the next node: it will receive nothing until rejoined
    cluster.add_node(voter=False)
    leader = cluster.wait_for_leader(LIVENESS)
    leader.propose(b"x").result(LIVENESS)
    first = leader.promote("n4")
    follower = next(n for n in cluster.nodes[:3] if n is not leader)
    with pytest.raises(MembershipChangeInProgress, match="in progress"):
        leader.remove_member(follower.id).result(LIVENESS)
    with pytest.raises(MembershipChangeInProgress, match="in progress"):
        leader.change_membership(["n1", "n2", "n3", "n4"]).result(LIVENESS)
    with pytest.raises(MembershipChangeInProgress, match="in progress"):
        leader.promote("n4").result(LIVENESS)
    assert not first.done()
    assert leader.membership.learners == ("n4",)
    cluster.rejoin(3)
    config = first.result(LIVENESS)
    assert config.voters == ("n1", "n2", "n3", "n4") and not config.learners
    one(cluster, b"after")


# -- learners ------------------------------------------------------------------------------------


def test_learner_replicates_but_does_not_count(make_cluster: Callable[..., LocalCluster]) -> None:
    """A learner applies everything; it is not a voter, so with the learner unreachable and one
    of three voters down the other two still commit (were it counted, 3 of 4 would be needed)."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    learner = cluster.add_node(voter=False)
    config = _settled_config(cluster)
    assert config.voters == ("n1", "n2", "n3") and config.learners == ("n4",)
    assert not config.can_vote("n4")
    for k in range(10):
        one(cluster, f"a{k}".encode())  # applied by every running node, the learner included
    assert learner.status().role == "follower"
    _all_know(cluster, cluster.nodes, config)

    leader = cluster.wait_for_leader(LIVENESS)
    cluster.isolate(3)
    cluster.crash(_voter_followers(cluster, leader)[0])
    for future in [leader.propose(f"b{k}".encode()) for k in range(20)]:
        future.result(LIVENESS)
    cluster.rejoin(3)
    index = wait_all_applied(cluster)
    assert learner.last_applied >= index
    assert_prefix_consistent(cluster.nodes)


def test_learner_never_campaigns_or_leads(make_cluster: Callable[..., LocalCluster]) -> None:
    """With two of three voters down the third campaigns again and again (its term climbs,
    PreVote off), while the learner, hearing from no leader either, never campaigns: its term
    stays put and it never reports another role than follower.  Back up, a voter leads."""
    cluster = make_cluster(3, config=NO_PRE_VOTE)
    cluster.wait_for_leader(LIVENESS)
    learner = cluster.add_node(voter=False)
    one(cluster, b"before")
    log = RoleLog(learner)
    term = learner.status().term
    survivor = 0
    cluster.crash(1)
    cluster.crash(2)
    start = cluster.nodes[survivor].status().term
    assert cluster.wait_for(lambda: cluster.nodes[survivor].status().term >= start + 3, LIVENESS)
    assert learner.status().term == term
    assert log.roles() == {"follower"}, f"the learner campaigned: {log.roles()}"
    cluster.restart(1)
    cluster.restart(2)
    leader = cluster.wait_for_leader(LIVENESS)
    assert leader is not learner
    one(cluster, b"after")
    assert log.roles() == {"follower"}
    assert learner.membership.learners == ("n4",)


def test_promote_after_catch_up(make_cluster: Callable[..., LocalCluster]) -> None:
    """promote() waits for the learner to catch up with the leader's log before it proposes the
    joint configuration: while the learner is cut off (100 entries behind) no configuration
    naming it a voter appears; once it can catch up it is promoted, and then replicates."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    learner = cluster.add_node(voter=False)
    leader = cluster.wait_for_leader(LIVENESS)
    cluster.isolate(3)
    for future in [leader.propose(f"c{k}".encode()) for k in range(100)]:
        future.result(LIVENESS)
    isolated = threading.Event()
    isolated.set()
    premature: list[Membership] = []  # configurations making n4 a voter while it lagged

    def on_change() -> None:
        if isolated.is_set() and leader.membership.can_vote("n4"):
            premature.append(leader.membership)

    leader.add_observer(on_change)
    promotion = leader.promote("n4")
    # While it cannot catch up, the promotion waits (a premature one would show here).
    assert not cluster.wait_for(lambda: promotion.done() or bool(premature), 0.3), premature
    assert leader.membership.learners == ("n4",)
    isolated.clear()
    cluster.rejoin(3)
    config = promotion.result(LIVENESS)
    assert config.voters == ("n1", "n2", "n3", "n4") and not config.learners
    assert not premature, premature
    _all_know(cluster, cluster.nodes, config)
    one(cluster, b"as-voter")
    assert [c for _, c in commands(learner)][:100] == [f"c{k}".encode() for k in range(100)]
    assert_prefix_consistent(cluster.nodes)


def test_catch_up_timeout_keeps_the_learner(make_cluster: Callable[..., LocalCluster]) -> None:
    """A new voter that cannot catch up within catchup_timeout is not promoted: the change fails
    with MembershipError and the node stays a learner.  Commits go on meanwhile, even with one
    voter down (a premature 4-voter joint configuration would need the unreachable node)."""
    config = dataclasses.replace(FAST, catchup_timeout=0.5)
    cluster = make_cluster(3, config=config)
    cluster.wait_for_leader(LIVENESS)
    cluster.faults.isolate("n4")
    with pytest.raises(MembershipError, match="catch up"):
        cluster.add_node()  # learner first (commits without n4), then catch-up times out
    leader = cluster.wait_for_leader(LIVENESS)
    assert leader.membership.voters == ("n1", "n2", "n3")
    assert leader.membership.learners == ("n4",)
    cluster.crash(_voter_followers(cluster, leader)[0])
    for attempt in (lambda: leader.change_membership(["n1", "n2", "n3", "n4"]),
                    lambda: leader.promote("n4")):
        change = attempt()
        for future in [leader.propose(f"d{k}".encode()) for k in range(20)]:
            future.result(LIVENESS)
        with pytest.raises(MembershipError, match="catch up"):
            change.result(LIVENESS)
        assert leader.membership.learners == ("n4",) and not leader.membership.is_joint
        assert committed_config(leader)
    for future in [leader.propose(f"e{k}".encode()) for k in range(20)]:
        future.result(LIVENESS)
    assert cluster.nodes[3].status().last_log_index == 0  # it really received nothing


# -- joining from a snapshot ----------------------------------------------------------------------


def test_new_node_joins_from_snapshot(make_cluster: Callable[..., LocalCluster]) -> None:
    """A node added (as a learner, unreachable) before the leader compacted its log past the
    configuration entry that added it catches up by InstallSnapshot: its snapshot_index is
    positive and it knows the configuration (which only the snapshot can have told it); it can
    then be promoted and holds the same state as everyone."""
    config = dataclasses.replace(FAST, snapshot_threshold=200, snapshot_trailing_entries=50,
                                 snapshot_chunk_bytes=2048)
    cluster = make_cluster(3, config=config)
    cluster.wait_for_leader(LIVENESS)
    cluster.faults.isolate("n4")
    joiner = cluster.add_node(voter=False)
    leader = cluster.wait_for_leader(LIVENESS)
    config_index = leader.status().commit_index
    for round_ in range(4):
        before = leader.status().snapshot_index
        for future in [leader.propose(f"r{round_}-{k}".encode()) for k in range(300)]:
            future.result(LIVENESS)
        assert cluster.wait_for(lambda b=before: leader.status().snapshot_index > b, LIVENESS)
    status = leader.status()
    first_kept = status.last_log_index - status.log_entries + 1
    assert first_kept > config_index, "the configuration entry is still in the leader's log"
    assert joiner.membership.is_empty and joiner.status().last_log_index == 0
    cluster.rejoin(3)
    commit = leader.status().commit_index
    assert joiner.wait_applied(commit, LIVENESS)
    assert joiner.status().snapshot_index > config_index
    assert joiner.membership == leader.membership
    assert leader.promote("n4").result(LIVENESS).voters == ("n1", "n2", "n3", "n4")
    wait_all_applied(cluster)
    states = [commands(n) for n in cluster.nodes]
    assert all(s == states[0] for s in states), "replicas differ"


# -- partitions while joint ---------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before-replication", "while-joint"])
def test_partition_during_joint_configuration(make_cluster: Callable[..., LocalCluster],
                                              when: str) -> None:
    """5 -> 3 voters (the leader L and two others, a and b) with the network split into
    {L, a} and {b, c, d}: either just before L appends C_old,new (so only L and a have it) or
    as soon as L is joint (messages slowed a little, so it is caught mid-way).  Under load,
    with PreVote off (more elections):

    * no term ever has two leaders;
    * before-replication: {L, a} hold 2 of the 5 old voters, so neither may lead in a later
      term (a joint election counted on the new voters alone would let a win), while {b, c, d}
      elect a leader under the old configuration; the change then fails with ProposalDropped
      (the joint entry is overwritten) and the configuration stays the old one;
    * after healing the change has completed or failed cleanly (a committed, non-joint
      configuration, old or new, known to its members), no acknowledged command is lost, and
      a new change to the same voters completes.
    """
    cluster = make_cluster(5, config=NO_PRE_VOTE)
    watch = LeaderWatch()
    watch.watch(*cluster.nodes)
    leader = cluster.wait_for_leader(LIVENESS)
    others = [n.id for n in cluster.nodes if n is not leader]
    new_voters = tuple(sorted([leader.id, *others[:2]]))
    side_a = [cluster.ids.index(i) for i in (leader.id, others[0])]
    side_b = [i for i in range(5) if i not in side_a]
    with Load(cluster) as load:
        load.wait_more(30)
        term = leader.status().term
        if when == "before-replication":
            cluster.partition(side_a, side_b)
            change = leader.change_membership(new_voters)
        else:
            cluster.set_faults(delay=(0.005, 0.01))  # widen the joint window a little
            change = leader.change_membership(new_voters)
            assert cluster.wait_for(lambda: leader.membership.is_joint or change.done(),
                                    LIVENESS)
            cluster.partition(side_a, side_b)
            cluster.set_faults()

        def moved_on() -> bool:
            b = [cluster.nodes[i].status() for i in side_b]
            b_progress = any(s.role == "leader" for s in b) or max(s.term for s in b) >= term + 3
            a_done = leader.status().role != "leader" or committed_config(leader)
            return b_progress and a_done

        assert cluster.wait_for(moved_on, LIVENESS)
        if when == "before-replication":
            # Give side A's nodes several election timeouts to (wrongly) win an election.
            a_ids = {cluster.ids[i] for i in side_a}
            assert not cluster.wait_for(
                lambda: any(t > term and ids & a_ids for t, ids in watch.leaders().items()),
                5 * NO_PRE_VOTE.election_timeout_max), (
                f"the joint minority elected a leader: {watch.leaders()}")
        cluster.heal()
        final = _settled_config(cluster)
        load.wait_more(30)
        acked = load.stop()
    try:
        outcome: object = change.result(LIVENESS)
    except ProposalDropped as exc:
        outcome = exc
    assert final.voters in (new_voters, tuple(cluster.ids)), final.describe()
    if isinstance(outcome, Membership):
        assert outcome.voters == new_voters
    if when == "before-replication":
        assert isinstance(outcome, ProposalDropped), outcome
        assert final.voters == tuple(cluster.ids)
    members = [n for n in cluster.nodes if n.id in final.members()]
    _all_know(cluster, members, final)
    watch.assert_one_leader_per_term()
    wait_all_applied(cluster, members)
    assert_applied_exactly_once(members, acked)
    assert_prefix_consistent(cluster.nodes)
    if final.voters != new_voters:
        assert _change(cluster, new_voters).voters == new_voters
    watch.assert_one_leader_per_term()


# -- restarts -------------------------------------------------------------------------------------


def test_restart_keeps_the_configuration(make_cluster: Callable[..., LocalCluster]) -> None:
    """After adding n4 and removing n1, each node restarted from its durable state comes back
    with the new configuration at once (from its log, before hearing from anyone)."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    cluster.add_node()
    cluster.remove_node(0)
    config = _settled_config(cluster)
    _all_know(cluster, cluster.nodes, config)
    for i in range(len(cluster.nodes)):
        node = cluster.restart(i)
        assert node.membership == config
        one(cluster, f"after-restart-{i}".encode())
    assert _settled_config(cluster) == config
    wait_all_applied(cluster)
    agreed_commands(cluster.nodes)


def test_restart_of_an_added_node(make_cluster: Callable[..., LocalCluster]) -> None:
    """An added node restarted before it received anything comes back empty and harmless (no
    configuration, term 0) and then catches up; restarted after it received data it comes back
    with its log and the configuration, as a learner and later as a voter."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    cluster.faults.isolate("n4")
    cluster.add_node(voter=False)
    one(cluster, b"a", expected=3)
    node = cluster.restart(3)
    assert node.membership.is_empty and node.status().term == 0
    assert node.status().last_log_index == 0
    cluster.rejoin(3)
    index = one(cluster, b"b")
    learner_config = _settled_config(cluster)
    assert cluster.wait_for(lambda: node.membership == learner_config, LIVENESS)

    node = cluster.restart(3)
    assert node.membership == learner_config
    assert node.status().last_log_index >= index
    one(cluster, b"c")

    leader = cluster.wait_for_leader(LIVENESS)
    voter_config = leader.promote("n4").result(LIVENESS)
    assert cluster.wait_for(lambda: cluster.nodes[3].membership == voter_config, LIVENESS)
    node = cluster.restart(3)
    assert node.membership == voter_config and node.membership.can_vote("n4")
    one(cluster, b"d")
    wait_all_applied(cluster)
    assert agreed_commands(cluster.nodes)[-4:] == [b"a", b"b", b"c", b"d"]


# -- errors ---------------------------------------------------------------------------------------


def test_membership_errors(make_cluster: Callable[..., LocalCluster]) -> None:
    """Invalid requests fail with a clear error and change nothing."""
    cluster = make_cluster(3)
    one(cluster, b"warm-up")  # every node knows the leader
    leader = cluster.wait_for_leader(LIVENESS)
    follower = next(n for n in cluster.nodes if n is not leader)
    before = leader.membership
    with pytest.raises(MembershipError, match="at least one voter"):
        leader.change_membership([]).result(LIVENESS)
    with pytest.raises(TypeError, match="single string"):
        leader.change_membership("n1")
    with pytest.raises(NotLeaderError) as not_leader:
        follower.change_membership(["n1", "n2"]).result(LIVENESS)
    assert not_leader.value.leader_id == leader.id
    with pytest.raises(NotLeaderError):
        follower.add_learner("n9").result(LIVENESS)
    with pytest.raises(MembershipError, match="n9 is not a member"):
        leader.remove_member("n9").result(LIVENESS)
    with pytest.raises(MembershipError, match=f"{follower.id} is not a learner"):
        leader.promote(follower.id).result(LIVENESS)
    with pytest.raises(MembershipError, match="n9 is not a learner"):
        leader.promote("n9").result(LIVENESS)
    with pytest.raises(MembershipError, match="already a member"):
        leader.add_learner(follower.id).result(LIVENESS)
    with pytest.raises(MembershipError, match="already the configuration"):
        leader.change_membership(before.voters).result(LIVENESS)
    with pytest.raises(MembershipError, match="both voter and learner"):
        leader.change_membership(["n1", "n2", "n3"], learners=["n3"]).result(LIVENESS)
    with pytest.raises(ValueError, match="empty"):
        leader.add_learner("")
    assert leader.membership == before and committed_config(leader)
    one(cluster, b"still-works")


# -- over TCP -------------------------------------------------------------------------------------


def test_membership_changes_over_tcp(seed: int) -> None:
    """Over loopback sockets a node is added (it must be reachable at its address from the
    address book) and an original member removed; everyone ends with the same log."""
    cluster = LocalCluster(3, config=FAST, transport="tcp", seed=seed)
    cluster.start()
    try:
        cluster.wait_for_leader(LIVENESS)
        one(cluster, b"before")
        added = cluster.add_node()
        one(cluster, b"with-n4")
        assert added.last_applied > 0
        leader = cluster.wait_for_leader(LIVENESS)
        before = leader.membership
        with pytest.raises(ConfigError, match="nowhere"):
            leader.add_learner("n9", "nowhere").result(LIVENESS)
        assert leader.membership == before  # a malformed address is never proposed
        cluster.remove_node(0)
        one(cluster, b"without-n1")
        config = _settled_config(cluster)
        assert config.voters == ("n2", "n3", "n4")
        _all_know(cluster, cluster.nodes, config)
        wait_all_applied(cluster)
        assert agreed_commands(cluster.nodes) == [b"before", b"with-n4", b"without-n1"]
    finally:
        cluster.stop()
    assert not raft_threads(), f"threads left after stop: {raft_threads()}"


def test_config_rejects_bad_catchup_timeout() -> None:
    """catchup_timeout must be a positive number of seconds."""
    with pytest.raises(ValueError, match="catchup_timeout=0 must be > 0"):
        Config(catchup_timeout=0)


def test_add_and_remove_need_a_running_cluster() -> None:
    """add_node/remove_node on a cluster that was never started (or is stopped) fail clearly
    instead of waiting for a leader that cannot exist."""
    cluster = LocalCluster(3, config=FAST, seed=1)
    with pytest.raises(RaftError, match="needs a running cluster"):
        cluster.add_node()
    with pytest.raises(RaftError, match="needs a running cluster"):
        cluster.remove_node(0)
    assert len(cluster.nodes) == 3 and cluster.ids == ["n1", "n2", "n3"]
