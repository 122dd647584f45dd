"""A node whose disk stalls (its driver says a durable write has run too long) does not lead,
campaign or take over a transfer until the disk answers; it still votes and follows."""

from __future__ import annotations

from engine.core import Message, MessageKind
from tests.core.harness import CoreNetwork


def test_stalled_leader_steps_down_and_others_take_over() -> None:
    net = CoreNetwork(3, seed=21, pre_vote=True, check_quorum=True)
    net.elect("1")
    term = net.nodes["1"].status().term
    net.nodes["1"].set_disk_stalled(True)
    assert net.nodes["1"].status().role == "follower"
    campaigns = net.count(MessageKind.PRE_VOTE, src="1") + net.count(MessageKind.VOTE, src="1")
    net.tick_all(100)
    leader = net.leader()
    assert leader in ("2", "3")
    assert net.nodes[leader].status().term > term
    assert net.count(MessageKind.PRE_VOTE, src="1") + net.count(MessageKind.VOTE, src="1") \
        == campaigns, "a node with a stalled disk campaigned"
    # It still follows: the new leader's entries reach it.
    net.nodes[leader].propose([b"while stalled"])
    net.stabilize()
    assert net.log("1") == net.log(leader)


def test_stalled_node_ignores_timeout_now_and_campaigns_again_once_healthy() -> None:
    net = CoreNetwork(3, seed=22, pre_vote=False, check_quorum=False)
    net.elect("1")
    node = net.nodes["2"]
    node.set_disk_stalled(True)
    node.step(Message(kind=MessageKind.TIMEOUT_NOW, src="1", dst="2", term=node.status().term))
    net.stabilize()
    assert net.leader() == "1"
    node.campaign()
    net.stabilize()
    assert net.leader() == "1"
    node.set_disk_stalled(False)
    node.campaign()
    net.stabilize()
    assert net.leader() == "2"
