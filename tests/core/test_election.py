"""Leader election: timeouts, votes, the election restriction, PreVote and CheckQuorum.

Every test drives the cores message by message through ``CoreNetwork``; time is ticks only.
"""

from __future__ import annotations

import pytest

from engine.core import Message, MessageKind
from engine.errors import InvariantError, NotLeaderError
from tests.core.harness import CoreNetwork

VOTE = MessageKind.VOTE
VOTE_RESPONSE = MessageKind.VOTE_RESPONSE


def role(net: CoreNetwork, node_id: str) -> str:
    return net.nodes[node_id].status().role


def term(net: CoreNetwork, node_id: str) -> int:
    return net.nodes[node_id].status().term


def tick_until_leader(net: CoreNetwork, max_ticks: int = 500) -> str:
    for _ in range(max_ticks):
        net.tick_all()
        leaders = [i for i in net.ids if role(net, i) == "leader"]
        if leaders:
            assert len(leaders) == 1, f"two leaders at once: {leaders}"
            return leaders[0]
    raise AssertionError("no leader elected")


def vote_request(src: str, dst: str, term: int, last_index: int = 0, last_term: int = 0,
                 kind: MessageKind = VOTE) -> Message:
    return Message(kind=kind, src=src, dst=dst, term=term, index=last_index, log_term=last_term)


# -- basic elections --------------------------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False])
def test_initial_election(pre_vote: bool) -> None:
    """From cold start, ticks alone elect exactly one leader in term 1 that every node follows,
    and its no-op commits everywhere (followers learn the commit index from the next
    heartbeat: the core sends no extra message just to carry it)."""
    net = CoreNetwork(3, seed=11, pre_vote=pre_vote)
    leader = tick_until_leader(net)
    net.stabilize()
    assert net.nodes[leader].status().commit_index == 1
    net.tick_all()
    for i in net.ids:
        st = net.nodes[i].status()
        assert st.term == 1
        assert st.leader_id == leader
        assert st.commit_index == 1
        assert st.role == ("leader" if i == leader else "follower")


def test_split_vote_resolves_with_randomized_timeouts() -> None:
    """All three nodes campaign at once (pre_vote off): each votes for itself and nobody wins
    term 1.  The seeded randomized timeouts then separate them and one wins a later term."""
    net = CoreNetwork(3, seed=5, pre_vote=False)
    for i in net.ids:
        net.nodes[i].campaign()
    net.stabilize()
    assert all(role(net, i) != "leader" for i in net.ids)
    assert all(term(net, i) == 1 for i in net.ids)
    leader = tick_until_leader(net)
    assert term(net, leader) >= 2
    net.stabilize()
    assert {net.nodes[i].status().leader_id for i in net.ids} == {leader}


def test_candidate_steps_down_on_append_from_leader_of_same_term() -> None:
    """Section 5.2: nodes 1 and 3 campaign in the same term; 1 wins with 2's vote, and
    candidate 3 follows 1 as soon as it hears an AppendEntries of that term."""
    net = CoreNetwork(3, seed=1, pre_vote=False)
    net.nodes["1"].campaign()
    net.nodes["3"].campaign()
    net.process_ready("1")
    net.process_ready("3")
    net.take(lambda m: m.dst == "2" and m.src == "3")  # 2 hears only from 1
    for m in net.take(lambda m: m.dst == "2"):
        net.deliver(m)
    net.process_ready("2")
    for m in net.take(lambda m: m.dst == "1"):
        net.deliver(m)
    assert role(net, "1") == "leader" and term(net, "1") == 1
    assert role(net, "3") == "candidate" and term(net, "3") == 1
    net.queue.clear()
    net.process_ready("1")
    for m in net.take(lambda m: m.dst == "3" and m.kind is MessageKind.APPEND):
        net.deliver(m)
    st = net.nodes["3"].status()
    assert st.role == "follower" and st.term == 1 and st.leader_id == "1"
    assert st.vote == "3", "its vote in term 1 is kept"


