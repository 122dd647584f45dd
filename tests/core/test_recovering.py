"""Protocol-aware recovery (CTRL, FAST'18) in the core: a node whose disk lost entries it may
have acknowledged neither votes nor campaigns nor counts towards quorums until a leader has
given them back; a leader resets a follower whose log shrank instead of waiting forever.

The disk faults are :meth:`DurableState.lose_tail` (the newest durable entries vanish, as when
start-up cuts a rotten newest record off as a torn tail); the node then boots through
``DurableState.boot_hard_state``, which marks it recovering as the runtime does.
"""

from __future__ import annotations

import dataclasses

import pytest

from engine.core import Message, MessageKind
from tests.core.harness import CoreNetwork

APPEND = MessageKind.APPEND
APPEND_RESPONSE = MessageKind.APPEND_RESPONSE
HEARTBEAT_RESPONSE = MessageKind.HEARTBEAT_RESPONSE
VOTE_RESPONSE = MessageKind.VOTE_RESPONSE
PRE_VOTE_RESPONSE = MessageKind.PRE_VOTE_RESPONSE

SWITCHES = [
    pytest.param({"pre_vote": False, "check_quorum": False}, id="plain"),
    pytest.param({"pre_vote": True, "check_quorum": True}, id="prevote+checkquorum"),
]


def _lose_tail(net: CoreNetwork, node_id: str, count: int) -> None:
    """Crash ``node_id``, let its disk lose its newest ``count`` entries, boot it again."""
    net.stop_node(node_id)
    lost = net.disks[node_id].lose_tail(count)
    assert len(lost) == count
    net.start_node(node_id)


def _granted(net: CoreNetwork, src: str, since: int) -> int:
    return sum(1 for m in net.sent[since:] if m.src == src and not m.reject
               and m.kind in (VOTE_RESPONSE, PRE_VOTE_RESPONSE))


@pytest.mark.parametrize("switches", SWITCHES)
def test_acknowledged_entry_survives_one_replica_losing_it(switches: dict[str, bool]) -> None:
    """The issue's scenario: 1 and 2 alone hold an acknowledged entry; 2's disk loses it and 1
    is down.  Without protocol-aware recovery 2 and 3 elect a leader without it and the entry
    is overwritten when 1 returns; here 2 refuses to vote until 1 is back and has given it
    back."""
    net = CoreNetwork(3, seed=7, **switches)
    net.elect("1")
    net.isolate("3")
    net.nodes["1"].propose([b"acknowledged"])
    net.stabilize()
    acked = net.nodes["1"].status().commit_index
    assert net.log("1")[-1].data == b"acknowledged"
    assert net.nodes["2"].status().last_log_index == acked
    net.tick_all(3)  # 2 learns the commit index too
    net.stop_node("1")
    _lose_tail(net, "2", 1)
    assert net.nodes["2"].status().recovering == acked
    assert net.disks["2"].hard_state.recovering == acked  # durable before anything else
    net.heal()
    since = len(net.sent)
    net.tick_all(200)
    assert net.leader() is None, "2 and 3 elected a leader without the acknowledged entry"
    assert _granted(net, "2", since) == 0
    assert net.nodes["2"].status().recovering == acked
    net.start_node("1")
    for _ in range(50):
        net.tick_all(10)
        if net.leader() is not None and net.nodes["2"].status().recovering == 0:
            break
    leader = net.leader()
    assert leader is not None
    net.nodes[leader].propose([b"after"])
    net.stabilize()
    net.tick_all(3)
    for node_id in ("1", "2", "3"):
        assert b"acknowledged" in net.user_data(node_id), node_id
        assert net.user_data(node_id)[-1] == b"after"
    assert net.nodes["2"].status().recovering == 0
    assert net.disks["2"].hard_state.recovering == 0


