"""ProposalFuture (engine.runtime.proposals) behaves exactly like concurrent.futures.Future.

Two parts:

* the class on its own: every behaviour test runs on both ``concurrent.futures.Future`` and
  ``ProposalFuture`` (the fixture ``make_future``), so the stdlib class is the reference;
  then races between the lock-free fast paths and the lazily built Condition, and a threaded
  stress test;
* the futures a running node hands out: wait, as_completed, callbacks, asyncio, timeouts, and
  what cancel() does to a proposal (it returns False: a proposal cannot be withdrawn).

Every blocking call has a timeout; nothing here asserts on timing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import functools
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from engine import LogStateMachine, NotLeaderError
from engine.runtime.proposals import ProposalFuture, settle
from tests.conftest import LIVENESS

SHORT = 0.01
"""Seconds to wait for something that must NOT happen (a timeout path)."""

Factory = Callable[[], cf.Future]


@pytest.fixture(params=[cf.Future, ProposalFuture], ids=["stdlib", "proposal"])
def make_future(request: pytest.FixtureRequest) -> Factory:
    return request.param


def _in_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def _join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(LIVENESS)
        assert not thread.is_alive(), f"{thread.name} hung"


# -- the class on its own: state and results -----------------------------------------------------


def test_is_a_concurrent_future():
    assert isinstance(ProposalFuture(), cf.Future)
    assert isinstance(ProposalFuture(running=True), cf.Future)


def test_fresh_future_is_pending(make_future):
    f = make_future()
    assert (f.done(), f.running(), f.cancelled()) == (False, False, False)
    assert "pending" in repr(f)


def test_set_result(make_future):
    f = make_future()
    f.set_result(42)
    assert (f.done(), f.running(), f.cancelled()) == (True, False, False)
    assert f.result() == 42
    assert f.result(0) == 42
    assert f.result(timeout=SHORT) == 42
    assert f.exception() is None
    assert f.exception(0) is None
    assert "finished returned int" in repr(f)


def test_set_result_none_and_falsy_values(make_future):
    for value in (None, 0, b"", []):
        f = make_future()
        f.set_result(value)
        assert f.result(SHORT) == value
        assert f.exception() is None


def test_set_exception(make_future):
    f = make_future()
    error = ValueError("boom")
    f.set_exception(error)
    assert f.done() and not f.cancelled() and not f.running()
    with pytest.raises(ValueError, match="boom") as info:
        f.result()
    assert info.value is error
    with pytest.raises(ValueError):
        f.result(SHORT)
    assert f.exception() is error
    assert f.exception(SHORT) is error
    assert "raised ValueError" in repr(f)


def test_result_and_exception_time_out_while_pending(make_future):
    f = make_future()
    with pytest.raises(TimeoutError):
        f.result(SHORT)
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0)
    with pytest.raises(TimeoutError):
        f.exception(SHORT)
    assert not f.done()
    f.set_result(1)  # a timed-out wait does not spoil the future
    assert f.result(SHORT) == 1


def test_completion_is_final(make_future):
    f = make_future()
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1
    assert f.cancel() is False

    g = make_future()
    g.set_exception(KeyError("k"))
    with pytest.raises(cf.InvalidStateError):
        g.set_result(2)
    assert isinstance(g.exception(), KeyError)


def test_blocked_result_wakes_up_when_set_from_another_thread(make_future):
    f = make_future()
    got: list[object] = []
    waiter = _in_thread(lambda: got.append(f.result(LIVENESS)))
    setter = _in_thread(lambda: f.set_result("late"))
    _join(waiter, setter)
    assert got == ["late"]


def test_blocked_exception_wakes_up_when_set_from_another_thread(make_future):
    f = make_future()
    got: list[object] = []
    error = OSError("late")
    waiter = _in_thread(lambda: got.append(f.exception(LIVENESS)))
    setter = _in_thread(lambda: f.set_exception(error))
    _join(waiter, setter)
    assert got == [error]


# -- cancel and set_running_or_notify_cancel -----------------------------------------------------


def test_cancel_pending(make_future):
    f = make_future()
    seen: list[cf.Future] = []
    f.add_done_callback(seen.append)
    assert f.cancel() is True
    assert f.cancelled() and f.done() and not f.running()
    assert seen == [f]
    assert f.cancel() is True  # again: still cancelled, callbacks not called twice
    assert seen == [f]
    with pytest.raises(cf.CancelledError):
        f.result(SHORT)
    with pytest.raises(cf.CancelledError):
        f.exception()
    with pytest.raises(cf.InvalidStateError):
        f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    assert "cancelled" in repr(f)


def test_cancel_wakes_blocked_waiter(make_future):
    f = make_future()
    raised: list[type[BaseException]] = []

    def wait() -> None:
        try:
            f.result(LIVENESS)
        except BaseException as exc:
            raised.append(type(exc))

    waiter = _in_thread(wait)
    canceller = _in_thread(f.cancel)
    _join(waiter, canceller)
    assert raised == [cf.CancelledError]


def test_set_running_or_notify_cancel(make_future):
    f = make_future()
    assert f.set_running_or_notify_cancel() is True
    assert f.running() and not f.done()
    assert f.cancel() is False
    assert not f.cancelled()
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()
    f.set_result(3)
    assert not f.running() and f.result() == 3
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()


def test_set_running_or_notify_cancel_after_cancel(make_future):
    f = make_future()
    other = make_future()
    assert f.cancel()
    # wait() counts a cancelled future done only once it was "notified" (stdlib behaviour).
    done, not_done = cf.wait([f, other], timeout=0, return_when=cf.FIRST_COMPLETED)
    assert (done, not_done) == (set(), {f, other})
    assert f.set_running_or_notify_cancel() is False
    assert f.cancelled() and f.done()
    done, not_done = cf.wait([f, other], timeout=0, return_when=cf.FIRST_COMPLETED)
    assert (done, not_done) == ({f}, {other})


def test_running_future_cannot_be_cancelled():
    """ProposalFuture(running=True): what the engine hands out."""
    f = ProposalFuture(running=True)
    assert f.running() and not f.done() and not f.cancelled()
    assert f.cancel() is False
    assert f.running() and not f.cancelled()
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()
    f.set_result("x")
    assert f.result(SHORT) == "x" and not f.running()


# -- callbacks -----------------------------------------------------------------------------------


def test_callbacks_before_and_after_completion(make_future):
    f = make_future()
    calls: list[tuple[str, cf.Future]] = []
    f.add_done_callback(lambda g: calls.append(("first", g)))
    f.add_done_callback(lambda g: calls.append(("second", g)))
    assert calls == []
    f.set_result(1)
    assert calls == [("first", f), ("second", f)]
    f.add_done_callback(lambda g: calls.append(("late", g)))  # called at once
    assert calls[-1] == ("late", f)
    assert len(calls) == 3


def test_callbacks_on_exception(make_future):
    f = make_future()
    seen: list[BaseException | None] = []
    f.add_done_callback(lambda g: seen.append(g.exception()))
    error = RuntimeError("x")
    f.set_exception(error)
    f.add_done_callback(lambda g: seen.append(g.exception()))
    assert seen == [error, error]


def test_failing_callback_is_logged_and_the_others_still_run(make_future, caplog):
    f = make_future()
    seen: list[int] = []

    def bad(_: cf.Future) -> None:
        raise ValueError("callback bug")

    f.add_done_callback(bad)
    f.add_done_callback(lambda g: seen.append(g.result()))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(5)
        f.add_done_callback(bad)  # after completion: called at once, also logged
    assert seen == [5]
    assert sum("exception calling callback" in r.getMessage() for r in caplog.records) == 2


def test_callback_may_read_the_future_and_add_callbacks(make_future):
    """Callbacks run outside the future's lock: they may call back into it."""
    f = make_future()
    seen: list[object] = []

    def outer(g: cf.Future) -> None:
        seen.append(g.result(0))
        g.add_done_callback(lambda h: seen.append(("inner", h.done())))

    f.add_done_callback(outer)
    f.set_result("v")
    assert seen == ["v", ("inner", True)]