def test_higher_term_makes_leader_step_down() -> None:
    """A leader that sees a message of a higher term becomes a follower of that term."""
    net = CoreNetwork(3, seed=2)
    net.elect("1")
    t = term(net, "1")
    net.nodes["1"].step(Message(kind=MessageKind.HEARTBEAT, src="2", dst="1", term=t + 1))
    st = net.nodes["1"].status()
    assert st.role == "follower" and st.term == t + 1 and st.leader_id == "2"


def test_stale_leader_steps_down_after_partition_heals() -> None:
    """Without CheckQuorum a partitioned leader stays leader of its old term; once healed, the
    higher term reaches it (a follower answers its stale heartbeat with its own term) and it
    steps down and follows the new leader."""
    net = CoreNetwork(3, seed=3, check_quorum=False)
    net.elect("1")
    t = term(net, "1")
    net.isolate("1")
    new = tick_until_leader_among(net, ["2", "3"])
    assert role(net, "1") == "leader" and term(net, "1") == t
    net.heal()
    net.tick_all()
    st = net.nodes["1"].status()
    assert st.role == "follower" and st.term == term(net, new) and st.leader_id == new


def tick_until_leader_among(net: CoreNetwork, ids: list[str], max_ticks: int = 500) -> str:
    for _ in range(max_ticks):
        net.tick_all()
        leaders = [i for i in ids if role(net, i) == "leader"]
        if leaders:
            return leaders[0]
    raise AssertionError(f"no leader among {ids}")


# -- votes -------------------------------------------------------------------------------------


def test_one_vote_per_term() -> None:
    """A node grants at most one vote per term; the grant waits for persistence."""
    net = CoreNetwork(3, seed=4, pre_vote=False)
    n3 = net.nodes["3"]
    n3.step(vote_request("1", "3", term=1))
    rd = n3.ready()
    assert not [m for m in rd.messages if m.kind is VOTE_RESPONSE], \
        "a vote grant must not leave before the vote is durable"
    grants = [m for m in rd.messages_after_persist if m.kind is VOTE_RESPONSE]
    assert len(grants) == 1 and not grants[0].reject and grants[0].dst == "1"
    assert rd.hard_state is not None and rd.hard_state.vote == "1" and rd.hard_state.term == 1
    net.persist_ready("3", rd)
    n3.step(vote_request("2", "3", term=1))
    responses = [m for m in n3.ready().messages_after_persist if m.kind is VOTE_RESPONSE]
    assert [m.reject for m in responses] == [True]
    # A repeated request from the same candidate is granted again (idempotent).
    n3.step(vote_request("1", "3", term=1))
    assert [m.reject for m in n3.ready().messages_after_persist] == [False]


def test_one_vote_per_term_across_restart() -> None:
    """The vote is read back from the durable store: after a restart the node still refuses a
    second candidate in the same term."""
    net = CoreNetwork(3, seed=4, pre_vote=False)
    net.nodes["3"].step(vote_request("1", "3", term=1))
    net.process_ready("3")
    assert net.disks["3"].hard_state.vote == "1"
    net.restart("3")
    n3 = net.nodes["3"]
    assert n3.status().vote == "1" and n3.status().term == 1
    n3.step(vote_request("2", "3", term=1))
    responses = [m for m in n3.ready().messages_after_persist if m.kind is VOTE_RESPONSE]
    assert [m.reject for m in responses] == [True]


def test_unpersisted_vote_is_forgotten_and_was_never_sent() -> None:
    """A crash before the vote is durable loses the vote, which is safe only because the grant
    had not left the node: the restarted node may then vote for someone else."""
    net = CoreNetwork(3, seed=4, pre_vote=False)
    net.nodes["3"].step(vote_request("1", "3", term=1))
    rd = net.nodes["3"].ready()
    assert all(m.kind is not VOTE_RESPONSE for m in rd.messages)
    net.restart("3")  # the Ready was never persisted
    n3 = net.nodes["3"]
    assert n3.status().vote is None
    n3.step(vote_request("2", "3", term=1))
    assert [m.reject for m in n3.ready().messages_after_persist] == [False]


