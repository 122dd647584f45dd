"""Log replication: convergence (Figure 7), the commit rule (Figure 8), message faults,
batching, pipelining and the durability rule for the leader's own write."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from engine.core import Message, MessageKind
from engine.types import Entry
from tests.core.harness import CoreNetwork

APPEND = MessageKind.APPEND
APPEND_RESPONSE = MessageKind.APPEND_RESPONSE


def run(net: CoreNetwork, transform: Callable[[Message], Message | None],
        max_rounds: int = 10_000) -> None:
    """Like ``stabilize``, but every delivered message goes through ``transform`` first
    (None drops it)."""
    for _ in range(max_rounds):
        progressed = False
        for i in net.ids:
            progressed |= net.process_ready(i)
        if net.queue:
            batch, net.queue = net.queue, []
            for m in batch:
                out = transform(m)
                if out is not None:
                    net.deliver(out)
            progressed = True
        if not progressed:
            return
    raise AssertionError("did not settle")


def commits(net: CoreNetwork) -> dict[str, int]:
    return {i: net.nodes[i].status().commit_index for i in net.ids}


# -- Figure 7 -----------------------------------------------------------------------------------

FIGURE7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("fast_backup", [True, False])
@pytest.mark.parametrize("pre_vote", [True, False])
def test_figure7_followers_converge(fast_backup: bool, pre_vote: bool) -> None:
    """Raft paper Figure 7: the leader of term 8 brings every follower's log, whether missing
    entries (a, b, e), holding extra uncommitted ones (c, d) or both (f), to its own log.
    Followers c and d (whose logs are more up to date) refuse to vote, yet the others elect."""
    ids = ["l", *FIGURE7_FOLLOWERS]
    net = CoreNetwork(ids, seed=70, fast_backup=fast_backup, pre_vote=pre_vote)
    net.load("l", FIGURE7_LEADER, term=7, commit=3)
    for node_id, terms in FIGURE7_FOLLOWERS.items():
        net.load(node_id, terms, term=7, commit=3)
    net.elect("l")
    assert net.nodes["l"].status().term == 8
    net.tick_all()
    expected = net.log("l")
    assert [e.term for e in expected] == [*FIGURE7_LEADER, 8]
    for node_id in FIGURE7_FOLLOWERS:
        assert net.log(node_id) == expected, node_id
        assert net.disks[node_id].entries == expected, f"{node_id}: durable log differs"
        assert net.nodes[node_id].status().commit_index == len(expected)
    rejections = net.count(APPEND_RESPONSE, src="f", reject=True)
    if fast_backup:
        assert rejections <= 3, "f holds two foreign terms (2, 3): one rejection per term"
    else:
        assert rejections == 7, "classic backup: one rejection per entry from 10 down to 4"


# -- Figure 8 -----------------------------------------------------------------------------------


def _figure8_state_c(extra_replicate_term4: bool) -> CoreNetwork:
    """Build Figure 8 (c): S1 leads term 4 and has replicated its term-2 entry at index 2 to
    S2 and S3 (a majority) but its own term-4 entry (the no-op at 3) to nobody; S5 (down) holds
    a different entry of term 3 at index 2.  With ``extra_replicate_term4`` the term-4 entry
    also reaches S2 and S3 (Figure 8 (e))."""
    net = CoreNetwork(5, seed=8, pre_vote=False, check_quorum=False, max_batch_entries=1)
    net.load("1", [1, 2], term=3, commit=1)
    net.load("2", [1, 2], term=3, commit=1)
    net.load("3", [1], term=3, commit=1)
    net.load("4", [1], term=3, commit=1)
    net.load("5", [1, 3], term=3, commit=1)
    net.isolate("5")
    net.nodes["1"].campaign()

    def transform(m: Message) -> Message | None:
        if m.kind is APPEND and m.dst == "4":
            return None
        if m.kind is APPEND and not extra_replicate_term4:
            return dataclasses.replace(m, entries=[e for e in m.entries if e.index < 3])
        return m

    run(net, transform)
    assert net.nodes["1"].status().role == "leader" and net.nodes["1"].status().term == 4
    return net


def test_figure8_previous_term_entry_not_committed_by_counting() -> None:
    """Raft paper Figure 8 (c)-(d): an entry of an earlier term stored on a majority is not
    committed by counting replicas, which is what lets S5 later overwrite it safely."""
    net = _figure8_state_c(extra_replicate_term4=False)
    holders = [i for i in net.ids if net.terms(i)[:2] == [1, 2]]
    assert holders == ["1", "2", "3"], "the term-2 entry is on a majority"
    progress = net.nodes["1"].status().progress
    assert sorted(i for i, p in progress.items() if p.match >= 2) == ["1", "2", "3"]
    assert max(commits(net).values()) == 1, "a previous-term entry must not be counted"
    # (d): S1 crashes; S5 wins with votes from S2, S3, S4 and overwrites index 2.
    net.isolate("1")
    net.heal()
    net.isolate("1")
    for _ in range(3):
        net.nodes["5"].campaign()
        net.stabilize()
        if net.nodes["5"].status().role == "leader":
            break
    assert net.nodes["5"].status().role == "leader"
    net.tick_all()
    for i in ["2", "3", "4", "5"]:
        assert net.terms(i)[:2] == [1, 3], i
        assert net.nodes[i].status().commit_index >= 3
    net.heal()
    net.tick_all(3)
    assert net.terms("1")[:2] == [1, 3], "S1's uncommitted entries were replaced"
    for i in net.ids:
        applied = {e.index: e.term for e in net.applied[i]}
        assert applied.get(2) == 3, f"{i} applied {applied}"


def test_figure8_current_term_entry_commits_previous_ones() -> None:
    """Figure 8 (e): once S1's term-4 entry is on a majority it commits, with the term-2 entry
    before it, and S5 can no longer win an election."""
    net = _figure8_state_c(extra_replicate_term4=True)
    assert net.nodes["1"].status().commit_index >= 3
    net.isolate("1")
    net.heal()
    net.isolate("1")
    net.nodes["5"].campaign()
    net.stabilize()
    net.nodes["5"].campaign()
    net.stabilize()
    assert net.nodes["5"].status().role != "leader"
    leader = None
    for _ in range(300):
        net.tick_all()
        leader = next((i for i in ["2", "3", "4", "5"]
                       if net.nodes[i].status().role == "leader"), None)
        if leader:
            break
    assert leader in ("2", "3")
    net.tick_all()
    for i in ["2", "3", "4", "5"]:
        assert net.terms(i)[:3] == [1, 2, 4], i


# -- faults: duplicated, reordered, stale -------------------------------------------------------


def _leader_with_captured_appends(count: int) -> tuple[CoreNetwork, list[Message]]:
    """Node 1 leads; ``count`` separate proposals produced pipelined APPENDs to node 2, which
    are returned undelivered (node 3 gets its copies)."""
    net = CoreNetwork(3, seed=21)
    net.elect("1")
    net.tick_all()
    captured: list[Message] = []
    for k in range(count):
        net.nodes["1"].propose([f"cmd{k}".encode()])
        net.process_ready("1")
        captured += net.take(lambda m: m.dst == "2" and m.kind is APPEND)
    return net, captured


def test_duplicate_and_old_appends_leave_log_intact() -> None:
    """After a follower has all entries, re-delivering every old APPEND (duplicated, in random
    order) never truncates or changes its log and never lowers its commit index."""
    net, captured = _leader_with_captured_appends(6)
    assert len(captured) == 6
    for m in captured:
        net.deliver(m)
    net.stabilize()
    net.tick_all()
    log2, commit2 = net.log("2"), net.nodes["2"].status().commit_index
    assert log2 == net.log("1") and commit2 == len(log2)
    rng = random.Random(3)
    replay = captured * 3
    rng.shuffle(replay)
    for m in replay:
        net.deliver(m)
        net.process_ready("2")
        assert net.log("2") == log2
        assert net.nodes["2"].status().commit_index == commit2
    net.stabilize()
    assert net.log("2") == log2 == net.log("1")


def test_reordered_appends_converge_without_losing_entries() -> None:
    """Pipelined APPENDs arriving in reverse order (and duplicated) are rejected or accepted
    but never corrupt the follower's log; the committed prefix only grows; it converges."""
    net, captured = _leader_with_captured_appends(6)
    committed_before = net.log("2")[:net.nodes["2"].status().commit_index]
    rng = random.Random(4)
    delivery = list(reversed(captured)) + rng.sample(captured, 4)
    for m in delivery:
        net.deliver(m)
        net.process_ready("2")
        log2 = net.log("2")
        assert log2[:len(committed_before)] == committed_before
        assert log2 == net.log("1")[:len(log2)], "the follower's log is a prefix of the leader's"
    net.stabilize()
    net.tick_all()
    assert net.log("2") == net.log("1")