# -- concurrent.futures.wait / as_completed ------------------------------------------------------


def test_wait_all_completed(make_future):
    fs = [make_future() for _ in range(5)]
    fs[0].set_result(0)
    setters = [_in_thread(lambda f=f, i=i: f.set_result(i)) for i, f in enumerate(fs[1:], 1)]
    done, not_done = cf.wait(fs, timeout=LIVENESS)
    _join(*setters)
    assert done == set(fs) and not not_done
    assert sorted(f.result() for f in fs) == list(range(5))


def test_wait_timeout_and_first_completed(make_future):
    a, b, c = make_future(), make_future(), make_future()
    done, not_done = cf.wait([a, b, c], timeout=SHORT)
    assert (done, not_done) == (set(), {a, b, c})
    b.set_result("b")
    done, not_done = cf.wait([a, b, c], timeout=LIVENESS, return_when=cf.FIRST_COMPLETED)
    assert (done, not_done) == ({b}, {a, c})
    setter = _in_thread(lambda: c.set_result("c"))
    done, _ = cf.wait([a, c], timeout=LIVENESS, return_when=cf.FIRST_COMPLETED)
    _join(setter)
    assert done == {c}


def test_wait_first_exception(make_future):
    ok, bad, pending = make_future(), make_future(), make_future()
    ok.set_result(1)
    done, not_done = cf.wait([ok, pending], timeout=SHORT, return_when=cf.FIRST_EXCEPTION)
    assert (done, not_done) == ({ok}, {pending})
    # An exception set already: wait() calls exception() while holding the future's condition.
    bad.set_exception(ValueError())
    done, not_done = cf.wait([ok, bad, pending], timeout=LIVENESS,
                             return_when=cf.FIRST_EXCEPTION)
    assert (done, not_done) == ({ok, bad}, {pending})
    # ... or set while wait() blocks.
    late = make_future()
    setter = _in_thread(lambda: late.set_exception(KeyError()))
    done, not_done = cf.wait([late, pending], timeout=LIVENESS,
                             return_when=cf.FIRST_EXCEPTION)
    _join(setter)
    assert (done, not_done) == ({late}, {pending})


