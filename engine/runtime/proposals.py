"""Proposal futures, and the registry that holds them from propose() until apply.

Owner: the registry is shared by the loop thread (which registers futures, fails them on
leadership loss and, by default, resolves them as it applies), the apply thread (which resolves
them with ``Config.apply_thread``) and the halting thread; every access holds ``self._lock``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from typing import Any

from engine.errors import ProposalDropped
from engine.types import Entry, EntryKind, Index, Term

_DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_NORMAL = EntryKind.NORMAL  # hoisted: an IntEnum class attribute lookup costs ~0.1 us in 3.11

# Guards every ProposalFuture that has no Condition yet (see ProposalFuture).  A leaf lock held
# only for a few attribute reads and writes (or one list append): nothing that holds it allocates
# GC-tracked objects, takes another lock, calls user code or formats a repr.
_CONDITIONLESS_LOCK = threading.Lock()


class ProposalFuture(Future):
    """A :class:`concurrent.futures.Future` that builds its Condition only when someone needs it.

    Why it exists: ``Future()`` builds a ``threading.Condition`` around an ``RLock`` (about 1 us
    of CPU), and set_result()/result() each take it.  The engine creates, settles and reads one
    future per proposal, and at saturation that was a large share of its CPU per commit.  Yet
    nobody ever blocks on most proposal futures: they are settled before their owner looks.

    What it guarantees: it *is* a ``concurrent.futures.Future`` and behaves like one for its
    users: result/exception with or without a timeout (TimeoutError on timeout), done, cancel,
    cancelled, running, add_done_callback (called at once when added after completion),
    set_running_or_notify_cancel, set_result/set_exception (InvalidStateError once done),
    ``concurrent.futures.wait``/``as_completed`` (which take each future's ``_condition`` and
    use its ``_waiters``) and ``asyncio.wrap_future``.  Base-class code that touches
    ``_condition`` gets one, built on first access; every path that may block, notify or
    cancel is the unmodified base-class method.

    Thread safety.  ``_cond`` goes from None to a Condition once, while holding the module-wide
    ``_CONDITIONLESS_LOCK``, and never changes again.  That decides which lock guards the
    future's state, result, exception and callback list:

    * while ``_cond`` is None, ``_CONDITIONLESS_LOCK``: the fast paths (set_result,
      set_exception, add_done_callback) re-check ``_cond is None`` under it before they mutate,
      so they are ordered wholly before or wholly after the creation of the Condition.  Nobody
      can be blocked on such a future (blocking is ``Condition.wait``) and no ``wait()`` or
      ``as_completed()`` waiter can be on it (they are added to ``_waiters`` while holding
      ``_condition``), so completing it needs no notification;
    * once ``_cond`` exists, the Condition, held by the base-class methods the slow paths call.

    Lock-free reads (done, cancelled, running, cancel of a RUNNING or FINISHED future, result
    and exception of a FINISHED one) read the single attribute ``_state``: FINISHED and
    CANCELLED are terminal, RUNNING can only become FINISHED, and ``_result``/``_exception``
    is written before ``_state`` becomes FINISHED (CPython attribute stores are not reordered
    under the GIL).  ``_CONDITIONLESS_LOCK`` is a leaf lock, so ``wait()`` building the
    conditions of its futures one after another while holding the previous ones cannot
    deadlock.  The Condition is the same RLock-based one as the base class's, so ``wait()``
    calling ``cancelled()``/``exception()`` while it holds ``_condition`` is still fine.

    ``running=True`` creates the future already RUNNING, as an executor's future is once its
    work has started: cancel() then returns False.  The engine hands out proposal and read
    futures that way, because a request already handed to the node cannot be withdrawn.
    """

    def __init__(self, *, running: bool = False) -> None:  # no super().__init__(): no Condition
        self._cond: threading.Condition | None = None
        self._state = RUNNING if running else PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future], object]] = []

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            # Built outside the lock: an allocation may run the garbage collector, hence
            # arbitrary finalizers, which must not find the (non-reentrant) lock held.
            new = threading.Condition()
            with _CONDITIONLESS_LOCK:
                cond = self._cond
                if cond is None:
                    cond = self._cond = new
        return cond

    def cancel(self) -> bool:
        if self._state in (RUNNING, FINISHED):  # terminal or can only become FINISHED
            return False
        return super().cancel()

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def result(self, timeout: float | None = None) -> Any:
        if self._state == FINISHED:
            if self._exception:
                try:
                    raise self._exception
                finally:
                    self = None  # type: ignore[assignment]  # break the cycle, as the base does
            return self._result
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def add_done_callback(self, fn: Callable[[Future], object]) -> None:
        if self._state not in _DONE_STATES:
            with _CONDITIONLESS_LOCK:
                if self._cond is None and self._state not in _DONE_STATES:
                    self._done_callbacks.append(fn)
                    return
            if self._cond is not None:
                super().add_done_callback(fn)
                return
        try:  # done: call it now, as the base class does
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def set_result(self, result: Any) -> None:
        with _CONDITIONLESS_LOCK:
            fast = self._cond is None and self._state not in _DONE_STATES
            if fast:
                self._result = result
                self._state = FINISHED
        if not fast:
            super().set_result(result)  # under the Condition; raises InvalidStateError if done
        elif self._done_callbacks:
            self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        with _CONDITIONLESS_LOCK:
            fast = self._cond is None and self._state not in _DONE_STATES
            if fast:
                self._exception = exception
                self._state = FINISHED
        if not fast:
            super().set_exception(exception)
        elif self._done_callbacks:
            self._invoke_callbacks()


_EXPECTED_LAYOUT = {"_condition", "_state", "_result", "_exception", "_waiters",
                    "_done_callbacks"}
LAZY_FUTURES = set(vars(Future())) == _EXPECTED_LAYOUT
"""ProposalFuture relies on the private layout of CPython's Future (checked here, once).  On an
interpreter whose Future differs, new_future() hands out plain Futures instead: slower, never
wrong."""


def new_future(*, running: bool = False) -> Future:
    """A future for a proposal or read: a ProposalFuture when the stdlib layout is the one it
    was written against, else a plain Future (put in the RUNNING state when ``running``)."""
    if LAZY_FUTURES:
        return ProposalFuture(running=running)
    future: Future = Future()
    if running:
        future.set_running_or_notify_cancel()
    return future


def settle(future: Future | asyncio.Future, result: object = None,
           error: BaseException | None = None) -> None:
    """Complete ``future`` unless it is already done (e.g. cancelled by its owner).

    ``future`` is a concurrent Future (any thread) or an asyncio Future of the node's own loop
    (settled only on that loop's thread: see ``RaftNode.propose_async``)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except (InvalidStateError, asyncio.InvalidStateError):
        pass


class ProposalRegistry:
    """Futures keyed by log index, each remembering the term it was proposed in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Index, tuple[Term, Future]] = {}  # guarded by self._lock
        # Written by whoever resolves (the state machine's owner), read by metrics scrapes.
        self.committed = 0  # futures resolved with apply()'s result (or its exception)
        self.replaced = 0  # futures failed with ProposalDropped: their entry was replaced

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def approximate_len(self) -> int:
        """len() without the lock (one atomic dict read under the GIL): for back-pressure."""
        return len(self._pending)

    def register(self, first: Index, term: Term, futures: Sequence[Future]) -> None:
        """Futures for entries ``first, first + 1, ...`` proposed in ``term``."""
        with self._lock:
            pending = self._pending
            for offset, future in enumerate(futures):
                pending[first + offset] = (term, future)

    def resolve(self, entries: Sequence[Entry], results: Sequence[object],
                errors: Sequence[BaseException | None]) -> None:
        """Entries were applied with ``results``/``errors`` (parallel to ``entries``).

        A future whose entry was replaced by another term's entry fails with ProposalDropped.
        """
        if not self._pending:
            return
        with self._lock:
            pop = self._pending.pop
            done = [(pop(e.index, None), e, r, x) for e, r, x in zip(entries, results, errors,
                                                                       strict=True)]
        replaced = resolved = 0
        for item, entry, result, error in done:
            if item is None:
                continue
            term, future = item
            if term != entry.term or entry.kind != _NORMAL:
                replaced += 1
                settle(future, error=ProposalDropped(
                    f"entry {entry.index} of term {term} was replaced by one of term {entry.term}"))
            else:
                resolved += 1
                settle(future, result, error)
        self.committed += resolved
        if replaced:
            self.replaced += replaced

    def fail_after(self, index: Index, error: BaseException) -> int:
        """Fail every future for an index above ``index``; returns how many."""
        with self._lock:
            doomed = [i for i in self._pending if i > index]
            items = [self._pending.pop(i) for i in doomed]
        for _, future in items:
            settle(future, error=error)
        return len(items)