def test_stale_term_appends_are_ignored() -> None:
    """APPENDs from a deposed leader's older term change nothing on a follower of a newer
    term; the follower answers with its term so the old leader can step down."""
    net, captured = _leader_with_captured_appends(3)
    for m in captured:
        net.deliver(m)
    net.stabilize()
    net.isolate("1")
    for _ in range(200):
        net.tick_all()
        if net.nodes["3"].status().role == "leader" or net.nodes["2"].status().role == "leader":
            break
    net.tick_all()
    log2, t = net.log("2"), net.nodes["2"].status().term
    assert t > captured[0].term
    net.queue.clear()
    net.heal()
    for m in captured:
        assert m.term < t
        net.deliver(m)
    assert net.log("2") == log2 and net.nodes["2"].status().term == t
    rd = net.nodes["2"].ready()
    answers = [m for m in rd.messages_after_persist if m.dst == "1"]
    assert answers and all(m.term == t and not m.reject for m in answers)


# -- batching and pipelining ------------------------------------------------------------------


def _elected(n: int = 3, **options: object) -> CoreNetwork:
    net = CoreNetwork(n, seed=31, **options)
    net.elect("1")
    net.tick_all()
    return net


def test_one_batch_goes_out_in_one_append_and_one_write() -> None:
    """Proposals handed to the core together leave in one APPEND per follower and one durable
    write on each node."""
    net = _elected()
    commands = [b"c%03d" % k for k in range(100)]
    net.nodes["1"].propose(commands)
    rd = net.take_ready("1")
    assert rd is not None
    appends = [m for m in rd.messages if m.kind is APPEND]
    assert sorted(m.dst for m in appends) == ["2", "3"]
    assert all([e.data for e in m.entries] == commands for m in appends)
    assert [e.data for e in rd.entries] == commands
    net.persist_ready("1", rd)
    for m in net.take(lambda m: m.dst == "2"):
        net.deliver(m)
    rd2 = net.nodes["2"].ready()
    assert [e.data for e in rd2.entries] == commands, "one write on the follower"
    acks = [m for m in rd2.messages_after_persist if m.kind is APPEND_RESPONSE and m.dst == "1"]
    assert [m.index for m in acks] == [rd2.entries[-1].index], "one ack for the whole batch"