def test_wait_over_mixed_stdlib_and_proposal_futures():
    stdlib, proposal = cf.Future(), ProposalFuture()
    setter = _in_thread(lambda: (proposal.set_result(1), stdlib.set_result(2)))
    done, not_done = cf.wait([stdlib, proposal], timeout=LIVENESS)
    _join(setter)
    assert done == {stdlib, proposal} and not not_done


def test_wait_sees_cancelled_and_notified(make_future):
    f = make_future()
    assert f.cancel()
    assert f.set_running_or_notify_cancel() is False
    done, _ = cf.wait([f], timeout=LIVENESS)
    assert done == {f}


def test_as_completed_yields_in_completion_order(make_future):
    fs = [make_future() for _ in range(4)]
    fs[2].set_result(2)
    order = [3, 0, 1]
    release = threading.Event()

    def complete() -> None:
        release.wait(LIVENESS)
        for i in order:
            fs[i].set_result(i)

    setter = _in_thread(complete)
    results = []
    for k, f in enumerate(cf.as_completed(fs, timeout=LIVENESS)):
        results.append(f.result(0))
        if k == 0:
            release.set()
    _join(setter)
    assert results == [2, *order]


def test_as_completed_times_out(make_future):
    done, pending = make_future(), make_future()
    done.set_result("d")
    got = []
    with pytest.raises(TimeoutError):
        for f in cf.as_completed([done, pending], timeout=SHORT):
            got.append(f.result(0))
    assert got == ["d"]
    # The abandoned waiter was removed: the pending future still completes normally.
    pending.set_result("p")
    assert pending.result(0) == "p"
    assert list(cf.as_completed([pending], timeout=LIVENESS)) == [pending]


