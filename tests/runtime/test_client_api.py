"""The client-facing contract of a running node: linearizable reads, futures that always
complete, apply() errors, NotLeaderError, asyncio wrappers, and Status fields."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from engine import (
    LogStateMachine,
    NodeStopped,
    NotLeaderError,
    ProposalDropped,
    ReadTimeout,
    Status,
)
from tests.conftest import FAST, LIVENESS
from tests.runtime.scenario import assert_identical, commands, one, settled


def _count(machine: LogStateMachine) -> int:
    return len(machine.commands)


def _commands(machine: LogStateMachine) -> list[bytes]:
    return [c for _, c in machine.commands]


# -- reads ---------------------------------------------------------------------------------------


def test_read_sees_every_acknowledged_write(make_cluster):
    """Read-your-writes through ReadIndex: after each acknowledged proposal, a read on the leader
    sees exactly the commands written so far."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    for k in range(20):
        leader.propose(b"w-%d" % k).result(LIVENESS)
        assert leader.read(_commands).result(LIVENESS) == [b"w-%d" % i for i in range(k + 1)]


def test_read_right_after_election_waits_for_the_new_term_to_commit(make_cluster):
    """A read issued on a freshly elected leader (before its no-op commits) still returns state
    that includes everything committed by the previous leader."""
    cluster = make_cluster(3)
    old = cluster.wait_for_leader(LIVENESS)
    for k in range(5):
        one(cluster, b"c-%d" % k, expected=3)
    cluster.crash(cluster.nodes.index(old))
    new = cluster.wait_for_leader(LIVENESS)
    value = new.read(_commands).result(LIVENESS)
    assert value == [b"c-%d" % k for k in range(5)]


def test_read_errors_reach_the_future_and_node_keeps_serving(make_cluster):
    """An exception raised by the read function fails that read's future only; later reads and
    writes work."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    with pytest.raises(ZeroDivisionError):
        leader.read(lambda machine: 1 / 0).result(LIVENESS)
    leader.propose(b"after").result(LIVENESS)
    assert leader.read(_count).result(LIVENESS) == 1


def test_read_on_follower_fails_at_once_with_leader_hint(make_cluster):
    """read() on a follower fails at once with NotLeaderError naming the leader."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    follower = next(n for n in cluster.nodes if n is not leader)
    assert cluster.wait_for(lambda: follower.status().leader_id == leader.id, LIVENESS)
    future = follower.read(_count)
    assert future.done()
    error = future.exception()
    assert isinstance(error, NotLeaderError) and error.leader_id == leader.id


@pytest.mark.parametrize("check_quorum", [True, False])
def test_no_stale_read_from_isolated_leader(make_cluster, check_quorum):
    """A leader cut off from the majority never serves a stale read: while the majority elects a
    new leader and commits new writes, reads on the old leader fail (NotLeaderError once it knows
    it lost, ReadTimeout while it cannot confirm leadership) or see every committed write."""
    config = dataclasses.replace(FAST, check_quorum=check_quorum, read_timeout=1.0)
    cluster = make_cluster(3, config=config)
    old = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"before", expected=3)
    k = cluster.nodes.index(old)
    cluster.isolate(k)
    early = old.read(_commands)  # issued before the new write: may not see it, must not hang
    assert cluster.wait_for(lambda: cluster.leader() not in (None, old), LIVENESS)
    one(cluster, b"new-write", expected=2)
    committed = commands(cluster.leader())
    late = [old.read(_commands) for _ in range(3)]
    assert cluster.wait_for(lambda: settled([early, *late]), LIVENESS)
    for future in late:
        error = future.exception()
        if error is None:
            assert future.result() == [c for _, c in committed], "stale read"
        else:
            assert isinstance(error, NotLeaderError | ReadTimeout), error
    if not check_quorum:
        # The isolated node still believes it leads, so the read reached ReadIndex and timed out.
        assert old.status().role == "leader"
        assert all(isinstance(f.exception(), ReadTimeout) for f in late)
    early_error = early.exception()
    assert early_error is None or isinstance(early_error, NotLeaderError | ReadTimeout)
    if early_error is None:
        assert early.result() == [b"before"]
    cluster.rejoin(k)
    one(cluster, b"after", expected=3)
    assert_identical(cluster.nodes)