def test_proposals_pending_behind_full_window_leave_together() -> None:
    """With the window full, proposals made one by one wait in the log and go out in a single
    APPEND when an ack frees a slot."""
    net = _elected(max_inflight=1)
    net.nodes["1"].propose([b"x"])
    net.process_ready("1")
    first = net.take(lambda m: m.dst == "2" and m.kind is APPEND)
    assert len(first) == 1
    for cmd in (b"y", b"z", b"w"):
        net.nodes["1"].propose([cmd])
        net.process_ready("1")
    assert net.take(lambda m: m.dst == "2" and m.kind is APPEND) == [], "window is full"
    net.deliver(first[0])
    net.process_ready("2")
    for m in net.take(lambda m: m.dst == "1"):
        net.deliver(m)
    net.process_ready("1")
    nxt = net.take(lambda m: m.dst == "2" and m.kind is APPEND)
    assert [[e.data for e in m.entries] for m in nxt] == [[b"y", b"z", b"w"]]


@pytest.mark.parametrize(("max_entries", "max_bytes", "sizes"), [
    (10, 1 << 20, [10] * 10),
    (1024, 100, [6] * 16 + [4]),  # 16-byte commands: 6 fit in 100 bytes
    (1024, 10, [1] * 100),  # one entry larger than the limit still goes, alone
])
def test_batch_limits_split_appends(max_entries: int, max_bytes: int,
                                    sizes: list[int]) -> None:
    """max_batch_entries and max_batch_bytes split one large batch into several APPENDs (at
    least one entry each), pipelined back to back."""
    net = _elected(max_batch_entries=max_entries, max_batch_bytes=max_bytes, max_inflight=256)
    commands = [b"%016d" % k for k in range(100)]
    net.nodes["1"].propose(commands)
    net.process_ready("1")
    appends = net.take(lambda m: m.dst == "2" and m.kind is APPEND)
    assert [len(m.entries) for m in appends] == sizes
    assert [e.data for m in appends for e in m.entries] == commands
    net.stabilize()
    net.tick_all()
    assert net.user_data("2") == commands


