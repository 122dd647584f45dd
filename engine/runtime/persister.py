"""The log writer: makes each Ready's entries and hard state durable, then lets the messages
that depended on them leave.

Three modes, one write path (:meth:`Persister._write` then :meth:`Persister._finish`):

* background (the default with a store that implements
  :class:`~engine.storage.base.BackgroundSync`, i.e. the native store with fsync on): the loop
  thread writes each group of Readys to the log (page cache, cheap), then hands the fdatasync
  to the store's C syncer thread and goes on stepping messages, proposing and applying.  Readys
  that come meanwhile wait in ``self._pending``; when the sync ends (its descriptor turns
  readable on the loop) the group's acknowledgements leave, and everything pending is written
  and synced as the next group (group commit with a loop that never blocks on the disk);
* inline (other stores, or fsync off): the loop thread writes and syncs at once.  Group commit
  happens one level up: the loop drains every message that arrived during the previous write
  into the next Ready, so one sync covers them all;
* threaded (``Config.storage_thread``): the thread ``raft-<id>-storage`` owns the stores.  It
  takes every Ready queued while the previous write ran and writes them as one group.

Only term, vote and recovering-mark changes are saved to the StableStore synchronously (the
mark changes once per recovery); a commit-index change
alone is saved along with the next term/vote change or at a graceful stop, because losing it is
safe (the leader re-sends it) and an atomic rename per commit would dominate the write cost.

Ownership: the stores belong to the loop thread (inline, background: except the log store while
a background sync runs, when it belongs to the syncer thread until ``end_sync`` says it ended)
or to the storage thread (threaded); the halting thread takes them over once those are joined.

Reads: the core reads back entries it dropped from its entry cache through
:meth:`Persister.read_entries` (wrapped by :class:`StoreReader`), on the loop thread.  Inline,
it reads the store at once; background, a sync in flight is waited for first (the store is lent
to the syncer thread meanwhile; the group it covers is finished from the loop soon after);
threaded, it takes ``_store_lock``, which the storage thread holds while it writes and syncs a
group.  Only durable, committed entries are read, which no later write changes.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import queue
import threading
from collections.abc import Callable
from typing import Any

from engine.core import Message, Ready
from engine.errors import StorageError
from engine.runtime.telemetry import Telemetry, clock
from engine.runtime.workers import join_thread, start_thread
from engine.storage.base import BackgroundSync, LogStore, StableStore
from engine.types import Entry, SnapshotMeta

logger = logging.getLogger(__name__)
_STOP = object()
_data = operator.itemgetter(3)  # Entry.data, at C speed (log bytes counter)


class Persister:
    """Writes Readys in the order submitted; see the module docstring."""

    # Set by NodeLoop after construction; written by the thread that owns the log store (see
    # the thread-safety rule in engine.runtime.telemetry).
    telemetry: Telemetry | None = None

    def __init__(self, node_id: str, log_store: LogStore, stable_store: StableStore, *,
                 threaded: bool, send: Callable[[list[Message]], None],
                 on_persisted: Callable[[list[Ready]], None],
                 on_error: Callable[[BaseException], None],
                 install_snapshot: Callable[[SnapshotMeta], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``install_snapshot(meta)`` makes a snapshot received from the leader durable (it runs
        on the thread that owns the stores, before the log store is trimmed to match it).
        ``loop`` (the node's event loop) enables the background mode when the store allows
        it; call :meth:`start` on that loop's thread before the first submit."""
        self._node_id = node_id
        self._log_store = log_store
        self._stable_store = stable_store
        self._send = send
        self._on_persisted = on_persisted
        self._on_error = on_error
        self._install_snapshot = install_snapshot
        self._saved_hard_state = stable_store.load()
        self._latest_hard_state = self._saved_hard_state
        self._threaded = threaded
        self._failed = False
        # Background mode (loop thread only): the group whose sync runs, and those waiting.
        self._background: BackgroundSync | None = None
        if (not threaded and loop is not None and isinstance(log_store, BackgroundSync)
                and log_store.background_sync):
            self._background = log_store
        self._loop = loop
        self._syncing: list[Ready] | None = None
        self._sync_collected = False  # read_entries waited for the sync of _syncing
        self._sync_started = 0.0  # perf_counter when the sync of _syncing began
        self._pending: list[Ready] = []
        # Threaded mode: held by the storage thread while it writes a group, and by the loop
        # thread while it reads entries back (read_entries).
        self._store_lock = threading.Lock()
        self._fileno = -1
        # Threaded mode: the loop thread puts Readys here; the storage thread takes them.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = start_thread(f"raft-{node_id}-storage", self._run)

    @property
    def mode(self) -> str:
        """'background', 'inline' or 'threaded'."""
        if self._threaded:
            return "threaded"
        return "background" if self._background is not None else "inline"

    def start(self) -> None:
        """Background mode: watch the syncer's descriptor (on the loop thread).

        Raises:
            StorageError: the syncer thread cannot be started.
        """
        if self._background is not None and self._loop is not None:
            self._fileno = self._background.sync_fileno()
            self._loop.add_reader(self._fileno, self._on_sync_ended)

    def submit(self, rd: Ready) -> None:
        """Make ``rd`` durable, then send its after-persist messages and report it."""
        if self._threaded:
            self._queue.put(rd)
        elif self._failed:
            return
        elif self._background is not None:
            self._pending.append(rd)
            if self._syncing is None:
                self._write_pending()
        else:
            self._write_group([rd])

    def stop(self, *, flush: bool) -> None:
        """Stop writing (the loop and the storage thread are gone or going).  With ``flush`` the
        Readys still queued are written and synced first and the latest commit index is saved;
        without (a crash) whatever is queued is lost, as on a power cut.  A background sync in
        flight is always waited for (the store cannot be closed under it)."""
        if self._threaded:
            if not flush:
                self._drain()
            self._queue.put(_STOP)
            join_thread(self._thread)
        if self._background is not None:
            self._stop_background(flush=flush)
        if flush and not self._failed and self._latest_hard_state != self._saved_hard_state:
            try:
                self._stable_store.save(self._latest_hard_state)
            except StorageError:
                logger.exception("%s: saving the final hard state failed", self._node_id)

    def _stop_background(self, *, flush: bool) -> None:
        background = self._background
        assert background is not None
        if self._syncing is not None and not self._sync_collected:
            try:
                background.end_sync(wait=True)
            except StorageError:
                logger.exception("%s: the last background sync failed", self._node_id)
                self._failed = True
        self._syncing = None
        self._sync_collected = False
        pending, self._pending = self._pending, []
        if flush and pending and not self._failed:
            try:
                if self._write(pending):
                    self._log_store.sync()
            except Exception:
                logger.exception("%s: writing the last Readys failed", self._node_id)
                self._failed = True

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            group = [item]
            try:
                while True:
                    group.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            stop = any(rd is _STOP for rd in group)
            group = [rd for rd in group if rd is not _STOP]
            if group and not self._failed:
                with self._store_lock:
                    self._write_group(group)
            if stop:
                return

    # -- the write path ------------------------------------------------------------------------

    def _apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Store the installed snapshot, then keep the log's suffix after it if the log holds
        the snapshot's last entry, else drop the whole log (Figure 13, steps 6-7)."""
        if self._install_snapshot is not None:
            self._install_snapshot(meta)
        store = self._log_store
        if store.first_index() <= meta.index <= store.last_index() and \
                store.term_at(meta.index) == meta.term:
            store.compact_prefix(meta.index)
        else:
            store.reset(meta.index + 1)

    def _write(self, group: list[Ready]) -> bool:
        """Write the group's snapshots, entries and compactions (no sync); returns True when
        the log was written (a sync is needed)."""
        wrote_entries = False
        for rd in group:
            if rd.snapshot is not None:
                self._apply_snapshot(rd.snapshot)
                wrote_entries = True
            if rd.entries:
                entries = rd.entries
                telemetry = self.telemetry
                if telemetry is not None and telemetry.timing:
                    started = clock()
                    self._log_store.append(entries)
                    telemetry.log_append.observe(clock() - started)
                    if telemetry.sample is not None:
                        telemetry.stamp(1, entries[-1].index)
                else:
                    self._log_store.append(entries)
                if telemetry is not None:
                    telemetry.entries_appended += len(entries)
                    telemetry.bytes_appended += sum(map(len, map(_data, entries)))
                wrote_entries = True
            if rd.compact_index:
                self._log_store.compact_prefix(rd.compact_index)
            if rd.hard_state is not None:
                self._latest_hard_state = rd.hard_state
        return wrote_entries

    def _finish(self, group: list[Ready]) -> None:
        """The group's log writes are durable: save a new term or vote, then let the messages
        that waited for both leave and report the group."""
        latest, saved = self._latest_hard_state, self._saved_hard_state
        if (latest.term != saved.term or latest.vote != saved.vote
                or latest.recovering != saved.recovering):
            self._stable_store.save(latest)
            self._saved_hard_state = latest
        outgoing = [m for rd in group for m in rd.messages_after_persist
                    if m.dst != self._node_id]
        if outgoing:
            self._send(outgoing)
        self._on_persisted(group)

    def _fail(self, exc: BaseException) -> None:
        self._failed = True
        logger.critical("%s: durable write failed, stopping the node: %s", self._node_id, exc)
        self._on_error(exc if isinstance(exc, StorageError) else StorageError(str(exc)))

    def _write_group(self, group: list[Ready]) -> None:
        """Inline and threaded modes: write, sync and finish the group at once."""
        try:
            if self._write(group):
                telemetry = self.telemetry
                if telemetry is not None and telemetry.timing:
                    started = clock()
                    self._log_store.sync()
                    telemetry.fdatasync.observe(clock() - started)
                else:
                    self._log_store.sync()
            self._finish(group)
        except Exception as exc:
            self._fail(exc)

    def _write_pending(self) -> None:
        """Background mode: write everything pending as one group and start its sync (or
        finish it at once when it wrote nothing to the log)."""
        group, self._pending = self._pending, []
        background = self._background
        assert background is not None
        try:
            if self._write(group):
                self._sync_started = clock()
                background.begin_sync()
                self._syncing = group
                return
            self._finish(group)
        except Exception as exc:
            self._fail(exc)

    def _on_sync_ended(self) -> None:
        """Background mode, loop thread: the syncer's descriptor is readable."""
        background = self._background
        group = self._syncing
        if background is None or group is None or self._failed:
            return
        try:
            if self._sync_collected:
                self._sync_collected = False  # read_entries already waited for it
            elif not background.end_sync():
                return  # not finished yet (a spurious wake-up)
            self._syncing = None
            telemetry = self.telemetry
            if telemetry is not None and telemetry.timing:
                telemetry.fdatasync.observe(clock() - self._sync_started)
            self._finish(group)
        except Exception as exc:
            self._syncing = None
            self._fail(exc)
            return
        if self._pending:
            self._write_pending()

    def read_entries(self, lo: int, hi: int) -> list[Entry]:
        """Durable entries ``[lo, hi)`` read back from the log store (loop thread; see the
        module docstring).

        Raises:
            IndexError: the store does not hold them.
            StorageError: the read (or the sync waited for) failed.
        """
        if self._threaded:
            with self._store_lock:
                return self._log_store.entries(lo, hi)
        background = self._background
        if background is not None and self._syncing is not None and not self._sync_collected:
            try:
                background.end_sync(wait=True)
            except Exception as exc:
                self._syncing = None
                self._fail(exc)
                raise
            # The syncer's descriptor was consumed: finish the group from the loop.
            self._sync_collected = True
            if self._loop is not None:
                self._loop.call_soon(self._on_sync_ended)
        return self._log_store.entries(lo, hi)

    def close(self) -> None:
        """Stop watching the syncer's descriptor (loop thread, before the loop closes)."""
        if self._fileno >= 0 and self._loop is not None:
            self._loop.remove_reader(self._fileno)
            self._fileno = -1


class StoreReader:
    """The core's :class:`~engine.core.log.LogReader`: reads through a :class:`Persister` (set
    :attr:`persister` before the core first reads; the loop builds the core first)."""

    __slots__ = ("persister",)

    def __init__(self) -> None:
        self.persister: Persister | None = None

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """See :meth:`Persister.read_entries`."""
        if self.persister is None:
            raise StorageError("the log store is not open yet")
        return self.persister.read_entries(lo, hi)
