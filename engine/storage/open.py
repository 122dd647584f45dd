"""Open the durable stores of one node: native when the compiled module imports, else Python.

The runtime calls :func:`open_stores` when a node has a ``data_dir``, and
:func:`open_snapshot_store` for its snapshots.
"""

from __future__ import annotations

import logging
import os

from engine.storage.base import LogStore, SnapshotStore, StableStore, SyncMarkStore
from engine.storage.filestore import FileLogStore, FileStableStore
from engine.storage.snapshot import FileSnapshotStore

logger = logging.getLogger(__name__)


def native_disabled() -> bool:
    """True when ``RAFT_ENGINE_NO_NATIVE`` asks for the pure-Python stores."""
    return os.environ.get("RAFT_ENGINE_NO_NATIVE", "") not in ("", "0")


def open_stores(
    directory: str, *, fsync: bool = True, discard_corrupt_suffix: bool = False
) -> tuple[LogStore, StableStore]:
    """Open (creating if needed) the log store and the stable store kept in ``directory``.

    Picks :class:`~engine.storage.native.NativeLogStore` and
    :class:`~engine.storage.native.NativeStableStore` when the compiled module
    ``engine.storage._raftlog`` imports; otherwise (or when ``RAFT_ENGINE_NO_NATIVE=1``) the
    pure-Python :class:`~engine.storage.filestore.FileLogStore` and
    :class:`~engine.storage.filestore.FileStableStore`, with a logged warning.  Both read and
    write the same files, so a directory can move between them.

    The returned stores belong to the caller's writing thread (one thread at a time); close
    both when the node stops.  The log store's ``recovery_report`` lists any torn tail that was
    repaired (already logged as a warning), each with the first index it lost, and its
    ``synced_index_at_open`` (:class:`~engine.storage.base.SyncMarkStore`) the last index it had
    made durable before: a log that ends below ``max(commit, synced_index_at_open)`` lost
    entries the node may have acknowledged (protocol-aware recovery decides what to do).

    ``discard_corrupt_suffix`` (``Config.recover_corrupt_log``): corruption before the tail cuts
    the log at the first damage, durably and reported in ``recovery_report``, instead of raising
    CorruptLogError.

    Raises:
        CorruptLogError: the log is corrupt before its tail and ``discard_corrupt_suffix`` is
            off; the node must not start.
        StorageError: the directory cannot be created, read or repaired.
    """
    log_cls: type = FileLogStore
    stable_cls: type = FileStableStore
    if native_disabled():
        logger.warning("RAFT_ENGINE_NO_NATIVE is set: using the pure-Python file store in %s",
                       directory)
    else:
        try:
            from engine.storage.native import NativeLogStore, NativeStableStore
        except ImportError as exc:
            logger.warning(
                "native log store unavailable (%s); using the slower pure-Python file store "
                "in %s (build it with `pip install .`)", exc, directory)
        else:
            log_cls, stable_cls = NativeLogStore, NativeStableStore
    log = log_cls(directory, fsync=fsync, discard_corrupt_suffix=discard_corrupt_suffix)
    try:
        stable = stable_cls(directory, fsync=fsync)
        commit = stable.load().commit
    except BaseException:
        log.close()
        raise
    if commit > log.last_index():
        # Raft never commits past its own log, so entries that were once here are gone (for
        # example a removed last segment, which looks exactly like a truncated suffix).  Not an
        # error here: a runtime that saves the hard state before syncing the log can get here
        # after a crash without any damage.
        logger.warning(
            "hard state in %s says commit=%d but the log ends at index %d: entries may be lost",
            directory, commit, log.last_index())
    synced = log.synced_index_at_open if isinstance(log, SyncMarkStore) else 0
    if synced > log.last_index():
        logger.warning(
            "the log in %s had made index %d durable but now ends at index %d: entries it may "
            "have acknowledged are lost", directory, synced, log.last_index())
    return log, stable


SNAPSHOT_SUBDIR = "snapshots"


def open_snapshot_store(directory: str, *, fsync: bool = True, keep: int = 2) -> SnapshotStore:
    """Open (creating if needed) the snapshot store of the node whose data dir is ``directory``.

    The snapshots live in ``<directory>/snapshots`` (:class:`FileSnapshotStore`, pure Python:
    snapshots are few and large, so there is nothing for C to speed up but the CRC, which
    ``engine.codec.crc32c`` already runs natively when the compiled module exists).  The log
    stores ignore that subdirectory.  Leftover temporary files of an interrupted save are
    deleted.

    Raises:
        StorageError: the directory cannot be created or listed.
    """
    return FileSnapshotStore(os.path.join(os.fspath(directory), SNAPSHOT_SUBDIR), fsync=fsync,
                             keep=keep)