# -- asyncio ---------------------------------------------------------------------------------------


def test_asyncio_wrap_future(make_future):
    done, failed, later = make_future(), make_future(), make_future()
    done.set_result("now")
    failed.set_exception(ValueError("no"))

    async def main() -> list[object]:
        out: list[object] = [await asyncio.wrap_future(done)]
        with pytest.raises(ValueError, match="no"):
            await asyncio.wrap_future(failed)
        loop = asyncio.get_running_loop()
        loop.call_later(SHORT, lambda: threading.Thread(
            target=later.set_result, args=("later",)).start())
        out.append(await asyncio.wait_for(asyncio.wrap_future(later), LIVENESS))
        return out

    assert asyncio.run(main()) == ["now", "later"]


def test_asyncio_cancelling_the_wrapper_cancels_a_pending_future(make_future):
    f = make_future()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(f), SHORT)

    asyncio.run(main())
    assert f.cancelled()  # as with the stdlib: the wrapper's cancellation reached the source


def test_asyncio_cancelling_the_wrapper_leaves_a_running_future_alone():
    f = ProposalFuture(running=True)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(f), SHORT)

    asyncio.run(main())
    assert f.running() and not f.cancelled()
    f.set_result(1)  # the loop is closed: the chained callback gives up quietly
    assert f.result(0) == 1


# -- the lock-free fast paths ----------------------------------------------------------------------


def test_fast_paths_build_no_condition():
    """The point of the class: settling, reading and callbacks on a future nobody blocks on
    never build its Condition."""
    f = ProposalFuture(running=True)
    f.add_done_callback(lambda _: None)
    assert not f.done() and not f.cancelled() and f.running() and not f.cancel()
    f.set_result(1)
    assert f.result() == 1 and f.result(1.0) == 1 and f.exception() is None
    f.add_done_callback(lambda _: None)
    g = ProposalFuture()
    g.set_exception(ValueError())
    assert isinstance(g.exception(0), ValueError)
    assert f._cond is None and g._cond is None


def test_condition_is_built_once_and_then_used():
    f = ProposalFuture()
    with pytest.raises(TimeoutError):
        f.result(0)
    cond = f._cond
    assert cond is not None and f._condition is cond
    f.set_result(1)  # the slow path, under the condition
    assert f._condition is cond and f.result() == 1


def test_settle_ignores_done_futures(make_future):
    f = make_future()
    settle(f, 1)
    settle(f, 2)
    settle(f, error=ValueError())
    assert f.result() == 1
    g = make_future()
    g.cancel()
    settle(g, 1)
    assert g.cancelled()


@pytest.fixture
def eager_switching() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, so races interleave finely."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def _race(first: Callable[[], object], second: Callable[[], object]) -> None:
    """Run ``first`` and ``second`` in two threads released at the same moment."""
    start = threading.Barrier(2)

    def go(fn: Callable[[], object]) -> None:
        start.wait(LIVENESS)
        fn()

    _join(_in_thread(functools.partial(go, first)), _in_thread(functools.partial(go, second)))


def _wait_on(f: cf.Future, how: str, got: list[object]) -> None:
    """Block until ``f`` is done, by the means ``how``; append its result to ``got``."""
    if how == "result":
        got.append(f.result(LIVENESS))
    elif how == "exception":
        assert f.exception(LIVENESS) is None
        got.append(f.result(0))
    elif how == "wait":
        assert cf.wait([f], timeout=LIVENESS).done == {f}
        got.append(f.result(0))
    elif how == "as_completed":
        got.extend(g.result(0) for g in cf.as_completed([f], timeout=LIVENESS))
    else:
        called = threading.Event()
        f.add_done_callback(lambda g: (got.append(g.result(0)), called.set()))
        assert called.wait(LIVENESS)


