"""Log replication scenarios (6.824 lab 2B in spirit): agreement, agreement with a follower down,
no agreement without a majority, a partitioned leader's entries discarded, fast backup over a
long divergent suffix, and message counts."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter

import pytest

from engine import NotLeaderError, ProposalDropped
from engine.core.messages import MessageKind
from tests.conftest import FAST, LIVENESS
from tests.runtime.scenario import (
    agreed_commands,
    assert_identical,
    assert_prefix_consistent,
    commands,
    one,
    settled,
)

NO_CHECK_QUORUM = dataclasses.replace(FAST, check_quorum=False)


def test_basic_agreement(make_cluster):
    """Sequential commands commit at consecutive indexes (skipping only the leader's no-op) and
    every node applies the same commands in the same order."""
    cluster = make_cluster(3)
    cluster.wait_for_leader(LIVENESS)
    indexes = [one(cluster, b"cmd-%d" % k, expected=3) for k in range(10)]
    assert indexes == list(range(indexes[0], indexes[0] + 10))
    assert agreed_commands(cluster.nodes) == [b"cmd-%d" % k for k in range(10)]


def test_batched_proposals_resolve_in_order(make_cluster):
    """Many proposals in flight at once (one batch) each resolve to their own index, in proposal
    order, and all nodes apply them in that order."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    futures = [leader.propose(b"b-%d" % k) for k in range(500)]
    indexes = [f.result(LIVENESS) for f in futures]
    assert indexes == list(range(indexes[0], indexes[0] + 500))
    assert cluster.wait_applied(indexes[-1], timeout=LIVENESS)
    log = assert_identical(cluster.nodes)
    assert [c for _, c in log] == [b"b-%d" % k for k in range(500)]


@pytest.mark.parametrize("fault", ["isolate", "crash"])
def test_agreement_with_follower_down(make_cluster, fault):
    """With one of three followers cut off (or crashed), the other two still commit; when it
    comes back it catches up and every node holds the same log."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"before", expected=3)
    down = (cluster.nodes.index(leader) + 1) % 3
    if fault == "isolate":
        cluster.isolate(down)
    else:
        cluster.crash(down)
    for k in range(5):
        one(cluster, b"during-%d" % k, expected=2)
    if fault == "isolate":
        cluster.rejoin(down)
    else:
        cluster.restart(down)
    one(cluster, b"after", expected=3)
    assert agreed_commands(cluster.nodes) == [
        b"before", *(b"during-%d" % k for k in range(5)), b"after"]


def test_no_agreement_without_majority(make_cluster):
    """Five nodes, three followers cut off: the leader accepts a proposal but it never commits.
    With CheckQuorum the leader steps down and the future fails with ProposalDropped.  After
    healing the cluster commits again and all logs agree."""
    cluster = make_cluster(5)
    leader = cluster.wait_for_leader(LIVENESS)
    base = one(cluster, b"base", expected=5)
    k = cluster.nodes.index(leader)
    for d in (2, 3, 4):
        cluster.isolate((k + d) % 5)
    future = leader.propose(b"minority")
    error = future.exception(LIVENESS)
    assert isinstance(error, ProposalDropped | NotLeaderError), error
    assert all(n.status().commit_index <= base for n in cluster.nodes), [
        n.status() for n in cluster.nodes]
    cluster.heal()
    one(cluster, b"healed", expected=5)
    assert_identical(cluster.nodes)


def test_no_agreement_without_majority_futures_stay_pending(make_cluster):
    """Without CheckQuorum, a leader cut off from three of five followers keeps leading: its
    proposals stay pending (neither committed nor failed) while no majority exists.  After
    healing each one either commits (resolving to its index) or fails with ProposalDropped if a
    new leader replaced it, and every node agrees on the log."""
    cluster = make_cluster(5, config=NO_CHECK_QUORUM)
    leader = cluster.wait_for_leader(LIVENESS)
    base = one(cluster, b"base", expected=5)
    k = cluster.nodes.index(leader)
    for d in (2, 3, 4):
        cluster.isolate((k + d) % 5)
    futures = [leader.propose(b"pending-%d" % i) for i in range(3)]
    # Nothing may complete while there is no majority (a wait expected to time out).
    assert not cluster.wait_for(lambda: any(f.done() for f in futures),
                                4 * FAST.election_timeout_max)
    assert all(n.status().commit_index <= base for n in cluster.nodes)
    cluster.heal()
    assert cluster.wait_for(lambda: settled(futures), LIVENESS)
    final = one(cluster, b"healed", expected=5)
    log = assert_identical(cluster.nodes)
    for i, f in enumerate(futures):
        if f.exception() is None:
            assert (f.result(), b"pending-%d" % i) in log
            assert f.result() < final
        else:
            assert isinstance(f.exception(), ProposalDropped), f.exception()


@pytest.mark.parametrize("check_quorum", [True, False])
def test_partitioned_leader_entries_are_discarded(make_cluster, check_quorum):
    """An isolated leader that accepted proposals rejoins after the majority elected a new leader
    and committed other commands: its uncommitted entries are overwritten, its futures fail with
    ProposalDropped (or NotLeaderError when it had already stepped down), none of its commands is
    applied anywhere, and all logs agree."""
    config = dataclasses.replace(FAST, check_quorum=check_quorum)
    cluster = make_cluster(3, config=config)
    old = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"committed", expected=3)
    k = cluster.nodes.index(old)
    cluster.isolate(k)
    stale = [old.propose(b"stale-%d" % i) for i in range(10)]
    assert cluster.wait_for(lambda: cluster.leader() not in (None, old), LIVENESS)
    for i in range(5):
        one(cluster, b"fresh-%d" % i, expected=2)
    cluster.rejoin(k)
    assert cluster.wait_for(lambda: settled(stale), LIVENESS)
    for f in stale:
        assert isinstance(f.exception(), ProposalDropped | NotLeaderError), f.exception()
    if not check_quorum:
        assert all(isinstance(f.exception(), ProposalDropped) for f in stale)
    one(cluster, b"final", expected=3)
    assert agreed_commands(cluster.nodes) == [
        b"committed", *(b"fresh-%d" % i for i in range(5)), b"final"]


class _RejectionTap:
    """Counts AppendEntries rejections sent, per sender, by wrapping the memory network's send
    path (test-only instrumentation of a private hook)."""

    def __init__(self, network) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._send = network._send
        network._send = self

    def __call__(self, sender, messages) -> None:
        rejects = [m.src for m in messages if m.kind == MessageKind.APPEND_RESPONSE and m.reject]
        if rejects:
            with self._lock:
                self.counts.update(rejects)
        self._send(sender, messages)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


@pytest.mark.slow
@pytest.mark.parametrize("fast_backup", [True, False])
def test_backup_over_divergent_entries(make_cluster, fast_backup):
    """6.824 TestBackup: leaders in minority partitions accept 50 entries each that never commit,
    while the majority commits 50; on reconnection the new leaders back the stale followers up
    over those divergent suffixes and everyone converges.  With fast backup (conflict term) this
    takes far fewer rejections than there are divergent entries."""
    config = dataclasses.replace(FAST, check_quorum=False, fast_backup=fast_backup)
    cluster = make_cluster(5, config=config)
    tap = _RejectionTap(cluster.network)
    cluster.wait_for_leader(LIVENESS)
    one(cluster, b"start", expected=5)

    # Leader 1 and one follower in a minority; 50 proposals that cannot commit.
    leader1 = cluster.leader()
    l1 = cluster.nodes.index(leader1)
    cluster.partition([l1, (l1 + 1) % 5], [(l1 + d) % 5 for d in (2, 3, 4)])
    lost1 = [leader1.propose(b"lost1-%d" % i) for i in range(50)]
    assert cluster.wait_for(lambda: cluster.leader() not in (None, leader1), LIVENESS)
    for i in range(50):
        one(cluster, b"won1-%d" % i, expected=3)

    # Leader 2 and one follower in a minority; 50 more proposals that cannot commit.  The old
    # minority joins the remaining node of the majority.
    leader2 = cluster.leader()
    l2 = cluster.nodes.index(leader2)
    other = next(i for i in ((l1 + d) % 5 for d in (2, 3, 4)) if i != l2)
    mate = next(i for i in ((l1 + d) % 5 for d in (2, 3, 4)) if i not in (l2, other))
    cluster.partition([l2, mate], [l1, (l1 + 1) % 5, other])
    lost2 = [leader2.propose(b"lost2-%d" % i) for i in range(50)]
    rejections_before = tap.total()

    def new_leader_among_three() -> bool:
        leader = cluster.leader()
        return leader is not None and cluster.nodes.index(leader) in (l1, (l1 + 1) % 5, other)

    assert cluster.wait_for(new_leader_among_three, LIVENESS)
    for i in range(50):
        one(cluster, b"won2-%d" % i, expected=3)

    cluster.heal()
    one(cluster, b"end", expected=5)
    rejections = tap.total() - rejections_before
    assert cluster.wait_for(lambda: settled(lost1 + lost2), LIVENESS)
    applied = agreed_commands(cluster.nodes)
    assert not any(b"lost" in c for c in applied)
    assert [c for c in applied if c.startswith(b"won")] == [
        *(b"won1-%d" % i for i in range(50)), *(b"won2-%d" % i for i in range(50))]
    for f in lost1 + lost2:
        assert isinstance(f.exception(), ProposalDropped), f.exception()
    if fast_backup:
        # The first minority's two nodes hold 50 divergent entries each (the second minority's
        # suffix starts where the last leader's own entries start, so it is overwritten without a
        # rejection).  Classic backup costs one rejection per entry (> 100 here); conflict-term
        # backup about two per node.
        assert rejections < 50, (rejections, tap.counts)


def _heartbeat_bound(elapsed: float, n: int, slack: float = 2.0) -> float:
    """Most messages a quiet n-node cluster exchanges in ``elapsed`` seconds: each heartbeat
    interval the leader sends n-1 heartbeats and gets n-1 replies; doubled, plus a few rounds."""
    rounds = elapsed / FAST.heartbeat_interval + 3
    return slack * 2 * (n - 1) * rounds


@pytest.mark.parametrize("n", [3, 5])
def test_idle_cluster_message_count_is_bounded(make_cluster, n):
    """A quiet cluster sends only heartbeats and their replies: the number of messages over an
    idle period stays within what the heartbeat rate allows (monotonic time is used only to size
    that bound), and the leader and term do not change."""
    cluster = make_cluster(n)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"settle")
    term = leader.status().term
    before, started = cluster.message_count(), time.monotonic()
    changed = cluster.wait_for(
        lambda: cluster.leader() is not leader or leader.status().term != term,
        0.5)  # a "nothing happens" window
    after, elapsed = cluster.message_count(), time.monotonic() - started
    assert not changed
    sent = after - before
    assert 0 < sent <= _heartbeat_bound(elapsed, n), (sent, elapsed)


def test_agreement_message_count_is_bounded(make_cluster):
    """Committing commands one at a time costs a bounded number of messages: at most an append and
    its acknowledgement per follower per command (doubled for slack), on top of heartbeats."""
    n, iters = 3, 20
    cluster = make_cluster(n)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"settle")
    before, started = cluster.message_count(), time.monotonic()
    for k in range(iters):
        leader.propose(b"c-%d" % k).result(LIVENESS)
    after, elapsed = cluster.message_count(), time.monotonic() - started
    assert leader.status().role == "leader"
    sent = after - before
    bound = 2 * 2 * (n - 1) * iters + _heartbeat_bound(elapsed, n)
    assert sent <= bound, (sent, bound, elapsed)
    assert_prefix_consistent(cluster.nodes)
    assert len(commands(leader)) == iters + 1