@pytest.mark.parametrize("max_inflight", [1, 2, 4])
def test_pipelining_keeps_max_inflight_appends_in_flight(max_inflight: int) -> None:
    """A healthy follower (REPLICATE) gets up to max_inflight APPENDs before any ack; more
    proposals wait until an ack frees a slot."""
    net = _elected(max_inflight=max_inflight)
    assert net.nodes["1"].status().progress["2"].state == "replicate"
    for k in range(max_inflight + 2):
        net.nodes["1"].propose([b"p%d" % k])
        net.process_ready("1")
    appends = net.take(lambda m: m.dst == "2" and m.kind is APPEND)
    assert len(appends) == max_inflight
    assert [m.index for m in appends] == sorted({m.index for m in appends}), \
        "next advanced optimistically: each APPEND continues the previous one"
    assert net.nodes["1"].status().progress["2"].inflight == max_inflight
    net.deliver(appends[0])
    net.process_ready("2")
    for m in net.take(lambda m: m.dst == "1" and m.src == "2"):
        net.deliver(m)
    net.process_ready("1")
    more = net.take(lambda m: m.dst == "2" and m.kind is APPEND)
    assert len(more) == 1 and len(more[0].entries) == 2, "the two waiting proposals, batched"
    for m in appends[1:] + more:
        net.deliver(m)
    net.stabilize()
    net.tick_all()
    assert net.user_data("2") == [b"p%d" % k for k in range(max_inflight + 2)]


def test_rejection_moves_progress_back_to_probe() -> None:
    """A lost APPEND makes the next one be rejected; the leader falls back to PROBE, then
    finds the match point and resumes REPLICATE."""
    net = _elected()
    net.nodes["1"].propose([b"lost"])
    net.process_ready("1")
    assert len(net.take(lambda m: m.dst == "2" and m.kind is APPEND)) == 1  # dropped
    net.nodes["1"].propose([b"next"])
    net.process_ready("1")
    for m in net.take(lambda m: m.dst == "2"):
        net.deliver(m)
    net.process_ready("2")
    rejections = net.take(lambda m: m.src == "2" and m.kind is APPEND_RESPONSE)
    assert [m.reject for m in rejections] == [True]
    net.deliver(rejections[0])
    assert net.nodes["1"].status().progress["2"].state == "probe"
    net.stabilize()
    assert net.nodes["1"].status().progress["2"].state == "replicate"
    net.tick_all()
    assert net.user_data("2") == [b"lost", b"next"]


# -- the leader's own durable write ------------------------------------------------------------