@pytest.mark.usefixtures("eager_switching")
@pytest.mark.parametrize("how", ["result", "exception", "wait", "as_completed", "callback"])
def test_racing_first_wait_against_completion(how):
    """The race the design is about: a thread builds the Condition (to block) at the moment
    another completes the future on the fast path.  The waiter must never miss the result."""
    for round_ in range(300):
        f = ProposalFuture(running=round_ % 2 == 0)
        got: list[object] = []
        _race(functools.partial(_wait_on, f, how, got), functools.partial(f.set_result, round_))
        assert got == [round_], f"round {round_}: {got}"


def _try_set_result(f: cf.Future, value: object, ok: list[bool]) -> None:
    try:
        f.set_result(value)
        ok.append(True)
    except cf.InvalidStateError:
        ok.append(False)


@pytest.mark.usefixtures("eager_switching")
def test_racing_cancel_against_set_result():
    """Exactly one of cancel() and set_result() wins, whichever way the race goes."""
    for round_ in range(300):
        f = ProposalFuture()
        cancelled: list[bool] = []
        set_ok: list[bool] = []
        _race(lambda f=f, out=cancelled: out.append(f.cancel()),
              functools.partial(_try_set_result, f, round_, set_ok))
        assert len(cancelled) == len(set_ok) == 1 and cancelled != set_ok, (
            f"round {round_}: cancel={cancelled} set={set_ok}")
        assert f.cancelled() == cancelled[0]
        if not f.cancelled():
            assert f.result(0) == round_