# -- futures -------------------------------------------------------------------------------------


def test_every_future_completes_by_stop(make_cluster):
    """Every future handed out by propose() and read() ends with a result or an error by the time
    stop() returns, including those pending on a leader that was cut off and on crashed nodes."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    futures = [leader.propose(b"p-%d" % k) for k in range(200)]
    futures += [leader.read(_count) for _ in range(20)]
    futures += [n.propose(b"f") for n in cluster.nodes if n is not leader]
    cluster.isolate(cluster.nodes.index(leader))
    futures += [leader.propose(b"stuck-%d" % k) for k in range(50)]
    futures += [leader.read(_count) for _ in range(5)]
    victim = next(n for n in cluster.nodes if n is not leader)
    futures.append(victim.propose(b"x"))
    cluster.crash(cluster.nodes.index(victim))
    futures.append(victim.propose(b"after-crash"))
    cluster.stop()
    pending = [f for f in futures if not f.done()]
    assert not pending, f"{len(pending)} futures still pending after stop()"
    for f in futures:
        error = f.exception()
        assert error is None or isinstance(
            error, NotLeaderError | ProposalDropped | NodeStopped | ReadTimeout), error


def _stop_under_client_load(cluster, tag: int) -> list:
    """Stop ``cluster`` while three threads propose and read on its leader as fast as they can;
    returns every future they obtained (the threads have finished when it returns)."""
    leader = cluster.wait_for_leader(LIVENESS)
    futures: list = []
    lock = threading.Lock()
    started = threading.Barrier(4)
    halt = threading.Event()

    def client() -> None:
        started.wait(LIVENESS)
        k = 0
        while not halt.is_set():
            f = leader.propose(b"c-%d-%d" % (tag, k)) if k % 4 else leader.read(_count)
            with lock:
                futures.append(f)
            k += 1

    threads = [threading.Thread(target=client, name=f"client-{i}", daemon=True)
               for i in range(3)]
    for t in threads:
        t.start()
    started.wait(LIVENESS)
    cluster.stop()
    halt.set()
    for t in threads:
        t.join(LIVENESS)
    return futures


@pytest.mark.slow
def test_futures_complete_when_stop_races_with_clients(make_cluster):
    """Client threads keep proposing and reading while the cluster stops: once stop() has returned
    and the clients have finished, no future is left pending (a client that passed the "running"
    check just before the stop must still get NodeStopped)."""
    for round_ in range(3):
        futures = _stop_under_client_load(make_cluster(3), round_)
        pending = [f for f in futures if not f.done()]
        assert not pending, f"round {round_}: {len(pending)} of {len(futures)} futures pending"


def test_cancel_does_not_withdraw_a_proposal(make_cluster):
    """cancel() on a proposal future returns False (the proposal cannot be withdrawn); the
    entry commits, its future still resolves, and later proposals resolve."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    cancelled = leader.propose(b"cancelled")
    assert cancelled.cancel() is False
    index = leader.propose(b"next").result(LIVENESS)
    assert cancelled.result(LIVENESS) == index - 1
    assert cluster.wait_applied(index, timeout=LIVENESS)
    assert [c for _, c in assert_identical(cluster.nodes)] == [b"cancelled", b"next"]


# -- apply errors ---------------------------------------------------------------------------------


class _Fussy(LogStateMachine):
    """Records commands; refuses (raises ValueError for) commands starting with b'bad'."""

    def apply(self, index: int, command: bytes) -> object:
        if command.startswith(b"bad"):
            raise ValueError(f"refused {command!r}")
        return super().apply(index, command)