def test_follower_with_a_shorter_log_catches_up_under_the_same_leader() -> None:
    """A follower restarts with a shorter log than it acknowledged while the leader stays: the
    leader's progress says match=N, its rejection says it holds N-k.  The leader resets the
    peer to what it holds instead of dropping the rejection as stale (it used to stay behind
    until the next leader change).  Also without the recovering mark (a restore from an old
    backup, whose sync mark is old too)."""
    for mark_lost in (True, False):
        net = CoreNetwork(3, seed=3)
        net.elect("1")
        for k in range(5):
            net.nodes["1"].propose([f"v{k}".encode()])
        net.stabilize()
        net.tick_all(2)
        term = net.nodes["1"].status().term
        last = net.nodes["1"].status().last_log_index
        net.stop_node("2")
        net.disks["2"].lose_tail(3)
        if not mark_lost:
            disk = net.disks["2"]
            disk.synced_index = disk.last_index
            disk.hard_state = dataclasses.replace(disk.hard_state, commit=disk.last_index)
        net.start_node("2")
        assert (net.nodes["2"].status().recovering > 0) is mark_lost
        assert net.nodes["1"].raft.progress["2"].match == last
        net.tick_all(5)
        assert net.nodes["1"].status().term == term  # no election was needed
        assert net.log("2") == net.log("1")
        assert net.nodes["1"].raft.progress["2"].match == last
        assert net.nodes["2"].status().recovering == 0
        net.nodes["1"].propose([b"more"])
        net.stabilize()
        net.tick_all(2)
        assert net.user_data("2") == net.user_data("1")


def test_recovering_node_does_not_campaign_or_take_over() -> None:
    net = CoreNetwork(3, seed=5)
    net.elect("1")
    net.nodes["1"].propose([b"x"])
    net.stabilize()
    net.tick_all(2)
    net.stop_node("1")
    _lose_tail(net, "2", 1)
    node = net.nodes["2"]
    node.campaign()
    net.stabilize()
    assert node.status().role == "follower"
    assert net.count(MessageKind.VOTE, src="2") == net.count(MessageKind.PRE_VOTE, src="2") == 0
    node.step(Message(kind=MessageKind.TIMEOUT_NOW, src="3", dst="2", term=node.status().term))
    net.stabilize()
    assert node.status().role == "follower"


def test_leader_refuses_to_transfer_to_a_recovering_peer() -> None:
    net = CoreNetwork(3, seed=5)
    net.elect("1")
    net.nodes["1"].propose([b"x"])
    net.stabilize()
    net.isolate("3")
    _lose_tail(net, "2", 1)
    # Hold the leader's append back so that 2 stays recovering, and let 2's rejection (flagged)
    # reach the leader.
    net.tick_all(1)
    leader = net.nodes["1"]
    held = net.take(lambda m: m.kind is APPEND and m.dst == "2")
    for m in net.take(lambda m: m.src == "2"):
        net.deliver(m)
    if set(leader.raft._recovering_peers) != {"2"}:
        # 2 answered a heartbeat: the leader knows it is recovering either way.
        heartbeat = Message(kind=HEARTBEAT_RESPONSE, src="2", dst="1",
                            term=leader.status().term, recovering=True)
        leader.step(heartbeat)
    assert leader.progress()["2"].recovering
    with pytest.raises(ValueError, match="recovering"):
        leader.transfer_leadership("2")
    for m in held:
        net.deliver(m)
    net.heal()
    net.tick_all(3)
    assert net.nodes["2"].status().recovering == 0
    assert not leader.progress()["2"].recovering
    leader.transfer_leadership("2")
    net.tick_all(3)
    assert net.leader() == "2"


def _leader_with_entry_only_on_leader() -> tuple[CoreNetwork, int]:
    """3 nodes, 1 leads, 3 cut off; 1 appended an entry that 2 has not acknowledged yet.
    Returns the network and the entry's index."""
    net = CoreNetwork(3, seed=11)
    net.elect("1")
    net.isolate("3")
    net.nodes["1"].propose([b"y"])
    net.process_ready("1")
    net.take(lambda m: m.dst == "2")
    return net, net.nodes["1"].status().last_log_index