@pytest.mark.usefixtures("eager_switching")
def test_stress_many_waiters_one_setter():
    """Threads wait (result, exception, wait, as_completed, callbacks) on futures that one
    thread completes, in random order; some were never waited on, some are waited on by
    several threads at once.  Nothing hangs and every waiter sees the right value."""
    rng = random.Random(7)
    n = 2000
    futures = [ProposalFuture(running=rng.random() < 0.5) for _ in range(n)]
    errors: list[str] = []
    callback_hits = [0] * n
    hits_lock = threading.Lock()

    def expect(i: int) -> object:
        return ValueError(i) if i % 7 == 0 else i

    def check(i: int, f: cf.Future) -> None:
        if i % 7 == 0:
            exc = f.exception(0)
            if not isinstance(exc, ValueError) or exc.args != (i,):
                errors.append(f"{i}: {exc!r}")
        elif f.result(0) != i:
            errors.append(f"{i}: {f.result(0)!r}")

    def on_done(i: int) -> Callable[[cf.Future], None]:
        def callback(f: cf.Future) -> None:
            check(i, f)
            with hits_lock:
                callback_hits[i] += 1
        return callback

    def waiter(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(300):
                kind = r.randrange(5)
                picks = r.sample(range(n), r.randint(1, 8))
                if kind == 0:
                    for i in picks:
                        with contextlib.suppress(ValueError):
                            futures[i].result(LIVENESS)
                        check(i, futures[i])
                elif kind == 1:
                    for i in picks:
                        futures[i].exception(LIVENESS)
                        check(i, futures[i])
                elif kind == 2:
                    not_done = cf.wait([futures[i] for i in picks], timeout=LIVENESS).not_done
                    if not_done:
                        errors.append(f"wait left {len(not_done)} not done")
                    for i in picks:
                        check(i, futures[i])
                elif kind == 3:
                    by_future = {futures[i]: i for i in picks}
                    for f in cf.as_completed(by_future, timeout=LIVENESS):
                        check(by_future[f], f)
                else:
                    for i in picks:
                        futures[i].add_done_callback(on_done(i))
        except BaseException as exc:  # reported below; a dead waiter must fail the test
            errors.append(f"waiter {seed}: {exc!r}")

    def setter() -> None:
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            value = expect(i)
            if isinstance(value, BaseException):
                settle(futures[i], error=value)
            else:
                settle(futures[i], value)

    waiters = [_in_thread(lambda s=s: waiter(s)) for s in range(8)]
    _join(_in_thread(setter), *waiters)
    assert not errors, errors[:10]
    assert all(f.done() for f in futures)
    for i, f in enumerate(futures):
        check(i, f)
    with hits_lock:
        assert sum(callback_hits) > 0


# -- futures handed out by a running node ----------------------------------------------------------


class _Gate:
    """Shared by the state machines of a cluster: apply() of a command starting with b"hold"
    blocks until the gate opens, so a proposal can be kept unresolved for as long as needed."""

    def __init__(self) -> None:
        self.open = threading.Event()

    def machine(self) -> LogStateMachine:
        gate = self

        class Gated(LogStateMachine):
            def apply(self, index: int, command: bytes) -> object:
                if command.startswith(b"hold"):
                    assert gate.open.wait(LIVENESS), "gate never opened"
                return super().apply(index, command)

        return Gated()


@pytest.fixture
def gated(make_cluster) -> Iterator[tuple[object, _Gate]]:
    """(leader, gate) of a running 3-node cluster; the gate is opened at teardown."""
    gate = _Gate()
    cluster = make_cluster(3, state_machine=gate.machine)
    try:
        yield cluster.wait_for_leader(LIVENESS), gate
    finally:
        gate.open.set()


def test_node_futures_are_running_proposal_futures(gated):
    leader, gate = gated
    f = leader.propose(b"hold")
    assert isinstance(f, cf.Future) and isinstance(f, ProposalFuture)
    assert f.running() and not f.done()
    r = leader.read(lambda sm: len(sm.commands))
    assert isinstance(r, ProposalFuture)
    gate.open.set()
    index = f.result(LIVENESS)
    assert isinstance(index, int) and not f.running() and f.done()
    assert r.result(LIVENESS) >= 0


def test_node_future_timeouts_while_unresolved(gated):
    leader, gate = gated
    f = leader.propose(b"hold")
    with pytest.raises(TimeoutError):
        f.result(SHORT)
    with pytest.raises(TimeoutError):
        f.exception(SHORT)
    assert cf.wait([f], timeout=SHORT).not_done == {f}
    with pytest.raises(TimeoutError):
        list(cf.as_completed([f], timeout=SHORT))

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.wrap_future(f), SHORT)

    asyncio.run(main())
    gate.open.set()
    assert isinstance(f.result(LIVENESS), int)  # none of the timeouts spoiled it


def test_cancelling_a_proposal_returns_false_and_the_entry_commits(gated):
    """Decision: a proposal future cannot be cancelled.  Once propose() has returned, the command
    is on its way into the log and cannot be withdrawn, so the future is RUNNING: cancel()
    returns False, changes nothing, and the future still resolves to apply()'s result."""
    leader, gate = gated
    f = leader.propose(b"hold-cancel")
    seen: list[cf.Future] = []
    f.add_done_callback(seen.append)
    assert f.cancel() is False
    assert not f.cancelled() and f.running()
    gate.open.set()
    index = f.result(LIVENESS)
    assert (index, b"hold-cancel") in leader.state_machine.commands
    assert seen == [f] and not f.cancelled()
    # A read future is in flight the same way.
    r = leader.read(lambda sm: len(sm.commands))
    assert r.cancel() is False
    assert r.result(LIVENESS) >= 1