def test_apply_exception_fails_only_its_future(make_cluster):
    """When apply() raises, that proposal's future gets the exception; the entry still counts as
    applied on every node and later commands are applied normally."""
    cluster = make_cluster(3, state_machine=_Fussy)
    leader = cluster.wait_for_leader(LIVENESS)
    ok1 = leader.propose(b"good-1")
    bad = leader.propose(b"bad")
    ok2 = leader.propose(b"good-2")
    assert isinstance(bad.exception(LIVENESS), ValueError)
    index = ok2.result(LIVENESS)
    assert ok1.result(LIVENESS) < index
    assert cluster.wait_applied(index, timeout=LIVENESS)
    assert all(n.last_applied >= index for n in cluster.nodes)
    log = assert_identical(cluster.nodes)
    assert [c for _, c in log] == [b"good-1", b"good-2"]


# -- NotLeaderError ------------------------------------------------------------------------------


def test_propose_on_follower_fails_at_once_with_leader_id(make_cluster):
    """propose() on a follower fails immediately (the future is already done) with NotLeaderError
    whose leader_id is the current leader, and nothing is proposed."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    one(cluster, b"x", expected=3)
    for follower in (n for n in cluster.nodes if n is not leader):
        assert cluster.wait_for(lambda f=follower: f.status().leader_id == leader.id, LIVENESS)
        future = follower.propose(b"nope")
        assert future.done()
        error = future.exception()
        assert isinstance(error, NotLeaderError)
        assert error.leader_id == leader.id
    one(cluster, b"y", expected=3)
    assert b"nope" not in [c for _, c in commands(leader)]


def test_not_leader_error_without_known_leader(make_cluster):
    """With every node cut off from the start no leader is ever known: propose() fails at once
    with NotLeaderError(None) and Status.leader_id is None."""
    cluster = make_cluster(3, start=False)
    for i in range(3):
        cluster.isolate(i)
    cluster.start()
    node = cluster.nodes[0]
    # Wait until the node has timed out at least once (its pre-vote went out and was dropped).
    assert cluster.wait_for(
        lambda: cluster.network.message_counts()["PRE_VOTE"] >= 6, LIVENESS)
    future = node.propose(b"x")
    assert future.done()
    assert isinstance(future.exception(), NotLeaderError)
    assert future.exception().leader_id is None
    for n in cluster.nodes:
        status = n.status()
        assert status.leader_id is None and status.role in ("follower", "candidate")


def test_propose_rejects_non_bytes(make_cluster):
    """propose() with a str raises TypeError at once (nothing is proposed)."""
    cluster = make_cluster(1)
    leader = cluster.wait_for_leader(LIVENESS)
    with pytest.raises(TypeError):
        leader.propose("text")  # type: ignore[arg-type]
    assert leader.propose(bytearray(b"ok")).result(LIVENESS) >= 1


# -- asyncio -------------------------------------------------------------------------------------


def test_asyncio_wrappers(make_cluster):
    """propose_async/read_async work under asyncio.run: concurrent awaits resolve to their
    indexes, a read sees them, and a follower's NotLeaderError is raised by the await."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    follower = next(n for n in cluster.nodes if n is not leader)
    assert cluster.wait_for(lambda: follower.status().leader_id == leader.id, LIVENESS)

    async def main() -> tuple[list[object], list[bytes]]:
        indexes = await asyncio.wait_for(
            asyncio.gather(*(leader.propose_async(b"a-%d" % k) for k in range(20))), LIVENESS)
        seen = await asyncio.wait_for(leader.read_async(_commands), LIVENESS)
        with pytest.raises(NotLeaderError):
            await follower.propose_async(b"no")
        with pytest.raises(NotLeaderError):
            await follower.read_async(_commands)
        return indexes, seen

    indexes, seen = asyncio.run(main())
    assert indexes == list(range(indexes[0], indexes[0] + 20))
    assert seen == [b"a-%d" % k for k in range(20)]