@pytest.mark.parametrize("pre_vote", [True, False])
@pytest.mark.parametrize(
    "stale_terms",
    [[1, 1], [1, 1, 1, 1, 1]],
    ids=["shorter-log", "longer-but-older-log"],
)
def test_election_restriction(pre_vote: bool, stale_terms: list[int]) -> None:
    """Section 5.4.1: a node whose log is shorter, or longer but with an older last term, than
    a majority's cannot become leader; one with the up-to-date log can."""
    net = CoreNetwork(3, seed=6, pre_vote=pre_vote)
    net.load("1", [1, 1, 2], term=2)
    net.load("2", [1, 1, 2], term=2)
    net.load("3", stale_terms, term=2)
    net.nodes["3"].campaign()
    net.stabilize()
    assert role(net, "3") != "leader"
    assert all(role(net, i) != "leader" for i in net.ids)
    net.elect("1")
    net.stabilize()
    assert net.terms("3") == [1, 1, 2, term(net, "1")]


def test_self_vote_counts_only_after_persistence() -> None:
    """A candidate's own vote reaches its tally through the after-persist queue: in a one-node
    cluster it becomes leader only when its Ready is advanced."""
    net = CoreNetwork(1, seed=0)
    node = net.nodes["1"]
    node.campaign()
    assert node.status().role == "candidate"
    rd = node.ready()
    self_votes = [m for m in rd.messages_after_persist
                  if m.kind is VOTE_RESPONSE and m.dst == "1"]
    assert len(self_votes) == 1
    assert rd.hard_state is not None and rd.hard_state.vote == "1"
    assert node.status().role == "candidate", "no durable self-vote yet"
    net.persist_ready("1", rd)
    assert node.status().role == "leader"


def test_self_vote_needed_for_majority_in_three_nodes() -> None:
    """With one peer grant (2 of 3 needs the candidate itself) the candidate waits for its own
    vote to be durable."""
    net = CoreNetwork(3, seed=0, pre_vote=False)
    net.nodes["1"].campaign()
    rd = net.take_ready("1")
    assert rd is not None
    net.take(lambda m: m.dst == "3")  # node 3 never hears of the election
    for m in net.take(lambda m: m.dst == "2"):
        net.deliver(m)
    net.process_ready("2")
    for m in net.take(lambda m: m.dst == "1"):
        net.deliver(m)
    assert role(net, "1") == "candidate"
    net.persist_ready("1", rd)
    assert role(net, "1") == "leader"


def test_illegal_transitions_raise() -> None:
    """Role changes that Raft forbids are engine bugs and raise InvariantError."""
    net = CoreNetwork(3, seed=0)
    net.elect("1")
    leader = net.nodes["1"].raft
    with pytest.raises(InvariantError, match="leader -> candidate"):
        leader.become_candidate()
    with pytest.raises(InvariantError):
        leader.become_pre_candidate()
    follower = net.nodes["2"].raft
    with pytest.raises(InvariantError, match="follower -> leader"):
        follower.become_leader()


def test_propose_on_follower_raises_not_leader_with_hint() -> None:
    """A follower refuses proposals and names the leader it knows."""
    net = CoreNetwork(3, seed=0)
    net.elect("2")
    with pytest.raises(NotLeaderError) as info:
        net.nodes["1"].propose([b"x"])
    assert info.value.leader_id == "2"


# -- PreVote and CheckQuorum ---------------------------------------------------------------------


def test_prevote_rejoining_node_does_not_raise_term() -> None:
    """With PreVote an isolated node keeps failing its pre-vote without bumping its term, so
    when it rejoins the leader and term are unchanged."""
    net = CoreNetwork(3, seed=7, pre_vote=True, check_quorum=True)
    net.elect("1")
    t = term(net, "1")
    net.isolate("3")
    net.tick_all(100)
    assert term(net, "3") == t, "pre-votes never bump the term"
    assert net.count(MessageKind.PRE_VOTE, src="3") > 0, "node 3 did try to campaign"
    net.heal()
    net.tick_all(50)
    assert role(net, "1") == "leader"
    assert {term(net, i) for i in net.ids} == {t}
    assert net.nodes["3"].status().leader_id == "1"


