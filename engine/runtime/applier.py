"""The apply thread: feeds committed entries to the state machine and completes futures.

Owner: the thread ``raft-<id>-apply`` owns the state machine and ``_parked_reads``; other threads
only put work on ``self._queue`` (a queue.SimpleQueue) and read ``last_applied`` (an int written
by the apply thread alone) or wait on ``self._applied_cond``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from engine.errors import NodeStopped
from engine.runtime.proposals import ProposalRegistry, settle
from engine.runtime.workers import join_thread, start_thread
from engine.statemachine import StateMachine
from engine.types import Entry, EntryKind, Index

logger = logging.getLogger(__name__)

ReadWaiter = tuple[Callable[[Any], Any], Future]
_STOP = object()


class Applier:
    """Applies committed entries in order, resolves proposal futures, serves released reads."""

    def __init__(self, node_id: str, state_machine: StateMachine, registry: ProposalRegistry,
                 on_progress: Callable[[], None] | None = None, applied: Index = 0) -> None:
        self._node_id = node_id
        self._state_machine = state_machine
        self._registry = registry
        self._on_progress = on_progress
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._parked_reads: list[tuple[Index, list[ReadWaiter]]] = []
        self._applied_cond = threading.Condition()
        self.last_applied: Index = applied
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the apply thread."""
        self._thread = start_thread(f"raft-{self._node_id}-apply", self._run)

    def submit_entries(self, entries: Sequence[Entry]) -> None:
        """Queue committed entries (in index order, following the previous batch)."""
        self._queue.put(entries)

    def submit_read(self, index: Index, waiters: list[ReadWaiter]) -> None:
        """Run each waiter's function once ``index`` is applied."""
        self._queue.put((index, waiters))

    def stop(self) -> None:
        """Stop after the work already queued; parked reads fail with NodeStopped."""
        self._queue.put(_STOP)
        join_thread(self._thread)
        for _, waiters in self._parked_reads:
            for _, future in waiters:
                settle(future, error=NodeStopped("node stopped before the read was served"))
        self._parked_reads.clear()

    def wait_applied(self, index: Index, timeout: float | None = None) -> bool:
        """Block until ``last_applied >= index``; False on timeout."""
        with self._applied_cond:
            return self._applied_cond.wait_for(lambda: self.last_applied >= index, timeout)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            if isinstance(item, tuple):
                index, waiters = item
                if index <= self.last_applied:
                    self._serve(waiters)
                else:
                    self._parked_reads.append((index, waiters))
                continue
            self._apply(item)
            if self._parked_reads:
                ready = [w for i, w in self._parked_reads if i <= self.last_applied]
                self._parked_reads = [(i, w) for i, w in self._parked_reads
                                      if i > self.last_applied]
                for waiters in ready:
                    self._serve(waiters)
            with self._applied_cond:
                self._applied_cond.notify_all()
            if self._on_progress is not None:
                self._on_progress()

    def _apply(self, entries: Sequence[Entry]) -> None:
        apply = self._state_machine.apply
        results: list[object] = []
        errors: list[BaseException | None] = []
        for entry in entries:
            if entry.kind == EntryKind.NORMAL:
                try:
                    results.append(apply(entry.index, entry.data))
                    errors.append(None)
                except Exception as exc:  # the user's bug: report it on the future, go on
                    logger.warning("%s: apply(%d) raised %r", self._node_id, entry.index, exc)
                    results.append(None)
                    errors.append(exc)
            else:
                results.append(None)
                errors.append(None)
        self.last_applied = entries[-1].index
        self._registry.resolve(entries, results, errors)

    def _serve(self, waiters: list[ReadWaiter]) -> None:
        for fn, future in waiters:
            try:
                result = fn(self._state_machine)
            except Exception as exc:
                settle(future, error=exc)
            else:
                settle(future, result)
