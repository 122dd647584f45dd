"""The applier: feeds committed entries to the state machine and completes futures.

Two modes, one code path (:meth:`Applier._process`):

* inline (the default): the node's loop thread owns the state machine.  Work is queued on
  ``self._work`` (a deque the loop thread alone touches) and the loop calls :meth:`run` with a
  deadline after each round, so a burst of slow ``apply()`` calls is spread over many loop
  iterations and never starves heartbeats (one ``apply()`` call is never interrupted);
* threaded (``Config.apply_thread``): the thread ``raft-<id>-apply`` owns the state machine and
  takes work from ``self._queue`` (a queue.SimpleQueue that the loop thread puts on).

Either way the work runs in submission order: entry batches, reads released at an index, a
snapshot to restore, a request to take a snapshot.  Other threads only read ``last_applied``
(an int written by the owner alone) or wait in :meth:`wait_applied` on ``self._applied_cond``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from engine.errors import NodeStopped
from engine.membership import Membership
from engine.runtime.proposals import ProposalRegistry, settle
from engine.runtime.telemetry import Telemetry
from engine.runtime.workers import join_thread, start_thread
from engine.statemachine import StateMachine
from engine.types import Entry, EntryKind, Index, SnapshotMeta

logger = logging.getLogger(__name__)

ReadWaiter = tuple[Callable[[Any], Any], Future]
SnapshotTaken = Callable[[SnapshotMeta, bytes, "Future | None"], None]
_STOP = object()
_SNAPSHOT_SAVED = object()  # queued by snapshot_saved(): re-check the automatic threshold
_NORMAL = EntryKind.NORMAL  # hoisted: an IntEnum class attribute lookup costs ~0.1 us in 3.11
_CONFIG = EntryKind.CONFIG
_clock = time.perf_counter
_BATCH_RUN = 512  # most commands handed to one apply_batch() call


@dataclass(frozen=True, slots=True)
class _Restore:
    meta: SnapshotMeta
    data: bytes


@dataclass(frozen=True, slots=True)
class _TakeSnapshot:
    future: Future | None


@dataclass(frozen=True, slots=True)
class _Read:
    index: Index
    waiters: list[ReadWaiter]


class Applier:
    """Applies committed entries in order, resolves proposal futures, serves released reads."""

    # Set by NodeLoop after construction; the apply/resolve stages are stamped by the owner of
    # the state machine (see the thread-safety rule in engine.runtime.telemetry).
    telemetry: Telemetry | None = None

    def __init__(self, node_id: str, state_machine: StateMachine, registry: ProposalRegistry,
                 *, threaded: bool = False,
                 on_progress: Callable[[], None] | None = None, applied: Index = 0,
                 applied_term: int = 0, membership: Membership | None = None,
                 snapshot_threshold: int = 0,
                 on_snapshot: SnapshotTaken | None = None) -> None:
        """``on_snapshot(meta, data, future)`` receives each snapshot taken (automatically every
        ``snapshot_threshold`` applied entries when non-zero, or on request); it is called by
        the owner of the state machine and must hand the slow work (encoding, writing) to
        another thread.  ``on_progress()`` is called after each slice of applied work."""
        self._node_id = node_id
        self._state_machine = state_machine
        self._registry = registry
        self._on_progress = on_progress
        self._threaded = threaded
        self._apply_batch: Callable[[int, list[bytes]], Sequence[object]] | None = getattr(
            state_machine, "apply_batch", None)
        # Inline mode: owned by the loop thread.  Threaded mode: the loop thread puts, the
        # apply thread takes.
        self._work: deque[Any] = deque()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Owned by whoever owns the state machine (the loop thread, or the apply thread):
        self._parked_reads: list[_Read] = []
        self._last_applied_term = applied_term
        # The configuration in force at last_applied: what a snapshot taken here records.
        self._membership = membership if membership is not None else Membership()
        self._snapshot_threshold = snapshot_threshold
        self._on_snapshot = on_snapshot
        self._last_snapshot_index = applied
        # Written by the owner of the state machine alone; read by any thread.
        self.last_applied: Index = applied
        # Set by the owner when it hands a snapshot off, cleared by snapshot_saved() from the
        # thread that made it durable: one writer each way, a plain bool under the GIL.
        self._snapshot_in_flight = False
        # Guarded by self._applied_cond: _stopped releases wait_applied() callers; _waiters
        # counts them, so that the owner notifies only when somebody waits (it reads the count
        # without the lock after writing last_applied; a waiter increments it before reading
        # last_applied, so one of the two always sees the other's write).
        self._applied_cond = threading.Condition()
        self._stopped = False
        self._waiters = 0
        self._thread: threading.Thread | None = None

    @property
    def threaded(self) -> bool:
        """True when the state machine runs on the ``raft-<id>-apply`` thread."""
        return self._threaded

    def start(self) -> None:
        """Start the apply thread (threaded mode; nothing to do inline)."""
        if self._threaded:
            self._thread = start_thread(f"raft-{self._node_id}-apply", self._run_thread)

    # -- submitting work (the loop thread) -------------------------------------------------------

    def _submit(self, item: object) -> None:
        if self._threaded:
            self._queue.put(item)
        else:
            self._work.append(item)

    def submit_entries(self, entries: Sequence[Entry]) -> None:
        """Queue committed entries (in index order, following the previous batch)."""
        self._submit(entries)

    def submit_read(self, index: Index, waiters: list[ReadWaiter]) -> None:
        """Run each waiter's function once ``index`` is applied."""
        self._submit(_Read(index, waiters))

    def submit_restore(self, meta: SnapshotMeta, data: bytes) -> None:
        """Replace the state machine with a snapshot (ordered with the entries around it)."""
        self._submit(_Restore(meta, data))

    def request_snapshot(self, future: Future | None) -> None:
        """Take a snapshot at the next consistent point; ``future`` gets its index once saved."""
        self._submit(_TakeSnapshot(future))

    def snapshot_saved(self) -> None:
        """The snapshot handed off last is durable; automatic snapshots may resume (loop thread
        in inline mode; any thread in threaded mode).

        The owner then checks the threshold again: entries applied while the snapshot was being
        written may already call for the next one, and no further entry may come to trigger it
        (an idle cluster would keep an uncompacted log)."""
        self._snapshot_in_flight = False
        self._submit(_SNAPSHOT_SAVED)

    @property
    def has_work(self) -> bool:
        """Inline mode: work is queued for :meth:`run`."""
        return bool(self._work)

    def run(self, budget: float) -> bool:
        """Inline mode (loop thread): process queued work for about ``budget`` seconds; returns
        True when work is left for another call."""
        work = self._work
        if not work:
            return False
        deadline = _clock() + budget
        while work:
            item = work[0]
            rest = self._process(item, deadline)
            if rest is None:
                work.popleft()
            else:
                work[0] = rest
            if _clock() >= deadline:
                break
        self._after_progress()
        return bool(work)

    def stop(self, error: BaseException | None = None) -> None:
        """Stop (after the work already queued, in threaded mode); reads and snapshot requests
        still waiting fail with ``error`` (NodeStopped by default).  Inline mode: called once
        the loop thread is gone."""
        if self._threaded:
            self._queue.put(_STOP)
            join_thread(self._thread)
        with self._applied_cond:
            self._stopped = True
            self._applied_cond.notify_all()
        for item in list(self._work):
            if isinstance(item, _Read):
                for _, future in item.waiters:
                    settle(future, error=error or NodeStopped(
                        "node stopped before the read was served"))
            elif isinstance(item, _TakeSnapshot) and item.future is not None:
                settle(item.future, error=error or NodeStopped("node stopped before the snapshot"))
        self._work.clear()
        for read in self._parked_reads:
            for _, future in read.waiters:
                settle(future, error=error or NodeStopped(
                    "node stopped before the read was served"))
        self._parked_reads.clear()

    def wait_applied(self, index: Index, timeout: float | None = None) -> bool:
        """Block until ``last_applied >= index``; False on timeout or once stopped short of it."""
        with self._applied_cond:
            self._waiters += 1
            try:
                self._applied_cond.wait_for(lambda: self.last_applied >= index or self._stopped,
                                            timeout)
            finally:
                self._waiters -= 1
            return self.last_applied >= index

    # -- the owner of the state machine ----------------------------------------------------------

    def _run_thread(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            self._process(item, None)
            self._after_progress()

    def _after_progress(self) -> None:
        if self._parked_reads:
            applied = self.last_applied
            ready = [r for r in self._parked_reads if r.index <= applied]
            if ready:
                self._parked_reads = [r for r in self._parked_reads if r.index > applied]
                for read in ready:
                    self._serve(read.waiters)
        if self._waiters:
            with self._applied_cond:
                self._applied_cond.notify_all()
        if self._on_progress is not None:
            self._on_progress()

    def _process(self, item: Any, deadline: float | None) -> Any:
        """Do one queued item; returns what is left of it (a part of an entry batch) when the
        deadline passed first, else None."""
        if type(item) is list or isinstance(item, Sequence):
            return self._apply(item, deadline)
        if isinstance(item, _Read):
            if item.index <= self.last_applied:
                self._serve(item.waiters)
            else:
                self._parked_reads.append(item)
        elif isinstance(item, _TakeSnapshot):
            self._take_snapshot(item.future)
        elif item is _SNAPSHOT_SAVED:
            self._maybe_snapshot()
        elif isinstance(item, _Restore):
            self._state_machine.restore(item.data)
            if not item.meta.membership.is_empty:
                self._membership = item.meta.membership
            self.last_applied = item.meta.index
            self._last_applied_term = item.meta.term
            self._last_snapshot_index = item.meta.index
            logger.info("%s: state machine restored from snapshot %d", self._node_id,
                        item.meta.index)
        return None

    def _apply(self, entries: Sequence[Entry], deadline: float | None) -> Sequence[Entry] | None:
        """Apply a prefix of ``entries`` (all of them unless ``deadline`` passes first) and
        resolve their futures; returns the rest, or None."""
        results: list[object] = []
        errors: list[BaseException | None] = []
        count = len(entries)
        position = 0
        while position < count:
            entry = entries[position]
            if entry.kind != _NORMAL:
                if entry.kind == _CONFIG:
                    self._membership = Membership.decode(entry.data)
                results.append(None)
                errors.append(None)
                position += 1
            elif self._apply_batch is not None:
                position = self._apply_run(entries, position, results, errors)
            else:
                try:
                    results.append(self._state_machine.apply(entry.index, entry.data))
                    errors.append(None)
                except Exception as exc:  # the user's bug: report it on the future, go on
                    logger.warning("%s: apply(%d) raised %r", self._node_id, entry.index, exc)
                    results.append(None)
                    errors.append(exc)
                position += 1
            if deadline is not None and _clock() >= deadline:
                break
        done = entries[:position] if position < count else entries
        self.last_applied = done[-1].index
        self._last_applied_term = done[-1].term
        telemetry = self.telemetry
        if telemetry is not None and telemetry.sample is not None:
            telemetry.stamp(5, done[-1].index)
            self._registry.resolve(done, results, errors)
            telemetry.stamp(6, done[-1].index)
        else:
            self._registry.resolve(done, results, errors)
        self._maybe_snapshot()
        return entries[position:] if position < count else None

    def _apply_run(self, entries: Sequence[Entry], start: int, results: list[object],
                   errors: list[BaseException | None]) -> int:
        """``apply_batch`` over the run of consecutive user entries from ``start`` (at most
        ``_BATCH_RUN`` of them, so a deadline is checked between runs); returns where the run
        ended.  An exception from ``apply_batch`` becomes the result of every entry of the run."""
        end = start + 1
        limit = min(len(entries), start + _BATCH_RUN)
        previous = entries[start].index
        while end < limit:
            entry = entries[end]
            if entry.kind != _NORMAL or entry.index != previous + 1:
                break
            previous = entry.index
            end += 1
        run = entries[start:end]
        assert self._apply_batch is not None
        try:
            values = list(self._apply_batch(run[0].index, [e.data for e in run]))
            if len(values) != len(run):
                raise TypeError(f"apply_batch returned {len(values)} results for "
                                f"{len(run)} commands")
        except Exception as exc:  # the user's bug: report it on every future of the run
            logger.warning("%s: apply_batch(%d, %d commands) raised %r", self._node_id,
                           run[0].index, len(run), exc)
            results.extend([None] * len(run))
            errors.extend([exc] * len(run))
        else:
            results.extend(values)
            errors.extend([None] * len(run))
        return end

    def _take_snapshot(self, future: Future | None) -> None:
        if self._on_snapshot is None or self.last_applied == 0:
            if future is not None:
                settle(future, self._last_snapshot_index)
            return
        data = self._state_machine.snapshot()
        meta = SnapshotMeta(self.last_applied, self._last_applied_term, self._membership)
        self._last_snapshot_index = meta.index
        self._snapshot_in_flight = True
        self._on_snapshot(meta, data, future)

    def _maybe_snapshot(self) -> None:
        """Take the automatic snapshot once ``snapshot_threshold`` entries were applied since
        the last one, unless one is still being written (snapshot_saved() re-checks)."""
        if (self._snapshot_threshold and not self._snapshot_in_flight
                and self.last_applied - self._last_snapshot_index >= self._snapshot_threshold):
            self._take_snapshot(None)

    def _serve(self, waiters: list[ReadWaiter]) -> None:
        for fn, future in waiters:
            try:
                result = fn(self._state_machine)
            except Exception as exc:
                settle(future, error=exc)
            else:
                settle(future, result)
