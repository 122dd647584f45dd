"""Open the durable stores of one node: native when the compiled module imports, else Python.

The runtime calls :func:`open_stores` when a node has a ``data_dir``, and
:func:`open_snapshot_store` for its snapshots.
"""

from __future__ import annotations

import logging
import os

from engine.storage.base import LogStore, SnapshotStore, StableStore
from engine.storage.filestore import FileLogStore, FileStableStore
from engine.storage.snapshot import FileSnapshotStore

logger = logging.getLogger(__name__)


def native_disabled() -> bool:
    """True when ``RAFT_ENGINE_NO_NATIVE`` asks for the pure-Python stores."""
    return os.environ.get("RAFT_ENGINE_NO_NATIVE", "") not in ("", "0")


def open_stores(directory: str, *, fsync: bool = True) -> tuple[LogStore, StableStore]:
    """Open (creating if needed) the log store and the stable store kept in ``directory``.

    Picks :class:`~engine.storage.native.NativeLogStore` and
    :class:`~engine.storage.native.NativeStableStore` when the compiled module
    ``engine.storage._raftlog`` imports; otherwise (or when ``RAFT_ENGINE_NO_NATIVE=1``) the
    pure-Python :class:`~engine.storage.filestore.FileLogStore` and
    :class:`~engine.storage.filestore.FileStableStore`, with a logged warning.  Both read and
    write the same files, so a directory can move between them.

    The returned stores belong to the caller's writing thread (one thread at a time); close
    both when the node stops.  The log store's ``recovery_report`` lists any torn tail that was
    repaired (already logged as a warning).

    Raises:
        CorruptLogError: the log is corrupt before its tail; the node must not start.
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
    log = log_cls(directory, fsync=fsync)
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
