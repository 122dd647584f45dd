"""Conflict-term fast backup: a diverged follower costs one rejection per term, not per entry.

The logs are written straight into the nodes' durable state: a common prefix of 10 entries of
term 1, then on the follower ``k`` runs of ``per_term`` entries of terms 2..k+1 (written by
leaders of a minority that never committed), and on the leader and the third node the same
number of entries of term k+2.
"""

from __future__ import annotations

import pytest

from engine.core import MessageKind
from tests.core.harness import CoreNetwork

PREFIX = 10


def diverged(k: int, per_term: int, fast_backup: bool, leader_extra: int = 0) -> CoreNetwork:
    """Node 1 (leader-to-be) and 2 share a log; node 3 diverged after the prefix over k terms."""
    net = CoreNetwork(3, seed=99, fast_backup=fast_backup, pre_vote=False)
    divergent = [t for t in range(2, k + 2) for _ in range(per_term)]
    leader_log = [1] * PREFIX + [k + 2] * (len(divergent) + leader_extra)
    net.load("1", leader_log, term=k + 2, commit=PREFIX)
    net.load("2", leader_log, term=k + 2, commit=PREFIX)
    net.load("3", [1] * PREFIX + divergent, term=k + 2, commit=PREFIX)
    return net


def rejections_from(net: CoreNetwork, node_id: str) -> int:
    return net.count(MessageKind.APPEND_RESPONSE, src=node_id, reject=True)


@pytest.mark.parametrize(("k", "per_term"), [(1, 3000), (4, 750), (8, 400)])
def test_fast_backup_one_rejection_per_term(k: int, per_term: int) -> None:
    """With fast_backup the follower's thousands of divergent entries over k terms cost at most
    k+1 rejected APPENDs (one per foreign term, plus one if its log is shorter), and it ends
    with exactly the leader's log."""
    net = diverged(k, per_term, fast_backup=True)
    net.elect("1")
    net.tick_all()
    assert net.log("3") == net.log("1")
    assert rejections_from(net, "3") <= k + 1
    # Logs of equal length: the first probe already lands in the follower's last term.
    assert rejections_from(net, "3") == k


def test_fast_backup_when_follower_log_is_shorter() -> None:
    """A leader whose log runs past the follower's end first learns the follower's length
    (one rejection), then skips one term per rejection: k+1 in all."""
    k = 3
    net = diverged(k, 500, fast_backup=True, leader_extra=700)
    net.elect("1")
    net.tick_all()
    assert net.log("3") == net.log("1")
    assert rejections_from(net, "3") == k + 1


@pytest.mark.parametrize(("k", "per_term"), [(1, 2000), (4, 500)])
def test_without_fast_backup_one_rejection_per_entry(k: int, per_term: int) -> None:
    """With fast_backup off the leader backs up one entry per round trip: one rejection per
    divergent entry.  Same end state."""
    net = diverged(k, per_term, fast_backup=False)
    net.elect("1")
    net.tick_all()
    assert net.log("3") == net.log("1")
    assert rejections_from(net, "3") == k * per_term


def test_fast_backup_never_skips_matching_entries() -> None:
    """When the leader holds the follower's conflicting term it jumps to its own last entry of
    that term rather than past it, so entries the logs share are never re-sent needlessly nor
    lost: the follower keeps its matching prefix of term 2."""
    net = CoreNetwork(3, seed=5, fast_backup=True, pre_vote=False)
    leader = [1] * 5 + [2] * 5 + [4] * 5
    net.load("1", leader, term=4, commit=5)
    net.load("2", leader, term=4, commit=5)
    net.load("3", [1] * 5 + [2] * 8 + [3] * 4, term=4, commit=5)
    durable_prefix = net.disks["3"].entries[:10]
    net.elect("1")
    net.tick_all()
    assert net.log("3") == net.log("1")
    assert net.log("3")[:10] == durable_prefix
    assert rejections_from(net, "3") <= 2
    resent = [e.index for m in net.sent if m.kind is MessageKind.APPEND and m.dst == "3"
              for e in m.entries]
    assert min(resent) == 11, "nothing at or below the shared prefix was re-sent"