def test_recovering_acknowledgement_does_not_commit() -> None:
    net, index = _leader_with_entry_only_on_leader()
    leader = net.nodes["1"]
    term = leader.status().term
    ack = Message(kind=APPEND_RESPONSE, src="2", dst="1", term=term, index=index,
                  recovering=True)
    leader.step(ack)
    assert leader.status().commit_index < index
    leader.step(dataclasses.replace(ack, recovering=False))
    assert leader.status().commit_index == index


def test_recovering_heartbeat_ack_does_not_confirm_a_read() -> None:
    net = CoreNetwork(3, seed=13)
    net.elect("1")
    net.isolate("3")
    net.tick_all(2)
    leader = net.nodes["1"]
    leader.read_index(42)
    net.process_ready("1")
    net.take(lambda m: m.dst == "2")
    term = leader.status().term
    ack = Message(kind=HEARTBEAT_RESPONSE, src="2", dst="1", term=term, context=42,
                  recovering=True)
    leader.step(ack)
    net.process_ready("1")
    assert net.read_states["1"] == []
    leader.step(dataclasses.replace(ack, recovering=False))
    net.process_ready("1")
    assert [rs.context for rs in net.read_states["1"]] == [42]


def test_recovery_ends_only_once_the_entries_are_durable() -> None:
    """The mark is cleared when the node's own write of the restored entries completes: a
    crash before that must find the node still recovering."""
    net = CoreNetwork(3, seed=17)
    net.elect("1")
    for k in range(3):
        net.nodes["1"].propose([f"e{k}".encode()])
    net.stabilize()
    net.tick_all(2)
    _lose_tail(net, "2", 2)
    mark = net.nodes["2"].status().recovering
    assert mark > 0
    restoring = False
    for _ in range(50):  # run until the restoring append reaches 2, without persisting it
        net.nodes["1"].tick()
        net.process_ready("1")
        for m in net.take(lambda m: m.dst == "2"):
            net.deliver(m)
            restoring |= m.kind is APPEND and bool(m.entries)
        if restoring:
            break
        net.process_ready("2")  # its answers (nothing to write yet)
        for m in net.take(lambda m: m.dst == "1"):
            net.deliver(m)
    assert net.nodes["2"].raft._recovered_at > 0
    rd = net.take_ready("2")
    assert rd is not None and rd.entries
    assert net.nodes["2"].status().recovering == mark  # appended, not durable yet
    net.restart("2")  # crash: the write is lost
    assert net.nodes["2"].status().recovering == mark
    net.tick_all(5)
    assert net.nodes["2"].status().recovering == 0
    assert net.disks["2"].hard_state.recovering == 0
    assert net.log("2") == net.log("1")


def test_crash_while_recovering_keeps_the_mark() -> None:
    net = CoreNetwork(3, seed=19)
    net.elect("1")
    net.nodes["1"].propose([b"z"])
    net.stabilize()
    net.tick_all(2)
    net.stop_node("1")
    _lose_tail(net, "2", 1)
    mark = net.nodes["2"].status().recovering
    net.restart("2")
    net.restart("2")
    assert net.nodes["2"].status().recovering == mark


def test_single_voter_cannot_recover_and_goes_on() -> None:
    """With no peer to give the entries back, waiting would block the cluster forever: the
    only voter logs the loss and carries on (it must still be able to lead)."""
    net = CoreNetwork(1, seed=23)
    net.elect("1")
    net.nodes["1"].propose([b"a"])
    net.nodes["1"].propose([b"b"])
    net.stabilize()
    _lose_tail(net, "1", 1)
    assert net.nodes["1"].status().recovering == 0
    net.elect("1")
    assert net.nodes["1"].status().role == "leader"