# -- status --------------------------------------------------------------------------------------


def test_status_fields(make_cluster):
    """Status carries the contract fields: role strings, leader_id, term, and index fields with
    last_applied <= commit_index <= last_log_index, all equal on a quiet leader after commits."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    index = one(cluster, b"s", expected=3)
    for node in cluster.nodes:
        status = node.status()
        assert isinstance(status, Status)
        assert status.id == node.id
        assert status.role in ("leader", "follower", "candidate")
        assert isinstance(status.term, int) and status.term >= 1
        assert status.last_applied <= status.commit_index <= status.last_log_index
        assert status.running
    assert cluster.wait_for(lambda: leader.status().last_applied == index, LIVENESS)
    status = leader.status()
    assert status.role == "leader" and status.leader_id == leader.id
    assert status.last_applied == status.commit_index == status.last_log_index == index
    for node in cluster.nodes:
        if node is not leader:
            assert cluster.wait_for(
                lambda n=node: n.status().leader_id == leader.id
                and n.status().commit_index == index, LIVENESS), node.status()
            assert node.status().role == "follower"


def test_crashed_node_never_hangs(make_cluster):
    """After crash(), status() reports running=False with leader_id None; propose() and read()
    return already-failed futures; peer_progress() raises NodeStopped; wait_applied() on an index
    never reached returns False instead of blocking."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    index = one(cluster, b"x", expected=3)
    cluster.crash(cluster.nodes.index(leader))
    status = leader.status()
    assert not status.running
    assert status.role == "follower" and status.leader_id is None
    assert status.last_applied == index
    for future in (leader.propose(b"y"), leader.read(_count)):
        assert future.done()
        assert isinstance(future.exception(), NodeStopped)
    with pytest.raises(NodeStopped):
        leader.peer_progress(timeout=LIVENESS)
    assert leader.wait_applied(index, timeout=LIVENESS)
    assert _returns_within(lambda: leader.wait_applied(index + 1000), LIVENESS) == [False]
    leader.crash()  # idempotent
    leader.stop()  # and stop after crash too


def _returns_within(fn, timeout: float) -> list:
    """Run ``fn()`` on a daemon thread; its result in a list, or [] if it is still blocked after
    ``timeout`` seconds (so a regression fails the test instead of hanging the suite)."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), name="blocker", daemon=True)
    thread.start()
    thread.join(timeout)
    return result


def test_waiters_are_released_when_node_stops(make_cluster):
    """A thread blocked in wait_applied() on an index that will never be applied returns False
    when the node stops, instead of blocking forever."""
    cluster = make_cluster(3)
    node = cluster.nodes[0]
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(node.wait_applied(10**9)),
                              name="waiter", daemon=True)
    waiter.start()
    cluster.wait_for_leader(LIVENESS)
    cluster.crash(0)
    waiter.join(LIVENESS)
    assert not waiter.is_alive(), "wait_applied() still blocked after the node crashed"
    assert result == [False]


def test_overloaded_when_too_many_proposals_wait(make_cluster) -> None:
    """With both followers cut off nothing commits: after max_pending_proposals proposals the
    leader refuses more at once with Overloaded, and accepts again once the backlog commits."""
    from engine import Overloaded

    config = dataclasses.replace(FAST, max_pending_proposals=50, check_quorum=False)
    cluster = make_cluster(3, config=config)
    leader = cluster.wait_for_leader(LIVENESS)
    index = cluster.nodes.index(leader)
    cluster.partition([index], [i for i in range(3) if i != index])
    accepted = [leader.propose(f"p{k}".encode()) for k in range(50)]
    refused = leader.propose(b"one too many")
    assert isinstance(refused.exception(LIVENESS), Overloaded)
    assert not any(f.done() for f in accepted), [f.exception() for f in accepted if f.done()][:3]
    cluster.heal()
    for future in accepted:
        future.result(LIVENESS)
    leader.propose(b"accepted again").result(LIVENESS)
