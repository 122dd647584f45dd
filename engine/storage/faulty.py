"""A disk that fails, stalls, forgets and rots: fault-injecting wrappers around any
:class:`~engine.storage.base.LogStore` and :class:`~engine.storage.base.StableStore`.

For tests, the simulator and fault campaigns.  One :class:`DiskFaults` controller stands for one
node's disk; the :class:`FaultyLogStore` and :class:`FaultyStableStore` attached to it (usually
wrapping the memory stores) consult it on every write::

    disk = DiskFaults("n1")
    log = FaultyLogStore(MemoryLogStore(), disk)
    stable = FaultyStableStore(MemoryStableStore(), disk)
    node = RaftNode(..., log_store=log, stable_store=stable)
    disk.fail_next("sync", errno.EIO)          # the next fdatasync fails
    ...
    node.crash()
    log, stable = crash_stores(log, stable)    # what the disk holds after a power cut

What is modelled:

* **I/O errors** (:meth:`DiskFaults.fail_next`, :meth:`DiskFaults.fail_always`): ``append``,
  ``sync`` (the log's fdatasync) and ``save`` (the hard state's write) raise
  :class:`~engine.errors.StorageError` with ``.errno`` set and the errno named in the message,
  as the native and file stores do.  A failed append or save changes nothing.  A failed sync
  *poisons* the log store, as the real stores do after a failed fsync (the kernel may have
  dropped the dirty pages, so a retry could report success for data that is gone): every later
  write or sync raises StorageError until the store is reopened (:meth:`FaultyLogStore.crash`),
  and the writes that sync covered are lost (they never reach the durable image).
* **A stalled disk** (:meth:`DiskFaults.stall_sync` / :meth:`DiskFaults.release_sync`): log
  syncs and hard-state saves block, waiting on the controller's condition (never a sleep),
  until released or until their store is crashed.  :attr:`DiskFaults.flushes_waiting` and
  :meth:`DiskFaults.wait_for_stalled` make the stall observable.
* **Crashes** (:meth:`FaultyLogStore.crash`, :meth:`FaultyStableStore.crash`,
  :func:`crash_stores`): the wrapper tracks the *durable image*, the log as of the last
  completed sync.  Every write -- append, truncate_suffix, compact_prefix, reset -- is visible
  at once and durable only once a later ``sync()`` completes (the contract of
  :mod:`engine.storage.base`).  So a crash loses unsynced appends and also *undoes* unsynced
  truncations, compactions and resets (the old entries reappear).  The disk stores with fsync
  on make those structural changes durable at once; undoing them is the stricter model and is
  safe for Raft, which acknowledges nothing before a sync.  With an ``rng``, a random prefix of
  the unsynced writes survives instead (the page cache flushed some of them before the power
  cut; writes reach the disk in order, as the real stores' recovery assumes).  ``torn=True``
  then drops the newest record that survived, as the recovery of a torn last record does; when
  nothing unsynced survived that is a record a completed sync had made durable (a disk that
  lied about its flush), which :attr:`FaultyLogStore.synced_index_at_open` of the new store
  reveals.  The hard state keeps the last completed save (saves are atomic).
* **Rot** of durable data on a store at rest (no unsynced writes, e.g. the one ``crash()``
  returned): :meth:`FaultyLogStore.lose_tail` (the newest entries vanish, as when recovery
  truncated a damaged tail) and :meth:`FaultyLogStore.drop_range` (entries in the middle become
  unreadable: :meth:`~FaultyLogStore.entries` and :meth:`~FaultyLogStore.term_at` raise
  :class:`~engine.errors.CorruptLogError` for them, so a node fails to start on such a log, as
  it does when the native store finds a corrupt record before its tail).  Damage of real files
  is :mod:`engine.storage.damage`.

Everything is deterministic: randomness only through an explicit :class:`random.Random`.

Thread-safety: one lock per disk, ``DiskFaults._cond`` (a :class:`threading.Condition` over
an RLock, declared in :meth:`DiskFaults.__init__`), guards the controller's fields and the
tracking state of every store attached to it; every method of those stores takes it, and calls
the wrapped store under it (a wrapped store must not call back).  So tests and the simulator
may drive the controller, inspect a store or crash it from any thread while the node's thread
writes.  A flush that waits on a stall releases the lock while it waits.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import random
import threading
from collections.abc import Callable, Sequence

from engine.errors import CorruptLogError, StorageError
from engine.storage.base import LogStore, StableStore
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.types import Entry, HardState, Index, Term

__all__ = ["OPS", "DiskFaults", "FaultyLogStore", "FaultyStableStore", "crash_stores"]

logger = logging.getLogger(__name__)

OPS = ("append", "sync", "save")
"""The operations that can be made to fail: log append, log sync, hard-state save."""

_Op = tuple[str, object]  # ("append", tuple of entries) | ("truncate" | "compact" | "reset", index)
_Range = tuple[Index, Index]  # [lo, hi)


def _injected_error(err: int, what: str, source: str) -> StorageError:
    """The StorageError a real store raises for ``err`` during ``what`` (errno named, kept)."""
    exc = StorageError(
        f"{what}: {os.strerror(err)} ({errno_mod.errorcode.get(err, err)}, injected by {source})")
    exc.errno = err  # type: ignore[attr-defined]
    return exc


class DiskFaults:
    """The fault controller of one simulated disk, shared by the stores attached to it.

    ``calls[op]`` counts the attempts of each operation, ``injected[op]`` the failures injected.
    """

    def __init__(self, name: str = "disk") -> None:
        self.name = name
        # THE lock of this disk: guards every field below and the tracking state of every
        # FaultyLogStore / FaultyStableStore attached to this controller.  Reentrant, so a
        # store can build its successor (crash) while holding it.
        self._cond = threading.Condition(threading.RLock())
        self._next: dict[str, list[int]] = {op: [] for op in OPS}  # one-shot errnos, in order
        self._always: dict[str, int] = {}
        self._stalled = False
        self._waiting = 0
        self.stalled_total = 0
        """Flushes that ever had to wait on a stall."""
        self.calls: dict[str, int] = dict.fromkeys(OPS, 0)
        self.injected: dict[str, int] = dict.fromkeys(OPS, 0)

    @staticmethod
    def _check(op: str, errno: int, count: int = 1) -> None:
        if op not in OPS:
            raise ValueError(f"op={op!r} must be one of {OPS}")
        if errno not in errno_mod.errorcode:
            raise ValueError(f"errno={errno!r} is not an errno value (e.g. errno.EIO, ENOSPC)")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count={count!r} must be an int >= 1")

    def fail_next(self, op: str, errno: int = errno_mod.EIO, *, count: int = 1) -> None:
        """Make the next ``count`` calls of ``op`` ("append", "sync" or "save") fail with
        ``errno`` (after any one-shot failures already queued)."""
        self._check(op, errno, count)
        with self._cond:
            self._next[op].extend([errno] * count)

    def fail_always(self, op: str, errno: int = errno_mod.EIO) -> None:
        """Make every call of ``op`` fail with ``errno`` until :meth:`clear` (a dead or full
        disk)."""
        self._check(op, errno)
        with self._cond:
            self._always[op] = errno

    def clear(self, op: str | None = None) -> None:
        """Stop injecting failures into ``op`` (every operation when None)."""
        with self._cond:
            for name in OPS if op is None else (op,):
                self._next[name].clear()
                self._always.pop(name, None)

    def stall_sync(self) -> None:
        """From now on, log syncs and hard-state saves block until :meth:`release_sync`."""
        with self._cond:
            self._stalled = True

    def release_sync(self) -> None:
        """End the stall: waiting flushes go on.  Idempotent."""
        with self._cond:
            self._stalled = False
            self._cond.notify_all()

    @property
    def stalled(self) -> bool:
        """True while flushes stall."""
        with self._cond:
            return self._stalled

    @property
    def flushes_waiting(self) -> int:
        """Syncs and saves blocked on the stall right now."""
        with self._cond:
            return self._waiting

    def wait_for_stalled(self, count: int = 1, timeout: float | None = None) -> bool:
        """Wait until at least ``count`` flushes are blocked on the stall; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._waiting >= count, timeout)

    # --- used by the stores, with self._cond held ---------------------------------------------

    def _take(self, op: str) -> int | None:
        """Count a call of ``op``; the errno it must fail with, or None."""
        self.calls[op] += 1
        queued = self._next[op]
        err = queued.pop(0) if queued else self._always.get(op)
        if err is not None:
            self.injected[op] += 1
        return err

    def _await_release(self, abandoned: Callable[[], bool]) -> None:
        """Block while stalled, unless or until ``abandoned()`` (the store crashed)."""
        if not self._stalled or abandoned():
            return
        self._waiting += 1
        self.stalled_total += 1
        self._cond.notify_all()
        try:
            while self._stalled and not abandoned():
                self._cond.wait()
        finally:
            self._waiting -= 1
            self._cond.notify_all()


