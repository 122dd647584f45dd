"""The storage writer: makes each Ready's entries and hard state durable, then lets the messages
that depended on them leave.

Two modes, one code path (:meth:`Persister._write_group`):

* threaded (``Config.storage_thread``): the thread ``raft-<id>-storage``
  owns the stores.  It takes every Ready queued while the previous write ran and writes them as
  one group: their entries in order, the newest hard state, then ONE sync for the whole group
  (group commit).
* inline (the default): the loop thread writes at once.  Group
  commit happens all the same one level up: the loop drains every message that arrived during
  the previous write into the next Ready, so one sync covers them all; what is saved is the two
  thread hand-offs per commit.

Only term and vote changes are saved to the StableStore synchronously; a commit-index change
alone is saved along with the next term/vote change or at a graceful stop, because losing it is
safe (the leader re-sends it) and an atomic rename per commit would dominate the write cost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from engine.core import Message, Ready
from engine.errors import StorageError
from engine.runtime.workers import join_thread, start_thread
from engine.storage.base import LogStore, StableStore
from engine.types import SnapshotMeta

logger = logging.getLogger(__name__)
_STOP = object()


class Persister:
    """Writes Readys in the order submitted; see the module docstring."""

    def __init__(self, node_id: str, log_store: LogStore, stable_store: StableStore, *,
                 threaded: bool, send: Callable[[list[Message]], None],
                 on_persisted: Callable[[list[Ready]], None],
                 on_error: Callable[[BaseException], None],
                 install_snapshot: Callable[[SnapshotMeta], None] | None = None) -> None:
        """``install_snapshot(meta)`` makes a snapshot received from the leader durable (it runs
        on the thread that owns the stores, before the log store is trimmed to match it)."""
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
        # Threaded mode: the loop thread puts Readys here; the storage thread takes them.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = start_thread(f"raft-{node_id}-storage", self._run)

    def submit(self, rd: Ready) -> None:
        """Make ``rd`` durable, then send its after-persist messages and report it."""
        if self._threaded:
            self._queue.put(rd)
        elif not self._failed:
            self._write_group([rd])

    def stop(self, *, flush: bool) -> None:
        """Stop writing.  With ``flush`` the queued Readys are written first and the latest
        commit index is saved; without (a crash) whatever is queued is lost, as on a power cut."""
        if self._threaded:
            if not flush:
                self._drain()
            self._queue.put(_STOP)
            join_thread(self._thread)
        if flush and not self._failed and self._latest_hard_state != self._saved_hard_state:
            try:
                self._stable_store.save(self._latest_hard_state)
            except StorageError:
                logger.exception("%s: saving the final hard state failed", self._node_id)

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
                self._write_group(group)
            if stop:
                return

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

    def _write_group(self, group: list[Ready]) -> None:
        try:
            wrote_entries = False
            for rd in group:
                if rd.snapshot is not None:
                    self._apply_snapshot(rd.snapshot)
                    wrote_entries = True
                if rd.entries:
                    self._log_store.append(rd.entries)
                    wrote_entries = True
                if rd.compact_index:
                    self._log_store.compact_prefix(rd.compact_index)
                if rd.hard_state is not None:
                    self._latest_hard_state = rd.hard_state
            if wrote_entries:
                self._log_store.sync()
            latest, saved = self._latest_hard_state, self._saved_hard_state
            if latest.term != saved.term or latest.vote != saved.vote:
                self._stable_store.save(latest)
                self._saved_hard_state = latest
        except Exception as exc:
            self._failed = True
            logger.critical("%s: durable write failed, stopping the node: %s",
                            self._node_id, exc)
            self._on_error(exc if isinstance(exc, StorageError) else StorageError(str(exc)))
            return
        outgoing = [m for rd in group for m in rd.messages_after_persist
                    if m.dst != self._node_id]
        if outgoing:
            self._send(outgoing)
        self._on_persisted(group)