def test_single_node_commits_only_after_own_write_is_durable() -> None:
    """In a one-node cluster the leader's self-ack (after its write) is the only vote: nothing
    commits before its Ready is advanced."""
    net = CoreNetwork(1, seed=0)
    net.elect("1")
    net.stabilize()
    node = net.nodes["1"]
    before = node.status().commit_index
    node.propose([b"a", b"b"])
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b"]
    assert node.status().commit_index == before
    assert any(m.dst == "1" and m.kind is APPEND_RESPONSE for m in rd.messages_after_persist)
    net.persist_ready("1", rd)
    assert node.status().commit_index == before + 2
    assert [e.data for e in node.ready().committed_entries] == [b"a", b"b"]


def test_leader_counts_itself_only_after_persisting() -> None:
    """Three nodes, one follower ack: the entry is on two nodes but only one durable copy is
    known (the leader has not persisted), so nothing commits until the leader's write is."""
    net = _elected()
    before = net.nodes["1"].status().commit_index
    net.nodes["1"].propose([b"v"])
    rd = net.take_ready("1")
    assert rd is not None and rd.entries
    net.take(lambda m: m.dst == "3")
    for m in net.take(lambda m: m.dst == "2"):
        net.deliver(m)
    net.process_ready("2")
    for m in net.take(lambda m: m.dst == "1"):
        net.deliver(m)
    assert net.nodes["1"].status().commit_index == before
    net.persist_ready("1", rd)
    assert net.nodes["1"].status().commit_index == before + 1


def test_two_follower_acks_commit_before_leader_persists() -> None:
    """The rule implemented: a quorum of durable copies commits, whoever holds them.  Two
    follower acks commit in a 3-node cluster while the leader's own write is still pending, but
    the leader hands the entry out for application only after its own write is durable."""
    net = _elected()
    before = net.nodes["1"].status().commit_index
    net.nodes["1"].propose([b"v"])
    rd = net.take_ready("1")
    assert rd is not None
    for dst in ("2", "3"):
        for m in net.take(lambda m, d=dst: m.dst == d):
            net.deliver(m)
        net.process_ready(dst)
    for m in net.take(lambda m: m.dst == "1"):
        net.deliver(m)
    assert net.nodes["1"].status().commit_index == before + 1
    follow_up = net.nodes["1"].ready()
    assert follow_up.committed_entries == [], "not durable on the leader yet: not applied"
    net.persist_ready("1", rd)
    applied: list[Entry] = net.nodes["1"].ready().committed_entries
    assert [e.data for e in applied] == [b"v"]


@pytest.mark.parametrize("max_inflight", [1, 64])
def test_lost_acks_are_recovered_by_heartbeats(max_inflight: int) -> None:
    """Regression (found by the random schedules): both followers persist an entry
    but every ack is lost, and nothing else is proposed.  The heartbeat round must make the
    leader resend (an empty append is enough) so that the acks come again and the entry
    commits; before the fix the leader believed everything was in flight and waited forever."""
    net = _elected(max_inflight=max_inflight)
    before = net.nodes["1"].status().commit_index
    net.nodes["1"].propose([b"w"])
    net.process_ready("1")
    for dst in ("2", "3"):
        for m in net.take(lambda m, d=dst: m.dst == d):
            net.deliver(m)
        net.process_ready(dst)
    lost = net.take(lambda m: m.dst == "1")
    assert [m.kind for m in lost] == [APPEND_RESPONSE, APPEND_RESPONSE]
    net.tick_all(3)
    assert net.nodes["1"].status().commit_index == before + 1
    assert all(net.user_data(i) == [b"w"] for i in net.ids)


def test_lost_appends_are_recovered_by_heartbeats() -> None:
    """Every APPEND of a proposal is lost and nothing else is proposed: heartbeats alone must
    get the entry to the followers and committed."""
    net = _elected()
    net.nodes["1"].propose([b"w"])
    net.process_ready("1")
    assert len(net.take(lambda m: m.kind is APPEND)) == 2
    net.tick_all(3)
    assert all(net.user_data(i) == [b"w"] for i in net.ids)