def _copy_log(store: LogStore) -> MemoryLogStore:
    """A memory log store holding the same entries as ``store`` (and the same first index)."""
    out = MemoryLogStore()
    first, last = store.first_index(), store.last_index()
    if first != 1:
        out.reset(first)
    if last >= first:
        out.append(store.entries(first, last + 1))
    return out


def _clip(ranges: list[_Range], lo: Index, hi: Index) -> list[_Range]:
    """Each range intersected with ``[lo, hi)``, the empty ones dropped."""
    out = []
    for a, b in ranges:
        a, b = max(a, lo), min(b, hi)
        if a < b:
            out.append((a, b))
    return out


def _apply(log: MemoryLogStore, holes: list[_Range], op: _Op) -> list[_Range]:
    """Replay one recorded write on ``log``; returns the damaged ranges that remain."""
    kind, arg = op
    if kind == "append":
        entries: tuple[Entry, ...] = arg  # type: ignore[assignment]
        start = entries[0].index
        if start < log.first_index():  # it rewrote entries this image had compacted away
            log.reset(start)
        log.append(entries)
        return _clip(holes, log.first_index(), start)
    index: Index = arg  # type: ignore[assignment]
    if kind == "truncate":
        log.truncate_suffix(index)
        return _clip(holes, log.first_index(), index)
    if kind == "compact":  # index: the first index the store had left
        log.compact_prefix(index - 1)
        return _clip(holes, log.first_index(), log.last_index() + 1)
    log.reset(index)
    return []