def test_node_callbacks_wait_and_as_completed(gated):
    leader, gate = gated
    held = [leader.propose(b"hold-%d" % i) for i in range(5)]
    early: list[tuple[cf.Future, str]] = []
    for f in held:
        f.add_done_callback(lambda g: early.append((g, threading.current_thread().name)))
    assert cf.wait(held, timeout=SHORT, return_when=cf.FIRST_COMPLETED).done == set()
    opener = threading.Timer(SHORT, gate.open.set)
    opener.start()
    try:
        done, not_done = cf.wait(held, timeout=LIVENESS)
    finally:
        opener.join(LIVENESS)
    assert done == set(held) and not not_done
    indexes = [f.result(0) for f in held]
    assert indexes == sorted(indexes) and len(set(indexes)) == 5
    assert {f for f, _ in early} == set(held)
    assert all(name.startswith("raft-") for _, name in early)  # called by the apply thread
    late: list[object] = []
    held[0].add_done_callback(lambda g: late.append(g.result(0)))  # after completion: at once
    assert late == [indexes[0]]

    more = [leader.propose(b"more-%d" % i) for i in range(50)]
    completed = list(cf.as_completed(more, timeout=LIVENESS))
    assert set(completed) == set(more)
    first = cf.wait(more, timeout=LIVENESS, return_when=cf.FIRST_COMPLETED)
    assert first.done


def test_node_wait_first_exception_with_a_failed_proposal(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    follower = next(n for n in cluster.nodes if n is not leader)
    refused = follower.propose(b"to a follower")
    assert isinstance(refused, ProposalFuture) and refused.done()
    assert isinstance(refused.exception(0), NotLeaderError)
    assert refused.cancel() is False
    ok = [leader.propose(b"ok-%d" % i) for i in range(10)]
    done, _ = cf.wait([*ok, refused], timeout=LIVENESS, return_when=cf.FIRST_EXCEPTION)
    assert refused in done
    done, not_done = cf.wait(ok, timeout=LIVENESS)
    assert not not_done


def test_node_futures_under_asyncio(gated):
    leader, gate = gated

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        held = asyncio.wrap_future(leader.propose(b"hold-async"))
        loop.call_later(SHORT, gate.open.set)
        first = await asyncio.wait_for(held, LIVENESS)
        direct = await asyncio.wait_for(leader.propose_async(b"direct"), LIVENESS)
        many = await asyncio.wait_for(asyncio.gather(
            *(asyncio.wrap_future(leader.propose(b"g-%d" % i)) for i in range(20))), LIVENESS)
        read = await asyncio.wait_for(leader.read_async(lambda sm: len(sm.commands)), LIVENESS)
        return [first, direct, many, read]

    first, direct, many, read = asyncio.run(main())
    assert first < direct < many[0] and many == sorted(many)
    assert read == 22


def test_node_futures_from_many_client_threads(make_cluster):
    """Client threads propose and wait concurrently, each with a different mechanism, while the
    apply thread settles their futures."""
    cluster = make_cluster(3)
    leader = cluster.wait_for_leader(LIVENESS)
    indexes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        try:
            futures = [leader.propose(b"c%d-%d" % (k, i)) for i in range(200)]
            if k % 4 == 0:
                got = [f.result(LIVENESS) for f in futures]
            elif k % 4 == 1:
                assert not cf.wait(futures, timeout=LIVENESS).not_done
                got = [f.result(0) for f in futures]
            elif k % 4 == 2:
                got = [f.result(0) for f in cf.as_completed(futures, timeout=LIVENESS)]
            else:
                async def gather() -> list[object]:
                    return await asyncio.wait_for(asyncio.gather(
                        *(asyncio.wrap_future(f) for f in futures)), LIVENESS)
                got = asyncio.run(gather())
            with lock:
                indexes.extend(got)
        except BaseException as exc:
            errors.append(f"client {k}: {exc!r}")

    _join(*[_in_thread(lambda k=k: client(k)) for k in range(8)])
    assert not errors, errors
    assert len(indexes) == len(set(indexes)) == 1600


def test_layout_guard_holds_on_this_interpreter() -> None:
    """The stdlib Future layout ProposalFuture relies on is the one this interpreter has, so
    nodes hand out the fast futures (on another layout they fall back to plain Futures)."""
    from engine.runtime.proposals import LAZY_FUTURES, ProposalFuture, new_future

    assert LAZY_FUTURES
    assert isinstance(new_future(running=True), ProposalFuture)