def test_without_prevote_rejoining_node_raises_term() -> None:
    """The counter-case: with pre_vote=False and check_quorum=False the isolated node's term
    grows with every timeout, and on rejoining it forces the whole cluster to a higher term."""
    net = CoreNetwork(3, seed=7, pre_vote=False, check_quorum=False)
    net.elect("1")
    t = term(net, "1")
    net.isolate("3")
    net.tick_all(100)
    assert term(net, "3") > t + 1
    net.heal()
    net.tick_all(100)
    terms = {term(net, i) for i in net.ids}
    assert len(terms) == 1 and terms.pop() > t + 1


def test_checkquorum_leader_in_minority_steps_down() -> None:
    """CheckQuorum: a leader that hears from no quorum for an election timeout steps down; the
    same leader in the majority keeps its office over the same ticks."""
    net = CoreNetwork(5, seed=8, check_quorum=True)
    net.elect("1")
    net.partition(["1", "2", "3"], ["4", "5"])
    net.tick_all(2 * net.options.election_ticks_max)
    assert role(net, "1") == "leader"
    net.heal()
    net.tick_all()
    net.partition(["1", "2"], ["3", "4", "5"])
    net.tick_all(2 * net.options.election_ticks_min + 1)
    assert role(net, "1") == "follower"
    assert net.nodes["1"].status().leader_id is None


def test_without_checkquorum_minority_leader_stays() -> None:
    """The switch works: with check_quorum=False the minority leader does not step down."""
    net = CoreNetwork(5, seed=8, check_quorum=False)
    net.elect("1")
    net.partition(["1", "2"], ["3", "4", "5"])
    net.tick_all(4 * net.options.election_ticks_max)
    assert role(net, "1") == "leader"


@pytest.mark.parametrize("kind", [MessageKind.VOTE, MessageKind.PRE_VOTE])
def test_lease_followers_ignore_vote_requests_while_leader_is_live(kind: MessageKind) -> None:
    """CheckQuorum's lease: a follower that heard from its leader within the minimum election
    timeout ignores (pre-)vote requests even of a higher term; once that time passes without
    the leader, the same request is answered and granted."""
    net = CoreNetwork(3, seed=9, pre_vote=False, check_quorum=True)
    net.elect("1")
    t = term(net, "1")
    n2 = net.nodes["2"]
    last = n2.status().last_log_index
    last_term = n2.status().last_log_term
    n2.step(vote_request("3", "2", term=t + 1, last_index=last, last_term=last_term, kind=kind))
    assert not n2.has_ready(), "the request is dropped without an answer"
    assert n2.status().term == t
    # Let the lease run out without hearing from the leader.
    r2 = n2.raft
    assert r2.randomized_election_timeout > net.options.election_ticks_min, "seed precondition"
    while r2.election_elapsed < net.options.election_ticks_min:
        n2.tick()
    assert role(net, "2") == "follower"
    n2.step(vote_request("3", "2", term=t + 1, last_index=last, last_term=last_term, kind=kind))
    responses = n2.ready().messages_after_persist
    assert [(m.kind, m.reject) for m in responses] == [
        (MessageKind.VOTE_RESPONSE if kind is VOTE else MessageKind.PRE_VOTE_RESPONSE, False)]
    assert n2.status().term == (t + 1 if kind is VOTE else t)


def test_leader_ignores_higher_term_vote_with_checkquorum() -> None:
    """A live leader with CheckQuorum is in its own lease and ignores a disruptive vote."""
    net = CoreNetwork(3, seed=9, pre_vote=False, check_quorum=True)
    net.elect("1")
    t = term(net, "1")
    net.nodes["1"].step(vote_request("3", "1", term=t + 5, last_index=100, last_term=t))
    assert role(net, "1") == "leader" and term(net, "1") == t