class _FaultyStore:
    """What both faulty stores share: the wrapped store, the controller and its lock, and the
    life cycle (open -> closed and/or crashed).  ``kind`` names the store in messages."""

    kind = "store"

    def __init__(self, inner: LogStore | StableStore, faults: DiskFaults | None,
                 name: str) -> None:
        self.faults = faults if faults is not None else DiskFaults()
        self.name = name
        self._lock = self.faults._cond
        self._inner = inner
        self._gone: str | None = None  # guarded by self._lock: "closed" or "crashed"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.faults.name}>"

    def _check_open(self) -> None:
        """Raise StorageError once closed or crashed (lock held)."""
        if self._gone == "crashed":
            raise StorageError(f"{self.kind} store {self.name} is gone: its disk crashed (use "
                               "the store that crash() returned)")
        if self._gone is not None:
            raise StorageError(f"{self.kind} store {self.name} is closed")

    def _flush_wait(self) -> None:
        """Wait out a stall of the disk, then check the store is still there (lock held)."""
        self._check_open()
        self.faults._await_release(lambda: self._gone is not None)
        self._check_open()

    def _retire(self) -> None:
        """Mark this store crashed and wake its stalled flushes (lock held)."""
        if self._gone == "crashed":
            raise StorageError(f"{self.kind} store {self.name} has already crashed")
        self._gone = "crashed"
        self._lock.notify_all()

    def close(self) -> None:
        """Close the wrapped store; what is durable stays for ``crash()``.  Idempotent."""
        with self._lock:
            if self._gone is None:
                self._gone = "closed"
                self._inner.close()

    def __enter__(self) -> _FaultyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaultyLogStore(_FaultyStore):
    """A :class:`~engine.storage.base.LogStore` that forwards to ``inner`` (a fresh
    :class:`~engine.storage.memory.MemoryLogStore` when None) and injects the faults of
    ``faults`` (a controller of its own when None); see the module docstring.

    Whatever ``inner`` holds when wrapped counts as durable.  ``synced_index_at_open`` is what
    :attr:`synced_index_at_open` reports (default: ``inner``'s own, else its last index).

    Not a :class:`~engine.storage.base.BackgroundSync`, even over the native store: syncs run
    on the caller's thread (the runtime's inline or storage-thread mode), so a stalled sync
    blocks that thread, as a stalled fdatasync does.
    """

    kind = "log"

    def __init__(self, inner: LogStore | None = None, faults: DiskFaults | None = None, *,
                 name: str = "log", synced_index_at_open: Index | None = None) -> None:
        self.inner: LogStore = inner if inner is not None else MemoryLogStore()
        super().__init__(self.inner, faults, name)
        with self._lock:
            # Guarded by self._lock.  _durable: the log as of the last completed sync;
            # _pending: the writes since, in order; _holes / _durable_holes: damaged ranges of
            # the visible log and of the durable image.
            self._durable = _copy_log(self.inner)
            self._pending: list[_Op] = []
            self._holes: list[_Range] = []
            self._durable_holes: list[_Range] = []
            self._poisoned: StorageError | None = None
            if synced_index_at_open is None:
                synced_index_at_open = getattr(self.inner, "synced_index_at_open", None)
            if synced_index_at_open is None:
                synced_index_at_open = self.inner.last_index()
            self._synced_at_open: Index = synced_index_at_open

    # --- state checks (self._lock held) -----------------------------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self._poisoned is not None:
            exc = StorageError(f"log store {self.name} is unusable after a failed fsync "
                               f"({self._poisoned}); reopen it to recover what is on disk")
            exc.errno = getattr(self._poisoned, "errno", None)  # type: ignore[attr-defined]
            raise exc

    def _check_at_rest(self, what: str) -> None:
        self._check_open()
        if self._pending or self._poisoned is not None:
            raise ValueError(f"{what}: {self.name} has unsynced writes; sync() it, or damage "
                             "the store that crash() returns")

    def _check_readable(self, lo: Index, hi: Index) -> None:
        for a, b in self._holes:
            if a < hi and lo < b:
                raise CorruptLogError(
                    f"corrupt log: entries [{a}, {b}) of {self.name} are damaged "
                    f"(injected by {self.faults.name})")

    # --- LogStore ---------------------------------------------------------------------------

    def first_index(self) -> Index:
        with self._lock:
            self._check_open()
            return self.inner.first_index()

    def last_index(self) -> Index:
        with self._lock:
            self._check_open()
            return self.inner.last_index()

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        """As the protocol; CorruptLogError when ``[lo, hi)`` touches a damaged range."""
        with self._lock:
            self._check_open()
            self._check_readable(lo, hi)
            return self.inner.entries(lo, hi)

    def term_at(self, index: Index) -> Term:
        """As the protocol; CorruptLogError for an entry in a damaged range."""
        with self._lock:
            self._check_open()
            self._check_readable(index, index + 1)
            return self.inner.term_at(index)

    def append(self, entries: Sequence[Entry]) -> None:
        """As the protocol; an injected failure raises StorageError and writes nothing."""
        if not entries:
            return
        with self._lock:
            self._check_writable()
            start = entries[0].index
            err = self.faults._take("append")
            if err is not None:
                raise _injected_error(
                    err, f"cannot append {len(entries)} entries at index {start} to {self.name}",
                    self.faults.name)
            self.inner.append(entries)
            self._pending.append(("append", tuple(entries)))
            self._holes = _clip(self._holes, self.inner.first_index(), start)

    def truncate_suffix(self, index: Index) -> None:
        """As the protocol; durable at the next completed sync (a crash before undoes it)."""
        with self._lock:
            self._check_writable()
            if index > self.inner.last_index():
                return
            self.inner.truncate_suffix(index)
            self._pending.append(("truncate", index))
            self._holes = _clip(self._holes, self.inner.first_index(), index)

    def compact_prefix(self, index: Index) -> None:
        """As the protocol; durable at the next completed sync (a crash before undoes it)."""
        with self._lock:
            self._check_writable()
            before = self.inner.first_index()
            self.inner.compact_prefix(index)
            first = self.inner.first_index()
            if first != before:
                self._pending.append(("compact", first))
                self._holes = _clip(self._holes, first, self.inner.last_index() + 1)

    def reset(self, next_index: Index) -> None:
        """As the protocol; durable at the next completed sync (a crash before undoes it)."""
        with self._lock:
            self._check_writable()
            self.inner.reset(next_index)
            self._pending.append(("reset", next_index))
            self._holes = []

    def sync(self) -> None:
        """Make every earlier write durable: wait out a stall, then fail (poisoning the store
        and losing the writes since the last sync) or move them into the durable image.

        Raises:
            StorageError: an injected or real flush failure; the store is poisoned.  Also when
                the store crashed while this sync waited on a stall (nothing became durable).
        """
        with self._lock:
            self._check_writable()
            self._flush_wait()
            self._check_writable()
            err = self.faults._take("sync")
            try:
                if err is not None:
                    raise _injected_error(
                        err, f"fdatasync of {self.name} failed; the log must be reopened",
                        self.faults.name)
                self.inner.sync()
            except StorageError as exc:
                self._poisoned = exc
                logger.warning("%s: sync failed, %d unsynced writes lost: %s", self.name,
                               len(self._pending), exc)
                self._pending = []
                raise
            holes = self._durable_holes
            for op in self._pending:
                holes = _apply(self._durable, holes, op)
            self._durable_holes = holes
            self._pending = []

    # --- the extras ---------------------------------------------------------------------------

    @property
    def synced_index_at_open(self) -> Index:
        """The last index that was durable (made so by a completed sync) when this store's disk
        last crashed -- what a durable sync mark would say.  When the log now ends before it,
        durable entries were lost (a torn or damaged tail, a deleted segment)."""
        with self._lock:
            return self._synced_at_open

    @property
    def synced_index(self) -> Index:
        """The last index of the durable image now (as of the last completed sync)."""
        with self._lock:
            return self._durable.last_index()

    @property
    def unsynced_writes(self) -> int:
        """Writes made since the last completed sync (lost by a crash now)."""
        with self._lock:
            return len(self._pending)

    @property
    def poisoned(self) -> bool:
        """True after a failed sync, until the store is reopened (:meth:`crash`)."""
        with self._lock:
            return self._poisoned is not None

    @property
    def damaged(self) -> list[tuple[Index, Index]]:
        """The damaged ``[lo, hi)`` ranges of the visible log."""
        with self._lock:
            return list(self._holes)

    def durable_entries(self) -> list[Entry]:
        """The entries a crash now would keep (without ``rng`` or ``torn``)."""
        with self._lock:
            first, last = self._durable.first_index(), self._durable.last_index()
            return self._durable.entries(first, last + 1)

    def crash(self, *, torn: bool = False, rng: random.Random | None = None) -> FaultyLogStore:
        """A power cut, then a reopen: a new store on the same controller, over a memory store
        holding the durable image (see the module docstring for ``torn`` and ``rng``), with
        :attr:`synced_index_at_open` the last index durable before the cut.

        This store is retired: every later call raises StorageError, and a sync waiting on a
        stall wakes and raises.  The controller's failure switches stay as they are.

        Raises:
            StorageError: this store was already crashed.
        """
        with self._lock:
            self._retire()
            image = _copy_log(self._durable)
            holes = list(self._durable_holes)
            synced = image.last_index()
            pending = self._pending
            kept = 0
            if rng is not None and pending:
                kept = rng.randint(0, len(pending))
                for op in pending[:kept]:
                    holes = _apply(image, holes, op)
                if kept < len(pending) and pending[kept][0] == "append":
                    entries: tuple[Entry, ...] = pending[kept][1]  # type: ignore[assignment]
                    part = rng.randint(0, len(entries))
                    if part:
                        holes = _apply(image, holes, ("append", entries[:part]))
            if torn and image.last_index() >= image.first_index():
                holes = _apply(image, holes, ("truncate", image.last_index()))
            logger.info("%s crashed: %d of %d unsynced writes kept%s; log [%d, %d], synced to %d",
                        self.name, kept, len(pending), ", last record torn" if torn else "",
                        image.first_index(), image.last_index(), synced)
            reborn = FaultyLogStore(image, self.faults, name=self.name,
                                    synced_index_at_open=synced)
            reborn._holes = list(holes)
            reborn._durable_holes = list(holes)
            return reborn

    def lose_tail(self, n: int) -> tuple[Index, Index]:
        """The newest ``n`` durable entries vanish (as when recovery truncated a damaged tail);
        returns the ``[lo, hi)`` range lost.  Only on a store at rest (no unsynced writes).

        Raises:
            ValueError: ``n < 0``, or the store has unsynced writes (or is poisoned).
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n={n!r} must be an int >= 0")
        with self._lock:
            self._check_at_rest("lose_tail")
            first, last = self.inner.first_index(), self.inner.last_index()
            lo = max(first, last - n + 1)
            self._cut(lo)
            return lo, last + 1

    def drop_range(self, lo: Index, hi: Index) -> tuple[Index, Index]:
        """Entries ``[lo, hi)`` of the durable log are destroyed: at the end of the log they
        vanish (as :meth:`lose_tail`); before it they stay listed but every read of them
        raises CorruptLogError (a corrupt record or missing segment before the tail).  Only
        on a store at rest.  Returns ``(lo, hi)``.

        Raises:
            ValueError: the range is empty or not inside the log, or the store is not at rest.
        """
        with self._lock:
            self._check_at_rest("drop_range")
            first, last = self.inner.first_index(), self.inner.last_index()
            if not first <= lo < hi <= last + 1:
                raise ValueError(f"range [{lo}, {hi}) is not a non-empty part of the log "
                                 f"[{first}, {last}]")
            if hi == last + 1:
                self._cut(lo)
            else:
                self._holes.append((lo, hi))
                self._durable_holes.append((lo, hi))
            logger.info("%s: entries [%d, %d) destroyed", self.name, lo, hi)
            return lo, hi

    def _cut(self, lo: Index) -> None:
        """Truncate the visible log and the durable image alike at ``lo`` (lock held).  The
        sync mark keeps what was durable before, as a real one would at the next open."""
        self._synced_at_open = max(self._synced_at_open, self._durable.last_index())
        self.inner.truncate_suffix(lo)
        self._durable.truncate_suffix(lo)
        self._holes = _clip(self._holes, self.inner.first_index(), lo)
        self._durable_holes = _clip(self._durable_holes, self._durable.first_index(), lo)


class FaultyStableStore(_FaultyStore):
    """A :class:`~engine.storage.base.StableStore` that forwards to ``inner`` (a fresh
    :class:`~engine.storage.memory.MemoryStableStore` when None) and injects the faults of
    ``faults``: ``save`` may fail (nothing changes) or stall (it flushes).  A completed save is
    durable; :meth:`crash` keeps the last one."""

    kind = "stable"

    def __init__(self, inner: StableStore | None = None, faults: DiskFaults | None = None, *,
                 name: str = "hardstate") -> None:
        self.inner: StableStore = inner if inner is not None else MemoryStableStore()
        super().__init__(self.inner, faults, name)
        with self._lock:
            self._durable: HardState = self.inner.load()  # guarded by self._lock

    def load(self) -> HardState:
        with self._lock:
            self._check_open()
            return self.inner.load()

    def save(self, state: HardState) -> None:
        """As the protocol: waits out a stall; an injected failure raises StorageError and
        keeps the previous state."""
        with self._lock:
            self._flush_wait()
            err = self.faults._take("save")
            if err is not None:
                raise _injected_error(err, f"cannot save the hard state to {self.name}",
                                      self.faults.name)
            self.inner.save(state)
            self._durable = state

    @property
    def durable(self) -> HardState:
        """The last completed save (what a crash keeps)."""
        with self._lock:
            return self._durable

    def crash(self) -> FaultyStableStore:
        """A power cut, then a reopen: a new store on the same controller holding the last
        completed save.  This store is retired (later calls raise StorageError).

        Raises:
            StorageError: this store was already crashed.
        """
        with self._lock:
            self._retire()
            inner = MemoryStableStore()
            inner.save(self._durable)
            return FaultyStableStore(inner, self.faults, name=self.name)


def crash_stores(log: FaultyLogStore, stable: FaultyStableStore, *, torn: bool = False,
                 rng: random.Random | None = None) -> tuple[FaultyLogStore, FaultyStableStore]:
    """Crash one node's disk: ``(log.crash(torn=..., rng=...), stable.crash())``."""
    return log.crash(torn=torn, rng=rng), stable.crash()
